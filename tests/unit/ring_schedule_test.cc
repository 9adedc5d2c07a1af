// Tests of RingSchedule (collective/ring_schedule.h) over a matrix of world sizes, element counts
// and segment sizes, and an in-memory simulation of a whole ring all-reduce driven only by the
// schedule: n ranks, K FIFO streams per link, units sent and received in deterministic and in
// seeded random interleavings that respect the schedule's one dependency.
#include "shoal/collective/ring_schedule.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace shoal::collective {
namespace {

struct Config {
  std::uint32_t n = 1;
  std::uint64_t count = 0;
  std::uint64_t segment_elems = 1;
};

std::string Describe(const Config& c) {
  return "n=" + std::to_string(c.n) + " count=" + std::to_string(c.count) +
         " segment_elems=" + std::to_string(c.segment_elems);
}

// n = 1..8 x counts {0, 1, n-1, n, n+1, 7, 1000, 1021, 4099} x segment_elems {1, 3, 64, 2^20}.
std::vector<Config> Matrix() {
  std::vector<Config> out;
  for (std::uint32_t n = 1; n <= 8; n++) {
    std::set<std::uint64_t> counts = {0, 1, n - 1, n, n + 1, 7, 1000, 1021, 4099};
    for (std::uint64_t count : counts) {
      for (std::uint64_t seg :
           {std::uint64_t{1}, std::uint64_t{3}, std::uint64_t{64}, std::uint64_t{1} << 20}) {
        out.push_back({n, count, seg});
      }
    }
  }
  return out;
}

std::vector<RingSchedule> AllRanks(const Config& c) {
  std::vector<RingSchedule> s;
  for (std::uint32_t r = 0; r < c.n; r++) s.emplace_back(c.count, c.n, r, c.segment_elems);
  return s;
}

std::uint64_t LargestChunk(const Config& c) { return (c.count + c.n - 1) / c.n; }

bool SameRange(const ElemRange& a, const ElemRange& b) {
  return a.begin == b.begin && a.end == b.end;
}
std::string Str(const ElemRange& r) {
  return "[" + std::to_string(r.begin) + ", " + std::to_string(r.end) + ")";
}

TEST(RingScheduleTest, ChunksPartitionTheBufferInOrder) {
  for (const Config& c : Matrix()) {
    SCOPED_TRACE(Describe(c));
    for (const RingSchedule& s : AllRanks(c)) {
      std::uint64_t next = 0;
      std::uint64_t smallest = ~std::uint64_t{0};
      std::uint64_t largest = 0;
      for (std::uint32_t i = 0; i < c.n; i++) {
        ElemRange chunk = s.Chunk(i);
        ASSERT_EQ(chunk.begin, next) << "chunk " << i;
        ASSERT_LE(chunk.begin, chunk.end) << "chunk " << i;
        // The first count % n chunks are the larger ones.
        EXPECT_EQ(chunk.size(), c.count / c.n + (i < c.count % c.n ? 1 : 0)) << "chunk " << i;
        smallest = std::min(smallest, chunk.size());
        largest = std::max(largest, chunk.size());
        next = chunk.end;
      }
      EXPECT_EQ(next, c.count);
      EXPECT_LE(largest - smallest, 1u);
      EXPECT_EQ(largest, LargestChunk(c));
    }
  }
}

TEST(RingScheduleTest, StepsSegmentsAndUnits) {
  for (const Config& c : Matrix()) {
    SCOPED_TRACE(Describe(c));
    for (const RingSchedule& s : AllRanks(c)) {
      EXPECT_EQ(s.count(), c.count);
      EXPECT_EQ(s.n(), c.n);
      EXPECT_EQ(s.steps(), c.n > 1 ? 2 * (c.n - 1) : 0);
      const std::uint64_t segments = (LargestChunk(c) + c.segment_elems - 1) / c.segment_elems;
      EXPECT_EQ(s.segments_per_step(), segments);
      EXPECT_EQ(s.units(), s.steps() * segments);
      for (std::uint64_t u = 0; u < s.units(); u++) {
        const std::uint32_t step = static_cast<std::uint32_t>(u / segments);
        ASSERT_EQ(s.StepOf(u), step) << u;
        ASSERT_EQ(s.IsReduceScatter(u), step < c.n - 1) << u;
        ASSERT_EQ(s.IsLastReduceScatter(u), step == c.n - 2) << u;
        ASSERT_EQ(s.SendDependsOnRecv(u), step > 0) << u;
      }
    }
  }
}

TEST(RingScheduleTest, SegmentsOfEachStepPartitionItsChunkInOrder) {
  for (const Config& c : Matrix()) {
    SCOPED_TRACE(Describe(c));
    for (const RingSchedule& s : AllRanks(c)) {
      const std::uint64_t segments = s.segments_per_step();
      if (segments == 0) {  // count 0: no units, so no unit to ask about
        EXPECT_EQ(c.count, 0u);
        EXPECT_EQ(s.units(), 0u);
        continue;
      }
      for (std::uint32_t step = 0; step < s.steps(); step++) {
        for (bool sending : {true, false}) {
          const std::uint64_t first = std::uint64_t{step} * segments;
          const std::uint32_t chunk_index = sending ? s.SendChunk(first) : s.RecvChunk(first);
          const ElemRange chunk = s.Chunk(chunk_index);
          std::uint64_t next = chunk.begin;
          for (std::uint64_t j = 0; j < segments; j++) {
            const std::uint64_t u = first + j;
            ASSERT_EQ(sending ? s.SendChunk(u) : s.RecvChunk(u), chunk_index) << u;
            const ElemRange r = sending ? s.SendRange(u) : s.RecvRange(u);
            ASSERT_EQ(r.begin, next) << "unit " << u << (sending ? " send " : " recv ") << Str(r);
            ASSERT_LE(r.size(), c.segment_elems) << u;
            // Only the last segment of a chunk may be short.
            if (r.end < chunk.end) {
              ASSERT_EQ(r.size(), c.segment_elems) << u;
            }
            next = r.end;
          }
          ASSERT_EQ(next, chunk.end) << "rank " << s.rank() << " step " << step;
        }
      }
    }
  }
}

TEST(RingScheduleTest, EveryRankSendsAndReceivesEveryChunkOfEachPhase) {
  // Reduce-scatter: rank r sends every chunk but its own and receives every chunk but r-1's.
  // All-gather: it sends every chunk but r+1's and receives every chunk but its own.
  for (const Config& c : Matrix()) {
    if (c.n == 1) continue;
    SCOPED_TRACE(Describe(c));
    for (const RingSchedule& s : AllRanks(c)) {
      const std::uint32_t r = s.rank();
      const std::uint64_t segments = s.segments_per_step();
      if (segments == 0) {
        EXPECT_EQ(c.count, 0u);
        EXPECT_EQ(s.units(), 0u);
        continue;
      }
      std::set<std::uint32_t> rs_sent, rs_recv, ag_sent, ag_recv;
      for (std::uint32_t step = 0; step < s.steps(); step++) {
        const std::uint64_t u = std::uint64_t{step} * segments;
        const bool reduce_scatter = step + 1 < c.n;
        (reduce_scatter ? rs_sent : ag_sent).insert(s.SendChunk(u));
        (reduce_scatter ? rs_recv : ag_recv).insert(s.RecvChunk(u));
      }
      auto all_but = [&](std::uint32_t missing) {
        std::set<std::uint32_t> chunks;
        for (std::uint32_t i = 0; i < c.n; i++) {
          if (i != missing % c.n) chunks.insert(i);
        }
        return chunks;
      };
      EXPECT_EQ(rs_sent, all_but(r)) << "rank " << r;
      EXPECT_EQ(rs_recv, all_but(r + c.n - 1)) << "rank " << r;
      EXPECT_EQ(ag_sent, all_but(r + 1)) << "rank " << r;
      EXPECT_EQ(ag_recv, all_but(r)) << "rank " << r;
    }
  }
}

TEST(RingScheduleTest, WhatRankSendsIsWhatItsNextNeighbourReceives) {
  for (const Config& c : Matrix()) {
    SCOPED_TRACE(Describe(c));
    std::vector<RingSchedule> ranks = AllRanks(c);
    for (std::uint32_t r = 0; r < c.n; r++) {
      const RingSchedule& me = ranks[r];
      const RingSchedule& next = ranks[(r + 1) % c.n];
      ASSERT_EQ(me.units(), next.units());
      for (std::uint64_t u = 0; u < me.units(); u++) {
        ASSERT_EQ(me.SendChunk(u), next.RecvChunk(u)) << "rank " << r << " unit " << u;
        ASSERT_TRUE(SameRange(me.SendRange(u), next.RecvRange(u)))
            << "rank " << r << " unit " << u << " sends " << Str(me.SendRange(u)) << ", rank "
            << (r + 1) % c.n << " receives " << Str(next.RecvRange(u));
      }
    }
  }
}

TEST(RingScheduleTest, SendOfALaterStepForwardsWhatWasReceived) {
  // The dependency: send unit u (step > 0) is the range that receive unit u - S brought.
  for (const Config& c : Matrix()) {
    SCOPED_TRACE(Describe(c));
    for (const RingSchedule& s : AllRanks(c)) {
      const std::uint64_t segments = s.segments_per_step();
      for (std::uint64_t u = segments; u < s.units(); u++) {
        ASSERT_EQ(s.SendChunk(u), s.RecvChunk(u - segments)) << u;
        ASSERT_TRUE(SameRange(s.SendRange(u), s.RecvRange(u - segments))) << u;
      }
    }
  }
}

TEST(RingScheduleTest, RankOwnsItsChunkAfterTheLastReduceScatterStep) {
  for (const Config& c : Matrix()) {
    if (c.n == 1 || c.count == 0) continue;
    SCOPED_TRACE(Describe(c));
    for (const RingSchedule& s : AllRanks(c)) {
      const std::uint64_t segments = s.segments_per_step();
      const std::uint64_t last_rs = std::uint64_t{c.n - 2} * segments;
      const std::uint64_t first_ag = std::uint64_t{c.n - 1} * segments;
      for (std::uint64_t j = 0; j < segments; j++) {
        ASSERT_TRUE(s.IsLastReduceScatter(last_rs + j));
        ASSERT_EQ(s.RecvChunk(last_rs + j), s.rank());
        ASSERT_EQ(s.SendChunk(first_ag + j), s.rank());  // the all-gather starts from it
      }
      // No all-gather unit writes into the rank's own chunk.
      for (std::uint64_t u = first_ag; u < s.units(); u++) ASSERT_NE(s.RecvChunk(u), s.rank());
    }
  }
}

TEST(RingScheduleTest, EmptyUnitsAreOnlyTailSegmentsOfSmallerChunks) {
  for (const Config& c : Matrix()) {
    SCOPED_TRACE(Describe(c));
    for (const RingSchedule& s : AllRanks(c)) {
      const std::uint64_t segments = s.segments_per_step();
      for (std::uint64_t u = 0; u < s.units(); u++) {
        for (bool sending : {true, false}) {
          const ElemRange r = sending ? s.SendRange(u) : s.RecvRange(u);
          if (!r.empty()) continue;
          const ElemRange chunk = s.Chunk(sending ? s.SendChunk(u) : s.RecvChunk(u));
          EXPECT_EQ(u % segments, segments - 1) << "empty unit " << u << " is not a tail";
          EXPECT_LT(chunk.size(), LargestChunk(c)) << "empty unit " << u << " in a largest chunk";
        }
      }
    }
  }
}

// --- Simulation ----------------------------------------------------------------------------------

// One ring all-reduce in memory: n ranks, each with a buffer of distinct values; rank r's link to
// rank r+1 is K FIFO streams; unit u travels on stream u mod K, and each stream sends its units
// in increasing u. Everything a rank does comes from its RingSchedule. Empty units are not sent
// (and so not awaited). A receive checks that the stream delivers the unit the rank expects next
// on it, over the range it expects; a driver that finds nothing to do before the end reports a
// deadlock.
class RingSim {
 public:
  RingSim(const Config& c, std::uint32_t streams, std::uint64_t values_seed,
          bool respect_dependencies = true)
      : c_(c), streams_(streams), respect_dependencies_(respect_dependencies) {
    std::mt19937_64 rng(values_seed);
    expected_.assign(c.count, 0);
    for (std::uint32_t r = 0; r < c.n; r++) {
      ranks_.push_back(Rank{RingSchedule(c.count, c.n, r, c.segment_elems), {}, {}, {}, {}, {}, 0});
      Rank& rank = ranks_.back();
      rank.buffer.resize(c.count);
      for (std::uint64_t i = 0; i < c.count; i++) {
        // Distinct across ranks and indices: the low part is (r, i); the high part is random.
        const std::int64_t high = static_cast<std::int64_t>(rng() >> 24) - (std::int64_t{1} << 39);
        rank.buffer[i] =
            high * static_cast<std::int64_t>(8 * 4100) + static_cast<std::int64_t>(r * 4100 + i);
        expected_[i] += rank.buffer[i];
      }
      rank.received.assign(rank.schedule.units(), false);
      rank.next_send.resize(streams);
      rank.next_recv.resize(streams);
      rank.link_out.resize(streams);
      for (std::uint32_t k = 0; k < streams; k++) {
        rank.next_send[k] = k;
        rank.next_recv[k] = k;
      }
    }
    for (std::uint32_t r = 0; r < c.n; r++) {
      for (std::uint32_t k = 0; k < streams; k++) {
        SkipEmptySends(r, k);
        SkipEmptyRecvs(r, k);
      }
    }
  }

  std::uint32_t n() const { return c_.n; }
  std::uint32_t streams() const { return streams_; }

  bool CanSend(std::uint32_t r, std::uint32_t k) const {
    const Rank& rank = ranks_[r];
    const std::uint64_t u = rank.next_send[k];
    if (u >= rank.schedule.units()) return false;
    if (!respect_dependencies_ || !rank.schedule.SendDependsOnRecv(u)) return true;
    return rank.received[u - rank.schedule.segments_per_step()];
  }

  void Send(std::uint32_t r, std::uint32_t k) {
    Rank& rank = ranks_[r];
    const std::uint64_t u = rank.next_send[k];
    const ElemRange range = rank.schedule.SendRange(u);
    Transfer t{u, range, {}};
    t.values.assign(rank.buffer.begin() + static_cast<std::ptrdiff_t>(range.begin),
                    rank.buffer.begin() + static_cast<std::ptrdiff_t>(range.end));
    rank.link_out[k].push_back(std::move(t));
    sends_++;
    rank.next_send[k] += streams_;
    SkipEmptySends(r, k);
  }

  bool CanRecv(std::uint32_t r, std::uint32_t k) const {
    return !ranks_[Prev(r)].link_out[k].empty();
  }

  void Recv(std::uint32_t r, std::uint32_t k) {
    Rank& rank = ranks_[r];
    std::deque<Transfer>& link = ranks_[Prev(r)].link_out[k];
    Transfer t = std::move(link.front());
    link.pop_front();
    const std::uint64_t u = rank.next_recv[k];
    // The stream is a FIFO: what arrives must be the unit this rank expects next on it.
    ASSERT_EQ(t.unit, u) << "rank " << r << " stream " << k;
    ASSERT_EQ(u % streams_, k);
    const ElemRange range = rank.schedule.RecvRange(u);
    ASSERT_TRUE(SameRange(t.range, range)) << "rank " << r << " unit " << u << ": sent "
                                           << Str(t.range) << ", expected " << Str(range);
    ASSERT_EQ(t.values.size(), range.size());
    const bool reduce = rank.schedule.IsReduceScatter(u);
    for (std::uint64_t i = 0; i < range.size(); i++) {
      std::int64_t& x = rank.buffer[range.begin + i];
      x = reduce ? x + t.values[i] : t.values[i];
    }
    recvs_++;
    MarkReceived(r, u);
    rank.next_recv[k] += streams_;
    SkipEmptyRecvs(r, k);
  }

  bool Done() const {
    for (const Rank& rank : ranks_) {
      for (std::uint32_t k = 0; k < streams_; k++) {
        if (rank.next_send[k] < rank.schedule.units()) return false;
        if (rank.next_recv[k] < rank.schedule.units()) return false;
        if (!rank.link_out[k].empty()) return false;
      }
    }
    return true;
  }

  // Every rank holds the exact sum; every non-empty unit went once each way.
  void ExpectAllReduced() const {
    ASSERT_TRUE(Done());
    for (std::uint32_t r = 0; r < c_.n; r++) {
      for (std::uint64_t i = 0; i < c_.count; i++) {
        ASSERT_EQ(ranks_[r].buffer[i], expected_[i]) << "rank " << r << " element " << i;
      }
      for (std::uint64_t u = 0; u < ranks_[r].schedule.units(); u++) {
        ASSERT_TRUE(ranks_[r].received[u]) << "rank " << r << " unit " << u;
      }
    }
    std::uint64_t non_empty = 0;
    for (const Rank& rank : ranks_) {
      for (std::uint64_t u = 0; u < rank.schedule.units(); u++) {
        non_empty += rank.schedule.RecvRange(u).empty() ? 0 : 1;
      }
    }
    EXPECT_EQ(sends_, non_empty);
    EXPECT_EQ(recvs_, non_empty);
    EXPECT_EQ(owner_checks_, c_.n > 1 && c_.count > 0 ? c_.n : 0);
  }

  bool AllReduced() const {
    for (const Rank& rank : ranks_) {
      if (rank.buffer != expected_) return false;
    }
    return true;
  }

 private:
  struct Transfer {
    std::uint64_t unit;
    ElemRange range;
    std::vector<std::int64_t> values;
  };
  struct Rank {
    RingSchedule schedule;
    std::vector<std::int64_t> buffer;
    std::vector<bool> received;                  // per unit
    std::vector<std::uint64_t> next_send;        // per stream: the next unit to send on it
    std::vector<std::uint64_t> next_recv;        // per stream: the next unit due on it
    std::vector<std::deque<Transfer>> link_out;  // per stream: in flight to rank + 1
    std::uint64_t last_rs_received = 0;
  };

  std::uint32_t Prev(std::uint32_t r) const { return (r + c_.n - 1) % c_.n; }

  void SkipEmptySends(std::uint32_t r, std::uint32_t k) {
    Rank& rank = ranks_[r];
    while (rank.next_send[k] < rank.schedule.units() &&
           rank.schedule.SendRange(rank.next_send[k]).empty()) {
      rank.next_send[k] += streams_;
    }
  }
  void SkipEmptyRecvs(std::uint32_t r, std::uint32_t k) {
    Rank& rank = ranks_[r];
    while (rank.next_recv[k] < rank.schedule.units() &&
           rank.schedule.RecvRange(rank.next_recv[k]).empty()) {
      MarkReceived(r, rank.next_recv[k]);
      rank.next_recv[k] += streams_;
    }
  }

  void MarkReceived(std::uint32_t r, std::uint64_t u) {
    Rank& rank = ranks_[r];
    ASSERT_FALSE(rank.received[u]);
    rank.received[u] = true;
    if (!respect_dependencies_ || !rank.schedule.IsLastReduceScatter(u)) return;
    if (++rank.last_rs_received < rank.schedule.segments_per_step()) return;
    // The last reduce-scatter step is complete: the rank's own chunk holds the full sum.
    owner_checks_++;
    const ElemRange own = rank.schedule.Chunk(r);
    for (std::uint64_t i = own.begin; i < own.end; i++) {
      ASSERT_EQ(rank.buffer[i], expected_[i]) << "rank " << r << " owns element " << i;
    }
  }

  Config c_;
  std::uint32_t streams_;
  bool respect_dependencies_;
  std::vector<Rank> ranks_;
  std::vector<std::int64_t> expected_;
  std::uint64_t sends_ = 0;
  std::uint64_t recvs_ = 0;
  std::uint64_t owner_checks_ = 0;
};

// Rounds: every rank sends all it may on every stream, then receives all that has arrived.
void RunInRounds(RingSim& sim) {
  while (!sim.Done()) {
    bool progress = false;
    for (std::uint32_t r = 0; r < sim.n(); r++) {
      for (std::uint32_t k = 0; k < sim.streams(); k++) {
        while (sim.CanSend(r, k)) {
          sim.Send(r, k);
          progress = true;
        }
      }
    }
    for (std::uint32_t r = 0; r < sim.n(); r++) {
      for (std::uint32_t k = 0; k < sim.streams(); k++) {
        while (sim.CanRecv(r, k)) {
          sim.Recv(r, k);
          if (::testing::Test::HasFatalFailure()) return;
          progress = true;
        }
      }
    }
    ASSERT_TRUE(progress) << "deadlock";
  }
}

// One action at a time, picked at random among those possible: a send or a receive on any
// stream of any rank.
void RunRandomly(RingSim& sim, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::uint64_t actions = 2ull * sim.n() * sim.streams();
  while (!sim.Done()) {
    bool acted = false;
    const std::uint64_t start = rng() % actions;
    for (std::uint64_t i = 0; i < actions && !acted; i++) {
      const std::uint64_t a = (start + i) % actions;
      const bool send = a % 2 == 0;
      const std::uint32_t r = static_cast<std::uint32_t>(a / 2 / sim.streams());
      const std::uint32_t k = static_cast<std::uint32_t>(a / 2 % sim.streams());
      if (send && sim.CanSend(r, k)) {
        sim.Send(r, k);
        acted = true;
      } else if (!send && sim.CanRecv(r, k)) {
        sim.Recv(r, k);
        if (::testing::Test::HasFatalFailure()) return;
        acted = true;
      }
    }
    ASSERT_TRUE(acted) << "deadlock";
  }
}

TEST(RingScheduleSimTest, AllReduceInRounds) {
  for (const Config& c : Matrix()) {
    for (std::uint32_t streams = 1; streams <= 4; streams++) {
      SCOPED_TRACE(Describe(c) + " streams=" + std::to_string(streams));
      RingSim sim(c, streams, /*values_seed=*/c.n * 1000003u + c.count);
      RunInRounds(sim);
      ASSERT_FALSE(HasFatalFailure());
      sim.ExpectAllReduced();
      ASSERT_FALSE(HasFatalFailure());
    }
  }
}

TEST(RingScheduleSimTest, AllReduceInRandomInterleavings) {
  constexpr std::uint64_t kSeeds = 3;
  for (const Config& c : Matrix()) {
    for (std::uint32_t streams = 1; streams <= 4; streams++) {
      for (std::uint64_t seed = 1; seed <= kSeeds; seed++) {
        const std::uint64_t run_seed = seed * 0x9e3779b97f4a7c15ull ^ (c.n << 20) ^ (c.count << 4) ^
                                       (c.segment_elems << 40) ^ streams;
        SCOPED_TRACE(Describe(c) + " streams=" + std::to_string(streams) +
                     " seed=" + std::to_string(run_seed));
        RingSim sim(c, streams, run_seed);
        RunRandomly(sim, run_seed);
        ASSERT_FALSE(HasFatalFailure());
        sim.ExpectAllReduced();
        ASSERT_FALSE(HasFatalFailure());
      }
    }
  }
}

TEST(RingScheduleSimTest, SimulationNoticesAnIgnoredDependency) {
  // The simulation is not trivially satisfied: if ranks send before the receive they forward has
  // arrived, the result is wrong.
  RingSim sim(Config{4, 8, 1}, 1, 42, /*respect_dependencies=*/false);
  for (std::uint32_t r = 0; r < sim.n(); r++) {
    while (sim.CanSend(r, 0)) sim.Send(r, 0);
  }
  for (std::uint32_t r = 0; r < sim.n(); r++) {
    while (sim.CanRecv(r, 0)) sim.Recv(r, 0);
  }
  ASSERT_TRUE(sim.Done());
  EXPECT_FALSE(sim.AllReduced());
}

TEST(RingScheduleTest, LargeCountsDoNotOverflow) {
  // 2^40 elements (one collective's byte limit, at one byte each) over 7 ranks.
  const std::uint64_t count = std::uint64_t{1} << 40;
  const RingSchedule s(count, 7, 3, std::uint64_t{1} << 20);
  EXPECT_EQ(s.Chunk(6).end, count);
  const std::uint64_t last = s.units() - 1;
  EXPECT_EQ(s.SendRange(last).end, s.Chunk(s.SendChunk(last)).end);
  EXPECT_LE(s.SendRange(last).size(), std::uint64_t{1} << 20);
}

}  // namespace
}  // namespace shoal::collective
