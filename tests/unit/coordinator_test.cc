// Unit tests of the coordinator state machine (coord/coordinator.h) against docs/protocol.md.
//
// The tests drive the Coordinator directly: connection events, decoded messages and ticks with a
// hand-moved clock, and look at the outputs it returns. Connection c always carries peer id
// Id(c). StateEventTable walks the whole (peer state x message) table, illegal moves included; the
// other tests follow the protocol's paths one by one.
#include "shoal/coord/coordinator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

namespace shoal::coord {
namespace {

using net::Message;

constexpr PeerId Id(ConnId c) { return 0x5000 + c; }

Config TestConfig() {
  Config c;
  c.heartbeat_interval_ms = 100;
  c.heartbeat_timeout_ms = 1000;
  c.hello_timeout_ms = 500;
  c.barrier_timeout_ms = 2000;
  c.setup_timeout_ms = 1500;
  c.streams_per_link = 2;
  c.segment_bytes = 1u << 16;
  return c;
}

// Outputs of one event, with queries.
struct Outs {
  std::vector<Output> all;

  template <class T>
  std::vector<T> To(ConnId c) const {
    std::vector<T> r;
    for (const Output& o : all) {
      if (o.kind == Output::Kind::kSend && o.conn == c && std::holds_alternative<T>(o.message)) {
        r.push_back(std::get<T>(o.message));
      }
    }
    return r;
  }
  // The one T sent to c; a failure (and a default T) unless there is exactly one.
  template <class T>
  T One(ConnId c) const {
    auto r = To<T>(c);
    if (r.size() != 1) {
      ADD_FAILURE() << r.size() << " messages of the type instead of one to connection " << c;
      return T{};
    }
    return r[0];
  }
  // Connections that were sent a T, in output order.
  template <class T>
  std::vector<ConnId> Receivers() const {
    std::vector<ConnId> r;
    for (const Output& o : all) {
      if (o.kind == Output::Kind::kSend && std::holds_alternative<T>(o.message))
        r.push_back(o.conn);
    }
    return r;
  }
  template <class T>
  bool Any() const {
    return !Receivers<T>().empty();
  }
  bool Closed(ConnId c) const {
    return std::any_of(all.begin(), all.end(), [c](const Output& o) {
      return o.kind == Output::Kind::kClose && o.conn == c;
    });
  }
  bool AnyClose() const {
    return std::any_of(all.begin(), all.end(),
                       [](const Output& o) { return o.kind == Output::Kind::kClose; });
  }
  // Nothing but heartbeats.
  bool Quiet() const {
    return std::all_of(all.begin(), all.end(), [](const Output& o) {
      return o.kind == Output::Kind::kSend && std::holds_alternative<net::Heartbeat>(o.message);
    });
  }
  // The connection was refused: Error{PROTOCOL} then Close.
  bool Refused(ConnId c) const {
    auto errors = To<net::Error>(c);
    return errors.size() == 1 && errors[0].code == SHOAL_ERR_PROTOCOL && Closed(c);
  }
};

std::vector<PeerId> Ids(std::initializer_list<ConnId> conns) {
  std::vector<PeerId> r;
  for (ConnId c : conns) r.push_back(Id(c));
  return r;
}

std::vector<PeerId> MemberIds(const net::EpochPropose& p) {
  std::vector<PeerId> r;
  for (const net::Member& m : p.members) r.push_back(m.peer_id);
  return r;
}

class CoordinatorTest : public ::testing::Test {
 protected:
  explicit CoordinatorTest(Config config = TestConfig()) : coord_(config) {}

  void Connect(ConnId c) { coord_.OnConnect(c, now_); }
  Outs Deliver(ConnId c, const Message& m) {
    Outs o;
    coord_.OnMessage(c, m, now_, &o.all);
    return o;
  }
  Outs Drop(ConnId c) {
    Outs o;
    coord_.OnDisconnect(c, now_, &o.all);
    return o;
  }
  Outs Advance(TimeMs ms) {
    now_ += ms;
    Outs o;
    coord_.OnTick(now_, &o.all);
    return o;
  }
  Outs Hello(ConnId c) {
    Connect(c);
    return Deliver(c, net::Hello{Id(c), "host" + std::to_string(c), static_cast<std::uint16_t>(c), std::nullopt});
  }
  Outs Ready(ConnId c, std::uint64_t e) {
    return Deliver(c, net::EpochReady{e, true, 0, SHOAL_OK});
  }
  Outs Fail(ConnId c, std::uint64_t e, PeerId suspect, shoal_status code) {
    return Deliver(c, net::EpochReady{e, false, suspect, code});
  }
  Outs Update(ConnId c, std::uint64_t e) { return Deliver(c, net::UpdateTopology{e}); }
  Outs Result(ConnId c, std::uint64_t e, std::uint64_t tag, std::uint64_t seq) {
    return Deliver(c, net::OpResult{e, tag, seq});
  }
  Outs Fault(ConnId c, std::uint64_t e, PeerId suspect, shoal_status code) {
    return Deliver(c, net::EpochFault{e, suspect, code, 0, 0, "test"});
  }
  std::uint64_t Epoch() const { return coord_.view().epoch; }

  // A shared state of two tensors, 'w' f32[1000] and 'b' f32[10], holding these contents.
  static std::vector<net::TensorReport> State(std::uint64_t w_hash, std::uint64_t b_hash) {
    return {net::TensorReport{"w", SHOAL_F32, false, 1000, w_hash},
            net::TensorReport{"b", SHOAL_F32, false, 10, b_hash}};
  }
  Outs Report(ConnId c, std::uint64_t e, std::uint64_t seq, std::uint64_t revision,
              std::vector<net::TensorReport> tensors = State(11, 22)) {
    return Deliver(c, net::SyncReport{e, seq, revision, std::move(tensors)});
  }
  Outs SyncResult(ConnId c, std::uint64_t e, std::uint64_t seq) {
    return Result(c, e, net::kSharedStateTag, seq);
  }
  // Runs sync `seq` to its commit: every peer of `conns` reports `revision` with the same state,
  // then sends its result. Returns the outputs of the last result.
  Outs SyncAll(const std::vector<ConnId>& conns, std::uint64_t e, std::uint64_t seq,
               std::uint64_t revision) {
    for (ConnId c : conns) Report(c, e, seq, revision);
    Outs o;
    for (ConnId c : conns) o = SyncResult(c, e, seq);
    EXPECT_EQ(o.Receivers<net::OpCommit>(), conns);
    return o;
  }

  // Lets `ms` pass in 100 ms ticks; before each tick the peers on `alive` send a heartbeat.
  // Returns every output of the ticks.
  Outs Pass(TimeMs ms, std::initializer_list<ConnId> alive) {
    Outs all;
    for (TimeMs t = 0; t < ms; t += 100) {
      for (ConnId c : alive) {
        Outs o = Deliver(c, net::Heartbeat{});
        all.all.insert(all.all.end(), o.all.begin(), o.all.end());
      }
      Outs o = Advance(100);
      all.all.insert(all.all.end(), o.all.begin(), o.all.end());
    }
    return all;
  }

  // Readies every peer of the current proposal; returns the outputs of the last one.
  Outs ReadyAll(const std::vector<ConnId>& conns) {
    std::uint64_t e = Epoch();
    Outs o;
    for (ConnId c : conns) o = Ready(c, e);
    return o;
  }

  // Makes a committed epoch with `conns` as members in this ring order: the first peer starts the
  // empty group, the others join at its barrier. Returns the epoch number.
  std::uint64_t StartGroup(const std::vector<ConnId>& conns) {
    Outs o = Hello(conns[0]);
    EXPECT_EQ(o.To<net::EpochPropose>(conns[0]).size(), 1u);
    EXPECT_EQ(ReadyAll({conns[0]}).To<net::EpochCommit>(conns[0]).size(), 1u);
    if (conns.size() > 1) {
      for (std::size_t i = 1; i < conns.size(); ++i) Hello(conns[i]);
      o = Update(conns[0], Epoch());
      EXPECT_EQ(o.Receivers<net::EpochPropose>(), conns);
      o = ReadyAll(conns);
      EXPECT_EQ(o.Receivers<net::EpochCommit>(), conns);
    }
    View v = coord_.view();
    EXPECT_TRUE(v.committed);
    EXPECT_FALSE(v.broken);
    return v.epoch;
  }

  Coordinator coord_;
  TimeMs now_ = 100'000;
};

// ---- Admission -------------------------------------------------------------------------------

TEST_F(CoordinatorTest, FirstPeerIsWelcomedAndStartsTheEmptyGroup) {
  Outs o = Hello(1);
  ASSERT_EQ(o.all.size(), 2u);
  auto welcome = o.To<net::Welcome>(1);
  ASSERT_EQ(welcome.size(), 1u);
  EXPECT_EQ(welcome[0].peer_id, Id(1));
  EXPECT_EQ(welcome[0].heartbeat_interval_ms, 100u);
  EXPECT_EQ(welcome[0].heartbeat_timeout_ms, 1000u);
  EXPECT_TRUE(std::holds_alternative<net::Welcome>(o.all[0].message));  // Welcome first
  auto propose = o.To<net::EpochPropose>(1);
  ASSERT_EQ(propose.size(), 1u);
  EXPECT_EQ(propose[0].epoch, 1u);
  EXPECT_EQ(propose[0].streams_per_link, 2u);
  EXPECT_EQ(propose[0].segment_bytes, 1u << 16);
  ASSERT_EQ(propose[0].members.size(), 1u);
  EXPECT_EQ(propose[0].members[0], (net::Member{Id(1), "host1", 1}));
  View v = coord_.view();
  EXPECT_EQ(v.epoch, 1u);
  EXPECT_FALSE(v.committed);
  EXPECT_EQ(v.members, Ids({1}));
  EXPECT_TRUE(v.pending.empty());

  o = Ready(1, 1);
  EXPECT_EQ(o.To<net::EpochCommit>(1).size(), 1u);
  EXPECT_TRUE(coord_.view().committed);
}

TEST_F(CoordinatorTest, PeersArrivingDuringTheFirstSetupWaitForTheBarrier) {
  Hello(1);
  Outs o = Hello(2);
  EXPECT_EQ(o.To<net::Welcome>(2).size(), 1u);
  EXPECT_FALSE(o.Any<net::EpochPropose>());
  EXPECT_EQ(coord_.view().pending, Ids({2}));
  o = Ready(1, 1);
  EXPECT_EQ(o.Receivers<net::EpochCommit>(), std::vector<ConnId>{1});
  o = Update(1, 1);
  auto p = o.To<net::EpochPropose>(2);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].epoch, 2u);
  EXPECT_EQ(MemberIds(p[0]), Ids({1, 2}));
}

TEST_F(CoordinatorTest, PeerIdZeroIsRejected) {
  Connect(1);
  Outs o = Deliver(1, net::Hello{0, "h", 1, std::nullopt});
  ASSERT_EQ(o.To<net::Reject>(1).size(), 1u);
  EXPECT_TRUE(o.Closed(1));
  EXPECT_EQ(coord_.view().epoch, 0u);
  EXPECT_TRUE(Drop(1).all.empty());  // forgotten
}

TEST_F(CoordinatorTest, DuplicateLivePeerIdIsRejectedAndTheFirstKeepsItsPlace) {
  StartGroup({1});
  Connect(2);
  Outs o = Deliver(2, net::Hello{Id(1), "elsewhere", 9, std::nullopt});
  auto reject = o.To<net::Reject>(2);
  ASSERT_EQ(reject.size(), 1u);
  EXPECT_EQ(reject[0].code, SHOAL_ERR_REJECTED);
  EXPECT_TRUE(o.Closed(2));
  EXPECT_FALSE(o.Closed(1));
  EXPECT_TRUE(Result(1, 1, 0, 0).To<net::OpCommit>(1).size() == 1u);  // the member still works
}

TEST_F(CoordinatorTest, SamePeerIdIsAcceptedAgainOnceTheFirstConnectionIsGone) {
  StartGroup({1, 2});
  Drop(2);
  Connect(3);
  Outs o = Deliver(3, net::Hello{Id(2), "h", 2, std::nullopt});
  EXPECT_EQ(o.To<net::Welcome>(3).size(), 1u);
  EXPECT_EQ(coord_.view().pending, std::vector<PeerId>{Id(2)});
}

TEST_F(CoordinatorTest, TooManyPendingPeersAreRejected) {
  Config c = TestConfig();
  c.max_pending = 2;
  Coordinator coord(c);
  std::vector<Output> out;
  for (ConnId conn = 1; conn <= 4; ++conn) {
    coord.OnConnect(conn, 0);
    out.clear();
    coord.OnMessage(conn, net::Hello{Id(conn), "h", 1, std::nullopt}, 0, &out);
  }
  // Peer 1 is proposed at once (not pending), 2 and 3 are pending, 4 is one too many.
  ASSERT_FALSE(out.empty());
  EXPECT_TRUE(std::holds_alternative<net::Reject>(out[0].message));
  EXPECT_EQ(out.back().kind, Output::Kind::kClose);
  EXPECT_EQ(coord.view().pending, Ids({2, 3}));
}

TEST_F(CoordinatorTest, HelloTimeoutClosesSilentConnections) {
  Connect(1);
  EXPECT_FALSE(Advance(499).Closed(1));
  Outs o = Advance(1);
  EXPECT_TRUE(o.Closed(1));
  EXPECT_FALSE(o.Any<net::Heartbeat>());  // never welcomed: no heartbeats
  EXPECT_TRUE(Drop(1).all.empty());
}

TEST_F(CoordinatorTest, MaxMembersCapsAdmission) {
  Config c = TestConfig();
  c.max_members = 2;
  Coordinator coord(c);
  std::vector<Output> out;
  for (ConnId conn = 1; conn <= 3; ++conn) {
    coord.OnConnect(conn, 0);
    coord.OnMessage(conn, net::Hello{Id(conn), "h", 1, std::nullopt}, 0, &out);
  }
  coord.OnMessage(1, net::EpochReady{1, true, 0, SHOAL_OK}, 0, &out);
  out.clear();
  coord.OnMessage(1, net::UpdateTopology{1}, 0, &out);
  EXPECT_EQ(coord.view().members, Ids({1, 2}));
  EXPECT_EQ(coord.view().pending, Ids({3}));
  coord.OnMessage(1, net::EpochReady{2, true, 0, SHOAL_OK}, 0, &out);
  coord.OnMessage(2, net::EpochReady{2, true, 0, SHOAL_OK}, 0, &out);
  out.clear();
  coord.OnMessage(1, net::UpdateTopology{2}, 0, &out);
  coord.OnMessage(2, net::UpdateTopology{2}, 0, &out);
  // Full: the list is the same, so the epoch stays.
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(std::holds_alternative<net::TopologyUnchanged>(out[0].message));
}

// ---- The (state x event) table ---------------------------------------------------------------

enum class Subject { kHandshaking, kPending, kProposed, kReady, kMember };
enum class Verdict {
  kAccepted,  // no Error, no Close
  kRefused,   // Error{PROTOCOL} and Close
  kClosed,    // Close without Error (Leave)
};

const char* SubjectName(Subject s) {
  switch (s) {
    case Subject::kHandshaking:
      return "Handshaking";
    case Subject::kPending:
      return "Pending";
    case Subject::kProposed:
      return "Proposed";
    case Subject::kReady:
      return "Ready";
    case Subject::kMember:
      return "Member";
  }
  return "?";
}

// Every message type, with the epoch number filled in with the coordinator's current one.
std::vector<Message> AllMessages(PeerId self, std::uint64_t e) {
  return {net::Hello{self, "h", 1, std::nullopt},
          net::Welcome{self, 1, 2},
          net::Reject{},
          net::Heartbeat{},
          net::UpdateTopology{e},
          net::TopologyUnchanged{e},
          net::EpochPropose{e, 1, 4096, {}},
          net::EpochReady{e, true, 0, SHOAL_OK},
          net::EpochCommit{e},
          net::OpResult{e, 7, 0},
          net::OpCommit{e, 7, 0},
          net::EpochFault{e, self, SHOAL_ERR_TIMEOUT, 7, 0, "x"},
          net::EpochAbort{e, SHOAL_ERR_PEER_LOST, self},
          net::Leave{},
          net::Removed{},
          net::Error{},
          net::DataHello{e, self, self, 0, 1},
          net::SyncReport{e, 0, 0, {}},
          net::SyncPlan{e, 0, SHOAL_OK, "", 0, {}, {}, {}}};
}

Verdict Expected(Subject s, net::MsgType t) {
  using net::MsgType;
  switch (t) {
    case MsgType::kHello:
      return s == Subject::kHandshaking ? Verdict::kAccepted : Verdict::kRefused;
    case MsgType::kHeartbeat:
      return s == Subject::kHandshaking ? Verdict::kRefused : Verdict::kAccepted;
    case MsgType::kUpdateTopology:  // only a committed member may enter the barrier of its epoch
      return s == Subject::kMember ? Verdict::kAccepted : Verdict::kRefused;
    case MsgType::kEpochReady:  // once per proposal, from a peer in it
      return s == Subject::kProposed ? Verdict::kAccepted : Verdict::kRefused;
    case MsgType::kOpResult:
    case MsgType::kEpochFault:
    case MsgType::kSyncReport:
      return s == Subject::kMember ? Verdict::kAccepted : Verdict::kRefused;
    case MsgType::kLeave:
      return s == Subject::kHandshaking ? Verdict::kRefused : Verdict::kClosed;
    case MsgType::kWelcome:
    case MsgType::kReject:
    case MsgType::kTopologyUnchanged:
    case MsgType::kEpochPropose:
    case MsgType::kEpochCommit:
    case MsgType::kOpCommit:
    case MsgType::kEpochAbort:
    case MsgType::kRemoved:
    case MsgType::kError:
    case MsgType::kDataHello:
    case MsgType::kDataSegment:
    case MsgType::kSyncPlan:
    case MsgType::kAuthHello:  // the server's handshake, never the state machine's
    case MsgType::kAuthChallenge:
    case MsgType::kAuthProof:
      return Verdict::kRefused;
  }
  return Verdict::kRefused;
}

class StateEventTable : public CoordinatorTest,
                        public ::testing::WithParamInterface<std::tuple<Subject, int>> {
 protected:
  // Puts connection 9 in the state under test; 1 and 2 are members around it where needed.
  void Arrange(Subject s) {
    switch (s) {
      case Subject::kHandshaking:
        StartGroup({1, 2});
        Connect(9);
        return;
      case Subject::kPending:
        StartGroup({1, 2});
        Hello(9);
        return;
      case Subject::kProposed:
        StartGroup({1, 2});
        Hello(9);
        Update(1, Epoch());
        Update(2, Epoch());
        return;
      case Subject::kReady:
        Arrange(Subject::kProposed);
        Ready(9, Epoch());
        return;
      case Subject::kMember:
        StartGroup({1, 2, 9});
        return;
    }
  }
};

TEST_P(StateEventTable, Verdict) {
  auto [subject, index] = GetParam();
  Arrange(subject);
  Message m = AllMessages(Id(9), Epoch())[index];
  View before = coord_.view();
  Outs o = Deliver(9, m);
  Verdict want = Expected(subject, net::TypeOf(m));
  switch (want) {
    case Verdict::kAccepted:
      EXPECT_TRUE(o.To<net::Error>(9).empty());
      EXPECT_FALSE(o.Closed(9));
      break;
    case Verdict::kRefused:
      EXPECT_TRUE(o.Refused(9));
      EXPECT_TRUE(Drop(9).all.empty());  // forgotten once closed
      break;
    case Verdict::kClosed:
      EXPECT_TRUE(o.To<net::Error>(9).empty());
      EXPECT_TRUE(o.Closed(9));
      EXPECT_TRUE(Drop(9).all.empty());
      break;
  }
  // The rest of the group is still served: an illegal move costs the group at most the sender.
  View after = coord_.view();
  EXPECT_GE(after.highest_epoch, before.highest_epoch);
  EXPECT_FALSE(o.Closed(1));
  EXPECT_FALSE(o.Closed(2));
  if (subject == Subject::kMember && want == Verdict::kRefused) {
    auto abort = o.To<net::EpochAbort>(1);
    ASSERT_EQ(abort.size(), 1u);
    EXPECT_EQ(abort[0].code, SHOAL_ERR_PEER_LOST);
    EXPECT_EQ(abort[0].lost_peer, Id(9));
  }
  if ((subject == Subject::kProposed || subject == Subject::kReady) && want != Verdict::kAccepted) {
    auto p = o.To<net::EpochPropose>(1);  // the rest is proposed again
    ASSERT_EQ(p.size(), 1u);
    EXPECT_EQ(MemberIds(p[0]), Ids({1, 2}));
    EXPECT_EQ(p[0].epoch, before.epoch + 1);
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllStatesAllMessages, StateEventTable,
    ::testing::Combine(::testing::Values(Subject::kHandshaking, Subject::kPending,
                                         Subject::kProposed, Subject::kReady, Subject::kMember),
                       ::testing::Range(0, static_cast<int>(AllMessages(1, 1).size()))),
    [](const ::testing::TestParamInfo<std::tuple<Subject, int>>& info) {
      Message m = AllMessages(1, 1)[std::get<1>(info.param)];
      return std::string(SubjectName(std::get<0>(info.param))) + "_" +
             net::MsgTypeName(net::TypeOf(m));
    });

// ---- Epoch setup -----------------------------------------------------------------------------

TEST_F(CoordinatorTest, CommitOnlyWhenEveryProposedPeerIsReady) {
  StartGroup({1});
  Hello(2);
  Hello(3);
  Update(1, 1);
  EXPECT_TRUE(Ready(1, 2).Quiet());
  EXPECT_TRUE(Ready(3, 2).Quiet());
  EXPECT_FALSE(coord_.view().committed);
  Outs o = Ready(2, 2);
  EXPECT_EQ(o.Receivers<net::EpochCommit>(), (std::vector<ConnId>{1, 2, 3}));
  View v = coord_.view();
  EXPECT_TRUE(v.committed);
  EXPECT_EQ(v.members, Ids({1, 2, 3}));
}

TEST_F(CoordinatorTest, FailedReadyDemotesTheSuspectAndProposesTheRest) {
  StartGroup({1});
  Hello(2);
  Hello(3);
  Update(1, 1);
  Hello(4);  // arrives during the setup: not part of the re-proposal
  Ready(1, 2);
  Outs o = Fail(2, 2, Id(3), SHOAL_ERR_PEER_LOST);
  auto removed = o.To<net::Removed>(3);
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0].code, SHOAL_ERR_PEER_LOST);
  EXPECT_FALSE(o.Closed(3));
  EXPECT_EQ(o.Receivers<net::EpochPropose>(), (std::vector<ConnId>{1, 2}));
  EXPECT_EQ(MemberIds(o.To<net::EpochPropose>(1)[0]), Ids({1, 2}));
  View v = coord_.view();
  EXPECT_EQ(v.epoch, 3u);
  EXPECT_EQ(v.pending, Ids({4, 3}));  // the demoted peer queues behind the waiting one
  // Readies of the abandoned proposal are stale and ignored.
  EXPECT_TRUE(Ready(1, 2).Quiet());
  EXPECT_TRUE(Ready(3, 2).Quiet());
  ReadyAll({1, 2});
  EXPECT_TRUE(coord_.view().committed);
}

TEST_F(CoordinatorTest, FailedReadyNamingAnOutsiderDemotesTheReporter) {
  StartGroup({1});
  Hello(2);
  Update(1, 1);
  Outs o = Fail(2, 2, 0xdead, SHOAL_ERR_TIMEOUT);
  EXPECT_EQ(o.To<net::Removed>(2).size(), 1u);
  EXPECT_EQ(o.Receivers<net::EpochPropose>(), std::vector<ConnId>{1});
}

TEST_F(CoordinatorTest, LossDuringSetupProposesTheRestWithoutRemoved) {
  StartGroup({1});
  Hello(2);
  Hello(3);
  Update(1, 1);
  Ready(2, 2);
  Outs o = Drop(2);
  EXPECT_FALSE(o.AnyClose());
  EXPECT_FALSE(o.Any<net::Removed>());
  EXPECT_EQ(o.Receivers<net::EpochPropose>(), (std::vector<ConnId>{1, 3}));
  EXPECT_EQ(coord_.view().epoch, 3u);
}

TEST_F(CoordinatorTest, LeaveDuringSetupProposesTheRest) {
  StartGroup({1});
  Hello(2);
  Update(1, 1);
  Outs o = Deliver(2, net::Leave{});
  EXPECT_TRUE(o.Closed(2));
  EXPECT_EQ(o.Receivers<net::EpochPropose>(), std::vector<ConnId>{1});
}

TEST_F(CoordinatorTest, SetupTimeoutDemotesThePeersThatAreNotReady) {
  StartGroup({1});
  Hello(2);
  Hello(3);
  Update(1, 1);
  Ready(1, 2);
  Ready(3, 2);
  EXPECT_FALSE(Pass(1400, {1, 2, 3}).Any<net::Removed>());
  Outs o = Pass(100, {1, 2, 3});
  auto removed = o.To<net::Removed>(2);
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0].code, SHOAL_ERR_TIMEOUT);
  EXPECT_EQ(o.Receivers<net::EpochPropose>(), (std::vector<ConnId>{1, 3}));
  // The late ready is stale now.
  EXPECT_TRUE(Ready(2, 2).Quiet());
}

TEST_F(CoordinatorTest, AGroupWithNoOneLeftStartsOverFromThePendingPeers) {
  Hello(1);
  Hello(2);  // pending while 1 sets up alone
  Outs o = Drop(1);
  auto p = o.To<net::EpochPropose>(2);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].epoch, 2u);
  EXPECT_EQ(MemberIds(p[0]), Ids({2}));
}

TEST_F(CoordinatorTest, SetupTimeoutOfTheOnlyPeerProposesItAgainWithANewNumber) {
  Hello(1);
  Outs o = Pass(1400, {1});
  EXPECT_FALSE(o.Any<net::Removed>());
  o = Pass(100, {1});
  ASSERT_EQ(o.To<net::Removed>(1).size(), 1u);
  auto p = o.To<net::EpochPropose>(1);  // an empty group proposes its pending peers
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].epoch, 2u);
  EXPECT_TRUE(Ready(1, 1).all.empty());  // stale
  EXPECT_EQ(Ready(1, 2).To<net::EpochCommit>(1).size(), 1u);
}

// ---- update_topology -------------------------------------------------------------------------

TEST_F(CoordinatorTest, BarrierWaitsForEveryMemberThenReportsUnchanged) {
  std::uint64_t e = StartGroup({1, 2, 3});
  EXPECT_TRUE(Update(2, e).Quiet());
  EXPECT_TRUE(Update(1, e).Quiet());
  EXPECT_EQ(coord_.view().barrier, Ids({1, 2}));
  Outs o = Update(3, e);
  EXPECT_EQ(o.Receivers<net::TopologyUnchanged>(), (std::vector<ConnId>{1, 2, 3}));
  EXPECT_EQ(o.To<net::TopologyUnchanged>(1)[0].epoch, e);
  View v = coord_.view();
  EXPECT_EQ(v.epoch, e);
  EXPECT_TRUE(v.barrier.empty());
  // A second barrier in the same epoch works the same way.
  Update(1, e);
  Update(2, e);
  EXPECT_EQ(Update(3, e).Receivers<net::TopologyUnchanged>().size(), 3u);
  // Ops still commit in the unchanged epoch.
  Result(1, e, 0, 0);
  Result(2, e, 0, 0);
  EXPECT_EQ(Result(3, e, 0, 0).Receivers<net::OpCommit>().size(), 3u);
}

TEST_F(CoordinatorTest, BarrierAdmitsPendingPeersInArrivalOrder) {
  std::uint64_t e = StartGroup({1, 2});
  Hello(5);
  Hello(4);
  Update(1, e);
  Outs o = Update(2, e);
  EXPECT_EQ(o.Receivers<net::EpochPropose>(), (std::vector<ConnId>{1, 2, 5, 4}));
  auto p = o.To<net::EpochPropose>(4);
  EXPECT_EQ(p[0].epoch, e + 1);
  EXPECT_EQ(p[0].members[2], (net::Member{Id(5), "host5", 5}));
}

TEST_F(CoordinatorTest, BarrierOfABrokenEpochProposesEvenTheSameList) {
  std::uint64_t e = StartGroup({1, 2});
  Fault(1, e, Id(2), SHOAL_ERR_TIMEOUT);
  Update(1, e);
  Outs o = Update(2, e);
  EXPECT_FALSE(o.Any<net::TopologyUnchanged>());
  EXPECT_EQ(o.Receivers<net::EpochPropose>(), (std::vector<ConnId>{1, 2}));
  EXPECT_EQ(coord_.view().epoch, e + 1);
}

TEST_F(CoordinatorTest, BarrierTimeoutAbortsAndDemotesTheLateMembers) {
  std::uint64_t e = StartGroup({1, 2, 3});
  Hello(4);
  Update(1, e);
  Update(3, e);
  EXPECT_FALSE(Pass(1900, {1, 2, 3, 4}).Any<net::Removed>());
  Outs o = Pass(100, {1, 2, 3, 4});
  // The epoch breaks with (TIMEOUT, late member) for everyone, the late one included.
  EXPECT_EQ(o.Receivers<net::EpochAbort>(), (std::vector<ConnId>{1, 2, 3}));
  auto abort = o.To<net::EpochAbort>(2)[0];
  EXPECT_EQ(abort.code, SHOAL_ERR_TIMEOUT);
  EXPECT_EQ(abort.lost_peer, Id(2));
  auto removed = o.To<net::Removed>(2);
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0].code, SHOAL_ERR_TIMEOUT);
  // The proposal has the punctual members and the waiting peer, not the demoted one.
  EXPECT_EQ(o.Receivers<net::EpochPropose>(), (std::vector<ConnId>{1, 3, 4}));
  EXPECT_EQ(coord_.view().pending, Ids({2}));
  // Its UpdateTopology, sent before it learnt, gets a non-fatal Error.
  Outs late = Update(2, e);
  auto err = late.To<net::Error>(2);
  ASSERT_EQ(err.size(), 1u);
  EXPECT_EQ(err[0].code, SHOAL_ERR_EPOCH_CHANGED);
  EXPECT_FALSE(late.Closed(2));
}

TEST_F(CoordinatorTest, MemberLossCompletesAWaitingBarrier) {
  std::uint64_t e = StartGroup({1, 2, 3});
  Update(1, e);
  Update(2, e);
  Outs o = Drop(3);
  EXPECT_EQ(o.Receivers<net::EpochAbort>(), (std::vector<ConnId>{1, 2}));
  EXPECT_EQ(o.Receivers<net::EpochPropose>(), (std::vector<ConnId>{1, 2}));
}

TEST_F(CoordinatorTest, BarrierWhoseEntrantsAllDiedStartsOver) {
  std::uint64_t e = StartGroup({1, 2, 3});
  Update(1, e);
  Drop(1);
  Outs o = Pass(3000, {2, 3});
  EXPECT_FALSE(o.Any<net::Removed>());  // no barrier deadline without an entrant
  EXPECT_TRUE(coord_.view().barrier.empty());
  Update(2, e);
  EXPECT_EQ(Update(3, e).Receivers<net::EpochPropose>(), (std::vector<ConnId>{2, 3}));
}

TEST_F(CoordinatorTest, UpdateTopologyForAFutureEpochIsAProtocolError) {
  std::uint64_t e = StartGroup({1, 2});
  Outs o = Update(1, e + 1);
  EXPECT_TRUE(o.Refused(1));
  EXPECT_EQ(o.To<net::EpochAbort>(2)[0].lost_peer, Id(1));
}

TEST_F(CoordinatorTest, StaleUpdateTopologyOfAMemberGetsANonFatalError) {
  // 3 is demoted by a barrier timeout while its UpdateTopology is on the way, then admitted again
  // and committed before that message arrives.
  std::uint64_t e = StartGroup({1, 2, 3});
  Update(1, e);
  Update(2, e);
  Pass(2000, {1, 2, 3});
  ReadyAll({1, 2});
  std::uint64_t e2 = Epoch();
  Update(1, e2);
  Update(2, e2);
  ReadyAll({1, 2, 3});
  ASSERT_TRUE(coord_.view().committed);
  ASSERT_EQ(coord_.view().members, Ids({1, 2, 3}));
  Outs o = Update(3, e);
  EXPECT_EQ(o.To<net::Error>(3).size(), 1u);
  EXPECT_FALSE(o.Closed(3));
  // Stale results and faults of the old epoch are ignored silently.
  EXPECT_TRUE(Result(3, e, 0, 0).all.empty());
  EXPECT_TRUE(Fault(3, e, Id(1), SHOAL_ERR_TIMEOUT).all.empty());
  EXPECT_FALSE(coord_.view().broken);
}

// ---- Ops and the agreed outcome --------------------------------------------------------------

TEST_F(CoordinatorTest, OpCommitsOnlyWhenEveryMemberReported) {
  std::uint64_t e = StartGroup({1, 2, 3});
  EXPECT_TRUE(Result(1, e, 5, 0).all.empty());
  EXPECT_TRUE(Result(3, e, 5, 0).all.empty());
  EXPECT_TRUE(Result(2, e, 6, 0).all.empty());  // another op does not count
  Outs o = Result(2, e, 5, 0);
  EXPECT_EQ(o.Receivers<net::OpCommit>(), (std::vector<ConnId>{1, 2, 3}));
  auto c = o.To<net::OpCommit>(1)[0];
  EXPECT_EQ(c.epoch, e);
  EXPECT_EQ(c.tag, 5u);
  EXPECT_EQ(c.seq, 0u);
  Result(1, e, 6, 0);
  EXPECT_EQ(Result(3, e, 6, 0).Receivers<net::OpCommit>().size(), 3u);
}

TEST_F(CoordinatorTest, GroupOfOneCommitsAtOnce) {
  std::uint64_t e = StartGroup({1});
  EXPECT_EQ(Result(1, e, 0, 0).To<net::OpCommit>(1).size(), 1u);
}

TEST_F(CoordinatorTest, DuplicateOpResultIsAProtocolError) {
  std::uint64_t e = StartGroup({1, 2, 3});
  Result(1, e, 0, 0);
  Outs o = Result(1, e, 0, 0);
  EXPECT_TRUE(o.Refused(1));
  EXPECT_EQ(o.Receivers<net::EpochAbort>(), (std::vector<ConnId>{2, 3}));
  EXPECT_FALSE(o.Any<net::OpCommit>());
}

TEST_F(CoordinatorTest, OpResultForAFutureEpochIsAProtocolError) {
  std::uint64_t e = StartGroup({1, 2});
  EXPECT_TRUE(Result(2, e + 1, 0, 0).Refused(2));
}

TEST_F(CoordinatorTest, TooManyOpenOpsIsAProtocolError) {
  Config c = TestConfig();
  c.max_open_ops = 3;
  Coordinator coord(c);
  std::vector<Output> out;
  coord.OnConnect(1, 0);
  coord.OnMessage(1, net::Hello{Id(1), "h", 1, std::nullopt}, 0, &out);
  coord.OnConnect(2, 0);
  coord.OnMessage(2, net::Hello{Id(2), "h", 2, std::nullopt}, 0, &out);
  coord.OnMessage(1, net::EpochReady{1, true, 0, SHOAL_OK}, 0, &out);
  coord.OnMessage(1, net::UpdateTopology{1}, 0, &out);
  coord.OnMessage(1, net::EpochReady{2, true, 0, SHOAL_OK}, 0, &out);
  coord.OnMessage(2, net::EpochReady{2, true, 0, SHOAL_OK}, 0, &out);
  ASSERT_TRUE(coord.view().committed);
  for (std::uint64_t seq = 0; seq < 3; ++seq) {
    out.clear();
    coord.OnMessage(1, net::OpResult{2, 0, seq}, 0, &out);
    EXPECT_TRUE(out.empty());
  }
  out.clear();
  coord.OnMessage(2, net::OpResult{2, 0, 0}, 0, &out);  // completes one: a slot frees up
  EXPECT_EQ(out.size(), 2u);
  out.clear();
  coord.OnMessage(1, net::OpResult{2, 0, 3}, 0, &out);
  EXPECT_TRUE(out.empty());
  out.clear();
  coord.OnMessage(1, net::OpResult{2, 0, 4}, 0, &out);
  ASSERT_EQ(out.size(), 3u);  // Error, Close, EpochAbort to 2
  EXPECT_TRUE(std::holds_alternative<net::Error>(out[0].message));
  EXPECT_EQ(out[1].kind, Output::Kind::kClose);
  EXPECT_TRUE(coord.view().broken);
}

TEST_F(CoordinatorTest, FaultAbortsOnceWithTheSuspectAndCode) {
  std::uint64_t e = StartGroup({1, 2, 3});
  Result(1, e, 0, 0);
  Outs o = Fault(2, e, Id(3), SHOAL_ERR_MISMATCH);
  EXPECT_EQ(o.Receivers<net::EpochAbort>(), (std::vector<ConnId>{1, 2, 3}));
  auto a = o.To<net::EpochAbort>(3)[0];
  EXPECT_EQ(a.epoch, e);
  EXPECT_EQ(a.code, SHOAL_ERR_MISMATCH);
  EXPECT_EQ(a.lost_peer, Id(3));
  View v = coord_.view();
  EXPECT_TRUE(v.broken);
  EXPECT_EQ(v.abort_reason.lost_peer, Id(3));
  // Once per epoch: later faults, losses and results change nothing.
  EXPECT_TRUE(Fault(1, e, Id(2), SHOAL_ERR_TIMEOUT).all.empty());
  EXPECT_TRUE(Result(2, e, 0, 0).all.empty());
  EXPECT_TRUE(Result(3, e, 0, 0).all.empty());
  EXPECT_TRUE(Drop(3).all.empty());
  EXPECT_EQ(coord_.view().abort_reason.code, SHOAL_ERR_MISMATCH);
}

TEST_F(CoordinatorTest, FaultNamingNoMemberNamesTheReportersPreviousNeighbour) {
  std::uint64_t e = StartGroup({1, 2, 3});
  Outs o = Fault(1, e, 0, SHOAL_ERR_TIMEOUT);
  EXPECT_EQ(o.To<net::EpochAbort>(2)[0].lost_peer, Id(3));  // 1's previous neighbour wraps to 3
  e = e + 1;
  Update(1, e - 1);
  Update(2, e - 1);
  Update(3, e - 1);
  ReadyAll({1, 2, 3});
  o = Fault(2, e, 0xbeef, SHOAL_ERR_PEER_LOST);
  EXPECT_EQ(o.To<net::EpochAbort>(2)[0].lost_peer, Id(1));
}

TEST_F(CoordinatorTest, DeadlineFaultWithoutSuspectNamesTheMemberThatHasNotReportedTheOp) {
  // Ring 1 -> 2 -> 3 -> 4. Members 1, 2 and 4 finished op (tag 5, seq 0); 3 never did. Member 1's
  // deadline passes while it waits for the verdict: it names no suspect, only the op.
  std::uint64_t e = StartGroup({1, 2, 3, 4});
  Result(1, e, 5, 0);
  Result(2, e, 5, 0);
  Result(4, e, 5, 0);
  Outs o = Deliver(1, net::EpochFault{e, 0, SHOAL_ERR_TIMEOUT, 5, 0, "deadline"});
  auto a = o.To<net::EpochAbort>(2)[0];
  EXPECT_EQ(a.code, SHOAL_ERR_TIMEOUT);
  EXPECT_EQ(a.lost_peer, Id(3));  // not 1's previous neighbour (4), which had reported
}

TEST_F(CoordinatorTest, FaultWithCodeOkIsAProtocolError) {
  std::uint64_t e = StartGroup({1, 2});
  EXPECT_TRUE(Fault(1, e, Id(2), SHOAL_OK).Refused(1));
}

TEST_F(CoordinatorTest, MemberLossAbortsWithPeerLost) {
  std::uint64_t e = StartGroup({1, 2, 3});
  Result(1, e, 0, 0);
  Result(2, e, 0, 0);
  Outs o = Drop(3);
  EXPECT_FALSE(o.AnyClose());
  EXPECT_EQ(o.Receivers<net::EpochAbort>(), (std::vector<ConnId>{1, 2}));
  EXPECT_EQ(o.To<net::EpochAbort>(1)[0].code, SHOAL_ERR_PEER_LOST);
  EXPECT_EQ(o.To<net::EpochAbort>(1)[0].lost_peer, Id(3));
  EXPECT_TRUE(Drop(3).all.empty());  // already forgotten
  Update(1, e);
  o = Update(2, e);
  EXPECT_EQ(MemberIds(o.To<net::EpochPropose>(1)[0]), Ids({1, 2}));
}

TEST_F(CoordinatorTest, LeaveAbortsWithPeerLeftAndClosesTheLeaver) {
  std::uint64_t e = StartGroup({1, 2, 3});
  Outs o = Deliver(2, net::Leave{});
  EXPECT_TRUE(o.Closed(2));
  EXPECT_TRUE(o.To<net::EpochAbort>(2).empty());
  EXPECT_EQ(o.Receivers<net::EpochAbort>(), (std::vector<ConnId>{1, 3}));
  EXPECT_EQ(o.To<net::EpochAbort>(1)[0].code, SHOAL_ERR_PEER_LEFT);
  EXPECT_EQ(o.To<net::EpochAbort>(1)[0].lost_peer, Id(2));
  EXPECT_TRUE(Drop(2).all.empty());
  Update(1, e);
  o = Update(3, e);
  EXPECT_EQ(MemberIds(o.To<net::EpochPropose>(1)[0]), Ids({1, 3}));
}

TEST_F(CoordinatorTest, LeaveOfAPendingPeerJustForgetsIt) {
  StartGroup({1});
  Hello(2);
  Outs o = Deliver(2, net::Leave{});
  EXPECT_TRUE(o.Closed(2));
  EXPECT_EQ(o.all.size(), 1u);
  EXPECT_TRUE(coord_.view().pending.empty());
  EXPECT_FALSE(coord_.view().broken);
}

TEST_F(CoordinatorTest, LastMemberGoneEmptiesTheGroupAndPendingPeersStartIt) {
  std::uint64_t e = StartGroup({1});
  Hello(2);
  Outs o = Deliver(1, net::Leave{});
  auto p = o.To<net::EpochPropose>(2);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].epoch, e + 1);
  EXPECT_EQ(MemberIds(p[0]), Ids({2}));
}

TEST_F(CoordinatorTest, LastMemberGoneWithNoOneWaitingLeavesAnEmptyGroup) {
  std::uint64_t e = StartGroup({1});
  Drop(1);
  View v = coord_.view();
  EXPECT_TRUE(v.members.empty());
  EXPECT_FALSE(v.committed);
  EXPECT_EQ(v.epoch, e);
  Outs o = Hello(2);
  EXPECT_EQ(o.To<net::EpochPropose>(2)[0].epoch, e + 1);
}

// ---- Shared-state syncs ----------------------------------------------------------------------

// (connection, message type name) of every send, in output order.
using SendList = std::vector<std::pair<ConnId, std::string>>;
SendList Sends(const Outs& o) {
  SendList r;
  for (const Output& x : o.all) {
    if (x.kind == Output::Kind::kSend) {
      r.emplace_back(x.conn, net::MsgTypeName(net::TypeOf(x.message)));
    }
  }
  return r;
}

TEST_F(CoordinatorTest, SyncPlansGoToEveryMemberOnlyAfterTheLastReport) {
  std::uint64_t e = StartGroup({1, 2, 3});
  EXPECT_TRUE(Report(1, e, 0, 0).all.empty());
  EXPECT_TRUE(Report(3, e, 0, 0).all.empty());
  Outs o = Report(2, e, 0, 0);
  EXPECT_EQ(o.Receivers<net::SyncPlan>(), (std::vector<ConnId>{1, 2, 3}));
  EXPECT_EQ(o.all.size(), 3u);  // nothing else: no commit before the results
  for (ConnId c : {1, 2, 3}) {
    auto plan = o.To<net::SyncPlan>(c);
    ASSERT_EQ(plan.size(), 1u);
    EXPECT_EQ(plan[0].epoch, e);
    EXPECT_EQ(plan[0].seq, 0u);
    EXPECT_EQ(plan[0].code, SHOAL_OK);
    EXPECT_EQ(plan[0].revision, 0u);
    EXPECT_TRUE(plan[0].sends.empty() && plan[0].recvs.empty() && plan[0].expect.empty());
  }
  EXPECT_FALSE(coord_.view().revision.has_value());  // planned, not committed
}

TEST_F(CoordinatorTest, SyncPlanMovesADifferingTensorFromAHolder) {
  // Members 1 and 3 hold 'b' with hash 22, member 2 with 99: 2 receives the 40 bytes of tensor 1
  // from the earliest holder and checks them against 22.
  std::uint64_t e = StartGroup({1, 2, 3});
  Report(1, e, 0, 4, State(11, 22));
  Report(2, e, 0, 4, State(11, 99));
  Outs o = Report(3, e, 0, 4, State(11, 22));
  ASSERT_EQ(o.Receivers<net::SyncPlan>(), (std::vector<ConnId>{1, 2, 3}));
  net::SyncPlan p1 = o.One<net::SyncPlan>(1);
  net::SyncPlan p2 = o.One<net::SyncPlan>(2);
  net::SyncPlan p3 = o.One<net::SyncPlan>(3);
  for (const net::SyncPlan* p : {&p1, &p2, &p3}) {
    EXPECT_EQ(p->code, SHOAL_OK);
    EXPECT_EQ(p->revision, 4u);
    EXPECT_EQ(p->epoch, e);
  }
  EXPECT_EQ(p1.sends, (std::vector<net::TransferPiece>{{Id(2), 1, 0, 40}}));
  EXPECT_TRUE(p1.recvs.empty());
  EXPECT_TRUE(p1.expect.empty());
  EXPECT_EQ(p2.recvs, (std::vector<net::TransferPiece>{{Id(1), 1, 0, 40}}));
  EXPECT_EQ(p2.expect, (std::vector<net::ExpectedHash>{{1, 22}}));
  EXPECT_TRUE(p2.sends.empty());
  EXPECT_TRUE(p3.sends.empty() && p3.recvs.empty() && p3.expect.empty());
}

TEST_F(CoordinatorTest, SyncCommitsAfterEveryResultAndOnlyThenSetsTheRevision) {
  std::uint64_t e = StartGroup({1, 2, 3});
  Report(1, e, 0, 7);
  Report(2, e, 0, 7);
  Report(3, e, 0, 7);
  EXPECT_TRUE(SyncResult(1, e, 0).all.empty());
  EXPECT_TRUE(SyncResult(3, e, 0).all.empty());
  EXPECT_FALSE(coord_.view().revision.has_value());
  Outs o = SyncResult(2, e, 0);
  EXPECT_EQ(o.Receivers<net::OpCommit>(), (std::vector<ConnId>{1, 2, 3}));
  EXPECT_EQ(o.all.size(), 3u);
  auto c = o.One<net::OpCommit>(2);
  EXPECT_EQ(c.epoch, e);
  EXPECT_EQ(c.tag, net::kSharedStateTag);
  EXPECT_EQ(c.seq, 0u);
  View v = coord_.view();
  EXPECT_EQ(v.revision, std::optional<std::uint64_t>(7));
  EXPECT_FALSE(v.broken);
  // The next sync may go one revision further; members behind are not refused, and receive the
  // tensors whose content differs.
  Report(1, e, 1, 8, State(33, 22));
  Report(2, e, 1, 7, State(11, 22));
  o = Report(3, e, 1, 8, State(33, 22));
  for (ConnId m : {1, 2, 3}) EXPECT_EQ(o.One<net::SyncPlan>(m).code, SHOAL_OK);
  EXPECT_EQ(o.One<net::SyncPlan>(2).revision, 8u);
  EXPECT_EQ(o.One<net::SyncPlan>(2).expect, (std::vector<net::ExpectedHash>{{0, 33}}));
  SyncResult(1, e, 1);
  SyncResult(2, e, 1);
  EXPECT_EQ(coord_.view().revision, std::optional<std::uint64_t>(7));
  SyncResult(3, e, 1);
  EXPECT_EQ(coord_.view().revision, std::optional<std::uint64_t>(8));
}

TEST_F(CoordinatorTest, MemberAheadOfTheGroupIsRefusedAndDemotedWhenTheSyncCommits) {
  std::uint64_t e = StartGroup({1, 2, 3});
  SyncAll({1, 2, 3}, e, 0, 5);
  ASSERT_EQ(coord_.view().revision, std::optional<std::uint64_t>(5));
  Report(1, e, 1, 6);
  Report(2, e, 1, 7);  // 5 + 2: ahead
  Outs o = Report(3, e, 1, 6);
  auto refused = o.To<net::SyncPlan>(2);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].code, SHOAL_ERR_REVISION);
  EXPECT_FALSE(refused[0].reason.empty());
  EXPECT_TRUE(refused[0].sends.empty() && refused[0].recvs.empty() && refused[0].expect.empty());
  EXPECT_EQ(o.One<net::SyncPlan>(1).code, SHOAL_OK);
  EXPECT_EQ(o.One<net::SyncPlan>(1).revision, 6u);
  EXPECT_EQ(o.One<net::SyncPlan>(3).code, SHOAL_OK);
  EXPECT_FALSE(o.Any<net::Removed>());  // refused at once, demoted only at the commit
  // The admitted commit without the refused member's result.
  EXPECT_TRUE(SyncResult(1, e, 1).all.empty());
  o = SyncResult(3, e, 1);
  EXPECT_EQ(Sends(o), (SendList{{1, "OpCommit"},
                                {2, "OpCommit"},
                                {3, "OpCommit"},
                                {1, "EpochAbort"},
                                {2, "EpochAbort"},
                                {3, "EpochAbort"},
                                {2, "Removed"}}));
  EXPECT_FALSE(o.AnyClose());
  auto abort = o.One<net::EpochAbort>(1);
  EXPECT_EQ(abort.epoch, e);
  EXPECT_EQ(abort.code, SHOAL_ERR_REVISION);
  EXPECT_EQ(abort.lost_peer, Id(2));
  EXPECT_EQ(o.One<net::Removed>(2).code, SHOAL_ERR_REVISION);
  View v = coord_.view();
  EXPECT_EQ(v.revision, std::optional<std::uint64_t>(6));
  EXPECT_TRUE(v.broken);
  EXPECT_EQ(v.abort_reason.code, SHOAL_ERR_REVISION);
  EXPECT_EQ(v.abort_reason.lost_peer, Id(2));
  EXPECT_EQ(v.pending, Ids({2}));
  // The barrier goes on without it and re-admits it.
  Update(1, e);
  o = Update(3, e);
  EXPECT_EQ(MemberIds(o.One<net::EpochPropose>(1)), Ids({1, 3, 2}));
}

TEST_F(CoordinatorTest, MemberWithAnotherSchemaIsRefusedAndDemotedWhenTheSyncCommits) {
  std::uint64_t e = StartGroup({1, 2, 3});
  std::vector<net::TensorReport> other = State(11, 22);
  other[1].dtype = SHOAL_F64;
  Report(1, e, 0, 0, other);  // the minority schema, even though it is first in ring order
  Report(2, e, 0, 0);
  Outs o = Report(3, e, 0, 0);
  auto refused = o.One<net::SyncPlan>(1);
  EXPECT_EQ(refused.code, SHOAL_ERR_MISMATCH);
  EXPECT_NE(refused.reason.find("'b'"), std::string::npos) << refused.reason;
  EXPECT_EQ(o.One<net::SyncPlan>(2).code, SHOAL_OK);
  EXPECT_EQ(o.One<net::SyncPlan>(3).code, SHOAL_OK);
  EXPECT_TRUE(SyncResult(2, e, 0).all.empty());
  o = SyncResult(3, e, 0);
  EXPECT_EQ(Sends(o), (SendList{{1, "OpCommit"},
                                {2, "OpCommit"},
                                {3, "OpCommit"},
                                {1, "EpochAbort"},
                                {2, "EpochAbort"},
                                {3, "EpochAbort"},
                                {1, "Removed"}}));
  EXPECT_EQ(o.One<net::EpochAbort>(3).code, SHOAL_ERR_MISMATCH);
  EXPECT_EQ(o.One<net::EpochAbort>(3).lost_peer, Id(1));
  EXPECT_EQ(o.One<net::Removed>(1).code, SHOAL_ERR_MISMATCH);
  EXPECT_EQ(coord_.view().revision, std::optional<std::uint64_t>(0));
  EXPECT_EQ(coord_.view().pending, Ids({1}));
}

TEST_F(CoordinatorTest, SeveralRefusedMembersAbortWithTheFirstAndAreAllDemoted) {
  std::uint64_t e = StartGroup({1, 2, 3, 4});
  SyncAll({1, 2, 3, 4}, e, 0, 5);
  std::vector<net::TensorReport> other = State(11, 22);
  other.pop_back();
  Report(1, e, 1, 5);
  Report(2, e, 1, 9);         // ahead
  Report(3, e, 1, 5, other);  // another schema
  Report(4, e, 1, 6);
  SyncResult(1, e, 1);
  Outs o = SyncResult(4, e, 1);
  EXPECT_EQ(o.Receivers<net::EpochAbort>(), (std::vector<ConnId>{1, 2, 3, 4}));
  EXPECT_EQ(o.One<net::EpochAbort>(1).code, SHOAL_ERR_REVISION);  // 2 comes first in the ring
  EXPECT_EQ(o.One<net::EpochAbort>(1).lost_peer, Id(2));
  EXPECT_EQ(o.Receivers<net::Removed>(), (std::vector<ConnId>{2, 3}));
  EXPECT_EQ(o.One<net::Removed>(2).code, SHOAL_ERR_REVISION);
  EXPECT_EQ(o.One<net::Removed>(3).code, SHOAL_ERR_MISMATCH);
  EXPECT_EQ(coord_.view().pending, Ids({2, 3}));
  EXPECT_EQ(coord_.view().revision, std::optional<std::uint64_t>(6));
}

TEST_F(CoordinatorTest, EpochBrokenBeforeTheSyncCommitsDemotesNobody) {
  std::uint64_t e = StartGroup({1, 2, 3});
  SyncAll({1, 2, 3}, e, 0, 5);
  Report(1, e, 1, 6);
  Report(2, e, 1, 8);
  Report(3, e, 1, 6);
  SyncResult(1, e, 1);
  Outs o = Fault(3, e, Id(1), SHOAL_ERR_TIMEOUT);
  EXPECT_EQ(o.Receivers<net::EpochAbort>(), (std::vector<ConnId>{1, 2, 3}));
  EXPECT_EQ(o.One<net::EpochAbort>(1).code, SHOAL_ERR_TIMEOUT);
  EXPECT_FALSE(o.Any<net::Removed>());
  EXPECT_TRUE(SyncResult(3, e, 1).all.empty());  // broken: ignored
  View v = coord_.view();
  EXPECT_EQ(v.revision, std::optional<std::uint64_t>(5));
  EXPECT_TRUE(v.pending.empty());
}

TEST_F(CoordinatorTest, SyncRefusingEveryMemberChangesNothing) {
  std::uint64_t e = StartGroup({1, 2, 3});
  SyncAll({1, 2, 3}, e, 0, 5);
  Report(1, e, 1, 9);
  Report(2, e, 1, 9);
  Outs o = Report(3, e, 1, 9);
  EXPECT_EQ(o.Receivers<net::SyncPlan>(), (std::vector<ConnId>{1, 2, 3}));
  for (ConnId c : {1, 2, 3}) EXPECT_EQ(o.One<net::SyncPlan>(c).code, SHOAL_ERR_REVISION);
  EXPECT_EQ(o.all.size(), 3u);  // no commit, no abort, no demotion
  View v = coord_.view();
  EXPECT_EQ(v.revision, std::optional<std::uint64_t>(5));
  EXPECT_FALSE(v.broken);
  EXPECT_TRUE(v.pending.empty());
  EXPECT_EQ(v.members, Ids({1, 2, 3}));
  // The epoch still works: ops and the next sync commit in it.
  Result(1, e, 0, 0);
  Result(2, e, 0, 0);
  EXPECT_EQ(Result(3, e, 0, 0).Receivers<net::OpCommit>().size(), 3u);
  SyncAll({1, 2, 3}, e, 2, 6);
  EXPECT_EQ(coord_.view().revision, std::optional<std::uint64_t>(6));
  EXPECT_FALSE(coord_.view().broken);
}

TEST_F(CoordinatorTest, DuplicateSyncReportIsAProtocolError) {
  std::uint64_t e = StartGroup({1, 2, 3});
  Report(1, e, 0, 0);
  Outs o = Report(1, e, 0, 0);
  EXPECT_TRUE(o.Refused(1));
  EXPECT_EQ(o.Receivers<net::EpochAbort>(), (std::vector<ConnId>{2, 3}));
  EXPECT_EQ(o.One<net::EpochAbort>(2).code, SHOAL_ERR_PEER_LOST);
  EXPECT_EQ(o.One<net::EpochAbort>(2).lost_peer, Id(1));
  EXPECT_FALSE(o.Any<net::SyncPlan>());
}

// Choice 13: a member's syncs are numbered 0, 1, 2, ... in each epoch.
TEST_F(CoordinatorTest, SyncReportOutOfOrderIsAProtocolError) {
  std::uint64_t e = StartGroup({1, 2, 3});
  Outs o = Report(2, e, 1, 0);  // sync 0 was next
  EXPECT_TRUE(o.Refused(2));
  EXPECT_EQ(o.One<net::EpochAbort>(1).lost_peer, Id(2));
  EXPECT_FALSE(o.Any<net::SyncPlan>());
}

// Choice 13: an OpResult for a sync that has no plan would open an op record that refuses the
// honest reports of that sync; the sender is cut off instead.
TEST_F(CoordinatorTest, SyncResultWithoutAPlanIsAProtocolError) {
  std::uint64_t e = StartGroup({1, 2, 3});
  Outs o = SyncResult(1, e, 0);
  EXPECT_TRUE(o.Refused(1));
  EXPECT_EQ(o.One<net::EpochAbort>(2).lost_peer, Id(1));
}

TEST_F(CoordinatorTest, SyncReportForAFutureEpochIsAProtocolError) {
  std::uint64_t e = StartGroup({1, 2});
  EXPECT_TRUE(Report(2, e + 1, 0, 0).Refused(2));
  // So is one from a pending peer for an epoch it was never in.
  Hello(3);
  EXPECT_TRUE(Report(3, e, 0, 0).Refused(3));
}

TEST_F(CoordinatorTest, SyncReportsOfAStaleOrBrokenEpochAreIgnored) {
  std::uint64_t e = StartGroup({1, 2, 3});
  Report(1, e, 0, 0);  // a sync left open by the break
  Fault(1, e, Id(2), SHOAL_ERR_TIMEOUT);
  EXPECT_TRUE(Report(2, e, 0, 0).all.empty());  // broken
  EXPECT_TRUE(Report(3, e, 0, 0).all.empty());
  Update(1, e);
  Update(2, e);
  Update(3, e);
  ReadyAll({1, 2, 3});
  std::uint64_t e2 = Epoch();
  ASSERT_TRUE(coord_.view().committed);
  ASSERT_GT(e2, e);
  EXPECT_TRUE(Report(3, e, 1, 0).all.empty());  // stale
  EXPECT_FALSE(coord_.view().broken);
  // The new epoch starts with no open sync: seq 0 plans only once all three report it.
  EXPECT_TRUE(Report(1, e2, 0, 0).all.empty());
  EXPECT_TRUE(Report(2, e2, 0, 0).all.empty());
  EXPECT_EQ(Report(3, e2, 0, 0).Receivers<net::SyncPlan>().size(), 3u);
}

TEST_F(CoordinatorTest, StaleSyncReportOfADemotedPeerIsIgnored) {
  std::uint64_t e = StartGroup({1, 2, 3});
  SyncAll({1, 2, 3}, e, 0, 5);
  Report(1, e, 1, 6);
  Report(2, e, 1, 9);
  Report(3, e, 1, 6);
  SyncResult(1, e, 1);
  SyncResult(3, e, 1);  // 2 is demoted
  ASSERT_EQ(coord_.view().pending, Ids({2}));
  Outs o = Report(2, e, 2, 9);  // sent before it learnt
  EXPECT_TRUE(o.all.empty());
}

TEST_F(CoordinatorTest, SyncReportForAPlannedSyncIsAProtocolError) {
  std::uint64_t e = StartGroup({1, 2, 3});
  Report(1, e, 0, 0);
  Report(2, e, 0, 0);
  Report(3, e, 0, 0);  // planned
  SyncResult(1, e, 0);
  Outs o = Report(2, e, 0, 0);
  EXPECT_TRUE(o.Refused(2));
  EXPECT_EQ(o.Receivers<net::EpochAbort>(), (std::vector<ConnId>{1, 3}));
  EXPECT_FALSE(o.Any<net::OpCommit>());
}

TEST_F(CoordinatorTest, TooManyOpenSyncsIsAProtocolError) {
  std::uint64_t e = StartGroup({1, 2});
  for (std::uint64_t seq = 0; seq < limits::kOpenSyncsMax; ++seq) {
    EXPECT_TRUE(Report(1, e, seq, 0).all.empty());
  }
  EXPECT_EQ(Report(2, e, 0, 0).Receivers<net::SyncPlan>().size(), 2u);  // planned: a slot frees up
  EXPECT_TRUE(Report(1, e, limits::kOpenSyncsMax, 0).all.empty());
  Outs o = Report(1, e, limits::kOpenSyncsMax + 1, 0);
  EXPECT_TRUE(o.Refused(1));
  EXPECT_EQ(o.One<net::EpochAbort>(2).lost_peer, Id(1));
}

TEST_F(CoordinatorTest, DeadlineFaultDuringTheReportsNamesTheMemberThatHasNotReported) {
  // Ring 1 -> 2 -> 3 -> 4. Members 1, 2 and 4 reported sync 0; 3 never did. Member 1's deadline
  // passes while it waits for the plan: it names no suspect, only the sync.
  std::uint64_t e = StartGroup({1, 2, 3, 4});
  Report(1, e, 0, 0);
  Report(2, e, 0, 0);
  Report(4, e, 0, 0);
  Outs o =
      Deliver(1, net::EpochFault{e, 0, SHOAL_ERR_TIMEOUT, net::kSharedStateTag, 0, "deadline"});
  EXPECT_EQ(o.Receivers<net::EpochAbort>(), (std::vector<ConnId>{1, 2, 3, 4}));
  auto a = o.One<net::EpochAbort>(2);
  EXPECT_EQ(a.code, SHOAL_ERR_TIMEOUT);
  EXPECT_EQ(a.lost_peer, Id(3));  // not 1's previous neighbour (4), which had reported
}

TEST_F(CoordinatorTest, DeadlineFaultAfterThePlansNamesTheMemberWithoutAResult) {
  std::uint64_t e = StartGroup({1, 2, 3, 4});
  for (ConnId c : {1, 2, 3, 4}) Report(c, e, 0, 0);
  SyncResult(1, e, 0);
  SyncResult(3, e, 0);
  SyncResult(4, e, 0);
  Outs o =
      Deliver(4, net::EpochFault{e, 0, SHOAL_ERR_TIMEOUT, net::kSharedStateTag, 0, "deadline"});
  EXPECT_EQ(o.One<net::EpochAbort>(1).lost_peer, Id(2));  // 4's previous (3) had reported
}

TEST_F(CoordinatorTest, MemberLostAfterThePlansAbortsTheSync) {
  std::uint64_t e = StartGroup({1, 2, 3});
  Report(1, e, 0, 3);
  Report(2, e, 0, 3);
  Report(3, e, 0, 3);
  SyncResult(1, e, 0);
  SyncResult(2, e, 0);
  Outs o = Drop(3);
  EXPECT_EQ(o.Receivers<net::EpochAbort>(), (std::vector<ConnId>{1, 2}));
  EXPECT_EQ(o.One<net::EpochAbort>(1).code, SHOAL_ERR_PEER_LOST);
  EXPECT_EQ(o.One<net::EpochAbort>(1).lost_peer, Id(3));
  EXPECT_FALSE(o.Any<net::OpCommit>());
  EXPECT_FALSE(o.Any<net::Removed>());
  EXPECT_FALSE(coord_.view().revision.has_value());
}

TEST_F(CoordinatorTest, RevisionIsForgottenWhenTheGroupEmpties) {
  std::uint64_t e = StartGroup({1, 2});
  SyncAll({1, 2}, e, 0, 3);
  ASSERT_EQ(coord_.view().revision, std::optional<std::uint64_t>(3));
  Drop(1);
  EXPECT_EQ(coord_.view().revision, std::optional<std::uint64_t>(3));  // 2 still holds it
  Hello(4);
  Drop(2);  // empty: 4 starts a new group
  View v = coord_.view();
  EXPECT_FALSE(v.revision.has_value());
  EXPECT_EQ(v.members, Ids({4}));
  Ready(4, Epoch());
  e = Epoch();
  // With no last revision nobody is ahead: 10 is elected.
  auto plan = Report(4, e, 0, 10).To<net::SyncPlan>(4);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(plan[0].code, SHOAL_OK);
  EXPECT_EQ(plan[0].revision, 10u);
  SyncResult(4, e, 0);
  EXPECT_EQ(coord_.view().revision, std::optional<std::uint64_t>(10));
  Drop(4);
  v = coord_.view();
  EXPECT_FALSE(v.revision.has_value());
  EXPECT_TRUE(v.members.empty());
}

TEST_F(CoordinatorTest, GroupOfOneSyncsThroughTheCoordinator) {
  std::uint64_t e = StartGroup({1});
  Outs o = Report(1, e, 0, 2);
  auto plan = o.To<net::SyncPlan>(1);
  ASSERT_EQ(plan.size(), 1u);
  EXPECT_EQ(o.all.size(), 1u);
  EXPECT_EQ(plan[0].code, SHOAL_OK);
  EXPECT_EQ(plan[0].revision, 2u);
  EXPECT_TRUE(plan[0].sends.empty());
  EXPECT_TRUE(plan[0].recvs.empty());
  EXPECT_TRUE(plan[0].expect.empty());
  EXPECT_FALSE(coord_.view().revision.has_value());
  o = SyncResult(1, e, 0);
  auto c = o.To<net::OpCommit>(1);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].tag, net::kSharedStateTag);
  EXPECT_EQ(coord_.view().revision, std::optional<std::uint64_t>(2));
}

// ---- Heartbeats ------------------------------------------------------------------------------

TEST_F(CoordinatorTest, HeartbeatAfterAnIntervalOfSilence) {
  StartGroup({1, 2});
  Outs o = Advance(99);
  EXPECT_FALSE(o.Any<net::Heartbeat>());
  o = Advance(1);
  EXPECT_EQ(o.Receivers<net::Heartbeat>(), (std::vector<ConnId>{1, 2}));
  o = Advance(50);
  Result(1, coord_.view().epoch, 0, 0);
  Result(2, coord_.view().epoch, 0, 0);  // OpCommit to both at t+150
  o = Advance(50);
  EXPECT_FALSE(o.Any<net::Heartbeat>());  // something was sent 50 ms ago
  o = Advance(50);
  EXPECT_EQ(o.Receivers<net::Heartbeat>().size(), 2u);
}

TEST_F(CoordinatorTest, SilentMemberIsDroppedAndTheEpochAborted) {
  std::uint64_t e = StartGroup({1, 2, 3});
  Outs o = Pass(900, {1, 3});
  EXPECT_FALSE(o.AnyClose());
  o = Pass(100, {1, 3});
  EXPECT_TRUE(o.Closed(2));
  EXPECT_EQ(o.Receivers<net::EpochAbort>(), (std::vector<ConnId>{1, 3}));
  auto a = o.To<net::EpochAbort>(1)[0];
  EXPECT_EQ(a.epoch, e);
  EXPECT_EQ(a.code, SHOAL_ERR_PEER_LOST);
  EXPECT_EQ(a.lost_peer, Id(2));
  EXPECT_TRUE(Drop(2).all.empty());  // the shell reports the close: already forgotten
  EXPECT_TRUE(Deliver(2, net::Heartbeat{}).all.empty());
}

TEST_F(CoordinatorTest, SilentPendingPeerIsDroppedQuietly) {
  StartGroup({1});
  Hello(2);
  Outs o = Pass(1000, {1});
  EXPECT_TRUE(o.Closed(2));
  EXPECT_FALSE(o.Any<net::EpochAbort>());
  EXPECT_TRUE(coord_.view().pending.empty());
}

TEST_F(CoordinatorTest, EpochNumbersNeverRepeat) {
  std::uint64_t last = 0;
  std::uint64_t e = StartGroup({1, 2});
  EXPECT_GT(e, last);
  for (int round = 0; round < 5; ++round) {
    last = e;
    Fault(1, e, Id(2), SHOAL_ERR_TIMEOUT);
    Update(1, e);
    Update(2, e);
    std::uint64_t proposed = Epoch();
    EXPECT_GT(proposed, last);
    Fail(1, proposed, Id(2), SHOAL_ERR_PEER_LOST);  // 2 demoted, [1] proposed again
    EXPECT_GT(Epoch(), proposed);
    Ready(1, Epoch());
    e = Epoch();
    Update(1, e);  // 2 is pending again: admitted
    ReadyAll({1, 2});
    e = Epoch();
    EXPECT_EQ(coord_.view().members, Ids({1, 2}));
    EXPECT_EQ(coord_.view().highest_epoch, e);
  }
}

TEST_F(CoordinatorTest, ProtocolErrorCutsOffOnlyTheOffender) {
  std::uint64_t e = StartGroup({1, 2, 3});
  Result(1, e, 0, 0);
  Outs o = Deliver(2, net::EpochPropose{e + 1, 1, 4096, {}});
  EXPECT_TRUE(o.Refused(2));
  EXPECT_EQ(o.Receivers<net::EpochAbort>(), (std::vector<ConnId>{1, 3}));
  EXPECT_EQ(o.To<net::EpochAbort>(3)[0].lost_peer, Id(2));
  EXPECT_TRUE(Deliver(2, net::OpResult{e, 0, 0}).all.empty());  // forgotten
  Update(1, e);
  o = Update(3, e);
  auto p = o.To<net::EpochPropose>(1);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(MemberIds(p[0]), Ids({1, 3}));
  ReadyAll({1, 3});
  Result(3, e + 1, 0, 0);
  EXPECT_EQ(Result(1, e + 1, 0, 0).Receivers<net::OpCommit>(), (std::vector<ConnId>{1, 3}));
}

TEST_F(CoordinatorTest, EventsOnUnknownConnectionsAreIgnored) {
  StartGroup({1});
  EXPECT_TRUE(Deliver(42, net::Hello{Id(42), "h", 1, std::nullopt}).all.empty());
  EXPECT_TRUE(Drop(42).all.empty());
  EXPECT_EQ(coord_.view().members, Ids({1}));
}

TEST_F(CoordinatorTest, StaleReadyAfterTheGroupEmptiedIsIgnored) {
  Hello(1);
  Outs o = Fail(1, 1, Id(1), SHOAL_ERR_TIMEOUT);  // names itself: demoted, then proposed again
  ASSERT_EQ(o.To<net::Removed>(1).size(), 1u);
  ASSERT_EQ(o.To<net::EpochPropose>(1).size(), 1u);
  EXPECT_EQ(Epoch(), 2u);
  EXPECT_TRUE(Ready(1, 1).all.empty());
  EXPECT_EQ(Ready(1, 2).To<net::EpochCommit>(1).size(), 1u);
}

// ---- Coordinator restart: rebuilding the group from rejoin reports (choice 14) ----------------

// A rejoin report of a committed member of epoch `e` with ring `ring`.
net::Rejoin MemberReport(std::uint64_t e, std::vector<PeerId> ring,
                         std::vector<net::TagSeq> next_seq = {},
                         std::vector<net::RejoinOp> ops = {}) {
  net::Rejoin j;
  j.epoch = e;
  j.committed = true;
  j.members = std::move(ring);
  j.next_seq = std::move(next_seq);
  j.ops = std::move(ops);
  return j;
}

net::RejoinOp Done(std::uint64_t tag, std::uint64_t seq) {
  return net::RejoinOp{tag, seq, net::RejoinOpState::kDone, 0, 0};
}
net::RejoinOp Running(std::uint64_t tag, std::uint64_t seq) {
  return net::RejoinOp{tag, seq, net::RejoinOpState::kRunning, 0, 0};
}

class CoordinatorRebuildTest : public CoordinatorTest {
 protected:
  explicit CoordinatorRebuildTest(Config config = TestConfig()) : CoordinatorTest(config) {}
  Outs Rejoin(ConnId c, net::Rejoin j) {
    Connect(c);
    return Deliver(c, net::Hello{Id(c), "host" + std::to_string(c), static_cast<std::uint16_t>(c),
                                 std::move(j)});
  }
};

TEST_F(CoordinatorRebuildTest, EveryMemberBackResumesTheEpochAndCommitsWhatAllFinished) {
  auto ring = Ids({1, 2, 3});
  // Op (0, 4) finished everywhere before the crash; nobody got its verdict.
  Outs o = Rejoin(1, MemberReport(7, ring, {{0, 5}}, {Done(0, 4)}));
  EXPECT_EQ(o.To<net::Welcome>(1).size(), 1u);
  EXPECT_FALSE(o.Any<net::EpochPropose>());
  EXPECT_FALSE(o.Any<net::OpCommit>());
  EXPECT_TRUE(coord_.view().rebuilding);
  Rejoin(2, MemberReport(7, ring, {{0, 5}}, {Done(0, 4)}));
  EXPECT_TRUE(coord_.view().rebuilding);
  o = Rejoin(3, MemberReport(7, ring, {{0, 5}}, {Done(0, 4)}));
  EXPECT_EQ(o.Receivers<net::OpCommit>(), (std::vector<ConnId>{1, 2, 3}));
  EXPECT_EQ(o.One<net::OpCommit>(2).epoch, 7u);
  EXPECT_FALSE(o.Any<net::EpochAbort>());
  View v = coord_.view();
  EXPECT_FALSE(v.rebuilding);
  EXPECT_EQ(v.epoch, 7u);
  EXPECT_TRUE(v.committed);
  EXPECT_FALSE(v.broken);
  EXPECT_EQ(v.members, ring);
  // The resumed epoch runs ops and barriers as before.
  Result(1, 7, 0, 5);
  Result(2, 7, 0, 5);
  EXPECT_EQ(Result(3, 7, 0, 5).Receivers<net::OpCommit>(), (std::vector<ConnId>{1, 2, 3}));
  Update(1, 7);
  Update(2, 7);
  EXPECT_EQ(Update(3, 7).Receivers<net::TopologyUnchanged>(), (std::vector<ConnId>{1, 2, 3}));
  // A newcomer gets an epoch above the rebuilt one.
  Hello(4);
  for (ConnId c : {1, 2, 3}) o = Update(c, 7);
  ASSERT_EQ(o.Receivers<net::EpochPropose>(), (std::vector<ConnId>{1, 2, 3, 4}));
  EXPECT_EQ(o.One<net::EpochPropose>(4).epoch, 8u);
}

TEST_F(CoordinatorRebuildTest, ACommitThatReachedOneMemberReachesTheOthers) {
  auto ring = Ids({1, 2, 3});
  Rejoin(1, MemberReport(4, ring, {{0, 3}}, {}));  // committed (0, 2): started it, no op left
  Rejoin(2, MemberReport(4, ring, {{0, 3}}, {Done(0, 2)}));
  Outs o = Rejoin(3, MemberReport(4, ring, {{0, 3}, {9, 1}},
                                  {Done(0, 2), {9, 0, net::RejoinOpState::kFailed, 0, 0}}));
  EXPECT_EQ(o.Receivers<net::OpCommit>(), (std::vector<ConnId>{2, 3}));
  // (9, 0) failed on 3 (no verdict within its deadline): the epoch breaks, after the commits.
  EXPECT_EQ(o.Receivers<net::EpochAbort>(), (std::vector<ConnId>{1, 2, 3}));
  net::EpochAbort a = o.One<net::EpochAbort>(1);
  EXPECT_EQ(a.epoch, 4u);
  EXPECT_EQ(a.code, SHOAL_ERR_COORDINATOR_LOST);
  EXPECT_EQ(a.lost_peer, 0u);
  auto first_abort = std::find_if(o.all.begin(), o.all.end(), [](const Output& x) {
    return std::holds_alternative<net::EpochAbort>(x.message);
  });
  EXPECT_TRUE(std::none_of(first_abort, o.all.end(), [](const Output& x) {
    return std::holds_alternative<net::OpCommit>(x.message);
  }));
  EXPECT_TRUE(coord_.view().broken);
  // The barrier makes a new epoch above every one reported.
  Update(1, 4);
  Update(2, 4);
  o = Update(3, 4);
  ASSERT_EQ(o.Receivers<net::EpochPropose>(), (std::vector<ConnId>{1, 2, 3}));
  EXPECT_EQ(o.One<net::EpochPropose>(1).epoch, 5u);
}

TEST_F(CoordinatorRebuildTest, AMemberThatNeverReportsIsLostAtTheRebuildDeadline) {
  auto ring = Ids({1, 2, 3});
  Rejoin(1, MemberReport(6, ring, {{0, 1}}, {Done(0, 0)}));
  Rejoin(2, MemberReport(6, ring, {{0, 1}}, {Done(0, 0)}));
  Outs o = Pass(TestConfig().rebuild_timeout_ms - 200, {1, 2});
  EXPECT_FALSE(o.Any<net::EpochAbort>());
  EXPECT_TRUE(coord_.view().rebuilding);
  o = Pass(300, {1, 2});
  // Not every member finished (0, 0) as far as anyone knows, and nobody committed it: abort.
  EXPECT_FALSE(o.Any<net::OpCommit>());
  EXPECT_EQ(o.Receivers<net::EpochAbort>(), (std::vector<ConnId>{1, 2}));
  EXPECT_EQ(o.One<net::EpochAbort>(1).code, SHOAL_ERR_PEER_LOST);
  EXPECT_EQ(o.One<net::EpochAbort>(1).lost_peer, Id(3));
  EXPECT_EQ(coord_.view().members, ring);  // as committed, the lost one included
  // The member that comes back late is a peer the group went on without.
  o = Rejoin(3, MemberReport(6, ring, {{0, 1}}, {Done(0, 0)}));
  EXPECT_EQ(o.To<net::Removed>(3).size(), 1u);
  Update(1, 6);
  o = Update(2, 6);
  ASSERT_EQ(o.Receivers<net::EpochPropose>(), (std::vector<ConnId>{1, 2, 3}));
  EXPECT_EQ(o.One<net::EpochPropose>(3).epoch, 7u);
}

TEST_F(CoordinatorRebuildTest, TheAbortOneMemberSawIsTheAbortOfAll) {
  auto ring = Ids({1, 2, 3});
  net::Rejoin saw = MemberReport(3, ring, {{0, 2}}, {});
  saw.broken = true;
  saw.abort_code = SHOAL_ERR_TIMEOUT;
  saw.abort_lost = Id(2);
  net::Rejoin faulted = MemberReport(3, ring, {{0, 2}}, {Done(0, 1)});
  faulted.fault_sent = true;
  faulted.fault_code = SHOAL_ERR_PEER_LOST;
  faulted.fault_suspect = Id(1);
  Rejoin(1, MemberReport(3, ring, {{0, 2}}, {Done(0, 1)}));
  Rejoin(2, faulted);
  Outs o = Rejoin(3, saw);
  // (0, 1): member 3 has no verdict left for it, so it was committed or aborted there; it saw the
  // epoch break, so the coordinator cannot tell: what counts is that 3 holds no op (0, 1) and has
  // started it, which is what a commit leaves. A member that saw the abort failed every op without
  // a verdict, and reports them as failed; here it reports none, so (0, 1) committed before.
  EXPECT_EQ(o.Receivers<net::OpCommit>(), (std::vector<ConnId>{1, 2}));
  net::EpochAbort a = o.One<net::EpochAbort>(1);
  EXPECT_EQ(a.code, SHOAL_ERR_TIMEOUT);
  EXPECT_EQ(a.lost_peer, Id(2));
}

TEST_F(CoordinatorRebuildTest, AFaultSentBeforeTheCrashBreaksTheEpoch) {
  auto ring = Ids({1, 2});
  net::Rejoin faulted = MemberReport(3, ring, {{0, 2}}, {Running(0, 1)});
  faulted.fault_sent = true;
  faulted.fault_code = SHOAL_ERR_INTEGRITY;
  faulted.fault_suspect = Id(1);
  Rejoin(1, MemberReport(3, ring, {{0, 2}}, {Done(0, 1)}));
  Outs o = Rejoin(2, faulted);
  EXPECT_FALSE(o.Any<net::OpCommit>());
  EXPECT_EQ(o.One<net::EpochAbort>(2).code, SHOAL_ERR_INTEGRITY);
  EXPECT_EQ(o.One<net::EpochAbort>(2).lost_peer, Id(1));
}

TEST_F(CoordinatorRebuildTest, MessagesDuringTheRebuildUpdateTheReports) {
  auto ring = Ids({1, 2});
  Rejoin(1, MemberReport(5, ring, {{0, 1}}, {Running(0, 0)}));
  // Peer 1's op finishes and it enters update_topology while the rebuild waits for peer 2.
  EXPECT_TRUE(Result(1, 5, 0, 0).Quiet());
  EXPECT_TRUE(Update(1, 5).Quiet());
  Outs o = Rejoin(2, MemberReport(5, ring, {{0, 1}}, {Done(0, 0)}));
  EXPECT_EQ(o.Receivers<net::OpCommit>(), (std::vector<ConnId>{1, 2}));
  EXPECT_FALSE(o.Any<net::EpochAbort>());
  EXPECT_EQ(coord_.view().barrier, Ids({1}));
  EXPECT_EQ(Update(2, 5).Receivers<net::TopologyUnchanged>(), (std::vector<ConnId>{1, 2}));
}

TEST_F(CoordinatorRebuildTest, ARunningCollectiveIsAwaitedAndCommitsWhenItFinishes) {
  auto ring = Ids({1, 2});
  Rejoin(1, MemberReport(5, ring, {{0, 1}}, {Done(0, 0)}));
  Outs o = Rejoin(2, MemberReport(5, ring, {{0, 1}}, {Running(0, 0)}));
  EXPECT_TRUE(o.Quiet() || !o.Any<net::OpCommit>());
  EXPECT_TRUE(coord_.view().rebuilding);  // everyone reported, but (0, 0) may still finish
  o = Result(2, 5, 0, 0);
  EXPECT_EQ(o.Receivers<net::OpCommit>(), (std::vector<ConnId>{1, 2}));
  EXPECT_FALSE(o.Any<net::EpochAbort>());
  EXPECT_FALSE(coord_.view().broken);
}

TEST_F(CoordinatorRebuildTest, ACollectiveThatDoesNotFinishIsAbortedAtTheRebuildDeadline) {
  auto ring = Ids({1, 2});
  Rejoin(1, MemberReport(5, ring, {{0, 1}}, {Done(0, 0)}));
  Rejoin(2, MemberReport(5, ring, {{0, 1}}, {Running(0, 0)}));
  Outs o = Pass(TestConfig().rebuild_timeout_ms + 100, {1, 2});
  EXPECT_FALSE(o.Any<net::OpCommit>());
  EXPECT_EQ(o.One<net::EpochAbort>(1).code, SHOAL_ERR_COORDINATOR_LOST);
}

TEST_F(CoordinatorRebuildTest, ASyncWaitingForItsPlanIsNotAwaited) {
  auto ring = Ids({1, 2});
  Rejoin(1, MemberReport(5, ring, {{net::kSharedStateTag, 1}},
                         {Running(net::kSharedStateTag, 0)}));
  Outs o = Rejoin(2, MemberReport(5, ring, {{net::kSharedStateTag, 1}},
                                  {Running(net::kSharedStateTag, 0)}));
  EXPECT_EQ(o.One<net::EpochAbort>(2).code, SHOAL_ERR_COORDINATOR_LOST);
}

TEST_F(CoordinatorRebuildTest, TheRevisionIsTheHighestHeldWithTheMostCommonDigest) {
  auto ring = Ids({1, 2, 3});
  auto with = [&](std::uint64_t revision, std::uint64_t digest) {
    net::Rejoin j = MemberReport(2, ring, {{net::kSharedStateTag, 1}});
    j.has_revision = true;
    j.revision = revision;
    j.state_digest = digest;
    return j;
  };
  Rejoin(1, with(5, 0xd1));
  Rejoin(2, with(5, 0xd2));
  Outs o = Rejoin(3, with(5, 0xd1));
  EXPECT_FALSE(o.Any<net::EpochAbort>());
  View v = coord_.view();
  ASSERT_TRUE(v.revision.has_value());
  EXPECT_EQ(*v.revision, 5u);
  EXPECT_EQ(v.revision_holders, Ids({1, 3}));
  // The rebuilt revision is enforced: the syncs go on with seq 1, and revision 7 skips 6.
  Report(1, 2, 1, 6);
  Report(2, 2, 1, 6);
  o = Report(3, 2, 1, 7);
  EXPECT_EQ(o.One<net::SyncPlan>(3).code, SHOAL_ERR_REVISION);
  EXPECT_EQ(o.One<net::SyncPlan>(1).code, SHOAL_OK);
}

TEST_F(CoordinatorRebuildTest, ASyncCommittedAtOneMemberMovesTheRevision) {
  auto ring = Ids({1, 2});
  net::Rejoin a = MemberReport(2, ring, {{net::kSharedStateTag, 1}});
  a.has_revision = true;
  a.revision = 4;  // its commit of sync 0 (revision 4) arrived
  a.state_digest = 0xabc;
  net::Rejoin b = MemberReport(2, ring, {{net::kSharedStateTag, 1}},
                               {net::RejoinOp{net::kSharedStateTag, 0, net::RejoinOpState::kDone,
                                              4, 0xabc}});
  b.has_revision = true;
  b.revision = 3;
  b.state_digest = 0x333;
  Rejoin(1, a);
  Outs o = Rejoin(2, b);
  EXPECT_EQ(o.Receivers<net::OpCommit>(), (std::vector<ConnId>{2}));
  EXPECT_EQ(o.One<net::OpCommit>(2).tag, net::kSharedStateTag);
  View v = coord_.view();
  EXPECT_FALSE(v.broken);
  EXPECT_EQ(v.revision, std::optional<std::uint64_t>(4));
  EXPECT_EQ(v.revision_holders, Ids({1, 2}));
}

TEST_F(CoordinatorRebuildTest, PeersOutsideTheRebuiltEpochAreRemovedAndJoinAtTheBarrier) {
  auto ring = Ids({1, 2});
  // Peer 3 had been proposed epoch 6 (with 1, 2 and 3) when the coordinator died; 1 and 2 had not
  // received that proposal yet. Peer 4 is a newcomer.
  net::Rejoin setting_up;
  setting_up.epoch = 6;
  setting_up.members = Ids({1, 2, 3});
  Outs o = Rejoin(3, setting_up);
  EXPECT_TRUE(coord_.view().rebuilding);
  o = Hello(4);
  EXPECT_FALSE(o.Any<net::EpochPropose>());
  net::Rejoin in_barrier = MemberReport(5, ring, {{0, 3}});
  in_barrier.in_barrier = true;
  Rejoin(1, in_barrier);
  o = Rejoin(2, in_barrier);
  // Epoch 5 resumes with 1 and 2 (all its members are back); 3 is told it is not a member; the
  // barrier both were in completes with a proposal above epoch 6 for everyone.
  EXPECT_FALSE(o.Any<net::EpochAbort>());
  EXPECT_EQ(o.To<net::Removed>(3).size(), 1u);
  ASSERT_EQ(o.Receivers<net::EpochPropose>(), (std::vector<ConnId>{1, 2, 3, 4}));
  EXPECT_EQ(o.One<net::EpochPropose>(4).epoch, 7u);
}

TEST_F(CoordinatorRebuildTest, NobodyCommittedStartsAnEmptyGroupAboveTheReportedEpochs) {
  net::Rejoin setting_up;
  setting_up.epoch = 9;
  setting_up.members = Ids({1, 2});
  Rejoin(1, setting_up);
  Outs o = Rejoin(2, setting_up);
  EXPECT_EQ(o.To<net::Removed>(1).size(), 1u);
  ASSERT_EQ(o.Receivers<net::EpochPropose>(), (std::vector<ConnId>{1, 2}));
  EXPECT_EQ(o.One<net::EpochPropose>(1).epoch, 10u);
}

TEST_F(CoordinatorRebuildTest, ARejoinAtACoordinatorWithAGroupIsAPeerItWentOnWithout) {
  std::uint64_t e = StartGroup({1, 2});
  Outs o = Rejoin(3, MemberReport(40, Ids({3, 9})));
  EXPECT_EQ(o.To<net::Welcome>(3).size(), 1u);
  EXPECT_EQ(o.To<net::Removed>(3).size(), 1u);
  EXPECT_EQ(coord_.view().pending, Ids({3}));
  Update(1, e);
  o = Update(2, e);
  EXPECT_EQ(o.One<net::EpochPropose>(3).epoch, 41u);  // above the epoch it reported
}

TEST_F(CoordinatorRebuildTest, ARejoinReplacesThePeersOldConnection) {
  std::uint64_t e = StartGroup({1, 2});
  // Peer 2 lost its connection, reconnects on connection 12 before the coordinator noticed.
  Connect(12);
  Outs o = Deliver(12, net::Hello{Id(2), "host2", 2, MemberReport(e, Ids({1, 2}))});
  EXPECT_TRUE(o.Closed(2));
  EXPECT_EQ(o.One<net::EpochAbort>(1).lost_peer, Id(2));
  EXPECT_EQ(o.To<net::Welcome>(12).size(), 1u);
  EXPECT_EQ(o.To<net::Removed>(12).size(), 1u);
  o = Update(1, e);
  EXPECT_EQ(o.Receivers<net::EpochPropose>(), (std::vector<ConnId>{1, 12}));
}

TEST_F(CoordinatorRebuildTest, MalformedRejoinReportsAreRefused) {
  Outs o = Rejoin(1, MemberReport(3, Ids({1, 1})));
  EXPECT_EQ(o.One<net::Reject>(1).code, SHOAL_ERR_PROTOCOL);
  EXPECT_TRUE(o.Closed(1));
  o = Rejoin(2, MemberReport(3, Ids({1, 3})));  // does not include itself
  EXPECT_TRUE(o.Closed(2));
  o = Rejoin(3, MemberReport(std::uint64_t{1} << 63, Ids({3})));
  EXPECT_TRUE(o.Closed(3));
  EXPECT_FALSE(coord_.view().rebuilding);
  EXPECT_EQ(coord_.view().highest_epoch, 0u);
}

TEST_F(CoordinatorRebuildTest, APendingPeersSeenEpochKeepsNewEpochsAboveIt) {
  // Peer 2 was demoted during the setup of epoch 8 and is pending: no epoch to rebuild, but it was
  // given 8, so the group it starts must be numbered above.
  net::Rejoin pending;
  pending.seen_epoch = 8;
  Outs o = Rejoin(2, pending);
  EXPECT_EQ(o.One<net::EpochPropose>(2).epoch, 9u);
}

TEST_F(CoordinatorRebuildTest, ACommitReportedByAReporterThatLeftStillCounts) {
  auto ring = Ids({1, 2, 3});
  Rejoin(1, MemberReport(4, ring, {{0, 3}}, {}));  // committed (0, 2), then it dies
  Drop(1);
  Rejoin(2, MemberReport(4, ring, {{0, 3}}, {Done(0, 2)}));
  Outs o = Rejoin(3, MemberReport(4, ring, {{0, 3}}, {Done(0, 2)}));
  EXPECT_EQ(o.Receivers<net::OpCommit>(), (std::vector<ConnId>{2, 3}));
  EXPECT_EQ(o.One<net::EpochAbort>(2).lost_peer, Id(1));
}

TEST_F(CoordinatorRebuildTest, AHolderThatIsOnlyPendingStopsHoldingWhenItGoes) {
  // Both were setting up epoch 3 (nobody committed): the revision comes from their reports, and the
  // one that dies before the new group commits holds it no longer.
  auto with = [](std::uint64_t revision) {
    net::Rejoin j;
    j.epoch = 3;
    j.members = Ids({1, 2});
    j.seen_epoch = 3;
    j.has_revision = true;
    j.revision = revision;
    return j;
  };
  Rejoin(1, with(7));
  Outs o = Rejoin(2, with(7));
  EXPECT_EQ(o.One<net::EpochPropose>(1).epoch, 4u);
  EXPECT_EQ(coord_.view().revision_holders, Ids({1, 2}));
  Drop(1);
  EXPECT_EQ(coord_.view().revision_holders, Ids({2}));
  EXPECT_EQ(coord_.view().revision, std::optional<std::uint64_t>(7));
}

class CoordinatorSmallRestartTest : public CoordinatorRebuildTest {
 protected:
  static Config Small() {
    Config c = TestConfig();
    c.max_members = 2;
    return c;
  }
  CoordinatorSmallRestartTest() : CoordinatorRebuildTest(Small()) {}
};

TEST_F(CoordinatorSmallRestartTest, AGroupAboveMaxMembersShrinksAtItsBarrier) {
  // Restarted with a smaller max_members: the rebuilt group of three goes on, and its next
  // barrier keeps the first two in ring order; the third waits as pending.
  auto ring = Ids({1, 2, 3});
  for (ConnId c : {1, 2, 3}) Rejoin(c, MemberReport(5, ring));
  EXPECT_EQ(coord_.view().members, ring);
  Update(3, 5);
  Update(2, 5);
  Outs o = Update(1, 5);
  EXPECT_EQ(o.One<net::Removed>(3).code, SHOAL_ERR_REJECTED);
  EXPECT_EQ(MemberIds(o.One<net::EpochPropose>(1)), Ids({1, 2}));
  EXPECT_EQ(coord_.view().pending, Ids({3}));
}

class CoordinatorHoldTest : public CoordinatorTest {
 protected:
  static Config HoldConfig() {
    Config c = TestConfig();
    c.startup_hold_ms = 1000;
    return c;
  }
  CoordinatorHoldTest() : CoordinatorTest(HoldConfig()) {}
};

TEST_F(CoordinatorHoldTest, NewcomersWaitForTheStartupHold) {
  Outs o = Hello(1);
  EXPECT_FALSE(o.Any<net::EpochPropose>());
  o = Pass(800, {1});
  EXPECT_FALSE(o.Any<net::EpochPropose>());
  o = Pass(300, {1});
  EXPECT_EQ(o.One<net::EpochPropose>(1).epoch, 1u);
}

TEST_F(CoordinatorHoldTest, ARejoinDuringTheHoldRebuildsAtOnce) {
  Hello(5);
  Connect(1);
  Outs o = Deliver(1, net::Hello{Id(1), "h", 1, MemberReport(3, Ids({1}))});
  EXPECT_FALSE(coord_.view().rebuilding);
  EXPECT_EQ(coord_.view().epoch, 3u);
  EXPECT_EQ(coord_.view().pending, Ids({5}));
}

// ---- Quorum: a primary and standbys (choice 16) ------------------------------------------------

class QuorumTest : public CoordinatorTest {
 protected:
  explicit QuorumTest(bool standby = false) : CoordinatorTest(Quorum(standby)) {}
  static Config Quorum(bool standby) {
    Config c = TestConfig();
    c.quorum = true;
    c.standby = standby;
    return c;
  }
  Outs Rejoin(ConnId c, net::Rejoin j) {
    Connect(c);
    return Deliver(c, net::Hello{Id(c), "host" + std::to_string(c), static_cast<std::uint16_t>(c),
                                 std::move(j)});
  }
  static net::Rejoin Lineage(net::Rejoin j, std::uint64_t e, std::vector<PeerId> ring) {
    j.last_epoch = e;
    j.last_ring = std::move(ring);
    return j;
  }
};

class StandbyTest : public QuorumTest {
 protected:
  StandbyTest() : QuorumTest(/*standby=*/true) {}
};

TEST_F(QuorumTest, LosingAMinorityGoesOn) {
  std::uint64_t e = StartGroup({1, 2, 3});
  Drop(3);
  Update(1, e);
  Outs o = Update(2, e);
  EXPECT_EQ(o.Receivers<net::EpochPropose>(), (std::vector<ConnId>{1, 2}));
}

TEST_F(QuorumTest, LosingTheMajorityGivesTheRestUpSoTheyFindTheMajority) {
  std::uint64_t e = StartGroup({1, 2, 3});
  Hello(4);  // a newcomer does not make a majority of the last epoch
  Drop(2);
  Drop(3);
  Outs o = Update(1, e);
  EXPECT_FALSE(o.Any<net::EpochPropose>());
  EXPECT_EQ(o.One<net::Removed>(1).code, SHOAL_ERR_COORDINATOR_LOST);
  EXPECT_EQ(o.One<net::Removed>(4).code, SHOAL_ERR_COORDINATOR_LOST);
  EXPECT_TRUE(o.Closed(1));
  EXPECT_TRUE(o.Closed(4));
  View v = coord_.view();
  EXPECT_TRUE(v.members.empty());
  EXPECT_TRUE(v.pending.empty());
  // Newcomers alone never restart the group here; after the rebuild timeout they are given up.
  Hello(5);
  o = Pass(TestConfig().rebuild_timeout_ms + 200, {5});
  EXPECT_FALSE(o.Any<net::EpochPropose>());
  EXPECT_TRUE(o.Closed(5));
}

TEST_F(QuorumTest, ANewerEpochNamedByAPeerEndsThisGroupsRight) {
  std::uint64_t e = StartGroup({1, 2, 3});
  // Peer 6 was a member of epoch 50 of {6, 7, 8} elsewhere: that group descends from this one
  // and holds the majority now, so this group must not move on.
  net::Rejoin pending;
  Rejoin(6, Lineage(pending, 50, Ids({6, 7, 8})));
  Update(1, e);
  Update(2, e);
  Outs o = Update(3, e);
  EXPECT_FALSE(o.Any<net::EpochPropose>());
  EXPECT_FALSE(o.Any<net::TopologyUnchanged>());
  for (ConnId c : {1, 2, 3, 6}) EXPECT_TRUE(o.Closed(c)) << c;
}

TEST_F(QuorumTest, AGroupThatComesBackAfterItsAbortGetsThatAbortNotACommit) {
  std::uint64_t e = StartGroup({1, 2, 3});
  auto ring = Ids({1, 2, 3});
  Result(1, e, 0, 0);
  EXPECT_EQ(Drop(3).One<net::EpochAbort>(1).lost_peer, Id(3));  // this coordinator's own abort
  Drop(2);
  Drop(1);
  // None of them received the abort (their reports say so), and all finished (0, 0): a fresh
  // coordinator would commit it and resume; this one sent the abort, which some may have returned.
  Rejoin(1, Lineage(MemberReport(e, ring, {{0, 1}}, {Done(0, 0)}), e, ring));
  Rejoin(2, Lineage(MemberReport(e, ring, {{0, 1}}, {Done(0, 0)}), e, ring));
  Outs o = Rejoin(3, Lineage(MemberReport(e, ring, {{0, 1}}, {Done(0, 0)}), e, ring));
  EXPECT_FALSE(coord_.view().rebuilding);
  EXPECT_FALSE(o.Any<net::OpCommit>());
  EXPECT_EQ(o.Receivers<net::EpochAbort>(), (std::vector<ConnId>{1, 2, 3}));
  net::EpochAbort a = o.One<net::EpochAbort>(2);
  EXPECT_EQ(a.code, SHOAL_ERR_PEER_LOST);
  EXPECT_EQ(a.lost_peer, Id(3));
}

TEST_F(StandbyTest, AStandbyFormsNoGroupOfNewcomers) {
  Hello(1);
  Hello(2);
  Outs o = Pass(1000, {1, 2});
  EXPECT_FALSE(o.Any<net::EpochPropose>());
  EXPECT_EQ(coord_.view().pending, Ids({1, 2}));
}

TEST_F(StandbyTest, AStandbyRebuildsFromAMajority) {
  auto ring = Ids({1, 2, 3});
  Rejoin(1, Lineage(MemberReport(5, ring, {{0, 1}}, {Done(0, 0)}), 5, ring));
  Outs o = Rejoin(2, Lineage(MemberReport(5, ring, {{0, 1}}, {Done(0, 0)}), 5, ring));
  EXPECT_TRUE(coord_.view().rebuilding);  // 3 may still come
  o = Pass(TestConfig().rebuild_timeout_ms + 100, {1, 2});
  EXPECT_EQ(o.One<net::EpochAbort>(1).lost_peer, Id(3));
  EXPECT_EQ(coord_.view().epoch, 5u);
  Update(1, 5);
  o = Update(2, 5);
  EXPECT_EQ(o.One<net::EpochPropose>(1).epoch, 6u);
}

TEST_F(StandbyTest, AStandbyWithAMinorityGivesItUp) {
  auto ring = Ids({1, 2, 3});
  Rejoin(1, Lineage(MemberReport(5, ring), 5, ring));
  Outs o = Pass(TestConfig().rebuild_timeout_ms + 100, {1});
  EXPECT_FALSE(o.Any<net::EpochAbort>());
  EXPECT_EQ(o.One<net::Removed>(1).code, SHOAL_ERR_COORDINATOR_LOST);
  EXPECT_TRUE(o.Closed(1));
  EXPECT_FALSE(coord_.view().rebuilding);
  EXPECT_EQ(coord_.view().highest_epoch, 5u);
}

TEST(CoordinatorConfigDeathTest, InconsistentConfigIsAProgrammerError) {
  Config c = TestConfig();
  c.heartbeat_interval_ms = c.heartbeat_timeout_ms;
  EXPECT_DEATH({ Coordinator coord(c); }, "SHOAL_CHECK");
}

}  // namespace
}  // namespace shoal::coord
