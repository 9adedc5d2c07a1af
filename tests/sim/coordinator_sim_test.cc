// Deterministic simulation of the coordinator (coord/coordinator.h) with simulated peers.
//
// Vocabulary:
// - world: one seeded run: the real Coordinator, N simulated peers, a simulated network and clock.
//   Everything random comes from one std::mt19937_64 seeded with the run's seed, and every
//   container is ordered, so a seed replays the same run.
// - wire: the two directions of one control connection. Each message gets a random delay, but a
//   message never overtakes an earlier one in the same direction (TCP order); a close travels
//   behind the messages sent before it.
// - sim peer: follows the peer side of docs/protocol.md: Hello, wait for admission, set up each
//   proposed epoch (EpochReady ok, or a failure naming a neighbour), run ops of a per-epoch script
//   (the same for all members, so ops match by (tag, seq)), report OpResult or EpochFault, wait for
//   the verdict, call update_topology at the end of each round and after an abort, heartbeat.
// - data plane of an epoch: who is in it and which op each member started. An op completes only
//   when every member started it and nobody left the data plane; when someone leaves (crash, hang,
//   leave, a newer proposal, Removed), the others' running ops fail: a neighbour of the one that
//   left names it (PEER_LOST, or TIMEOUT for a hang), anyone else times out on its previous
//   neighbour.
// - chaos: random joins (with fresh ids, reused ids of dead peers, or the id of a live peer),
//   crashes (connection closes), hangs (silence), leaves, injected op faults and setup failures,
//   slow setups, members late to update_topology, and rogue peers that send a message they may
//   not.
//   The chaos phase is followed by a calm phase with no chaos, in which the group must make
//   progress again.
//
// Invariants checked after every event (docs/protocol.md "Invariants"):
// - epoch numbers only grow at the coordinator and in what each peer sees; proposals never reuse a
//   number;
// - no peer is a committed member of two epochs at once (per connection, a commit needs a proposal
//   of that epoch and no commit since; ops and verdicts only for the committed epoch);
// - every member of a committed epoch is live (connected) at commit time and all of them get it;
// - agreed outcome: every peer that learns an outcome for op (epoch, tag, seq) learns the same one;
//   no OpCommit unless every member's OpResult reached the coordinator; every op gets its verdict
//   within its deadline plus the grace;
// - pending peers become members only through a proposal made when a barrier completes, or when
//   the group is empty; re-proposals keep the ring order;
// - faithful peers are never refused, rejected or cut off; rogue peers always are.
// Liveness: in the calm phase some op commits whenever a faithful peer is alive.
//
// SHOAL_SIM_SEEDS=<n> sets how many seeds run (seeds 1..n, default 2000); SHOAL_SIM_SEED=<s>
// replays seed s with a trace of every event.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <queue>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "shoal/coord/coordinator.h"

namespace shoal::coord {
namespace {

using net::Message;

// ---- Run shape -------------------------------------------------------------------------------

constexpr TimeMs kTickMs = 50;             // coordinator ticks and peer timers
constexpr TimeMs kChaosMs = 20'000;        // chaos phase
constexpr TimeMs kCalmMs = 8'000;          // calm phase after it
constexpr TimeMs kOpDeadlineMs = 3'000;    // each op's deadline at the peer
constexpr TimeMs kVerdictGraceMs = 1'000;  // docs/protocol.md verdict_grace_ms
constexpr int kOpWindow = 2;               // ops a peer runs at once
constexpr int kMaxAlive = 8;               // joins stop at this many live peers
constexpr TimeMs kAdmitWithinMs = 4'000;   // in the calm phase, pending peers wait no longer

Config SimConfig() {
  Config c;
  c.heartbeat_interval_ms = 100;
  c.heartbeat_timeout_ms = 1000;
  c.hello_timeout_ms = 1000;
  c.barrier_timeout_ms = 1500;
  c.setup_timeout_ms = 1000;
  c.streams_per_link = 2;
  c.segment_bytes = 1u << 16;
  c.max_members = 6;  // small, so that admission is sometimes capped
  c.max_pending = 16;
  c.max_open_ops = 64;
  return c;
}

// The signal handler names the seed if the coordinator aborts (a failed SHOAL_CHECK).
volatile std::sig_atomic_t g_running_seed = -1;
extern "C" void OnAbort(int) {
  char buf[160];
  int n = std::snprintf(buf, sizeof buf,
                        "\ncoordinator simulation aborted in seed %ld; replay with "
                        "SHOAL_SIM_SEED=%ld\n",
                        static_cast<long>(g_running_seed), static_cast<long>(g_running_seed));
  if (n > 0) (void)!write(2, buf, static_cast<std::size_t>(n));
  std::signal(SIGABRT, SIG_DFL);
  std::abort();
}

std::uint64_t Mix(std::uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

struct OpKey {
  std::uint64_t tag = 0;
  std::uint64_t seq = 0;
  auto operator<=>(const OpKey&) const = default;
};

// What a peer learnt about one op. kCoordinatorLost is not an outcome (nothing was learnt).
struct Outcome {
  enum class Kind { kCommit, kAbort, kEpochChanged, kNotMember };
  Kind kind = Kind::kCommit;
  shoal_status code = SHOAL_OK;
  PeerId lost = 0;
  bool operator==(const Outcome&) const = default;
};

std::string OutcomeText(const Outcome& o) {
  switch (o.kind) {
    case Outcome::Kind::kCommit:
      return "commit";
    case Outcome::Kind::kAbort:
      return "abort(" + std::string(shoal_strerror(o.code)) + ", " + std::to_string(o.lost) + ")";
    case Outcome::Kind::kEpochChanged:
      return "epoch changed";
    case Outcome::Kind::kNotMember:
      return "removed";
  }
  return "?";
}

// ---- Simulated peers -------------------------------------------------------------------------

enum class Life { kAlive, kCrashed, kHung, kLeft, kGone };
enum class Phase { kConnecting, kPending, kSetup, kMember, kBarrier };

struct LocalOp {
  bool reported = false;  // OpResult sent
  bool faulted = false;   // EpochFault sent
  bool running = true;    // its part is not complete
  TimeMs deadline_ms = 0;
};

struct SimPeer {
  int index = 0;
  PeerId id = 0;
  ConnId conn = 0;
  Life life = Life::kAlive;
  Phase phase = Phase::kConnecting;
  bool reject_ok = false;    // joined with an id that may be in use
  bool rogue_acted = false;  // sent a message it may not: must be cut off
  TimeMs pending_since_ms = 0;
  TimeMs last_sent_ms = 0;
  TimeMs last_recv_ms = 0;
  std::uint64_t max_epoch_seen = 0;
  // Setup.
  std::uint64_t setup_epoch = 0;
  bool ready_sent = false;
  bool ready_ok = false;
  // Membership.
  std::uint64_t epoch = 0;  // committed epoch (kMember/kBarrier)
  bool broken = false;
  std::uint64_t round = 0;
  int script_pos = 0;
  bool barrier_scheduled = false;
  std::map<OpKey, LocalOp> ops;  // unresolved ops of `epoch`
  std::map<std::uint64_t, std::uint64_t> next_seq;
  // Chaos flags.
  bool slow_next_barrier = false;
  bool fault_next_op = false;
};

// A proposal the coordinator made, and the data plane of that epoch at the peers.
struct SimEpoch {
  std::vector<int> members;  // sim peer indexes, ring order
  std::set<int> departed;    // left the data plane
  std::set<int> hung;        // of those, the ones that went silent
  std::map<OpKey, std::set<int>> started;
  std::map<OpKey, std::set<int>> results_delivered;  // OpResults that reached the coordinator
  bool committed = false;
};

// The coordinator's side of one connection, as seen in its outputs.
struct CoordConn {
  int peer = -1;
  bool open = true;  // the coordinator may still send on it
  bool welcomed = false;
  std::uint64_t proposed = 0;   // last proposal sent, 0 after Removed
  std::uint64_t committed = 0;  // committed epoch, 0 until commit / after a proposal or Removed
  std::set<std::uint64_t> aborted;
};

struct Wire {
  TimeMs to_coord_ms = 0;  // arrival time of the last message towards the coordinator
  TimeMs to_peer_ms = 0;
  bool coord_closed = false;  // the coordinator closed it or learnt it closed
};

enum class TimerKind { kHeartbeat, kSetupDone, kOpDone, kFailDetect, kDeadline, kGrace, kBarrier };

struct Timer {
  TimerKind kind = TimerKind::kHeartbeat;
  std::uint64_t epoch = 0;
  OpKey op;
  PeerId suspect = 0;
  shoal_status code = SHOAL_OK;
  std::uint64_t round = 0;
};

enum class EventKind {
  kTick,
  kCoordRecv,
  kCoordDisconnect,
  kPeerRecv,
  kPeerClosed,
  kTimer,
  kChaos
};

struct Event {
  TimeMs at_ms = 0;
  std::uint64_t order = 0;  // ties: earlier scheduled first (keeps per-wire FIFO)
  EventKind kind = EventKind::kTick;
  ConnId conn = 0;
  int peer = -1;
  Message message;
  Timer timer;
};

struct Later {
  bool operator()(const Event& a, const Event& b) const {
    return std::tie(a.at_ms, a.order) > std::tie(b.at_ms, b.order);
  }
};

struct Stats {
  int op_commits = 0;     // OpCommit verdicts sent by the coordinator (per op)
  int local_commits = 0;  // ops of a group of one
  int calm_commits = 0;   // both kinds, in the calm phase
  int epochs_committed = 0;
  int aborts = 0;
  int crashes = 0, hangs = 0, leaves = 0, joins = 0, rogues = 0, rejects = 0;
  int unchanged = 0;        // TopologyUnchanged rounds
  int removed = 0;          // Removed (barrier or setup demotions)
  int removed_timeout = 0;  // of those, for a barrier or setup timeout
  int stale_errors = 0;     // non-fatal Errors for stale UpdateTopology
  int failed_readies = 0;   // EpochReady ok=0
  int faults = 0;           // EpochFault sent
  std::map<shoal_status, int> aborts_by_code;
  std::uint64_t events = 0;

  void Add(const Stats& o) {
    op_commits += o.op_commits;
    local_commits += o.local_commits;
    calm_commits += o.calm_commits;
    epochs_committed += o.epochs_committed;
    crashes += o.crashes;
    hangs += o.hangs;
    leaves += o.leaves;
    joins += o.joins;
    rogues += o.rogues;
    rejects += o.rejects;
    unchanged += o.unchanged;
    removed += o.removed;
    removed_timeout += o.removed_timeout;
    stale_errors += o.stale_errors;
    failed_readies += o.failed_readies;
    faults += o.faults;
    for (const auto& [code, n] : o.aborts_by_code) aborts_by_code[code] += n;
    events += o.events;
  }
  std::string Text() const {
    std::string s =
        std::to_string(epochs_committed) + " epochs committed, " + std::to_string(op_commits) +
        " ops committed (+" + std::to_string(local_commits) + " in groups of one), " +
        std::to_string(unchanged) + " barriers unchanged, " + std::to_string(joins) + " joins, " +
        std::to_string(crashes) + " crashes, " + std::to_string(hangs) + " hangs, " +
        std::to_string(leaves) + " leaves, " + std::to_string(rogues) + " rogues, " +
        std::to_string(rejects) + " rejected joins, " + std::to_string(removed) + " demotions (" +
        std::to_string(removed_timeout) + " on timeouts), " + std::to_string(failed_readies) +
        " failed setups, " + std::to_string(faults) + " op faults, " +
        std::to_string(stale_errors) + " stale UpdateTopology, aborts:";
    for (const auto& [code, n] : aborts_by_code) {
      s += " " + std::string(shoal_strerror(code)) + " " + std::to_string(n);
    }
    return s + ", " + std::to_string(events) + " events";
  }
};

// ---- The world -------------------------------------------------------------------------------

class World {
 public:
  World(std::uint64_t seed, bool verbose)
      : seed_(seed), verbose_(verbose), rng_(seed), coord_(SimConfig()), config_(SimConfig()) {
    delay_max_ms_ = Uniform(2, 120);
    p_setup_fail_ = Uniform(0, 8) / 100.0;
    p_slow_setup_ = Uniform(0, 4) / 100.0;
    chaos_mean_ms_ = Uniform(150, 600);
    calm_group_min_ = static_cast<int>(Uniform(1, 3));
  }

  // Runs the world; returns false on the first violated invariant (see failure()).
  bool Run() {
    int initial = static_cast<int>(Uniform(1, 5));
    for (int i = 0; i < initial; ++i) {
      Schedule(Event{Uniform(0, 200), 0, EventKind::kChaos, 0, -1, {}, {}});
    }
    initial_joins_ = initial;
    Schedule(Event{kTickMs, 0, EventKind::kTick, 0, -1, {}, {}});
    Schedule(Event{Uniform(300, 300 + 2 * chaos_mean_ms_), 0, EventKind::kChaos, 0, -1, {}, {}});
    while (!queue_.empty() && failure_.empty()) {
      Event ev = queue_.top();
      queue_.pop();
      if (ev.at_ms > kChaosMs + kCalmMs) break;
      now_ms_ = ev.at_ms;
      ++stats_.events;
      Handle(ev);
    }
    if (failure_.empty()) CheckEnd();
    return failure_.empty();
  }

  const std::string& failure() const { return failure_; }
  const Stats& stats() const { return stats_; }

 private:
  // ---- Randomness and scheduling ----

  TimeMs Uniform(TimeMs lo, TimeMs hi) {
    return std::uniform_int_distribution<TimeMs>(lo, hi)(rng_);
  }
  bool Chance(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }
  TimeMs Delay() {
    if (Chance(0.02)) return Uniform(100, 300);  // a spike
    return Uniform(1, delay_max_ms_);
  }
  void Schedule(Event ev) {
    ev.order = ++order_;
    queue_.push(std::move(ev));
  }
  void ScheduleTimer(int peer, TimeMs at_ms, Timer t) {
    Event ev;
    ev.at_ms = at_ms;
    ev.kind = EventKind::kTimer;
    ev.peer = peer;
    ev.timer = t;
    Schedule(std::move(ev));
  }

  void Fail(const std::string& why) {
    if (!failure_.empty()) return;
    failure_ = "t=" + std::to_string(now_ms_) + "ms: " + why;
    if (verbose_) std::printf("VIOLATION %s\n", failure_.c_str());
  }

  // ---- Tracing ----

  std::string Name(PeerId id) const {
    auto it = by_id_.find(id);
    if (it != by_id_.end()) return "p" + std::to_string(it->second);
    char buf[32];
    std::snprintf(buf, sizeof buf, "#%llx", static_cast<unsigned long long>(id));
    return buf;
  }

  std::string Describe(const Message& m) const {
    std::string name = net::MsgTypeName(net::TypeOf(m));
    auto st = [](shoal_status s) { return std::string(shoal_strerror(s)); };
    auto num = [](std::uint64_t v) { return std::to_string(v); };
    return std::visit(
        [&](const auto& x) -> std::string {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, net::Hello>) {
            return name + "{" + Name(x.peer_id) + "}";
          } else if constexpr (std::is_same_v<T, net::Reject> || std::is_same_v<T, net::Error> ||
                               std::is_same_v<T, net::Removed>) {
            return name + "{" + st(x.code) + ": " + x.reason + "}";
          } else if constexpr (std::is_same_v<T, net::EpochPropose>) {
            std::string s = name + "{" + num(x.epoch) + ", [";
            for (const net::Member& mem : x.members) s += Name(mem.peer_id) + " ";
            return s + "]}";
          } else if constexpr (std::is_same_v<T, net::EpochReady>) {
            return name + "{" + num(x.epoch) +
                   (x.ok ? ", ok}" : ", failed " + Name(x.suspect) + " " + st(x.code) + "}");
          } else if constexpr (std::is_same_v<T, net::OpResult> ||
                               std::is_same_v<T, net::OpCommit>) {
            return name + "{" + num(x.epoch) + ", " + num(x.tag) + "/" + num(x.seq) + "}";
          } else if constexpr (std::is_same_v<T, net::EpochFault>) {
            return name + "{" + num(x.epoch) + ", " + Name(x.suspect) + " " + st(x.code) + ", " +
                   num(x.tag) + "/" + num(x.seq) + "}";
          } else if constexpr (std::is_same_v<T, net::EpochAbort>) {
            return name + "{" + num(x.epoch) + ", " + st(x.code) + " " + Name(x.lost_peer) + "}";
          } else if constexpr (std::is_same_v<T, net::UpdateTopology> ||
                               std::is_same_v<T, net::TopologyUnchanged> ||
                               std::is_same_v<T, net::EpochCommit>) {
            return name + "{" + num(x.epoch) + "}";
          } else {
            return name;
          }
        },
        m);
  }

  void Trace(const std::string& s) {
    if (verbose_) std::printf("%7lld  %s\n", static_cast<long long>(now_ms_), s.c_str());
  }

  // ---- Event dispatch ----

  void Handle(const Event& ev) {
    switch (ev.kind) {
      case EventKind::kTick: {
        Schedule(Event{now_ms_ + kTickMs, 0, EventKind::kTick, 0, -1, {}, {}});
        std::vector<Output> out;
        CoordStep([&]() { coord_.OnTick(now_ms_, &out); }, out, false);
        return;
      }
      case EventKind::kCoordRecv: {
        Wire& w = wires_[ev.conn];
        if (w.coord_closed) return;  // the shell delivers nothing after a close
        if (!std::holds_alternative<net::Heartbeat>(ev.message)) {
          Trace("coord <- p" + std::to_string(conn_peer_[ev.conn]) + " " + Describe(ev.message));
        }
        if (const auto* r = std::get_if<net::OpResult>(&ev.message)) {
          auto it = epochs_.find(r->epoch);
          if (it != epochs_.end()) {
            it->second.results_delivered[OpKey{r->tag, r->seq}].insert(conn_peer_[ev.conn]);
          }
        }
        std::vector<Output> out;
        bool is_update = std::holds_alternative<net::UpdateTopology>(ev.message);
        CoordStep([&]() { coord_.OnMessage(ev.conn, ev.message, now_ms_, &out); }, out, is_update);
        return;
      }
      case EventKind::kCoordDisconnect: {
        Wire& w = wires_[ev.conn];
        bool already = w.coord_closed;
        w.coord_closed = true;
        coord_conns_[ev.conn].open = false;  // nothing may be sent on it from now on
        Trace("coord: connection of p" + std::to_string(conn_peer_[ev.conn]) + " closed" +
              (already ? " (after its Close)" : ""));
        std::vector<Output> out;
        CoordStep([&]() { coord_.OnDisconnect(ev.conn, now_ms_, &out); }, out, false);
        if (already && !out.empty()) Fail("OnDisconnect of a closed connection had outputs");
        return;
      }
      case EventKind::kPeerRecv:
        PeerRecv(ev.peer, ev.message);
        return;
      case EventKind::kPeerClosed:
        PeerClosed(ev.peer);
        return;
      case EventKind::kTimer:
        OnTimer(ev.peer, ev.timer);
        return;
      case EventKind::kChaos:
        Chaos();
        return;
    }
  }

  // ---- The coordinator and the checks on its outputs ----

  template <class F>
  void CoordStep(F call, std::vector<Output>& out, bool trigger_is_update) {
    View before = coord_.view();
    call();
    View after = coord_.view();
    if (after.highest_epoch < before.highest_epoch) Fail("coordinator's highest epoch went back");
    if (after.epoch < before.epoch) Fail("coordinator's epoch went back");
    if (after.epoch > after.highest_epoch) Fail("current epoch above the highest");
    CheckOutputs(before, trigger_is_update, out);
    if (after.committed && !after.broken) {
      auto it = epochs_.find(after.epoch);
      if (it == epochs_.end() || !it->second.committed) {
        Fail("coordinator says committed but no EpochCommit was seen");
      }
    }
    Route(out);
  }

  void CheckOutputs(const View& before, bool trigger_is_update, const std::vector<Output>& out) {
    bool first_proposal = true;
    std::vector<int> prev;  // the list before the next proposal
    if (!before.members.empty()) prev = epochs_.at(before.epoch).members;
    std::map<std::uint64_t, std::set<ConnId>> proposal_receivers;
    std::map<std::uint64_t, std::set<ConnId>> commit_receivers;
    for (const Output& o : out) {
      auto cit = coord_conns_.find(o.conn);
      if (cit == coord_conns_.end()) return Fail("output for an unknown connection");
      CoordConn& cc = cit->second;
      if (!cc.open) return Fail("output on a connection after its close");
      if (o.kind == Output::Kind::kClose) {
        cc.open = false;
        continue;
      }
      const Message& m = o.message;
      if (const auto* w = std::get_if<net::Welcome>(&m)) {
        if (cc.welcomed) return Fail("second Welcome");
        cc.welcomed = true;
        if (w->peer_id != peers_[cc.peer].id) return Fail("Welcome with the wrong id");
        by_id_[w->peer_id] = cc.peer;
        continue;
      }
      if (const auto* p = std::get_if<net::EpochPropose>(&m)) {
        if (!cc.welcomed) return Fail("proposal to a connection not welcomed");
        if (p->epoch > last_proposal_) {
          CheckNewProposal(before, trigger_is_update, first_proposal, prev, *p);
          if (!failure_.empty()) return;
          first_proposal = false;
          prev = epochs_.at(p->epoch).members;
          last_proposal_ = p->epoch;
        } else if (p->epoch != last_proposal_ || first_proposal) {
          return Fail("proposal reuses epoch number " + std::to_string(p->epoch));
        }
        proposal_receivers[p->epoch].insert(o.conn);
        cc.proposed = p->epoch;
        cc.committed = 0;
        continue;
      }
      if (const auto* c = std::get_if<net::EpochCommit>(&m)) {
        if (cc.proposed != c->epoch || cc.committed != 0) {
          return Fail("EpochCommit " + std::to_string(c->epoch) + " to p" +
                      std::to_string(cc.peer) + " which was proposed " +
                      std::to_string(cc.proposed) + " and committed " +
                      std::to_string(cc.committed));
        }
        cc.committed = c->epoch;
        commit_receivers[c->epoch].insert(o.conn);
        continue;
      }
      if (std::holds_alternative<net::Removed>(m)) {
        if (cc.proposed == 0) return Fail("Removed to a peer that was not proposed or a member");
        cc.proposed = 0;
        cc.committed = 0;
        continue;
      }
      if (const auto* c = std::get_if<net::OpCommit>(&m)) {
        if (cc.committed != c->epoch) return Fail("OpCommit outside the peer's committed epoch");
        const SimEpoch& se = epochs_.at(c->epoch);
        auto rit = se.results_delivered.find(OpKey{c->tag, c->seq});
        for (int member : se.members) {
          if (rit == se.results_delivered.end() || rit->second.count(member) == 0) {
            return Fail("OpCommit{" + std::to_string(c->epoch) + ", " + std::to_string(c->tag) +
                        "/" + std::to_string(c->seq) + "} but p" + std::to_string(member) +
                        " never reported");
          }
        }
        continue;
      }
      if (const auto* a = std::get_if<net::EpochAbort>(&m)) {
        if (cc.committed != a->epoch) return Fail("EpochAbort outside the peer's committed epoch");
        if (!cc.aborted.insert(a->epoch).second) return Fail("second EpochAbort for one epoch");
        continue;
      }
      if (const auto* u = std::get_if<net::TopologyUnchanged>(&m)) {
        if (cc.committed != u->epoch) return Fail("TopologyUnchanged outside the committed epoch");
        continue;
      }
    }
    for (const auto& [e, receivers] : proposal_receivers) {
      std::set<ConnId> want;
      for (int member : epochs_.at(e).members) want.insert(peers_[member].conn);
      if (receivers != want) return Fail("proposal not sent to exactly its members");
    }
    for (const auto& [e, receivers] : commit_receivers) {
      SimEpoch& se = epochs_.at(e);
      std::set<ConnId> want;
      for (int member : se.members) want.insert(peers_[member].conn);
      if (receivers != want) return Fail("commit not sent to exactly the proposal's members");
      se.committed = true;
      ++stats_.epochs_committed;
    }
  }

  // Pending peers become members only at a barrier or in an empty group; the ring order of those
  // who stay is kept; numbers only grow. `prev` is the list before this proposal (sim peers: an id
  // may come back on a new connection, which is another peer).
  void CheckNewProposal(const View& before, bool trigger_is_update, bool first,
                        const std::vector<int>& prev, const net::EpochPropose& p) {
    if (p.members.empty()) return Fail("empty proposal");
    if (p.members.size() > config_.max_members) return Fail("proposal above max_members");
    std::vector<int> list;
    for (const net::Member& m : p.members) {
      auto it = by_id_.find(m.peer_id);
      if (it == by_id_.end()) return Fail("proposal names an unknown peer");
      list.push_back(it->second);
    }
    auto is_pending = [&](int peer) {
      const CoordConn& cc = coord_conns_.at(peers_[peer].conn);
      return cc.open && cc.welcomed && cc.proposed == 0;
    };
    auto name = [](int peer) { return "p" + std::to_string(peer); };
    // Is anyone of the previous list still a live member (at this point of the outputs)?
    bool group_empty = true;
    for (int peer : prev) {
      const CoordConn& cc = coord_conns_.at(peers_[peer].conn);
      if (cc.open && cc.proposed != 0) group_empty = false;
    }
    if (group_empty) {  // an empty group proposes pending peers only
      for (int peer : list) {
        if (!is_pending(peer)) return Fail("empty-group proposal names " + name(peer));
      }
    } else {
      std::vector<int> kept;
      std::vector<int> added;
      for (int peer : list) {
        (std::find(prev.begin(), prev.end(), peer) != prev.end() ? kept : added).push_back(peer);
      }
      // Those who stay come first, in their old relative order.
      for (std::size_t i = 0; i < kept.size(); ++i) {
        if (list[i] != kept[i]) return Fail("proposal puts a new peer before an old member");
      }
      std::vector<int> prev_kept;
      for (int peer : prev) {
        if (std::find(kept.begin(), kept.end(), peer) != kept.end()) prev_kept.push_back(peer);
      }
      if (prev_kept != kept) return Fail("proposal changes the ring order of the members");
      for (int peer : kept) {
        if (is_pending(peer)) return Fail("proposal re-admits demoted " + name(peer) + " at once");
      }
      bool at_barrier = first && before.committed && (trigger_is_update || !before.barrier.empty());
      if (!added.empty() && !at_barrier) {
        return Fail("pending peers proposed outside a barrier completion or an empty group");
      }
      for (int peer : added) {
        if (!is_pending(peer)) return Fail("proposal adds " + name(peer) + ", not a pending peer");
      }
    }
    SimEpoch se;
    se.members = list;
    epochs_[p.epoch] = std::move(se);
  }

  // Carries out the coordinator's outputs on the simulated network.
  void Route(const std::vector<Output>& out) {
    for (const Output& o : out) {
      Wire& w = wires_[o.conn];
      int peer = coord_conns_.at(o.conn).peer;
      w.to_peer_ms = std::max(now_ms_ + Delay(), w.to_peer_ms);
      Event ev;
      ev.at_ms = w.to_peer_ms;
      ev.peer = peer;
      ev.conn = o.conn;
      if (o.kind == Output::Kind::kClose) {
        Trace("coord -> p" + std::to_string(peer) + " Close");
        w.coord_closed = true;
        ev.kind = EventKind::kPeerClosed;
        Schedule(ev);
        // The shell also reports the close it made; the coordinator must ignore it.
        Schedule(
            Event{now_ms_ + Uniform(1, 20), 0, EventKind::kCoordDisconnect, o.conn, peer, {}, {}});
      } else {
        if (!std::holds_alternative<net::Heartbeat>(o.message)) {
          Trace("coord -> p" + std::to_string(peer) + " " + Describe(o.message));
        }
        Count(o.message);
        ev.kind = EventKind::kPeerRecv;
        ev.message = o.message;
        Schedule(ev);
      }
    }
  }

  void Count(const Message& m) {
    if (std::holds_alternative<net::TopologyUnchanged>(m)) ++stats_.unchanged;
    if (const auto* r = std::get_if<net::Removed>(&m)) {
      ++stats_.removed;
      if (r->code == SHOAL_ERR_TIMEOUT) ++stats_.removed_timeout;
    }
    if (const auto* e = std::get_if<net::Error>(&m)) {
      if (e->code == SHOAL_ERR_EPOCH_CHANGED) ++stats_.stale_errors;
    }
    if (const auto* a = std::get_if<net::EpochAbort>(&m)) ++stats_.aborts_by_code[a->code];
  }

  // ---- Peer side ----

  bool Alive(int i) const { return peers_[i].life == Life::kAlive; }
  bool Chaotic() const { return now_ms_ < kChaosMs; }  // injected faults stop in the calm phase

  void PeerSend(int i, Message m) {
    SimPeer& p = peers_[i];
    if (p.life != Life::kAlive) return;
    Wire& w = wires_[p.conn];
    w.to_coord_ms = std::max(now_ms_ + Delay(), w.to_coord_ms);
    p.last_sent_ms = now_ms_;
    Event ev;
    ev.at_ms = w.to_coord_ms;
    ev.kind = EventKind::kCoordRecv;
    ev.conn = p.conn;
    ev.peer = i;
    ev.message = std::move(m);
    Schedule(std::move(ev));
  }

  void Join(PeerId id, bool reject_ok) {
    int i = static_cast<int>(peers_.size());
    SimPeer p;
    p.index = i;
    p.id = id;
    p.conn = ++next_conn_;
    p.reject_ok = reject_ok;
    p.last_recv_ms = now_ms_;
    p.last_sent_ms = now_ms_;
    peers_.push_back(p);
    conn_peer_[p.conn] = i;
    coord_conns_[p.conn].peer = i;
    ++stats_.joins;
    Trace("p" + std::to_string(i) + " connects (conn " + std::to_string(p.conn) + ")" +
          (reject_ok ? " with an id that may be in use" : ""));
    coord_.OnConnect(p.conn, now_ms_);
    PeerSend(i, net::Hello{id, "10.0.0." + std::to_string(i), static_cast<std::uint16_t>(i + 1)});
    ScheduleTimer(i, now_ms_ + kTickMs, Timer{TimerKind::kHeartbeat, 0, {}});
  }

  // The peer stops taking part in the data plane of its epochs.
  void Depart(int i) {
    SimPeer& p = peers_[i];
    std::vector<std::uint64_t> es;
    if (p.phase == Phase::kMember || p.phase == Phase::kBarrier) es.push_back(p.epoch);
    if (p.phase == Phase::kSetup) es.push_back(p.setup_epoch);
    for (std::uint64_t e : es) {
      SimEpoch& se = epochs_.at(e);
      if (!se.departed.insert(i).second) continue;
      if (p.life == Life::kHung) se.hung.insert(i);
      for (int x : se.members) {
        if (x == i || !Alive(x)) continue;
        SimPeer& q = peers_[x];
        if ((q.phase != Phase::kMember && q.phase != Phase::kBarrier) || q.epoch != e) continue;
        for (const auto& [key, op] : q.ops) {
          if (op.running) ScheduleFailure(x, key);
        }
      }
    }
  }

  // An op of peer x that cannot complete: who it blames and when it notices.
  void ScheduleFailure(int x, OpKey key) {
    SimPeer& q = peers_[x];
    const SimEpoch& se = epochs_.at(q.epoch);
    std::size_t n = se.members.size();
    std::size_t r = std::find(se.members.begin(), se.members.end(), x) - se.members.begin();
    int prev = se.members[(r + n - 1) % n];
    int next = se.members[(r + 1) % n];
    Timer t{TimerKind::kFailDetect, q.epoch, key};
    TimeMs delay = 0;
    if (se.departed.count(next) || se.departed.count(prev)) {
      int who = se.departed.count(next) ? next : prev;
      t.suspect = peers_[who].id;
      t.code = se.hung.count(who) ? SHOAL_ERR_TIMEOUT : SHOAL_ERR_PEER_LOST;
      delay = Uniform(10, 100);
    } else {
      t.suspect = peers_[prev].id;
      t.code = SHOAL_ERR_TIMEOUT;
      delay = Uniform(200, 800);
    }
    ScheduleTimer(x, now_ms_ + delay, t);
  }

  void Resolve(int i, OpKey key, std::optional<Outcome> outcome) {
    SimPeer& p = peers_[i];
    if (outcome) {
      auto k = std::make_tuple(p.epoch, key.tag, key.seq);
      auto [it, fresh] = outcomes_.emplace(k, *outcome);
      if (outcome->kind == Outcome::Kind::kNotMember) {
        Fail("p" + std::to_string(i) + " was removed with op {" + std::to_string(p.epoch) + ", " +
             std::to_string(key.tag) + "/" + std::to_string(key.seq) + "} unresolved");
      }
      if (fresh && outcome->kind == Outcome::Kind::kCommit) ++stats_.op_commits;
      if (!fresh && !(it->second == *outcome)) {
        Fail("op {" + std::to_string(p.epoch) + ", " + std::to_string(key.tag) + "/" +
             std::to_string(key.seq) + "}: p" + std::to_string(i) + " learnt " +
             OutcomeText(*outcome) + " but another member learnt " + OutcomeText(it->second));
      }
      if (outcome->kind == Outcome::Kind::kCommit && now_ms_ >= kChaosMs) ++stats_.calm_commits;
    }
    p.ops.erase(key);
  }

  std::uint64_t ScriptLength(std::uint64_t e, std::uint64_t round) const {
    return 1 + Mix(seed_ ^ Mix(e * 1000003 + round)) % 4;
  }
  std::uint64_t ScriptTag(std::uint64_t e, std::uint64_t round, int pos) const {
    return Mix(seed_ + Mix(e * 7919 + round * 131 + static_cast<std::uint64_t>(pos))) % 3;
  }

  void StartOps(int i) {
    SimPeer& p = peers_[i];
    if (p.life != Life::kAlive || p.phase != Phase::kMember) return;
    if (!p.broken) {
      while (static_cast<int>(p.ops.size()) < kOpWindow &&
             static_cast<std::uint64_t>(p.script_pos) < ScriptLength(p.epoch, p.round)) {
        StartOp(i);
        if (p.phase != Phase::kMember || p.broken) return;
      }
    }
    bool round_done = static_cast<std::uint64_t>(p.script_pos) >= ScriptLength(p.epoch, p.round);
    if (p.ops.empty() && (round_done || p.broken) && !p.barrier_scheduled) {
      p.barrier_scheduled = true;
      TimeMs think = Uniform(0, 40);
      if (p.slow_next_barrier && Chaotic()) {
        p.slow_next_barrier = false;
        think = Uniform(config_.barrier_timeout_ms + 100, config_.barrier_timeout_ms + 900);
      }
      ScheduleTimer(i, now_ms_ + think,
                    Timer{TimerKind::kBarrier, p.epoch, {}, 0, SHOAL_OK, p.round});
    }
  }

  void StartOp(int i) {
    SimPeer& p = peers_[i];
    std::uint64_t tag = ScriptTag(p.epoch, p.round, p.script_pos);
    ++p.script_pos;
    OpKey key{tag, p.next_seq[tag]++};
    LocalOp& op = p.ops[key];
    op.deadline_ms = now_ms_ + kOpDeadlineMs;
    ScheduleTimer(i, op.deadline_ms, Timer{TimerKind::kDeadline, p.epoch, key});
    SimEpoch& se = epochs_.at(p.epoch);
    se.started[key].insert(i);
    if (p.fault_next_op && Chaotic()) {  // injected: a mismatch, a broken link, a timeout...
      p.fault_next_op = false;
      PeerId suspect = 0;
      switch (Uniform(0, 3)) {
        case 0:
          suspect = peers_[se.members[Uniform(0, se.members.size() - 1)]].id;
          break;
        case 1:
          suspect = 0;
          break;
        case 2:
          suspect = 0x5eed0000 + static_cast<PeerId>(Uniform(0, 9));
          break;  // no member
        default:
          suspect = p.id;
          break;
      }
      const shoal_status codes[] = {SHOAL_ERR_PEER_LOST, SHOAL_ERR_TIMEOUT, SHOAL_ERR_MISMATCH,
                                    SHOAL_ERR_PROTOCOL};
      SendFault(i, key, suspect, codes[Uniform(0, 3)]);
      return;
    }
    if (!se.departed.empty()) return ScheduleFailure(i, key);
    if (se.started[key].size() == se.members.size()) {
      for (int x : se.members) {
        ScheduleTimer(x, now_ms_ + Uniform(5, 60), Timer{TimerKind::kOpDone, p.epoch, key});
      }
    }
  }

  void SendFault(int i, OpKey key, PeerId suspect, shoal_status code) {
    SimPeer& p = peers_[i];
    LocalOp& op = p.ops.at(key);
    op.faulted = true;
    op.running = false;
    ++stats_.faults;
    PeerSend(i, net::EpochFault{p.epoch, suspect, code, key.tag, key.seq, "sim"});
    ScheduleTimer(i, std::max(now_ms_, op.deadline_ms) + kVerdictGraceMs,
                  Timer{TimerKind::kGrace, p.epoch, key});
  }

  // The op is still unresolved at peer i in epoch e.
  LocalOp* FindOp(int i, std::uint64_t e, OpKey key) {
    SimPeer& p = peers_[i];
    if (p.life != Life::kAlive) return nullptr;
    if (p.phase != Phase::kMember && p.phase != Phase::kBarrier) return nullptr;
    if (p.epoch != e) return nullptr;
    auto it = p.ops.find(key);
    return it == p.ops.end() ? nullptr : &it->second;
  }

  void OnTimer(int i, const Timer& t) {
    SimPeer& p = peers_[i];
    if (p.life != Life::kAlive) return;
    switch (t.kind) {
      case TimerKind::kHeartbeat:
        ScheduleTimer(i, now_ms_ + kTickMs, Timer{TimerKind::kHeartbeat, 0, {}});
        if (p.phase != Phase::kConnecting &&
            now_ms_ - p.last_recv_ms >= config_.heartbeat_timeout_ms) {
          return Fail("p" + std::to_string(i) + " heard nothing from the coordinator for " +
                      std::to_string(now_ms_ - p.last_recv_ms) + " ms");
        }
        if (now_ms_ - p.last_sent_ms >= config_.heartbeat_interval_ms) {
          PeerSend(i, net::Heartbeat{});
        }
        return;
      case TimerKind::kSetupDone:
        SetupDone(i, t.epoch);
        return;
      case TimerKind::kOpDone: {
        LocalOp* op = FindOp(i, t.epoch, t.op);
        if (op == nullptr || !op->running || !epochs_.at(t.epoch).departed.empty()) return;
        op->running = false;
        if (epochs_.at(t.epoch).members.size() == 1) {  // a group of one needs no verdict
          ++stats_.local_commits;
          Resolve(i, t.op, std::nullopt);
          if (now_ms_ >= kChaosMs) ++stats_.calm_commits;
          StartOps(i);
          return;
        }
        op->reported = true;
        PeerSend(i, net::OpResult{t.epoch, t.op.tag, t.op.seq});
        return;
      }
      case TimerKind::kFailDetect: {
        LocalOp* op = FindOp(i, t.epoch, t.op);
        if (op == nullptr || !op->running || op->faulted) return;
        SendFault(i, t.op, t.suspect, t.code);
        return;
      }
      case TimerKind::kDeadline: {
        LocalOp* op = FindOp(i, t.epoch, t.op);
        if (op == nullptr || op->faulted) return;
        const SimEpoch& se = epochs_.at(t.epoch);
        std::size_t n = se.members.size();
        std::size_t r = std::find(se.members.begin(), se.members.end(), i) - se.members.begin();
        SendFault(i, t.op, peers_[se.members[(r + n - 1) % n]].id, SHOAL_ERR_TIMEOUT);
        return;
      }
      case TimerKind::kGrace: {
        if (FindOp(i, t.epoch, t.op) != nullptr) {
          Fail("p" + std::to_string(i) + " got no verdict for op {" + std::to_string(t.epoch) +
               ", " + std::to_string(t.op.tag) + "/" + std::to_string(t.op.seq) +
               "} within its deadline plus the grace");
        }
        return;
      }
      case TimerKind::kBarrier:
        if (p.phase != Phase::kMember || p.epoch != t.epoch || p.round != t.round) return;
        p.barrier_scheduled = false;
        p.phase = Phase::kBarrier;
        PeerSend(i, net::UpdateTopology{p.epoch});
        return;
    }
  }

  void SetupDone(int i, std::uint64_t e) {
    SimPeer& p = peers_[i];
    if (p.phase != Phase::kSetup || p.setup_epoch != e || p.ready_sent) return;
    const SimEpoch& se = epochs_.at(e);
    std::size_t n = se.members.size();
    net::EpochReady ready{e, true, 0, SHOAL_OK};
    if (n > 1) {
      std::size_t r = std::find(se.members.begin(), se.members.end(), i) - se.members.begin();
      int prev = se.members[(r + n - 1) % n];
      int next = se.members[(r + 1) % n];
      if (!Alive(next)) {
        ready = {e, false, peers_[next].id, SHOAL_ERR_PEER_LOST};  // cannot connect
      } else if (!Alive(prev)) {
        ready = {e, false, peers_[prev].id, SHOAL_ERR_TIMEOUT};  // its streams never came
      } else if (Chaotic() && Chance(p_setup_fail_)) {
        ready = {e, false, peers_[Chance(0.5) ? next : prev].id, SHOAL_ERR_PEER_LOST};
      }
    }
    p.ready_sent = true;
    p.ready_ok = ready.ok;
    if (!ready.ok) ++stats_.failed_readies;
    PeerSend(i, ready);
  }

  void PeerRecv(int i, const Message& m) {
    SimPeer& p = peers_[i];
    if (p.life != Life::kAlive) return;
    p.last_recv_ms = now_ms_;
    std::optional<std::uint64_t> e = std::visit(
        [](const auto& x) -> std::optional<std::uint64_t> {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, net::TopologyUnchanged> ||
                        std::is_same_v<T, net::EpochPropose> ||
                        std::is_same_v<T, net::EpochCommit> || std::is_same_v<T, net::OpCommit> ||
                        std::is_same_v<T, net::EpochAbort>) {
            return x.epoch;
          } else {
            return std::nullopt;
          }
        },
        m);
    if (e) {
      if (*e < p.max_epoch_seen) {
        return Fail("p" + std::to_string(i) + " saw epoch " + std::to_string(*e) + " after " +
                    std::to_string(p.max_epoch_seen));
      }
      p.max_epoch_seen = *e;
    }
    std::string who = "p" + std::to_string(i) + " ";
    std::visit(
        [&](const auto& x) {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, net::Welcome>) {
            if (p.phase != Phase::kConnecting) return Fail(who + "welcomed twice");
            p.phase = Phase::kPending;
            p.pending_since_ms = now_ms_;
          } else if constexpr (std::is_same_v<T, net::Reject>) {
            if (!p.reject_ok) return Fail(who + "rejected: " + x.reason);
            ++stats_.rejects;
            p.life = Life::kGone;
          } else if constexpr (std::is_same_v<T, net::Heartbeat>) {
          } else if constexpr (std::is_same_v<T, net::Error>) {
            if (x.code == SHOAL_ERR_EPOCH_CHANGED) return;  // a stale UpdateTopology
            if (!p.rogue_acted) return Fail(who + "refused: " + x.reason);
          } else if constexpr (std::is_same_v<T, net::EpochPropose>) {
            OnPropose(i, x);
          } else if constexpr (std::is_same_v<T, net::EpochCommit>) {
            if (p.phase != Phase::kSetup || p.setup_epoch != x.epoch || !p.ready_ok) {
              return Fail(who + "got EpochCommit " + std::to_string(x.epoch) +
                          " without being ready for it");
            }
            p.phase = Phase::kMember;
            p.epoch = x.epoch;
            p.broken = false;
            p.round = 0;
            p.script_pos = 0;
            p.barrier_scheduled = false;
            p.ops.clear();
            p.next_seq.clear();
            StartOps(i);
          } else if constexpr (std::is_same_v<T, net::TopologyUnchanged>) {
            if (p.phase != Phase::kBarrier || p.epoch != x.epoch) {
              return Fail(who + "got TopologyUnchanged outside its barrier");
            }
            p.phase = Phase::kMember;
            ++p.round;
            p.script_pos = 0;
            StartOps(i);
          } else if constexpr (std::is_same_v<T, net::OpCommit>) {
            LocalOp* op = FindOp(i, x.epoch, OpKey{x.tag, x.seq});
            if (op == nullptr || !op->reported) {
              return Fail(who + "got OpCommit for an op it did not report");
            }
            Resolve(i, OpKey{x.tag, x.seq}, Outcome{Outcome::Kind::kCommit});
            StartOps(i);
          } else if constexpr (std::is_same_v<T, net::EpochAbort>) {
            if ((p.phase != Phase::kMember && p.phase != Phase::kBarrier) || p.epoch != x.epoch ||
                p.broken) {
              return Fail(who + "got an EpochAbort it cannot be meant for");
            }
            p.broken = true;
            std::vector<OpKey> keys;
            for (const auto& [key, op] : p.ops) keys.push_back(key);
            for (OpKey key : keys) {
              Resolve(i, key, Outcome{Outcome::Kind::kAbort, x.code, x.lost_peer});
            }
            StartOps(i);
          } else if constexpr (std::is_same_v<T, net::Removed>) {
            if (p.phase != Phase::kSetup && p.phase != Phase::kMember &&
                p.phase != Phase::kBarrier) {
              return Fail(who + "removed while not a member");
            }
            Depart(i);
            std::vector<OpKey> keys;
            for (const auto& [key, op] : p.ops) keys.push_back(key);
            for (OpKey key : keys) Resolve(i, key, Outcome{Outcome::Kind::kNotMember});
            p.phase = Phase::kPending;
            p.pending_since_ms = now_ms_;
            p.barrier_scheduled = false;
          } else {
            Fail(who + "got " + Describe(m) + ", a message only peers send");
          }
        },
        m);
  }

  void OnPropose(int i, const net::EpochPropose& x) {
    SimPeer& p = peers_[i];
    std::string who = "p" + std::to_string(i) + " ";
    if (p.phase != Phase::kPending && p.phase != Phase::kSetup && p.phase != Phase::kBarrier) {
      return Fail(who + "got a proposal outside the barrier (phase " +
                  std::to_string(static_cast<int>(p.phase)) + ")");
    }
    const SimEpoch& se = epochs_.at(x.epoch);
    if (std::find(se.members.begin(), se.members.end(), i) == se.members.end()) {
      return Fail(who + "got a proposal it is not in");
    }
    Depart(i);  // the data connections of older epochs go
    std::vector<OpKey> keys;
    for (const auto& [key, op] : p.ops) keys.push_back(key);
    for (OpKey key : keys) Resolve(i, key, Outcome{Outcome::Kind::kEpochChanged});
    p.phase = Phase::kSetup;
    p.setup_epoch = x.epoch;
    p.ready_sent = false;
    p.ready_ok = false;
    p.barrier_scheduled = false;
    TimeMs delay = Uniform(5, 80);
    if (Chaotic() && Chance(p_slow_setup_)) delay = Uniform(config_.setup_timeout_ms + 50, 1600);
    ScheduleTimer(i, now_ms_ + delay, Timer{TimerKind::kSetupDone, x.epoch, {}});
  }

  void PeerClosed(int i) {
    SimPeer& p = peers_[i];
    if (p.life != Life::kAlive) return;  // it was gone already, or left
    if (!p.rogue_acted) return Fail("p" + std::to_string(i) + " was cut off by the coordinator");
    Trace("p" + std::to_string(i) + " cut off, as it deserved");
    Depart(i);
    p.life = Life::kGone;
  }

  // ---- Chaos ----

  std::vector<int> LivePeers(bool welcomed_only) const {
    std::vector<int> r;
    for (const SimPeer& p : peers_) {
      if (p.life != Life::kAlive || p.rogue_acted) continue;
      if (welcomed_only && p.phase == Phase::kConnecting) continue;
      r.push_back(p.index);
    }
    return r;
  }

  PeerId FreshId() {
    PeerId id = 0;
    while (id == 0) id = rng_();
    return id;
  }

  void Chaos() {
    if (initial_joins_ > 0) {  // the first peers of the run
      --initial_joins_;
      Join(FreshId(), false);
      return;
    }
    if (now_ms_ >= kChaosMs) {  // calm from here on; make sure there is a group to make progress
      if (static_cast<int>(LivePeers(false).size()) < calm_group_min_) {
        Join(FreshId(), false);
        Schedule(Event{now_ms_ + 1, 0, EventKind::kChaos, 0, -1, {}, {}});
      }
      return;
    }
    Schedule(Event{now_ms_ + Uniform(1, 2 * chaos_mean_ms_), 0, EventKind::kChaos, 0, -1, {}, {}});
    std::vector<int> live = LivePeers(false);
    std::vector<int> welcomed = LivePeers(true);
    TimeMs pick = Uniform(0, 99);
    auto any = [&](const std::vector<int>& v) { return v[Uniform(0, v.size() - 1)]; };
    if (pick < 30) {  // join
      if (static_cast<int>(live.size()) >= kMaxAlive) return;
      TimeMs how = Uniform(0, 19);
      if (how == 0 && !welcomed.empty()) return Join(peers_[any(welcomed)].id, true);
      if (how == 1 && !peers_.empty()) {  // a restarted peer that kept its id
        const SimPeer& old = peers_[Uniform(0, peers_.size() - 1)];
        if (old.life != Life::kAlive) return Join(old.id, true);
      }
      return Join(FreshId(), false);
    }
    if (live.empty()) return;
    int victim = any(live);
    SimPeer& v = peers_[victim];
    std::string who = "p" + std::to_string(victim);
    if (pick < 42) {
      Trace("CHAOS " + who + " crashes");
      ++stats_.crashes;
      v.life = Life::kCrashed;
      Depart(victim);
      Wire& w = wires_[v.conn];
      w.to_coord_ms = std::max(now_ms_ + Delay(), w.to_coord_ms);
      Schedule(Event{w.to_coord_ms, 0, EventKind::kCoordDisconnect, v.conn, victim, {}, {}});
    } else if (pick < 47) {
      Trace("CHAOS " + who + " hangs");
      ++stats_.hangs;
      v.life = Life::kHung;
      Depart(victim);
    } else if (pick < 54) {
      if (v.phase == Phase::kConnecting) return;
      Trace("CHAOS " + who + " leaves");
      ++stats_.leaves;
      PeerSend(victim, net::Leave{});
      v.life = Life::kLeft;
      Depart(victim);
    } else if (pick < 70) {
      if (v.phase != Phase::kMember) return;
      Trace("CHAOS " + who + " will fault its next op");
      v.fault_next_op = true;
    } else if (pick < 82) {
      if (v.phase != Phase::kMember) return;
      Trace("CHAOS " + who + " will be late to update_topology");
      v.slow_next_barrier = true;
    } else if (pick < 86) {
      if (v.phase == Phase::kConnecting) return;
      std::uint64_t e = std::max<std::uint64_t>(v.epoch, 1);
      const Message bad[] = {net::Welcome{v.id, 1, 2},     net::EpochCommit{e},
                             net::OpCommit{e, 0, 0},       net::DataHello{e, v.id, v.id, 0, 1},
                             net::Hello{v.id, "again", 1}, net::UpdateTopology{e + 1000}};
      const Message& m = bad[Uniform(0, 5)];
      Trace("CHAOS " + who + " goes rogue: " + Describe(m));
      ++stats_.rogues;
      v.rogue_acted = true;
      PeerSend(victim, m);
    }
  }

  void CheckEnd() {
    bool any_faithful = false;
    for (const SimPeer& p : peers_) {
      if (p.rogue_acted && p.life == Life::kAlive) {
        return Fail("rogue p" + std::to_string(p.index) + " was never cut off");
      }
      if (p.life == Life::kAlive && !p.rogue_acted) any_faithful = true;
    }
    if (any_faithful && stats_.calm_commits == 0) {
      return Fail("no op committed in the calm phase although peers are alive");
    }
    // Pending peers are admitted at the next barrier while there is room.
    View v = coord_.view();
    for (const SimPeer& p : peers_) {
      if (p.life != Life::kAlive || p.rogue_acted || p.phase != Phase::kPending) continue;
      if (now_ms_ - p.pending_since_ms > kAdmitWithinMs && v.members.size() < config_.max_members) {
        return Fail("p" + std::to_string(p.index) + " pending for " +
                    std::to_string(now_ms_ - p.pending_since_ms) + " ms with room in the group");
      }
    }
  }

  std::uint64_t seed_;
  bool verbose_;
  std::mt19937_64 rng_;
  Coordinator coord_;
  Config config_;
  TimeMs delay_max_ms_ = 0;
  double p_setup_fail_ = 0;
  double p_slow_setup_ = 0;
  TimeMs chaos_mean_ms_ = 0;
  int calm_group_min_ = 1;  // the calm phase starts with at least this many live peers
  int initial_joins_ = 0;

  TimeMs now_ms_ = 0;
  std::uint64_t order_ = 0;
  std::priority_queue<Event, std::vector<Event>, Later> queue_;
  std::vector<SimPeer> peers_;
  ConnId next_conn_ = 0;
  std::map<ConnId, Wire> wires_;
  std::map<ConnId, int> conn_peer_;
  std::map<ConnId, CoordConn> coord_conns_;
  std::map<PeerId, int> by_id_;  // the peer last welcomed with that id
  std::map<std::uint64_t, SimEpoch> epochs_;
  std::uint64_t last_proposal_ = 0;
  std::map<std::tuple<std::uint64_t, std::uint64_t, std::uint64_t>, Outcome> outcomes_;
  std::string failure_;
  Stats stats_;
};

long EnvLong(const char* name, long fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtol(v, nullptr, 10);
}

TEST(CoordinatorSim, SeededSchedules) {
  std::signal(SIGABRT, OnAbort);
  const char* one = std::getenv("SHOAL_SIM_SEED");
  if (one != nullptr && *one != '\0') {
    long seed = std::strtol(one, nullptr, 10);
    g_running_seed = seed;
    World world(static_cast<std::uint64_t>(seed), /*verbose=*/true);
    bool ok = world.Run();
    std::printf("seed %ld: %s\n%s\n", seed, ok ? "ok" : world.failure().c_str(),
                world.stats().Text().c_str());
    EXPECT_TRUE(ok) << world.failure();
    return;
  }
  long seeds = EnvLong("SHOAL_SIM_SEEDS", 2000);
  auto start = std::chrono::steady_clock::now();
  long progressed = 0;
  Stats total;
  for (long seed = 1; seed <= seeds; ++seed) {
    g_running_seed = seed;
    World world(static_cast<std::uint64_t>(seed), /*verbose=*/false);
    bool ok = world.Run();
    if (world.stats().calm_commits > 0) ++progressed;
    total.Add(world.stats());
    if (!ok) {
      ADD_FAILURE() << "seed " << seed << ": " << world.failure()
                    << "\n  replay with SHOAL_SIM_SEED=" << seed;
      break;
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%ld seeds in %.1f s, %ld made progress in the calm phase\n%s\n", seeds, secs,
              progressed, total.Text().c_str());
  // Liveness: nearly every seed ends with a working group (a seed where every peer died has
  // nothing to make progress with).
  EXPECT_GE(progressed * 100, seeds * 90) << "too few seeds made progress";
}

}  // namespace
}  // namespace shoal::coord
