// The chaos checker on hand-made records: every rule of checker.h flags what it should and only
// that, and the workload's reference is exact.
#include "tools/chaos/checker.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "shoal/types.h"
#include "tools/chaos/record.h"
#include "tools/chaos/workload.h"

namespace shoal::chaos {
namespace {

constexpr std::uint64_t kLarge = 64;
constexpr std::uint64_t kA = 0xa1, kB = 0xb2, kC = 0xc3;

class CheckerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    log_ = std::tmpfile();
    checker_ = std::make_unique<Checker>(
        kLarge, log_, [this](int proc, TimeMs, TimeMs) { return proc == faulted_proc_; }, 5000);
    Line(0, "HELLO peer=" + HexId(kA) + " t=1");
    Line(1, "HELLO peer=" + HexId(kB) + " t=1");
    Line(2, "HELLO peer=" + HexId(kC) + " t=1");
  }
  void TearDown() override { std::fclose(log_); }

  void Line(int proc, const std::string& text) {
    RecordLine line;
    ASSERT_TRUE(ParseRecordLine(text, &line));
    checker_->OnLine(proc, line);
  }
  static std::string Members() { return HexId(kA) + "," + HexId(kB) + "," + HexId(kC); }
  // The all-reduce of tag `tag`, seq 0 in epoch 7 among A, B, C, as a member reports it.
  void Ar(int proc, std::uint64_t tag, int status, std::uint64_t lost, std::uint64_t hash) {
    Line(proc, "OP kind=ar tag=" + std::to_string(tag) + " seq=0 epoch=7 members=" + Members() +
                   " status=" + std::to_string(status) + " lost=" + HexId(lost) +
                   " rev=0 hash=" + HexId(hash) + " state=0 rx=0 t0=100 t1=200");
  }
  static std::uint64_t RefHash(std::uint64_t tag) {
    for (const OpSpec& spec : StepOps(kLarge)) {
      if (spec.tag != tag) continue;
      const auto bytes = Reference(spec, 7, 0, {kA, kB, kC});
      return HashBytes(bytes.data(), bytes.size());
    }
    return 0;
  }
  void Sync(int proc, std::uint64_t epoch, std::uint64_t rev, std::uint64_t state) {
    Line(proc, "OP kind=sync tag=sync seq=0 epoch=" + std::to_string(epoch) +
                   " members=" + Members() + " status=0 lost=0 rev=" + std::to_string(rev) +
                   " hash=0 state=" + HexId(state) + " rx=0 t0=100 t1=200");
  }
  void Step(int proc, std::uint64_t epoch, std::uint64_t rev, std::uint64_t state) {
    Line(proc, "STEP epoch=" + std::to_string(epoch) + " rev=" + std::to_string(rev) +
                   " state=" + HexId(state) + " t0=100 t1=300");
  }
  const CheckCounts& counts() const { return checker_->counts(); }

  std::FILE* log_ = nullptr;
  int faulted_proc_ = -1;
  std::unique_ptr<Checker> checker_;
};

TEST(WorkloadTest, ReferenceIsTheExactSumOfTheInputs) {
  for (const OpSpec& spec : StepOps(1000)) {
    const std::vector<std::uint64_t> members = {kA, kB, kC};
    const std::vector<std::uint8_t> ref = Reference(spec, 3, 5, members);
    ASSERT_EQ(ref.size(), spec.count * ElementBytes(spec.dtype));
    std::vector<std::vector<std::uint8_t>> inputs;
    for (std::uint64_t p : members) {
      inputs.emplace_back(ref.size());
      FillInput(spec, 3, 5, p, inputs.back().data());
    }
    for (std::uint64_t i = 0; i < spec.count; i++) {
      if (spec.dtype == SHOAL_F32) {
        float sum = 0;
        for (const auto& in : inputs) sum += reinterpret_cast<const float*>(in.data())[i];
        if (spec.op == SHOAL_AVG) sum /= 3.0f;
        ASSERT_EQ(reinterpret_cast<const float*>(ref.data())[i], sum) << spec.tag << " " << i;
      } else if (spec.dtype == SHOAL_I32) {
        std::int64_t sum = 0;
        for (const auto& in : inputs) sum += reinterpret_cast<const std::int32_t*>(in.data())[i];
        ASSERT_EQ(reinterpret_cast<const std::int32_t*>(ref.data())[i], sum);
      } else {
        std::int64_t sum = 0;
        for (const auto& in : inputs) sum += reinterpret_cast<const std::int64_t*>(in.data())[i];
        ASSERT_EQ(reinterpret_cast<const std::int64_t*>(ref.data())[i], sum);
      }
    }
  }
}

TEST(WorkloadTest, InputsDependOnEveryPartOfTheOpsName) {
  const std::uint64_t base = InputStream(1, 2, 3, kA);
  EXPECT_NE(base, InputStream(2, 2, 3, kA));
  EXPECT_NE(base, InputStream(1, 3, 3, kA));
  EXPECT_NE(base, InputStream(1, 2, 4, kA));
  EXPECT_NE(base, InputStream(1, 2, 3, kB));
  for (std::uint64_t i = 0; i < 5000; i++) {
    const std::int64_t v = InputValue(base, i);
    ASSERT_LE(v, kInputMagnitude);
    ASSERT_GE(v, -kInputMagnitude);
  }
}

TEST_F(CheckerTest, AgreedCorrectResultsPass) {
  for (int p = 0; p < 3; p++) Ar(p, 4, SHOAL_OK, 0, RefHash(4));
  EXPECT_EQ(counts().divergences(), 0);
  EXPECT_EQ(counts().wrong_results, 0);
  checker_->Prune(0, -1);
  EXPECT_EQ(counts().ops_ok, 1);
}

TEST_F(CheckerTest, WrongResultIsFlaggedOnce) {
  for (int p = 0; p < 3; p++) Ar(p, 3, SHOAL_OK, 0, RefHash(3) ^ 1);
  EXPECT_EQ(counts().wrong_results, 1);
  EXPECT_EQ(counts().divergences(), 0);  // the members agree, on the wrong bits
}

TEST_F(CheckerTest, DifferentBitsAreADivergence) {
  Ar(0, 2, SHOAL_OK, 0, RefHash(2));
  Ar(1, 2, SHOAL_OK, 0, RefHash(2) ^ 1);
  EXPECT_EQ(counts().divergent_results, 1);
  EXPECT_EQ(counts().wrong_results, 1);  // the second report is wrong too, not only different
}

TEST_F(CheckerTest, SuccessAndFailureOfOneOpIsADivergence) {
  Ar(0, 1, SHOAL_OK, 0, RefHash(1));
  Ar(1, 1, SHOAL_ERR_PEER_LOST, kC, 0);
  EXPECT_EQ(counts().outcome_splits, 1);
}

TEST_F(CheckerTest, TheLostPeerMaySeeItsOwnEnd) {
  Ar(0, 1, SHOAL_ERR_PEER_LOST, kC, 0);
  Ar(1, 1, SHOAL_ERR_PEER_LOST, kC, 0);
  Ar(2, 1, SHOAL_ERR_TIMEOUT, kA, 0);  // C is the lost peer
  EXPECT_EQ(counts().divergences(), 0);
  checker_->Prune(0, -1);
  EXPECT_EQ(counts().ops_failed, 1);
}

TEST_F(CheckerTest, SurvivorsWithDifferentVerdictsAreADivergence) {
  Ar(0, 1, SHOAL_ERR_PEER_LOST, kC, 0);
  Ar(1, 1, SHOAL_ERR_TIMEOUT, kC, 0);
  EXPECT_EQ(counts().reason_splits, 1);
}

TEST_F(CheckerTest, ADroppedMemberIsAnExceptionOnlyNearAFault) {
  Ar(0, 1, SHOAL_OK, 0, RefHash(1));
  Ar(1, 1, SHOAL_ERR_NOT_MEMBER, 0, 0);  // no fault touched B
  EXPECT_EQ(counts().outcome_splits, 1);
  faulted_proc_ = 2;
  Ar(0, 2, SHOAL_OK, 0, RefHash(2));
  Ar(2, 2, SHOAL_ERR_NOT_MEMBER, 0, 0);
  EXPECT_EQ(counts().dropped_member_splits, 1);
  Ar(2, 3, SHOAL_ERR_COORDINATOR_LOST, 0, 0);
  Ar(0, 3, SHOAL_OK, 0, RefHash(3));
  EXPECT_EQ(counts().coordinator_lost_splits, 1);
  EXPECT_EQ(counts().outcome_splits, 1);
}

TEST_F(CheckerTest, OneStatePerRevision) {
  Sync(0, 7, 10, 0x1111);
  Sync(1, 7, 10, 0x1111);
  Step(0, 7, 11, 0x2222);
  Step(1, 7, 11, 0x2222);
  EXPECT_EQ(counts().divergences(), 0);
  EXPECT_EQ(counts().steps, 1);
  Step(2, 9, 11, 0x3333);  // another state at revision 11, no reset in between
  EXPECT_EQ(counts().divergent_states, 1);
}

TEST_F(CheckerTest, SyncStatesMustAgree) {
  Sync(0, 7, 10, 0x1111);
  Sync(1, 7, 10, 0x1112);
  EXPECT_EQ(counts().divergent_states, 1);
}

TEST_F(CheckerTest, ALineageResetIsCountedApart) {
  Sync(0, 7, 10, 0x1111);
  Step(0, 7, 11, 0x2222);
  Sync(1, 9, 0, 0x0);  // every holder of revision 11 is gone: the group restarts from 0
  Step(1, 9, 1, 0x4444);
  Step(1, 10, 11, 0x5555);  // revision 11 again, with another state: the new lineage's
  EXPECT_EQ(counts().lineage_resets, 1);
  EXPECT_EQ(counts().divergences(), 0);
}

TEST_F(CheckerTest, ASyncNeverTakesAMemberBack) {
  Line(0, "HELLO peer=" + HexId(kA) + " rev=1 t=1");
  Sync(0, 7, 1, 0x1111);
  Step(0, 7, 2, 0x2222);
  EXPECT_EQ(counts().divergences(), 0);
  Sync(0, 8, 2, 0x2222);  // the same revision again: fine
  EXPECT_EQ(counts().divergences(), 0);
  Sync(0, 9, 1, 0x1111);  // back to the founders' state: a step lost
  EXPECT_EQ(counts().divergent_states, 1);
  Line(1, "HELLO peer=" + HexId(kB) + " rev=1 t=1");
  Sync(1, 10, 0, 0x0);  // below its HELLO's revision
  EXPECT_EQ(counts().divergent_states, 2);
}

TEST(RecordTest, ParsesWordsFieldsAndLists) {
  RecordLine line;
  ASSERT_TRUE(ParseRecordLine("OP kind=ar members=00000000000000a1,00000000000000b2 t1=-5", &line));
  EXPECT_EQ(line.word, "OP");
  EXPECT_EQ(line.Get("kind"), "ar");
  EXPECT_EQ(line.HexList("members"), (std::vector<std::uint64_t>{0xa1, 0xb2}));
  EXPECT_EQ(line.I64("t1"), -5);
  EXPECT_EQ(line.U64("absent"), 0u);
  EXPECT_FALSE(ParseRecordLine("   ", &line));
}

TEST(RecordTest, TailReturnsWholeLinesOnly) {
  char path[] = "/tmp/chaos-record-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  RecordWriter writer;
  ASSERT_TRUE(writer.Open(path));
  RecordTail tail(path);
  std::vector<std::string> lines;
  ASSERT_TRUE(writer.Write("UT status=0"));
  std::FILE* f = std::fopen(path, "a");  // half a line, as a reader may see one being written
  std::fputs("STEP ep", f);
  std::fflush(f);
  tail.Poll(&lines);
  EXPECT_EQ(lines, (std::vector<std::string>{"UT status=0"}));
  std::fputs("och=3\n", f);
  std::fclose(f);
  lines.clear();
  tail.Poll(&lines);
  EXPECT_EQ(lines, (std::vector<std::string>{"STEP epoch=3"}));
  ::unlink(path);
}

}  // namespace
}  // namespace shoal::chaos
