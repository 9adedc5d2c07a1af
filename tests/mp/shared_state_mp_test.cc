// Multi-process shared-state sync tests: a real shoal-coord and real shoal_sync_peer processes on
// 127.0.0.1 (see sync_peer.cc for the peers' deterministic content and their output lines). Every
// wait has a deadline; every process is killed and reaped by its ChildProcess destructor, also when
// an assertion fails.
//
// What is checked comes from the peers' SYNC lines: rx/tx (bytes received / sent), tensors (how
// many tensors this peer received), senders (who sent it how much), state (a hash of every
// non-divergent tensor), div (a hash of the divergent tensor), check (the bytes equal the
// deterministic content of the revision).
//
// Sizes are the smallest that exercise each case (the suite also runs under ASan and TSan on two
// cores), except the SIGKILL test, whose transfer must last long enough to be interrupted, and the
// large-tensor test, which is about a 512 MiB tensor.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "mp/layout.h"
#include "mp/swarm.h"
#include "shoal/common/dtype.h"

namespace shoal::mp {
namespace {

constexpr TimeMs kExitMs = 120000;  // sanitizer builds are slow; a hang still ends here

// Byte size of each tensor of a sync_peer --layout ("dtype:count,...").
std::vector<std::uint64_t> LayoutBytes(const std::string& spec) {
  std::vector<LayoutTensor> layout;
  EXPECT_TRUE(ParseLayout(spec, &layout)) << "bad layout " << spec;
  std::vector<std::uint64_t> out;
  for (const LayoutTensor& t : layout) out.push_back(t.bytes());
  return out;
}

std::uint64_t Sum(const std::vector<std::uint64_t>& v, int skip = -1) {
  std::uint64_t s = 0;
  for (std::size_t i = 0; i < v.size(); i++) s += static_cast<int>(i) == skip ? 0 : v[i];
  return s;
}

int NonEmpty(const std::vector<std::uint64_t>& v) {
  int n = 0;
  for (std::uint64_t b : v) n += b != 0;
  return n;
}

// Which tensor sync_peer's update r changes (a mirror of its Mix/ApplyUpdate choice).
std::uint64_t Mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
std::size_t TensorChangedBy(std::uint64_t r, const std::vector<std::uint64_t>& bytes, int skip = -1) {
  std::vector<std::size_t> nonempty;
  for (std::size_t t = 0; t < bytes.size(); t++) {
    if (bytes[t] != 0 && static_cast<int>(t) != skip) nonempty.push_back(t);
  }
  return nonempty[Mix(r) % nonempty.size()];
}

std::vector<Line> SyncLines(const Swarm& swarm, int i) {
  std::vector<Line> out;
  for (const Line& l : swarm.Lines(i)) {
    if (l.word == "SYNC") out.push_back(l);
  }
  return out;
}

// The successful SYNC of `step` on peer i (word empty if none).
Line SuccessAt(const Swarm& swarm, int i, int step) {
  for (const Line& l : SyncLines(swarm, i)) {
    if (l.get("step") == std::to_string(step) && l.get("status") == "0") return l;
  }
  return Line{};
}

// senders=<hex>:<bytes>,... as a map.
std::map<std::string, std::uint64_t> Senders(const Line& l) {
  std::map<std::string, std::uint64_t> out;
  std::string s = l.get("senders");
  if (s == "-") return out;
  for (const std::string& item : SplitList(s)) {
    std::size_t colon = item.find(':');
    out[item.substr(0, colon)] += std::stoull(item.substr(colon + 1));
  }
  return out;
}

// The rank peer i had in the epoch of its first sync (the last MEMBER line before its first
// SYNCSTART), or -1.
int RankAtFirstSync(const Swarm& swarm, int i) {
  int rank = -1;
  for (const Line& l : swarm.Lines(i)) {
    if (l.word == "SYNCSTART") return rank;
    if (l.word == "MEMBER") rank = static_cast<int>(l.num("rank"));
  }
  return -1;
}

// Waits (one deadline for all) until every peer but `skip` has exited with status 0.
void ExpectAllExit0(Swarm& swarm, const std::set<int>& skip = {}) {
  Deadline deadline = Deadline::After(kExitMs);
  for (int i = 0; i < swarm.peers(); i++) {
    if (skip.count(i)) continue;
    int st = swarm.WaitExit(i, std::max<TimeMs>(deadline.remaining_ms(), 1));
    ASSERT_TRUE(Exited0(st)) << "peer " << i << " " << DescribeWaitStatus(st) << "\n"
                             << swarm.Diagnostics();
  }
}

// Every successful sync passed its content check, and every peer that reports a revision reports
// the same state hash for it. Returns the hashes by revision.
std::map<std::string, std::set<std::string>> ExpectConverged(const Swarm& swarm,
                                                             const std::set<int>& skip = {}) {
  std::map<std::string, std::set<std::string>> by_rev;
  for (int i = 0; i < swarm.peers(); i++) {
    if (skip.count(i)) continue;
    for (const Line& l : SyncLines(swarm, i)) {
      if (l.get("status") != "0") continue;
      EXPECT_EQ(l.get("check"), "ok") << "peer " << i << ": " << l.raw;
      by_rev[l.get("rev")].insert(l.get("state"));
    }
  }
  EXPECT_FALSE(by_rev.empty());
  for (const auto& [rev, hashes] : by_rev) {
    EXPECT_EQ(hashes.size(), 1u) << "peers disagree on the state at revision " << rev;
  }
  return by_rev;
}

// ---------------------------------------------------------------------------------------------

TEST(SharedStateSync, IdenticalStateMovesNothing) {
  const std::string layout = "f32:1000,u8:333,i64:100";
  const int n = 4, steps = 3;
  Swarm swarm(SHOAL_SYNC_PEER_BIN);
  for (int i = 0; i < n; i++) {
    swarm.StartPeer({"--expect", "4", "--steps", std::to_string(steps), "--layout", layout});
  }
  ExpectAllExit0(swarm);
  if (HasFatalFailure()) return;
  std::vector<std::set<std::string>> hashes(steps);
  for (int i = 0; i < n; i++) {
    std::vector<Line> syncs = SyncLines(swarm, i);
    ASSERT_EQ(syncs.size(), static_cast<std::size_t>(steps)) << "peer " << i << "\n"
                                                             << swarm.Diagnostics();
    for (int step = 0; step < steps; step++) {
      const Line& l = syncs[step];
      SCOPED_TRACE("peer " + std::to_string(i) + ": " + l.raw);
      EXPECT_EQ(l.get("step"), std::to_string(step));
      EXPECT_EQ(l.get("status"), "0");
      EXPECT_EQ(l.get("rev"), std::to_string(step));
      EXPECT_EQ(l.get("rx"), "0");
      EXPECT_EQ(l.get("tx"), "0");
      EXPECT_EQ(l.get("tensors"), "0");
      EXPECT_EQ(l.get("senders"), "-");
      EXPECT_EQ(l.get("check"), "ok");
      hashes[step].insert(l.get("state"));
    }
  }
  for (int step = 0; step < steps; step++) {
    EXPECT_EQ(hashes[step].size(), 1u) << "peers disagree at step " << step;
  }
  // Each step's update changed the state (so equal hashes are not trivially equal).
  EXPECT_NE(*hashes[0].begin(), *hashes[1].begin());
  EXPECT_NE(*hashes[1].begin(), *hashes[2].begin());
}

TEST(SharedStateSync, OneFlippedBitIsRepairedFromAHolder) {
  const std::string layout = "f32:1000,u8:4096,f64:300";
  const std::vector<std::uint64_t> bytes = LayoutBytes(layout);
  const int n = 4, flipped = 2;
  Swarm swarm(SHOAL_SYNC_PEER_BIN);
  for (int i = 0; i < n; i++) {
    std::vector<std::string> a = {"--expect", "4", "--steps", "2", "--layout", layout};
    if (i == flipped) a.insert(a.end(), {"--flip", "1:77"});
    swarm.StartPeer(a);
  }
  ExpectAllExit0(swarm);
  if (HasFatalFailure()) return;
  std::set<std::string> others;
  for (int i = 0; i < n; i++) {
    if (i != flipped) others.insert(swarm.IdOf(i));
  }
  std::uint64_t others_tx = 0;
  for (int i = 0; i < n; i++) {
    Line l = SuccessAt(swarm, i, 0);
    ASSERT_EQ(l.word, "SYNC") << "peer " << i << " has no successful step 0\n" << swarm.Diagnostics();
    SCOPED_TRACE("peer " + std::to_string(i) + ": " + l.raw);
    EXPECT_EQ(SyncLines(swarm, i).size(), 2u) << "a sync failed";
    if (i == flipped) {
      EXPECT_EQ(static_cast<std::uint64_t>(l.num("rx")), bytes[1]);
      EXPECT_EQ(l.get("tensors"), "1");
      EXPECT_EQ(l.get("tx"), "0");
      std::map<std::string, std::uint64_t> from = Senders(l);
      ASSERT_EQ(from.size(), 1u) << "a tensor under 16 MiB comes from one holder";
      EXPECT_EQ(others.count(from.begin()->first), 1u) << "the sender is not a holder";
      EXPECT_EQ(from.begin()->second, bytes[1]);
    } else {
      EXPECT_EQ(l.get("rx"), "0");
      EXPECT_EQ(l.get("tensors"), "0");
      others_tx += static_cast<std::uint64_t>(l.num("tx"));
    }
    Line next = SuccessAt(swarm, i, 1);
    EXPECT_EQ(next.get("rx"), "0") << next.raw;
    EXPECT_EQ(next.get("tx"), "0") << next.raw;
  }
  EXPECT_EQ(others_tx, bytes[1]);
  ExpectConverged(swarm);
}

TEST(SharedStateSync, ZerosJoinerReceivesEveryTensorFromSeveralHolders) {
  // Several dtypes, a 0-count tensor, sizes from 10 bytes to 16 MiB: the smallest tensor the
  // coordinator splits (>= 2 x 8 MiB), into two pieces from two holders.
  const std::string layout = "f32:1000,u8:0,f64:3,bf16:777,i16:5,u8:16777216";
  const std::vector<std::uint64_t> bytes = LayoutBytes(layout);
  const int joiner = 3;
  Swarm swarm(SHOAL_SYNC_PEER_BIN);
  for (int i = 0; i < 3; i++) {
    swarm.StartPeer({"--expect", "4", "--steps", "2", "--layout", layout, "--revision", "5"});
  }
  swarm.StartPeer({"--expect", "4", "--steps", "2", "--layout", layout, "--zeros"});
  ExpectAllExit0(swarm);
  if (HasFatalFailure()) return;
  std::set<std::string> holders;
  for (int i = 0; i < 3; i++) holders.insert(swarm.IdOf(i));

  Line j = SuccessAt(swarm, joiner, 0);
  ASSERT_EQ(j.word, "SYNC") << swarm.Diagnostics();
  EXPECT_EQ(static_cast<std::uint64_t>(j.num("rx")), Sum(bytes)) << j.raw;
  EXPECT_EQ(j.num("tensors"), NonEmpty(bytes)) << j.raw;
  EXPECT_EQ(j.get("rev"), "5") << j.raw;
  EXPECT_EQ(j.get("check"), "ok") << j.raw;
  EXPECT_EQ(j.get("tx"), "0") << j.raw;
  std::map<std::string, std::uint64_t> from = Senders(j);
  EXPECT_GE(from.size(), 2u) << "the 16 MiB tensor was not split across holders: " << j.raw;
  std::uint64_t from_sum = 0;
  for (const auto& [id, b] : from) {
    EXPECT_EQ(holders.count(id), 1u) << id << " is not a holder";
    from_sum += b;
  }
  EXPECT_EQ(from_sum, Sum(bytes));
  std::uint64_t holders_tx = 0;
  for (int i = 0; i < 3; i++) {
    Line l = SuccessAt(swarm, i, 0);
    EXPECT_EQ(l.get("rx"), "0") << "holder " << i << ": " << l.raw;
    holders_tx += static_cast<std::uint64_t>(l.num("tx"));
    // The holder sent what the joiner says it got from it.
    EXPECT_EQ(static_cast<std::uint64_t>(l.num("tx")), from[swarm.IdOf(i)]) << l.raw;
  }
  EXPECT_EQ(holders_tx, Sum(bytes));
  for (int i = 0; i < 4; i++) {
    EXPECT_EQ(SyncLines(swarm, i).size(), 2u) << "peer " << i << ": a sync failed";
    for (int step = 1; step < 2; step++) {
      Line l = SuccessAt(swarm, i, step);
      EXPECT_EQ(l.get("rx"), "0") << "peer " << i << ": " << l.raw;
      EXPECT_EQ(l.get("tx"), "0") << "peer " << i << ": " << l.raw;
      EXPECT_EQ(l.get("rev"), std::to_string(5 + step)) << "peer " << i << ": " << l.raw;
    }
  }
  ExpectConverged(swarm);
}

TEST(SharedStateSync, PeerBehindByOneReceivesOnlyTheChangedTensor) {
  const std::string layout = "f32:1000,u8:3000,f64:200,i32:50";  // distinct sizes
  const std::vector<std::uint64_t> bytes = LayoutBytes(layout);
  const int behind = 3;
  Swarm swarm(SHOAL_SYNC_PEER_BIN);
  for (int i = 0; i < 3; i++) {
    swarm.StartPeer({"--expect", "4", "--steps", "2", "--layout", layout, "--revision", "6"});
  }
  swarm.StartPeer({"--expect", "4", "--steps", "2", "--layout", layout, "--revision", "5"});
  ExpectAllExit0(swarm);
  if (HasFatalFailure()) return;
  const std::size_t changed = TensorChangedBy(6, bytes);
  Line b = SuccessAt(swarm, behind, 0);
  ASSERT_EQ(b.word, "SYNC") << swarm.Diagnostics();
  EXPECT_EQ(b.get("tensors"), "1") << b.raw;
  EXPECT_EQ(static_cast<std::uint64_t>(b.num("rx")), bytes[changed])
      << "update 6 changed tensor " << changed << ": " << b.raw;
  EXPECT_EQ(b.get("rev"), "6") << b.raw;
  EXPECT_EQ(b.get("check"), "ok") << b.raw;
  std::uint64_t tx = 0;
  for (int i = 0; i < 4; i++) {
    EXPECT_EQ(SyncLines(swarm, i).size(), 2u) << "peer " << i << ": a sync failed";
    Line l = SuccessAt(swarm, i, 0);
    if (i != behind) {
      EXPECT_EQ(l.get("rx"), "0") << l.raw;
    }
    tx += static_cast<std::uint64_t>(l.num("tx"));
    Line next = SuccessAt(swarm, i, 1);
    EXPECT_EQ(next.get("rev"), "7") << next.raw;
    EXPECT_EQ(next.get("rx"), "0") << next.raw;
  }
  EXPECT_EQ(tx, bytes[changed]);
  ExpectConverged(swarm);
}

TEST(SharedStateSync, PeerAheadIsRefusedThenReadmittedAndCatchesUp) {
  const std::string layout = "f32:1000,u8:500";
  const int ahead = 2;
  const int steps = 4;  // the others: revisions 0..3
  Swarm swarm(SHOAL_SYNC_PEER_BIN);
  for (int i = 0; i < 2; i++) {
    swarm.StartPeer({"--expect", "3", "--steps", std::to_string(steps), "--layout", layout,
                     "--retry"});
  }
  // The refused peer leaves the epoch when the others' step-1 sync commits and is re-admitted at
  // their next update_topology: its retry of step 1 is the others' step 2. So it runs one step
  // fewer and ends at the same revision.
  swarm.StartPeer({"--expect", "3", "--steps", std::to_string(steps - 1), "--layout", layout,
                   "--retry", "--ahead", "1"});
  ExpectAllExit0(swarm);
  if (HasFatalFailure()) return;

  std::vector<Line> a = SyncLines(swarm, ahead);
  ASSERT_GE(a.size(), 2u) << swarm.Diagnostics();
  EXPECT_EQ(a[0].get("status"), "0") << a[0].raw;
  std::size_t refused = 0;
  while (refused < a.size() && a[refused].get("step") != "1") refused++;
  ASSERT_LT(refused, a.size()) << swarm.Diagnostics();
  EXPECT_EQ(a[refused].num("status"), SHOAL_ERR_REVISION) << a[refused].raw;
  EXPECT_NE(a[refused].get("msg").find("ahead"), std::string::npos) << a[refused].raw;
  // It catches up: its next successful sync is the others' step 2 (revision 2; it still holds
  // revision 1) and receives what changed; its last sync is at the others' last revision.
  bool caught_up = false;
  for (std::size_t k = refused + 1; k < a.size(); k++) {
    const Line& l = a[k];
    if (l.get("status") != "0") continue;
    EXPECT_GT(l.num("rx"), 0) << "the first sync after the refusal received nothing: " << l.raw;
    EXPECT_EQ(l.get("rev"), "2") << "not re-admitted at the barrier after the refusal: " << l.raw;
    caught_up = true;
    break;
  }
  EXPECT_TRUE(caught_up) << swarm.Diagnostics();
  EXPECT_EQ(a.back().get("status"), "0") << a.back().raw;
  EXPECT_EQ(a.back().get("rev"), std::to_string(steps - 1)) << a.back().raw;

  for (int i = 0; i < 2; i++) {
    std::vector<Line> s = SyncLines(swarm, i);
    EXPECT_EQ(s.size(), static_cast<std::size_t>(steps)) << "peer " << i << ": a sync failed\n"
                                                         << swarm.Diagnostics();
    Line l = SuccessAt(swarm, i, 1);
    EXPECT_EQ(l.word, "SYNC") << "peer " << i << " did not succeed at step 1";
    EXPECT_EQ(l.get("rev"), "1") << l.raw;
    EXPECT_EQ(s.back().get("rev"), std::to_string(steps - 1)) << s.back().raw;
  }
  ExpectConverged(swarm);
  // All three hold the same state at the last revision.
  std::set<std::string> last;
  for (int i = 0; i < 3; i++) {
    std::vector<Line> s = SyncLines(swarm, i);
    if (!s.empty()) last.insert(s.back().get("rev") + "/" + s.back().get("state"));
  }
  EXPECT_EQ(last.size(), 1u);
}

// A sender dies mid-transfer: every member of the sync fails with PEER_LOST naming it, and the
// retry (after update_topology) completes from the surviving holders.
TEST(SharedStateSyncFaults, SigkillSenderMidTransferThenRetryCompletesFromSurvivors) {
  const std::string layout = "f32:67108864,u8:1000";  // 256 MiB, split across the three holders
  const std::vector<std::uint64_t> bytes = LayoutBytes(layout);
  const int victim = 1, joiner = 3;
  Swarm swarm(SHOAL_SYNC_PEER_BIN);
  for (int i = 0; i < 3; i++) {
    swarm.StartPeer({"--expect", "4", "--steps", "1", "--layout", layout, "--revision", "5",
                     "--retry", "--timeout-ms", "90000"});
  }
  swarm.StartPeer({"--expect", "4", "--steps", "1", "--layout", layout, "--zeros", "--retry",
                   "--timeout-ms", "90000"});
  // The plan has reached the joiner: the transfer starts now. Read the output every millisecond:
  // on loopback the whole transfer takes only about a second.
  const std::regex planned("shared-state sync [0-9]+ planned: revision 5, receiving [1-9][0-9]* ");
  ASSERT_TRUE(swarm.WaitForOutput(joiner, [&](const std::string& out) {
    return std::regex_search(out, planned);
  }, kExitMs, /*pause_ms=*/1)) << swarm.Diagnostics();
  // Stop the joiner: it no longer reads, so once its socket buffers are full (a few MB of 256 MiB)
  // the holders block mid-send and the transfer cannot finish without it.
  ASSERT_EQ(::kill(swarm.peer(joiner).pid(), SIGSTOP), 0);
  for (const Line& l : swarm.Lines(joiner)) {
    ASSERT_NE(l.word, "SYNC") << "window missed: the joiner's first sync ended before SIGSTOP "
                                 "(the transfer was faster than the test reacted)\n"
                              << swarm.Diagnostics();
  }
  const std::string victim_id = swarm.IdOf(victim);
  swarm.peer(victim).KillAndReap();
  // A bare pause, on purpose: the fault must land while the joiner is stopped, so that it finds
  // the victim's streams closed mid-transfer when it runs again, and the coordinator has time to
  // see the victim's control connection drop (there is no event the test could wait for inside
  // the stopped joiner). 300 ms is far below the 3 s heartbeat timeout, so the stop itself does
  // not get the joiner dropped.
  PollOne(-1, 0, Deadline::After(300));
  ASSERT_EQ(::kill(swarm.peer(joiner).pid(), SIGCONT), 0);

  ExpectAllExit0(swarm, {victim});
  if (HasFatalFailure()) return;

  const std::vector<int> survivors = {0, 2, joiner};
  std::set<std::string> survivor_holders = {swarm.IdOf(0), swarm.IdOf(2)};
  std::set<std::string> failures;
  std::string missed;
  for (int i : survivors) {
    std::vector<Line> s = SyncLines(swarm, i);
    ASSERT_FALSE(s.empty()) << swarm.Diagnostics();
    if (s.front().get("status") == "0") {
      missed += "\n  peer " + std::to_string(i) + ": " + s.front().raw;
      continue;
    }
    failures.insert(s.front().get("status") + "/" + s.front().get("lost"));
    std::printf("peer %d: failed sync after %s ms: %s\n", i, s.front().get("ms").c_str(),
                s.front().get("msg").c_str());
    EXPECT_EQ(s.back().get("status"), "0") << "peer " << i << ": " << s.back().raw;
    EXPECT_EQ(s.back().get("check"), "ok") << "peer " << i << ": " << s.back().raw;
  }
  ASSERT_TRUE(missed.empty())
      << "window missed: the first sync succeeded on these survivors although a sender was "
         "killed mid-transfer (the transfer ended before the test stopped the joiner):"
      << missed << "\n" << swarm.Diagnostics();
  EXPECT_EQ(failures, (std::set<std::string>{std::to_string(SHOAL_ERR_PEER_LOST) + "/" + victim_id}))
      << "survivors must fail with the same status naming the killed peer\n" << swarm.Diagnostics();

  // The retry moves what still differs: the 256 MiB tensor, which the kill interrupted, and the
  // small one unless it had arrived whole before (received bytes stay in place).
  Line j = SuccessAt(swarm, joiner, 0);
  EXPECT_EQ(j.get("rev"), "5") << j.raw;
  EXPECT_TRUE(j.get("rx") == std::to_string(bytes[0]) || j.get("rx") == std::to_string(Sum(bytes)))
      << j.raw;
  std::map<std::string, std::uint64_t> from = Senders(j);
  EXPECT_FALSE(from.empty()) << j.raw;
  for (const auto& [id, b] : from) {
    EXPECT_EQ(survivor_holders.count(id), 1u) << id << " is not a surviving holder: " << j.raw;
  }
  std::set<std::string> hashes;
  for (int i : survivors) hashes.insert(SyncLines(swarm, i).back().get("state"));
  EXPECT_EQ(hashes.size(), 1u) << "survivors disagree on the state after the retry";
  ExpectConverged(swarm, {victim});
}

TEST(SharedStateSync, MixedDtypesFromZeroBytesTo512MiB) {
  const std::string layout = "u8:536870912,f32:1000,u8:0,f64:3,bf16:777,i64:17,i16:5,u32:0";
  const std::vector<std::uint64_t> bytes = LayoutBytes(layout);
  const int joiner = 1;
  Swarm swarm(SHOAL_SYNC_PEER_BIN);
  swarm.StartPeer({"--expect", "2", "--steps", "1", "--layout", layout, "--revision", "3",
                   "--timeout-ms", "90000"});
  swarm.StartPeer({"--expect", "2", "--steps", "1", "--layout", layout, "--zeros",
                   "--timeout-ms", "90000"});
  ExpectAllExit0(swarm);
  if (HasFatalFailure()) return;
  Line j = SuccessAt(swarm, joiner, 0);
  ASSERT_EQ(j.word, "SYNC") << swarm.Diagnostics();
  EXPECT_EQ(static_cast<std::uint64_t>(j.num("rx")), Sum(bytes)) << j.raw;
  EXPECT_EQ(j.num("tensors"), NonEmpty(bytes)) << j.raw;
  EXPECT_EQ(j.get("rev"), "3") << j.raw;
  EXPECT_EQ(j.get("check"), "ok") << j.raw;
  std::map<std::string, std::uint64_t> from = Senders(j);
  EXPECT_EQ(from, (std::map<std::string, std::uint64_t>{{swarm.IdOf(0), Sum(bytes)}})) << j.raw;
  Line h = SuccessAt(swarm, 0, 0);
  EXPECT_EQ(h.get("rx"), "0") << h.raw;
  EXPECT_EQ(static_cast<std::uint64_t>(h.num("tx")), Sum(bytes)) << h.raw;
  std::printf("512 MiB sync: joiner %s ms (transfer %s ms, hashing %s ms)\n", j.get("ms").c_str(),
              j.get("xfer_ms").c_str(), j.get("hash_ms").c_str());
  ExpectConverged(swarm);
}

TEST(SharedStateSync, DivergentTensorGoesOnlyToTheJoiner) {
  const std::string layout = "f32:2000,u8:3000,f64:100";  // t0 allows divergence
  const std::vector<std::uint64_t> bytes = LayoutBytes(layout);
  const int flipped = 1, joiner = 3;
  Swarm swarm(SHOAL_SYNC_PEER_BIN);
  for (int i = 0; i < 3; i++) {
    std::vector<std::string> a = {"--expect", "4", "--steps", "2", "--layout", layout,
                                  "--revision", "2", "--divergent", "0"};
    // One up-to-date peer also differs in t1: it receives t1, but not t0.
    if (i == flipped) a.insert(a.end(), {"--flip", "1:5"});
    swarm.StartPeer(a);
  }
  swarm.StartPeer({"--expect", "4", "--steps", "2", "--layout", layout, "--zeros", "--divergent",
                   "0"});
  ExpectAllExit0(swarm);
  if (HasFatalFailure()) return;

  std::map<int, std::string> div_by_rank;  // the holders' own t0 hashes
  std::set<std::string> holder_divs;
  for (int i = 0; i < 3; i++) {
    Line l = SuccessAt(swarm, i, 0);
    ASSERT_EQ(l.word, "SYNC") << swarm.Diagnostics();
    SCOPED_TRACE("holder " + std::to_string(i) + ": " + l.raw);
    EXPECT_EQ(l.get("rx"), i == flipped ? std::to_string(bytes[1]) : "0");
    EXPECT_EQ(l.get("tensors"), i == flipped ? "1" : "0");
    EXPECT_EQ(l.get("check"), "ok");
    holder_divs.insert(l.get("div"));
    div_by_rank[RankAtFirstSync(swarm, i)] = l.get("div");
    // Its own t0 stays: the next step's sync does not touch it either.
    EXPECT_EQ(SuccessAt(swarm, i, 1).get("div"), l.get("div"));
  }
  EXPECT_EQ(holder_divs.size(), 3u) << "each holder has its own bytes in t0";

  Line j = SuccessAt(swarm, joiner, 0);
  ASSERT_EQ(j.word, "SYNC") << swarm.Diagnostics();
  EXPECT_EQ(static_cast<std::uint64_t>(j.num("rx")), Sum(bytes)) << "t0 included: " << j.raw;
  EXPECT_EQ(j.get("tensors"), "3") << j.raw;
  EXPECT_EQ(j.get("rev"), "2") << j.raw;
  EXPECT_EQ(j.get("check"), "ok") << j.raw;
  // The joiner got t0 from the elected holder: a tie between three hashes goes to the earliest
  // up-to-date member in ring order.
  EXPECT_EQ(holder_divs.count(j.get("div")), 1u) << j.raw;
  ASSERT_FALSE(div_by_rank.empty());
  EXPECT_EQ(j.get("div"), div_by_rank.begin()->second)
      << "t0 is not the lowest-ranked holder's (ranks: " << div_by_rank.size() << ")";

  for (int i = 0; i < 4; i++) {
    EXPECT_EQ(SyncLines(swarm, i).size(), 2u) << "peer " << i << ": a sync failed";
    Line l = SuccessAt(swarm, i, 1);
    EXPECT_EQ(l.get("rx"), "0") << "peer " << i << ": " << l.raw;
    EXPECT_EQ(l.get("rev"), "3") << l.raw;
  }
  ExpectConverged(swarm);
}

}  // namespace
}  // namespace shoal::mp
