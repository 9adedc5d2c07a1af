#include "tools/chaos/checker.h"

#include <algorithm>
#include <cinttypes>

#include "shoal/types.h"

namespace shoal::chaos {
namespace {

// A failure the caller's own deadline ended without a verdict (docs/protocol.md, "Collectives" 7):
// the one outcome a member may see without the others.
bool IsLocalVerdictLoss(int status) { return status == SHOAL_ERR_COORDINATOR_LOST; }

// The coordinator refuses a sync member whose state cannot join the election; it leaves the epoch
// while the others' sync commits.
bool IsRefusal(int status) { return status == SHOAL_ERR_REVISION || status == SHOAL_ERR_MISMATCH; }

std::string KeyText(std::uint64_t epoch, std::uint64_t tag, std::uint64_t seq) {
  return "epoch=" + std::to_string(epoch) +
         " tag=" + (tag == kSyncTag ? std::string("sync") : std::to_string(tag)) +
         " seq=" + std::to_string(seq);
}

}  // namespace

Checker::Checker(std::uint64_t large_count, std::FILE* log, AffectedFn affected, TimeMs window_ms)
    : large_count_(large_count),
      specs_(StepOps(large_count)),
      log_(log),
      affected_(std::move(affected)),
      window_ms_(window_ms) {}

void Checker::OnLine(int proc, const RecordLine& line) {
  if (line.word == "HELLO") {
    peer_of_[proc] = line.Hex("peer");
    if (line.Has("rev")) held_[proc] = line.U64("rev");
  } else if (line.word == "CREATE") {
    counts_.creates_failed++;
  } else if (line.word == "UT") {
    const int status = static_cast<int>(line.I64("status"));
    if (status == SHOAL_OK) {
      counts_.ut_ok++;
    } else if (status == SHOAL_ERR_TIMEOUT) {
      counts_.ut_timeout++;
    } else {
      counts_.ut_error++;
    }
  } else if (line.word == "OP") {
    OnOp(proc, line);
  } else if (line.word == "STEP") {
    OnStep(proc, line);
  }
}

void Checker::Log(const char* kind, const OpKey& key, const Report& a, const Report* b) {
  auto one = [](const Report& r) {
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "p%d(peer %016" PRIx64 ") status=%d lost=%016" PRIx64 " hash=%016" PRIx64
                  " rev=%" PRIu64 " state=%016" PRIx64 " n=%zu t0=%" PRId64 " t1=%" PRId64,
                  r.proc, r.peer, r.status, r.lost, r.hash, r.revision, r.state, r.members.size(),
                  r.t0, r.t1);
    return std::string(buf);
  };
  std::fprintf(log_, "%s %s: %s%s%s\n", kind,
               KeyText(std::get<0>(key), std::get<1>(key), std::get<2>(key)).c_str(),
               one(a).c_str(), b ? " vs " : "", b ? one(*b).c_str() : "");
  std::fflush(log_);
}

void Checker::OnOp(int proc, const RecordLine& line) {
  Report r;
  r.proc = proc;
  r.peer = peer_of_.count(proc) ? peer_of_[proc] : 0;
  r.members = line.HexList("members");
  r.status = static_cast<int>(line.I64("status"));
  r.lost = line.Hex("lost");
  r.hash = line.Hex("hash");
  r.state = line.Hex("state");
  r.revision = line.U64("rev");
  r.t0 = line.I64("t0");
  r.t1 = line.I64("t1");
  const bool sync = line.Get("kind") == "sync";
  const std::uint64_t epoch = line.U64("epoch");
  const OpKey key{epoch, sync ? kSyncTag : line.U64("tag"), line.U64("seq")};
  epoch_max_ = std::max(epoch_max_, epoch);
  if (r.status == SHOAL_OK) {
    counts_.calls_ok++;
  } else {
    counts_.calls_failed++;
    counts_.failures_by_code[r.status]++;
  }
  Op& op = ops_[key];
  if (sync && r.status == SHOAL_OK) {
    const std::uint64_t rx = line.U64("rx");
    if (rx > 0) {
      counts_.joiner_syncs++;
      counts_.rx_bytes += static_cast<std::int64_t>(rx);
    }
    // The group's revision only grows, unless it lost every holder (see the file comment).
    if (r.revision < revision_max_ && !reset_checked_.count(epoch)) {
      reset_checked_.insert(epoch);
      bool older_higher = false;
      for (const auto& [e, rev] : revision_by_epoch_) {
        if (e < epoch && rev > r.revision) older_higher = true;
      }
      if (older_higher) {
        counts_.lineage_resets++;
        reset_epochs_.insert(epoch);
        Log("LINEAGE-RESET (the group went on from revision below its highest; every holder gone?)",
            key, r, nullptr);
      }
    }
    // A member never goes back (see the file comment).
    const auto held = held_.find(proc);
    if (held != held_.end() && r.revision < held->second) {
      counts_.divergent_states++;
      std::fprintf(
          log_, "DIVERGENCE %s: p%d's sync took it from revision %" PRIu64 " back to %" PRIu64 "\n",
          KeyText(epoch, kSyncTag, std::get<2>(key)).c_str(), proc, held->second, r.revision);
      std::fflush(log_);
    }
    held_[proc] = r.revision;
    auto& rev = revision_by_epoch_[epoch];
    rev = std::max(rev, r.revision);
    revision_max_ = std::max(revision_max_, r.revision);
    // One sync's members are compared with each other in Compare; its first success stands for
    // it against other syncs and steps.
    if (!op.any_ok) {
      CheckCanon(r.revision, r.state, epoch, "sync " + KeyText(epoch, kSyncTag, std::get<2>(key)));
    }
  }
  Compare(key, &op, r);
  op.reports.push_back(std::move(r));
  op.last_ms = op.reports.back().t1;
}

void Checker::Compare(const OpKey& key, Op* op, const Report& r) {
  const bool sync = std::get<1>(key) == kSyncTag;
  if (r.status == SHOAL_OK) {
    op->any_ok = true;
    if (!sync) CheckReference(key, op, r);
  }
  // Counts a violation or an exception once per op and kind, and describes it.
  auto flag = [&](Flag f, std::int64_t* counter, const char* what, const Report& a,
                  const Report& b) {
    if (op->flagged[f]) return;
    op->flagged[f] = true;
    (*counter)++;
    Log(what, key, a, &b);
  };
  for (const Report& o : op->reports) {
    if (!r.members.empty() && !o.members.empty() && r.members != o.members) {
      flag(kFlagMembers, &counts_.divergent_members, "DIVERGENCE member lists differ", r, o);
    }
    if (r.status == SHOAL_OK && o.status == SHOAL_OK) {
      const bool same = sync ? (r.revision == o.revision && r.state == o.state) : r.hash == o.hash;
      if (!same && sync) {
        flag(kFlagBits, &counts_.divergent_states, "DIVERGENCE sync states differ", r, o);
      } else if (!same) {
        flag(kFlagBits, &counts_.divergent_results, "DIVERGENCE result bits differ", r, o);
      }
      continue;
    }
    if (r.status == o.status && r.lost == o.lost) continue;
    // The peer the others lost sees its own end (a SIGSTOPped or cut-off peer), not the verdict.
    if (r.status != SHOAL_OK && o.status != SHOAL_OK && (r.peer == o.lost || o.peer == r.lost)) {
      continue;
    }
    // Two failures differ, or one member succeeded where another failed. `odd` is the report that
    // may be a documented exception (see the file comment).
    const Report& odd = (r.status == SHOAL_ERR_NOT_MEMBER || IsLocalVerdictLoss(r.status) ||
                         (sync && IsRefusal(r.status)))
                            ? r
                            : o;
    const Report& other = &odd == &r ? o : r;
    const bool near_fault = affected_(odd.proc, odd.t0 - window_ms_, odd.t1);
    if (sync && IsRefusal(odd.status)) {
      flag(kFlagRefusal, &counts_.refusals, "EXCEPTION sync member refused", odd, other);
      continue;
    }
    if (odd.status == SHOAL_ERR_NOT_MEMBER) {
      if (near_fault) {
        flag(kFlagDropped, &counts_.dropped_member_splits,
             "EXCEPTION a member dropped during the op (a fault touched it)", odd, other);
      } else {
        flag(kFlagOutcome, &counts_.outcome_splits,
             "DIVERGENCE a member removed during the op with no fault near it", odd, other);
      }
      continue;
    }
    if (IsLocalVerdictLoss(odd.status)) {
      if (near_fault) {
        flag(kFlagCoordLost, &counts_.coordinator_lost_splits,
             "EXCEPTION no verdict within deadline + grace (a fault touched it)", odd, other);
      } else {
        flag(kFlagOutcome, &counts_.outcome_splits,
             "DIVERGENCE no verdict within deadline + grace with no fault near it", odd, other);
      }
      continue;
    }
    if (r.status != SHOAL_OK && o.status != SHOAL_OK) {
      flag(kFlagReason, &counts_.reason_splits, "DIVERGENCE failures differ", r, o);
      continue;
    }
    flag(kFlagOutcome, &counts_.outcome_splits, "DIVERGENCE one member succeeded, another failed",
         r, o);
  }
}

void Checker::CheckReference(const OpKey& key, Op* op, const Report& r) {
  // The reference is computed once per op; every success is compared with it, so a member with
  // wrong bits is a wrong result whether or not its report came first.
  if (!op->reference_known) {
    op->reference_known = true;
    const std::uint64_t tag = std::get<1>(key);
    const OpSpec* spec = nullptr;
    for (const OpSpec& s : specs_)
      if (s.tag == tag) spec = &s;
    if (spec != nullptr && !r.members.empty() && r.members.size() <= kMembersExactMax) {
      const std::vector<std::uint8_t> want =
          Reference(*spec, std::get<0>(key), std::get<2>(key), r.members);
      op->reference = HashBytes(want.data(), want.size());
      op->reference_valid = true;
    }
  }
  if (op->flagged[kFlagReference]) return;
  if (!op->reference_valid) {
    op->flagged[kFlagReference] = true;
    counts_.wrong_results++;
    Log("WRONG unknown tag or member list", key, r, nullptr);
  } else if (op->reference != r.hash) {
    op->flagged[kFlagReference] = true;
    counts_.wrong_results++;
    Log("WRONG result differs from the reference of the members' inputs", key, r, nullptr);
  }
}

void Checker::OnStep(int proc, const RecordLine& line) {
  const std::uint64_t epoch = line.U64("epoch");
  const std::uint64_t revision = line.U64("rev");
  step_times_.emplace_back(line.I64("t0"), line.I64("t1"));
  held_[proc] = revision;
  if (!step_keys_.count({epoch, revision})) {
    step_keys_[{epoch, revision}] = true;
    counts_.steps++;
  }
  auto& rev = revision_by_epoch_[epoch];
  rev = std::max(rev, revision);
  revision_max_ = std::max(revision_max_, revision);
  CheckCanon(revision, line.Hex("state"), epoch,
             "step of p" + std::to_string(proc) + " in epoch " + std::to_string(epoch));
}

void Checker::CheckCanon(std::uint64_t revision, std::uint64_t state, std::uint64_t epoch,
                         const std::string& what) {
  auto it = canon_.find(revision);
  if (it == canon_.end()) {
    canon_[revision] = {state, epoch};
    return;
  }
  Canon& c = it->second;
  if (c.state == state) {
    c.epoch = std::max(c.epoch, epoch);
    return;
  }
  // A lineage reset between the two epochs explains a second state at this revision.
  for (std::uint64_t reset : reset_epochs_) {
    if (c.epoch < reset && reset <= epoch) {
      c = {state, epoch};
      return;
    }
    if (epoch < reset && reset <= c.epoch) return;  // a late line of the old lineage
  }
  // Counted once per revision: every later line at this revision would repeat the same finding.
  if (!diverged_revisions_.insert(revision).second) return;
  counts_.divergent_states++;
  std::fprintf(log_,
               "DIVERGENCE revision %" PRIu64 ": %s holds state %016" PRIx64 ", epoch %" PRIu64
               " had %016" PRIx64 "\n",
               revision, what.c_str(), state, c.epoch, c.state);
  std::fflush(log_);
}

void Checker::Prune(TimeMs now_ms, TimeMs idle_ms) {
  for (auto it = ops_.begin(); it != ops_.end();) {
    if (idle_ms >= 0 && now_ms - it->second.last_ms < idle_ms) {
      ++it;
      continue;
    }
    if (it->second.any_ok) {
      counts_.ops_ok++;
    } else {
      counts_.ops_failed++;
    }
    it = ops_.erase(it);
  }
}

}  // namespace shoal::chaos
