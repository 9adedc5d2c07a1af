// Deterministic simulation of a primary/standby coordinator set (docs/protocol.md, "Standby
// coordinators"; choice 16 of coord/coordinator.cc): two real Coordinators at two addresses, both
// with Config::quorum, the second also with Config::standby; simulated peers that rotate through
// the address list exactly as PeerRuntime does; a simulated network with partitions between
// single peers and single coordinators; coordinator crashes and restarts at either address.
// coordinator_sim_test.cc covers one coordinator in depth (ops, syncs, rebuild verdicts); this
// simulator covers what only a set of coordinators can get wrong: who runs the group.
//
// The property (checked after every event of either coordinator):
// - commit: a coordinator's View turning committed, or committed with another epoch: by a
//   proposal that all its members made ready (it sends EpochCommit), or by the end of a rebuild.
//   The simulator keeps them all, in order.
// - coordinator view: a connection is a *live committed member* at coordinator X when X still
//   holds it (it neither closed it nor was told it closed), X's View is committed (active or
//   broken) with epoch E, the peer's id is in View.members, and the connection is in E: X sent it
//   EpochCommit{E}, or the Hello X read on it was a rejoin report of E committed (a rebuilt
//   member; every other report of a committed epoch is answered with Removed), and X sent it no
//   Removed or EpochPropose since. live(X) is the set of peers (processes) with such a
//   connection.
// - last(p): the newest epoch peer p was a committed member of (Rejoin::last_epoch), by its own
//   state.
// - S1, one coordinator per peer: no peer is a live committed member at two coordinators at once.
// - S2, one running group per lineage: at no moment do two coordinators both have a committed,
//   unbroken epoch whose rings each hold a strict majority of the ring of one commit (the two
//   epochs themselves included). (A broken epoch runs no op; its members' next update_topology
//   moves it on, which S3 covers.)
// - S3, one chain: a commit by a proposal whose members include a peer that was ever a committed
//   member (not only newcomers) holds a strict majority of the ring of an earlier commit of an
//   epoch at or above max last(p) over its members: the group goes on from the newest epoch any
//   of its members was in (or a later one), with a majority of it. Two coordinators that both
//   moved on from one epoch would each need a majority of it.
// - S4, a lineage never goes back: when an epoch (E, R) is committed or rebuilt at X, then for
//   every earlier commit (E', R') of which live(X) holds a strict majority, E > E', or E == E' and
//   R == R' (the same epoch, rebuilt). (live(X), not R: a rebuilt ring still names members that
//   went on in another group meanwhile; they are not X's.)
// - S5, a peer is never proposed an epoch number at or below one it was given (PeerRuntime closes
//   with PROTOCOL on that), and a peer that follows the protocol never gets Error{PROTOCOL}.
// S1 rests on timing, not on majorities: a coordinator drops a peer silent for heartbeat_timeout,
// and the peer leaves it only after that much silence plus heartbeat_interval (its close, when the
// link works, arrives first anyway); so message delays stay below kDelayMaxMs, far below the
// slack. S2 to S4 rest on the majority rule.
// Liveness, in a calm phase after the chaos (no crash, no partition, no join; kCalmMs after the
// last heal or restart): a coordinator that has a group at the end committed ops in the second
// half of the calm phase (a run fails otherwise). Where the live peers end is counted
// (Stats::ends): one group with all of them; one group and stragglers pending elsewhere; two
// groups; no group although a majority of the last committed ring lives; no group because that
// majority is dead (the price of majorities). SHOAL_SIM_STRICT_LIVENESS=1 fails a run that does
// not end in one group (or with the majority dead). Today it does not hold in every seed:
// - stragglers and "no group": a coordinator without a majority gives its pending peers up
//   (Removed{COORDINATOR_LOST}, then the close); PeerRuntime then tries the next address first
//   (SHOAL_SIM_ROTATE_ON_GIVE_UP=0 models the runtime before that rule, which retried the same
//   address and came straight back: 62% of seeds ended in one group, against 93% with the rule).
//   What remains is mostly a split in exactly two halves that swap coordinators in lockstep (both
//   give up after rebuild_timeout_ms).
// - two groups: a primary restarted with no state forms a group of newcomers (Create connects
//   to the primary only) while the old group lives on at the standby; both are legitimate
//   lineages (the newcomers carry none), but nothing ever merges them.
//
// Model:
// - wire: one control connection (a peer, a coordinator incarnation, a ConnId). Each message
//   gets a delay of 1..kDelayMaxMs and never overtakes an earlier one in its direction; a close
//   travels behind the messages sent before it. While the link (peer, coordinator) is cut, a
//   wire's messages are held (TCP retransmits) and delivered after the heal if both ends still
//   hold the wire; a connect attempt over a cut link fails after kConnectTimeoutMs (PeerRuntime's
//   per-attempt cap).
// - coordinator crash: a process crash (the kernel closes its sockets: what was in flight to the
//   peers arrives, then the close; a connect is refused at once while it is down) or a host crash
//   (nothing more arrives; connects time out). What was in flight to it is lost. It restarts at
//   the same address after 0..kDowntimeMaxMs with no state (a new Coordinator). Either
//   coordinator crashes, primary or standby.
// - partition: a cut of one link (peer, coordinator), a coordinator cut from every peer, or a
//   split (some peers reach only the primary, the others only the standby); each heals after
//   200..kPartitionMaxMs.
// - sim peer: PeerRuntime's control side. Create connects to the primary only (a newcomer whose
//   primary is unreachable fails and is gone). Heartbeats every heartbeat_interval_ms, and the
//   loss of a coordinator silent for heartbeat_timeout_ms (HeartbeatTick), a close, or a Reject
//   while reconnecting starts or continues reconnecting (OnControlLost): backoff from 25 ms
//   doubling to reconnect_backoff_max_ms (500) with jitter (ScheduleReconnect); each attempt goes
//   to coordinator (lost_index + (now - lost) / (heartbeat_timeout + heartbeat_interval)) mod 2
//   (TryReconnect); a Welcome ends reconnecting; its Hello carries the rejoin report MakeRejoin
//   builds (epoch, committed, members, broken/abort, fault, in_barrier, next_seq, ops,
//   last_epoch/last_ring, seen_epoch). A Removed makes it pending (its epoch number stays seen).
//   Members run one op at a time (tag 1) and enter update_topology every kOpsPerRound ops and
//   after an abort; an op completes on the data plane when every member of the epoch's ring is
//   in it and started the op; when a member leaves the data plane (crash, Removed, a newer
//   proposal, an abort) the others' running ops fault naming it (OnEngineFault); at an op's
//   deadline (kOpDeadlineMs) its peer sends EpochFault{TIMEOUT} and stops its data plane
//   (OnOpDeadline), and kVerdictGraceMs later, still without a verdict, it fails locally. Data
//   planes need no coordinator: ops complete while it is away. Peers crash (their process: the
//   close is sent) and new peers with fresh ids join during the chaos. Peer ids are never reused: a
//   process that comes back with a member's id and no memory of the group (amnesia) would count
//   towards a majority it does not carry the lineage of, which no majority rule can guard against.
//
// Finding of this simulator in the coordinator, fixed (the run fails if it comes back):
// 1. Commit() set the lineage to the epoch it committed even when a report read during that
//    epoch's setup had named a newer one, so a group went on from its own older epoch without a
//    majority of the newer one (a fresh primary's group of one newcomer, joined by a member of
//    the real group, proposed the two: seeds 669, 1072, 1829 of 2000).
//    Fixed: the lineage only moves forward (choice 16 in coordinator.cc).
// A check that cannot fail is worthless. With HasQuorum always true, S3 fails in 131 of the first
// 200 seeds; with the Commit() fix undone, in seeds 669, 1072 and 1829 of 2000; with coordinators
// that drop a silent connection only after 6 s (peers still fail over after 1.1 s), S1 fails in
// 22 of 200.
//
// SHOAL_SIM_SEEDS=<n> runs seeds 1..n (default 500; SHOAL_SIM_FIRST_SEED moves the start,
// SHOAL_SIM_KEEP_GOING=1 runs on after a failing seed); SHOAL_SIM_SEED=<s> replays seed s with a
// trace of every event.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "shoal/common/check.h"
#include "shoal/coord/coordinator.h"

namespace shoal::coord {
namespace {

using net::Message;

// ---- Run shape -------------------------------------------------------------------------------

constexpr int kCoords = 2;                    // 0: the primary, 1: the standby
constexpr TimeMs kTickMs = 50;                // coordinator ticks
constexpr TimeMs kHeartbeatIntervalMs = 100;  // Config and the peers' heartbeat ticks
constexpr TimeMs kHeartbeatTimeoutMs = 1000;
// TryReconnect: a peer moves to the next address this long after it lost its coordinator.
constexpr TimeMs kFailoverMs = kHeartbeatTimeoutMs + kHeartbeatIntervalMs;
constexpr TimeMs kDelayMaxMs = 20;              // one way, per message
constexpr TimeMs kConnectTimeoutMs = 2000;      // TryReconnect: one attempt at most this long
constexpr TimeMs kReconnectFirstMs = 25;        // ScheduleReconnect
constexpr TimeMs kBackoffMaxMs = 500;           // Options::reconnect_backoff_max_ms default
constexpr TimeMs kReconnectWindowMs = 600'000;  // longer than a run: peers never give up
constexpr TimeMs kChaosMs = 30'000;
constexpr TimeMs kCalmMs = 15'000;  // after the chaos, the last heal and the last restart
constexpr TimeMs kDowntimeMaxMs = 6'000;
constexpr TimeMs kPartitionMaxMs = 6'000;
constexpr TimeMs kOpDeadlineMs = 3'000;
constexpr TimeMs kVerdictGraceMs = 1'000;
constexpr int kOpsPerRound = 3;
constexpr int kInitialPeers = 5;
constexpr int kMaxAlive = 7;
constexpr std::uint64_t kTag = 1;
static_assert(2 * kDelayMaxMs + kTickMs < kHeartbeatIntervalMs,
              "S1 rests on delays far below the failover slack of one heartbeat interval");

Config SimConfig(int coord, std::mt19937_64& rng) {
  Config c;
  c.heartbeat_interval_ms = kHeartbeatIntervalMs;
  c.heartbeat_timeout_ms = kHeartbeatTimeoutMs;
  c.hello_timeout_ms = 1000;
  c.barrier_timeout_ms = 1500;
  c.setup_timeout_ms = 1000;
  c.max_members = 8;
  c.max_pending = 16;
  c.rebuild_timeout_ms = 3000;
  const std::uint32_t holds[] = {0, 0, 500, 1000};
  c.startup_hold_ms = holds[rng() % 4];
  c.quorum = true;
  c.standby = coord != 0;
  return c;
}

long EnvLong(const char* name, long fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtol(v, nullptr, 10);
}

volatile std::sig_atomic_t g_running_seed = -1;
extern "C" void OnAbort(int) {
  char buf[160];
  int n = std::snprintf(
      buf, sizeof buf, "\nstandby simulation aborted in seed %ld; replay with SHOAL_SIM_SEED=%ld\n",
      static_cast<long>(g_running_seed), static_cast<long>(g_running_seed));
  if (n > 0) (void)!write(2, buf, static_cast<std::size_t>(n));
  std::signal(SIGABRT, SIG_DFL);
  std::abort();
}

bool StrictMajority(const std::set<PeerId>& have, const std::vector<PeerId>& ring) {
  std::size_t in = 0;
  for (PeerId id : ring) in += have.count(id);
  return !ring.empty() && 2 * in > ring.size();
}

template <typename C>
std::string Ids(const C& ids) {
  std::string s = "[";
  for (PeerId id : ids) s += (s.size() > 1 ? " " : "") + std::to_string(id);
  return s + "]";
}

enum class End { kOneGroup, kStragglers, kTwoGroups, kNoGroup, kMajorityLost, kCount };

struct Stats {
  long seeds = 0;
  long coord_crashes[kCoords] = {};
  long host_crashes = 0;
  long partitions = 0;
  long splits = 0;
  long failovers = 0;           // a peer welcomed by another coordinator than the one it lost
  long commits[kCoords] = {};   // epochs committed by a proposal
  long rebuilds[kCoords] = {};  // epochs made committed by a rebuild
  long give_ups[kCoords] = {};  // Removed "no majority"
  long ops_committed = 0;
  long peers_crashed = 0;
  long joins = 0;
  long violations = 0;
  long liveness_failures = 0;
  long ends[static_cast<int>(End::kCount)] = {};  // where the live peers are at the end
  long both_committed_ms = 0;  // simulated time both coordinators had a committed epoch
};

// ---- The world -------------------------------------------------------------------------------

struct Packet {
  TimeMs at = 0;
  bool close = false;
  Message msg;
};

// One control connection. Direction 0 is towards the coordinator, 1 towards the peer.
struct Wire {
  int peer = 0;
  int coord = 0;
  std::uint64_t life = 0;  // the coordinator incarnation it was accepted by
  ConnId conn = 0;
  std::deque<Packet> q[2];
  bool open[2] = {true, true};  // each end still holds it
  bool scheduled[2] = {false, false};
  std::uint64_t claim = 0;  // coordinator view: the epoch it is a committed member of (0: none)
};

// A data plane: the data connections of one proposal (coordinator, incarnation, epoch).
struct Plane {
  std::uint64_t e = 0;
  std::vector<int> ring;  // peer indices
  std::set<int> in;
  int leaver = -1;  // the first peer that left it: every running op then fails
};

enum class PPhase { kConnecting, kPending, kSetup, kMember, kClosed };

struct SimPeer {
  PeerId id = 0;
  bool alive = true;
  PPhase phase = PPhase::kConnecting;
  int wire = -1;
  bool awaiting_welcome = false;
  int welcomed_by = -1;  // the coordinator of its last Welcome
  int given_up_by = -1;  // the coordinator whose last message was Removed{COORDINATOR_LOST}
  // Reconnecting (PeerRuntime::OnControlLost / ScheduleReconnect / TryReconnect).
  bool reconnecting = false;
  TimeMs lost_ms = 0;
  int lost_index = 0;
  int coord_index = 0;
  TimeMs reconnect_deadline_ms = 0;
  unsigned attempts = 0;
  std::uint64_t gen = 0;  // invalidates scheduled reconnects and connects
  TimeMs last_received_ms = 0;
  // The epoch it is in (proposed or committed) and what MakeRejoin reports of it.
  std::uint64_t e = 0;
  std::vector<PeerId> ring;
  bool committed = false;
  bool broken = false;
  shoal_status abort_code = SHOAL_OK;
  PeerId abort_lost = 0;
  bool fault_sent = false;
  shoal_status fault_code = SHOAL_OK;
  PeerId fault_suspect = 0;
  bool in_barrier = false;
  std::uint64_t next_seq = 0;
  int plane = -1;
  struct Op {
    std::uint64_t seq = 0;
    bool done = false;
    TimeMs start_ms = 0;
    bool deadline_passed = false;
  };
  std::optional<Op> op;
  std::vector<std::uint64_t> failed;  // ops failed locally in this epoch
  std::uint64_t op_gen = 0;
  int round_ops = 0;
  std::uint64_t last_epoch = 0;
  std::vector<PeerId> last_ring;
};

struct Event {
  enum class Kind {
    kDeliver,
    kTick,
    kCoordCrash,
    kCoordRestart,
    kHeartbeat,
    kReconnect,
    kConnectDone,
    kSetupDone,
    kOpStart,
    kJoin,
    kPeerCrash,
    kPartition,
    kHeal
  };
  TimeMs at = 0;
  std::uint64_t order = 0;
  Kind kind = Kind::kTick;
  int a = 0;            // wire, coordinator or peer
  std::uint64_t b = 0;  // direction, incarnation, generation, epoch
  std::uint64_t c = 0;
  bool operator>(const Event& o) const { return std::tie(at, order) > std::tie(o.at, o.order); }
};

struct Commit {
  int coord;
  std::uint64_t life;
  std::uint64_t e;
  std::vector<PeerId> ring;
  TimeMs at;
};

class World {
 public:
  World(std::uint64_t seed, bool trace, Stats* stats) : rng_(seed), trace_(trace), stats_(stats) {
    strict_liveness_ = EnvLong("SHOAL_SIM_STRICT_LIVENESS", 0) != 0;
    rotate_on_give_up_ = EnvLong("SHOAL_SIM_ROTATE_ON_GIVE_UP", 1) != 0;
  }

  // Runs the seed; returns the first failure ("" when none).
  std::string Run() {
    for (int c = 0; c < kCoords; ++c) StartCoordinator(c);
    for (int i = 0; i < kInitialPeers; ++i) Schedule(Rand(0, 300), Event::Kind::kJoin, 0);
    // Chaos: a schedule of faults, all within the chaos phase.
    int faults = static_cast<int>(Rand(3, 14));
    for (int i = 0; i < faults; ++i) {
      TimeMs at = Rand(1500, kChaosMs);
      switch (Rand(0, 9)) {
        case 0:
        case 1:
        case 2:
          Schedule(at, Event::Kind::kCoordCrash, Rand(0, 3) == 0 ? 1 : 0);
          break;
        case 3:
          Schedule(at, Event::Kind::kCoordCrash, 1);
          break;
        case 4:
        case 5:
        case 6:
        case 7:
          Schedule(at, Event::Kind::kPartition, 0);
          break;
        case 8:
          Schedule(at, Event::Kind::kPeerCrash, 0);
          break;
        default:
          Schedule(at, Event::Kind::kJoin, 0);
          break;
      }
    }
    while (!events_.empty() && failure_.empty()) {
      Event ev = events_.top();
      events_.pop();
      if (ev.at > end_ms()) break;
      AccountBoth(ev.at);
      now_ = ev.at;
      Handle(ev);
    }
    if (failure_.empty()) {
      now_ = std::max(now_, end_ms());
      CheckLiveness();
    }
    return failure_;
  }

 private:
  // The run ends kCalmMs after the chaos, the last heal and the last restart.
  TimeMs end_ms() const { return std::max(kChaosMs, last_calm_start_) + kCalmMs; }

  TimeMs Rand(TimeMs lo, TimeMs hi) {  // inclusive
    return lo + static_cast<TimeMs>(rng_() % static_cast<std::uint64_t>(hi - lo + 1));
  }
  TimeMs Delay() { return Rand(1, kDelayMaxMs); }

  void Schedule(TimeMs at, Event::Kind kind, int a, std::uint64_t b = 0, std::uint64_t c = 0) {
    events_.push(Event{at, ++order_, kind, a, b, c});
  }

  void Trace(const std::string& s) {
    if (trace_) std::printf("%7ld  %s\n", static_cast<long>(now_), s.c_str());
  }

  void Fail(const std::string& what) {
    if (!failure_.empty()) return;
    failure_ = "t=" + std::to_string(now_) + ": " + what;
    stats_->violations++;
    Trace("VIOLATION " + what);
  }

  void AccountBoth(TimeMs next) {
    bool both = true;
    for (int c = 0; c < kCoords; ++c) both = both && coord_[c] && view_[c].committed;
    if (both) stats_->both_committed_ms += next - now_;
  }

  void Handle(const Event& ev) {
    switch (ev.kind) {
      case Event::Kind::kDeliver:
        return Deliver(ev.a, static_cast<int>(ev.b));
      case Event::Kind::kTick:
        if (!coord_[ev.a] || life_[ev.a] != ev.b) return;
        Schedule(now_ + kTickMs, Event::Kind::kTick, ev.a, ev.b);
        return CoordEvent(ev.a,
                          [&](Coordinator& k, std::vector<Output>* out) { k.OnTick(now_, out); });
      case Event::Kind::kCoordCrash:
        return CrashCoordinator(ev.a);
      case Event::Kind::kCoordRestart:
        return StartCoordinator(ev.a);
      case Event::Kind::kHeartbeat:
        return HeartbeatTick(ev.a);
      case Event::Kind::kReconnect:
        if (peers_[ev.a].gen != ev.b) return;
        return TryReconnect(ev.a);
      case Event::Kind::kConnectDone:
        if (peers_[ev.a].gen != ev.b) return;
        return ConnectDone(ev.a, static_cast<int>(ev.c));
      case Event::Kind::kSetupDone:
        return SetupDone(ev.a, ev.b);
      case Event::Kind::kOpStart:
        return OpStart(ev.a, ev.b);
      case Event::Kind::kJoin:
        return Join();
      case Event::Kind::kPeerCrash:
        return CrashRandomPeer();
      case Event::Kind::kPartition:
        return Partition();
      case Event::Kind::kHeal:
        return;  // deliveries held by the cut were scheduled for this moment
    }
  }

  // ---- Coordinators ----------------------------------------------------------------------------

  void StartCoordinator(int c) {
    SHOAL_CHECK(!coord_[c]);
    coord_[c] = std::make_unique<Coordinator>(SimConfig(c, rng_));
    ++life_[c];
    host_down_[c] = false;
    view_[c] = coord_[c]->view();
    Trace("coordinator " + std::to_string(c) + " starts (incarnation " + std::to_string(life_[c]) +
          ")");
    Schedule(now_ + Rand(0, kTickMs - 1), Event::Kind::kTick, c, life_[c]);
  }

  void CrashCoordinator(int c) {
    if (!coord_[c]) return;
    bool host = Rand(0, 2) == 0;
    stats_->coord_crashes[c]++;
    stats_->host_crashes += host;
    Trace("coordinator " + std::to_string(c) + (host ? " host" : " process") + " crashes");
    coord_[c].reset();
    host_down_[c] = host;
    for (int w : wires_of_[c]) {
      Wire& x = wires_[w];
      if (x.life != life_[c] || !x.open[0]) continue;
      x.open[0] = false;
      x.q[0].clear();
      if (host) {
        x.q[1].clear();
      } else {
        Push(w, 1, Packet{0, true, {}});
      }
    }
    wires_of_[c].clear();
    view_[c] = View{};
    TimeMs down = Rand(0, kDowntimeMaxMs);
    last_calm_start_ = std::max(last_calm_start_, now_ + down);
    Schedule(now_ + down, Event::Kind::kCoordRestart, c);
    Check();
  }

  template <typename F>
  void CoordEvent(int c, F&& f) {
    std::vector<Output> out;
    f(*coord_[c], &out);
    for (const Output& o : out) Apply(c, o);
    View v = coord_[c]->view();
    if (v.committed && (!view_[c].committed || view_[c].epoch != v.epoch)) {
      // A proposal commits with EpochCommit to its members; a rebuild sends none.
      bool rebuilt = std::none_of(out.begin(), out.end(), [](const Output& o) {
        return std::holds_alternative<net::EpochCommit>(o.message);
      });
      (rebuilt ? stats_->rebuilds : stats_->commits)[c]++;
      Trace("coordinator " + std::to_string(c) + (rebuilt ? " rebuilt" : " committed") + " epoch " +
            std::to_string(v.epoch) + " " + Ids(v.members));
      view_[c] = std::move(v);
      NewCommit(Commit{c, life_[c], view_[c].epoch, view_[c].members, now_}, rebuilt,
                IdsOf(LiveMembers(c)));
    } else {
      view_[c] = std::move(v);
    }
    Check();
  }

  void Apply(int c, const Output& o) {
    auto it = wire_by_conn_.find(o.conn);
    SHOAL_CHECK(it != wire_by_conn_.end());
    int w = it->second;
    Wire& x = wires_[w];
    SHOAL_CHECK(x.coord == c && x.life == life_[c]);
    if (!x.open[0]) return;
    if (o.kind == Output::Kind::kClose) {
      x.open[0] = false;
      Push(w, 1, Packet{0, true, {}});
      return;
    }
    if (const auto* m = std::get_if<net::EpochCommit>(&o.message)) x.claim = m->epoch;
    if (std::holds_alternative<net::EpochPropose>(o.message)) x.claim = 0;
    if (const auto* m = std::get_if<net::Removed>(&o.message)) {
      x.claim = 0;
      if (std::string(m->reason).find("no majority") != std::string::npos) stats_->give_ups[c]++;
    }
    if (std::holds_alternative<net::OpCommit>(o.message)) {
      stats_->ops_committed++;
      last_op_commit_ms_ = now_;
    }
    Push(w, 1, Packet{0, false, o.message});
  }

  // ---- Network ---------------------------------------------------------------------------------

  bool Cut(int peer, int coord) const {
    auto it = cut_until_.find({peer, coord});
    return it != cut_until_.end() && now_ < it->second;
  }
  TimeMs CutUntil(int peer, int coord) const {
    auto it = cut_until_.find({peer, coord});
    return it == cut_until_.end() ? 0 : it->second;
  }

  void Push(int w, int dir, Packet p) {
    Wire& x = wires_[w];
    TimeMs at = now_ + Delay();
    if (!x.q[dir].empty()) at = std::max(at, x.q[dir].back().at);
    p.at = at;
    x.q[dir].push_back(std::move(p));
    ScheduleDelivery(w, dir);
  }

  void ScheduleDelivery(int w, int dir) {
    Wire& x = wires_[w];
    if (x.scheduled[dir] || x.q[dir].empty()) return;
    x.scheduled[dir] = true;
    TimeMs at = std::max(x.q[dir].front().at, CutUntil(x.peer, x.coord));
    Schedule(std::max(at, now_), Event::Kind::kDeliver, w, static_cast<std::uint64_t>(dir));
  }

  void Deliver(int w, int dir) {
    Wire& x = wires_[w];
    x.scheduled[dir] = false;
    if (x.q[dir].empty()) return;
    if (Cut(x.peer, x.coord)) return ScheduleDelivery(w, dir);
    Packet p = std::move(x.q[dir].front());
    x.q[dir].pop_front();
    ScheduleDelivery(w, dir);
    if (dir == 0) {
      int c = x.coord;
      if (!x.open[0] || !coord_[c] || life_[c] != x.life) {
        // A restarted coordinator's host answers a segment of an old connection with a reset.
        if (coord_[c] && life_[c] != x.life && x.open[1] && !p.close) {
          x.open[0] = false;
          Push(w, 1, Packet{0, true, {}});
        }
        return;
      }
      ConnId conn = x.conn;
      if (p.close) {
        x.open[0] = false;
        return CoordEvent(
            c, [&](Coordinator& k, std::vector<Output>* out) { k.OnDisconnect(conn, now_, out); });
      }
      if (const auto* h = std::get_if<net::Hello>(&p.msg)) {
        x.claim = h->rejoin && h->rejoin->committed ? h->rejoin->epoch : 0;
      }
      return CoordEvent(c, [&](Coordinator& k, std::vector<Output>* out) {
        k.OnMessage(conn, p.msg, now_, out);
      });
    }
    if (!x.open[1]) return;
    SimPeer& s = peers_[x.peer];
    if (s.wire != w || !s.alive) return;
    if (p.close) {
      Trace("peer " + std::to_string(s.id) + ": connection closed by coordinator " +
            std::to_string(x.coord));
      return ControlLost(x.peer);
    }
    s.last_received_ms = now_;
    PeerMessage(x.peer, p.msg);
  }

  void Partition() {
    TimeMs until = now_ + Rand(200, kPartitionMaxMs);
    last_calm_start_ = std::max(last_calm_start_, until);
    stats_->partitions++;
    std::vector<int> live;
    for (int i = 0; i < static_cast<int>(peers_.size()); ++i) {
      if (peers_[i].alive) live.push_back(i);
    }
    if (live.empty()) return;
    auto cut = [&](int p, int c) {
      TimeMs& u = cut_until_[{p, c}];
      u = std::max(u, until);
    };
    std::string what;
    switch (Rand(0, 2)) {
      case 0: {  // one link
        int p = live[static_cast<std::size_t>(Rand(0, static_cast<TimeMs>(live.size()) - 1))];
        int c = static_cast<int>(Rand(0, kCoords - 1));
        cut(p, c);
        what = "peer " + std::to_string(peers_[p].id) + " / coordinator " + std::to_string(c);
        break;
      }
      case 1: {  // a coordinator from everyone
        int c = static_cast<int>(Rand(0, kCoords - 1));
        for (int p = 0; p < static_cast<int>(peers_.size()); ++p) cut(p, c);
        what = "coordinator " + std::to_string(c) + " from every peer";
        break;
      }
      default: {  // a split: each live peer reaches only one coordinator
        stats_->splits++;
        what = "split:";
        for (int p : live) {
          int c = static_cast<int>(Rand(0, kCoords - 1));
          cut(p, 1 - c);
          what += " " + std::to_string(peers_[p].id) + "->" + std::to_string(c);
        }
        break;
      }
    }
    Trace("partition until " + std::to_string(until) + ": " + what);
    Schedule(until, Event::Kind::kHeal, 0);
  }

  // ---- Peers: connection and failover ----------------------------------------------------------

  void Join() {
    if (now_ > kChaosMs) return;
    int alive = 0;
    for (const SimPeer& s : peers_) alive += s.alive && s.phase != PPhase::kClosed;
    if (alive >= kMaxAlive) return;
    SimPeer s;
    s.id = ++last_id_;
    s.last_received_ms = now_;
    peers_.push_back(s);
    stats_->joins++;
    int p = static_cast<int>(peers_.size()) - 1;
    Trace("peer " + std::to_string(s.id) + " starts");
    Schedule(now_ + Rand(1, kHeartbeatIntervalMs), Event::Kind::kHeartbeat, p);
    Attempt(p, 0);  // Create: the primary only
  }

  // One connect attempt to coordinator `c`: it succeeds after a round trip, is refused after one
  // (the host is up, the process not), or times out (cut link, host down).
  void Attempt(int p, int c) {
    SimPeer& s = peers_[p];
    std::uint64_t g = ++s.gen;
    if (Cut(p, c) || host_down_[c]) {
      TimeMs wait = kConnectTimeoutMs;
      if (s.reconnecting)
        wait = std::max<TimeMs>(1, std::min(wait, s.reconnect_deadline_ms - now_));
      Schedule(now_ + wait, Event::Kind::kConnectDone, p, g, 0);
      return;
    }
    Schedule(now_ + Delay() + Delay(), Event::Kind::kConnectDone, p, g, coord_[c] ? 1 : 0);
  }

  void ConnectDone(int p, int ok) {
    SimPeer& s = peers_[p];
    if (!s.alive || s.phase == PPhase::kClosed) return;
    int c = s.coord_index;
    if (!ok || !coord_[c] || Cut(p, c)) {
      if (s.phase == PPhase::kConnecting) {  // Create fails: the peer is gone
        Trace("peer " + std::to_string(s.id) + ": cannot reach the primary; Create fails");
        s.phase = PPhase::kClosed;
        return;
      }
      return ControlLost(p);
    }
    Wire x;
    x.peer = p;
    x.coord = c;
    x.life = life_[c];
    x.conn = ++last_conn_;
    int w = static_cast<int>(wires_.size());
    wires_.push_back(std::move(x));
    wire_by_conn_[wires_[w].conn] = w;
    wires_of_[c].push_back(w);
    coord_[c]->OnConnect(wires_[w].conn, now_);
    s.wire = w;
    s.awaiting_welcome = true;
    s.last_received_ms = now_;
    net::Hello hello{s.id, "sim", 1, std::nullopt};
    if (s.reconnecting) hello.rejoin = MakeRejoin(s);
    Trace("peer " + std::to_string(s.id) + " connects to coordinator " + std::to_string(c) +
          (hello.rejoin
               ? " with report epoch " + std::to_string(hello.rejoin->epoch) +
                     (hello.rejoin->committed ? " committed" : "") + " last " +
                     std::to_string(hello.rejoin->last_epoch) + Ids(hello.rejoin->last_ring)
               : ""));
    PeerSend(p, std::move(hello));
  }

  // PeerRuntime::OnControlLost (non-fatal).
  void ControlLost(int p) {
    SimPeer& s = peers_[p];
    if (s.phase == PPhase::kClosed) return;
    CloseWire(p);
    s.awaiting_welcome = false;
    ++s.gen;
    if (s.phase == PPhase::kConnecting) {  // never welcomed: Create fails
      s.phase = PPhase::kClosed;
      return;
    }
    if (!s.reconnecting) {
      s.reconnecting = true;
      s.lost_ms = now_;
      s.lost_index = s.coord_index;
      s.reconnect_deadline_ms = now_ + kReconnectWindowMs;
      s.attempts = 0;
      // PeerRuntime::OnControlLost: the last message was Removed{COORDINATOR_LOST} (a give-up),
      // so the next address comes first.
      if (rotate_on_give_up_ && s.given_up_by == s.coord_index) s.lost_ms = now_ - kFailoverMs;
    }
    s.given_up_by = -1;
    if (now_ >= s.reconnect_deadline_ms) {
      s.phase = PPhase::kClosed;
      return;
    }
    // ScheduleReconnect.
    TimeMs base = std::min<TimeMs>(kBackoffMaxMs, kReconnectFirstMs << std::min(s.attempts, 16u));
    s.attempts++;
    TimeMs delay = base / 2 + Rand(0, base / 2);
    Schedule(now_ + delay, Event::Kind::kReconnect, p, s.gen);
  }

  void TryReconnect(int p) {
    SimPeer& s = peers_[p];
    if (s.phase == PPhase::kClosed || !s.reconnecting) return;
    auto moves = static_cast<std::size_t>((now_ - s.lost_ms) / kFailoverMs);
    s.coord_index = static_cast<int>((static_cast<std::size_t>(s.lost_index) + moves) % kCoords);
    Attempt(p, s.coord_index);
  }

  void CloseWire(int p) {
    SimPeer& s = peers_[p];
    if (s.wire < 0) return;
    Wire& x = wires_[s.wire];
    if (x.open[1]) {
      x.open[1] = false;
      x.q[1].clear();
      Push(s.wire, 0, Packet{0, true, {}});
    }
    s.wire = -1;
  }

  bool Connected(const SimPeer& s) const { return s.wire >= 0 && wires_[s.wire].open[1]; }

  void PeerSend(int p, Message m) {
    SimPeer& s = peers_[p];
    if (!Connected(s)) return;  // dropped while the coordinator is away
    Push(s.wire, 0, Packet{0, false, std::move(m)});
  }

  void HeartbeatTick(int p) {
    SimPeer& s = peers_[p];
    if (!s.alive || s.phase == PPhase::kClosed) return;
    if (Connected(s) && now_ - s.last_received_ms > kHeartbeatTimeoutMs) {
      Trace("peer " + std::to_string(s.id) + ": nothing from coordinator " +
            std::to_string(wires_[s.wire].coord) + " for a heartbeat timeout");
      ControlLost(p);
      if (s.phase == PPhase::kClosed) return;
    }
    PeerSend(p, net::Heartbeat{});
    if (s.op && !s.op->deadline_passed && now_ > s.op->start_ms + kOpDeadlineMs) {
      // PeerRuntime::OnOpDeadline: a fault naming whom it waits on (nobody once it is done),
      // and the data plane stops.
      s.op->deadline_passed = true;
      PeerId suspect = 0;
      if (!s.op->done) {
        auto me = std::find(s.ring.begin(), s.ring.end(), s.id) - s.ring.begin();
        suspect = s.ring[static_cast<std::size_t>(me + static_cast<long>(s.ring.size()) - 1) %
                         s.ring.size()];
      }
      SendFault(p, suspect, SHOAL_ERR_TIMEOUT, s.op->seq);
      if (!s.op->done) LeavePlane(p);
    }
    if (s.op && now_ > s.op->start_ms + kOpDeadlineMs + kVerdictGraceMs) {
      Trace("peer " + std::to_string(s.id) + ": op " + std::to_string(s.op->seq) +
            " fails locally");
      s.failed.push_back(s.op->seq);  // no outcome learnt: fails locally (ForceFail)
      s.op.reset();
      LeavePlane(p);
      EnterBarrier(p);
    }
    Schedule(now_ + kHeartbeatIntervalMs, Event::Kind::kHeartbeat, p);
  }

  // PeerRuntime::MakeRejoin.
  net::Rejoin MakeRejoin(const SimPeer& s) const {
    net::Rejoin j;
    if (s.phase == PPhase::kMember || s.phase == PPhase::kSetup) {
      j.epoch = s.e;
      j.committed = s.phase == PPhase::kMember && s.committed;
      j.members = s.ring;
      j.broken = s.broken;
      j.abort_code = s.abort_code;
      j.abort_lost = s.abort_lost;
      j.fault_sent = s.fault_sent;
      j.fault_code = s.fault_code;
      j.fault_suspect = s.fault_suspect;
      j.in_barrier = s.in_barrier;
      if (s.next_seq > 0) j.next_seq.push_back(net::TagSeq{kTag, s.next_seq});
      if (s.op) {
        j.ops.push_back(net::RejoinOp{
            kTag, s.op->seq, s.op->done ? net::RejoinOpState::kDone : net::RejoinOpState::kRunning,
            0, 0});
      }
      for (std::uint64_t seq : s.failed) {
        j.ops.push_back(net::RejoinOp{kTag, seq, net::RejoinOpState::kFailed, 0, 0});
      }
    }
    j.last_epoch = s.last_epoch;
    j.last_ring = s.last_ring;
    j.seen_epoch = std::max(s.e, s.last_epoch);
    return j;
  }

  // ---- Peers: the protocol ---------------------------------------------------------------------

  void PeerMessage(int p, const Message& m) {
    SimPeer& s = peers_[p];
    const int c = wires_[s.wire].coord;
    // PeerRuntime::OnControlMessage: a give-up is a Removed{COORDINATOR_LOST} that nothing follows.
    const auto* removed = std::get_if<net::Removed>(&m);
    s.given_up_by = removed && removed->code == SHOAL_ERR_COORDINATOR_LOST ? c : -1;
    if (const auto* w = std::get_if<net::Welcome>(&m)) {
      (void)w;
      s.awaiting_welcome = false;
      if (s.phase == PPhase::kConnecting) s.phase = PPhase::kPending;
      if (s.welcomed_by >= 0 && s.welcomed_by != c) stats_->failovers++;
      s.welcomed_by = c;
      s.reconnecting = false;
      Trace("peer " + std::to_string(s.id) + " welcomed by coordinator " + std::to_string(c));
    } else if (const auto* r = std::get_if<net::Reject>(&m)) {
      Trace("peer " + std::to_string(s.id) + " rejected: " + r->reason);
      if (s.reconnecting) return ControlLost(p);
      CloseWire(p);
      s.phase = PPhase::kClosed;
    } else if (const auto* pr = std::get_if<net::EpochPropose>(&m)) {
      if (s.phase == PPhase::kConnecting) return;
      if (pr->epoch <= s.e && s.e != 0) {
        return Fail("S5: peer " + std::to_string(s.id) + " proposed epoch " +
                    std::to_string(pr->epoch) + " by coordinator " + std::to_string(c) +
                    " but it was given epoch " + std::to_string(s.e));
      }
      LeavePlane(p);
      s.e = pr->epoch;
      s.ring.clear();
      for (const net::Member& x : pr->members) s.ring.push_back(x.peer_id);
      s.committed = s.broken = s.fault_sent = s.in_barrier = false;
      s.abort_code = s.fault_code = SHOAL_OK;
      s.abort_lost = s.fault_suspect = 0;
      s.next_seq = 0;
      s.op.reset();
      s.failed.clear();
      s.round_ops = 0;
      s.phase = PPhase::kSetup;
      JoinPlane(p, c);
      Schedule(now_ + Rand(5, 60), Event::Kind::kSetupDone, p, s.e);
    } else if (const auto* cm = std::get_if<net::EpochCommit>(&m)) {
      if (s.phase != PPhase::kSetup || cm->epoch != s.e) return;
      s.phase = PPhase::kMember;
      s.committed = true;
      s.last_epoch = s.e;
      s.last_ring = s.ring;
      Next(p);
    } else if (const auto* oc = std::get_if<net::OpCommit>(&m)) {
      if (s.phase != PPhase::kMember || oc->epoch != s.e || !s.op || s.op->seq != oc->seq) return;
      s.op.reset();
      s.round_ops++;
      Next(p);
    } else if (const auto* ab = std::get_if<net::EpochAbort>(&m)) {
      if (s.phase != PPhase::kMember || ab->epoch != s.e || s.broken) return;
      s.broken = true;
      s.abort_code = ab->code;
      s.abort_lost = ab->lost_peer;
      if (s.op) s.failed.push_back(s.op->seq);  // FailOps lists them as failed
      s.op.reset();
      LeavePlane(p);
      EnterBarrier(p);
    } else if (const auto* tu = std::get_if<net::TopologyUnchanged>(&m)) {
      if (s.phase != PPhase::kMember || tu->epoch != s.e) return;
      s.in_barrier = false;
      Next(p);
    } else if (removed) {
      LeavePlane(p);
      s.committed = false;
      s.in_barrier = false;
      s.op.reset();
      if (s.phase != PPhase::kClosed) s.phase = PPhase::kPending;
    } else if (const auto* er = std::get_if<net::Error>(&m)) {
      if (er->code == SHOAL_ERR_PROTOCOL) {
        Fail("S5: peer " + std::to_string(s.id) + " got Error{PROTOCOL} from coordinator " +
             std::to_string(c) + ": " + er->reason);
      }
    }
  }

  // Ops and the barrier of a member of a committed, unbroken epoch.
  void Next(int p) {
    SimPeer& s = peers_[p];
    if (s.phase != PPhase::kMember || !s.committed || s.broken || s.in_barrier || s.op) return;
    if (s.round_ops >= kOpsPerRound) {
      s.round_ops = 0;
      return EnterBarrier(p);
    }
    Schedule(now_ + Rand(0, 30), Event::Kind::kOpStart, p, ++s.op_gen);
  }

  void EnterBarrier(int p) {
    SimPeer& s = peers_[p];
    if (s.phase != PPhase::kMember || !s.committed || s.in_barrier) return;
    s.in_barrier = true;
    PeerSend(p, net::UpdateTopology{s.e});
  }

  void OpStart(int p, std::uint64_t gen) {
    SimPeer& s = peers_[p];
    if (!s.alive || s.op_gen != gen || s.phase != PPhase::kMember || !s.committed || s.broken ||
        s.in_barrier || s.op) {
      return;
    }
    s.op = SimPeer::Op{s.next_seq++, false, now_, false};
    Trace("peer " + std::to_string(s.id) + " starts op " + std::to_string(s.op->seq) + " plane " +
          std::to_string(s.plane));
    if (s.plane >= 0) PlaneChanged(s.plane);
  }

  void SetupDone(int p, std::uint64_t e) {
    SimPeer& s = peers_[p];
    if (!s.alive || s.phase != PPhase::kSetup || s.e != e) return;
    for (std::size_t r = 0; r < s.ring.size(); ++r) {
      const SimPeer& o = peers_[planes_[s.plane].ring[r]];
      if (!o.alive) {
        return PeerSend(p, net::EpochReady{e, false, o.id, SHOAL_ERR_PEER_LOST});
      }
    }
    PeerSend(p, net::EpochReady{e, true, 0, SHOAL_OK});
  }

  int PeerIndex(PeerId id) const {
    for (int i = 0; i < static_cast<int>(peers_.size()); ++i) {
      if (peers_[i].id == id) return i;
    }
    SHOAL_CHECK_MSG(false, "unknown peer id in a ring");
    return -1;
  }

  void JoinPlane(int p, int c) {
    SimPeer& s = peers_[p];
    auto key = std::make_tuple(c, life_[c], s.e);
    auto it = plane_of_.find(key);
    if (it == plane_of_.end()) {
      Plane x;
      x.e = s.e;
      for (PeerId id : s.ring) x.ring.push_back(PeerIndex(id));
      planes_.push_back(std::move(x));
      it = plane_of_.emplace(key, static_cast<int>(planes_.size()) - 1).first;
    }
    s.plane = it->second;
    planes_[s.plane].in.insert(p);
  }

  void LeavePlane(int p) {
    SimPeer& s = peers_[p];
    if (s.plane < 0) return;
    int x = s.plane;
    s.plane = -1;
    planes_[x].in.erase(p);
    if (planes_[x].leaver < 0) planes_[x].leaver = p;
    PlaneChanged(x);
  }

  // Completes the ops every member started, or faults the running ones once someone left.
  void PlaneChanged(int x) {
    Plane& pl = planes_[x];
    std::vector<int> in(pl.in.begin(), pl.in.end());
    for (int p : in) {
      SimPeer& s = peers_[p];
      if (!s.op || s.op->done || s.phase != PPhase::kMember) continue;
      if (pl.leaver >= 0) {  // PeerRuntime::OnEngineFault
        SendFault(p, peers_[pl.leaver].id, SHOAL_ERR_PEER_LOST, s.op->seq);
        continue;
      }
      bool all = true;
      for (int r : pl.ring) {
        const SimPeer& o = peers_[r];
        all =
            all && o.alive && o.plane == x && o.phase == PPhase::kMember && o.next_seq > s.op->seq;
      }
      if (!all) continue;
      s.op->done = true;
      PeerSend(p, net::OpResult{s.e, kTag, s.op->seq});
    }
  }

  // PeerRuntime::SendFault: once per epoch, only in a committed, unbroken one; recorded for the
  // rejoin report even when the coordinator is away (the send is then dropped).
  void SendFault(int p, PeerId suspect, shoal_status code, std::uint64_t seq) {
    SimPeer& s = peers_[p];
    if (s.fault_sent || s.broken || !s.committed || s.phase != PPhase::kMember) return;
    s.fault_sent = true;
    s.fault_code = code;
    s.fault_suspect = suspect;
    PeerSend(p, net::EpochFault{s.e, suspect, code, kTag, seq, "sim"});
  }

  void CrashRandomPeer() {
    std::vector<int> live;
    for (int i = 0; i < static_cast<int>(peers_.size()); ++i) {
      if (peers_[i].alive && peers_[i].phase != PPhase::kClosed) live.push_back(i);
    }
    if (live.size() <= 2) return;
    int p = live[static_cast<std::size_t>(Rand(0, static_cast<TimeMs>(live.size()) - 1))];
    SimPeer& s = peers_[p];
    Trace("peer " + std::to_string(s.id) + " crashes");
    stats_->peers_crashed++;
    CloseWire(p);
    s.alive = false;
    s.phase = PPhase::kClosed;
    LeavePlane(p);
    Schedule(now_ + Rand(500, 3000), Event::Kind::kJoin, 0);  // a replacement, with a fresh id
  }

  // ---- The property ----------------------------------------------------------------------------

  // live(c): the peers (indices) that coordinator c counts as live committed members.
  std::set<int> LiveMembers(int c) const {
    std::set<int> live;
    const View& v = view_[c];
    if (!coord_[c] || !v.committed) return live;
    for (int w : wires_of_[c]) {
      const Wire& x = wires_[w];
      if (x.life != life_[c] || !x.open[0] || x.claim != v.epoch || x.claim == 0) continue;
      PeerId id = peers_[x.peer].id;
      if (std::find(v.members.begin(), v.members.end(), id) != v.members.end()) live.insert(x.peer);
    }
    return live;
  }

  std::set<PeerId> IdsOf(const std::set<int>& ps) const {
    std::set<PeerId> ids;
    for (int p : ps) ids.insert(peers_[p].id);
    return ids;
  }

  void Check() {
    std::array<std::set<int>, kCoords> live;
    for (int c = 0; c < kCoords; ++c) live[c] = LiveMembers(c);
    // S1.
    for (int p : live[0]) {
      if (live[1].count(p)) {
        return Fail("S1: peer " + std::to_string(peers_[p].id) +
                    " is a live committed member at both coordinators (epochs " +
                    std::to_string(view_[0].epoch) + " and " + std::to_string(view_[1].epoch) +
                    ")");
      }
    }
    // S2.
    if (!view_[0].committed || view_[0].broken || !view_[1].committed || view_[1].broken) return;
    std::set<PeerId> a(view_[0].members.begin(), view_[0].members.end());
    std::set<PeerId> b(view_[1].members.begin(), view_[1].members.end());
    for (const std::vector<PeerId>& ring : rings_) {
      if (StrictMajority(a, ring) && StrictMajority(b, ring)) {
        return Fail("S2: both coordinators run an unbroken epoch (" + Ids(view_[0].members) + ", " +
                    Ids(view_[1].members) + ") with a majority of ring " + Ids(ring));
      }
    }
  }

  // `live`: live(X) right after the commit (for a proposal, its whole ring).
  void NewCommit(Commit k, bool rebuilt, const std::set<PeerId>& live) {
    std::set<PeerId> have(k.ring.begin(), k.ring.end());
    std::uint64_t newest = 0;  // max last(p) over the members
    for (PeerId id : k.ring) newest = std::max(newest, peers_[PeerIndex(id)].last_epoch);
    if (!rebuilt && newest != 0) {
      bool continues = false;
      for (const Commit& old : commits_) {
        continues = continues || (old.e >= newest && StrictMajority(have, old.ring));
      }
      if (!continues) {
        return Fail("S3: coordinator " + std::to_string(k.coord) + " committed epoch " +
                    std::to_string(k.e) + " " + Ids(k.ring) + ", a majority of no epoch at or " +
                    "above " + std::to_string(newest) + ", the newest its members were in");
      }
    }
    for (const Commit& old : commits_) {
      if (!StrictMajority(live, old.ring)) continue;
      bool same = k.e == old.e && k.ring == old.ring;
      if (k.e < old.e || (k.e == old.e && !same)) {
        return Fail("S4: coordinator " + std::to_string(k.coord) + " committed epoch " +
                    std::to_string(k.e) + " " + Ids(k.ring) + ", its live members " + Ids(live) +
                    " holding a majority of epoch " + std::to_string(old.e) + " " + Ids(old.ring) +
                    " committed at t=" + std::to_string(old.at) + " by coordinator " +
                    std::to_string(old.coord));
      }
    }
    rings_.insert(k.ring);
    commits_.push_back(std::move(k));
  }

  // The end of the calm phase: where the live peers are (Stats::ends), and whether the group makes
  // progress.
  void CheckLiveness() {
    std::set<int> everyone;
    for (int i = 0; i < static_cast<int>(peers_.size()); ++i) {
      if (peers_[i].alive && peers_[i].phase != PPhase::kClosed) everyone.insert(i);
    }
    if (everyone.empty()) return;
    std::string where;
    int groups = 0;
    bool one = false;
    for (int c = 0; c < kCoords; ++c) {
      std::set<int> live = LiveMembers(c);
      where += " coordinator " + std::to_string(c) + ": epoch " + std::to_string(view_[c].epoch) +
               (view_[c].committed ? " committed" : "") + " live " + Ids(IdsOf(live)) +
               " pending " + Ids(view_[c].pending) + ";";
      groups += !live.empty();
      one = one || live == everyone;
    }
    // Whether a majority of the ring of the last commit anywhere is alive: without one, no group
    // may form (the price of majorities, docs/protocol.md).
    std::set<PeerId> alive_ids = IdsOf(everyone);
    bool majority_alive = commits_.empty() || StrictMajority(alive_ids, commits_.back().ring);
    End end = one              ? End::kOneGroup
              : groups == 2    ? End::kTwoGroups
              : groups == 1    ? End::kStragglers
              : majority_alive ? End::kNoGroup
                               : End::kMajorityLost;
    stats_->ends[static_cast<int>(end)]++;
    std::string failure;
    if (groups > 0 && last_op_commit_ms_ < now_ - kCalmMs / 2) {
      failure = "no op committed in the second half of the calm phase (last at t=" +
                std::to_string(last_op_commit_ms_) + ")";
    } else if (strict_liveness_ && end != End::kOneGroup && end != End::kMajorityLost) {
      failure = "the live peers " + Ids(alive_ids) + " are not one group";
    }
    if (failure.empty()) return;
    for (const SimPeer& x : peers_) {
      if (!x.alive || x.phase == PPhase::kClosed) continue;
      Trace("peer " + std::to_string(x.id) + ": phase " +
            std::to_string(static_cast<int>(x.phase)) + " epoch " + std::to_string(x.e) +
            (x.committed ? " committed" : "") + (x.broken ? " broken" : "") +
            (x.in_barrier ? " in barrier" : "") + " next_seq " + std::to_string(x.next_seq) +
            (x.op ? " op " + std::to_string(x.op->seq) + (x.op->done ? " done" : " running") : "") +
            (x.fault_sent ? " fault sent" : "") + " plane " + std::to_string(x.plane));
    }
    stats_->liveness_failures++;
    failure_ = "liveness: at the end of the calm phase, " + failure + ":" + where;
  }

  std::mt19937_64 rng_;
  bool trace_;
  bool strict_liveness_ = false;
  bool rotate_on_give_up_ = false;
  Stats* stats_;
  std::string failure_;
  TimeMs now_ = 0;
  std::uint64_t order_ = 0;
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events_;
  std::unique_ptr<Coordinator> coord_[kCoords];
  std::uint64_t life_[kCoords] = {};
  bool host_down_[kCoords] = {};
  View view_[kCoords];
  std::vector<int> wires_of_[kCoords];
  std::vector<Wire> wires_;
  std::map<ConnId, int> wire_by_conn_;
  ConnId last_conn_ = 0;
  std::vector<SimPeer> peers_;
  PeerId last_id_ = 0;
  std::vector<Plane> planes_;
  std::map<std::tuple<int, std::uint64_t, std::uint64_t>, int> plane_of_;
  std::map<std::pair<int, int>, TimeMs> cut_until_;
  TimeMs last_calm_start_ = 0;
  TimeMs last_op_commit_ms_ = -1;
  std::vector<Commit> commits_;
  std::set<std::vector<PeerId>> rings_;
};

TEST(StandbySim, PrimaryAndStandbyNeverBothRunTheGroup) {
  std::signal(SIGABRT, OnAbort);
  long replay = EnvLong("SHOAL_SIM_SEED", 0);
  long first = replay ? replay : EnvLong("SHOAL_SIM_FIRST_SEED", 1);
  long count = replay ? 1 : EnvLong("SHOAL_SIM_SEEDS", 500);
  bool keep_going = EnvLong("SHOAL_SIM_KEEP_GOING", 0) != 0;
  Stats stats;
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> failures;
  for (long seed = first; seed < first + count; ++seed) {
    g_running_seed = static_cast<std::sig_atomic_t>(seed);
    World world(static_cast<std::uint64_t>(seed), replay != 0, &stats);
    std::string failure = world.Run();
    stats.seeds++;
    if (!failure.empty()) {
      failures.push_back("seed " + std::to_string(seed) + ": " + failure);
      ADD_FAILURE() << "seed " << seed << ": " << failure
                    << "\nreplay with SHOAL_SIM_SEED=" << seed;
      if (!keep_going) break;
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "standby sim: %ld seeds in %.1f s; coordinator crashes %ld (primary) %ld (standby), %ld of "
      "them host crashes; partitions %ld (%ld splits); peer crashes %ld, joins %ld; failovers "
      "%ld; epochs committed %ld (primary) %ld (standby), rebuilt %ld / %ld; give-ups "
      "(no majority) %ld / %ld; ops committed %ld; both coordinators committed for %.1f s of "
      "simulated time; safety violations %ld; liveness failures %ld; at the end: one group %ld, "
      "one group and stragglers %ld, two groups %ld, no group %ld, majority lost %ld\n",
      stats.seeds, secs, stats.coord_crashes[0], stats.coord_crashes[1], stats.host_crashes,
      stats.partitions, stats.splits, stats.peers_crashed, stats.joins, stats.failovers,
      stats.commits[0], stats.commits[1], stats.rebuilds[0], stats.rebuilds[1], stats.give_ups[0],
      stats.give_ups[1], stats.ops_committed, static_cast<double>(stats.both_committed_ms) / 1000.0,
      stats.violations, stats.liveness_failures, stats.ends[0], stats.ends[1], stats.ends[2],
      stats.ends[3], stats.ends[4]);
  for (const std::string& f : failures) std::printf("  %s\n", f.c_str());
}

}  // namespace
}  // namespace shoal::coord
