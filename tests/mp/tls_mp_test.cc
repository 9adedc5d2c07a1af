// TLS on every connection with real processes on 127.0.0.1 (docs/protocol.md, "TLS"): shoal-coord
// --tls, peers with Options::tls, with and without the group secret, peers on the wrong side of
// the switch, raw clients that send garbage, and a peer SIGKILLed in the middle of an all-reduce.
// Every wait has a deadline; every process is killed and reaped by its ChildProcess destructor,
// also when an assertion fails.
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "mp/swarm.h"

namespace shoal::mp {
namespace {

constexpr TimeMs kExitMs = 120000;  // sanitizer builds are slow; a hang still ends here
constexpr const char* kSecret = "correct horse battery staple";

// The ERROR line a peer prints when Create fails.
Line CreateError(Swarm& swarm, int i) { return mp::CreateError(swarm, i, kExitMs); }

void ExpectAllExit0(Swarm& swarm, const std::vector<int>& peers) {
  for (int i : peers) {
    int st = swarm.WaitExit(i, kExitMs);
    EXPECT_TRUE(Exited0(st)) << "peer " << i << " " << DescribeWaitStatus(st) << "\n"
                             << swarm.Diagnostics();
  }
}

// Reads until the coordinator closes the connection; the result says how it ended (PEER_LOST for
// a close, TIMEOUT if it is still open at the deadline).
shoal_status DrainUntilClosed(FramedClient* c, TimeMs limit_ms) {
  Deadline deadline = Deadline::After(limit_ms);
  std::uint8_t byte = 0;
  for (;;) {
    Status s = c->RecvBytes(&byte, 1, deadline);
    if (!s.ok()) return s.code();
  }
}

TEST(TlsMpTest, MembersWithTlsAndTheSecretTrainAndMoveState) {
  TempDir dir;
  Swarm swarm(SHOAL_SYNC_PEER_BIN, {"--tls", "--secret-file", WriteSecretFile(dir, kSecret)});
  // Three members; one starts with a flipped bit, so a sync moves bytes over a TLS transfer link,
  // and every step all-reduces (checked) over the TLS ring links.
  for (int i = 0; i < 3; i++) {
    std::vector<std::string> args = {"--expect", "3",     "--layout",    "f32:65536,f32:16",
                                     "--steps",  "3",     "--allreduce", "65536",
                                     "--secret", kSecret, "--tls"};
    if (i == 2) args.insert(args.end(), {"--flip", "0:100"});
    swarm.StartPeer(args);
  }
  for (int i = 0; i < 3; i++) {
    int st = swarm.WaitExit(i, kExitMs);
    ASSERT_TRUE(Exited0(st)) << "peer " << i << " " << DescribeWaitStatus(st) << "\n"
                             << swarm.Diagnostics();
  }
  bool moved = false;
  std::string state;
  int synced = 0;
  for (int i = 0; i < 3; i++) {
    for (const Line& l : swarm.Lines(i)) {
      if (l.word == "SYNC" && l.get("step") == "0" && l.get("status") == "0") {
        moved = moved || l.num("rx") > 0;
      }
      if (l.word == "SYNC" && l.get("step") == "2" && l.get("status") == "0") {
        synced++;
        if (state.empty()) state = l.get("state");
        EXPECT_EQ(l.get("state"), state) << "peer " << i;
      }
    }
  }
  EXPECT_EQ(synced, 3) << swarm.Diagnostics();
  EXPECT_TRUE(moved) << "the flipped tensor should have been sent to peer 2\n"
                     << swarm.Diagnostics();
}

TEST(TlsMpTest, TlsWithoutASecretStillWorks) {
  Swarm swarm(SHOAL_SYNC_PEER_BIN, {"--tls"});
  int a = swarm.StartPeer({"--expect", "2", "--steps", "2", "--allreduce", "4096", "--tls"});
  int b = swarm.StartPeer({"--expect", "2", "--steps", "2", "--allreduce", "4096", "--tls"});
  ExpectAllExit0(swarm, {a, b});
}

TEST(TlsMpTest, AWrongSecretOverTlsIsRefused) {
  TempDir dir;
  Swarm swarm(SHOAL_SYNC_PEER_BIN, {"--tls", "--secret-file", WriteSecretFile(dir, kSecret)});
  int wrong = swarm.StartPeer(
      {"--secret", "Correct horse battery staple", "--timeout-ms", "5000", "--tls"});
  int none = swarm.StartPeer({"--timeout-ms", "5000", "--tls"});
  Line w = CreateError(swarm, wrong);
  Line n = CreateError(swarm, none);
  EXPECT_EQ(w.num("status"), SHOAL_ERR_AUTH) << swarm.Diagnostics();
  EXPECT_NE(w.get("msg").find("does not hold the group secret"), std::string::npos) << w.raw;
  EXPECT_EQ(n.num("status"), SHOAL_ERR_AUTH) << swarm.Diagnostics();
  EXPECT_NE(n.get("msg").find("requires its secret"), std::string::npos) << n.raw;
}

TEST(TlsMpTest, APlainPeerOfATlsCoordinatorIsRefusedAndTheGroupGoesOn) {
  TempDir dir;
  Swarm swarm(SHOAL_SYNC_PEER_BIN, {"--tls", "--secret-file", WriteSecretFile(dir, kSecret)});
  int plain = swarm.StartPeer({"--secret", kSecret, "--timeout-ms", "5000"});
  TimeMs started_ms = MonotonicNowMs();
  Line e = CreateError(swarm, plain);
  EXPECT_EQ(e.num("status"), SHOAL_ERR_PROTOCOL) << swarm.Diagnostics();
  EXPECT_NE(e.get("msg").find("requires TLS"), std::string::npos) << e.raw;
  EXPECT_LT(MonotonicNowMs() - started_ms, 5000) << "the refusal must not wait for a deadline";
  // Garbage dressed as a TLS record, and garbage that is neither TLS nor a shoal frame: each
  // connection is closed; the coordinator serves TLS peers after.
  for (std::vector<std::uint8_t> junk :
       {std::vector<std::uint8_t>{0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5},
        std::vector<std::uint8_t>{'G', 'E', 'T', ' ', '/', '\r', '\n', '\r', '\n', 0, 0, 0}}) {
    FramedClient c;
    ASSERT_TRUE(c.Connect("127.0.0.1", swarm.port(), Deadline::After(5000)).ok());
    ASSERT_TRUE(c.SendBytes(junk, Deadline::After(5000)).ok());
    EXPECT_EQ(DrainUntilClosed(&c, 5000), SHOAL_ERR_PEER_LOST) << "junk " << int(junk[0]);
  }
  int a = swarm.StartPeer({"--expect", "2", "--steps", "2", "--secret", kSecret, "--tls"});
  int b = swarm.StartPeer({"--expect", "2", "--steps", "2", "--secret", kSecret, "--tls"});
  ExpectAllExit0(swarm, {a, b});
}

TEST(TlsMpTest, ATlsPeerOfAPlainCoordinatorIsRefusedAndTheGroupGoesOn) {
  Swarm swarm(SHOAL_SYNC_PEER_BIN, {"--hello-timeout-ms", "1000"});
  int tls = swarm.StartPeer({"--timeout-ms", "5000", "--tls"});
  TimeMs started_ms = MonotonicNowMs();
  Line e = CreateError(swarm, tls);
  EXPECT_EQ(e.num("status"), SHOAL_ERR_PROTOCOL) << swarm.Diagnostics();
  EXPECT_NE(e.get("msg").find("does not use TLS"), std::string::npos) << e.raw;
  EXPECT_LT(MonotonicNowMs() - started_ms, 5000) << "the refusal must not wait for a deadline";
  // A broken ClientHello at a plain coordinator is closed at once; a handshake that stalls (half
  // a handshake message, then nothing) is closed at the Hello deadline (1 s here).
  FramedClient broken;
  ASSERT_TRUE(broken.Connect("127.0.0.1", swarm.port(), Deadline::After(5000)).ok());
  ASSERT_TRUE(broken
                  .SendBytes(std::vector<std::uint8_t>{0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5},
                             Deadline::After(5000))
                  .ok());
  EXPECT_EQ(DrainUntilClosed(&broken, 5000), SHOAL_ERR_PEER_LOST);
  FramedClient stalled;
  ASSERT_TRUE(stalled.Connect("127.0.0.1", swarm.port(), Deadline::After(5000)).ok());
  ASSERT_TRUE(stalled
                  .SendBytes(std::vector<std::uint8_t>{0x16, 0x03, 0x01, 0x00, 0x02, 0x01, 0x00},
                             Deadline::After(5000))
                  .ok());
  TimeMs stalled_ms = MonotonicNowMs();
  EXPECT_EQ(DrainUntilClosed(&stalled, 10000), SHOAL_ERR_PEER_LOST);
  EXPECT_LT(MonotonicNowMs() - stalled_ms, 4000)
      << "the Hello deadline must end a stalled handshake";
  int a = swarm.StartPeer({"--expect", "2", "--steps", "2"});
  int b = swarm.StartPeer({"--expect", "2", "--steps", "2"});
  ExpectAllExit0(swarm, {a, b});
}

TEST(TlsMpTest, SigkillMidAllReduceOverTlsGivesTheAgreedErrorThenRetrySucceeds) {
  const int n = 4;
  const int victim = 1;
  TempDir dir;
  Swarm swarm(SHOAL_TEST_PEER_BIN, {"--tls", "--secret-file", WriteSecretFile(dir, kSecret)});
  (void)dir;
  // 64 MiB of f32 per peer: long enough over TLS on loopback that the kill lands inside the op.
  for (int i = 0; i < n; i++) {
    swarm.StartPeer({"--expect", std::to_string(n), "--steps", "3", "--count", "16777216", "--tls",
                     "--secret", kSecret});
  }
  ASSERT_TRUE(swarm.WaitAllForLine(
      [](const Line& l) { return l.word == "START" && l.get("step") == "1"; }, kExitMs))
      << swarm.Diagnostics();
  std::string victim_id = swarm.IdOf(victim);
  swarm.peer(victim).KillAndReap();
  std::set<std::string> errors;
  for (int i = 0; i < n; i++) {
    if (i == victim) continue;
    int st = swarm.WaitExit(i, kExitMs);
    ASSERT_TRUE(Exited0(st)) << "peer " << i << " " << DescribeWaitStatus(st) << "\n"
                             << swarm.Diagnostics();
    bool failed = false;
    bool recovered = false;
    for (const Line& l : swarm.Lines(i)) {
      if (l.word != "RESULT" || l.get("step") != "1") continue;
      if (l.get("status") != "0") {
        failed = true;
        errors.insert(l.get("status") + "/" + l.get("lost"));
      } else if (failed) {
        EXPECT_EQ(l.get("check"), "ok");
        EXPECT_EQ(l.get("n"), "3");
        recovered = true;
        break;
      }
    }
    EXPECT_TRUE(failed) << "peer " << i << " saw no failure of step 1\n" << swarm.Diagnostics();
    EXPECT_TRUE(recovered) << "peer " << i << " did not redo step 1\n" << swarm.Diagnostics();
  }
  ASSERT_EQ(errors.size(), 1u) << swarm.Diagnostics();
  EXPECT_EQ(*errors.begin(), std::to_string(SHOAL_ERR_PEER_LOST) + "/" + victim_id);
}

}  // namespace
}  // namespace shoal::mp
