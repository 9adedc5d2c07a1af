// Encoding and decoding of shoal frames (docs/wire-format.md).
//
// Every frame is a 12-byte header (magic, version, type, payload length; little-endian) and a
// payload. Decoders never throw and never allocate more than the limits in common/limits.h allow:
// every length and count is checked before it is used. A decoder that returns an error leaves the
// output unspecified; the connection it came from must be closed.
//
// Stateless functions; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "shoal/common/limits.h"
#include "shoal/status.hpp"
#include "shoal/net/messages.h"

namespace shoal::net {

inline constexpr std::uint32_t kMagic = 0x4c4f4853;  // "SHOL" in little-endian byte order
inline constexpr std::uint16_t kProtocolVersion = 2;  // 2: Hello carries a rejoin report
inline constexpr std::size_t kHeaderBytes = 12;
inline constexpr std::size_t kSegmentHeaderBytes = limits::kSegmentHeaderBytes;

struct FrameHeader {
  MsgType type = MsgType::kHeartbeat;
  std::uint32_t payload_bytes = 0;
};

// Checks magic, version, that the type is known and that the payload is at most `payload_bytes_max`
// (and, for control messages, at most limits::kControlPayloadBytesMax, or kSyncPayloadBytesMax for
// SyncReport and SyncPlan); a DataSegment payload must also hold at least its kSegmentHeaderBytes
// segment header. Readers of control connections pass kSyncPayloadBytesMax.
Status DecodeHeader(const std::uint8_t* bytes, std::uint32_t payload_bytes_max, FrameHeader* out);

// Decodes the payload of a control or DataHello message. The payload must be consumed exactly.
// kDataSegment is not a Message: use DecodeSegmentHeader.
Status DecodePayload(MsgType type, const std::uint8_t* payload, std::size_t payload_bytes,
                     Message* out);

// Header + payload in one call, for callers that hold a whole frame (tests, fuzzers).
Status DecodeFrame(const std::uint8_t* bytes, std::size_t size, Message* out);

// Appends the whole frame (header and payload) of `message` to `out`.
void Encode(const Message& message, std::vector<std::uint8_t>* out);

// The head of a kDataSegment frame's payload; the segment's bytes follow it.
struct SegmentHeader {
  std::uint64_t tag = 0;
  std::uint64_t seq = 0;
  std::uint32_t unit = 0;  // index of the unit in the op's schedule
  std::uint32_t desc = 0;  // checksum of the op's parameters; both ends must agree
};

// Writes frame header + segment header (kHeaderBytes + kSegmentHeaderBytes bytes) for a segment of
// `segment_bytes` payload bytes.
void EncodeSegmentHead(const SegmentHeader& h, std::uint32_t segment_bytes, std::uint8_t* out);
// Reads a segment header from the first kSegmentHeaderBytes of a kDataSegment payload.
SegmentHeader DecodeSegmentHeader(const std::uint8_t* bytes);

}  // namespace shoal::net
