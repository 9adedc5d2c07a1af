// Coordinator: the membership and agreement logic of shoal-coord as a pure state machine.
//
// It holds no tensors and touches no sockets, clocks or randomness: the I/O shell (server.h) feeds
// it connection events, decoded messages and timer ticks with the current monotonic time, and
// carries out the outputs it returns (send a message on a connection, close a connection). The
// simulator in tests/sim drives it the same way with a simulated network and clock, so a seed
// replays a whole run. docs/protocol.md is the protocol it implements.
//
// Thread safety: none; one thread owns a Coordinator. Outputs are appended to `out` in the order
// they must be carried out; messages to one connection must be sent in that order.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "shoal/common/clock.h"
#include "shoal/common/limits.h"
#include "shoal/status.hpp"
#include "shoal/net/messages.h"

namespace shoal::coord {

using ConnId = std::uint64_t;  // chosen by the shell, never reused while the coordinator lives

struct Config {
  std::uint32_t heartbeat_interval_ms = 250;  // send a heartbeat after this much silence
  std::uint32_t heartbeat_timeout_ms = 3000;  // drop a connection silent this long
  std::uint32_t hello_timeout_ms = 5000;      // drop a connection that has not said Hello by then
  std::uint32_t barrier_timeout_ms = 30000;   // demote members late to update_topology by this much
  std::uint32_t setup_timeout_ms = 10000;     // give up on an epoch setup after this long
  std::uint32_t streams_per_link = 2;         // TCP streams per ring link (docs/benchmarks.md)
  std::uint32_t segment_bytes = 2u << 20;     // pipelining unit of collectives, sent in proposals
  std::uint32_t max_members = limits::kMembersMax;
  std::uint32_t max_pending = limits::kPendingMax;
  std::uint32_t max_open_ops = 1u << 16;  // op records awaiting results in one epoch
  // Coordinator restart (docs/protocol.md, "Coordinator restart"). A coordinator that has no group
  // and hears from a peer of an epoch above any it knows rebuilds that group from the peers'
  // reports; it waits at most this long for the rest of the epoch's members to report.
  std::uint32_t rebuild_timeout_ms = 3000;
  // For this long after the coordinator starts it proposes no new group, so that the members of
  // a group it replaces (a restart) report before newcomers could form another one. 0: propose at
  // once. shoal-coord sets it; the state machine's tests mostly do not.
  std::uint32_t startup_hold_ms = 0;
  // Standby coordinators (docs/protocol.md, "Standby coordinators"). With quorum, every epoch this
  // coordinator proposes holds a strict majority of the newest committed epoch it knows of (its
  // own, or one a rejoining peer was a member of), so that two coordinators of a set can never
  // both move the same group on; without a majority it gives its peers up so that they look for
  // the coordinator that has it. Set on every coordinator of a primary/standby set.
  bool quorum = false;
  // A standby forms no group of newcomers: its group comes from a rebuild only.
  bool standby = false;
};

// One thing for the shell to do.
struct Output {
  enum class Kind { kSend, kClose };
  Kind kind = Kind::kSend;
  ConnId conn = 0;
  net::Message message;  // for kSend
};

// A snapshot for tests, the simulator and logs.
struct View {
  std::uint64_t epoch = 0;        // the current epoch (committed or being set up); 0 before the first
  bool committed = false;         // the current epoch is committed
  bool broken = false;            // the current epoch is broken (ops fail)
  net::EpochAbort abort_reason;   // valid when broken
  std::vector<PeerId> members;    // ring order of the current epoch (proposed or committed)
  std::vector<PeerId> pending;    // arrival order
  std::vector<PeerId> barrier;    // members that have entered update_topology
  std::uint64_t highest_epoch = 0;  // the highest epoch number ever proposed
  std::optional<std::uint64_t> revision;  // shared state: the group's last committed revision
  std::vector<PeerId> revision_holders;   // the members that hold it (sorted)
  bool rebuilding = false;  // collecting the reports of a group this coordinator replaces
};

class Coordinator {
 public:
  explicit Coordinator(Config config);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // A connection was accepted; it must say Hello within hello_timeout_ms.
  void OnConnect(ConnId conn, TimeMs now_ms);
  // A decoded message arrived on `conn`. Messages a peer may not send, or may not send now, are
  // answered with Error (and a close, if they make the connection unusable).
  void OnMessage(ConnId conn, const net::Message& message, TimeMs now_ms, std::vector<Output>* out);
  // The connection closed or failed (including a frame that did not decode). Unknown or already
  // closed connections are ignored.
  void OnDisconnect(ConnId conn, TimeMs now_ms, std::vector<Output>* out);
  // Time passes: heartbeats, heartbeat deadlines, barrier and setup timeouts. Call at least every
  // heartbeat_interval_ms / 2.
  void OnTick(TimeMs now_ms, std::vector<Output>* out);

  View view() const;
  const Config& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace shoal::coord
