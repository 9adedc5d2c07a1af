// shoal-coord under hostile and broken clients: the real executable in a child process, raw TCP
// sockets on 127.0.0.1. Each test starts its own coordinator, does one kind of damage (garbage,
// bad magic, wrong version, unknown type, a 2 GiB length, a truncated frame, a message the peer
// may not send, a message before Hello, a crowd of connections, a flood from one address), then
// checks that the process is alive and that a well-behaved client still gets through the whole
// admission: Hello -> Welcome -> EpochPropose (the group is empty) -> EpochReady -> EpochCommit.
// TearDown stops the coordinator with SIGTERM and expects a clean exit.
//
// Every wait has a deadline; nothing sleeps. The ChildProcess guard kills and reaps the
// coordinator on every path, and ctest bounds the whole binary (TIMEOUT in CMakeLists.txt).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "mp/test_util.h"

#ifndef SHOAL_COORD_BIN
#error "SHOAL_COORD_BIN must name the shoal-coord executable"
#endif

namespace shoal::mp {
namespace {

#define ASSERT_OK(expr)                                                                 \
  do {                                                                                  \
    ::shoal::Status assert_ok_status = (expr);                                          \
    ASSERT_TRUE(assert_ok_status.ok()) << #expr << ": " << assert_ok_status.ToString(); \
  } while (0)

constexpr TimeMs kStartTimeoutMs = 10'000;  // process start until the port file appears
constexpr TimeMs kIoTimeoutMs = 5'000;      // one answer from the coordinator
constexpr TimeMs kEpochTimeoutMs = 15'000;  // a proposal, which may wait for a setup timeout
constexpr TimeMs kExitTimeoutMs = 5'000;    // SIGTERM until exit

// Settings every test coordinator runs with. The heartbeat timeout is long because the test
// clients do not send heartbeats; the setup timeout is short so that a setup left behind by a
// hostile client that vanished does not hold up the next proposal for long.
constexpr std::uint32_t kHeartbeatIntervalMs = 250;
constexpr std::uint32_t kHeartbeatTimeoutMs = 60'000;
constexpr std::uint32_t kSetupTimeoutMs = 3'000;
constexpr std::uint32_t kStreamsPerLink = 2;
constexpr std::uint32_t kSegmentBytes = 1u << 16;

std::string Describe(const net::Message& m) {
  std::string s = net::MsgTypeName(net::TypeOf(m));
  if (auto* e = std::get_if<net::Error>(&m)) s += " (" + e->reason + ")";
  if (auto* r = std::get_if<net::Reject>(&m)) s += " (" + r->reason + ")";
  return s;
}

PeerId NewPeerId() {
  static std::mt19937_64 rng{std::random_device{}()};
  PeerId id = 0;
  while (id == 0) id = rng();
  return id;
}

class CoordRobustnessTest : public ::testing::Test {
 protected:
  void StartCoordinator(const std::vector<std::string>& extra_args = {}) {
    ASSERT_TRUE(dir_.ok()) << "mkdtemp failed";
    std::vector<std::string> argv = {SHOAL_COORD_BIN,
                                     "--host",
                                     "127.0.0.1",
                                     "--port",
                                     "0",
                                     "--port-file",
                                     dir_.File("port"),
                                     "--log-level",
                                     "debug",
                                     "--heartbeat-interval-ms",
                                     std::to_string(kHeartbeatIntervalMs),
                                     "--heartbeat-timeout-ms",
                                     std::to_string(kHeartbeatTimeoutMs),
                                     "--setup-timeout-ms",
                                     std::to_string(kSetupTimeoutMs),
                                     "--streams-per-link",
                                     std::to_string(kStreamsPerLink),
                                     "--segment-bytes",
                                     std::to_string(kSegmentBytes)};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    ASSERT_OK(coord_.Spawn(argv, dir_.File("stdout"), dir_.File("stderr")));
    ASSERT_OK(ReadPortFile(dir_.File("port"), Deadline::After(kStartTimeoutMs), &coord_, &port_));
  }

  void TearDown() override {
    if (coord_.pid() > 0 && !coord_.exited()) {
      EXPECT_TRUE(coord_.Running()) << "shoal-coord is not running at the end of the test";
      std::optional<int> status = coord_.Signal(SIGTERM, Deadline::After(kExitTimeoutMs));
      EXPECT_TRUE(status.has_value())
          << "shoal-coord did not exit within " << kExitTimeoutMs << " ms of SIGTERM";
      if (status) {
        EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
            << "shoal-coord " << DescribeWaitStatus(*status);
      }
      coord_.KillAndReap();
    }
    if (HasFailure()) {
      std::string log = ReadWholeFile(dir_.File("stderr"));
      if (log.size() > 16384) log = "...\n" + log.substr(log.size() - 16384);
      std::cerr << "---- shoal-coord stderr ----\n" << log << "---- end ----\n";
    }
  }

  void ExpectAlive() {
    EXPECT_TRUE(coord_.Running()) << "shoal-coord exited";
    EXPECT_EQ(::kill(coord_.pid(), 0), 0);
  }

  void Connect(FramedClient* c, const std::string& source_ip = "") {
    ASSERT_OK(c->Connect("127.0.0.1", port_, Deadline::After(kIoTimeoutMs), source_ip));
  }

  // Sends `bytes` and expects the coordinator to close the connection. The send itself may fail
  // if the coordinator closed first, which is fine.
  void ExpectClosedAfter(const std::vector<std::uint8_t>& bytes, const std::string& what) {
    FramedClient bad;
    ASSERT_NO_FATAL_FAILURE(Connect(&bad));
    Status sent = bad.SendBytes(bytes, Deadline::After(kIoTimeoutMs));
    EXPECT_TRUE(sent.ok() || sent.code() == SHOAL_ERR_PEER_LOST) << sent.ToString();
    EXPECT_TRUE(bad.WaitClosedByPeer(Deadline::After(kIoTimeoutMs)))
        << "shoal-coord kept a connection after " << what;
  }

  // A peer that follows the protocol joins the (empty) group: Hello, Welcome, EpochPropose with
  // just itself, EpochReady, EpochCommit. Moves the client to `keep` if given. With
  // `retry_while_refused`, a connection closed before any answer (the coordinator refused it at
  // accept) is tried again until the deadline; each try waits on its socket.
  void ExpectWellBehavedClientWorks(const std::string& source_ip = "", FramedClient* keep = nullptr,
                                    bool retry_while_refused = false) {
    Deadline admission = Deadline::After(kIoTimeoutMs);
    FramedClient c;
    PeerId id = NewPeerId();
    net::Message m;
    for (;;) {
      ASSERT_NO_FATAL_FAILURE(Connect(&c, source_ip));
      Status s = c.Send(net::Hello{id, "127.0.0.1", 40000, std::nullopt}, admission);
      if (s.ok()) s = c.RecvSkippingHeartbeats(&m, admission);
      if (s.ok()) break;
      ASSERT_TRUE(retry_while_refused && s.code() == SHOAL_ERR_PEER_LOST && !admission.passed())
          << "no Welcome: " << s.ToString();
    }
    auto* welcome = std::get_if<net::Welcome>(&m);
    ASSERT_NE(welcome, nullptr) << "expected Welcome, got " << Describe(m);
    EXPECT_EQ(welcome->peer_id, id);
    EXPECT_EQ(welcome->heartbeat_interval_ms, kHeartbeatIntervalMs);
    EXPECT_EQ(welcome->heartbeat_timeout_ms, kHeartbeatTimeoutMs);

    // docs/protocol.md, admission 3: an empty group proposes at once to all pending peers.
    ASSERT_OK(c.RecvSkippingHeartbeats(&m, Deadline::After(kEpochTimeoutMs)));
    auto* propose = std::get_if<net::EpochPropose>(&m);
    ASSERT_NE(propose, nullptr) << "expected EpochPropose, got " << Describe(m);
    EXPECT_GT(propose->epoch, 0u);
    EXPECT_EQ(propose->streams_per_link, kStreamsPerLink);
    EXPECT_EQ(propose->segment_bytes, kSegmentBytes);
    ASSERT_EQ(propose->members.size(), 1u);
    EXPECT_EQ(propose->members[0], (net::Member{id, "127.0.0.1", 40000}));
    std::uint64_t epoch = propose->epoch;

    // A group of one has no data connections to make: ready at once.
    ASSERT_OK(c.Send(net::EpochReady{epoch, true, 0, SHOAL_OK}, Deadline::After(kIoTimeoutMs)));
    ASSERT_OK(c.RecvSkippingHeartbeats(&m, Deadline::After(kIoTimeoutMs)));
    auto* commit = std::get_if<net::EpochCommit>(&m);
    ASSERT_NE(commit, nullptr) << "expected EpochCommit, got " << Describe(m);
    EXPECT_EQ(commit->epoch, epoch);
    if (keep != nullptr) *keep = std::move(c);
  }

  TempDir dir_;
  ChildProcess coord_;
  std::uint16_t port_ = 0;
};

TEST_F(CoordRobustnessTest, WellBehavedClientJoinsAnEmptyGroup) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator());
  ASSERT_NO_FATAL_FAILURE(ExpectWellBehavedClientWorks());
  ExpectAlive();
}

TEST_F(CoordRobustnessTest, GarbageBytesCloseTheConnection) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator());
  std::vector<std::uint8_t> garbage = {'G', 'E', 'T', ' ', '/', ' ', 'H', 'T', 'T', 'P'};
  std::mt19937 rng(7);
  while (garbage.size() < 256) garbage.push_back(static_cast<std::uint8_t>(rng()));
  ASSERT_NO_FATAL_FAILURE(ExpectClosedAfter(garbage, "garbage bytes"));
  ExpectAlive();
  ASSERT_NO_FATAL_FAILURE(ExpectWellBehavedClientWorks());
}

TEST_F(CoordRobustnessTest, BadMagicClosesTheConnection) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator());
  ASSERT_NO_FATAL_FAILURE(
      ExpectClosedAfter(RawHeader(0xdeadbeef, net::kProtocolVersion,
                                  static_cast<std::uint16_t>(net::MsgType::kHello), 0),
                        "a bad magic"));
  ExpectAlive();
  ASSERT_NO_FATAL_FAILURE(ExpectWellBehavedClientWorks());
}

TEST_F(CoordRobustnessTest, WrongVersionIsRejectedAndClosed) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator());
  FramedClient bad;
  ASSERT_NO_FATAL_FAILURE(Connect(&bad));
  ASSERT_OK(bad.SendBytes(RawHeader(net::kMagic, net::kProtocolVersion + 1,
                                    static_cast<std::uint16_t>(net::MsgType::kHello), 0),
                          Deadline::After(kIoTimeoutMs)));
  // docs/protocol.md: a bad version gets Reject, then the close.
  net::Message m;
  ASSERT_OK(bad.Recv(&m, Deadline::After(kIoTimeoutMs)));
  auto* reject = std::get_if<net::Reject>(&m);
  ASSERT_NE(reject, nullptr) << "expected Reject, got " << Describe(m);
  EXPECT_EQ(reject->code, SHOAL_ERR_REJECTED);
  EXPECT_NE(reject->reason.find("version"), std::string::npos) << reject->reason;
  EXPECT_TRUE(bad.WaitClosedByPeer(Deadline::After(kIoTimeoutMs)));
  ExpectAlive();
  ASSERT_NO_FATAL_FAILURE(ExpectWellBehavedClientWorks());
}

TEST_F(CoordRobustnessTest, UnknownTypeClosesTheConnection) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator());
  for (std::uint16_t type : {0, 17, 31, 34, 999, 0xffff}) {
    SCOPED_TRACE("type " + std::to_string(type));
    ASSERT_NO_FATAL_FAILURE(ExpectClosedAfter(
        RawHeader(net::kMagic, net::kProtocolVersion, type, 0), "an unknown message type"));
  }
  ExpectAlive();
  ASSERT_NO_FATAL_FAILURE(ExpectWellBehavedClientWorks());
}

TEST_F(CoordRobustnessTest, DataSegmentOnAControlConnectionClosesIt) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator());
  std::vector<std::uint8_t> frame =
      RawHeader(net::kMagic, net::kProtocolVersion,
                static_cast<std::uint16_t>(net::MsgType::kDataSegment), net::kSegmentHeaderBytes);
  frame.resize(frame.size() + net::kSegmentHeaderBytes, 0);
  ASSERT_NO_FATAL_FAILURE(ExpectClosedAfter(frame, "a DataSegment frame"));
  ExpectAlive();
  ASSERT_NO_FATAL_FAILURE(ExpectWellBehavedClientWorks());
}

TEST_F(CoordRobustnessTest, HugeAnnouncedPayloadIsRefusedWithoutAllocating) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator());
  const std::uint16_t hello = static_cast<std::uint16_t>(net::MsgType::kHello);
  for (std::uint32_t payload_bytes :
       {std::uint32_t{1} << 31, std::uint32_t{0xffffffff}, limits::kControlPayloadBytesMax + 1}) {
    SCOPED_TRACE("announced payload of " + std::to_string(payload_bytes) + " bytes");
    std::vector<std::uint8_t> frame =
        RawHeader(net::kMagic, net::kProtocolVersion, hello, payload_bytes);
    frame.resize(frame.size() + 1000, 0xab);  // the start of the "payload"
    ASSERT_NO_FATAL_FAILURE(ExpectClosedAfter(frame, "a header announcing a huge payload"));
  }
  ExpectAlive();
  // Had it allocated the announced 2 GiB and touched it, the peak resident size would show it.
  long peak_kib = PeakRssKiB(coord_.pid());
  ASSERT_GT(peak_kib, 0) << "cannot read VmHWM of shoal-coord";
  EXPECT_LT(peak_kib, 256 * 1024) << "shoal-coord peaked at " << peak_kib << " KiB";
  ASSERT_NO_FATAL_FAILURE(ExpectWellBehavedClientWorks());
}

TEST_F(CoordRobustnessTest, TruncatedFramesThenCloseAreHarmless) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator());
  const std::uint16_t hello = static_cast<std::uint16_t>(net::MsgType::kHello);
  {
    SCOPED_TRACE("truncated payload");
    FramedClient bad;
    ASSERT_NO_FATAL_FAILURE(Connect(&bad));
    std::vector<std::uint8_t> frame = RawHeader(net::kMagic, net::kProtocolVersion, hello, 100);
    frame.resize(frame.size() + 10, 0x01);
    ASSERT_OK(bad.SendBytes(frame, Deadline::After(kIoTimeoutMs)));
    bad.ShutdownWrite();  // end of stream in the middle of the payload
    EXPECT_TRUE(bad.WaitClosedByPeer(Deadline::After(kIoTimeoutMs)));
  }
  {
    SCOPED_TRACE("truncated header");
    FramedClient bad;
    ASSERT_NO_FATAL_FAILURE(Connect(&bad));
    std::vector<std::uint8_t> frame = RawHeader(net::kMagic, net::kProtocolVersion, hello, 100);
    frame.resize(5);
    ASSERT_OK(bad.SendBytes(frame, Deadline::After(kIoTimeoutMs)));
    bad.ShutdownWrite();
    EXPECT_TRUE(bad.WaitClosedByPeer(Deadline::After(kIoTimeoutMs)));
  }
  {
    SCOPED_TRACE("truncated payload, then an abrupt close");
    FramedClient bad;
    ASSERT_NO_FATAL_FAILURE(Connect(&bad));
    std::vector<std::uint8_t> frame = RawHeader(net::kMagic, net::kProtocolVersion, hello, 100);
    frame.resize(frame.size() + 10, 0x01);
    ASSERT_OK(bad.SendBytes(frame, Deadline::After(kIoTimeoutMs)));
  }  // closed here
  ExpectAlive();
  ASSERT_NO_FATAL_FAILURE(ExpectWellBehavedClientWorks());
}

TEST_F(CoordRobustnessTest, MessageBeforeHelloIsRefused) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator());
  FramedClient bad;
  ASSERT_NO_FATAL_FAILURE(Connect(&bad));
  ASSERT_OK(bad.Send(net::UpdateTopology{1}, Deadline::After(kIoTimeoutMs)));
  net::Message m;
  Status s = bad.RecvSkippingHeartbeats(&m, Deadline::After(kIoTimeoutMs));
  if (s.ok()) {
    EXPECT_TRUE(std::holds_alternative<net::Error>(m) || std::holds_alternative<net::Reject>(m))
        << "expected Error or Reject, got " << Describe(m);
  } else {
    EXPECT_EQ(s.code(), SHOAL_ERR_PEER_LOST) << "expected an answer or a close: " << s.ToString();
  }
  bad.Close();
  ExpectAlive();
  ASSERT_NO_FATAL_FAILURE(ExpectWellBehavedClientWorks());
}

// After a valid Hello, a message that only the coordinator sends (or a data-plane DataHello) is
// answered with Error; the hostile client then vanishes and the group recovers.
class ForbiddenFromPeerTest : public CoordRobustnessTest,
                              public ::testing::WithParamInterface<net::Message> {};

TEST_P(ForbiddenFromPeerTest, IsAnsweredWithError) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator());
  FramedClient bad;
  ASSERT_NO_FATAL_FAILURE(Connect(&bad));
  PeerId id = NewPeerId();
  ASSERT_OK(bad.Send(net::Hello{id, "127.0.0.1", 40001, std::nullopt}, Deadline::After(kIoTimeoutMs)));
  net::Message m;
  ASSERT_OK(bad.RecvSkippingHeartbeats(&m, Deadline::After(kIoTimeoutMs)));
  ASSERT_TRUE(std::holds_alternative<net::Welcome>(m)) << "expected Welcome, got " << Describe(m);

  ASSERT_OK(bad.Send(GetParam(), Deadline::After(kIoTimeoutMs)));
  // The coordinator may have proposed an epoch (the group was empty) before it read ours.
  Deadline deadline = Deadline::After(kIoTimeoutMs);
  for (;;) {
    Status s = bad.RecvSkippingHeartbeats(&m, deadline);
    ASSERT_TRUE(s.ok()) << "expected Error: " << s.ToString();
    if (!std::holds_alternative<net::EpochPropose>(m)) break;
  }
  auto* error = std::get_if<net::Error>(&m);
  ASSERT_NE(error, nullptr) << "expected Error, got " << Describe(m);
  EXPECT_EQ(error->code, SHOAL_ERR_PROTOCOL) << error->reason;
  bad.Close();

  ExpectAlive();
  ASSERT_NO_FATAL_FAILURE(ExpectWellBehavedClientWorks());
}

INSTANTIATE_TEST_SUITE_P(
    CoordinatorOnlyMessages, ForbiddenFromPeerTest,
    ::testing::Values(net::Message{net::Welcome{1, 250, 3000}},
                      net::Message{net::Reject{SHOAL_ERR_REJECTED, "no"}},
                      net::Message{net::TopologyUnchanged{1}},
                      net::Message{net::EpochPropose{1, 1, 1u << 16, {net::Member{1, "h", 1}}}},
                      net::Message{net::EpochCommit{1}}, net::Message{net::OpCommit{1, 2, 3}},
                      net::Message{net::EpochAbort{1, SHOAL_ERR_PEER_LOST, 5}},
                      net::Message{net::Removed{SHOAL_ERR_NOT_MEMBER, "x"}},
                      net::Message{net::DataHello{1, 2, 3, 0, 1}}),
    [](const ::testing::TestParamInfo<net::Message>& info) {
      return std::string(net::MsgTypeName(net::TypeOf(info.param)));
    });

TEST_F(CoordRobustnessTest, ManyConnectionsAtOnce) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator({"--hello-timeout-ms", "60000"}));
  constexpr int kConnections = 200;  // below the default per-address burst of shoal-coord
  std::vector<FramedClient> clients(kConnections);
  for (FramedClient& c : clients) ASSERT_OK(c.StartConnect("127.0.0.1", port_));
  Deadline connected = Deadline::After(kIoTimeoutMs);
  for (FramedClient& c : clients) ASSERT_OK(c.FinishConnect(connected));

  // A quarter sends garbage, a quarter a truncated frame, the rest stays silent.
  std::vector<std::uint8_t> garbage(64, 0x5a);
  std::vector<std::uint8_t> truncated = RawHeader(
      net::kMagic, net::kProtocolVersion, static_cast<std::uint16_t>(net::MsgType::kHello), 50);
  for (int i = 0; i < kConnections; i++) {
    if (i % 4 == 0) ASSERT_OK(clients[i].SendBytes(garbage, Deadline::After(kIoTimeoutMs)));
    if (i % 4 == 1) ASSERT_OK(clients[i].SendBytes(truncated, Deadline::After(kIoTimeoutMs)));
  }
  // With all of them open, a well-behaved client still gets in.
  ASSERT_NO_FATAL_FAILURE(ExpectWellBehavedClientWorks());

  Deadline closed = Deadline::After(kIoTimeoutMs);
  for (int i = 0; i < kConnections; i += 4) {
    EXPECT_TRUE(clients[i].WaitClosedByPeer(closed)) << "garbage connection " << i << " kept";
  }
  ExpectAlive();
}

TEST_F(CoordRobustnessTest, FloodFromOneAddressDoesNotStarveOthers) {
  {
    FramedClient probe;  // 127.0.0.0/8 is all loopback on Linux; make sure we may bind to it
    Status s = probe.StartConnect("127.0.0.1", 9, "127.0.0.2");
    if (!s.ok()) GTEST_SKIP() << "cannot use 127.0.0.2 as a source address: " << s.ToString();
  }
  // No refill: exactly `burst` attempts from 127.0.0.1 get in, the rest are closed at once.
  constexpr int kBurst = 8;
  constexpr int kFlood = 64;
  ASSERT_NO_FATAL_FAILURE(
      StartCoordinator({"--accept-burst", std::to_string(kBurst), "--accept-rate-per-s", "0",
                        "--hello-timeout-ms", "60000"}));
  std::vector<FramedClient> flood(kFlood);
  for (FramedClient& c : flood) ASSERT_OK(c.StartConnect("127.0.0.1", port_));
  Deadline connected = Deadline::After(kIoTimeoutMs);
  for (FramedClient& c : flood) ASSERT_OK(c.FinishConnect(connected));

  // Wait, on all sockets at once, until the refused ones are closed.
  int refused = 0;
  std::vector<bool> is_closed(kFlood, false);
  Deadline deadline = Deadline::After(kIoTimeoutMs);
  while (refused < kFlood - kBurst && !deadline.passed()) {
    std::vector<pollfd> fds;
    std::vector<int> index;
    for (int i = 0; i < kFlood; i++) {
      if (is_closed[i]) continue;
      fds.push_back({flood[i].fd(), POLLIN, 0});
      index.push_back(i);
    }
    int n = ::poll(fds.data(), fds.size(), static_cast<int>(deadline.remaining_ms()));
    if (n <= 0) continue;
    for (std::size_t k = 0; k < fds.size(); k++) {
      if (fds[k].revents == 0) continue;
      is_closed[index[k]] = true;
      refused++;
    }
  }
  EXPECT_EQ(refused, kFlood - kBurst);

  // 127.0.0.1 has no tokens left: the next attempt from there is refused too ...
  FramedClient more;
  ASSERT_NO_FATAL_FAILURE(Connect(&more));
  EXPECT_TRUE(more.WaitClosedByPeer(Deadline::After(kIoTimeoutMs)));
  // ... but another address is served.
  ASSERT_NO_FATAL_FAILURE(ExpectWellBehavedClientWorks("127.0.0.2"));
  // The admitted ones are still open (readable would mean closed: they sent nothing).
  for (int i = 0; i < kFlood; i++) {
    if (is_closed[i]) continue;
    pollfd p{flood[i].fd(), POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 0), 0) << "admitted connection " << i << " was closed";
  }
  ExpectAlive();
}

TEST_F(CoordRobustnessTest, ConnectionLimitRefusesTheSurplusAndRecovers) {
  constexpr int kMax = 16;
  ASSERT_NO_FATAL_FAILURE(
      StartCoordinator({"--max-connections", std::to_string(kMax), "--hello-timeout-ms", "60000"}));
  std::vector<FramedClient> idle(kMax);
  for (FramedClient& c : idle) ASSERT_NO_FATAL_FAILURE(Connect(&c));
  // The listen queue is FIFO: these were accepted before the next one is looked at.
  FramedClient surplus;
  ASSERT_NO_FATAL_FAILURE(Connect(&surplus));
  EXPECT_TRUE(surplus.WaitClosedByPeer(Deadline::After(kIoTimeoutMs)))
      << "connection over the limit was kept";

  // Free the slots. The coordinator notices the closes asynchronously, so the well-behaved
  // client retries while it is refused.
  idle.clear();
  ASSERT_NO_FATAL_FAILURE(ExpectWellBehavedClientWorks("", nullptr, /*retry_while_refused=*/true));
  ExpectAlive();
}

TEST_F(CoordRobustnessTest, SigintStopsCleanlyWithMembersConnected) {
  ASSERT_NO_FATAL_FAILURE(StartCoordinator());
  FramedClient member;
  ASSERT_NO_FATAL_FAILURE(ExpectWellBehavedClientWorks("", &member));
  std::optional<int> status = coord_.Signal(SIGINT, Deadline::After(kExitTimeoutMs));
  ASSERT_TRUE(status.has_value()) << "shoal-coord did not exit within " << kExitTimeoutMs
                                  << " ms of SIGINT";
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << DescribeWaitStatus(*status);
  EXPECT_TRUE(member.WaitClosedByPeer(Deadline::After(kIoTimeoutMs)));
}

// --- Command line --------------------------------------------------------------------------------

class CoordCommandLineTest : public ::testing::Test {
 protected:
  // Runs shoal-coord with `args` and expects it to exit on its own. Returns the wait status.
  int RunToExit(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {SHOAL_COORD_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    ChildProcess child;
    Status s = child.Spawn(argv, dir_.File("stdout"), dir_.File("stderr"));
    EXPECT_TRUE(s.ok()) << s.ToString();
    std::optional<int> status = child.WaitExit(Deadline::After(kExitTimeoutMs));
    EXPECT_TRUE(status.has_value()) << "shoal-coord did not exit on its own";
    return status.value_or(-1);
  }
  std::string Stderr() const { return ReadWholeFile(dir_.File("stderr")); }

  TempDir dir_;
};

TEST_F(CoordCommandLineTest, UnusableSecretsAreRefusedBeforeListening) {
  std::ofstream(dir_.File("empty")) << "\n";  // only the newline that is stripped
  std::ofstream(dir_.File("secret")) << "s3cret\n";
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--secret-file", dir_.File("empty")}, "the group secret is empty"},
      {{"--secret", ""}, "the group secret is empty"},
      {{"--secret-file", dir_.File("missing")}, "missing"},
      {{"--secret", "a", "--secret-file", dir_.File("secret")}, "excludes"},
  };
  for (const auto& [args, why] : cases) {
    std::vector<std::string> argv = {"--port", "0", "--port-file", dir_.File("port")};
    argv.insert(argv.end(), args.begin(), args.end());
    int status = RunToExit(argv);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << DescribeWaitStatus(status);
    EXPECT_NE(Stderr().find(why), std::string::npos) << Stderr();
    EXPECT_FALSE(std::filesystem::exists(dir_.File("port"))) << "it listened anyway";
  }
}

TEST_F(CoordCommandLineTest, BadFlagsAreRefused) {
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"--port", "70000"},
           {"--segment-bytes", "1"},
           {"--streams-per-link", "0"},
           {"--log-level", "loud"},
           {"--heartbeat-interval-ms", "1000", "--heartbeat-timeout-ms", "500"},
           {"--no-such-flag"}}) {
    SCOPED_TRACE(args[0]);
    int status = RunToExit(args);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << DescribeWaitStatus(status);
  }
}

TEST_F(CoordCommandLineTest, BusyPortIsReportedNotHung) {
  // Hold a port with a listener of our own.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(a);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  int status = RunToExit({"--port", std::to_string(ntohs(a.sin_port))});
  ::close(fd);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << DescribeWaitStatus(status);
  EXPECT_NE(Stderr().find("bind"), std::string::npos) << Stderr();
}

}  // namespace
}  // namespace shoal::mp
