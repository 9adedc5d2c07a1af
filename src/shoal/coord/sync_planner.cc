// PlanSync: the rules of sync_planner.h, applied in their order.
//
// Vocabulary (the header's words, plus these):
// - ring index: a member's position in `members`. Every tie goes to the lower ring index.
// - shape: (name, dtype, count, allow_divergence) of one tensor; a schema is a list of shapes (the
//   hashes are not part of it). The reference schema is the elected one and "tensor t" is its t-th
//   entry; every admitted member has exactly that schema.
// - transfer: one (receiver, tensor) pair. It is cut into ranges; each range goes to one holder
//   and becomes one piece (in the sender's `sends` and the receiver's `recvs`).
// - load: the bytes a holder has been given to send so far in this plan. Rule 6 gives each range
//   to the holder with the lowest (load, ring index).
// - pass: one walk over all transfers in plan order (receivers in ring order, tensors in schema
//   order, ranges in offset order), either split (rule 6) or with one piece per transfer (the
//   fallback of rule 8). A pass feeds a sink, which builds the plans or only counts pieces.
//
// Splitting: a transfer of `bytes` in k ranges gets ranges of bytes / k bytes, the first
// bytes % k of them one byte more. k <= ceil(bytes / piece_bytes_min) <= bytes, so no range is
// empty.
//
// Finding the sender of each range without looking at every holder: a transfer in k ranges can
// only ever go to the k holders that are least loaded when the transfer starts. (Each range goes
// to the least loaded holder; a holder not given anything yet still has its starting load, so the
// next new holder chosen is always the least loaded of those not chosen yet. After k ranges at
// most k holders were chosen, and they are the first k in starting order.) So the planner finds
// those k candidates and runs the greedy among them in a small heap. It finds them either by
// walking all up-to-date members in (load, ring index) order and skipping those without the
// elected hash (cheap when most up-to-date members hold the tensor, the usual case), or, for a
// tensor held by at most half of them, by selecting among its listed holders.
//
// Cost, for M members, U up-to-date members, T tensors and P pieces: schema election O(M T) (a
// digest per schema; full comparisons only against a schema with the same digest); hash election
// O(U T) expected (a hash map per tensor, skipped when the up-to-date members agree); a pass
// O(M T + P log M) plus, per transfer, at most min(#holders, U - #holders) skipped members, which
// is only more than a few when up-to-date members diverge on a tensor.
#include "shoal/coord/sync_planner.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>

#include "shoal/common/check.h"
#include "shoal/common/dtype.h"
#include "shoal/common/hash.h"
#include "shoal/common/hex.h"

namespace shoal::coord {
namespace {

using net::TensorReport;

// (load, ring index): the order in which holders are given ranges.
using LoadKey = std::pair<std::uint64_t, std::uint32_t>;

// Sums of bytes cannot overflow with realistic states (2^64 bytes is 16 EiB), but the limits
// allow it in principle (1024 receivers x 8192 tensors x 2^43 bytes); saturating keeps the
// greedy and bytes_moved well defined.
std::uint64_t SaturatingAdd(std::uint64_t a, std::uint64_t b) {
  return a > std::numeric_limits<std::uint64_t>::max() - b
             ? std::numeric_limits<std::uint64_t>::max()
             : a + b;
}

std::uint64_t TensorBytes(const TensorReport& t) {
  const std::uint64_t element_bytes = DtypeBytes(t.dtype);
  SHOAL_CHECK_MSG(element_bytes != 0, "the codec admits only valid dtypes");
  SHOAL_CHECK_MSG(t.count <= std::numeric_limits<std::uint64_t>::max() / element_bytes,
                  "the codec bounds tensor counts");
  return t.count * element_bytes;
}

bool SameShape(const TensorReport& a, const TensorReport& b) {
  return a.name == b.name && a.dtype == b.dtype && a.count == b.count &&
         a.allow_divergence == b.allow_divergence;
}

bool SameSchema(const std::vector<TensorReport>& a, const std::vector<TensorReport>& b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), SameShape);
}

std::uint64_t Mix(std::uint64_t h, std::uint64_t v) {
  // A boost-style combine, then splitmix64's finaliser: enough to keep distinct schemas apart,
  // and a collision only costs one full comparison.
  std::uint64_t z = h ^ (v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::uint64_t SchemaDigest(const std::vector<TensorReport>& schema) {
  std::uint64_t h = Mix(0, schema.size());
  for (const TensorReport& t : schema) {
    h = Mix(h, ContentHash(t.name.data(), t.name.size()));
    h = Mix(h, static_cast<std::uint64_t>(t.dtype) << 1 | (t.allow_divergence ? 1 : 0));
    h = Mix(h, t.count);
  }
  return h;
}

// Reasons are human text of at most kDetailBytesMax bytes; a longer one is cut (not inside a
// UTF-8 sequence, since tensor names may be UTF-8) and ends with "...".
std::string Clip(std::string s) {
  if (s.size() <= limits::kDetailBytesMax) return s;
  std::size_t n = limits::kDetailBytesMax - 3;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  s.resize(n);
  return s + "...";
}

// 'w1' f32[128], with " with allow_divergence" when the flag is set.
std::string Describe(const TensorReport& t) {
  return "'" + t.name + "' " + DtypeName(t.dtype) + "[" + std::to_string(t.count) + "]" +
         (t.allow_divergence ? " with allow_divergence" : "");
}

std::string MismatchReason(const std::vector<TensorReport>& mine,
                           const std::vector<TensorReport>& group) {
  const std::string head = "shared state differs from the group's: ";
  const std::size_t common = std::min(mine.size(), group.size());
  for (std::size_t i = 0; i < common; ++i) {
    if (!SameShape(mine[i], group[i])) {
      return Clip(head + "tensor " + std::to_string(i) + " is " + Describe(mine[i]) + " here but " +
                  Describe(group[i]) + " in the group");
    }
  }
  SHOAL_CHECK_MSG(mine.size() != group.size(), "a refused schema differs from the reference");
  std::string counts = "it has " + std::to_string(mine.size()) + " tensors here but " +
                       std::to_string(group.size()) + " in the group; tensor " +
                       std::to_string(common) + " is ";
  if (mine.size() > group.size()) {
    return Clip(head + counts + Describe(mine[common]) + " here and missing in the group");
  }
  return Clip(head + counts + Describe(group[common]) + " in the group and missing here");
}

std::string AheadReason(std::uint64_t revision, std::uint64_t last_revision) {
  return Clip("revision " + std::to_string(revision) +
              " is ahead of the group: its last synced revision is " +
              std::to_string(last_revision) + " and revisions advance by one per sync");
}

// Sinks of a pass. Piece() returns false to stop the pass.

// Counts every member's pieces (sends plus receives) over a whole pass.
struct CountSink {
  std::vector<std::uint64_t> pieces;  // by ring index
  std::uint64_t total = 0;

  explicit CountSink(std::size_t members) : pieces(members, 0) {}
  void Expect(std::uint32_t, std::uint32_t, std::uint64_t) {}
  bool Piece(std::uint32_t sender, std::uint32_t receiver, std::uint32_t, std::uint64_t,
             std::uint64_t) {
    ++pieces[sender];
    ++pieces[receiver];
    ++total;
    return true;
  }
};

// Appends to the plans; stops as soon as some member's plan would exceed pieces_max.
struct BuildSink {
  const std::vector<MemberSyncReport>& members;
  std::vector<net::SyncPlan>& plans;
  std::uint64_t pieces_max;
  std::vector<std::uint64_t> pieces;  // by ring index
  std::uint64_t bytes_moved = 0;

  BuildSink(const std::vector<MemberSyncReport>& m, std::vector<net::SyncPlan>& p,
            std::uint64_t max)
      : members(m), plans(p), pieces_max(max), pieces(m.size(), 0) {}
  void Expect(std::uint32_t receiver, std::uint32_t tensor, std::uint64_t hash) {
    plans[receiver].expect.push_back(net::ExpectedHash{tensor, hash});
  }
  bool Piece(std::uint32_t sender, std::uint32_t receiver, std::uint32_t tensor,
             std::uint64_t offset, std::uint64_t bytes) {
    if (++pieces[sender] > pieces_max || ++pieces[receiver] > pieces_max) return false;
    plans[sender].sends.push_back(
        net::TransferPiece{members[receiver].peer, tensor, offset, bytes});
    plans[receiver].recvs.push_back(
        net::TransferPiece{members[sender].peer, tensor, offset, bytes});
    bytes_moved = SaturatingAdd(bytes_moved, bytes);
    return true;
  }
};

class Planner {
 public:
  Planner(const std::vector<MemberSyncReport>& members, std::optional<std::uint64_t> last_revision,
          const SyncPlannerConfig& config)
      : members_(members),
        last_revision_(last_revision),
        // 0 would mean "split without bound"; 1 byte is the finest split there is.
        piece_bytes_min_(std::max<std::uint64_t>(config.piece_bytes_min, 1)),
        // A plan with more pieces could not be decoded by the member.
        pieces_max_(std::min(config.pieces_max, limits::kSyncPiecesMax)) {}

  SyncDecision Plan() {
    SHOAL_CHECK_MSG(!members_.empty(), "PlanSync needs members");
    SHOAL_CHECK(members_.size() <= std::numeric_limits<std::uint32_t>::max());
    decision_.plans.resize(members_.size());
    for (std::size_t m = 0; m < members_.size(); ++m) {
      decision_.plans[m].epoch = members_[m].report.epoch;
      decision_.plans[m].seq = members_[m].report.seq;
    }
    ElectSchema();
    RefuseAhead();
    if (ElectRevision()) {
      ElectHashes();
      Transfer();
    }
    if (!decision_.any_admitted) {
      decision_.revision = 0;
      decision_.bytes_moved = 0;
    }
    for (net::SyncPlan& plan : decision_.plans) plan.revision = decision_.revision;
    return std::move(decision_);
  }

 private:
  std::uint32_t Size() const { return static_cast<std::uint32_t>(members_.size()); }
  const std::vector<TensorReport>& Schema(std::uint32_t m) const {
    return members_[m].report.tensors;
  }
  std::uint64_t Hash(std::uint32_t m, std::uint32_t t) const { return Schema(m)[t].hash; }
  bool Refused(std::uint32_t m) const { return decision_.plans[m].code != SHOAL_OK; }
  void Refuse(std::uint32_t m, shoal_status code, std::string reason) {
    net::SyncPlan& plan = decision_.plans[m];
    plan.code = code;
    plan.reason = Clip(std::move(reason));
    plan.expect.clear();
    plan.recvs.clear();
    plan.sends.clear();
  }

  // Rule 1. Members are grouped into classes of equal schemas, created in ring order, so the
  // lowest class index among the largest classes is the tie's winner.
  void ElectSchema() {
    struct Class {
      std::uint32_t first = 0;  // ring index of its earliest member
      std::uint32_t size = 0;
    };
    std::vector<Class> classes;
    std::vector<std::uint32_t> class_of(Size());
    std::unordered_map<std::uint64_t, std::vector<std::uint32_t>> by_digest;
    for (std::uint32_t m = 0; m < Size(); ++m) {
      std::vector<std::uint32_t>& candidates = by_digest[SchemaDigest(Schema(m))];
      auto same = std::find_if(candidates.begin(), candidates.end(), [&](std::uint32_t c) {
        return SameSchema(Schema(classes[c].first), Schema(m));
      });
      if (same == candidates.end()) {
        candidates.push_back(static_cast<std::uint32_t>(classes.size()));
        classes.push_back(Class{m, 0});
        same = candidates.end() - 1;
      }
      class_of[m] = *same;
      classes[*same].size++;
    }
    std::uint32_t elected = 0;
    for (std::uint32_t c = 1; c < classes.size(); ++c) {
      if (classes[c].size > classes[elected].size) elected = c;
    }
    reference_ = classes[elected].first;
    for (std::uint32_t m = 0; m < Size(); ++m) {
      if (class_of[m] != elected) {
        Refuse(m, SHOAL_ERR_MISMATCH, MismatchReason(Schema(m), Schema(reference_)));
      }
    }
  }

  // Rule 2.
  void RefuseAhead() {
    if (!last_revision_.has_value()) return;
    const std::uint64_t last = *last_revision_;
    for (std::uint32_t m = 0; m < Size(); ++m) {
      const std::uint64_t revision = members_[m].report.revision;
      if (!Refused(m) && revision > last && revision - last > 1) {
        Refuse(m, SHOAL_ERR_REVISION, AheadReason(revision, last));
      }
    }
  }

  // Rule 3. Returns false when every member is refused.
  bool ElectRevision() {
    admitted_.assign(Size(), false);
    up_to_date_.assign(Size(), false);
    for (std::uint32_t m = 0; m < Size(); ++m) {
      if (Refused(m)) continue;
      admitted_[m] = true;
      if (!decision_.any_admitted || members_[m].report.revision > decision_.revision) {
        decision_.revision = members_[m].report.revision;
      }
      decision_.any_admitted = true;
    }
    if (!decision_.any_admitted) return false;
    for (std::uint32_t m = 0; m < Size(); ++m) {
      if (admitted_[m] && members_[m].report.revision == decision_.revision) {
        up_to_date_[m] = true;
        up_to_date_list_.push_back(m);
      }
    }
    return true;
  }

  // Rule 4, and the holder lists of tensors held by at most half of the up-to-date members.
  void ElectHashes() {
    const std::vector<TensorReport>& schema = Schema(reference_);
    const auto tensors = static_cast<std::uint32_t>(schema.size());
    bytes_.resize(tensors);
    elected_.assign(tensors, 0);
    holders_begin_.assign(tensors + 1, 0);
    listed_.assign(tensors, false);
    const auto up_to_date = static_cast<std::uint32_t>(up_to_date_list_.size());
    holder_count_.assign(tensors, up_to_date);  // unless they disagree
    struct Tally {
      std::uint32_t votes = 0;
      std::uint32_t first = 0;  // ring index of its earliest up-to-date holder
    };
    std::unordered_map<std::uint64_t, Tally> tally;
    for (std::uint32_t t = 0; t < tensors; ++t) {
      holders_begin_[t] = static_cast<std::uint32_t>(holder_list_.size());
      bytes_[t] = TensorBytes(schema[t]);
      if (bytes_[t] == 0) continue;  // never moved: no election needed
      const std::uint64_t first_hash = Hash(up_to_date_list_.front(), t);
      bool unanimous = std::all_of(up_to_date_list_.begin(), up_to_date_list_.end(),
                                   [&](std::uint32_t m) { return Hash(m, t) == first_hash; });
      if (unanimous) {
        elected_[t] = first_hash;
        continue;  // every up-to-date member holds it: walked, not listed
      }
      tally.clear();
      for (std::uint32_t m : up_to_date_list_) {
        tally.try_emplace(Hash(m, t), Tally{0, m}).first->second.votes++;
      }
      auto best = tally.begin();
      for (auto it = tally.begin(); it != tally.end(); ++it) {
        if (it->second.votes > best->second.votes ||
            (it->second.votes == best->second.votes && it->second.first < best->second.first)) {
          best = it;
        }
      }
      elected_[t] = best->first;
      holder_count_[t] = best->second.votes;
      if (std::uint64_t{best->second.votes} * 2 <= up_to_date) {
        listed_[t] = true;
        for (std::uint32_t m : up_to_date_list_) {
          if (Hash(m, t) == elected_[t]) holder_list_.push_back(m);
        }
      }
    }
    holders_begin_[tensors] = static_cast<std::uint32_t>(holder_list_.size());
  }

  bool Holds(std::uint32_t m, std::uint32_t t) const {
    return up_to_date_[m] && Hash(m, t) == elected_[t];
  }

  // Rule 5.
  bool Receives(std::uint32_t m, std::uint32_t t) const {
    if (!admitted_[m] || bytes_[t] == 0 || Hash(m, t) == elected_[t]) return false;
    return !up_to_date_[m] || !Schema(reference_)[t].allow_divergence;
  }

  // Rule 6's k.
  std::uint32_t RangeCount(std::uint32_t t) const {
    const std::uint64_t ranges = bytes_[t] / piece_bytes_min_ + (bytes_[t] % piece_bytes_min_ != 0);
    return static_cast<std::uint32_t>(std::min<std::uint64_t>(holder_count_[t], ranges));
  }

  // Rule 8 (and the pass of rules 6 and 7).
  void Transfer() {
    {
      BuildSink split(members_, decision_.plans, pieces_max_);
      if (Pass(/*one_piece=*/false, split)) {
        decision_.bytes_moved = split.bytes_moved;
        return;
      }
    }
    for (std::uint32_t m = 0; m < Size(); ++m) {
      decision_.plans[m].expect.clear();
      decision_.plans[m].recvs.clear();
      decision_.plans[m].sends.clear();
    }
    CountSink count(Size());
    Pass(/*one_piece=*/true, count);
    const auto most = std::max_element(count.pieces.begin(), count.pieces.end());
    if (*most <= pieces_max_) {
      BuildSink whole(members_, decision_.plans, pieces_max_);
      SHOAL_CHECK_MSG(Pass(/*one_piece=*/true, whole), "a counted pass fits the limit");
      decision_.bytes_moved = whole.bytes_moved;
      return;
    }
    const auto m = static_cast<std::uint32_t>(most - count.pieces.begin());
    const std::string reason =
        "the sync needs too many transfers: member " + std::to_string(m) + " (peer " +
        Hex64(members_[m].peer) + ") would send and receive " + std::to_string(*most) +
        " pieces even with one piece per tensor and receiver (" + std::to_string(count.total) +
        " pieces in all), over the limit of " + std::to_string(pieces_max_) + " per member";
    // Members refused already keep their own reason: it is about them and stays true.
    for (std::uint32_t r = 0; r < Size(); ++r) {
      if (!Refused(r)) Refuse(r, SHOAL_ERR_INVALID_ARGUMENT, reason);
    }
    decision_.any_admitted = false;
  }

  // Walks every transfer in plan order and gives the sink its expected hash and pieces. Returns
  // false if the sink stopped it.
  template <typename Sink>
  bool Pass(bool one_piece, Sink& sink) {
    load_.assign(Size(), 0);
    by_load_.clear();
    for (std::uint32_t m : up_to_date_list_) by_load_.insert(LoadKey{0, m});
    const auto tensors = static_cast<std::uint32_t>(bytes_.size());
    for (std::uint32_t receiver = 0; receiver < Size(); ++receiver) {
      if (!admitted_[receiver]) continue;
      for (std::uint32_t t = 0; t < tensors; ++t) {
        if (!Receives(receiver, t)) continue;
        sink.Expect(receiver, t, elected_[t]);
        if (!Split(receiver, t, one_piece ? 1 : RangeCount(t), sink)) return false;
      }
    }
    return true;
  }

  // Cuts one transfer into `ranges` ranges and gives each to the least loaded holder.
  template <typename Sink>
  bool Split(std::uint32_t receiver, std::uint32_t t, std::uint32_t ranges, Sink& sink) {
    SHOAL_CHECK(ranges >= 1);
    LeastLoadedHolders(t, ranges, &candidates_);
    const std::uint64_t base = bytes_[t] / ranges;
    const std::uint64_t longer = bytes_[t] % ranges;  // the first ones get one byte more
    std::uint64_t offset = 0;
    for (std::uint32_t r = 0; r < ranges; ++r) {
      const std::uint64_t bytes = base + (r < longer ? 1 : 0);
      std::pop_heap(candidates_.begin(), candidates_.end(), std::greater<LoadKey>());
      LoadKey& sender = candidates_.back();
      SHOAL_CHECK_MSG(sender.second != receiver, "a holder never receives its own tensor");
      if (!sink.Piece(sender.second, receiver, t, offset, bytes)) return false;
      sender.first = SaturatingAdd(sender.first, bytes);
      std::push_heap(candidates_.begin(), candidates_.end(), std::greater<LoadKey>());
      offset += bytes;
    }
    SHOAL_CHECK(offset == bytes_[t]);
    for (const LoadKey& key : candidates_) SetLoad(key.second, key.first);
    return true;
  }

  // The `k` holders of tensor t with the lowest (load, ring index), as a min-heap.
  void LeastLoadedHolders(std::uint32_t t, std::uint32_t k, std::vector<LoadKey>* out) const {
    out->clear();
    if (listed_[t]) {
      for (std::uint32_t i = holders_begin_[t]; i < holders_begin_[t + 1]; ++i) {
        out->push_back(LoadKey{load_[holder_list_[i]], holder_list_[i]});
      }
      if (k < out->size()) {
        std::nth_element(out->begin(), out->begin() + k, out->end());
        out->resize(k);
      }
    } else {
      for (auto it = by_load_.begin(); out->size() < k; ++it) {
        SHOAL_CHECK_MSG(it != by_load_.end(), "a tensor has at least k holders");
        if (Holds(it->second, t)) out->push_back(*it);
      }
    }
    SHOAL_CHECK(out->size() == k);
    std::make_heap(out->begin(), out->end(), std::greater<LoadKey>());
  }

  void SetLoad(std::uint32_t m, std::uint64_t load) {
    if (load == load_[m]) return;
    // Moving the node rather than erasing and inserting saves an allocation per piece.
    auto node = by_load_.extract(LoadKey{load_[m], m});
    SHOAL_CHECK(!node.empty());
    node.value().first = load;
    by_load_.insert(std::move(node));
    load_[m] = load;
  }

  const std::vector<MemberSyncReport>& members_;
  const std::optional<std::uint64_t> last_revision_;
  const std::uint64_t piece_bytes_min_;
  const std::uint64_t pieces_max_;

  SyncDecision decision_;
  std::uint32_t reference_ = 0;                 // a member with the reference schema
  std::vector<bool> admitted_;                  // by ring index
  std::vector<bool> up_to_date_;                // by ring index
  std::vector<std::uint32_t> up_to_date_list_;  // ring order

  // By tensor of the reference schema.
  std::vector<std::uint64_t> bytes_;
  std::vector<std::uint64_t> elected_;
  std::vector<std::uint32_t> holder_count_;
  std::vector<bool> listed_;                  // holders are in holder_list_
  std::vector<std::uint32_t> holders_begin_;  // tensor t's are [begin[t], begin[t + 1])
  std::vector<std::uint32_t> holder_list_;

  // State of a pass.
  std::vector<std::uint64_t> load_;  // by ring index
  std::set<LoadKey> by_load_;        // every up-to-date member
  std::vector<LoadKey> candidates_;
};

}  // namespace

SyncDecision PlanSync(const std::vector<MemberSyncReport>& members,
                      std::optional<std::uint64_t> last_revision, const SyncPlannerConfig& config) {
  return Planner(members, last_revision, config).Plan();
}

}  // namespace shoal::coord
