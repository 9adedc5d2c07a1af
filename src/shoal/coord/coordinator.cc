// The coordinator state machine of docs/protocol.md.
//
// Vocabulary (the words of docs/protocol.md, plus these):
// - peer record: one per accepted connection (struct Peer), keyed by ConnId. Its PeerState says
//   where the connection is in the protocol; everything the coordinator knows about that peer is
//   in the record, so forgetting a connection is erasing one record (and its id in the index).
// - group phase: where the group is (enum Phase): kEmpty (no epoch with a live member), kSetup (a
//   proposal is out), kActive (a committed, unbroken epoch), kBroken (a committed epoch that was
//   aborted and waits for the barrier).
// - current epoch: the one proposal or committed epoch of the phase (struct Epoch). In kEmpty it
//   has no members and only remembers the last number used.
// - live member: a peer record in kProposed/kReady/kMember; those are always peers of the current
//   epoch (every proposal moves all of them), so a member that died is simply a missing record.
// - demote: move a proposed/committed peer back to pending with Removed{code}; it goes to the end
//   of the pending order.
// - op record: the OpResults received for one (tag, seq) of the current epoch.
//
// State changes go through MovePeer() and MovePhase(), which check the transition tables
// LegalPeerMove() and LegalPhaseMove(); an illegal move is a bug and aborts (SHOAL_CHECK). Input
// from peers never trips a check: a message a peer may not send, or may not send in its state, is
// answered with Error{PROTOCOL} and the connection is closed and forgotten (one reject path:
// Refuse()).
//
// Choices where docs/protocol.md leaves room (each is the conservative reading):
// 1. Stale messages. A message naming an epoch the peer was once in (or proposed for) but that is
//    no longer current can race with the coordinator's own messages, so it is not an error:
//    EpochReady / OpResult / EpochFault are ignored, UpdateTopology gets a non-fatal
//    Error{EPOCH_CHANGED} (the doc's "a stale epoch number gets Error"). A number the peer was
//    never given (above what it was proposed / committed) is a protocol error. Duplicates for the
//    current epoch (a second EpochReady, a second UpdateTopology in one barrier, a second OpResult
//    for an open op) are protocol errors.
// 2. Barrier timeout. Demoting late members is "a deadline passed", so it breaks an unbroken epoch
//    with (TIMEOUT, first late member in ring order), sent to every live member including the late
//    ones *before* their Removed. Without that, ops in flight would end with EPOCH_CHANGED for the
//    survivors but with whatever Removed implies for the demoted, which breaks the agreed outcome.
// 3. Demoted peers (barrier timeout, setup failure) are not part of the proposal that their
//    demotion triggers: they rejoin the pending queue at its end and are admitted at the next
//    barrier. Re-proposals after a setup failure contain only the rest of the failed proposal
//    (pending peers join only at a barrier or an empty group). If no one is left, the group is
//    empty and, as for any empty group, all pending peers (the demoted included) are proposed.
// 4. Abort reason. Events are handled one at a time and any loss of a member breaks the epoch at
//    once, so "a member whose control connection is gone is named first" means the first event
//    wins; OnTick handles lost connections before anything else. A fault whose suspect is 0 or not
//    a member of the epoch names, if it concerns an op with results already in, the nearest member
//    before the reporter that has not reported that op (the straggler everyone waits for); else the
//    reporter's previous neighbour (the peer it receives from, the one a receive that timed out or
//    a bad frame points at); always with the fault's code. Dropping a
//    member for a protocol error names it with PEER_LOST.
// 5. A failed EpochReady whose suspect is not in the proposal demotes the reporter itself: it is
//    the one that could not set up.
// 6. Error is listed as coordinator -> peer; a peer that sends one is refused like any other
//    message it may not send. A fault or failed EpochReady with code SHOAL_OK is malformed.
// 7. Open op records are erased when the op commits, so a late duplicate OpResult for a committed
//    op (never sent by a peer that follows the protocol) opens a record that can never complete; it
//    counts against max_open_ops until the epoch ends and cannot cause a commit.
// 8. View.epoch in kEmpty is the last epoch number used (0 before the first); View.members of a
//    committed epoch is its ring order as committed, members lost since included.
// 9. A Leave is answered with a Close only; the leaver is not sent the EpochAbort its leaving
//    causes. A barrier whose entrants have all died starts over: its deadline runs from the next
//    entrant. Reject codes: REJECTED for a duplicate id or a full pending queue, PROTOCOL for id 0.
// 10. OnConnect has no outputs, so the coordinator cannot refuse a connection there: the shell caps
//    accepted connections at limits::kConnectionsMax; the hello timeout bounds silent ones.
// 11. A sync plans once every member reported; members the plan refuses (revision ahead, other
//    schema) get their refusal at once and do not hold up the commit. When the sync commits, the
//    refused leave the epoch, because the ring still counts on them and their state differs: the
//    epoch breaks with (the first refusal's code, that member) and each refused member is demoted
//    with Removed{its code}; the others' next op fails fast and update_topology() goes on without
//    (or re-admits) them. If every member is refused, nothing changed anywhere: no commit, no
//    demotion, the epoch stays. If the epoch breaks before the commit, nobody is demoted.
// 12. The group's revision is the elected revision of its last committed sync; its holders are
//    that sync's admitted members. It is forgotten when the last holder stops being a member (lost,
//    left, demoted), the group being empty included: nobody in the group holds that revision any
//    more, so keeping it would refuse the remaining members forever (all "ahead") or let the
//    revision go back; the group goes on from whatever its members hold, like a new group.
// 14. Coordinator restart (docs/protocol.md, "Coordinator restart"). A coordinator with no group
//    (kEmpty) that receives a Hello whose rejoin report names an epoch above any it used starts a
//    rebuild (kRebuild): every reporter waits as pending while the members of the reported epochs
//    report, at most rebuild_timeout_ms, and while a collective still runs on their data planes with
//    nothing wrong reported (it may finish); messages reporters send meanwhile update their
//    reports.
//    The rebuilt epoch is the highest one some reporter was a committed member of, with the
//    members that report it; its ops get the only verdict that agrees with what any member already
//    returned: commit when some member committed it (its commit went out before the crash) or
//    every member finished it, else the epoch's abort. The epoch resumes unbroken when every member
//    is back, none saw it break or sent a fault, and no op is left unresolved; otherwise it breaks
//    with, in this order: the abort some member received, (PEER_LOST, first member that did not
//    report), the fault some member sent, (COORDINATOR_LOST, none). An abort this incarnation sent
//    itself (a quorum coordinator regrouping the members it lost) comes first, and then only ops
//    some member committed are committed. Reporters not in the rebuilt
//    epoch that think they are in one get Removed. The group's revision is the highest committed
//    revision a member reports; its holders are the members at it with the most common state
//    digest. A rejoin report reaching a coordinator that has a group (or a lower epoch than it
//    used) is from a peer the group went on without: it is pending and, if it thinks it is in an
//    epoch, gets Removed; epochs proposed later are above the one it reported. A rejoining peer
//    whose old connection is still open replaces it (the old one is lost).
// 15. startup_hold_ms: an empty group of a coordinator younger than that proposes nothing, so
//    newcomers cannot form a group before the members of the group it replaces report.
// 16. Quorum (Config::quorum, for a set of coordinators: a primary and standbys). The coordinator
//    keeps the newest committed epoch it knows of, `lineage`: its own commits, the epoch it
//    rebuilt, and the newest `last_epoch` a rejoin report names. Every epoch it proposes (after
//    a barrier, a failed setup, or to an empty group) and every epoch it rebuilds must hold a
//    strict majority of the lineage's ring. So the epochs of the whole set form one chain, each
//    holding a majority of the one before: two majorities of one ring share a peer, a peer talks to
//    one coordinator at a time, and it reports the newest epoch it was in wherever it goes, which
//    moves that coordinator's lineage on before the peer can count. Without a majority, the
//    coordinator gives its members and pending peers up (Removed{COORDINATOR_LOST}, then the
//    close), so that they move on to the coordinator that has it; pending peers that arrive later
//    are given up likewise after rebuild_timeout_ms. A standby (Config::standby) proposes nothing
//    to newcomers before it has a lineage.
// 13. Syncs of a member are numbered 0, 1, 2, ... in each epoch and it runs one at a time, so a
//    SyncReport whose seq is not the member's next one is a protocol error (a duplicate cannot
//    open a record that never completes), and an OpResult for a sync that has no plan is one too
//    (it would open an op record that refuses the sync's honest reports).
#include "shoal/coord/coordinator.h"

#include <algorithm>
#include <set>
#include <string>
#include <utility>

#include "shoal/common/check.h"
#include "shoal/coord/sync_planner.h"

namespace shoal::coord {
namespace {

enum class PeerState {
  kHandshaking,  // accepted, has not said Hello
  kPending,      // welcomed, not in the current epoch
  kProposed,     // in the current proposal, not ready yet
  kReady,        // in the current proposal, its data connections are up
  kMember,       // a member of the current, committed epoch
};

enum class Phase {
  kEmpty,   // no epoch with a live member; pending peers are proposed at once
  kSetup,   // a proposal is out; waiting for EpochReady from all of it
  kActive,  // a committed, unbroken epoch; ops commit
  kBroken,  // a committed epoch that was aborted; waits for the barrier
  kRebuild, // a restarted coordinator collecting the reports of the group it replaces (choice 14)
};

const char* PeerStateName(PeerState s) {
  switch (s) {
    case PeerState::kHandshaking:
      return "handshaking";
    case PeerState::kPending:
      return "pending";
    case PeerState::kProposed:
      return "proposed";
    case PeerState::kReady:
      return "ready";
    case PeerState::kMember:
      return "member";
  }
  return "?";
}

const char* PhaseName(Phase p) {
  switch (p) {
    case Phase::kEmpty:
      return "empty";
    case Phase::kSetup:
      return "setup";
    case Phase::kActive:
      return "active";
    case Phase::kBroken:
      return "broken";
    case Phase::kRebuild:
      return "rebuild";
  }
  return "?";
}

// The peer transition table. Forgetting a record (close, disconnect, leave) is legal from every
// state and is not a move.
bool LegalPeerMove(PeerState from, PeerState to) {
  switch (from) {
    case PeerState::kHandshaking:
      return to == PeerState::kPending;  // Welcome
    case PeerState::kPending:  // admitted by a proposal, or a member of a rebuilt epoch (choice 14)
      return to == PeerState::kProposed || to == PeerState::kMember;
    case PeerState::kProposed:  // ready, re-proposed, or demoted (suspect / setup timeout)
      return to == PeerState::kReady || to == PeerState::kProposed || to == PeerState::kPending;
    case PeerState::kReady:  // committed, re-proposed, or demoted (named suspect)
      return to == PeerState::kMember || to == PeerState::kProposed || to == PeerState::kPending;
    case PeerState::kMember:  // proposed at a barrier, or demoted by the barrier timeout
      return to == PeerState::kProposed || to == PeerState::kPending;
  }
  return false;
}

// The group transition table.
bool LegalPhaseMove(Phase from, Phase to) {
  switch (from) {
    case Phase::kEmpty:
      return to == Phase::kSetup || to == Phase::kRebuild;  // pending peers proposed, restart
    case Phase::kSetup:            // re-proposed, committed, or no one left
      return to == Phase::kSetup || to == Phase::kActive || to == Phase::kEmpty;
    case Phase::kActive:
      return to == Phase::kBroken || to == Phase::kSetup;  // abort, barrier
    case Phase::kBroken:
      return to == Phase::kSetup || to == Phase::kEmpty;  // barrier, all gone
    case Phase::kRebuild:  // rebuilt and resumed, rebuilt broken, or no epoch to rebuild
      return to == Phase::kActive || to == Phase::kBroken || to == Phase::kEmpty;
  }
  return false;
}

bool IsLiveMember(PeerState s) {
  switch (s) {
    case PeerState::kHandshaking:
    case PeerState::kPending:
      return false;
    case PeerState::kProposed:
    case PeerState::kReady:
    case PeerState::kMember:
      return true;
  }
  return false;
}

struct OpKey {
  std::uint64_t tag = 0;
  std::uint64_t seq = 0;
  auto operator<=>(const OpKey&) const = default;
};

struct OpRecord {
  std::vector<bool> reported;  // by rank
  std::uint32_t reported_count = 0;
};

// The SyncReports received for one shared-state sync that has not been planned yet.
struct SyncRecord {
  std::vector<std::optional<net::SyncReport>> reports;  // by rank
  std::uint32_t reported_count = 0;
};

// A sync whose plan is out: what its commit changes.
struct PlannedSync {
  bool any_admitted = false;
  std::uint64_t revision = 0;            // the group's revision once it commits
  std::vector<ConnId> refused;           // demoted once it commits (choice 11)
  std::vector<net::SyncPlan> refusals;   // their plans, for the code and reason
};

struct Peer {
  ConnId conn = 0;
  PeerState state = PeerState::kHandshaking;
  PeerId id = 0;  // from Hello
  std::string host;
  std::uint16_t data_port = 0;
  TimeMs connected_ms = 0;
  TimeMs last_recv_ms = 0;
  TimeMs last_sent_ms = 0;
  std::uint64_t arrival = 0;          // order of the pending queue: larger is later
  std::uint32_t rank = 0;             // index in the current epoch while a live member
  bool in_barrier = false;            // kMember: has sent UpdateTopology for the current epoch
  std::uint64_t next_sync_seq = 0;    // kMember: the seq its next SyncReport must carry (choice 13)
  std::uint64_t proposed_epoch = 0;   // the highest epoch proposed to this peer
  std::uint64_t committed_epoch = 0;  // the highest epoch committed with this peer as a member
  std::optional<net::Rejoin> rejoin;  // its rejoin report, until the rebuild it is part of ends
};

// A connection id no connection has: the slot of a member of a rebuilt epoch that did not report.
constexpr ConnId kNoConn = ~ConnId{0};
// Rejoin reports naming epochs above this are refused, so that epoch numbers can never wrap.
constexpr std::uint64_t kEpochReportedMax = std::uint64_t{1} << 62;

struct Epoch {
  std::uint64_t number = 0;
  std::vector<net::Member> members;  // ring order, as proposed
  std::vector<ConnId> conns;         // conns[r] is the connection of members[r]
  TimeMs setup_deadline_ms = 0;      // kSetup
  bool barrier_open = false;         // kActive/kBroken: some live member has entered
  TimeMs barrier_first_ms = 0;       // when the first one did
  net::EpochAbort abort;             // kBroken: the abort reason
  std::map<OpKey, OpRecord> ops;     // kActive: open ops
  std::map<std::uint64_t, SyncRecord> syncs;      // kActive: syncs awaiting reports, by seq
  std::map<std::uint64_t, PlannedSync> planned;   // kActive: planned syncs awaiting results
};

}  // namespace

struct Coordinator::Impl {
  explicit Impl(Config c) : config(std::move(c)) {}

  Config config;
  std::map<ConnId, Peer> peers;      // one record per connection
  std::map<PeerId, ConnId> conn_of;  // index: welcomed peers by id
  Phase phase = Phase::kEmpty;
  Epoch epoch;
  std::uint64_t highest_epoch = 0;
  std::uint64_t arrivals = 0;
  // The group's shared-state revision after its last committed sync, and the peers that hold it
  // (the admitted members of that sync, while they stay members); none before the first sync and
  // once no holder is left (choice 12).
  std::optional<std::uint64_t> revision;
  std::set<PeerId> revision_holders;
  // kRebuild: the ids of every member of the epochs reported so far, and the ids that reported.
  std::set<PeerId> rebuild_expected;
  std::set<PeerId> rebuild_reported;
  std::vector<net::Rejoin> departed_reports;  // of reporters that left during the rebuild
  // The epochs this incarnation aborted itself, newest kept (choice 14): a quorum coordinator may
  // rebuild a group it aborted while its members were away, and its own abort outranks reports
  // from members that never received it.
  std::map<std::uint64_t, net::EpochAbort> own_aborts;
  static constexpr std::size_t kOwnAbortsKept = 64;
  bool replacing = false;                     // Admit is forgetting an old connection
  TimeMs rebuild_deadline_ms = 0;
  std::optional<TimeMs> hold_until_ms;  // choice 15; set at the first event
  // Choice 16: the newest committed epoch known, and its ring; when pending peers started waiting
  // without a quorum.
  std::optional<std::pair<std::uint64_t, std::vector<PeerId>>> lineage;
  TimeMs no_quorum_since_ms = 0;
  TimeMs now_ms = 0;
  std::vector<Output>* out = nullptr;  // set for the duration of one event

  // ---- Entry points --------------------------------------------------------------------------

  void Begin(TimeMs now, std::vector<Output>* o) {
    SHOAL_CHECK(o != nullptr);
    now_ms = now;
    out = o;
    if (!hold_until_ms) hold_until_ms = now + config.startup_hold_ms;
  }

  void Connect(ConnId conn) {
    SHOAL_CHECK_MSG(peers.find(conn) == peers.end(), "ConnId reused");
    Peer p;
    p.conn = conn;
    p.connected_ms = now_ms;
    p.last_recv_ms = now_ms;
    p.last_sent_ms = now_ms;
    peers.emplace(conn, std::move(p));
  }

  void Receive(ConnId conn, const net::Message& message) {
    auto it = peers.find(conn);
    if (it == peers.end()) return;  // closed and forgotten; the shell may still deliver
    Peer& p = it->second;
    p.last_recv_ms = now_ms;
    std::visit([&](const auto& m) { On(p, m); }, message);
  }

  void Disconnect(ConnId conn) {
    if (peers.find(conn) == peers.end()) return;
    Forget(conn, SHOAL_ERR_PEER_LOST, /*emit_close=*/false);
  }

  void Tick() {
    // Lost connections first, so that an abort names a dead member before anything else.
    std::vector<ConnId> expired;
    for (const auto& [conn, p] : peers) {
      if (p.state == PeerState::kHandshaking) {
        if (now_ms - p.connected_ms >= config.hello_timeout_ms) expired.push_back(conn);
      } else if (now_ms - p.last_recv_ms >= config.heartbeat_timeout_ms) {
        expired.push_back(conn);
      }
    }
    for (ConnId conn : expired) {
      if (peers.find(conn) != peers.end()) Forget(conn, SHOAL_ERR_PEER_LOST, /*emit_close=*/true);
    }
    switch (phase) {
      case Phase::kEmpty:
        ProposeToEmptyGroup();  // the startup hold may have ended
        break;
      case Phase::kRebuild:
        if (now_ms >= rebuild_deadline_ms) FinishRebuild();
        break;
      case Phase::kSetup:
        if (now_ms >= epoch.setup_deadline_ms) {
          std::vector<ConnId> late;
          for (ConnId c : LiveMembers()) {
            if (peers.at(c).state == PeerState::kProposed) late.push_back(c);
          }
          SHOAL_CHECK_MSG(!late.empty(), "a setup with every member ready must have committed");
          FailSetup(late, SHOAL_ERR_TIMEOUT, "epoch setup timed out");
        }
        break;
      case Phase::kActive:
      case Phase::kBroken:
        MaybeCompleteBarrier();
        break;
    }
    for (auto& [conn, p] : peers) {
      if (p.state == PeerState::kHandshaking) continue;
      if (now_ms - p.last_sent_ms >= config.heartbeat_interval_ms) Send(p, net::Heartbeat{});
    }
  }

  // ---- Dispatch: one handler per message a peer may send, one reject path for the rest ----

  template <class T>
  void On(Peer& p, const T& m) {
    Refuse(p, std::string(net::MsgTypeName(net::TypeOf(net::Message(m)))) +
                  " is never sent to the coordinator");
  }

  void On(Peer& p, const net::Hello& m) {
    switch (p.state) {
      case PeerState::kHandshaking:
        Admit(p, m);
        return;
      case PeerState::kPending:
      case PeerState::kProposed:
      case PeerState::kReady:
      case PeerState::kMember:
        Refuse(p, "second Hello on a connection");
        return;
    }
  }

  void On(Peer& p, const net::Heartbeat&) {
    switch (p.state) {
      case PeerState::kHandshaking:
        Refuse(p, "Heartbeat before Hello");
        return;
      case PeerState::kPending:
      case PeerState::kProposed:
      case PeerState::kReady:
      case PeerState::kMember:
        return;  // arrival time already noted
    }
  }

  void On(Peer& p, const net::UpdateTopology& m) {
    if (Reporting(p, m.epoch)) {
      p.rejoin->in_barrier = p.rejoin->committed;
      return;
    }
    switch (p.state) {
      case PeerState::kHandshaking:
        Refuse(p, "UpdateTopology before Hello");
        return;
      case PeerState::kPending:
      case PeerState::kProposed:
      case PeerState::kReady:
        StaleUpdateTopology(p, m.epoch);
        return;
      case PeerState::kMember:
        if (m.epoch != epoch.number) {
          StaleUpdateTopology(p, m.epoch);
        } else if (p.in_barrier) {
          Refuse(p, "second UpdateTopology in one barrier");
        } else {
          EnterBarrier(p);
        }
        return;
    }
  }

  void On(Peer& p, const net::EpochReady& m) {
    if (Reporting(p, m.epoch)) return;  // that proposal is gone with the old coordinator
    if (p.state == PeerState::kHandshaking) return Refuse(p, "EpochReady before Hello");
    if (m.epoch > p.proposed_epoch)
      return Refuse(p, "EpochReady for an epoch never proposed to it");
    if (!m.ok && m.code == SHOAL_OK) return Refuse(p, "failed EpochReady with code OK");
    if (m.epoch != epoch.number) return;  // stale: that proposal is gone
    switch (p.state) {
      case PeerState::kHandshaking:
        return;  // handled above
      case PeerState::kPending:
        return;  // demoted from that proposal: stale
      case PeerState::kProposed:
        if (m.ok) {
          Ready(p);
        } else {
          ReadyFailed(p, m);
        }
        return;
      case PeerState::kReady:
      case PeerState::kMember:
        Refuse(p, "second EpochReady for one proposal");
        return;
    }
  }

  void On(Peer& p, const net::OpResult& m) {
    if (Reporting(p, m.epoch)) {
      // A sync's result does not say which revision it commits to: it stays unresolved.
      if (m.tag == net::kSharedStateTag) return;
      bool listed = false;
      for (net::RejoinOp& op : p.rejoin->ops) {
        if (op.tag != m.tag || op.seq != m.seq) continue;
        listed = true;
        if (op.state == net::RejoinOpState::kRunning) op.state = net::RejoinOpState::kDone;
      }
      // An op started after the report (the epoch went on on the data plane): now done.
      if (!listed && m.seq >= NextSeq(*p.rejoin, m.tag) &&
          p.rejoin->ops.size() < limits::kOpsInFlightMax) {
        p.rejoin->ops.push_back(net::RejoinOp{m.tag, m.seq, net::RejoinOpState::kDone, 0, 0});
        SetNextSeq(&*p.rejoin, m.tag, m.seq + 1);
      }
      return MaybeFinishRebuild();
    }
    switch (p.state) {
      case PeerState::kHandshaking:
        Refuse(p, "OpResult before Hello");
        return;
      case PeerState::kPending:
      case PeerState::kProposed:
      case PeerState::kReady:
        if (m.epoch > p.committed_epoch) Refuse(p, "OpResult for an epoch it was never in");
        return;  // else stale: ignored
      case PeerState::kMember:
        if (m.epoch > epoch.number) return Refuse(p, "OpResult for a future epoch");
        if (m.epoch < epoch.number || phase == Phase::kBroken) return;  // stale or aborted
        SHOAL_CHECK(phase == Phase::kActive);
        if (m.tag == net::kSharedStateTag && epoch.planned.count(m.seq) == 0) {
          return Refuse(p, "OpResult for a shared-state sync that has no plan");
        }
        RecordResult(p, OpKey{m.tag, m.seq});
        return;
    }
  }

  void On(Peer& p, const net::SyncReport& m) {
    if (Reporting(p, m.epoch)) return;  // its sync is a running op of the report: unresolved
    switch (p.state) {
      case PeerState::kHandshaking:
        Refuse(p, "SyncReport before Hello");
        return;
      case PeerState::kPending:
      case PeerState::kProposed:
      case PeerState::kReady:
        if (m.epoch > p.committed_epoch) Refuse(p, "SyncReport for an epoch it was never in");
        return;  // else stale: ignored
      case PeerState::kMember:
        if (m.epoch > epoch.number) return Refuse(p, "SyncReport for a future epoch");
        if (m.epoch < epoch.number || phase == Phase::kBroken) return;  // stale or aborted
        SHOAL_CHECK(phase == Phase::kActive);
        RecordSyncReport(p, m);
        return;
    }
  }

  void On(Peer& p, const net::EpochFault& m) {
    if (Reporting(p, m.epoch)) {
      if (m.code == SHOAL_OK) return Refuse(p, "EpochFault with code OK");
      if (!p.rejoin->fault_sent) {
        p.rejoin->fault_sent = true;
        p.rejoin->fault_code = m.code;
        p.rejoin->fault_suspect = m.suspect;
      }
      return MaybeFinishRebuild();
    }
    switch (p.state) {
      case PeerState::kHandshaking:
        Refuse(p, "EpochFault before Hello");
        return;
      case PeerState::kPending:
      case PeerState::kProposed:
      case PeerState::kReady:
        if (m.epoch > p.committed_epoch) Refuse(p, "EpochFault for an epoch it was never in");
        return;  // else stale: ignored
      case PeerState::kMember:
        if (m.epoch > epoch.number) return Refuse(p, "EpochFault for a future epoch");
        if (m.code == SHOAL_OK) return Refuse(p, "EpochFault with code OK");
        if (m.epoch < epoch.number || phase == Phase::kBroken) return;  // stale or already broken
        SHOAL_CHECK(phase == Phase::kActive);
        Break(m.code, FaultSuspect(p, m));
        return;
    }
  }

  void On(Peer& p, const net::Leave&) {
    switch (p.state) {
      case PeerState::kHandshaking:
        Refuse(p, "Leave before Hello");
        return;
      case PeerState::kPending:
      case PeerState::kProposed:
      case PeerState::kReady:
      case PeerState::kMember:
        Forget(p.conn, SHOAL_ERR_PEER_LEFT, /*emit_close=*/true);
        return;
    }
  }

  // ---- Admission -----------------------------------------------------------------------------

  void Admit(Peer& p, const net::Hello& m) {
    if (m.peer_id == 0) return RejectAndClose(p, SHOAL_ERR_PROTOCOL, "peer id 0 is reserved");
    if (m.rejoin) {
      const net::Rejoin& j = *m.rejoin;
      std::set<PeerId> unique(j.members.begin(), j.members.end());
      // Every epoch number a report carries feeds highest_epoch (NoteEpochs), which must never wrap.
      if (std::max({j.epoch, j.last_epoch, j.seen_epoch}) > kEpochReportedMax) {
        return RejectAndClose(p, SHOAL_ERR_PROTOCOL, "rejoin report names an impossible epoch");
      }
      if (unique.size() != j.members.size() || (j.epoch != 0 && unique.count(m.peer_id) == 0)) {
        return RejectAndClose(p, SHOAL_ERR_PROTOCOL,
                              "rejoin report: members repeat or do not include the peer");
      }
    }
    if (auto old = conn_of.find(m.peer_id); old != conn_of.end()) {
      if (!m.rejoin) {
        return RejectAndClose(p, SHOAL_ERR_REJECTED, "a live connection has this peer id");
      }
      // The peer lost this connection and made a new one: the old one is lost (choice 14). An
      // emptied group waits for the end of this Admit, whose report may name higher epochs.
      replacing = true;
      Forget(old->second, SHOAL_ERR_PEER_LOST, /*emit_close=*/true);
      replacing = false;
    }
    if (PendingInOrder().size() >= config.max_pending) {
      return RejectAndClose(p, SHOAL_ERR_REJECTED, "too many pending peers");
    }
    p.id = m.peer_id;
    p.host = m.host;
    p.data_port = m.data_port;
    conn_of.emplace(p.id, p.conn);
    MovePeer(p, PeerState::kPending);
    p.arrival = ++arrivals;
    Send(p, net::Welcome{p.id, config.heartbeat_interval_ms, config.heartbeat_timeout_ms});
    if (m.rejoin) {
      p.rejoin = m.rejoin;
      p.proposed_epoch = m.rejoin->epoch;
      p.committed_epoch = m.rejoin->committed ? m.rejoin->epoch : 0;
      Learn(m.rejoin->last_epoch, m.rejoin->last_ring);
    }
    switch (phase) {
      case Phase::kEmpty:
        if (p.rejoin && (p.rejoin->epoch > highest_epoch || Regroups(*p.rejoin))) {
          return StartRebuild(p);
        }
        EndRejoin(p);
        ProposeToEmptyGroup();
        return;
      case Phase::kRebuild:
        if (p.rejoin) AddToRebuild(p);
        MaybeFinishRebuild();
        return;
      case Phase::kSetup:
      case Phase::kActive:
      case Phase::kBroken:
        EndRejoin(p);
        return;  // waits for the next barrier
    }
  }

  // ---- Rebuilding a group after a restart (choice 14) ---------------------------------------

  // Whether `p` is a reporter of the rebuild in progress and `epoch` is the one it reported:
  // then its message updates its report.
  bool Reporting(const Peer& p, std::uint64_t e) const {
    return phase == Phase::kRebuild && p.rejoin && p.state == PeerState::kPending &&
           e == p.rejoin->epoch && e != 0;
  }

  // Epochs proposed later are above every epoch a report names.
  void NoteEpochs(const net::Rejoin& j) {
    highest_epoch = std::max({highest_epoch, j.epoch, j.last_epoch, j.seen_epoch});
  }

  // Choice 16: a committed epoch named in a report moves the lineage on if it is newer.
  void Learn(std::uint64_t e, const std::vector<PeerId>& ring) {
    if (e == 0 || ring.empty()) return;
    if (!lineage || e > lineage->first) lineage = std::make_pair(e, ring);
  }

  // Whether `ids` hold a strict majority of the lineage's ring (always, without quorum).
  bool HasQuorum(const std::vector<PeerId>& ids) const {
    if (!config.quorum || !lineage) return true;
    std::size_t in = 0;
    for (PeerId id : lineage->second) {
      in += std::find(ids.begin(), ids.end(), id) != ids.end();
    }
    return 2 * in > lineage->second.size();
  }
  bool HasQuorumOf(const std::vector<ConnId>& conns) const {
    std::vector<PeerId> ids;
    for (ConnId c : conns) ids.push_back(peers.at(c).id);
    return HasQuorum(ids);
  }

  // With quorum, a coordinator whose group emptied rebuilds from a member of the lineage's epoch
  // (or a newer one) even if it used that number itself: that peer may come from a standby that
  // resumed it.
  bool Regroups(const net::Rejoin& j) const {
    return config.quorum && lineage && j.committed && j.epoch >= lineage->first;
  }

  // Choice 16: no majority here. Every live member and pending peer is given up, so that they
  // find the coordinator that has the majority; the group is empty.
  void GiveUpGroup() {
    if (phase == Phase::kActive) Break(SHOAL_ERR_COORDINATOR_LOST, 0);
    std::vector<ConnId> all = LiveMembers();
    for (ConnId c : PendingInOrder()) all.push_back(c);
    for (ConnId c : all) {
      Peer& q = peers.at(c);
      if (IsLiveMember(q.state)) {
        LoseHolder(q.id);
        MovePeer(q, PeerState::kPending);
      }
      q.rejoin.reset();
      Send(q, net::Removed{SHOAL_ERR_COORDINATOR_LOST,
                           "this coordinator has no majority of the group; look for another"});
    }
    for (ConnId c : all) Forget(c, SHOAL_ERR_PEER_LOST, /*emit_close=*/true);
    if (phase != Phase::kEmpty) {
      MovePhase(Phase::kEmpty);
      std::uint64_t last = epoch.number;
      epoch = Epoch{};
      epoch.number = last;
    }
    revision.reset();
    revision_holders.clear();
    no_quorum_since_ms = 0;
  }

  // A rejoin report that is not part of a rebuild: a peer the group went on without.
  void EndRejoin(Peer& p) {
    if (!p.rejoin) return;
    NoteEpochs(*p.rejoin);
    if (p.rejoin->epoch != 0) {
      Send(p, net::Removed{SHOAL_ERR_COORDINATOR_LOST,
                           "the coordinator changed and the group went on without this peer"});
    }
    p.rejoin.reset();
  }

  void StartRebuild(Peer& p) {
    MovePhase(Phase::kRebuild);
    rebuild_deadline_ms = now_ms + config.rebuild_timeout_ms;
    rebuild_expected.clear();
    rebuild_reported.clear();
    departed_reports.clear();
    AddToRebuild(p);
    MaybeFinishRebuild();
  }

  void AddToRebuild(const Peer& p) {
    rebuild_reported.insert(p.id);
    rebuild_expected.insert(p.rejoin->members.begin(), p.rejoin->members.end());
    if (config.quorum) {  // wait for the newest epoch's members too: they make the majority
      rebuild_expected.insert(p.rejoin->last_ring.begin(), p.rejoin->last_ring.end());
    }
  }

  // Finishes the rebuild once every expected peer reported, unless a collective is still running
  // on a reporter's data plane with nothing wrong reported: it may finish (and then commit, and
  // the epoch resume) before the rebuild deadline.
  void MaybeFinishRebuild() {
    SHOAL_CHECK(phase == Phase::kRebuild);
    for (PeerId id : rebuild_expected) {
      if (rebuild_reported.count(id) == 0) return;
    }
    bool running = false;
    for (const auto& [conn, q] : peers) {
      if (q.state != PeerState::kPending || !q.rejoin) continue;
      if (q.rejoin->broken || q.rejoin->fault_sent) return FinishRebuild();
      for (const net::RejoinOp& op : q.rejoin->ops) {
        if (op.state != net::RejoinOpState::kRunning) continue;
        // A sync waits for a plan that only a coordinator can make: it will not finish.
        if (op.tag == net::kSharedStateTag) return FinishRebuild();
        running = true;
      }
    }
    if (!running) FinishRebuild();
  }

  static std::uint64_t NextSeq(const net::Rejoin& j, std::uint64_t tag) {
    for (const net::TagSeq& t : j.next_seq) {
      if (t.tag == tag) return t.next_seq;
    }
    return 0;
  }
  static void SetNextSeq(net::Rejoin* j, std::uint64_t tag, std::uint64_t next) {
    for (net::TagSeq& t : j->next_seq) {
      if (t.tag == tag) {
        t.next_seq = std::max(t.next_seq, next);
        return;
      }
    }
    if (j->next_seq.size() < limits::kTagsPerEpochMax) j->next_seq.push_back(net::TagSeq{tag, next});
  }
  static const net::RejoinOp* FindOp(const net::Rejoin& j, const OpKey& key) {
    for (const net::RejoinOp& op : j.ops) {
      if (op.tag == key.tag && op.seq == key.seq) return &op;
    }
    return nullptr;
  }
  // Op `key` of the reported epoch committed on this member: it started it and has no op of that
  // key left without a verdict.
  static bool CommittedAt(const net::Rejoin& j, const OpKey& key) {
    return key.seq < NextSeq(j, key.tag) && FindOp(j, key) == nullptr;
  }

  // Choice 16: whether the peers here (all pending during a rebuild) hold a majority of the
  // lineage: then no other coordinator can move the group on.
  bool RebuildHasQuorum() const { return HasQuorumOf(PendingInOrder()); }

  void FinishRebuild() {
    SHOAL_CHECK(phase == Phase::kRebuild);
    for (const auto& [conn, q] : peers) {
      if (q.state == PeerState::kPending && q.rejoin) NoteEpochs(*q.rejoin);
    }
    if (!RebuildHasQuorum()) {
      MovePhase(Phase::kEmpty);
      return GiveUpGroup();
    }
    std::vector<Peer*> reporters;
    for (auto& [conn, q] : peers) {
      if (q.state == PeerState::kPending && q.rejoin) reporters.push_back(&q);
    }
    std::sort(reporters.begin(), reporters.end(),
              [](const Peer* a, const Peer* b) { return a->arrival < b->arrival; });
    const net::Rejoin* chosen = nullptr;
    for (Peer* q : reporters) {
      if (q->rejoin->committed && (!chosen || q->rejoin->epoch > chosen->epoch)) {
        chosen = &*q->rejoin;
      }
    }
    if (!chosen) {  // nobody was a committed member: start as an empty group
      MovePhase(Phase::kEmpty);
      RebuildRevision(reporters);
      for (Peer* q : reporters) EndRejoin(*q);
      return ProposeToEmptyGroup();
    }
    const std::uint64_t e = chosen->epoch;
    const std::vector<PeerId> ring = chosen->members;
    Learn(e, ring);
    epoch = Epoch{};
    epoch.number = e;
    std::vector<Peer*> members;
    PeerId missing = 0;         // first member that did not report
    bool member_elsewhere = false;  // a member reported, but not as a member of this epoch
    for (std::uint32_t r = 0; r < ring.size(); ++r) {
      auto it = conn_of.find(ring[r]);
      Peer* q = it == conn_of.end() ? nullptr : &peers.at(it->second);
      bool in = q && q->state == PeerState::kPending && q->rejoin && q->rejoin->committed &&
                q->rejoin->epoch == e && q->rejoin->members == ring;
      if (in) {
        MovePeer(*q, PeerState::kMember);
        q->rank = r;
        q->committed_epoch = e;
        q->in_barrier = q->rejoin->in_barrier;
        q->next_sync_seq = NextSeq(*q->rejoin, net::kSharedStateTag);
        members.push_back(q);
        epoch.members.push_back(net::Member{q->id, q->host, q->data_port});
        epoch.conns.push_back(q->conn);
      } else {
        if (!q && missing == 0) missing = ring[r];
        if (q) member_elsewhere = true;
        epoch.members.push_back(net::Member{ring[r], "", 0});
        epoch.conns.push_back(kNoConn);
      }
    }
    // Verdicts of the ops some member has no verdict for.
    std::set<OpKey> keys;
    for (Peer* q : members) {
      for (const net::RejoinOp& op : q->rejoin->ops) keys.insert(OpKey{op.tag, op.seq});
    }
    bool all_back = members.size() == ring.size();
    bool unresolved = false;
    std::optional<net::EpochAbort> own_abort;  // this incarnation aborted the epoch itself
    if (auto it = own_aborts.find(e); it != own_aborts.end()) own_abort = it->second;
    // Reporters that left during the rebuild: their commits and aborts are facts (choice 14).
    std::vector<const net::Rejoin*> departed;
    for (const net::Rejoin& j : departed_reports) {
      if (j.committed && j.epoch == e && j.members == ring) departed.push_back(&j);
    }
    for (const OpKey& key : keys) {
      bool committed = false;
      for (const net::Rejoin* j : departed) committed = committed || CommittedAt(*j, key);
      bool all_done = all_back;
      for (Peer* q : members) {
        const net::RejoinOp* op = FindOp(*q->rejoin, key);
        bool at = CommittedAt(*q->rejoin, key);
        committed = committed || at;
        all_done = all_done && (at || (op && op->state == net::RejoinOpState::kDone));
      }
      // Ops the abort caught fail even where they finished: some member may have seen the abort.
      if (!committed && (!all_done || own_abort)) {
        unresolved = true;
        continue;
      }
      for (Peer* q : members) {
        const net::RejoinOp* op = FindOp(*q->rejoin, key);
        if (!op) continue;
        if (op->state != net::RejoinOpState::kDone) {
          unresolved = true;  // failed here, or not finished: it ends with the abort
          continue;
        }
        Send(*q, net::OpCommit{e, key.tag, key.seq});
        if (key.tag == net::kSharedStateTag) {
          q->rejoin->has_revision = true;
          q->rejoin->revision = op->revision;
          q->rejoin->state_digest = op->digest;
        }
      }
    }
    RebuildRevision(members);
    std::optional<net::EpochAbort> abort = own_abort;
    for (Peer* q : members) {
      if (q->rejoin->broken && !abort) {
        abort = net::EpochAbort{e, q->rejoin->abort_code, q->rejoin->abort_lost};
      }
    }
    for (const net::Rejoin* j : departed) {
      if (j->broken && !abort) abort = net::EpochAbort{e, j->abort_code, j->abort_lost};
    }
    if (!abort && missing != 0) abort = net::EpochAbort{e, SHOAL_ERR_PEER_LOST, missing};
    for (Peer* q : members) {
      if (q->rejoin->fault_sent && !abort) {
        abort = net::EpochAbort{e, q->rejoin->fault_code, q->rejoin->fault_suspect};
      }
    }
    if (!abort && (member_elsewhere || unresolved)) {
      abort = net::EpochAbort{e, SHOAL_ERR_COORDINATOR_LOST, 0};
    }
    if (abort && abort->code == SHOAL_OK) abort->code = SHOAL_ERR_COORDINATOR_LOST;
    if (abort) {
      MovePhase(Phase::kBroken);
      epoch.abort = *abort;
      RememberAbort(*abort);
      for (Peer* q : members) Send(*q, *abort);
    } else {
      MovePhase(Phase::kActive);
    }
    for (Peer* q : reporters) {
      if (q->state == PeerState::kMember) {
        q->rejoin.reset();
      } else {
        EndRejoin(*q);
      }
    }
    for (Peer* q : members) {
      if (q->in_barrier && !epoch.barrier_open) {
        epoch.barrier_open = true;
        epoch.barrier_first_ms = now_ms;
      }
    }
    MaybeCompleteBarrier();
  }

  // The group's revision from the reports of `holders_from`: the highest committed revision
  // reported, held by the members at it with the most common state digest (ties: the earliest).
  void RebuildRevision(const std::vector<Peer*>& holders_from) {
    revision.reset();
    revision_holders.clear();
    std::optional<std::uint64_t> top;
    for (const Peer* q : holders_from) {
      if (q->rejoin->has_revision && (!top || q->rejoin->revision > *top)) {
        top = q->rejoin->revision;
      }
    }
    if (!top) return;
    std::map<std::uint64_t, std::size_t> votes;
    std::optional<std::uint64_t> best;
    for (const Peer* q : holders_from) {
      if (!q->rejoin->has_revision || q->rejoin->revision != *top) continue;
      std::size_t v = ++votes[q->rejoin->state_digest];
      if (!best || v > votes[*best]) best = q->rejoin->state_digest;
    }
    revision = top;
    for (const Peer* q : holders_from) {
      if (q->rejoin->has_revision && q->rejoin->revision == *top &&
          q->rejoin->state_digest == *best) {
        revision_holders.insert(q->id);
      }
    }
  }

  void RejectAndClose(Peer& p, shoal_status code, const char* reason) {
    Send(p, net::Reject{code, reason});
    Forget(p.conn, SHOAL_ERR_PEER_LOST, /*emit_close=*/true);
  }

  // ---- Barrier -------------------------------------------------------------------------------

  void StaleUpdateTopology(Peer& p, std::uint64_t e) {
    if (e > p.committed_epoch) return Refuse(p, "UpdateTopology for an epoch it was never in");
    Send(p, net::Error{SHOAL_ERR_EPOCH_CHANGED,
                       "UpdateTopology for epoch " + std::to_string(e) + " which is over"});
  }

  void EnterBarrier(Peer& p) {
    p.in_barrier = true;
    if (!epoch.barrier_open) {
      epoch.barrier_open = true;
      epoch.barrier_first_ms = now_ms;
    }
    MaybeCompleteBarrier();
  }

  // Completes the barrier if every live member is in it, or if its deadline passed.
  void MaybeCompleteBarrier() {
    SHOAL_CHECK(phase == Phase::kActive || phase == Phase::kBroken);
    if (!epoch.barrier_open) return;
    std::vector<ConnId> arrived;
    std::vector<ConnId> late;
    for (ConnId c : LiveMembers()) (peers.at(c).in_barrier ? arrived : late).push_back(c);
    if (arrived.empty()) {  // every member that entered is gone: start over
      epoch.barrier_open = false;
      return;
    }
    if (!late.empty() && now_ms < epoch.barrier_first_ms + config.barrier_timeout_ms) return;
    CompleteBarrier(arrived, late);
  }

  void CompleteBarrier(const std::vector<ConnId>& arrived, const std::vector<ConnId>& late) {
    std::vector<ConnId> next = arrived;
    std::vector<ConnId> over;  // arrived members beyond max_members (a group rebuilt by a
                               // coordinator with a smaller max_members): they wait as pending
    if (next.size() > config.max_members) {
      over.assign(next.begin() + static_cast<std::ptrdiff_t>(config.max_members), next.end());
      next.resize(config.max_members);
    }
    for (ConnId c : PendingInOrder()) {  // before the late ones join the queue
      if (next.size() >= config.max_members) break;
      next.push_back(c);
    }
    if (!late.empty()) {
      if (phase == Phase::kActive) Break(SHOAL_ERR_TIMEOUT, peers.at(late.front()).id);
      for (ConnId c : late) Demote(peers.at(c), SHOAL_ERR_TIMEOUT, "late to update_topology");
    }
    if (!over.empty()) {
      if (phase == Phase::kActive) Break(SHOAL_ERR_EPOCH_CHANGED, peers.at(over.front()).id);
      for (ConnId c : over) Demote(peers.at(c), SHOAL_ERR_REJECTED, "the group is above max_members");
    }
    if (!HasQuorumOf(next)) return GiveUpGroup();  // choice 16
    if (phase == Phase::kActive && SameMembers(next)) {
      epoch.barrier_open = false;
      for (ConnId c : arrived) {
        Peer& q = peers.at(c);
        q.in_barrier = false;
        Send(q, net::TopologyUnchanged{epoch.number});
      }
      return;
    }
    Propose(next);
  }

  bool SameMembers(const std::vector<ConnId>& next) const {
    if (next.size() != epoch.members.size()) return false;
    for (std::size_t r = 0; r < next.size(); ++r) {
      if (peers.at(next[r]).id != epoch.members[r].peer_id) return false;
    }
    return true;
  }

  // ---- Epoch setup ---------------------------------------------------------------------------

  void ProposeToEmptyGroup() {
    SHOAL_CHECK(phase == Phase::kEmpty);
    if (replacing) return;
    if (hold_until_ms && now_ms < *hold_until_ms) return;  // choice 15
    std::vector<ConnId> next = PendingInOrder();
    if (next.empty()) return;
    if (config.standby && !lineage) return;  // choice 16: a standby's group comes from a rebuild
    if (!HasQuorumOf(next)) {  // choice 16: wait a while for the majority, then give up
      if (no_quorum_since_ms == 0) no_quorum_since_ms = now_ms;
      if (now_ms - no_quorum_since_ms >= config.rebuild_timeout_ms) GiveUpGroup();
      return;
    }
    no_quorum_since_ms = 0;
    if (next.size() > config.max_members) next.resize(config.max_members);
    Propose(next);
  }

  // Proposes a new epoch made of `next` (ring order). Every live member must be in it.
  void Propose(const std::vector<ConnId>& next) {
    SHOAL_CHECK(!next.empty() && next.size() <= config.max_members);
    for (ConnId c : LiveMembers()) {
      SHOAL_CHECK_MSG(std::find(next.begin(), next.end(), c) != next.end(),
                      "a live member left out of a proposal must be demoted first");
    }
    MovePhase(Phase::kSetup);
    epoch = Epoch{};
    epoch.number = ++highest_epoch;
    epoch.setup_deadline_ms = now_ms + config.setup_timeout_ms;
    net::EpochPropose proposal;
    proposal.epoch = epoch.number;
    proposal.streams_per_link = config.streams_per_link;
    proposal.segment_bytes = config.segment_bytes;
    for (std::size_t r = 0; r < next.size(); ++r) {
      Peer& q = peers.at(next[r]);
      MovePeer(q, PeerState::kProposed);
      q.rank = static_cast<std::uint32_t>(r);
      q.in_barrier = false;
      q.next_sync_seq = 0;
      q.proposed_epoch = epoch.number;
      proposal.members.push_back(net::Member{q.id, q.host, q.data_port});
      epoch.conns.push_back(q.conn);
    }
    epoch.members = proposal.members;
    for (ConnId c : next) Send(peers.at(c), proposal);
  }

  void Ready(Peer& p) {
    MovePeer(p, PeerState::kReady);
    for (ConnId c : LiveMembers()) {
      if (peers.at(c).state != PeerState::kReady) return;
    }
    Commit();
  }

  void ReadyFailed(Peer& p, const net::EpochReady& m) {
    // The named suspect if it is in this proposal, else the reporter (choice 5).
    ConnId suspect = p.conn;
    for (ConnId c : LiveMembers()) {
      if (peers.at(c).id == m.suspect) suspect = c;
    }
    FailSetup({suspect}, m.code, "could not set up the data connections of the epoch");
  }

  void Commit() {
    MovePhase(Phase::kActive);
    // Holders are members (choice 12); after a rebuild without a committed member they may be
    // pending peers that this epoch did not take.
    for (auto it = revision_holders.begin(); it != revision_holders.end();) {
      bool member = std::any_of(epoch.members.begin(), epoch.members.end(),
                                [&](const net::Member& m) { return m.peer_id == *it; });
      it = member ? std::next(it) : revision_holders.erase(it);
    }
    if (revision_holders.empty()) revision.reset();
    // Choice 16: the lineage only moves forward. A report read while this epoch was being set up
    // may have named a newer epoch than this one (its proposal came first): that stays the
    // lineage, so the next proposal needs a majority of it, or the group is given up. Replacing it
    // let a group go on from its own older epoch without the newer one's majority (found by
    // tests/sim/standby_sim_test.cc, seeds 669, 1072 and 1829 of 2000).
    if (!lineage || epoch.number > lineage->first) {
      lineage = std::make_pair(epoch.number, std::vector<PeerId>());
      for (const net::Member& m : epoch.members) lineage->second.push_back(m.peer_id);
    }
    for (ConnId c : epoch.conns) {
      Peer& q = peers.at(c);  // every member of the proposal is live, or it would be re-proposed
      MovePeer(q, PeerState::kMember);
      q.committed_epoch = epoch.number;
    }
    for (ConnId c : epoch.conns) Send(peers.at(c), net::EpochCommit{epoch.number});
  }

  // Demotes `demoted` and proposes the rest of the proposal, or empties the group.
  void FailSetup(const std::vector<ConnId>& demoted, shoal_status code, const char* reason) {
    SHOAL_CHECK(phase == Phase::kSetup);
    for (ConnId c : demoted) Demote(peers.at(c), code, reason);
    std::vector<ConnId> rest = LiveMembers();
    if (rest.empty()) return EmptyGroup();
    if (!HasQuorumOf(rest)) return GiveUpGroup();  // choice 16
    Propose(rest);
  }

  void EmptyGroup() {
    SHOAL_CHECK(LiveMembers().empty());
    MovePhase(Phase::kEmpty);
    revision.reset();  // nobody holds the state any more (choice 12)
    revision_holders.clear();
    std::uint64_t last = epoch.number;
    epoch = Epoch{};
    epoch.number = last;
    ProposeToEmptyGroup();
  }

  // A holder of the group's revision is no longer a member: once none is left, nobody in the
  // group holds that revision and it is forgotten (choice 12).
  void LoseHolder(PeerId id) {
    if (revision_holders.erase(id) != 0 && revision_holders.empty()) revision.reset();
  }

  void Demote(Peer& q, shoal_status code, const char* reason) {
    LoseHolder(q.id);
    MovePeer(q, PeerState::kPending);
    q.in_barrier = false;
    q.arrival = ++arrivals;
    Send(q, net::Removed{code, reason});
  }

  // ---- Ops and the agreed outcome ------------------------------------------------------------

  void RecordResult(Peer& p, OpKey key) {
    auto it = epoch.ops.find(key);
    if (it == epoch.ops.end()) {
      if (epoch.ops.size() >= config.max_open_ops) {
        return Refuse(p, "more than max_open_ops ops awaiting results");
      }
      OpRecord record;
      record.reported.assign(epoch.members.size(), false);
      it = epoch.ops.emplace(key, std::move(record)).first;
    }
    OpRecord& record = it->second;
    SHOAL_CHECK(p.rank < record.reported.size());
    if (record.reported[p.rank]) return Refuse(p, "second OpResult for one op");
    record.reported[p.rank] = true;
    if (++record.reported_count < record.reported.size()) return;
    epoch.ops.erase(it);
    for (ConnId c : epoch.conns) {
      Send(peers.at(c), net::OpCommit{epoch.number, key.tag, key.seq});  // all live: unbroken
    }
    if (key.tag == net::kSharedStateTag && epoch.planned.count(key.seq) != 0) {
      SyncCommitted(key.seq);
    }
  }

  // ---- Shared-state syncs -------------------------------------------------------------------

  void RecordSyncReport(Peer& p, const net::SyncReport& m) {
    if (m.seq != p.next_sync_seq) {
      return Refuse(p, "SyncReport for sync " + std::to_string(m.seq) + " where sync " +
                           std::to_string(p.next_sync_seq) + " was next");
    }
    p.next_sync_seq++;
    if (epoch.planned.count(m.seq) != 0 ||
        epoch.ops.count(OpKey{net::kSharedStateTag, m.seq}) != 0) {
      return Refuse(p, "SyncReport for a sync that is already planned");
    }
    auto it = epoch.syncs.find(m.seq);
    if (it == epoch.syncs.end()) {
      if (epoch.syncs.size() >= limits::kOpenSyncsMax) {
        return Refuse(p, "more than " + std::to_string(limits::kOpenSyncsMax) +
                             " shared-state syncs awaiting reports");
      }
      SyncRecord record;
      record.reports.resize(epoch.members.size());
      it = epoch.syncs.emplace(m.seq, std::move(record)).first;
    }
    SyncRecord& record = it->second;
    SHOAL_CHECK(p.rank < record.reports.size());
    if (record.reports[p.rank].has_value()) return Refuse(p, "second SyncReport for one sync");
    record.reports[p.rank] = m;
    if (++record.reported_count < record.reports.size()) return;
    std::vector<MemberSyncReport> reports;
    for (std::size_t r = 0; r < record.reports.size(); ++r) {
      reports.push_back(MemberSyncReport{epoch.members[r].peer_id, std::move(*record.reports[r])});
    }
    epoch.syncs.erase(it);
    PlanAndSend(m.seq, reports);
  }

  // Elects, sends every member its plan, and opens the sync's op record. Refused members count as
  // reported: the commit waits only for the admitted ones.
  void PlanAndSend(std::uint64_t seq, const std::vector<MemberSyncReport>& reports) {
    SyncDecision d = PlanSync(reports, revision, SyncPlannerConfig{});
    SHOAL_CHECK(d.plans.size() == epoch.conns.size());
    PlannedSync planned;
    planned.any_admitted = d.any_admitted;
    planned.revision = d.revision;
    OpRecord record;
    record.reported.assign(epoch.members.size(), false);
    for (std::size_t r = 0; r < d.plans.size(); ++r) {
      net::SyncPlan& plan = d.plans[r];
      plan.epoch = epoch.number;
      plan.seq = seq;
      if (plan.code != SHOAL_OK) {
        record.reported[r] = true;
        record.reported_count++;
        planned.refused.push_back(epoch.conns[r]);
        planned.refusals.push_back(plan);
      }
      Send(peers.at(epoch.conns[r]), std::move(plan));
    }
    // Everyone refused: the same error reached every member and nothing changed; no commit.
    if (!d.any_admitted) return;
    epoch.ops.emplace(OpKey{net::kSharedStateTag, seq}, std::move(record));
    epoch.planned.emplace(seq, std::move(planned));
  }

  // A sync committed: the group is at its revision, and members refused in it leave the epoch
  // (choice 11).
  void SyncCommitted(std::uint64_t seq) {
    auto it = epoch.planned.find(seq);
    SHOAL_CHECK(it != epoch.planned.end());
    PlannedSync planned = std::move(it->second);
    epoch.planned.erase(it);
    revision = planned.revision;
    revision_holders.clear();
    for (ConnId c : epoch.conns) {
      if (std::find(planned.refused.begin(), planned.refused.end(), c) == planned.refused.end()) {
        revision_holders.insert(peers.at(c).id);
      }
    }
    if (planned.refused.empty()) return;
    const net::SyncPlan& first = planned.refusals.front();
    Break(first.code, peers.at(planned.refused.front()).id);
    for (std::size_t i = 0; i < planned.refused.size(); ++i) {
      Demote(peers.at(planned.refused[i]), planned.refusals[i].code,
             planned.refusals[i].reason.c_str());
    }
  }

  // The peer a fault is blamed on (choice 4): the suspect it names if that is a member; else, for a fault
  // about an op some members already finished (a peer whose deadline passed while it waited for
  // the verdict names no suspect), the nearest member before the reporter in ring order that has
  // not reported that op; else the reporter's previous neighbour.
  PeerId FaultSuspect(const Peer& reporter, const net::EpochFault& fault) const {
    for (const net::Member& m : epoch.members) {
      if (m.peer_id == fault.suspect && fault.suspect != 0) return fault.suspect;
    }
    std::size_t n = epoch.members.size();
    auto op = epoch.ops.find(OpKey{fault.tag, fault.seq});
    if (op != epoch.ops.end()) {
      for (std::size_t back = 1; back < n; back++) {
        std::size_t r = (reporter.rank + n - back) % n;
        if (!op->second.reported[r]) return epoch.members[r].peer_id;
      }
    }
    // A sync still waiting for reports waits on whoever has not sent one.
    auto sync = fault.tag == net::kSharedStateTag ? epoch.syncs.find(fault.seq) : epoch.syncs.end();
    if (sync != epoch.syncs.end()) {
      for (std::size_t back = 1; back < n; back++) {
        std::size_t r = (reporter.rank + n - back) % n;
        if (!sync->second.reports[r].has_value()) return epoch.members[r].peer_id;
      }
    }
    return epoch.members[(reporter.rank + n - 1) % n].peer_id;
  }

  // Breaks the committed epoch: every live member learns the reason once.
  void RememberAbort(const net::EpochAbort& a) {
    own_aborts[a.epoch] = a;
    if (own_aborts.size() > kOwnAbortsKept) own_aborts.erase(own_aborts.begin());
  }

  void Break(shoal_status code, PeerId lost) {
    MovePhase(Phase::kBroken);
    epoch.abort = net::EpochAbort{epoch.number, code, lost};
    RememberAbort(epoch.abort);
    epoch.ops.clear();
    epoch.syncs.clear();
    epoch.planned.clear();
    for (ConnId c : LiveMembers()) Send(peers.at(c), epoch.abort);
  }

  // ---- Losing a connection -------------------------------------------------------------------

  // Forgets the connection and carries out what losing it means for the group.
  void Forget(ConnId conn, shoal_status member_code, bool emit_close) {
    auto it = peers.find(conn);
    SHOAL_CHECK(it != peers.end());
    PeerState state = it->second.state;
    PeerId id = it->second.id;
    if (state != PeerState::kHandshaking) conn_of.erase(id);
    if (state != PeerState::kHandshaking) LoseHolder(id);  // holders may be pending (a rebuild)
    if (phase == Phase::kRebuild && it->second.rejoin) {
      departed_reports.push_back(*it->second.rejoin);  // still evidence of commits and aborts
    }
    peers.erase(it);
    if (emit_close) out->push_back(Output{Output::Kind::kClose, conn, {}});
    switch (state) {
      case PeerState::kHandshaking:
      case PeerState::kPending:
        return;
      case PeerState::kProposed:
      case PeerState::kReady:
        FailSetup({}, SHOAL_OK, "");
        return;  // re-propose the rest
      case PeerState::kMember:
        if (phase == Phase::kActive) Break(member_code, id);
        SHOAL_CHECK(phase == Phase::kBroken);
        if (LiveMembers().empty()) return EmptyGroup();
        MaybeCompleteBarrier();
        return;
    }
  }

  // Answers a message the peer may not send (now) and cuts the peer off.
  void Refuse(Peer& p, std::string reason) {
    Send(p, net::Error{SHOAL_ERR_PROTOCOL, std::move(reason)});
    Forget(p.conn, SHOAL_ERR_PEER_LOST, /*emit_close=*/true);
  }

  // ---- Helpers -------------------------------------------------------------------------------

  void Send(Peer& p, net::Message m) {
    out->push_back(Output{Output::Kind::kSend, p.conn, std::move(m)});
    p.last_sent_ms = now_ms;
  }

  void MovePeer(Peer& p, PeerState next) {
    if (!LegalPeerMove(p.state, next)) {
      std::string why =
          std::string("illegal peer move ") + PeerStateName(p.state) + " -> " + PeerStateName(next);
      SHOAL_CHECK_MSG(false, why.c_str());
    }
    p.state = next;
  }

  void MovePhase(Phase next) {
    if (!LegalPhaseMove(phase, next)) {
      std::string why =
          std::string("illegal phase move ") + PhaseName(phase) + " -> " + PhaseName(next);
      SHOAL_CHECK_MSG(false, why.c_str());
    }
    phase = next;
  }

  // Live members of the current epoch in ring order.
  std::vector<ConnId> LiveMembers() const {
    std::vector<ConnId> live;
    for (ConnId c : epoch.conns) {
      auto it = peers.find(c);
      if (it != peers.end() && IsLiveMember(it->second.state)) live.push_back(c);
    }
    return live;
  }

  std::vector<ConnId> PendingInOrder() const {
    std::vector<const Peer*> pending;
    for (const auto& [conn, p] : peers) {
      if (p.state == PeerState::kPending) pending.push_back(&p);
    }
    std::sort(pending.begin(), pending.end(),
              [](const Peer* a, const Peer* b) { return a->arrival < b->arrival; });
    std::vector<ConnId> conns;
    for (const Peer* p : pending) conns.push_back(p->conn);
    return conns;
  }

  View MakeView() const {
    View v;
    v.epoch = epoch.number;
    v.rebuilding = phase == Phase::kRebuild;
    v.highest_epoch = highest_epoch;
    v.revision = revision;
    v.revision_holders.assign(revision_holders.begin(), revision_holders.end());
    switch (phase) {
      case Phase::kEmpty:
      case Phase::kRebuild:
        break;
      case Phase::kSetup:
        for (const net::Member& m : epoch.members) v.members.push_back(m.peer_id);
        break;
      case Phase::kBroken:
        v.broken = true;
        v.abort_reason = epoch.abort;
        [[fallthrough]];
      case Phase::kActive:
        v.committed = true;
        for (const net::Member& m : epoch.members) v.members.push_back(m.peer_id);
        for (ConnId c : LiveMembers()) {
          if (peers.at(c).in_barrier) v.barrier.push_back(peers.at(c).id);
        }
        break;
    }
    for (ConnId c : PendingInOrder()) v.pending.push_back(peers.at(c).id);
    return v;
  }
};

Coordinator::Coordinator(Config config) : impl_(std::make_unique<Impl>(std::move(config))) {
  const Config& c = impl_->config;
  SHOAL_CHECK(c.heartbeat_interval_ms > 0 && c.heartbeat_interval_ms < c.heartbeat_timeout_ms);
  SHOAL_CHECK(c.hello_timeout_ms > 0 && c.barrier_timeout_ms > 0 && c.setup_timeout_ms > 0);
  SHOAL_CHECK(c.streams_per_link >= 1 && c.streams_per_link <= limits::kStreamsPerLinkMax);
  SHOAL_CHECK(c.segment_bytes >= limits::kSegmentBytesMin &&
              c.segment_bytes <= limits::kSegmentBytesMax);
  SHOAL_CHECK(c.max_members >= 1 && c.max_members <= limits::kMembersMax);
  SHOAL_CHECK(c.max_pending >= 1 && c.max_pending <= limits::kPendingMax);
  SHOAL_CHECK(c.max_open_ops >= 1);
  SHOAL_CHECK(c.rebuild_timeout_ms > 0);
}

Coordinator::~Coordinator() = default;

void Coordinator::OnConnect(ConnId conn, TimeMs now_ms) {
  impl_->now_ms = now_ms;
  impl_->Connect(conn);
}

void Coordinator::OnMessage(ConnId conn, const net::Message& message, TimeMs now_ms,
                            std::vector<Output>* out) {
  impl_->Begin(now_ms, out);
  impl_->Receive(conn, message);
}

void Coordinator::OnDisconnect(ConnId conn, TimeMs now_ms, std::vector<Output>* out) {
  impl_->Begin(now_ms, out);
  impl_->Disconnect(conn);
}

void Coordinator::OnTick(TimeMs now_ms, std::vector<Output>* out) {
  impl_->Begin(now_ms, out);
  impl_->Tick();
}

View Coordinator::view() const { return impl_->MakeView(); }

const Config& Coordinator::config() const { return impl_->config; }

}  // namespace shoal::coord
