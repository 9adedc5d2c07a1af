// The rules of docs/wire-format.md that a decoded message must satisfy, written from the document's
// tables (not from codec.cc), and the most a decoder may allocate for a payload: the fuzz targets
// hold every successful decode, and every message the coordinator sends, to them.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <type_traits>
#include <variant>

#include "fuzz_support.h"
#include "shoal/common/dtype.h"
#include "shoal/common/limits.h"
#include "shoal/net/codec.h"

namespace shoal::fuzz {

// Every type that DecodePayload decodes, in numbering order. (Message has one alternative per
// type: the static_assert below fails when a type is added and not listed here.)
inline constexpr net::MsgType kPayloadTypes[] = {
    net::MsgType::kHello,        net::MsgType::kWelcome,        net::MsgType::kReject,
    net::MsgType::kHeartbeat,    net::MsgType::kUpdateTopology, net::MsgType::kTopologyUnchanged,
    net::MsgType::kEpochPropose, net::MsgType::kEpochReady,     net::MsgType::kEpochCommit,
    net::MsgType::kOpResult,     net::MsgType::kOpCommit,       net::MsgType::kEpochFault,
    net::MsgType::kEpochAbort,   net::MsgType::kLeave,          net::MsgType::kRemoved,
    net::MsgType::kError,        net::MsgType::kSyncReport,     net::MsgType::kSyncPlan,
    net::MsgType::kAuthHello,    net::MsgType::kAuthChallenge,  net::MsgType::kAuthProof,
    net::MsgType::kDataHello};
static_assert(std::variant_size_v<net::Message> == std::size(kPayloadTypes),
              "a message type is missing from kPayloadTypes");

namespace internal {

inline bool StatusOk(shoal_status s) {
  return static_cast<unsigned>(s) < static_cast<unsigned>(SHOAL_STATUS_COUNT);
}

inline std::string PieceRule(const net::TransferPiece& p) {
  if (p.peer == 0) return "piece with peer 0";
  if (p.tensor >= limits::kSharedTensorsMax) return "piece tensor out of range";
  if (p.bytes == 0) return "empty piece";
  if (p.offset > limits::kCollectiveBytesMax || p.bytes > limits::kCollectiveBytesMax - p.offset) {
    return "piece ends past kCollectiveBytesMax";
  }
  return "";
}

inline std::string Rule(const net::Hello& m) {
  if (m.peer_id == 0) return "Hello from peer 0";
  if (m.host.size() > limits::kHostBytesMax) return "Hello host too long";
  if (!m.rejoin) return "";
  // The rejoin report (messages.h, net::Rejoin).
  const net::Rejoin& j = *m.rejoin;
  if (!StatusOk(j.abort_code) || !StatusOk(j.fault_code)) return "rejoin status out of range";
  if (j.members.size() > limits::kMembersMax) return "rejoin lists too many members";
  for (PeerId id : j.members) {
    if (id == 0) return "rejoin member 0";
  }
  if (j.epoch == 0 && (j.committed || !j.members.empty())) return "rejoin members without epoch";
  if (j.last_ring.size() > limits::kMembersMax) return "rejoin lists too many ring members";
  for (PeerId id : j.last_ring) {
    if (id == 0) return "rejoin ring member 0";
  }
  if ((j.last_epoch == 0) != j.last_ring.empty()) return "rejoin ring without its epoch";
  if (j.seen_epoch < j.epoch || j.seen_epoch < j.last_epoch) return "rejoin saw less than it is in";
  if (j.next_seq.size() > limits::kTagsPerEpochMax) return "rejoin lists too many tags";
  if (j.ops.size() > limits::kOpsInFlightMax) return "rejoin lists too many ops";
  for (const net::RejoinOp& op : j.ops) {
    if (static_cast<unsigned>(op.state) > 2) return "rejoin op state";
  }
  return "";
}
inline std::string Rule(const net::Welcome& m) { return m.peer_id == 0 ? "Welcome to peer 0" : ""; }
template <typename T>
std::string CodeAndText(const T& m) {  // Reject, Removed, Error
  if (!StatusOk(m.code)) return "status out of range";
  return m.reason.size() > limits::kDetailBytesMax ? "reason too long" : "";
}
inline std::string Rule(const net::Reject& m) { return CodeAndText(m); }
inline std::string Rule(const net::Removed& m) { return CodeAndText(m); }
inline std::string Rule(const net::Error& m) { return CodeAndText(m); }
inline std::string Rule(const net::EpochPropose& m) {
  if (m.streams_per_link < 1 || m.streams_per_link > limits::kStreamsPerLinkMax) {
    return "streams_per_link out of range";
  }
  if (m.segment_bytes < limits::kSegmentBytesMin || m.segment_bytes > limits::kSegmentBytesMax) {
    return "segment_bytes out of range";
  }
  if (m.members.empty() || m.members.size() > limits::kMembersMax) return "member count";
  for (const net::Member& x : m.members) {
    if (x.peer_id == 0) return "member with peer 0";
    if (x.host.size() > limits::kHostBytesMax) return "member host too long";
  }
  return "";
}
inline std::string Rule(const net::EpochReady& m) { return StatusOk(m.code) ? "" : "bad status"; }
inline std::string Rule(const net::EpochFault& m) {
  if (!StatusOk(m.code)) return "bad status";
  return m.detail.size() > limits::kDetailBytesMax ? "detail too long" : "";
}
inline std::string Rule(const net::EpochAbort& m) { return StatusOk(m.code) ? "" : "bad status"; }
inline std::string Rule(const net::DataHello& m) {
  if (m.from == 0 || m.to == 0) return "DataHello names peer 0";
  if (m.stream_count < 1 || m.stream_count > limits::kStreamsPerLinkMax) return "stream_count";
  if (m.stream_index >= m.stream_count) return "stream_index >= stream_count";
  if (m.kind != net::StreamKind::kRing && m.kind != net::StreamKind::kTransfer) return "kind";
  return "";
}
inline std::string Rule(const net::SyncReport& m) {
  if (m.tensors.size() > limits::kSharedTensorsMax) return "too many tensors";
  for (const net::TensorReport& t : m.tensors) {
    if (t.name.size() > limits::kTensorNameBytesMax) return "tensor name too long";
    if (!IsValidDtype(t.dtype)) return "bad dtype";
    if (t.count > limits::kCollectiveBytesMax / DtypeBytes(t.dtype)) return "tensor too large";
  }
  return "";
}
inline std::string Rule(const net::SyncPlan& m) {
  if (!StatusOk(m.code)) return "bad status";
  if (m.reason.size() > limits::kDetailBytesMax) return "reason too long";
  if (m.expect.size() > limits::kSharedTensorsMax) return "too many expected hashes";
  for (const net::ExpectedHash& e : m.expect) {
    if (e.tensor >= limits::kSharedTensorsMax) return "expected tensor out of range";
  }
  if (m.recvs.size() + m.sends.size() > limits::kSyncPiecesMax) return "too many pieces";
  for (const auto* list : {&m.recvs, &m.sends}) {
    for (const net::TransferPiece& p : *list) {
      if (std::string why = PieceRule(p); !why.empty()) return why;
    }
  }
  return "";
}
// Messages with nothing to check beyond their fixed size.
template <typename T>
std::string Rule(const T&) {
  return "";
}

}  // namespace internal

// "" if `m` keeps every rule of the wire format's tables, else the first rule it breaks.
inline std::string BrokenRule(const net::Message& m) {
  return std::visit([](const auto& x) { return internal::Rule(x); }, m);
}

// The most a decode of `payload_bytes` bytes of `type` may allocate in one piece: a list is
// allocated only after its count was checked against its maximum and against the bytes left
// (each entry has a fixed part on the wire), so a list of T costs at most
// min(max count, payload / fixed bytes) * sizeof(T). Strings and error messages are small:
// kDetailBytesMax plus room for the message text.
inline std::size_t LargestAllocationMax(net::MsgType type, std::size_t payload_bytes) {
  auto list = [payload_bytes](std::size_t count_max, std::size_t wire_bytes, std::size_t bytes) {
    return std::min(count_max, payload_bytes / wire_bytes) * bytes;
  };
  std::size_t most = limits::kDetailBytesMax + 256;
  switch (type) {
    case net::MsgType::kHello:  // a rejoin report's lists: members and last ring, tags, ops
      most = std::max(most, list(limits::kMembersMax, 8, sizeof(PeerId)));
      most = std::max(most, list(limits::kTagsPerEpochMax, 16, sizeof(net::TagSeq)));
      most = std::max(most, list(limits::kOpsInFlightMax, 33, sizeof(net::RejoinOp)));
      break;
    case net::MsgType::kEpochPropose:
      most = std::max(most, list(limits::kMembersMax, 12, sizeof(net::Member)));
      break;
    case net::MsgType::kSyncReport:
      most = std::max(most, list(limits::kSharedTensorsMax, 20, sizeof(net::TensorReport)));
      break;
    case net::MsgType::kSyncPlan:
      most = std::max(most, list(limits::kSharedTensorsMax, 12, sizeof(net::ExpectedHash)));
      most = std::max(
          most, list(limits::kSyncPiecesMax, limits::kPieceBytes, sizeof(net::TransferPiece)));
      break;
    default:
      break;
  }
  return most;
}

// The most a decode may allocate in all: every list once, every string once, and the error text.
inline std::size_t TotalAllocationMax(net::MsgType type, std::size_t payload_bytes) {
  // A list entry's in-memory size over its fixed wire size is at most 48 / 12 (a Member), and a
  // string costs its length plus one; 8 per payload byte covers both with room.
  return 8 * payload_bytes + LargestAllocationMax(type, 0) * 4;
}

// DecodePayload, with its allocations held to the two bounds above.
inline Status DecodeWithinBounds(net::MsgType type, const std::uint8_t* payload,
                                 std::size_t payload_bytes, net::Message* out) {
  Status s;
  AllocStats used;
  {
    AllocWatch watch;
    s = net::DecodePayload(type, payload, payload_bytes, out);
    used = watch.Stop();
  }
  const std::string what = std::string(net::MsgTypeName(type)) + " of " +
                           std::to_string(payload_bytes) + " bytes allocated ";
  FUZZ_REQUIRE(used.largest_bytes <= LargestAllocationMax(type, payload_bytes),
               what + std::to_string(used.largest_bytes) + " bytes at once");
  FUZZ_REQUIRE(used.total_bytes <= TotalAllocationMax(type, payload_bytes),
               what + std::to_string(used.total_bytes) + " bytes in all");
  return s;
}

}  // namespace shoal::fuzz
