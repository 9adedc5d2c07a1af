// Coordinator crash survival (docs/protocol.md, "Coordinator restart") with real processes on
// 127.0.0.1: a shoal-coord, four shoal_sync_peer processes training in a loop (sync the shared
// state, all-reduce a gradient, add it to the state, revision + 1; see sync_peer.cc), and SIGKILL
// of the coordinator in the middle of an all-reduce and in the middle of a shared-state sync,
// each followed by a new shoal-coord on the same port, as a supervisor would start it.
//
// What must hold whatever the exact moment of the kill: every peer finishes every step; the
// revisions each peer synced are 0, 1, 2, ... with none skipped or repeated; at every revision all
// peers hold the same bytes (the SYNC lines' state hashes); a failed attempt failed on every peer
// with the same status and lost peer. The test prints, for each restart, whether the interrupted op
// resumed without an error or was aborted and retried, and the time from the new coordinator's
// start to the next step that every peer completed (the figure; measured, not asserted).
//
// Every wait has a deadline; every process is killed and reaped by its ChildProcess destructor,
// also when an assertion fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "mp/swarm.h"

namespace shoal::mp {
namespace {

constexpr TimeMs kExitMs = 180000;  // sanitizer builds are slow; a hang still ends here
constexpr int kPeers = 4;
constexpr int kSteps = 10;

bool HasLine(const std::vector<Line>& lines, const std::string& word, int step) {
  for (const Line& l : lines) {
    if (l.word == word && l.get("step") == std::to_string(step)) return true;
  }
  return false;
}

// The first successful SYNC or ALLREDUCE line of each peer that ends after `t_ms`: the step every
// peer completed first after that moment, and when the last of them completed it.
struct NextStep {
  std::string what;  // "SYNC step=.." or "ALLREDUCE step=.."
  TimeMs done_ms = 0;
};
NextStep NextSuccessAfter(const Swarm& swarm, TimeMs t_ms) {
  NextStep next;
  for (int i = 0; i < swarm.peers(); i++) {
    for (const Line& l : swarm.Lines(i)) {
      if ((l.word != "SYNC" && l.word != "ALLREDUCE") || l.get("status") != "0") continue;
      TimeMs t = static_cast<TimeMs>(l.num("t"));
      if (t < t_ms) continue;
      next.done_ms = std::max(next.done_ms, t);
      if (next.what.empty()) next.what = l.word + " step=" + l.get("step");
      break;
    }
  }
  return next;
}

// What the op interrupted by a kill at step `step` ended with on every peer: its attempts'
// statuses (the same on every peer, or the test fails).
std::string Outcome(const Swarm& swarm, const std::string& word, int step) {
  std::vector<std::string> first;
  for (int i = 0; i < swarm.peers(); i++) {
    std::vector<std::string> attempts;
    for (const Line& l : swarm.Lines(i)) {
      if (l.word == word && l.get("step") == std::to_string(step)) {
        attempts.push_back(l.get("status") + "/" + l.get("lost"));
      }
    }
    if (i == 0) first = attempts;
    EXPECT_EQ(attempts, first) << word << " step " << step << ": peer " << i
                               << " saw other outcomes than peer 0";
  }
  std::string s;
  for (const std::string& a : first) s += (s.empty() ? "" : " then ") + a;
  return first.size() == 1 ? "completed without an error" : "attempts " + s;
}

TEST(CoordRestartMpTest, KillNineMidAllReduceAndMidSyncAndTheRunGoesOn) {
  // The coordinator restarts with its default startup hold (1 s): the rebuild must not wait for it.
  Swarm swarm(SHOAL_SYNC_PEER_BIN, {"--startup-hold-ms", "1000"});
  // A 16 MiB f32 state tensor and a 16 MiB gradient: long enough (30-50 ms per all-reduce here,
  // seconds under the sanitizers) for a kill to land inside an op, small enough for TSan on two
  // cores.
  for (int i = 0; i < kPeers; i++) {
    swarm.StartPeer({"--expect", std::to_string(kPeers), "--layout", "f32:4194304,f32:1000",
                     "--steps", std::to_string(kSteps), "--allreduce", "4194304", "--retry",
                     "--hold-ms", "20"});
  }
  auto all_have = [&](const std::string& word, int step) {
    for (int i = 0; i < kPeers; i++) {
      bool seen = swarm.WaitFor(i, [&](const std::vector<Line>& ls) {
        return HasLine(ls, word, step);
      }, kExitMs, 2);
      if (!seen) return false;
    }
    return true;
  };

  // Kill 1: every peer has started the all-reduce of step 3.
  ASSERT_TRUE(all_have("ARSTART", 3)) << swarm.Diagnostics();
  swarm.KillCoordinator();
  int mid_allreduce = 0;
  for (int i = 0; i < kPeers; i++) mid_allreduce += !HasLine(swarm.Lines(i), "ALLREDUCE", 3);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  TimeMs restart1 = MonotonicNowMs();
  swarm.RestartCoordinator();

  // Kill 2: a peer has started the sync of step 7 (its report may or may not have been sent).
  ASSERT_TRUE(swarm.WaitFor(0, [&](const std::vector<Line>& ls) {
    return HasLine(ls, "SYNCSTART", 7);
  }, kExitMs, 2)) << swarm.Diagnostics();
  swarm.KillCoordinator();
  int mid_sync = 0;
  for (int i = 0; i < kPeers; i++) {
    std::vector<Line> ls = swarm.Lines(i);
    mid_sync += HasLine(ls, "SYNCSTART", 7) && !HasLine(ls, "SYNC", 7);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  TimeMs restart2 = MonotonicNowMs();
  swarm.RestartCoordinator();

  Deadline deadline = Deadline::After(kExitMs);
  for (int i = 0; i < kPeers; i++) {
    int st = swarm.WaitExit(i, std::max<TimeMs>(deadline.remaining_ms(), 1));
    ASSERT_TRUE(Exited0(st)) << "peer " << i << " " << DescribeWaitStatus(st) << "\n"
                             << swarm.Diagnostics();
  }

  // Revisions 0..kSteps-1, each synced once successfully by every peer, with equal state hashes.
  std::map<std::uint64_t, std::string> state_at;
  for (int i = 0; i < kPeers; i++) {
    std::vector<std::uint64_t> revisions;
    for (const Line& l : swarm.Lines(i)) {
      if (l.word != "SYNC" || l.get("status") != "0") continue;
      std::uint64_t rev = l.num("rev");
      revisions.push_back(rev);
      auto [it, fresh] = state_at.emplace(rev, l.get("state"));
      EXPECT_EQ(it->second, l.get("state")) << "peer " << i << " holds other bytes at revision "
                                            << rev;
    }
    std::vector<std::uint64_t> expected;
    for (std::uint64_t r = 0; r < kSteps; r++) expected.push_back(r);
    EXPECT_EQ(revisions, expected) << "peer " << i << ": the revision sequence is broken";
    int allreduces = 0;
    for (const Line& l : swarm.Lines(i)) allreduces += l.word == "ALLREDUCE" && l.get("status") == "0";
    EXPECT_EQ(allreduces, kSteps) << "peer " << i;
  }

  // Agreement on every attempt, and the figures.
  std::string ar = Outcome(swarm, "ALLREDUCE", 3);
  std::string sync = Outcome(swarm, "SYNC", 7);
  NextStep after1 = NextSuccessAfter(swarm, restart1);
  NextStep after2 = NextSuccessAfter(swarm, restart2);
  std::printf("restart 1 (SIGKILL with %d of %d peers inside the all-reduce of step 3): that "
              "all-reduce %s; %s completed on every peer %lld ms after the new coordinator "
              "started\n",
              mid_allreduce, kPeers, ar.c_str(), after1.what.c_str(),
              static_cast<long long>(after1.done_ms - restart1));
  std::printf("restart 2 (SIGKILL with %d of %d peers inside the sync of step 7): that sync %s; "
              "%s completed on every peer %lld ms after the new coordinator started\n",
              mid_sync, kPeers, sync.c_str(), after2.what.c_str(),
              static_cast<long long>(after2.done_ms - restart2));
  for (int i = 0; i < kPeers; i++) {  // the library's own account of each outage
    std::string out = swarm.Output(i);
    for (std::size_t at = out.find("reconnected to the coordinator after"); at != std::string::npos;
         at = out.find("reconnected to the coordinator after", at + 1)) {
      std::printf("peer %d: %s\n", i, out.substr(at, out.find('\n', at) - at).c_str());
    }
  }
  if (std::getenv("SHOAL_TEST_VERBOSE") != nullptr) std::printf("%s\n", swarm.Diagnostics().c_str());
  EXPECT_GT(after1.done_ms, 0);
  EXPECT_GT(after2.done_ms, 0);
}

TEST(CoordRestartMpTest, PeersMoveToAStandbyWhenThePrimaryStaysDown) {
  // Short heartbeats so that the failover (heartbeat timeout + interval) comes quickly.
  std::vector<std::string> set = {"--quorum", "--heartbeat-interval-ms", "100",
                                  "--heartbeat-timeout-ms", "800"};
  Swarm swarm(SHOAL_SYNC_PEER_BIN, set);
  std::vector<std::string> standby_args = set;
  standby_args.push_back("--standby");
  std::uint16_t standby = swarm.StartStandby(standby_args);
  constexpr int kStandbySteps = 8;
  for (int i = 0; i < 3; i++) {
    swarm.StartPeer({"--expect", "3", "--layout", "f32:262144,f32:1000", "--steps",
                     std::to_string(kStandbySteps), "--allreduce", "262144", "--retry",
                     "--hold-ms", "100", "--standby", "127.0.0.1:" + std::to_string(standby)});
  }
  for (int i = 0; i < 3; i++) {
    ASSERT_TRUE(swarm.WaitFor(i, [&](const std::vector<Line>& ls) {
      return HasLine(ls, "ALLREDUCE", 2);
    }, kExitMs)) << swarm.Diagnostics();
  }
  swarm.KillCoordinator();  // and it stays down: the standby takes the group
  TimeMs killed = MonotonicNowMs();
  Deadline deadline = Deadline::After(kExitMs);
  for (int i = 0; i < 3; i++) {
    int st = swarm.WaitExit(i, std::max<TimeMs>(deadline.remaining_ms(), 1));
    ASSERT_TRUE(Exited0(st)) << "peer " << i << " " << DescribeWaitStatus(st) << "\n"
                             << swarm.Diagnostics();
  }
  std::map<std::uint64_t, std::string> state_at;
  for (int i = 0; i < 3; i++) {
    std::vector<std::uint64_t> revisions;
    for (const Line& l : swarm.Lines(i)) {
      if (l.word != "SYNC" || l.get("status") != "0") continue;
      revisions.push_back(l.num("rev"));
      auto [it, fresh] = state_at.emplace(l.num("rev"), l.get("state"));
      EXPECT_EQ(it->second, l.get("state")) << "peer " << i << " at revision " << l.num("rev");
    }
    std::vector<std::uint64_t> expected;
    for (std::uint64_t r = 0; r < kStandbySteps; r++) expected.push_back(r);
    EXPECT_EQ(revisions, expected) << "peer " << i;
    EXPECT_NE(swarm.Output(i).find("trying coordinator 127.0.0.1:" + std::to_string(standby)),
              std::string::npos)
        << "peer " << i << " did not move to the standby";
  }
  NextStep after = NextSuccessAfter(swarm, killed);
  std::printf("primary SIGKILLed and left down: %s completed on every peer %lld ms later, on the "
              "standby\n",
              after.what.c_str(), static_cast<long long>(after.done_ms - killed));
}

}  // namespace
}  // namespace shoal::mp
