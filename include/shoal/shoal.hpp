// shoal C++ API: a Communicator is one peer of a shoal group.
//
//   shoal::Options opt;
//   opt.coordinator_host = "127.0.0.1";
//   std::unique_ptr<shoal::Communicator> comm;
//   if (auto s = shoal::Communicator::Create(opt, &comm); !s.ok()) { ... }
//   for (;;) {                                   // one training step
//     comm->UpdateTopology();                    // step boundary: admit joiners, drop the dead
//     shoal::Status s = comm->AllReduce(grad, grad, n, SHOAL_F32, SHOAL_AVG);
//     if (!s.ok()) continue;                     // a peer was lost: every survivor saw the same
//   }                                            // error; retry after UpdateTopology
//
// Promises: every blocking call ends by its deadline (timeout_ms, or Options::timeout_ms when
// negative) plus at most Options::verdict_grace_ms; a collective that fails because a member died
// fails on every surviving member with the same status code and lost peer; a collective never
// succeeds on one member while it fails on another; after it succeeds all members hold the same
// bits. docs/protocol.md has the details.
//
// Thread safety: a Communicator may be used from several threads at once (for example, collectives
// with different tags). Buffers passed to a collective must stay valid and untouched until it
// returns (or its Request completes).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "shoal/status.hpp"
#include "shoal/types.h"

namespace shoal {

struct Options {
  std::string coordinator_host = "127.0.0.1";
  std::uint16_t coordinator_port = 48150;
  // Address other peers use to reach this peer's data listener, and where it listens
  // (data_bind_host empty: the same as data_host). Port 0 lets the OS choose.
  std::string data_host = "127.0.0.1";
  std::string data_bind_host;
  std::uint16_t data_port = 0;
  PeerId peer_id = 0;                   // 0: draw a random one
  std::int64_t timeout_ms = 30000;      // default deadline of every blocking call
  std::int64_t verdict_grace_ms = 2000; // how long past a deadline to wait for the agreed outcome
  std::int64_t setup_timeout_ms = 10000;  // to open the data connections of a new epoch
  // When the coordinator's connection drops, keep this peer's state and reconnect (with backoff,
  // at most reconnect_backoff_max_ms between attempts) for this long; a restarted coordinator at
  // the same address rebuilds the group from what its peers report. 0: fail every call with
  // SHOAL_ERR_COORDINATOR_LOST at once. Calls keep their own deadlines meanwhile.
  std::int64_t reconnect_window_ms = 60000;
  std::int64_t reconnect_backoff_max_ms = 500;
  // Standby coordinators ("host:port", "[v6]:port"), tried in turn after the primary
  // (coordinator_host:coordinator_port) when it stays unreachable: a peer moves to the next one
  // after heartbeat_timeout + heartbeat_interval without a coordinator, so the one it left has
  // dropped it by then. Run every coordinator of such a set with shoal-coord --quorum (and the
  // standbys with --standby): docs/protocol.md, "Standby coordinators".
  std::vector<std::string> coordinator_standbys;
  std::string log_level = "warn";       // trace, debug, info, warn, error, off
  // The group secret, if the coordinator has one (shoal-coord --secret-file): every connection,
  // to the coordinator and between peers, proves it with HMAC-SHA256 before anything else. A
  // wrong or missing secret fails Create with SHOAL_ERR_AUTH.
  std::string secret;
  // TLS 1.3 on every connection: to the coordinator and between peers (ring and transfer
  // streams). Must match the coordinator (shoal-coord --tls); a mismatch fails Create with
  // SHOAL_ERR_PROTOCOL and a message that says which side uses TLS. TLS encrypts; with a secret
  // it also authenticates both ends (the proofs are bound to the TLS session). TLS without a
  // secret protects only against passive eavesdroppers: docs/protocol.md, "TLS".
  bool tls = false;
};

struct CollectiveOptions {
  std::uint64_t tag = 0;          // tells concurrent collectives apart; same on every member
  std::int64_t timeout_ms = -1;   // < 0: Options::timeout_ms
};

// One tensor of a shared state: a name, the element type and count, and the caller's memory, which
// a sync may overwrite (only when this peer must receive that tensor).
struct SharedTensor {
  std::string name;            // at most 255 bytes; unique within the state
  shoal_dtype dtype = SHOAL_F32;
  std::uint64_t count = 0;     // elements
  void* data = nullptr;        // count * element size bytes; may be null when count == 0
  // Members at the group's revision may hold other bytes here (e.g. per-peer optimizer state): it
  // is sent only to members that are behind (joiners). Must be the same on every member.
  bool allow_divergence = false;
};

// A shared state: named tensors kept bit-identical across members, and a revision that the user
// advances by exactly one per step (docs/protocol.md, "Shared state").
struct SharedState {
  std::uint64_t revision = 0;
  std::vector<SharedTensor> tensors;
};

// What a SyncSharedState call did on this peer.
struct SyncInfo {
  std::uint64_t revision = 0;          // the group's revision after the sync
  std::uint64_t rx_bytes = 0;          // received into this peer's tensors
  std::uint64_t tx_bytes = 0;          // sent to other members
  std::uint32_t tensors_received = 0;
  std::vector<std::pair<PeerId, std::uint64_t>> rx_from;  // bytes received per sender
  double hash_seconds = 0;             // hashing this peer's tensors before the sync
  double transfer_seconds = 0;         // from the plan to this peer's part done (hash checks too)
};

// A collective started with one of the *Async calls. Destroying an unfinished Request waits for it
// (within its deadline).
class Request {
 public:
  virtual ~Request() = default;
  // Waits until the collective is decided or timeout_ms passes (< 0: until the collective's own
  // deadline). SHOAL_ERR_TIMEOUT from Wait with a shorter timeout means "not yet": call again.
  virtual Status Wait(std::int64_t timeout_ms = -1) = 0;
  // Whether Wait would return at once.
  virtual bool Done() const = 0;
};

class Communicator {
 public:
  // Connects to the coordinator and waits to be welcomed (pending). The first peer of an empty group
  // becomes its only member at once; others become members in a later UpdateTopology().
  static Status Create(const Options& options, std::unique_ptr<Communicator>* out);
  // Leaves the group cleanly if still in it.
  virtual ~Communicator() = default;

  // Step boundary. For a member: a barrier with the other members, after which pending peers are
  // admitted and failed members are gone. For a pending peer: waits until it is admitted.
  virtual Status UpdateTopology(std::int64_t timeout_ms = -1) = 0;

  // Ring all-reduce of `count` elements. send == recv is in place. Members must call with the same
  // count, dtype, op and tag. On a group of one it copies.
  virtual Status AllReduce(const void* send, void* recv, std::uint64_t count, shoal_dtype dtype,
                           shoal_reduce_op op, const CollectiveOptions& options = {}) = 0;
  virtual Status AllReduceAsync(const void* send, void* recv, std::uint64_t count,
                                shoal_dtype dtype, shoal_reduce_op op,
                                const CollectiveOptions& options,
                                std::unique_ptr<Request>* out) = 0;

  // Makes every member's shared state equal: each member reports its revision and per-tensor hashes;
  // the coordinator elects per tensor the content most members hold at the highest revision;
  // members that differ (or are behind, like a joiner) receive those bytes from members that hold
  // them, spread over several senders, and check their hashes. On success state->revision is the
  // group's revision and every member holds the same bytes (tensors allowing divergence aside).
  // A revision more than one above the group's last is refused with SHOAL_ERR_REVISION, and a state
  // whose tensor list differs from the group's with SHOAL_ERR_MISMATCH; such a member also leaves
  // the epoch once the others' sync commits (it is re-admitted at the next update_topology). A
  // failure during the transfer (a sender dies) ends like any collective: every member gets the
  // same status, and a retry after UpdateTopology() completes from another holder.
  virtual Status SyncSharedState(SharedState* state, SyncInfo* info = nullptr,
                                 std::int64_t timeout_ms = -1) = 0;

  // Leaves the group; later calls fail with SHOAL_ERR_CLOSED.
  virtual Status Leave() = 0;

  virtual PeerId peer_id() const = 0;
  // Of the committed epoch this peer is a member of (0 / empty while pending).
  virtual std::uint64_t epoch() const = 0;
  virtual std::uint32_t world_size() const = 0;
  virtual std::uint32_t rank() const = 0;
  virtual std::vector<PeerId> members() const = 0;
  virtual bool is_member() const = 0;
};

}  // namespace shoal
