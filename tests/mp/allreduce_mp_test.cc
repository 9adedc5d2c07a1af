// Multi-process all-reduce tests: a real shoal-coord and real shoal_test_peer processes on
// 127.0.0.1. Every wait has a deadline; every process is killed and reaped by its ChildProcess
// destructor, also when an assertion fails.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>

#include "mp/swarm.h"

namespace shoal::mp {
namespace {

// Every successful result of the same collective (epoch, k, dtype, op) has the same hash on every
// peer that reported it, and (unless the test killed peers at the end) each such collective was
// reported by exactly n peers.
void ExpectBitIdentical(Swarm& swarm, bool require_all_members = true) {
  std::map<std::string, std::set<std::string>> hashes;
  std::map<std::string, int> reporters;
  std::map<std::string, int> expected_n;
  for (int i = 0; i < swarm.peers(); i++) {
    for (const Line& l : swarm.Lines(i)) {
      if (l.word != "RESULT" || l.get("status") != "0") continue;
      EXPECT_EQ(l.get("check"), "ok") << "peer " << i << " step " << l.get("step");
      std::string key = l.get("epoch") + "/" + l.get("k") + "/" + l.get("dtype") + "/" + l.get("op");
      hashes[key].insert(l.get("hash"));
      reporters[key]++;
      expected_n[key] = static_cast<int>(l.num("n"));
    }
  }
  EXPECT_FALSE(hashes.empty());
  for (const auto& [key, set] : hashes) {
    EXPECT_EQ(set.size(), 1u) << "members disagree on the bits of " << key;
    if (require_all_members) {
      EXPECT_EQ(reporters[key], expected_n[key]) << "not every member reported success for " << key;
    }
  }
}

class AllReduceMatrix : public ::testing::TestWithParam<int> {};

TEST_P(AllReduceMatrix, EveryDtypeAndOpIsExactAndBitIdentical) {
  const int n = GetParam();
  Swarm swarm(SHOAL_TEST_PEER_BIN);
  for (int i = 0; i < n; i++) {
    swarm.StartPeer({"--expect", std::to_string(n), "--steps", "1", "--count", "1001", "--matrix",
                     "--no-retry"});
  }
  for (int i = 0; i < n; i++) {
    int st = swarm.WaitExit(i, 120000);
    ASSERT_TRUE(Exited0(st)) << "peer " << i << " " << DescribeWaitStatus(st) << "\n"
                             << swarm.Diagnostics();
  }
  ExpectBitIdentical(swarm);
  int results = 0;
  for (const Line& l : swarm.Lines(0)) results += l.word == "RESULT";
  EXPECT_EQ(results, SHOAL_DTYPE_COUNT * SHOAL_REDUCE_OP_COUNT);
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, AllReduceMatrix, ::testing::Values(2, 3, 4, 8));

TEST(AllReduceFaults, SigkillMidAllReduceGivesEverySurvivorTheSameErrorThenRetrySucceeds) {
  const int n = 4;
  const int victim = 2;
  Swarm swarm(SHOAL_TEST_PEER_BIN);
  // 128 MiB of f32 per peer: long enough on loopback that the kill lands inside the op.
  for (int i = 0; i < n; i++) {
    swarm.StartPeer({"--expect", std::to_string(n), "--steps", "3", "--count", "33554432"});
  }
  // Wait until every peer has started step 1 (step 0 completed everywhere), then kill.
  ASSERT_TRUE(swarm.WaitAllForLine([](const Line& l) {
    return l.word == "START" && l.get("step") == "1";
  }, 120000)) << swarm.Diagnostics();
  std::string victim_id = swarm.IdOf(victim);
  TimeMs killed_ms = MonotonicNowMs();
  swarm.peer(victim).KillAndReap();

  std::vector<TimeMs> error_ms, recovered_ms;
  std::set<std::string> errors;
  for (int i = 0; i < n; i++) {
    if (i == victim) continue;
    int st = swarm.WaitExit(i, 120000);
    ASSERT_TRUE(Exited0(st)) << "peer " << i << " " << DescribeWaitStatus(st) << "\n"
                             << swarm.Diagnostics();
    bool failed = false;
    for (const Line& l : swarm.Lines(i)) {
      if (l.word != "RESULT" || l.get("step") != "1") continue;
      if (l.get("status") != "0") {
        failed = true;
        errors.insert(l.get("status") + "/" + l.get("lost"));
        error_ms.push_back(l.num("t_ms") - killed_ms);
      } else if (failed) {
        EXPECT_EQ(l.get("check"), "ok");
        EXPECT_EQ(l.get("n"), "3");
        recovered_ms.push_back(l.num("t_ms") - killed_ms);
        break;
      }
    }
    EXPECT_TRUE(failed) << "peer " << i << " saw no failure of step 1\n" << swarm.Diagnostics();
  }
  // Every survivor got the same status code, naming the killed peer.
  ASSERT_EQ(errors.size(), 1u) << swarm.Diagnostics();
  EXPECT_EQ(*errors.begin(), std::to_string(SHOAL_ERR_PEER_LOST) + "/" + victim_id);
  ExpectBitIdentical(swarm);
  for (std::size_t i = 0; i < error_ms.size(); i++) {
    std::printf("survivor: error %lld ms after SIGKILL\n", static_cast<long long>(error_ms[i]));
  }
  for (std::size_t i = 0; i < recovered_ms.size(); i++) {
    std::printf("survivor: next successful all-reduce %lld ms after SIGKILL\n",
                static_cast<long long>(recovered_ms[i]));
  }
}

TEST(AllReduceFaults, StalledPeerIsDroppedByHeartbeatAndTheOthersGoOn) {
  const int n = 4;
  const int victim = 2;
  Swarm swarm(SHOAL_TEST_PEER_BIN);
  for (int i = 0; i < n; i++) {
    swarm.StartPeer({"--expect", std::to_string(n), "--steps", "400", "--count", "262144"});
  }
  ASSERT_TRUE(swarm.WaitAllForLine([](const Line& l) {
    return l.word == "RESULT" && l.get("step") == "3";
  }, 60000)) << swarm.Diagnostics();
  std::string victim_id = swarm.IdOf(victim);
  ASSERT_EQ(::kill(swarm.peer(victim).pid(), SIGSTOP), 0);
  TimeMs stopped_ms = MonotonicNowMs();
  // The survivors go on among three once the coordinator's heartbeat deadline drops the stalled
  // peer. If the stop caught them inside an all-reduce, that op failed on all of them with the
  // stalled peer named; if it caught them at the step boundary, the barrier completed without it.
  for (int i = 0; i < n; i++) {
    if (i == victim) continue;
    ASSERT_TRUE(swarm.WaitFor(i, [&](const std::vector<Line>& ls) {
      for (const Line& l : ls) {
        if (l.word == "RESULT" && l.get("status") == "0" && l.get("n") == "3") return true;
      }
      return false;
    }, 60000)) << "peer " << i << "\n" << swarm.Diagnostics();
    for (const Line& l : swarm.Lines(i)) {
      if (l.word == "RESULT" && l.get("status") != "0") {
        EXPECT_EQ(l.get("status"), std::to_string(SHOAL_ERR_PEER_LOST));
        EXPECT_EQ(l.get("lost"), victim_id);
        std::printf("survivor: error %lld ms after SIGSTOP\n",
                    static_cast<long long>(l.num("t_ms") - stopped_ms));
      }
      if (l.word == "RESULT" && l.get("status") == "0" && l.get("n") == "3") {
        std::printf("survivor: first all-reduce among three %lld ms after SIGSTOP\n",
                    static_cast<long long>(l.num("t_ms") - stopped_ms));
        break;
      }
    }
  }
  ::kill(swarm.peer(victim).pid(), SIGCONT);
  for (int i = 0; i < n; i++) swarm.peer(i).KillAndReap();
  ExpectBitIdentical(swarm, /*require_all_members=*/false);
}

TEST(AllReduceMembership, NewPeerJoinsARunningGroup) {
  Swarm swarm(SHOAL_TEST_PEER_BIN);
  for (int i = 0; i < 3; i++) {
    swarm.StartPeer({"--expect", "3", "--steps", "40", "--count", "100000"});
  }
  ASSERT_TRUE(swarm.WaitFor(0, [](const std::vector<Line>& ls) {
    for (const Line& l : ls) if (l.word == "RESULT" && l.get("step") == "3") return true;
    return false;
  }, 60000)) << swarm.Diagnostics();
  int joiner = swarm.StartPeer({"--expect", "4", "--steps", "5", "--count", "100000"});
  int st = swarm.WaitExit(joiner, 60000);
  ASSERT_TRUE(Exited0(st)) << DescribeWaitStatus(st) << "\n" << swarm.Diagnostics();
  for (int i = 0; i < 3; i++) {
    st = swarm.WaitExit(i, 120000);
    ASSERT_TRUE(Exited0(st)) << "peer " << i << " " << DescribeWaitStatus(st) << "\n"
                             << swarm.Diagnostics();
  }
  // The joiner ran its steps in a group of 4, with the same bits as the members.
  int joined_results = 0;
  for (const Line& l : swarm.Lines(joiner)) {
    if (l.word == "RESULT" && l.get("status") == "0") {
      EXPECT_EQ(l.get("n"), "4");
      joined_results++;
    }
  }
  EXPECT_EQ(joined_results, 5);
  ExpectBitIdentical(swarm);
}

TEST(AllReduceMembership, PeerLeavesCleanlyAndTheOthersGoOn) {
  Swarm swarm(SHOAL_TEST_PEER_BIN);
  for (int i = 0; i < 4; i++) {
    std::vector<std::string> args = {"--expect", "4", "--steps", "8", "--count", "50000"};
    if (i == 1) args.insert(args.end(), {"--leave-after", "3"});
    swarm.StartPeer(args);
  }
  for (int i = 0; i < 4; i++) {
    int st = swarm.WaitExit(i, 120000);
    ASSERT_TRUE(Exited0(st)) << "peer " << i << " " << DescribeWaitStatus(st) << "\n"
                             << swarm.Diagnostics();
  }
  bool left = false;
  for (const Line& l : swarm.Lines(1)) left |= l.word == "LEFT";
  EXPECT_TRUE(left);
  // The others finished their steps, the last ones among three members.
  for (int i : {0, 2, 3}) {
    std::string last_n;
    for (const Line& l : swarm.Lines(i)) {
      if (l.word == "RESULT" && l.get("status") == "0") last_n = l.get("n");
      // A failure caused by the leave names the leaver with PEER_LEFT.
      if (l.word == "RESULT" && l.get("status") != "0") {
        EXPECT_EQ(l.get("status"), std::to_string(SHOAL_ERR_PEER_LEFT));
      }
    }
    EXPECT_EQ(last_n, "3") << "peer " << i;
  }
  ExpectBitIdentical(swarm);
}

}  // namespace
}  // namespace shoal::mp
