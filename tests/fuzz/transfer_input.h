// The input format of transfer_fuzz, shared by the target and the seed writer: one receiving
// peer's plan and what its senders' streams carry.
//
//   u8 K (1 + x % 3) streams per sender, u8 senders (1 + x % kSendersMax),
//   u8 tensors (1 + x % kTensorsMax), per tensor u8 size in bytes,
//   u8 segment_bytes_max (1 + x % 64), u8 flags (bit 0: one expected hash is wrong),
//   per sender: u8 pieces (1 + x % 4), per piece u8 tensor, u8 gap, u8 length
//     (pieces are laid out from the input so that they never overlap and stay in bounds, as the
//     runtime's check of a plan guarantees: a gap after the last piece of that tensor, then a
//     length of 1 + x % what is left; a piece that does not fit is dropped),
//   u8 source seed (the senders' bytes), then edits until the input ends:
//     u8 kind, u8 stream pick, u16 position, u8 value:
//     kind % 4 == 0 xor a byte of that stream's frames; 1 cut the stream there;
//     2 insert a byte there; 3 append the value as garbage after the last frame.
// Without edits each stream carries exactly the frames a correct sender writes.
#pragma once

#include <cstdint>

namespace shoal::fuzz::transfer_input {

inline constexpr std::uint32_t kSendersMax = 3;
inline constexpr std::uint32_t kTensorsMax = 3;
inline constexpr std::uint32_t kSegmentBytesMax = 64;
inline constexpr std::uint64_t kTag = 0xFFFFFFFFFFFFFFFF;  // a sync's tag
inline constexpr std::uint64_t kSeq = 3;

}  // namespace shoal::fuzz::transfer_input
