// Fuzz target: the coordinator state machine (coord/coordinator.h) under arbitrary event sequences.
//
// The input is a script (coordinator_script.h): connections open and close, time passes, and
// peers send messages: frames straight from the input, structurally generated messages of every
// kind a peer sends (with epoch numbers, tags and seqs picked from what that peer was told, so
// deep states are reached), Hellos with rejoin reports (a coordinator restart), messages a peer
// never sends, and "honest" steps that follow the protocol. Every message goes through
// Encode/DecodeFrame first, as the server's reader would decode it.
//
// Vocabulary:
// - slot: one connection of the script, with the harness's model of what that peer was told
//   (state, epoch, the last epoch number it saw) built only from the coordinator's outputs.
// - step: one event and the outputs it produced; checks run on every output and after every step.
//
// Properties (docs/protocol.md "Invariants" and the rules they rest on), checked at every step:
// - Outputs go only to connections that are open: accepted, not disconnected, not closed by an
//   earlier Close. Each message is one the coordinator may send, keeps the wire format's rules and
//   survives Encode/DecodeFrame. Reject and Error{PROTOCOL} are followed by a Close in that step.
// - Epochs: every EpochPropose number is above every number proposed before and above every epoch
//   a rejoin report named; the epoch numbers each peer is sent never decrease; view.epoch and
//   view.highest_epoch never decrease.
// - A proposal goes to every one of its members, which are distinct, open, welcomed, at most
//   max_members; pending peers join a proposal only when a barrier completes (an UpdateTopology,
//   a tick, or a member lost) or the group is empty. EpochCommit goes to exactly the proposal's
//   members, each of which sent EpochReady{ok} for it: every member is live at commit time.
// - No peer is a committed member of two epochs at once: OpCommit, EpochAbort, TopologyUnchanged
//   and SyncPlan go only to members of that epoch.
// - Agreed outcome: no OpCommit unless every member of the epoch sent OpResult for the op (or was
//   refused by the sync's plan); no OpCommit for an epoch after its EpochAbort; every EpochAbort
//   of an epoch carries the same (code, lost peer), code not OK, the lost peer a member.
// - A SyncPlan that admits its member is one the peer runtime accepts (comm/peer_runtime_sync.cc
//   CheckPlan): expected hashes for distinct tensors it reported, pieces inside the tensors it
//   reported, with other members of the epoch, no overlapping receives, an expected hash for every
//   received tensor.
// - The view: members, pending and barrier lists hold distinct ids; barrier within members;
//   pending equals the harness's model of the pending queue, in order (Welcome and Removed of a
//   member append, proposals and closes remove); revision set exactly when it has holders.
// - Deadlines, after every tick: no connection silent for heartbeat_timeout_ms (or without Hello
//   for hello_timeout_ms) is still open; no setup older than setup_timeout_ms, barrier older than
//   barrier_timeout_ms or rebuild older than rebuild_timeout_ms is still waiting; an empty group
//   with pending peers after the startup hold has proposed them.
// - And, as for every target: no crash, no failed SHOAL_CHECK, no sanitizer report.
#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <tuple>

#include "coordinator_script.h"
#include "fuzz_support.h"
#include "shoal/common/dtype.h"
#include "shoal/coord/coordinator.h"
#include "wire_rules.h"

namespace shoal::fuzz {
namespace {

namespace script = coordinator_script;
using coord::ConnId;
using coord::Output;
using coord::View;

constexpr std::uint64_t kUnknownPeer = 0xFEED0000;  // an id no slot uses

// Short timeouts, so that a byte of tick reaches every deadline; small maxima, so that the
// fuzzer reaches them.
coord::Config MakeConfig(Input& in) {
  const std::uint32_t members = 1 + in.U8() % 5;
  const std::uint32_t pending = 1 + in.U8() % 5;
  const std::uint32_t open_ops = 1 + in.U8() % 4;
  const std::uint8_t flags = in.U8();
  return coord::Config{.heartbeat_interval_ms = 10,
                       .heartbeat_timeout_ms = 120,
                       .hello_timeout_ms = 60,
                       .barrier_timeout_ms = 80,
                       .setup_timeout_ms = 70,
                       .streams_per_link = 2,
                       .segment_bytes = limits::kSegmentBytesMin,
                       .max_members = members,
                       .max_pending = pending,
                       .max_open_ops = open_ops,
                       .rebuild_timeout_ms = 90,
                       .startup_hold_ms = (flags & 1) != 0 ? script::kHoldMs : 0,
                       .quorum = (flags & 2) != 0,
                       .standby = (flags & 4) != 0};
}

// What the harness knows of one connection, from the coordinator's outputs only.
enum class Seen { kHandshaking, kPending, kProposed, kReady, kMember };

struct Slot {
  ConnId conn = 0;
  bool open = true;
  Seen state = Seen::kHandshaking;
  PeerId hello_id = 0;               // the id of the last Hello it sent
  PeerId id = 0;                     // welcomed as
  std::uint64_t epoch = 0;           // kProposed/kReady/kMember: that epoch
  std::uint64_t seen_max = 0;        // the highest epoch number it was sent (or reported)
  std::uint64_t reported_epoch = 0;  // the epoch of the rejoin report it was welcomed with
  TimeMs connected_ms = 0;
  TimeMs last_recv_ms = 0;
  bool sent_update = false;           // UpdateTopology{epoch} sent in the current barrier
  std::optional<net::Rejoin> rejoin;  // the rejoin report of its Hello, while a rebuild may use it
  // Per epoch: the next seq per tag, syncs, the tensors each sync reported, plans it got.
  std::map<std::uint64_t, std::uint64_t> next_seq;
  std::uint64_t next_sync = 0;
  std::map<std::uint64_t, std::vector<net::TensorReport>> reported;
  std::map<std::uint64_t, net::SyncPlan> plans;  // admitted plans without a result sent yet
  // The shared state an honest peer holds.
  std::uint64_t revision = 0;
  std::uint64_t hash_w = 100;
  std::uint64_t hash_b = 200;

  void NewEpoch(std::uint64_t e) {
    epoch = e;
    sent_update = false;
    next_seq.clear();
    next_sync = 0;
    reported.clear();
    plans.clear();
  }
};

using OpId = std::tuple<std::uint64_t, std::uint64_t, std::uint64_t>;  // epoch, tag, seq

std::string Str(std::uint64_t v) { return std::to_string(v); }

std::string Describe(const net::Message& m) {
  return std::visit(
      [](const auto& x) {
        std::string s = net::MsgTypeName(net::TypeOf(net::Message(x)));
        if constexpr (requires { x.peer_id; }) s += " id=" + Str(x.peer_id);
        if constexpr (requires { x.epoch; }) s += " epoch=" + Str(x.epoch);
        if constexpr (requires { x.tag; }) s += " tag=" + Str(x.tag) + " seq=" + Str(x.seq);
        if constexpr (requires { x.code; }) s += " code=" + Str(x.code);
        if constexpr (requires { x.members; }) {
          s += " members=";
          for (const auto& y : x.members) {
            if constexpr (requires { y.peer_id; }) {
              s += Str(y.peer_id) + ",";
            } else {
              s += Str(y) + ",";
            }
          }
        }
        if constexpr (requires { x.rejoin; }) {
          if (x.rejoin) {
            s += " rejoin{epoch=" + Str(x.rejoin->epoch) +
                 " committed=" + Str(x.rejoin->committed) + " members=";
            for (PeerId id : x.rejoin->members) s += Str(id) + ",";
            s += " ops=" + Str(x.rejoin->ops.size()) + "}";
          }
        }
        return s;
      },
      m);
}

class Harness {
 public:
  explicit Harness(const coord::Config& config) : config_(config), coord_(config) {}

  void Run(Input& in) {
    while (!in.done()) {
      const std::uint8_t op = in.U8() % script::kCount;
      const std::uint8_t slot_byte = in.U8();
      Step(static_cast<script::Op>(op), slot_byte, in);
    }
  }

 private:
  // ---- Events ---------------------------------------------------------------------------------

  // What AfterStep compares against: the view and the live members before the event.
  void BeginStep(script::Op op, int slot) {
    before_ = coord_.view();
    out_.clear();
    step_ = StepInfo{};
    step_.op = op;
    step_.slot = slot;
    step_.rebuild = before_.rebuilding;
    step_.live_before = LiveConns();
  }

  void Step(script::Op op, std::uint8_t slot_byte, Input& in) {
    const int slot = slots_.empty() ? -1 : static_cast<int>(slot_byte % slots_.size());
    Slot* s = slot < 0 ? nullptr : &slots_[static_cast<std::size_t>(slot)];
    BeginStep(op, slot);
    switch (op) {
      case script::kConnect:
        if (slots_.size() >= script::kSlotsMax) return;
        Connect();
        return;  // OnConnect has no outputs
      case script::kDisconnect:
        if (s == nullptr) return;
        Drop(*s);
        break;
      case script::kTick:
        now_ms_ += in.U8();
        Began();
        if (Tracing()) Trace("t=" + Str(now_ms_) + " tick");
        coord_.OnTick(now_ms_, &out_);
        step_.tick = true;
        break;
      case script::kRawFrame: {
        std::vector<std::uint8_t> frame = in.Bytes();
        if (s == nullptr) return;
        // The server refuses other versions before the state machine; the version is set here so
        // that saved inputs outlive a version change.
        if (frame.size() >= 6) {
          frame[4] = static_cast<std::uint8_t>(net::kProtocolVersion);
          frame[5] = static_cast<std::uint8_t>(net::kProtocolVersion >> 8);
        }
        net::Message m;
        if (net::DecodeFrame(frame.data(), frame.size(), &m).ok()) {
          Deliver(*s, m);
        } else {
          Drop(*s);  // the server closes a connection whose frame does not decode
        }
        break;
      }
      default:
        if (s == nullptr) return;
        if (op == script::kHonestAll) {
          const std::uint8_t choice = in.U8();
          for (std::size_t i = 0; i < slots_.size(); i++) {
            if (!slots_[i].open) continue;
            BeginStep(op, static_cast<int>(i));
            if (auto m = Honest(slots_[i], choice)) Send(slots_[i], *m);
            AfterStep();
          }
          return;
        }
        if (auto m = Generate(op, *s, in)) Send(*s, *m);
        break;
    }
    AfterStep();
  }

  void Connect() {
    if (Tracing()) Trace("connect " + Str(next_conn_));
    Slot s;
    s.conn = next_conn_++;
    s.connected_ms = now_ms_;
    s.last_recv_ms = now_ms_;
    slots_.push_back(s);
    coord_.OnConnect(slots_.back().conn, now_ms_);
  }

  // Encodes and decodes `m` as the wire would, then delivers it (or a disconnect).
  void Send(Slot& s, const net::Message& m) {
    std::vector<std::uint8_t> frame;
    net::Encode(m, &frame);
    net::Message decoded;
    if (net::DecodeFrame(frame.data(), frame.size(), &decoded).ok()) {
      Deliver(s, decoded);
    } else {
      Drop(s);
    }
  }

  void Drop(Slot& s) {
    if (!s.open) return;
    step_.dropped = true;
    s.open = false;
    RemovePending(s);
    Began();
    if (Tracing()) Trace("t=" + Str(now_ms_) + " conn " + Str(s.conn) + " disconnects");
    coord_.OnDisconnect(s.conn, now_ms_, &out_);
  }

  // The coordinator starts its startup hold at its first event (not at OnConnect).
  void Began() {
    if (!first_event_ms_) first_event_ms_ = now_ms_;
  }

  void Deliver(Slot& s, const net::Message& m) {
    step_.delivered = &m;
    step_.type = net::TypeOf(m);
    step_.was_open = s.open;
    if (s.open) s.last_recv_ms = now_ms_;
    NoteSent(s, m);
    const auto* hello = std::get_if<net::Hello>(&m);
    step_.rebuild |= hello != nullptr && hello->rejoin.has_value();
    Began();
    if (Tracing()) Trace("t=" + Str(now_ms_) + " conn " + Str(s.conn) + " -> " + Describe(m));
    coord_.OnMessage(s.conn, m, now_ms_, &out_);
    step_.delivered = nullptr;
  }

  // What the peer's own message tells the model (results, reports, readiness).
  void NoteSent(Slot& s, const net::Message& m) {
    if (!s.open) return;
    if (const auto* h = std::get_if<net::Hello>(&m)) {
      s.hello_id = h->peer_id;
      if (s.state == Seen::kHandshaking) s.rejoin = h->rejoin;
    } else if (const auto* r = std::get_if<net::EpochReady>(&m)) {
      if (r->ok && s.state == Seen::kProposed && r->epoch == s.epoch) s.state = Seen::kReady;
    } else if (const auto* r = std::get_if<net::OpResult>(&m)) {
      if (s.state == Seen::kMember && r->epoch == s.epoch) {
        results_[{r->epoch, r->tag, r->seq}].insert(s.id);
        if (r->tag == net::kSharedStateTag) s.plans.erase(r->seq);
      }
    } else if (const auto* r = std::get_if<net::SyncReport>(&m)) {
      if (s.state == Seen::kMember && r->epoch == s.epoch) s.reported[r->seq] = r->tensors;
    } else if (const auto* u = std::get_if<net::UpdateTopology>(&m)) {
      if (s.state == Seen::kMember && u->epoch == s.epoch) s.sent_update = true;
    }
  }

  // ---- Message generation ---------------------------------------------------------------------

  std::uint64_t PickEpoch(const Slot& s, std::uint8_t b) {
    const View v = coord_.view();
    switch (b % 8) {
      case 0:
        return s.epoch;
      case 1:
        return s.seen_max;
      case 2:
        return v.epoch;
      case 3:
        return v.epoch + 1;
      case 4:
        return 0;
      case 5:
        return v.highest_epoch + 1;
      case 6:
        return s.rejoin ? s.rejoin->epoch : s.epoch;
      default:
        return b >> 3;
    }
  }
  static PeerId PickPeer(std::uint8_t b) {
    if (b % 8 == 0) return 0;
    if (b % 8 == 7) return kUnknownPeer;
    return 1 + b % script::kIdPool;
  }
  static shoal_status PickCode(std::uint8_t b) {
    return static_cast<shoal_status>(b % SHOAL_STATUS_COUNT);
  }
  static std::uint64_t PickTag(std::uint8_t b) {
    return b % 4 == 3 ? net::kSharedStateTag : 1 + b % 4;
  }

  // Two tensors (one may diverge), one, or none; hashes from a small alphabet so members agree
  // or differ on each.
  static std::vector<net::TensorReport> Schema(std::uint8_t b, std::uint64_t hash_w,
                                               std::uint64_t hash_b) {
    std::vector<net::TensorReport> t;
    if (b % 4 == 3) return t;
    t.push_back(net::TensorReport{"w", SHOAL_F32, false, 16, hash_w});
    if (b % 4 == 1) return t;
    t.push_back(net::TensorReport{"b", SHOAL_U8, b % 4 == 2, 3, hash_b});
    return t;
  }

  std::optional<net::Message> Generate(script::Op op, Slot& s, Input& in) {
    switch (op) {
      case script::kHello: {
        const PeerId id = 1 + in.U8() % script::kIdPool;
        return net::Hello{id, "127.0.0.1", static_cast<std::uint16_t>(40000 + in.U8()),
                          std::nullopt};
      }
      case script::kRejoinHello:
        return RejoinHello(in);
      case script::kHeartbeat:
        return net::Heartbeat{};
      case script::kUpdateTopology:
        return net::UpdateTopology{PickEpoch(s, in.U8())};
      case script::kEpochReady: {
        const std::uint64_t e = PickEpoch(s, in.U8());
        const bool ok = (in.U8() & 1) != 0;
        const PeerId suspect = PickPeer(in.U8());
        return net::EpochReady{e, ok, suspect, PickCode(in.U8())};
      }
      case script::kOpResult: {
        const std::uint64_t e = PickEpoch(s, in.U8());
        const std::uint64_t tag = PickTag(in.U8());
        return net::OpResult{e, tag, in.Below(4)};
      }
      case script::kEpochFault: {
        const std::uint64_t e = PickEpoch(s, in.U8());
        const PeerId suspect = PickPeer(in.U8());
        const shoal_status code = PickCode(in.U8());
        const std::uint64_t tag = PickTag(in.U8());
        return net::EpochFault{e, suspect, code, tag, in.Below(4), "fuzz"};
      }
      case script::kSyncReport: {
        const std::uint64_t e = PickEpoch(s, in.U8());
        const std::uint8_t seq = in.U8();
        const std::uint8_t revision = in.U8();
        const std::uint8_t schema = in.U8();
        return net::SyncReport{e, seq % 4 == 3 ? s.next_sync : seq % 4u, revision % 8u,
                               Schema(schema, 100 + (schema >> 2) % 3, 200 + (schema >> 4) % 2)};
      }
      case script::kLeave:
        return net::Leave{};
      case script::kHonest:
        return Honest(s, in.U8());
      case script::kSendAny:
        return NeverAccepted(s, in.U8());
      default:
        return std::nullopt;
    }
  }

  // A Hello with a rejoin report: as a peer of a group whose coordinator restarted sends it.
  net::Message RejoinHello(Input& in) {
    const PeerId id = 1 + in.U8() % script::kIdPool;
    net::Rejoin j;
    const std::uint8_t epoch = in.U8();
    const std::uint8_t flags = in.U8();
    j.epoch = epoch % 16 == 15 ? in.U64() : epoch % 16;
    j.committed = (flags & 1) != 0;
    j.broken = (flags & 2) != 0;
    j.fault_sent = (flags & 4) != 0;
    j.in_barrier = (flags & 8) != 0;
    j.has_revision = (flags & 16) != 0;
    const std::uint8_t members = in.U8();
    const std::uint8_t rotate = in.U8();
    for (std::uint32_t k = 0; k < script::kIdPool; k++) {
      const PeerId p = 1 + (k + rotate) % script::kIdPool;
      if (((members >> k) & 1) != 0 || (p == id && (flags & 32) == 0)) j.members.push_back(p);
    }
    if (j.epoch == 0 && (flags & 64) == 0) {
      j.committed = false;
      j.members.clear();
    }
    j.abort_code = PickCode(in.U8());
    j.abort_lost = PickPeer(in.U8());
    j.fault_code = PickCode(in.U8());
    j.fault_suspect = PickPeer(in.U8());
    const std::uint8_t tags = in.U8() % 4;
    for (std::uint8_t k = 0; k < tags; k++) {
      const std::uint64_t tag = PickTag(in.U8());
      j.next_seq.push_back(net::TagSeq{tag, in.Below(4)});
    }
    const std::uint8_t ops = in.U8() % 4;
    for (std::uint8_t k = 0; k < ops; k++) {
      net::RejoinOp op;
      op.tag = PickTag(in.U8());
      op.seq = in.U8() % 4;
      op.state = static_cast<net::RejoinOpState>(in.U8() % 3);
      op.revision = in.U8() % 8;
      op.digest = in.U8() % 3;
      j.ops.push_back(op);
    }
    j.revision = in.U8() % 8;
    j.state_digest = in.U8() % 3;
    const std::uint8_t last = in.U8();  // the newest epoch it was a committed member of
    if (last % 4 == 1 && j.committed) {
      j.last_epoch = j.epoch;
      j.last_ring = j.members;
    } else if (last % 4 >= 2) {
      j.last_epoch = last % 4 == 2 && j.epoch > 1 ? j.epoch - 1 : last / 4;
      for (std::uint32_t k = 0; k < script::kIdPool; k++) {
        if (((members >> k) & 1) != 0 || k == (last >> 5) % script::kIdPool) {
          j.last_ring.push_back(1 + k);
        }
      }
    }
    j.seen_epoch = std::max(j.epoch, j.last_epoch) + in.U8() % 3;
    return net::Hello{id, "127.0.0.1", 40000, j};
  }

  // A message of a type the coordinator only sends: it must refuse it and close.
  net::Message NeverAccepted(const Slot& s, std::uint8_t b) {
    const std::uint64_t e = s.epoch;
    switch (b % 14) {
      case 0:
        return net::Welcome{1, 10, 100};
      case 1:
        return net::Reject{SHOAL_ERR_REJECTED, "no"};
      case 2:
        return net::TopologyUnchanged{e};
      case 3:
        return net::EpochPropose{e + 1, 1, limits::kSegmentBytesMin, {{1, "h", 1}}};
      case 4:
        return net::EpochCommit{e};
      case 5:
        return net::OpCommit{e, 1, 0};
      case 6:
        return net::EpochAbort{e, SHOAL_ERR_PEER_LOST, 1};
      case 7:
        return net::Removed{SHOAL_ERR_TIMEOUT, "late"};
      case 8:
        return net::Error{SHOAL_ERR_PROTOCOL, "bad"};
      case 9:
        return net::DataHello{e, 1, 2, 0, 1, net::StreamKind::kRing};
      case 10:
        return net::AuthHello{};  // the server runs the handshake, not the state machine
      case 11:
        return net::AuthChallenge{};
      case 12:
        return net::AuthProof{};
      default:
        return net::SyncPlan{e, 0, SHOAL_OK, "", 0, {}, {}, {}};
    }
  }

  // The next message of a peer that follows docs/protocol.md, given what it was told.
  std::optional<net::Message> Honest(Slot& s, std::uint8_t choice) {
    const std::size_t index = static_cast<std::size_t>(&s - slots_.data());
    switch (s.state) {
      case Seen::kHandshaking:
        if (s.hello_id != 0) return std::nullopt;  // its Hello is answered at once
        return net::Hello{1 + index % script::kIdPool, "127.0.0.1",
                          static_cast<std::uint16_t>(40000 + index), std::nullopt};
      case Seen::kPending:
      case Seen::kReady:
        return net::Heartbeat{};
      case Seen::kProposed:
        return net::EpochReady{s.epoch, true, 0, SHOAL_OK};
      case Seen::kMember:
        break;
    }
    switch (choice % 4) {
      case 0: {
        const std::uint64_t tag = 1 + (choice >> 2) % 2;
        return net::OpResult{s.epoch, tag, s.next_seq[tag]++};
      }
      case 1: {
        if (!s.plans.empty() || s.reported.count(s.next_sync) != 0) break;
        if ((choice & 4) != 0) {  // trained a step since the last sync
          s.revision++;
          s.hash_w += 10;
        }
        return net::SyncReport{s.epoch, s.next_sync++, s.revision, Schema(0, s.hash_w, s.hash_b)};
      }
      case 2: {
        if (s.plans.empty()) break;
        auto [seq, plan] = *s.plans.begin();
        for (const net::ExpectedHash& e : plan.expect)
          (e.tensor == 0 ? s.hash_w : s.hash_b) = e.hash;
        s.revision = plan.revision;
        return net::OpResult{s.epoch, net::kSharedStateTag, seq};
      }
      default:
        if (s.sent_update) break;
        return net::UpdateTopology{s.epoch};
    }
    return net::Heartbeat{};
  }

  // ---- Checks ---------------------------------------------------------------------------------

  struct StepInfo {
    script::Op op = script::kConnect;
    int slot = -1;
    bool tick = false;
    const net::Message* delivered = nullptr;
    std::optional<net::MsgType> type;  // of the message delivered in this step
    bool was_open = false;
    bool rebuild = false;          // a rebuild may end in this step (choice 14 of coordinator.cc)
    std::set<ConnId> live_before;  // connections of the live members when the step began
    bool dropped = false;          // a connection closed on the peer's side
    std::set<std::uint64_t> rebuild_aborted;  // epochs a rebuild aborted in this step
    std::set<std::size_t> closed;             // slots closed by this step's outputs
    std::set<std::size_t> must_close;         // Reject / Error{PROTOCOL} went to them
    std::map<std::uint64_t, std::set<std::size_t>> proposed_to;  // epoch -> slots
    std::map<std::uint64_t, std::set<std::size_t>> committed_to;
    std::set<OpId> op_commits;
  };

  std::size_t SlotOf(ConnId conn) {
    for (std::size_t i = 0; i < slots_.size(); i++) {
      if (slots_[i].conn == conn) return i;
    }
    FUZZ_REQUIRE(false, "output to connection " + Str(conn) + " that was never accepted");
    return 0;
  }

  void RemovePending(const Slot& s) {
    const std::size_t i = static_cast<std::size_t>(&s - slots_.data());
    pending_.erase(std::remove(pending_.begin(), pending_.end(), i), pending_.end());
  }
  void AppendPending(std::size_t i) {
    pending_.erase(std::remove(pending_.begin(), pending_.end(), i), pending_.end());
    pending_.push_back(i);
  }
  std::set<ConnId> LiveConns() const {
    std::set<ConnId> conns;
    for (const Slot& s : slots_) {
      if (IsLive(s)) conns.insert(s.conn);
    }
    return conns;
  }
  bool IsLive(const Slot& s) const {
    return s.open &&
           (s.state == Seen::kProposed || s.state == Seen::kReady || s.state == Seen::kMember);
  }

  void AfterStep() {
    for (const Output& o : out_) OnOutput(o);
    for (std::size_t i : step_.must_close) {
      FUZZ_REQUIRE(step_.closed.count(i) != 0, "Reject or fatal Error without a Close");
    }
    if (step_.type && step_.was_open && step_.slot >= 0 && IsNeverAccepted(*step_.type)) {
      FUZZ_REQUIRE(step_.closed.count(static_cast<std::size_t>(step_.slot)) != 0,
                   std::string(net::MsgTypeName(*step_.type)) + " from a peer was not refused");
    }
    for (const auto& [e, to] : step_.proposed_to) {
      for (PeerId id : members_of_[e]) {
        FUZZ_REQUIRE(HasSlotWithId(to, id), "proposal " + Str(e) + " missed member " + Str(id));
      }
    }
    for (const auto& [e, to] : step_.committed_to) {
      FUZZ_REQUIRE(to.size() == members_of_[e].size(),
                   "EpochCommit " + Str(e) + " did not reach exactly the proposal's members");
    }
    for (const OpId& id : step_.op_commits) results_.erase(id);
    const View after = coord_.view();
    if (step_.rebuild && !after.rebuilding) AdoptRebuiltMembers(after);
    CheckView(after);
    if (step_.tick) CheckDeadlines(after);
    NoteTimes(after);
  }

  static bool IsNeverAccepted(net::MsgType t) {
    switch (t) {
      case net::MsgType::kHello:
      case net::MsgType::kHeartbeat:
      case net::MsgType::kUpdateTopology:
      case net::MsgType::kEpochReady:
      case net::MsgType::kOpResult:
      case net::MsgType::kEpochFault:
      case net::MsgType::kLeave:
      case net::MsgType::kSyncReport:
        return false;
      default:
        return true;
    }
  }

  bool HasSlotWithId(const std::set<std::size_t>& set, PeerId id) const {
    for (std::size_t i : set) {
      if (slots_[i].id == id) return true;
    }
    return false;
  }

  void OnOutput(const Output& o) {
    if (Tracing()) {
      Trace("    conn " + Str(o.conn) + " <- " +
            (o.kind == Output::Kind::kClose ? std::string("close") : Describe(o.message)));
    }
    const std::size_t i = SlotOf(o.conn);
    Slot& s = slots_[i];
    FUZZ_REQUIRE(s.open, "output to connection " + Str(o.conn) + ", which is closed");
    if (o.kind == Output::Kind::kClose) {
      s.open = false;
      RemovePending(s);
      step_.closed.insert(i);
      return;
    }
    const net::Message& m = o.message;
    const std::string rule = BrokenRule(m);
    FUZZ_REQUIRE(rule.empty(), std::string("coordinator sent a malformed ") +
                                   net::MsgTypeName(net::TypeOf(m)) + ": " + rule);
    std::vector<std::uint8_t> frame;
    net::Encode(m, &frame);
    net::Message back;
    FUZZ_REQUIRE(net::DecodeFrame(frame.data(), frame.size(), &back).ok(),
                 "a peer cannot decode what the coordinator sent");
    std::visit([&](const auto& x) { OnSend(i, x); }, m);
  }

  void SeeEpoch(Slot& s, std::uint64_t e, const char* what) {
    FUZZ_REQUIRE(e >= s.seen_max, std::string(what) + " for epoch " + Str(e) +
                                      " to a peer that saw " + Str(s.seen_max));
    s.seen_max = e;
  }
  void RequireMemberOf(Slot& s, std::uint64_t e, const char* what) {
    AdoptIfRebuilt(s, e);
    FUZZ_REQUIRE(s.state == Seen::kMember && s.epoch == e,
                 std::string(what) + " for epoch " + Str(e) + " to a peer not committed to it");
  }

  void OnSend(std::size_t i, const net::Welcome& m) {
    Slot& s = slots_[i];
    FUZZ_REQUIRE(s.state == Seen::kHandshaking && step_.type == net::MsgType::kHello &&
                     step_.slot == static_cast<int>(i),
                 "Welcome without a Hello");
    FUZZ_REQUIRE(m.peer_id == s.hello_id, "Welcome names another id");
    s.id = m.peer_id;
    s.state = Seen::kPending;
    if (s.rejoin) {
      s.seen_max = s.rejoin->epoch;
      s.reported_epoch = std::max({s.rejoin->epoch, s.rejoin->last_epoch, s.rejoin->seen_epoch});
    }
    AppendPending(i);
  }
  void OnSend(std::size_t i, const net::Reject&) {
    FUZZ_REQUIRE(slots_[i].state == Seen::kHandshaking, "Reject to a welcomed peer");
    step_.must_close.insert(i);
  }
  void OnSend(std::size_t i, const net::Error& m) {
    if (m.code == SHOAL_ERR_PROTOCOL) step_.must_close.insert(i);
  }
  void OnSend(std::size_t i, const net::Heartbeat&) {
    FUZZ_REQUIRE(slots_[i].state != Seen::kHandshaking, "Heartbeat before Welcome");
  }
  void OnSend(std::size_t i, const net::EpochPropose& m) {
    Slot& s = slots_[i];
    FUZZ_REQUIRE(s.state != Seen::kHandshaking, "EpochPropose to a peer not welcomed");
    FUZZ_REQUIRE(
        m.streams_per_link == config_.streams_per_link && m.segment_bytes == config_.segment_bytes,
        "proposal with other parameters than the config's");
    FUZZ_REQUIRE(m.members.size() <= config_.max_members, "proposal above max_members");
    std::vector<PeerId> ids;
    for (const net::Member& x : m.members) ids.push_back(x.peer_id);
    if (step_.proposed_to.count(m.epoch) == 0) {  // the first copy of a new proposal
      std::uint64_t reported = 0;  // epochs that connected peers reported in a rejoin
      for (const Slot& o : slots_) {
        if (o.open) reported = std::max(reported, o.reported_epoch);
      }
      FUZZ_REQUIRE(m.epoch > max_proposed_ && m.epoch > reported,
                   "proposal " + Str(m.epoch) + " reuses a number (proposed so far " +
                       Str(max_proposed_) + ", reported " + Str(reported) + ")");
      std::set<PeerId> unique(ids.begin(), ids.end());
      FUZZ_REQUIRE(unique.size() == ids.size(), "a proposal names a member twice");
      CheckAdmission(ids);
      max_proposed_ = m.epoch;
      members_of_[m.epoch] = ids;
      proposed_ms_[m.epoch] = now_ms_;
    }
    FUZZ_REQUIRE(members_of_[m.epoch] == ids, "copies of one proposal differ");
    FUZZ_REQUIRE(std::count(ids.begin(), ids.end(), s.id) == 1, "proposal to a non-member");
    SeeEpoch(s, m.epoch, "EpochPropose");
    step_.proposed_to[m.epoch].insert(i);
    RemovePending(s);
    s.state = Seen::kProposed;
    s.NewEpoch(m.epoch);
  }
  // Pending peers join a proposal only at a barrier's end or in an empty group.
  void CheckAdmission(const std::vector<PeerId>& ids) {
    const bool empty_group = before_.members.empty() || !before_.committed;
    if (empty_group) return;  // an empty group, or a setup re-proposed without its demoted
    bool newcomer = false;
    bool kept = false;  // some live member of the old epoch is in the new one: not an emptied group
    for (PeerId id : ids) {
      // By connection: a member that reconnected (same id, new connection) is a newcomer.
      bool was_live = false;
      for (const Slot& o : slots_)
        was_live |= o.open && o.id == id && step_.live_before.count(o.conn);
      (was_live ? kept : newcomer) = true;
    }
    if (!newcomer || !kept) return;
    // The events that complete a barrier: an entrant, its deadline, or a member lost.
    const bool barrier_event = step_.tick || step_.type == net::MsgType::kUpdateTopology ||
                               !step_.closed.empty() || step_.dropped;
    FUZZ_REQUIRE(
        barrier_event && (!before_.barrier.empty() || step_.type == net::MsgType::kUpdateTopology),
        "pending peers proposed without a barrier");
  }
  void OnSend(std::size_t i, const net::EpochCommit& m) {
    Slot& s = slots_[i];
    FUZZ_REQUIRE(s.state == Seen::kReady && s.epoch == m.epoch,
                 "EpochCommit " + Str(m.epoch) + " to a peer that did not report ready for it");
    SeeEpoch(s, m.epoch, "EpochCommit");
    step_.committed_to[m.epoch].insert(i);
    s.state = Seen::kMember;
  }
  void OnSend(std::size_t i, const net::TopologyUnchanged& m) {
    Slot& s = slots_[i];
    RequireMemberOf(s, m.epoch, "TopologyUnchanged");
    FUZZ_REQUIRE(s.sent_update || step_.rebuild, "TopologyUnchanged without UpdateTopology");
    SeeEpoch(s, m.epoch, "TopologyUnchanged");
    s.sent_update = false;
  }
  void OnSend(std::size_t i, const net::OpCommit& m) {
    Slot& s = slots_[i];
    const OpId id{m.epoch, m.tag, m.seq};
    RequireMemberOf(s, m.epoch, "OpCommit");
    // A rebuild gives the verdicts of ops the old coordinator left open (choice 14 of
    // coordinator.cc); their OpResults went to the old coordinator.
    if (!step_.rebuild) {
      if (step_.op_commits.insert(id).second) {
        const std::set<PeerId>& sent = results_[id];
        const std::set<PeerId>& refused = refused_[{m.epoch, m.seq}];
        for (PeerId member : members_of_[m.epoch]) {
          FUZZ_REQUIRE(sent.count(member) != 0 ||
                           (m.tag == net::kSharedStateTag && refused.count(member) != 0),
                       "OpCommit (" + Str(m.tag) + ", " + Str(m.seq) + ") of epoch " +
                           Str(m.epoch) + " without the OpResult of member " + Str(member));
        }
      }
    }
    // A rebuild decides from the reports alone, and the harness's reports need not be consistent
    // with what the peer was told before (a quorum coordinator may rebuild an epoch it aborted).
    FUZZ_REQUIRE(step_.rebuild || aborts_.count(m.epoch) == 0,
                 "OpCommit after the epoch's EpochAbort");
    SeeEpoch(s, m.epoch, "OpCommit");
  }
  void OnSend(std::size_t i, const net::EpochAbort& m) {
    Slot& s = slots_[i];
    RequireMemberOf(s, m.epoch, "EpochAbort");
    // A rebuild names whom the reports name; a coordinator without a majority names nobody.
    const bool given_up = m.code == SHOAL_ERR_COORDINATOR_LOST && m.lost_peer == 0;
    if (!step_.rebuild && !given_up) {
      const std::vector<PeerId>& members = members_of_[m.epoch];
      FUZZ_REQUIRE(std::count(members.begin(), members.end(), m.lost_peer) == 1,
                   "EpochAbort names " + Str(m.lost_peer) + ", not a member of the epoch");
    }
    FUZZ_REQUIRE(m.code != SHOAL_OK, "EpochAbort with code OK");
    auto [it, first] = aborts_.emplace(m.epoch, m);
    const bool same = it->second.code == m.code && it->second.lost_peer == m.lost_peer;
    FUZZ_REQUIRE(first || same || (step_.rebuild && !step_.rebuild_aborted.count(m.epoch)),
                 "two abort reasons for epoch " + Str(m.epoch));
    if (step_.rebuild) {
      it->second = m;
      step_.rebuild_aborted.insert(m.epoch);
    }
    SeeEpoch(s, m.epoch, "EpochAbort");
  }
  void OnSend(std::size_t i, const net::Removed& m) {
    Slot& s = slots_[i];
    // A pending peer is removed when its rejoin report names an epoch the group went on
    // without, or, closed at once, when a quorum coordinator without a majority gives it up.
    const bool reported = s.state == Seen::kPending && s.rejoin && s.rejoin->epoch != 0;
    if (!IsLive(s) && !reported) {
      FUZZ_REQUIRE(config_.quorum && m.code == SHOAL_ERR_COORDINATOR_LOST,
                   "Removed to a peer that was in no epoch");
      step_.must_close.insert(i);
    }
    if (s.state != Seen::kPending) AppendPending(i);  // a demoted member joins the queue's end
    s.state = Seen::kPending;
    s.rejoin.reset();
  }
  void OnSend(std::size_t i, const net::SyncPlan& m) {
    Slot& s = slots_[i];
    RequireMemberOf(s, m.epoch, "SyncPlan");
    SeeEpoch(s, m.epoch, "SyncPlan");
    auto reported = s.reported.find(m.seq);
    FUZZ_REQUIRE(reported != s.reported.end(), "SyncPlan for a sync this peer did not report");
    if (m.code != SHOAL_OK) {
      FUZZ_REQUIRE(m.expect.empty() && m.recvs.empty() && m.sends.empty(), "a refusal with pieces");
      refused_[{m.epoch, m.seq}].insert(s.id);
      return;
    }
    CheckPlanUsable(s, reported->second, m);
    s.plans[m.seq] = m;
  }
  template <typename T>
  void OnSend(std::size_t, const T&) {
    FUZZ_REQUIRE(false, std::string("the coordinator sent ") +
                            net::MsgTypeName(net::TypeOf(net::Message(T{}))));
  }

  // What the peer runtime checks before it uses a plan (CheckPlan), against the tensors this
  // member reported: a plan that fails here would cut an honest peer off.
  void CheckPlanUsable(const Slot& s, const std::vector<net::TensorReport>& mine,
                       const net::SyncPlan& plan) {
    const std::vector<PeerId>& members = members_of_[plan.epoch];
    std::set<std::uint32_t> expected;
    for (const net::ExpectedHash& e : plan.expect) {
      FUZZ_REQUIRE(e.tensor < mine.size() && expected.insert(e.tensor).second,
                   "plan expects tensor " + Str(e.tensor) + " twice or out of range");
    }
    std::vector<std::tuple<std::uint32_t, std::uint64_t, std::uint64_t>> received;
    for (const auto* list : {&plan.sends, &plan.recvs}) {
      for (const net::TransferPiece& p : *list) {
        FUZZ_REQUIRE(p.peer != s.id && std::count(members.begin(), members.end(), p.peer) == 1,
                     "piece with " + Str(p.peer) + ", not another member");
        FUZZ_REQUIRE(p.tensor < mine.size(), "piece of a tensor this member does not have");
        const std::uint64_t size = mine[p.tensor].count * DtypeBytes(mine[p.tensor].dtype);
        FUZZ_REQUIRE(p.offset <= size && p.bytes <= size - p.offset, "piece outside its tensor");
        if (list == &plan.recvs) {
          FUZZ_REQUIRE(expected.count(p.tensor) != 0, "received tensor without expected hash");
          received.emplace_back(p.tensor, p.offset, p.bytes);
        }
      }
    }
    std::sort(received.begin(), received.end());
    for (std::size_t k = 1; k < received.size(); k++) {
      const auto& [t0, o0, b0] = received[k - 1];
      const auto& [t1, o1, b1] = received[k];
      FUZZ_REQUIRE(t0 != t1 || o0 + b0 <= o1, "received pieces overlap");
    }
  }

  // A rebuild makes the reporters of the rebuilt epoch its members without a message: the
  // first message of that epoch to one, or the view at the step's end, tells.
  void AdoptIfRebuilt(Slot& s, std::uint64_t e) {
    if (!step_.rebuild || s.state != Seen::kPending || !s.rejoin || !s.rejoin->committed ||
        s.rejoin->epoch != e) {
      return;
    }
    RemovePending(s);
    s.state = Seen::kMember;
    s.NewEpoch(e);
    s.sent_update = s.rejoin->in_barrier;
    for (const net::TagSeq& t : s.rejoin->next_seq) s.next_seq[t.tag] = t.next_seq;
    s.next_sync = s.next_seq[net::kSharedStateTag];
    s.rejoin.reset();
  }
  void AdoptRebuiltMembers(const View& after) {
    if (after.committed) {
      members_of_[after.epoch] = after.members;
      for (Slot& s : slots_) {
        const bool listed = std::count(after.members.begin(), after.members.end(), s.id) == 1 &&
                            std::count(after.pending.begin(), after.pending.end(), s.id) == 0;
        if (!s.open || s.state != Seen::kPending || !s.rejoin || !listed) continue;
        FUZZ_REQUIRE(s.rejoin->committed && s.rejoin->epoch == after.epoch,
                     "a rebuild made a member of a peer that did not report that epoch");
        AdoptIfRebuilt(s, after.epoch);
      }
    }
    for (Slot& s : slots_) {
      if (s.state == Seen::kPending) s.rejoin.reset();
    }
  }

  void CheckView(const View& v) {
    FUZZ_REQUIRE(v.highest_epoch >= before_.highest_epoch, "highest_epoch went back");
    // A rebuild takes the epoch its peers report, which may be below one this coordinator
    // proposed and gave up (choice 16 of coordinator.cc); otherwise the epoch only grows.
    FUZZ_REQUIRE(step_.rebuild || v.epoch >= before_.epoch, "view.epoch went back");
    FUZZ_REQUIRE(v.epoch <= v.highest_epoch, "current epoch above the highest ever proposed");
    auto distinct = [](const std::vector<PeerId>& ids) {
      return std::set<PeerId>(ids.begin(), ids.end()).size() == ids.size();
    };
    FUZZ_REQUIRE(distinct(v.members) && distinct(v.pending) && distinct(v.barrier),
                 "an id twice in members, pending or barrier");
    for (PeerId id : v.barrier) {
      FUZZ_REQUIRE(std::count(v.members.begin(), v.members.end(), id) == 1,
                   "barrier entrant not a member");
    }
    if (!v.committed) {
      for (PeerId id : v.pending) {
        FUZZ_REQUIRE(std::count(v.members.begin(), v.members.end(), id) == 0,
                     "peer both proposed and pending");
      }
    }
    std::vector<PeerId> model;
    for (std::size_t i : pending_) model.push_back(slots_[i].id);
    FUZZ_REQUIRE(v.pending == model, "pending queue differs from what the peers were told");
    FUZZ_REQUIRE(v.revision.has_value() == !v.revision_holders.empty(),
                 "a revision without holders, or holders without one");
    FUZZ_REQUIRE(std::is_sorted(v.revision_holders.begin(), v.revision_holders.end()) &&
                     distinct(v.revision_holders),
                 "revision holders not sorted and distinct");
    for (PeerId id : v.revision_holders) {
      bool live = false;
      for (const Slot& s : slots_) live |= s.open && s.state != Seen::kHandshaking && s.id == id;
      FUZZ_REQUIRE(live, "revision holder " + Str(id) + " has no connection");
    }
  }

  void CheckDeadlines(const View& v) {
    for (const Slot& s : slots_) {
      if (!s.open) continue;
      if (s.state == Seen::kHandshaking) {
        FUZZ_REQUIRE(now_ms_ - s.connected_ms < config_.hello_timeout_ms,
                     "a connection without Hello outlived hello_timeout_ms");
      } else {
        FUZZ_REQUIRE(now_ms_ - s.last_recv_ms < config_.heartbeat_timeout_ms,
                     "a silent peer outlived heartbeat_timeout_ms");
      }
    }
    if (!v.committed && !v.members.empty()) {
      FUZZ_REQUIRE(now_ms_ < proposed_ms_[v.epoch] + config_.setup_timeout_ms,
                   "epoch setup outlived setup_timeout_ms");
    }
    if (!v.barrier.empty()) {
      FUZZ_REQUIRE(now_ms_ < barrier_since_ms_ + config_.barrier_timeout_ms,
                   "barrier outlived barrier_timeout_ms");
    }
    if (v.rebuilding) {
      FUZZ_REQUIRE(now_ms_ < rebuild_since_ms_ + config_.rebuild_timeout_ms,
                   "rebuild outlived rebuild_timeout_ms");
    }
    // Without quorum and standby (which wait for a majority or a group to rebuild).
    if (v.members.empty() && !v.rebuilding && !config_.quorum && !config_.standby &&
        now_ms_ >= *first_event_ms_ + config_.startup_hold_ms) {
      FUZZ_REQUIRE(v.pending.empty(), "an empty group left pending peers waiting");
    }
  }

  void NoteTimes(const View& v) {
    if (!v.barrier.empty() && (before_.barrier.empty() || v.epoch != before_.epoch)) {
      barrier_since_ms_ = now_ms_;
    }
    if (v.rebuilding && !before_.rebuilding) rebuild_since_ms_ = now_ms_;
  }

  const coord::Config config_;
  coord::Coordinator coord_;
  std::vector<Slot> slots_;
  std::vector<std::size_t> pending_;  // the pending queue as the peers were told it
  ConnId next_conn_ = 1;
  TimeMs now_ms_ = 1000;
  std::optional<TimeMs> first_event_ms_;
  TimeMs barrier_since_ms_ = 0;
  TimeMs rebuild_since_ms_ = 0;
  std::uint64_t max_proposed_ = 0;
  std::map<std::uint64_t, std::vector<PeerId>> members_of_;
  std::map<std::uint64_t, TimeMs> proposed_ms_;
  std::map<std::uint64_t, net::EpochAbort> aborts_;
  std::map<OpId, std::set<PeerId>> results_;
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::set<PeerId>> refused_;
  View before_;
  std::vector<Output> out_;
  StepInfo step_;
};

}  // namespace
}  // namespace shoal::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  shoal::fuzz::Input in(data, size);
  const shoal::coord::Config config = shoal::fuzz::MakeConfig(in);
  shoal::fuzz::Harness harness(config);
  harness.Run(in);
  return 0;
}
