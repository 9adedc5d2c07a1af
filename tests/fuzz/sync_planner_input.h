// The input format of sync_planner_fuzz, shared by the target and the seed writer: the arguments
// of one PlanSync call.
//
//   u8 members (1 + x % kMembersMax), u8 flags (bit 0: a last revision is given),
//   u8 last revision, u8 piece_bytes_min pick, u8 pieces_max pick,
//   then per member a u8 mode and its bytes:
//     mode % 3 == 0  a SyncReport frame off the wire: u16 length and the bytes, decoded with
//                    DecodeFrame (anything else gives an empty report); peers report like this
//     mode % 3 == 1  a copy of an earlier member's report (mode / 4 picks it) with u8 revision
//                    change, u8 hash flips (bit t: tensor t) and u8 shape change
//     mode % 3 == 2  a report made here: u8 revision, u8 tensor count (x % 5), per tensor
//                    u8 name, u8 dtype, u8 count (255: the largest count the limits allow),
//                    u8 hash, u8 allow_divergence
// Peer ids are kFirstPeer + ring index; every report carries kEpoch and kSeq unless it came off
// the wire. Reports keep the codec's limits (valid dtypes, tensors of at most 2^40 bytes).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "fuzz_support.h"
#include "shoal/common/dtype.h"
#include "shoal/coord/sync_planner.h"
#include "shoal/net/codec.h"

namespace shoal::fuzz::sync_planner_input {

inline constexpr std::uint32_t kMembersMax = 8;
inline constexpr PeerId kFirstPeer = 0x100;
inline constexpr std::uint64_t kEpoch = 7;
inline constexpr std::uint64_t kSeq = 2;
inline constexpr std::uint64_t kPieceBytesMin[] = {0, 1, 3, 64, 4096, std::uint64_t{8} << 20};
inline constexpr std::uint32_t kPiecesMax[] = {
    0, 1, 2, 3, 5, 8, 64, limits::kSyncPiecesMax, ~std::uint32_t{0}};
inline constexpr const char* kNames[] = {"w", "b", "emb", "step"};

struct Case {
  std::vector<coord::MemberSyncReport> members;
  std::optional<std::uint64_t> last_revision;
  coord::SyncPlannerConfig config;
};

inline net::TensorReport MadeTensor(Input& in) {
  net::TensorReport t;
  t.name = kNames[in.U8() % 4];
  t.dtype = static_cast<shoal_dtype>(in.U8() % SHOAL_DTYPE_COUNT);
  const std::uint8_t count = in.U8();
  t.count = count == 255 ? limits::kCollectiveBytesMax / DtypeBytes(t.dtype) : count;
  t.hash = in.U8() % 4;
  t.allow_divergence = (in.U8() & 1) != 0;
  return t;
}

inline net::SyncReport Report(Input& in, const std::vector<coord::MemberSyncReport>& earlier) {
  const std::uint8_t mode = in.U8();
  net::SyncReport r{kEpoch, kSeq, 0, {}};
  switch (mode % 3) {
    case 0: {
      const std::vector<std::uint8_t> frame = in.Bytes();
      net::Message m;
      if (net::DecodeFrame(frame.data(), frame.size(), &m).ok() &&
          std::holds_alternative<net::SyncReport>(m)) {
        r = std::get<net::SyncReport>(m);
      }
      return r;
    }
    case 1: {
      if (!earlier.empty()) r = earlier[(mode / 4) % earlier.size()].report;
      r.revision += static_cast<std::int8_t>(in.U8());  // wraps, as a u64 on the wire may
      const std::uint8_t flips = in.U8();
      const std::uint8_t shape = in.U8();
      for (std::size_t t = 0; t < r.tensors.size() && t < 8; t++) {
        if (((flips >> t) & 1) != 0) r.tensors[t].hash ^= 1;
      }
      if (!r.tensors.empty() && shape % 8 == 1) r.tensors.back().count /= 2;
      if (!r.tensors.empty() && shape % 8 == 2) r.tensors.pop_back();
      if (!r.tensors.empty() && shape % 8 == 3) {
        r.tensors.back().allow_divergence = !r.tensors.back().allow_divergence;
      }
      return r;
    }
    default: {
      r.revision = in.U8();
      const std::uint8_t n = in.U8() % 5;
      for (std::uint8_t t = 0; t < n; t++) r.tensors.push_back(MadeTensor(in));
      return r;
    }
  }
}

inline Case Read(Input& in) {
  Case c;
  const std::uint32_t n = 1 + in.U8() % kMembersMax;
  const std::uint8_t flags = in.U8();
  const std::uint8_t last = in.U8();
  if ((flags & 1) != 0) c.last_revision = last;
  c.config.piece_bytes_min = kPieceBytesMin[in.U8() % std::size(kPieceBytesMin)];
  c.config.pieces_max = kPiecesMax[in.U8() % std::size(kPiecesMax)];
  for (std::uint32_t i = 0; i < n; i++) {
    net::SyncReport r = Report(in, c.members);
    c.members.push_back(coord::MemberSyncReport{kFirstPeer + i, std::move(r)});
  }
  return c;
}

}  // namespace shoal::fuzz::sync_planner_input
