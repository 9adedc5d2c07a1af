// Fuzz target: PlanSync (coord/sync_planner.h), the election and transfer plan of a shared-state
// sync, over member reports built from the input (sync_planner_input.h): reports decoded off the
// wire, copies of another member's report with small changes (so schemas and hashes agree often
// enough to elect and move something), and reports made from a few bytes.
//
// The plan is checked against the header's rules as this file restates them, independently of
// the planner's own code:
// - Shape: one plan per member with its report's epoch and seq, every plan with the decision's
//   revision; a refused plan has a code, a reason of 1 to kDetailBytesMax bytes and nothing else;
//   at most min(pieces_max, kSyncPiecesMax) pieces per plan; no empty piece; expected hashes in
//   strictly increasing tensor order; bytes_moved is the sum of the pieces; nothing admitted means
//   revision 0 and nothing moved.
// - Rules 1 and 2: the members whose schema is not the most common one (ties: earliest) are
//   refused with MISMATCH, those ahead of last revision + 1 with REVISION; the others are admitted
//   unless rule 8 refuses everyone (INVALID_ARGUMENT). E is the highest admitted revision.
// - Rules 4 and 5, per tensor of the reference schema: the elected hash is the most common among
//   members at E (ties: earliest); exactly the admitted members that must receive it (hash differs,
//   behind or not allowed to diverge, tensor not empty) expect it, once, with that hash.
// - Coverage: every receiver's pieces of a tensor cover its bytes exactly once; each comes from a
//   member at E that holds the elected hash; rule 6's split: per (receiver, tensor)
//   k = min(#holders, ceil(bytes / piece_bytes_min)) ranges of nearly equal size in offset order,
//   or (rule 8's fallback) one range for every transfer of the plan.
// - Pairs: the pieces a sender sends to a receiver are, in the same order, the pieces that
//   receiver receives from that sender.
// - Every plan fits one SyncPlan: it encodes, decodes, and re-encodes to the same bytes.
// - Determinism: a second call gives the same plans.
#include <algorithm>
#include <map>
#include <set>

#include "fuzz_support.h"
#include "sync_planner_input.h"
#include "wire_rules.h"

namespace shoal::fuzz {
namespace {

using coord::MemberSyncReport;
using coord::SyncDecision;
using net::SyncPlan;
using net::TensorReport;
using net::TransferPiece;

std::string Str(std::uint64_t v) { return std::to_string(v); }

std::uint64_t BytesOf(const TensorReport& t) { return t.count * DtypeBytes(t.dtype); }

bool SameShapes(const std::vector<TensorReport>& a, const std::vector<TensorReport>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); i++) {
    const bool same = a[i].name == b[i].name && a[i].dtype == b[i].dtype &&
                      a[i].count == b[i].count && a[i].allow_divergence == b[i].allow_divergence;
    if (!same) return false;
  }
  return true;
}

std::vector<std::uint8_t> Encoded(const SyncPlan& p) {
  std::vector<std::uint8_t> b;
  net::Encode(p, &b);
  return b;
}

class PlanCheck {
 public:
  PlanCheck(const sync_planner_input::Case& c, const SyncDecision& d)
      : ms_(c.members), last_(c.last_revision), config_(c.config), d_(d) {}

  void Run() {
    FUZZ_REQUIRE(d_.plans.size() == ms_.size(), "one plan per member");
    ElectSchema();
    Admission();
    for (std::size_t m = 0; m < ms_.size(); m++) Shape(m);
    if (!any_admitted_) return;
    ElectHashes();
    Transfers();
    Pairs();
  }

 private:
  // Rule 1, by counting: the schema most members hold, the earliest on a tie.
  void ElectSchema() {
    std::size_t best_votes = 0;
    for (std::size_t m = 0; m < ms_.size(); m++) {
      std::size_t votes = 0;
      for (const MemberSyncReport& o : ms_) votes += SameShapes(o.report.tensors, Tensors(m));
      if (votes > best_votes) {
        best_votes = votes;
        schema_of_ = m;
      }
    }
  }

  const std::vector<TensorReport>& Tensors(std::size_t m) const { return ms_[m].report.tensors; }

  // Rules 1, 2, 3 and 8: who is refused and why; E.
  void Admission() {
    bool fallback_refusal = false;
    for (std::size_t m = 0; m < ms_.size(); m++) {
      const SyncPlan& p = d_.plans[m];
      const std::uint64_t rev = ms_[m].report.revision;
      shoal_status want = SHOAL_OK;
      if (!SameShapes(Tensors(m), Tensors(schema_of_))) {
        want = SHOAL_ERR_MISMATCH;
      } else if (last_ && rev > *last_ && rev - *last_ > 1) {
        want = SHOAL_ERR_REVISION;
      }
      if (want == SHOAL_OK && p.code == SHOAL_ERR_INVALID_ARGUMENT) {
        fallback_refusal = true;
        continue;
      }
      FUZZ_REQUIRE(p.code == want,
                   "member " + Str(m) + " has code " + Str(p.code) + ", rules say " + Str(want));
      if (want == SHOAL_OK) {
        admitted_.push_back(m);
        e_ = std::max(e_, rev);
      }
    }
    if (fallback_refusal) {
      FUZZ_REQUIRE(admitted_.empty(), "rule 8 refused some admitted members but not all");
    }
    any_admitted_ = !admitted_.empty();
    FUZZ_REQUIRE(d_.any_admitted == any_admitted_, "any_admitted differs from the plans");
    if (any_admitted_) {
      FUZZ_REQUIRE(d_.revision == e_, "revision " + Str(d_.revision) + " is not E = " + Str(e_));
    } else {
      FUZZ_REQUIRE(d_.revision == 0 && d_.bytes_moved == 0, "nothing admitted, yet a revision");
    }
  }

  void Shape(std::size_t m) {
    const SyncPlan& p = d_.plans[m];
    FUZZ_REQUIRE(p.epoch == ms_[m].report.epoch && p.seq == ms_[m].report.seq,
                 "plan epoch or seq differs from the report's");
    FUZZ_REQUIRE(p.revision == d_.revision, "plans disagree on the revision");
    const std::string rule = BrokenRule(p);
    FUZZ_REQUIRE(rule.empty(), "plan breaks the wire format: " + rule);
    const std::vector<std::uint8_t> bytes = Encoded(p);
    net::Message back;
    FUZZ_REQUIRE(net::DecodeFrame(bytes.data(), bytes.size(), &back).ok(),
                 "a plan does not fit one SyncPlan");
    FUZZ_REQUIRE(Encoded(std::get<SyncPlan>(back)) == bytes, "a plan does not survive the wire");
    const std::uint64_t pieces_max =
        std::min<std::uint64_t>(config_.pieces_max, limits::kSyncPiecesMax);
    FUZZ_REQUIRE(p.sends.size() + p.recvs.size() <= pieces_max, "more pieces than pieces_max");
    if (p.code != SHOAL_OK) {
      FUZZ_REQUIRE(!p.reason.empty() && p.reason.size() <= limits::kDetailBytesMax,
                   "a refusal without a reason, or a reason too long");
      FUZZ_REQUIRE(p.expect.empty() && p.sends.empty() && p.recvs.empty(), "refusal with pieces");
      return;
    }
    FUZZ_REQUIRE(p.reason.empty(), "an admitted plan with a reason");
    for (std::size_t i = 1; i < p.expect.size(); i++) {
      FUZZ_REQUIRE(p.expect[i - 1].tensor < p.expect[i].tensor, "expected hashes out of order");
    }
  }

  // Rule 4: per tensor, the hash most members at E hold, the earliest on a tie.
  void ElectHashes() {
    const std::size_t tensors = Tensors(schema_of_).size();
    elected_.assign(tensors, 0);
    for (std::size_t t = 0; t < tensors; t++) {
      std::size_t best = 0;
      for (std::size_t a : admitted_) {
        if (ms_[a].report.revision != e_) continue;
        std::size_t votes = 0;
        for (std::size_t b : admitted_) {
          votes += ms_[b].report.revision == e_ && Tensors(b)[t].hash == Tensors(a)[t].hash;
        }
        if (votes > best) {
          best = votes;
          elected_[t] = Tensors(a)[t].hash;
        }
      }
    }
  }

  bool Holds(std::size_t m, std::size_t t) const {
    return d_.plans[m].code == SHOAL_OK && ms_[m].report.revision == e_ &&
           Tensors(m)[t].hash == elected_[t];
  }

  std::size_t RingIndex(PeerId peer) const {
    for (std::size_t m = 0; m < ms_.size(); m++) {
      if (ms_[m].peer == peer) return m;
    }
    FUZZ_REQUIRE(false, "piece names peer " + Str(peer) + ", not a member");
    return 0;
  }

  // Rules 5 and 6, and the coverage of every received tensor.
  void Transfers() {
    const std::vector<TensorReport>& schema = Tensors(schema_of_);
    std::uint64_t moved = 0;
    int split_shape = 0;      // transfers rule 6 cuts in k > 1 ranges, cut so
    int one_piece_shape = 0;  // such transfers in one range (rule 8's fallback)
    for (std::size_t r : admitted_) {
      const SyncPlan& p = d_.plans[r];
      std::map<std::uint32_t, std::uint64_t> expect;
      for (const net::ExpectedHash& e : p.expect) expect[e.tensor] = e.hash;
      std::map<std::uint32_t, std::vector<TransferPiece>> by_tensor;
      for (const TransferPiece& x : p.recvs) {
        FUZZ_REQUIRE(x.bytes > 0, "empty piece");
        by_tensor[x.tensor].push_back(x);
        moved += x.bytes;
      }
      for (std::size_t t = 0; t < schema.size(); t++) {
        const std::uint64_t bytes = BytesOf(schema[t]);
        const bool behind = ms_[r].report.revision < e_;
        const bool receives = bytes > 0 && Tensors(r)[t].hash != elected_[t] &&
                              (behind || !schema[t].allow_divergence);
        const auto tt = static_cast<std::uint32_t>(t);
        FUZZ_REQUIRE(receives == (expect.count(tt) != 0),
                     "member " + Str(r) + (receives ? " does not expect" : " expects") +
                         " tensor " + Str(t));
        FUZZ_REQUIRE(receives == (by_tensor.count(tt) != 0),
                     "member " + Str(r) + " pieces of tensor " + Str(t) + " against rule 5");
        if (!receives) continue;
        FUZZ_REQUIRE(expect[tt] == elected_[t], "expected hash is not the elected one");
        std::vector<TransferPiece>& pieces = by_tensor[tt];
        std::sort(pieces.begin(), pieces.end(), [](const TransferPiece& a, const TransferPiece& b) {
          return a.offset < b.offset;
        });
        std::uint64_t end = 0;
        for (const TransferPiece& x : pieces) {
          FUZZ_REQUIRE(x.offset == end, "tensor " + Str(t) + " of member " + Str(r) +
                                            ": gap or overlap at " + Str(end));
          end += x.bytes;
          FUZZ_REQUIRE(Holds(RingIndex(x.peer), t), "a sender does not hold the elected hash");
        }
        FUZZ_REQUIRE(end == bytes, "tensor " + Str(t) + " of member " + Str(r) + " not covered");
        const std::uint64_t k = SplitOf(bytes, t);
        FUZZ_REQUIRE((pieces.size() == k && EvenRanges(pieces, k)) || pieces.size() == 1,
                     "tensor cut in " + Str(pieces.size()) + " ranges, rule 6 says " + Str(k));
        if (k > 1) (pieces.size() == k ? split_shape : one_piece_shape)++;
      }
      for (const auto& [t, list] : by_tensor) {
        FUZZ_REQUIRE(t < schema.size(), "piece of a tensor outside the schema");
      }
    }
    FUZZ_REQUIRE(split_shape == 0 || one_piece_shape == 0,
                 "some transfers split by rule 6, others by rule 8's fallback");
    FUZZ_REQUIRE(d_.bytes_moved == moved, "bytes_moved is not the sum of the pieces");
  }

  std::uint64_t SplitOf(std::uint64_t bytes, std::size_t t) const {
    std::uint64_t holders = 0;
    for (std::size_t m : admitted_) holders += Holds(m, t);
    const std::uint64_t unit = std::max<std::uint64_t>(config_.piece_bytes_min, 1);
    return std::min(holders, bytes / unit + (bytes % unit != 0));
  }

  // bytes / k each, the first bytes % k one more (pieces sorted by offset).
  static bool EvenRanges(const std::vector<TransferPiece>& pieces, std::uint64_t k) {
    std::uint64_t bytes = 0;
    for (const TransferPiece& x : pieces) bytes += x.bytes;
    for (std::uint64_t i = 0; i < pieces.size(); i++) {
      if (pieces[i].bytes != bytes / k + (i < bytes % k)) return false;
    }
    return true;
  }

  // Rule 7: both ends of a pair list the same pieces in the same order.
  void Pairs() {
    for (std::size_t s = 0; s < ms_.size(); s++) {
      for (std::size_t r = 0; r < ms_.size(); r++) {
        std::vector<TransferPiece> sent, got;
        for (TransferPiece x : d_.plans[s].sends) {
          if (x.peer != ms_[r].peer) continue;
          x.peer = 0;
          sent.push_back(x);
        }
        for (TransferPiece x : d_.plans[r].recvs) {
          if (x.peer != ms_[s].peer) continue;
          x.peer = 0;
          got.push_back(x);
        }
        FUZZ_REQUIRE(sent == got, "sender " + Str(s) + " and receiver " + Str(r) + " disagree");
      }
    }
    for (std::size_t m = 0; m < ms_.size(); m++) {
      for (const TransferPiece& x : d_.plans[m].sends) RingIndex(x.peer);
      for (const TransferPiece& x : d_.plans[m].recvs) {
        FUZZ_REQUIRE(x.peer != ms_[m].peer, "a member receives from itself");
      }
    }
  }

  const std::vector<MemberSyncReport>& ms_;
  const std::optional<std::uint64_t> last_;
  const coord::SyncPlannerConfig config_;
  const SyncDecision& d_;
  std::size_t schema_of_ = 0;
  std::vector<std::size_t> admitted_;
  bool any_admitted_ = false;
  std::uint64_t e_ = 0;
  std::vector<std::uint64_t> elected_;
};

}  // namespace
}  // namespace shoal::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace shoal;
  fuzz::Input in(data, size);
  const fuzz::sync_planner_input::Case c = fuzz::sync_planner_input::Read(in);
  const coord::SyncDecision d = coord::PlanSync(c.members, c.last_revision, c.config);
  fuzz::PlanCheck(c, d).Run();
  const coord::SyncDecision again = coord::PlanSync(c.members, c.last_revision, c.config);
  FUZZ_REQUIRE(again.revision == d.revision && again.bytes_moved == d.bytes_moved,
               "a second PlanSync decided otherwise");
  for (std::size_t m = 0; m < d.plans.size(); m++) {
    FUZZ_REQUIRE(fuzz::Encoded(again.plans[m]) == fuzz::Encoded(d.plans[m]),
                 "a second PlanSync planned otherwise");
  }
  return 0;
}
