// The messages of the shoal protocol as plain structs, one per message type, and the Message
// variant that holds any of them. docs/protocol.md says what each one means; docs/wire-format.md
// gives the bytes; codec.h turns one into the other.
//
// Value types; thread-compatible.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "shoal/net/auth.h"
#include "shoal/status.hpp"

namespace shoal::net {

// The one message-type numbering of the protocol. Never renumber; append.
enum class MsgType : std::uint16_t {
  kHello = 1,
  kWelcome = 2,
  kReject = 3,
  kHeartbeat = 4,
  kUpdateTopology = 5,
  kTopologyUnchanged = 6,
  kEpochPropose = 7,
  kEpochReady = 8,
  kEpochCommit = 9,
  kOpResult = 10,
  kOpCommit = 11,
  kEpochFault = 12,
  kEpochAbort = 13,
  kLeave = 14,
  kRemoved = 15,
  kError = 16,
  kSyncReport = 17,
  kSyncPlan = 18,
  kAuthHello = 19,
  kAuthChallenge = 20,
  kAuthProof = 21,
  kDataHello = 32,
  kDataSegment = 33,  // hot path: not a Message; see codec.h SegmentHeader
};

// Where an op of a rejoining peer's epoch stands on that peer (Rejoin.ops).
enum class RejoinOpState : std::uint8_t {
  kRunning = 0,  // its part is not finished
  kDone = 1,     // finished, OpResult sent, no verdict yet
  kFailed = 2,   // failed locally: no verdict came within the caller's deadline and grace
};
struct RejoinOp {
  std::uint64_t tag = 0;
  std::uint64_t seq = 0;
  RejoinOpState state = RejoinOpState::kRunning;
  std::uint64_t revision = 0;  // a done shared-state sync: the revision its commit gives
  std::uint64_t digest = 0;    // and this peer's state digest after it
  bool operator==(const RejoinOp&) const = default;
};
struct TagSeq {
  std::uint64_t tag = 0;
  std::uint64_t next_seq = 0;  // the seq this peer's next op with `tag` would carry
  bool operator==(const TagSeq&) const = default;
};
// What a peer that lost its coordinator knew when it lost it, sent in the Hello of its reconnection
// so that a restarted coordinator can rebuild the group (docs/protocol.md, "Coordinator restart").
struct Rejoin {
  std::uint64_t epoch = 0;       // the epoch this peer was in, proposed or committed; 0: none
  bool committed = false;        // `epoch` was committed with this peer as a member
  std::vector<PeerId> members;   // of `epoch`, in ring order
  bool broken = false;           // it received EpochAbort{epoch, abort_code, abort_lost}
  shoal_status abort_code = SHOAL_OK;
  PeerId abort_lost = 0;
  bool fault_sent = false;       // it sent (or tried to send) EpochFault{fault_code, fault_suspect}
  shoal_status fault_code = SHOAL_OK;
  PeerId fault_suspect = 0;
  bool in_barrier = false;       // it sent UpdateTopology{epoch}
  std::vector<TagSeq> next_seq;  // every tag it used in `epoch`
  std::vector<RejoinOp> ops;     // its ops of `epoch` without a verdict (all others committed)
  bool has_revision = false;     // it holds the revision of a committed shared-state sync
  std::uint64_t revision = 0;
  std::uint64_t state_digest = 0;  // xxHash3-64 of its tensors' hashes at that revision
  // The latest epoch this peer was a committed member of (0: none) and its ring, even if it is
  // pending now: how a coordinator of a quorum set learns of the group's newest epoch.
  std::uint64_t last_epoch = 0;
  std::vector<PeerId> last_ring;
  // The highest epoch number this peer was ever given (proposed or committed), even if it is
  // pending now: epochs proposed to it later must be above it.
  std::uint64_t seen_epoch = 0;
  bool operator==(const Rejoin&) const = default;
};
// peer -> coordinator: first message on a control connection.
struct Hello {
  PeerId peer_id = 0;
  std::string host;  // where the peer's data listener can be reached
  std::uint16_t data_port = 0;
  std::optional<Rejoin> rejoin;  // present when the peer reconnects after losing a coordinator
};
// coordinator -> peer: accepted as pending.
struct Welcome {
  PeerId peer_id = 0;
  std::uint32_t heartbeat_interval_ms = 0;
  std::uint32_t heartbeat_timeout_ms = 0;
};
// coordinator -> peer: refused; the coordinator closes the connection after it.
struct Reject {
  shoal_status code = SHOAL_ERR_REJECTED;
  std::string reason;
};
// both ways: liveness when nothing else was sent.
struct Heartbeat {};
// member -> coordinator: enter the update_topology barrier of `epoch`.
struct UpdateTopology {
  std::uint64_t epoch = 0;
};
// coordinator -> members: barrier done, the epoch stays.
struct TopologyUnchanged {
  std::uint64_t epoch = 0;
};
struct Member {
  PeerId peer_id = 0;
  std::string host;
  std::uint16_t port = 0;
  bool operator==(const Member&) const = default;
};
// coordinator -> each peer of the new list: set up the data connections of `epoch`.
struct EpochPropose {
  std::uint64_t epoch = 0;
  std::uint32_t streams_per_link = 1;
  std::uint32_t segment_bytes = 0;
  std::vector<Member> members;  // ring order
};
// peer -> coordinator: data connections of `epoch` are up (ok) or could not be made.
struct EpochReady {
  std::uint64_t epoch = 0;
  bool ok = false;
  PeerId suspect = 0;
  shoal_status code = SHOAL_OK;
};
// coordinator -> members: the epoch is committed.
struct EpochCommit {
  std::uint64_t epoch = 0;
};
// member -> coordinator: my part of op (tag, seq) is complete.
struct OpResult {
  std::uint64_t epoch = 0;
  std::uint64_t tag = 0;
  std::uint64_t seq = 0;
};
// coordinator -> members: every member completed op (tag, seq).
struct OpCommit {
  std::uint64_t epoch = 0;
  std::uint64_t tag = 0;
  std::uint64_t seq = 0;
};
// member -> coordinator: something failed in `epoch`.
struct EpochFault {
  std::uint64_t epoch = 0;
  PeerId suspect = 0;
  shoal_status code = SHOAL_ERR_PEER_LOST;
  std::uint64_t tag = 0;
  std::uint64_t seq = 0;
  std::string detail;
};
// coordinator -> members: the epoch is broken; every uncommitted op fails with (code, lost_peer).
struct EpochAbort {
  std::uint64_t epoch = 0;
  shoal_status code = SHOAL_ERR_PEER_LOST;
  PeerId lost_peer = 0;
};
// peer -> coordinator: leaving for good.
struct Leave {};
// coordinator -> peer: you are no longer a member; you are pending again.
struct Removed {
  shoal_status code = SHOAL_ERR_NOT_MEMBER;
  std::string reason;
};
// coordinator -> peer: your message was refused (stale epoch, out of order). Fatal ones are
// followed by a close.
struct Error {
  shoal_status code = SHOAL_ERR_PROTOCOL;
  std::string reason;
};
// The op tag of shared-state syncs: a sync is op (kSharedStateTag, seq) of its epoch, so it ends
// with OpResult / OpCommit / EpochAbort like any collective. User tags must differ from it.
inline constexpr std::uint64_t kSharedStateTag = ~std::uint64_t{0};

// One tensor of a shared state as a member reports it.
struct TensorReport {
  std::string name;
  shoal_dtype dtype = SHOAL_F32;
  bool allow_divergence = false;  // members at the group's revision may hold other bytes
  std::uint64_t count = 0;        // elements
  std::uint64_t hash = 0;         // xxHash3-64 of the tensor's bytes
  bool operator==(const TensorReport&) const = default;
};
// member -> coordinator: my shared state for sync `seq` of `epoch` (op (kSharedStateTag, seq)).
struct SyncReport {
  std::uint64_t epoch = 0;
  std::uint64_t seq = 0;
  std::uint64_t revision = 0;
  std::vector<TensorReport> tensors;
};
// A byte range of one tensor that moves between two members. In a plan's `sends` `peer` is the
// receiver, in its `recvs` the sender.
struct TransferPiece {
  PeerId peer = 0;
  std::uint32_t tensor = 0;
  std::uint64_t offset = 0;
  std::uint64_t bytes = 0;
  bool operator==(const TransferPiece&) const = default;
};
struct ExpectedHash {
  std::uint32_t tensor = 0;
  std::uint64_t hash = 0;
  bool operator==(const ExpectedHash&) const = default;
};
// coordinator -> member: what this member sends and receives in sync `seq`, or (code != OK) why it
// is refused. The pieces one member sends to another appear in the same order in the sender's
// `sends` and the receiver's `recvs`.
struct SyncPlan {
  std::uint64_t epoch = 0;
  std::uint64_t seq = 0;
  shoal_status code = SHOAL_OK;
  std::string reason;             // when refused
  std::uint64_t revision = 0;     // the group's revision after this sync
  std::vector<ExpectedHash> expect;  // the hash of every tensor this member receives
  std::vector<TransferPiece> recvs;
  std::vector<TransferPiece> sends;
};
// Authentication (auth.h): connecting side -> accepting side, first message of a connection of a
// group with a secret.
struct AuthHello {
  Nonce nonce{};
  bool operator==(const AuthHello&) const = default;
};
// accepting side -> connecting side: its nonce and its proof over both nonces.
struct AuthChallenge {
  Nonce nonce{};
  Mac proof{};
  bool operator==(const AuthChallenge&) const = default;
};
// connecting side -> accepting side: its proof over both nonces.
struct AuthProof {
  Mac proof{};
  bool operator==(const AuthProof&) const = default;
};
// What a data stream carries.
enum class StreamKind : std::uint8_t {
  kRing = 0,      // a ring link of the epoch (collectives)
  kTransfer = 1,  // a point-to-point link of the epoch (shared-state transfers)
};
// peer -> peer: first message on a data stream.
struct DataHello {
  std::uint64_t epoch = 0;
  PeerId from = 0;
  PeerId to = 0;
  std::uint16_t stream_index = 0;
  std::uint16_t stream_count = 0;
  StreamKind kind = StreamKind::kRing;
};

using Message = std::variant<Hello, Welcome, Reject, Heartbeat, UpdateTopology, TopologyUnchanged,
                             EpochPropose, EpochReady, EpochCommit, OpResult, OpCommit, EpochFault,
                             EpochAbort, Leave, Removed, Error, DataHello, SyncReport, SyncPlan,
                             AuthHello, AuthChallenge, AuthProof>;

MsgType TypeOf(const Message& m);
const char* MsgTypeName(MsgType t);

}  // namespace shoal::net
