// Tests of PlanSync (coord/sync_planner.h): a table of cases, one or more per rule of the header,
// then seeded random inputs checked two ways: against the plan invariants (CheckInvariants: every
// sender/receiver pair sees the same pieces in the same order, every received tensor is covered
// exactly once, senders hold the elected hash, limits hold) and against a deliberately naive
// second implementation of the rules (ReferencePlan), which must give exactly the same plans.
#include "shoal/coord/sync_planner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "shoal/common/dtype.h"
#include "shoal/common/limits.h"

namespace shoal::net {
// Readable failure messages.
void PrintTo(const TransferPiece& p, std::ostream* os) {
  *os << "{peer " << p.peer << ", tensor " << p.tensor << ", [" << p.offset << ", +" << p.bytes
      << ")}";
}
void PrintTo(const ExpectedHash& e, std::ostream* os) {
  *os << "{tensor " << e.tensor << ", hash " << e.hash << "}";
}
}  // namespace shoal::net

namespace shoal::coord {
namespace {

using net::ExpectedHash;
using net::TensorReport;
using net::TransferPiece;

constexpr std::uint64_t kEpoch = 12;
constexpr std::uint64_t kSeq = 3;
constexpr std::uint64_t kMiB = std::uint64_t{1} << 20;

constexpr PeerId Id(std::size_t i) { return 0xA000 + i; }
constexpr char kMismatchHead[] = "shared state differs from the group's: ";

TensorReport T(std::string name, shoal_dtype dtype, std::uint64_t count, std::uint64_t hash,
               bool allow_divergence = false) {
  TensorReport t;
  t.name = std::move(name);
  t.dtype = dtype;
  t.count = count;
  t.hash = hash;
  t.allow_divergence = allow_divergence;
  return t;
}

MemberSyncReport M(std::size_t i, std::uint64_t revision, std::vector<TensorReport> tensors) {
  MemberSyncReport m;
  m.peer = Id(i);
  m.report.epoch = kEpoch;
  m.report.seq = kSeq;
  m.report.revision = revision;
  m.report.tensors = std::move(tensors);
  return m;
}

std::uint64_t Bytes(const TensorReport& t) { return t.count * DtypeBytes(t.dtype); }

// A state of four f32 tensors of 1 KiB, 0 B, 64 B, 4 KiB, all with hash base + t.
std::vector<TensorReport> SmallState(std::uint64_t base = 100) {
  return {T("w0", SHOAL_F32, 256, base + 0), T("empty", SHOAL_F32, 0, base + 1),
          T("b0", SHOAL_F32, 16, base + 2), T("w1", SHOAL_F32, 1024, base + 3)};
}

SyncPlannerConfig Config(std::uint64_t piece_bytes_min = 8 * kMiB,
                         std::uint32_t pieces_max = limits::kSyncPiecesMax) {
  SyncPlannerConfig c;
  c.piece_bytes_min = piece_bytes_min;
  c.pieces_max = pieces_max;
  return c;
}

std::size_t IndexOf(const std::vector<MemberSyncReport>& ms, PeerId peer) {
  for (std::size_t i = 0; i < ms.size(); ++i) {
    if (ms[i].peer == peer) return i;
  }
  return ms.size();
}

std::vector<TransferPiece> With(const std::vector<TransferPiece>& pieces, PeerId peer) {
  std::vector<TransferPiece> out;
  for (const TransferPiece& p : pieces) {
    if (p.peer == peer) out.push_back(p);
  }
  return out;
}

std::uint64_t PiecesOf(const net::SyncPlan& p) { return p.sends.size() + p.recvs.size(); }

// ---------------------------------------------------------------------------------------------
// The naive reference: the header's rules written as plainly as possible (quadratic scans).

bool SameSchema(const std::vector<TensorReport>& a, const std::vector<TensorReport>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t t = 0; t < a.size(); ++t) {
    if (a[t].name != b[t].name || a[t].dtype != b[t].dtype || a[t].count != b[t].count ||
        a[t].allow_divergence != b[t].allow_divergence) {
      return false;
    }
  }
  return true;
}

struct Reference {
  SyncDecision decision;
  std::vector<std::uint64_t> elected;  // by tensor of the reference schema
  std::size_t schema_of = 0;           // a member with the reference schema
  std::vector<bool> up_to_date;
  bool fell_back = false;  // rule 8 made one piece per transfer (or refused everyone)
};

// One pass of rules 5-7; false if some member exceeds pieces_max.
bool ReferencePass(const std::vector<MemberSyncReport>& ms, const Reference& ref,
                   std::uint64_t piece_bytes_min, std::uint64_t pieces_max, bool one_piece,
                   std::vector<net::SyncPlan>* plans, std::uint64_t* bytes_moved) {
  const std::vector<TensorReport>& schema = ms[ref.schema_of].report.tensors;
  std::vector<std::uint64_t> load(ms.size(), 0);
  *bytes_moved = 0;
  for (std::size_t r = 0; r < ms.size(); ++r) {
    if ((*plans)[r].code != SHOAL_OK) continue;
    for (std::size_t t = 0; t < schema.size(); ++t) {
      const std::uint64_t bytes = Bytes(schema[t]);
      const std::uint64_t h = ms[r].report.tensors[t].hash;
      if (bytes == 0 || h == ref.elected[t]) continue;
      if (ref.up_to_date[r] && schema[t].allow_divergence) continue;
      (*plans)[r].expect.push_back(ExpectedHash{static_cast<std::uint32_t>(t), ref.elected[t]});
      std::vector<std::size_t> holders;
      for (std::size_t m = 0; m < ms.size(); ++m) {
        if (ref.up_to_date[m] && ms[m].report.tensors[t].hash == ref.elected[t]) {
          holders.push_back(m);
        }
      }
      std::uint64_t k = (bytes + piece_bytes_min - 1) / piece_bytes_min;
      k = std::min<std::uint64_t>(k, holders.size());
      if (one_piece) k = 1;
      std::uint64_t offset = 0;
      for (std::uint64_t i = 0; i < k; ++i) {
        const std::uint64_t size = bytes / k + (i < bytes % k ? 1 : 0);
        std::size_t best = holders[0];
        for (std::size_t h2 : holders) {
          if (load[h2] < load[best]) best = h2;  // strict: the earliest wins a tie
        }
        load[best] += size;
        (*plans)[best].sends.push_back(
            TransferPiece{ms[r].peer, static_cast<std::uint32_t>(t), offset, size});
        (*plans)[r].recvs.push_back(
            TransferPiece{ms[best].peer, static_cast<std::uint32_t>(t), offset, size});
        *bytes_moved += size;
        offset += size;
      }
    }
  }
  for (const net::SyncPlan& p : *plans) {
    if (PiecesOf(p) > pieces_max) return false;
  }
  return true;
}

Reference ReferencePlan(const std::vector<MemberSyncReport>& ms, std::optional<std::uint64_t> last,
                        const SyncPlannerConfig& config) {
  Reference ref;
  SyncDecision& d = ref.decision;
  d.plans.resize(ms.size());
  for (net::SyncPlan& p : d.plans) {
    p.epoch = kEpoch;
    p.seq = kSeq;
  }
  // Rule 1.
  std::size_t best_votes = 0;
  for (std::size_t m = 0; m < ms.size(); ++m) {
    std::size_t votes = 0;
    for (const MemberSyncReport& o : ms)
      votes += SameSchema(o.report.tensors, ms[m].report.tensors);
    if (votes > best_votes) {
      best_votes = votes;
      ref.schema_of = m;
    }
  }
  for (std::size_t m = 0; m < ms.size(); ++m) {
    if (!SameSchema(ms[m].report.tensors, ms[ref.schema_of].report.tensors)) {
      d.plans[m].code = SHOAL_ERR_MISMATCH;
    } else if (last.has_value() && ms[m].report.revision > *last &&
               ms[m].report.revision - *last > 1) {
      d.plans[m].code = SHOAL_ERR_REVISION;
    }
  }
  // Rule 3.
  for (std::size_t m = 0; m < ms.size(); ++m) {
    if (d.plans[m].code != SHOAL_OK) continue;
    if (!d.any_admitted || ms[m].report.revision > d.revision) d.revision = ms[m].report.revision;
    d.any_admitted = true;
  }
  if (!d.any_admitted) {
    for (net::SyncPlan& p : d.plans) p.revision = 0;
    d.revision = 0;
    return ref;
  }
  ref.up_to_date.assign(ms.size(), false);
  for (std::size_t m = 0; m < ms.size(); ++m) {
    ref.up_to_date[m] = d.plans[m].code == SHOAL_OK && ms[m].report.revision == d.revision;
  }
  // Rule 4.
  const std::vector<TensorReport>& schema = ms[ref.schema_of].report.tensors;
  ref.elected.assign(schema.size(), 0);
  for (std::size_t t = 0; t < schema.size(); ++t) {
    std::size_t best = 0;
    for (std::size_t m = 0; m < ms.size(); ++m) {
      if (!ref.up_to_date[m]) continue;
      std::size_t votes = 0;
      for (std::size_t o = 0; o < ms.size(); ++o) {
        votes += ref.up_to_date[o] && ms[o].report.tensors[t].hash == ms[m].report.tensors[t].hash;
      }
      if (votes > best) {
        best = votes;
        ref.elected[t] = ms[m].report.tensors[t].hash;
      }
    }
  }
  // Rules 5-8.
  const std::uint64_t pmin = std::max<std::uint64_t>(config.piece_bytes_min, 1);
  const std::uint64_t pmax = std::min(config.pieces_max, limits::kSyncPiecesMax);
  const std::vector<net::SyncPlan> empty = d.plans;
  for (bool one_piece : {false, true}) {
    d.plans = empty;
    ref.fell_back = one_piece;
    if (ReferencePass(ms, ref, pmin, pmax, one_piece, &d.plans, &d.bytes_moved)) {
      for (net::SyncPlan& p : d.plans) p.revision = d.revision;
      return ref;
    }
  }
  d.plans = empty;
  for (net::SyncPlan& p : d.plans) {
    if (p.code == SHOAL_OK) p.code = SHOAL_ERR_INVALID_ARGUMENT;
  }
  d.any_admitted = false;
  d.revision = 0;
  d.bytes_moved = 0;
  return ref;
}

// ---------------------------------------------------------------------------------------------
// Invariants every decision must satisfy.

void CheckInvariants(const std::vector<MemberSyncReport>& ms, std::optional<std::uint64_t> last,
                     const SyncPlannerConfig& config, const SyncDecision& d,
                     const std::string& where) {
  SCOPED_TRACE(where);
  const Reference ref = ReferencePlan(ms, last, config);
  ASSERT_EQ(d.plans.size(), ms.size());
  bool any_ok = false;
  std::uint64_t moved = 0;
  const std::uint64_t pmax = std::min(config.pieces_max, limits::kSyncPiecesMax);
  for (std::size_t m = 0; m < ms.size(); ++m) {
    const net::SyncPlan& p = d.plans[m];
    SCOPED_TRACE("member " + std::to_string(m));
    EXPECT_EQ(p.epoch, ms[m].report.epoch);
    EXPECT_EQ(p.seq, ms[m].report.seq);
    EXPECT_EQ(p.revision, d.revision);
    EXPECT_LE(PiecesOf(p), pmax);
    if (p.code != SHOAL_OK) {
      EXPECT_FALSE(p.reason.empty());
      EXPECT_LE(p.reason.size(), limits::kDetailBytesMax);
      EXPECT_TRUE(p.expect.empty() && p.sends.empty() && p.recvs.empty());
      continue;
    }
    any_ok = true;
    EXPECT_TRUE(p.reason.empty());
    // Expect: strictly increasing tensors, hashes elected, and each tensor's pieces cover it.
    const std::vector<TensorReport>& mine = ms[m].report.tensors;
    std::set<std::uint32_t> expected;
    for (std::size_t i = 0; i < p.expect.size(); ++i) {
      const ExpectedHash& e = p.expect[i];
      if (i > 0) {
        EXPECT_LT(p.expect[i - 1].tensor, e.tensor);
      }
      ASSERT_LT(e.tensor, mine.size());
      EXPECT_EQ(e.hash, ref.elected[e.tensor]);
      EXPECT_NE(e.hash, mine[e.tensor].hash) << "receives a tensor it already has";
      expected.insert(e.tensor);
    }
    std::map<std::uint32_t, std::vector<std::pair<std::uint64_t, std::uint64_t>>> ranges;
    for (const TransferPiece& r : p.recvs) {
      EXPECT_GT(r.bytes, 0u);
      EXPECT_NE(r.peer, ms[m].peer);
      EXPECT_EQ(expected.count(r.tensor), 1u) << "a received tensor is not expected";
      ranges[r.tensor].push_back({r.offset, r.bytes});
      moved += r.bytes;
      // The sender is admitted, up to date and holds the elected hash.
      const std::size_t s = IndexOf(ms, r.peer);
      ASSERT_LT(s, ms.size());
      EXPECT_EQ(d.plans[s].code, SHOAL_OK);
      EXPECT_EQ(ms[s].report.revision, d.revision);
      EXPECT_EQ(ms[s].report.tensors[r.tensor].hash, ref.elected[r.tensor]);
    }
    for (std::uint32_t t : expected) {
      auto& rs = ranges[t];
      std::sort(rs.begin(), rs.end());
      std::uint64_t end = 0;
      for (auto [offset, bytes] : rs) {
        EXPECT_EQ(offset, end) << "tensor " << t << ": gap or overlap";
        end = offset + bytes;
      }
      EXPECT_EQ(end, Bytes(mine[t])) << "tensor " << t << " not covered";
    }
    // Every pair sees the same pieces in the same order.
    for (std::size_t s = 0; s < ms.size(); ++s) {
      std::vector<TransferPiece> sent = With(d.plans[s].sends, ms[m].peer);
      std::vector<TransferPiece> got = With(p.recvs, ms[s].peer);
      for (TransferPiece& x : sent) x.peer = 0;
      for (TransferPiece& x : got) x.peer = 0;
      EXPECT_EQ(sent, got) << "sender " << s << " and receiver " << m << " disagree";
    }
  }
  EXPECT_EQ(d.any_admitted, any_ok);
  EXPECT_EQ(d.bytes_moved, moved);
  if (!d.any_admitted) {
    EXPECT_EQ(d.revision, 0u);
  }

  // The naive implementation gives exactly the same plans.
  EXPECT_EQ(d.any_admitted, ref.decision.any_admitted);
  EXPECT_EQ(d.revision, ref.decision.revision);
  EXPECT_EQ(d.bytes_moved, ref.decision.bytes_moved);
  for (std::size_t m = 0; m < ms.size(); ++m) {
    SCOPED_TRACE("member " + std::to_string(m) + " vs reference");
    EXPECT_EQ(d.plans[m].code, ref.decision.plans[m].code);
    EXPECT_EQ(d.plans[m].expect, ref.decision.plans[m].expect);
    EXPECT_EQ(d.plans[m].sends, ref.decision.plans[m].sends);
    EXPECT_EQ(d.plans[m].recvs, ref.decision.plans[m].recvs);
  }
}

// Plans, checks the invariants and that a second run gives the same decision.
SyncDecision Plan(const std::vector<MemberSyncReport>& ms, std::optional<std::uint64_t> last,
                  const SyncPlannerConfig& config = Config()) {
  SyncDecision d = PlanSync(ms, last, config);
  CheckInvariants(ms, last, config, d, "Plan");
  SyncDecision again = PlanSync(ms, last, config);
  EXPECT_EQ(again.revision, d.revision);
  EXPECT_EQ(again.any_admitted, d.any_admitted);
  EXPECT_EQ(again.bytes_moved, d.bytes_moved);
  for (std::size_t m = 0; m < d.plans.size() && m < again.plans.size(); ++m) {
    EXPECT_EQ(again.plans[m].reason, d.plans[m].reason);
    EXPECT_EQ(again.plans[m].sends, d.plans[m].sends);
    EXPECT_EQ(again.plans[m].recvs, d.plans[m].recvs);
  }
  return d;
}

bool NoPieces(const SyncDecision& d) {
  return std::all_of(d.plans.begin(), d.plans.end(), [](const net::SyncPlan& p) {
    return p.sends.empty() && p.recvs.empty() && p.expect.empty();
  });
}

// ---------------------------------------------------------------------------------------------
// The table.

TEST(SyncPlanner, IdenticalStatesMoveNothing) {
  std::vector<MemberSyncReport> ms;
  for (std::size_t i = 0; i < 4; ++i) ms.push_back(M(i, 5, SmallState()));
  SyncDecision d = Plan(ms, 4);
  EXPECT_TRUE(d.any_admitted);
  EXPECT_EQ(d.revision, 5u);
  EXPECT_EQ(d.bytes_moved, 0u);
  EXPECT_TRUE(NoPieces(d));
  for (const net::SyncPlan& p : d.plans) {
    EXPECT_EQ(p.code, SHOAL_OK);
    EXPECT_EQ(p.revision, 5u);
    EXPECT_EQ(p.epoch, kEpoch);
    EXPECT_EQ(p.seq, kSeq);
  }
}

TEST(SyncPlanner, SingleMember) {
  SyncDecision d = Plan({M(0, 1, SmallState())}, std::nullopt);
  EXPECT_TRUE(d.any_admitted);
  EXPECT_EQ(d.revision, 1u);
  EXPECT_TRUE(NoPieces(d));
}

TEST(SyncPlanner, EmptyStates) {
  std::vector<MemberSyncReport> ms = {M(0, 2, {}), M(1, 1, {}), M(2, 2, {})};
  SyncDecision d = Plan(ms, 1);
  EXPECT_TRUE(d.any_admitted);
  EXPECT_EQ(d.revision, 2u);
  EXPECT_TRUE(NoPieces(d));
}

TEST(SyncPlanner, FlippedHashMovesThatTensorOnly) {
  std::vector<MemberSyncReport> ms;
  for (std::size_t i = 0; i < 4; ++i) ms.push_back(M(i, 5, SmallState()));
  ms[2].report.tensors[3].hash = 999;
  SyncDecision d = Plan(ms, 4);
  ASSERT_TRUE(d.any_admitted);
  EXPECT_EQ(d.revision, 5u);
  EXPECT_EQ(d.plans[2].expect, (std::vector<ExpectedHash>{{3, 103}}));
  // 4 KiB is below piece_bytes_min: one piece, from the earliest (all holders are unloaded).
  EXPECT_EQ(d.plans[2].recvs, (std::vector<TransferPiece>{{Id(0), 3, 0, 4096}}));
  EXPECT_EQ(d.plans[0].sends, (std::vector<TransferPiece>{{Id(2), 3, 0, 4096}}));
  EXPECT_TRUE(d.plans[2].sends.empty());
  for (std::size_t m : {1, 3}) {
    EXPECT_TRUE(d.plans[m].sends.empty() && d.plans[m].recvs.empty() && d.plans[m].expect.empty());
  }
  EXPECT_EQ(d.bytes_moved, 4096u);
}

TEST(SyncPlanner, LargeTensorIsSplitAcrossHolders) {
  // 64 MiB of f32, three holders, pieces of at least 8 MiB: three pieces from three senders.
  std::vector<MemberSyncReport> ms;
  for (std::size_t i = 0; i < 4; ++i) {
    ms.push_back(M(i, 5, {T("small", SHOAL_U8, 10, 1), T("big", SHOAL_F32, 16 * kMiB, 2)}));
  }
  ms[1].report.tensors[1].hash = 77;
  SyncDecision d = Plan(ms, 4);
  const std::vector<TransferPiece>& recvs = d.plans[1].recvs;
  ASSERT_EQ(recvs.size(), 3u);
  std::set<PeerId> senders;
  std::uint64_t end = 0;
  for (const TransferPiece& p : recvs) {
    EXPECT_EQ(p.tensor, 1u);
    EXPECT_EQ(p.offset, end);  // in offset order
    end += p.bytes;
    senders.insert(p.peer);
  }
  EXPECT_EQ(end, 64 * kMiB);
  EXPECT_EQ(senders, (std::set<PeerId>{Id(0), Id(2), Id(3)}));
  // 64 MiB / 3 = 22369621 rem 1: the first range takes the extra byte.
  EXPECT_EQ(recvs[0].bytes, 22369622u);
  EXPECT_EQ(recvs[1].bytes, 22369621u);
  EXPECT_EQ(recvs[2].bytes, 22369621u);
  for (std::size_t s : {0, 2, 3}) EXPECT_EQ(d.plans[s].sends.size(), 1u);
}

TEST(SyncPlanner, SplitNeverFinerThanPieceBytesMin) {
  // 20 MiB with 8 MiB minimum: ceil = 3 ranges though 5 holders could send.
  std::vector<MemberSyncReport> ms;
  for (std::size_t i = 0; i < 6; ++i) ms.push_back(M(i, 1, {T("x", SHOAL_U8, 20 * kMiB, 5)}));
  ms[5].report.tensors[0].hash = 6;
  SyncDecision d = Plan(ms, 0);
  EXPECT_EQ(d.plans[5].recvs.size(), 3u);
  // Exactly a multiple: 16 MiB in two ranges of 8 MiB.
  for (auto& m : ms) m.report.tensors[0].count = 16 * kMiB;
  d = Plan(ms, 0);
  ASSERT_EQ(d.plans[5].recvs.size(), 2u);
  EXPECT_EQ(d.plans[5].recvs[0].bytes, 8 * kMiB);
  // 0 as piece_bytes_min counts as 1: one range per holder.
  for (auto& m : ms) m.report.tensors[0].count = 7;
  d = Plan(ms, 0, Config(0));
  EXPECT_EQ(d.plans[5].recvs.size(), 5u);
  // Fewer bytes than holders: one byte each.
  for (auto& m : ms) m.report.tensors[0].count = 3;
  d = Plan(ms, 0, Config(1));
  ASSERT_EQ(d.plans[5].recvs.size(), 3u);
  for (const TransferPiece& p : d.plans[5].recvs) EXPECT_EQ(p.bytes, 1u);
}

TEST(SyncPlanner, LoadIsSpreadOverReceiversAndTensors) {
  // Two holders, three receivers of two 1 KiB tensors (one piece each): the six transfers
  // alternate between the holders in plan order.
  std::vector<MemberSyncReport> ms;
  for (std::size_t i = 0; i < 5; ++i) {
    ms.push_back(M(i, 9, {T("a", SHOAL_U8, 1024, 1), T("b", SHOAL_U8, 1024, 2)}));
  }
  for (std::size_t r : {1, 3, 4}) ms[r].report.revision = 8;  // behind
  for (std::size_t r : {1, 3, 4}) ms[r].report.tensors[0].hash = ms[r].report.tensors[1].hash = 0;
  SyncDecision d = Plan(ms, 8);
  EXPECT_EQ(d.plans[0].sends.size(), 3u);
  EXPECT_EQ(d.plans[2].sends.size(), 3u);
  EXPECT_EQ(d.plans[1].recvs,
            (std::vector<TransferPiece>{{Id(0), 0, 0, 1024}, {Id(2), 1, 0, 1024}}));
  EXPECT_EQ(d.plans[3].recvs,
            (std::vector<TransferPiece>{{Id(0), 0, 0, 1024}, {Id(2), 1, 0, 1024}}));
  EXPECT_EQ(d.bytes_moved, 6u * 1024);
}

TEST(SyncPlanner, GreedyMayGiveOneHolderTwoRanges) {
  // Holders 0 and 1 diverge on "a" (allowed), so 0 holds the elected "a" alone. The behind
  // member 2 gets "a" (1000 B, one range) from 0 first; then "b" (200 B) is cut in two ranges and
  // holder 1, still the less loaded after the first, takes both.
  std::vector<MemberSyncReport> ms;
  for (std::size_t i = 0; i < 3; ++i) {
    ms.push_back(M(i, 1, {T("a", SHOAL_U8, 1000, 10 + i, true), T("b", SHOAL_U8, 200, 2)}));
  }
  ms[2].report.revision = 0;
  ms[2].report.tensors[1].hash = 0;
  SyncDecision d = Plan(ms, 0, Config(100));
  EXPECT_EQ(d.plans[2].expect, (std::vector<ExpectedHash>{{0, 10}, {1, 2}}));
  EXPECT_EQ(d.plans[2].recvs, (std::vector<TransferPiece>{
                                  {Id(0), 0, 0, 1000}, {Id(1), 1, 0, 100}, {Id(1), 1, 100, 100}}));
  EXPECT_EQ(d.plans[1].sends,
            (std::vector<TransferPiece>{{Id(2), 1, 0, 100}, {Id(2), 1, 100, 100}}));
}

TEST(SyncPlanner, JoinerReceivesEveryNonEmptyTensor) {
  std::vector<MemberSyncReport> ms;
  for (std::size_t i = 0; i < 3; ++i) ms.push_back(M(i, 5, SmallState()));
  ms.push_back(M(3, 0, SmallState(/*base=*/900)));
  SyncDecision d = Plan(ms, 5);
  ASSERT_TRUE(d.any_admitted);
  EXPECT_EQ(d.revision, 5u);
  EXPECT_EQ(d.plans[3].code, SHOAL_OK);
  EXPECT_EQ(d.plans[3].expect, (std::vector<ExpectedHash>{{0, 100}, {2, 102}, {3, 103}}));
  std::uint64_t got = 0;
  for (const TransferPiece& p : d.plans[3].recvs) got += p.bytes;
  EXPECT_EQ(got, 1024u + 64 + 4096);
  EXPECT_EQ(d.bytes_moved, got);
  EXPECT_TRUE(d.plans[3].sends.empty());
}

TEST(SyncPlanner, AllowDivergenceSparesUpToDateMembersOnly) {
  std::vector<MemberSyncReport> ms;
  for (std::size_t i = 0; i < 4; ++i) {
    ms.push_back(M(i, 5, {T("weights", SHOAL_F32, 100, 1), T("rng", SHOAL_U8, 64, 50, true)}));
  }
  ms[1].report.tensors[1].hash = 51;  // up to date, differs: keeps its own
  ms[3].report.revision = 4;          // behind, differs: receives
  ms[3].report.tensors[1].hash = 53;
  SyncDecision d = Plan(ms, 4);
  EXPECT_TRUE(d.plans[1].expect.empty());
  EXPECT_EQ(d.plans[3].expect, (std::vector<ExpectedHash>{{1, 50}}));
  ASSERT_EQ(d.plans[3].recvs.size(), 1u);
  EXPECT_NE(d.plans[3].recvs[0].peer, Id(1));  // not from the member that diverged
  // Without the flag the up-to-date member receives too.
  for (auto& m : ms) m.report.tensors[1].allow_divergence = false;
  d = Plan(ms, 4);
  EXPECT_EQ(d.plans[1].expect, (std::vector<ExpectedHash>{{1, 50}}));
  EXPECT_EQ(d.plans[3].expect, (std::vector<ExpectedHash>{{1, 50}}));
}

TEST(SyncPlanner, AllowDivergenceEveryoneDifferent) {
  // Every up-to-date member has its own hash: the earliest's is elected and it is the only holder;
  // the behind member gets it from there.
  std::vector<MemberSyncReport> ms;
  for (std::size_t i = 0; i < 6; ++i) ms.push_back(M(i, 2, {T("rng", SHOAL_U8, 64, 10 + i, true)}));
  ms[4].report.revision = 1;
  SyncDecision d = Plan(ms, 1);
  EXPECT_EQ(d.plans[4].recvs, (std::vector<TransferPiece>{{Id(0), 0, 0, 64}}));
  EXPECT_EQ(d.plans[4].expect, (std::vector<ExpectedHash>{{0, 10}}));
  EXPECT_EQ(d.bytes_moved, 64u);
}

TEST(SyncPlanner, RevisionRules) {
  constexpr std::uint64_t kLast = 5;
  std::vector<MemberSyncReport> ms;
  ms.push_back(M(0, 6, SmallState()));     // L + 1: fine, and E
  ms.push_back(M(1, 7, SmallState()));     // L + 2: refused
  ms.push_back(M(2, 5, SmallState(200)));  // at L: behind, receives
  ms.push_back(M(3, 2, SmallState(300)));  // below L: behind, receives
  ms.push_back(M(4, 6, SmallState()));     // up to date
  SyncDecision d = Plan(ms, kLast);
  ASSERT_TRUE(d.any_admitted);
  EXPECT_EQ(d.revision, 6u);
  EXPECT_EQ(d.plans[1].code, SHOAL_ERR_REVISION);
  EXPECT_EQ(d.plans[1].reason,
            "revision 7 is ahead of the group: its last synced revision is 5 and revisions "
            "advance by one per sync");
  EXPECT_EQ(d.plans[1].revision, 6u);
  for (std::size_t m : {0, 2, 3, 4}) EXPECT_EQ(d.plans[m].code, SHOAL_OK);
  for (std::size_t m : {2, 3}) EXPECT_EQ(d.plans[m].expect.size(), 3u);
  for (std::size_t m : {0, 4}) EXPECT_TRUE(d.plans[m].expect.empty());
  // The refused member never sends, though its hashes are the elected ones.
  EXPECT_TRUE(d.plans[1].sends.empty());
}

TEST(SyncPlanner, AheadRefusalAtTheTopOfTheRange) {
  // L + 1 would overflow: nothing can be ahead of the largest revision.
  const std::uint64_t top = ~std::uint64_t{0};
  SyncDecision d = Plan({M(0, top, SmallState()), M(1, top - 1, SmallState())}, top);
  EXPECT_EQ(d.plans[0].code, SHOAL_OK);
  EXPECT_EQ(d.plans[1].code, SHOAL_OK);
  EXPECT_EQ(d.revision, top);
  d = Plan({M(0, top, SmallState()), M(1, 0, SmallState())}, top - 2);
  EXPECT_EQ(d.plans[0].code, SHOAL_ERR_REVISION);
  EXPECT_EQ(d.revision, 0u);
}

TEST(SyncPlanner, NoLastRevisionHighestWins) {
  std::vector<MemberSyncReport> ms = {M(0, 3, SmallState(1)), M(1, 100, SmallState(2)),
                                      M(2, 9, SmallState(3)), M(3, 100, SmallState(2))};
  SyncDecision d = Plan(ms, std::nullopt);
  EXPECT_EQ(d.revision, 100u);
  for (const net::SyncPlan& p : d.plans) EXPECT_EQ(p.code, SHOAL_OK);
  EXPECT_EQ(d.plans[0].expect.size(), 3u);
  EXPECT_EQ(d.plans[2].expect.size(), 3u);
  EXPECT_EQ(d.plans[0].expect[0].hash, 2u);
}

TEST(SyncPlanner, EveryoneAheadIsEveryoneRefused) {
  std::vector<MemberSyncReport> ms = {M(0, 9, SmallState()), M(1, 8, SmallState())};
  SyncDecision d = Plan(ms, 3);
  EXPECT_FALSE(d.any_admitted);
  EXPECT_EQ(d.revision, 0u);
  EXPECT_EQ(d.bytes_moved, 0u);
  for (const net::SyncPlan& p : d.plans) {
    EXPECT_EQ(p.code, SHOAL_ERR_REVISION);
    EXPECT_EQ(p.revision, 0u);
  }
}

struct SchemaCase {
  const char* what;
  void (*mutate)(std::vector<TensorReport>*);
  const char* reason;  // for the mutated member
};

class SchemaMismatch : public ::testing::TestWithParam<SchemaCase> {};

TEST_P(SchemaMismatch, MinorityIsRefused) {
  const SchemaCase& c = GetParam();
  std::vector<MemberSyncReport> ms;
  for (std::size_t i = 0; i < 3; ++i) ms.push_back(M(i, 5, SmallState()));
  c.mutate(&ms[1].report.tensors);
  if (!ms[1].report.tensors.empty()) ms[1].report.tensors[0].hash = 4242;
  SyncDecision d = Plan(ms, 4);
  EXPECT_EQ(d.plans[1].code, SHOAL_ERR_MISMATCH);
  EXPECT_EQ(d.plans[1].reason, c.reason);
  EXPECT_EQ(d.plans[0].code, SHOAL_OK);
  EXPECT_EQ(d.plans[2].code, SHOAL_OK);
  EXPECT_TRUE(d.any_admitted);
  EXPECT_TRUE(NoPieces(d));  // the refused member's other hash moves nothing
  // With two more members of its schema it is the majority and the others are refused.
  ms.push_back(M(3, 5, ms[1].report.tensors));
  ms.push_back(M(4, 5, ms[1].report.tensors));
  d = Plan(ms, 4);
  EXPECT_EQ(d.plans[0].code, SHOAL_ERR_MISMATCH);
  EXPECT_EQ(d.plans[2].code, SHOAL_ERR_MISMATCH);
  EXPECT_EQ(d.plans[1].code, SHOAL_OK);
}

INSTANTIATE_TEST_SUITE_P(
    SyncPlanner, SchemaMismatch,
    ::testing::Values(
        SchemaCase{"name", [](std::vector<TensorReport>* s) { (*s)[3].name = "w2"; },
                   "shared state differs from the group's: tensor 3 is 'w2' f32[1024] here but "
                   "'w1' f32[1024] in the group"},
        SchemaCase{"dtype", [](std::vector<TensorReport>* s) { (*s)[2].dtype = SHOAL_BF16; },
                   "shared state differs from the group's: tensor 2 is 'b0' bf16[16] here but "
                   "'b0' f32[16] in the group"},
        SchemaCase{"count", [](std::vector<TensorReport>* s) { (*s)[0].count = 4096; },
                   "shared state differs from the group's: tensor 0 is 'w0' f32[4096] here but "
                   "'w0' f32[256] in the group"},
        SchemaCase{"flag", [](std::vector<TensorReport>* s) { (*s)[1].allow_divergence = true; },
                   "shared state differs from the group's: tensor 1 is 'empty' f32[0] with "
                   "allow_divergence here but 'empty' f32[0] in the group"},
        SchemaCase{"more",
                   [](std::vector<TensorReport>* s) { s->push_back(T("x", SHOAL_I8, 3, 0)); },
                   "shared state differs from the group's: it has 5 tensors here but 4 in the "
                   "group; tensor 4 is 'x' i8[3] here and missing in the group"},
        SchemaCase{"fewer", [](std::vector<TensorReport>* s) { s->resize(2); },
                   "shared state differs from the group's: it has 2 tensors here but 4 in the "
                   "group; tensor 2 is 'b0' f32[16] in the group and missing here"},
        SchemaCase{"none", [](std::vector<TensorReport>* s) { s->clear(); },
                   "shared state differs from the group's: it has 0 tensors here but 4 in the "
                   "group; tensor 0 is 'w0' f32[256] in the group and missing here"},
        SchemaCase{"order", [](std::vector<TensorReport>* s) { std::swap((*s)[0], (*s)[3]); },
                   "shared state differs from the group's: tensor 0 is 'w1' f32[1024] here but "
                   "'w0' f32[256] in the group"}),
    [](const ::testing::TestParamInfo<SchemaCase>& info) { return std::string(info.param.what); });

TEST(SyncPlanner, SchemaTieGoesToEarliestMember) {
  std::vector<TensorReport> x = SmallState();
  std::vector<TensorReport> y = SmallState();
  y[0].count = 1;
  SyncDecision d = Plan({M(0, 1, x), M(1, 1, y), M(2, 1, y), M(3, 1, x)}, 0);
  EXPECT_EQ(d.plans[0].code, SHOAL_OK);
  EXPECT_EQ(d.plans[3].code, SHOAL_OK);
  EXPECT_EQ(d.plans[1].code, SHOAL_ERR_MISMATCH);
  EXPECT_EQ(d.plans[2].code, SHOAL_ERR_MISMATCH);
  d = Plan({M(0, 1, y), M(1, 1, x), M(2, 1, x), M(3, 1, y)}, 0);
  EXPECT_EQ(d.plans[0].code, SHOAL_OK);
  EXPECT_EQ(d.plans[1].code, SHOAL_ERR_MISMATCH);
  // A schema held by more members wins even when it comes later.
  d = Plan({M(0, 1, y), M(1, 1, x), M(2, 1, x)}, 0);
  EXPECT_EQ(d.plans[0].code, SHOAL_ERR_MISMATCH);
  EXPECT_EQ(d.plans[1].code, SHOAL_OK);
}

TEST(SyncPlanner, SchemaVotesCountMembersThatAreAhead) {
  // Rule 1 comes before rule 2: the two members that are ahead still vote for their schema, which
  // wins 3 to 1; they are then refused for their revision, and member 3 is the only one admitted.
  std::vector<TensorReport> x = SmallState();
  std::vector<TensorReport> y = SmallState();
  y[1].name = "other";
  SyncDecision d = Plan({M(0, 4, x), M(1, 9, y), M(2, 9, y), M(3, 4, y), M(4, 9, x)}, 3);
  EXPECT_EQ(d.plans[0].code, SHOAL_ERR_MISMATCH);
  // Both ahead and of another schema: rule 1's refusal is the one it gets.
  EXPECT_EQ(d.plans[4].code, SHOAL_ERR_MISMATCH);
  EXPECT_EQ(d.plans[4].reason, d.plans[0].reason);
  EXPECT_EQ(d.plans[1].code, SHOAL_ERR_REVISION);
  EXPECT_EQ(d.plans[2].code, SHOAL_ERR_REVISION);
  EXPECT_EQ(d.plans[3].code, SHOAL_OK);
  EXPECT_EQ(d.revision, 4u);
}

TEST(SyncPlanner, HashTieGoesToEarliestUpToDateMember) {
  std::vector<MemberSyncReport> ms;
  for (std::size_t i = 0; i < 5; ++i) ms.push_back(M(i, 3, {T("w", SHOAL_F32, 10, 0)}));
  // Ring order: behind(a), b, a, a, b: the behind member does not vote; the tie between a and b
  // goes to b, held by member 1, the earliest up-to-date member.
  const std::uint64_t a = 7, b = 8;
  ms[0].report.revision = 2;
  for (std::size_t i = 0; i < 5; ++i) ms[i].report.tensors[0].hash = (i == 1 || i == 4) ? b : a;
  SyncDecision d = Plan(ms, 2);
  EXPECT_EQ(d.plans[0].expect, (std::vector<ExpectedHash>{{0, b}}));
  EXPECT_EQ(d.plans[2].expect, (std::vector<ExpectedHash>{{0, b}}));
  EXPECT_EQ(d.plans[3].expect, (std::vector<ExpectedHash>{{0, b}}));
  EXPECT_TRUE(d.plans[1].expect.empty());
  EXPECT_TRUE(d.plans[4].expect.empty());
}

TEST(SyncPlanner, HashMajorityTwoAgainstOne) {
  std::vector<MemberSyncReport> ms;
  for (std::size_t i = 0; i < 3; ++i) ms.push_back(M(i, 3, {T("w", SHOAL_F32, 10, 20)}));
  ms[0].report.tensors[0].hash = 19;
  SyncDecision d = Plan(ms, 2);
  EXPECT_EQ(d.plans[0].expect, (std::vector<ExpectedHash>{{0, 20}}));
  EXPECT_EQ(d.plans[0].recvs, (std::vector<TransferPiece>{{Id(1), 0, 0, 40}}));
  EXPECT_TRUE(d.plans[1].expect.empty());
  EXPECT_TRUE(d.plans[2].expect.empty());
}

TEST(SyncPlanner, EmptyTensorsNeverMove) {
  std::vector<MemberSyncReport> ms;
  for (std::size_t i = 0; i < 4; ++i) {
    ms.push_back(M(i, 2, {T("e", SHOAL_F64, 0, 10 + i), T("f", SHOAL_U8, 0, 1)}));
  }
  ms[3].report.revision = 0;
  SyncDecision d = Plan(ms, 1);
  EXPECT_TRUE(d.any_admitted);
  EXPECT_TRUE(NoPieces(d));
  EXPECT_EQ(d.bytes_moved, 0u);
}

TEST(SyncPlanner, PiecesMaxFallsBackToOnePiecePerTransfer) {
  // Three holders, one joiner, four tensors of 30 bytes that split in 3 with piece_bytes_min 10:
  // 12 receives for the joiner. With pieces_max 5 the plan is one piece per tensor: 4.
  std::vector<MemberSyncReport> ms;
  std::vector<TensorReport> state;
  for (int t = 0; t < 4; ++t) state.push_back(T("t" + std::to_string(t), SHOAL_U8, 30, 50 + t));
  for (std::size_t i = 0; i < 3; ++i) ms.push_back(M(i, 4, state));
  for (TensorReport& t : state) t.hash = 0;
  ms.push_back(M(3, 0, state));
  SyncDecision d = Plan(ms, 3, Config(10));
  EXPECT_EQ(d.plans[3].recvs.size(), 12u);
  d = Plan(ms, 3, Config(10, 12));
  EXPECT_EQ(d.plans[3].recvs.size(), 12u);  // exactly at the limit: no fallback
  d = Plan(ms, 3, Config(10, 5));
  ASSERT_TRUE(d.any_admitted);
  ASSERT_EQ(d.plans[3].recvs.size(), 4u);
  for (std::uint32_t t = 0; t < 4; ++t) {
    EXPECT_EQ(d.plans[3].recvs[t].tensor, t);
    EXPECT_EQ(d.plans[3].recvs[t].offset, 0u);
    EXPECT_EQ(d.plans[3].recvs[t].bytes, 30u);
  }
  // Load still spreads: senders 0, 1, 2, 0.
  EXPECT_EQ(d.plans[3].recvs[0].peer, Id(0));
  EXPECT_EQ(d.plans[3].recvs[1].peer, Id(1));
  EXPECT_EQ(d.plans[3].recvs[2].peer, Id(2));
  EXPECT_EQ(d.plans[3].recvs[3].peer, Id(0));
  EXPECT_EQ(d.bytes_moved, 120u);
  EXPECT_EQ(d.plans[3].expect.size(), 4u);
}

TEST(SyncPlanner, PiecesMaxStillExceededRefusesEveryone) {
  std::vector<MemberSyncReport> ms;
  std::vector<TensorReport> state;
  for (int t = 0; t < 4; ++t) state.push_back(T("t" + std::to_string(t), SHOAL_U8, 30, 50 + t));
  for (std::size_t i = 0; i < 3; ++i) ms.push_back(M(i, 4, state));
  std::vector<TensorReport> zero = state;
  for (TensorReport& t : zero) t.hash = 0;
  ms.push_back(M(3, 0, zero));
  std::vector<TensorReport> other = state;
  other[0].name = "different";
  ms.push_back(M(4, 4, other));  // refused by rule 1 and keeps that reason
  SyncDecision d = Plan(ms, 3, Config(10, 3));
  EXPECT_FALSE(d.any_admitted);
  EXPECT_EQ(d.revision, 0u);
  EXPECT_EQ(d.bytes_moved, 0u);
  for (std::size_t m = 0; m < 4; ++m) {
    EXPECT_EQ(d.plans[m].code, SHOAL_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(d.plans[m].reason,
              "the sync needs too many transfers: member 3 (peer 000000000000a003) would send "
              "and receive 4 pieces even with one piece per tensor and receiver (4 pieces in "
              "all), over the limit of 3 per member");
  }
  EXPECT_EQ(d.plans[4].code, SHOAL_ERR_MISMATCH);
  // pieces_max 0 refuses any sync that moves something, and none that moves nothing.
  d = Plan(ms, 3, Config(10, 0));
  EXPECT_FALSE(d.any_admitted);
  ms[3].report.tensors = state;
  d = Plan(ms, 3, Config(10, 0));
  EXPECT_TRUE(d.any_admitted);
}

TEST(SyncPlanner, PiecesMaxAboveTheWireLimitCountsAsIt) {
  SyncPlannerConfig c = Config();
  c.pieces_max = limits::kSyncPiecesMax + 1000;
  std::vector<MemberSyncReport> ms = {M(0, 1, SmallState()), M(1, 0, SmallState(5))};
  SyncDecision d = Plan(ms, 0, c);  // CheckInvariants checks the clamped limit
  EXPECT_TRUE(d.any_admitted);
}

TEST(SyncPlanner, ReasonsAreClipped) {
  // Names are at most 255 bytes on the wire; even much longer ones (multi-byte UTF-8) give a
  // reason within the limit that does not end inside a character.
  std::string name;
  for (int i = 0; i < 600; ++i) name += "\xc3\xa9";  // é
  std::vector<TensorReport> x = {T(name, SHOAL_F32, 1, 1)};
  std::vector<TensorReport> y = {T(name + "z", SHOAL_F32, 1, 1)};
  SyncDecision d = Plan({M(0, 1, x), M(1, 1, x), M(2, 1, y)}, 0);
  const std::string& r = d.plans[2].reason;
  EXPECT_LE(r.size(), limits::kDetailBytesMax);
  EXPECT_GT(r.size(), limits::kDetailBytesMax - 8);
  EXPECT_EQ(r.substr(r.size() - 3), "...");
  EXPECT_EQ(r.rfind(kMismatchHead, 0), 0u);
  const unsigned char before = static_cast<unsigned char>(r[r.size() - 4]);
  EXPECT_EQ(before, 0xa9) << "cut inside a UTF-8 sequence";
}

// ---------------------------------------------------------------------------------------------
// Seeded random inputs.

std::vector<MemberSyncReport> RandomMembers(std::mt19937_64& rng,
                                            std::optional<std::uint64_t> last) {
  auto pick = [&](std::uint64_t n) {
    return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(rng);
  };
  const std::size_t n = 1 + pick(pick(4) == 0 ? 40 : 8);
  const std::size_t tensors = pick(12);
  const std::uint64_t base = last.value_or(pick(20));
  std::vector<TensorReport> schema;
  for (std::size_t t = 0; t < tensors; ++t) {
    const std::uint64_t count = pick(5) == 0 ? 0 : pick(3) == 0 ? 1 + pick(7) : pick(5000);
    schema.push_back(T("t" + std::to_string(t), static_cast<shoal_dtype>(pick(SHOAL_DTYPE_COUNT)),
                       count, 0, pick(4) == 0));
  }
  const std::uint64_t hashes = 1 + pick(4);  // few distinct hashes: ties and majorities
  std::vector<MemberSyncReport> ms;
  for (std::size_t i = 0; i < n; ++i) {
    std::vector<TensorReport> s = schema;
    if (pick(8) == 0 && !s.empty()) s[pick(s.size())].count += 1;  // a schema mismatch
    if (pick(16) == 0) s.push_back(T("extra", SHOAL_U8, 1, 0));
    for (TensorReport& t : s) t.hash = pick(hashes);
    // Mostly at base + 1 or base, some behind, a few ahead.
    std::uint64_t revision = base + 1;
    const std::uint64_t r = pick(10);
    if (r < 3) revision = base;
    if (r == 3) revision = base > 3 ? base - 3 : 0;
    if (r == 4 && pick(3) == 0) revision = base + 2 + pick(3);
    ms.push_back(M(i, revision, std::move(s)));
  }
  return ms;
}

TEST(SyncPlanner, RandomizedInvariantsAndReference) {
  struct {
    int moved = 0, split = 0, fell_back = 0, mismatch = 0, ahead = 0, too_many = 0,
        none_admitted = 0;
  } seen;  // cases that reached each rule
  std::mt19937_64 rng(20240611);
  for (int iteration = 0; iteration < 600; ++iteration) {
    std::optional<std::uint64_t> last;
    if (rng() % 4 != 0) last = rng() % 10;
    std::vector<MemberSyncReport> ms = RandomMembers(rng, last);
    SyncPlannerConfig config;
    config.piece_bytes_min = std::uint64_t{1} << (rng() % 14);  // 1 B to 8 KiB: many splits
    config.pieces_max =
        rng() % 3 == 0 ? static_cast<std::uint32_t>(rng() % 40) : limits::kSyncPiecesMax;
    SyncDecision d = PlanSync(ms, last, config);
    CheckInvariants(ms, last, config, d, "iteration " + std::to_string(iteration));
    if (HasFatalFailure() || HasNonfatalFailure()) break;  // one case is enough to read
    const Reference ref = ReferencePlan(ms, last, config);
    std::set<shoal_status> codes;
    std::map<std::pair<std::size_t, std::uint32_t>, int> pieces;  // by (receiver, tensor)
    for (std::size_t m = 0; m < ms.size(); ++m) {
      codes.insert(d.plans[m].code);
      for (const TransferPiece& p : d.plans[m].recvs) pieces[{m, p.tensor}]++;
    }
    seen.moved += d.bytes_moved > 0;
    seen.split += std::any_of(pieces.begin(), pieces.end(), [](auto& e) { return e.second > 1; });
    seen.fell_back += ref.fell_back && d.any_admitted && d.bytes_moved > 0;
    seen.mismatch += codes.count(SHOAL_ERR_MISMATCH);
    seen.ahead += codes.count(SHOAL_ERR_REVISION);
    seen.too_many += codes.count(SHOAL_ERR_INVALID_ARGUMENT);
    seen.none_admitted += !d.any_admitted;
  }
  // The generator reaches every rule often enough for the comparison to mean something.
  EXPECT_GE(seen.moved, 200);
  EXPECT_GE(seen.split, 100);
  EXPECT_GE(seen.fell_back, 10);
  EXPECT_GE(seen.mismatch, 50);
  EXPECT_GE(seen.ahead, 20);
  EXPECT_GE(seen.too_many, 10);
  EXPECT_GE(seen.none_admitted, 10);
}

TEST(SyncPlanner, RandomizedManyDivergentHolders) {
  // Many up-to-date members with many distinct hashes, so some tensors are held by at most half
  // of them (the listed-holders path) and others by most (the walk).
  std::mt19937_64 rng(7);
  for (int iteration = 0; iteration < 100; ++iteration) {
    const std::size_t n = 10 + rng() % 30;
    std::vector<MemberSyncReport> ms;
    for (std::size_t i = 0; i < n; ++i) {
      std::vector<TensorReport> s;
      for (int t = 0; t < 6; ++t) {
        const std::uint64_t spread = 1 + t;  // tensor t has up to t+1 hashes
        s.push_back(T("t" + std::to_string(t), SHOAL_U8, 100 + 37 * t, rng() % spread, t % 2 == 1));
      }
      ms.push_back(M(i, rng() % 3 == 0 ? 1 : 2, std::move(s)));
    }
    SyncPlannerConfig config = Config(1 + rng() % 50);
    SyncDecision d = PlanSync(ms, 1, config);
    CheckInvariants(ms, 1, config, d, "iteration " + std::to_string(iteration));
    if (HasFatalFailure() || HasNonfatalFailure()) break;
  }
}

// ---------------------------------------------------------------------------------------------
// Size.

TEST(SyncPlanner, SmallPlansAreInstant) {
  // 4 members x 200 tensors, one joiner: planned 200 times well under a second.
  std::vector<TensorReport> state;
  for (int t = 0; t < 200; ++t) state.push_back(T("p" + std::to_string(t), SHOAL_F32, 1 << 18, t));
  std::vector<MemberSyncReport> ms;
  for (std::size_t i = 0; i < 3; ++i) ms.push_back(M(i, 8, state));
  for (TensorReport& t : state) t.hash += 1000;
  ms.push_back(M(3, 0, state));
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 200; ++i) {
    SyncDecision d = PlanSync(ms, 7, Config());
    ASSERT_EQ(d.plans[3].recvs.size(), 200u);
  }
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_LT(elapsed, std::chrono::seconds(1));
}

TEST(SyncPlanner, LargeGroupIsNotQuadratic) {
  // 256 members x 4096 tensors, half of them joiners with every tensor different, and a tensor
  // that every up-to-date member has its own version of. A quadratic vote or a scan of all
  // holders per range would take minutes; this takes about a second.
  constexpr std::size_t kMembers = 256, kTensors = 4096;
  std::vector<TensorReport> state;
  for (std::size_t t = 0; t < kTensors; ++t) {
    state.push_back(T("layer." + std::to_string(t), SHOAL_BF16, 4 << 20, t, t == 0));
  }
  std::vector<MemberSyncReport> ms;
  for (std::size_t i = 0; i < kMembers; ++i) {
    ms.push_back(M(i, i % 2 == 0 ? 10 : 0, state));
    if (i % 2 == 1) {
      for (TensorReport& t : ms.back().report.tensors) t.hash = ~t.hash;
    } else {
      ms.back().report.tensors[0].hash = 1000000 + i;
    }
  }
  const auto start = std::chrono::steady_clock::now();
  SyncDecision d = PlanSync(ms, 9, Config());
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_LT(elapsed, std::chrono::seconds(20));
  ASSERT_TRUE(d.any_admitted);
  // Every joiner gets every tensor; 8 MiB tensors with 8 MiB pieces: one piece each.
  for (std::size_t i = 1; i < kMembers; i += 2) ASSERT_EQ(d.plans[i].recvs.size(), kTensors);
  // Tensor 0 comes only from member 0 (every up-to-date member diverged; the earliest wins).
  for (std::size_t i = 1; i < kMembers; i += 2) ASSERT_EQ(d.plans[i].recvs[0].peer, Id(0));
  // The rest is spread evenly: 128 holders share 128 x 4095 pieces.
  for (std::size_t i = 2; i < kMembers; i += 2) {
    EXPECT_NEAR(static_cast<double>(d.plans[i].sends.size()), 4095.0, 2.0);
  }
  EXPECT_EQ(d.bytes_moved, std::uint64_t{128} * kTensors * (8 << 20));
}

}  // namespace
}  // namespace shoal::coord
