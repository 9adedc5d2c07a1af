// The chaos driver's checks over the peers' records (record.h), applied line by line as the driver
// reads them, so a violation is found at the step where it happens.
//
// For every op (epoch, tag, seq), over the reports of the members that ran it:
//   - all reports name the same member list;
//   - all-reduce: every success holds the same result bits, and they equal the reference of that
//     member list's inputs (workload.h) ("wrong result" otherwise);
//   - sync: every success reports the same revision and state hash;
//   - outcome: either every report succeeded or every report failed with the same (status, lost
//     peer), the reports of the lost peer itself aside (a SIGSTOPped or cut-off peer is the one
//     the others lost; what it sees is not an agreed outcome).
// Documented exceptions are counted apart, not as divergences, when a fault touched the member
// that saw them (`affected`, from `window_ms` before its call to its end); with no fault near,
// they are divergences:
//   - SHOAL_ERR_COORDINATOR_LOST: the caller's deadline and grace passed without a verdict
//     (docs/protocol.md "Collectives" 7 and "Coordinator restart" 1);
//   - SHOAL_ERR_NOT_MEMBER: the group dropped the member during the op (paused or cut off past
//     the heartbeat timeout, it came back and was told the group went on without it); it is not a
//     survivor, so its outcome is its own;
//   - a sync refusal (REVISION, MISMATCH): the refused member leaves the epoch while the others'
//     sync commits (always counted apart: this workload never sends a refusable state, so any is
//     worth a look).
// Per member: a successful sync never takes its revision below one it held (its HELLO's, its last
// STEP's or its last sync's): the election picks the highest revision among the members it admits,
// so a member that goes back lost a step the group had made (a divergence of states).
// Across ops: all STEP lines and all successful syncs that name the same revision name the same
// state hash (one state per revision), unless the group lost every holder of its revision and
// started again from what its remaining members held (a "lineage reset", counted apart: the
// coordinator forgets the group's revision with its last holder, docs/protocol.md "Shared state").
//
// Thread safety: none (the driver's thread).
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "tools/chaos/record.h"
#include "tools/chaos/workload.h"

namespace shoal::chaos {

using TimeMs = std::int64_t;

struct CheckCounts {
  // Group level.
  std::int64_t steps = 0;       // distinct (epoch, new revision) of STEP lines
  std::int64_t ops_ok = 0;      // ops (epoch, tag, seq) that succeeded (known when pruned)
  std::int64_t ops_failed = 0;  // ops that failed on every member: each one a retried attempt
  // Per process.
  std::int64_t calls_ok = 0, calls_failed = 0;  // collective calls (syncs and all-reduces)
  std::int64_t ut_ok = 0, ut_timeout = 0, ut_error = 0;
  std::int64_t creates_failed = 0;
  std::int64_t joiner_syncs = 0;  // syncs that received bytes (a joiner or a straggler fed)
  std::int64_t rx_bytes = 0;
  std::map<int, std::int64_t> failures_by_code;  // per call
  // Violations.
  std::int64_t divergent_results = 0;  // successes of one all-reduce with different bits
  std::int64_t divergent_states = 0;   // one sync or one revision, different states
  std::int64_t divergent_members = 0;  // one op, different member lists
  std::int64_t outcome_splits = 0;     // one op succeeded on one member, failed on another
  std::int64_t reason_splits = 0;      // one op failed with different (status, lost peer)
  std::int64_t wrong_results = 0;      // a success that differs from the reference
  // Documented exceptions, counted apart.
  std::int64_t coordinator_lost_splits = 0;
  std::int64_t refusals = 0;
  std::int64_t dropped_member_splits = 0;
  std::int64_t lineage_resets = 0;

  std::int64_t exceptions() const {
    return coordinator_lost_splits + refusals + dropped_member_splits + lineage_resets;
  }

  std::int64_t divergences() const {
    return divergent_results + divergent_states + divergent_members + outcome_splits +
           reason_splits;
  }
};

class Checker {
 public:
  // Whether a fault touched process `proc` (its host's links, itself, or the coordinator) at some
  // time in [from_ms, to_ms].
  using AffectedFn = std::function<bool(int proc, TimeMs from_ms, TimeMs to_ms)>;

  // `large_count`: the workload's large all-reduce (StepOps). Violations and exceptions are
  // described on `log` (one line each, with both reports) and counted. `window_ms`: how long
  // before an op a fault may have started and still explain a member's removal during it (the
  // heartbeat timeout and some).
  Checker(std::uint64_t large_count, std::FILE* log, AffectedFn affected, TimeMs window_ms);

  // One record line of process `proc` (the driver's index of the peer process).
  void OnLine(int proc, const RecordLine& line);
  // Forgets ops with no report for `idle_ms` (counting them ok or failed); all of them if
  // `idle_ms` < 0 (the end of the run).
  void Prune(TimeMs now_ms, TimeMs idle_ms);

  const CheckCounts& counts() const { return counts_; }
  // (t0, t1) of every STEP line: the step's attempt start and its end.
  const std::vector<std::pair<TimeMs, TimeMs>>& steps() const { return step_times_; }
  // The highest revision and epoch seen so far.
  std::uint64_t revision() const { return revision_max_; }
  std::uint64_t epoch() const { return epoch_max_; }

 private:
  using OpKey = std::tuple<std::uint64_t, std::uint64_t, std::uint64_t>;  // epoch, tag, seq
  struct Report {
    int proc = -1;
    std::uint64_t peer = 0;
    std::vector<std::uint64_t> members;
    int status = 0;
    std::uint64_t lost = 0;
    std::uint64_t hash = 0;
    std::uint64_t state = 0;
    std::uint64_t revision = 0;
    TimeMs t0 = 0;
    TimeMs t1 = 0;
  };
  // What is counted once per op: each kind of violation and exception, and a wrong result
  // (every success is checked against the reference).
  enum Flag {
    kFlagReference,
    kFlagMembers,
    kFlagBits,
    kFlagOutcome,
    kFlagReason,
    kFlagRefusal,
    kFlagDropped,
    kFlagCoordLost,
    kFlagCount
  };
  struct Op {
    std::vector<Report> reports;
    bool any_ok = false;
    bool flagged[kFlagCount] = {};
    bool reference_known = false;  // computed (at the first success)
    bool reference_valid = false;  // a known tag and member list
    std::uint64_t reference = 0;   // the hash of the reference result
    TimeMs last_ms = 0;
  };
  struct Canon {
    std::uint64_t state = 0;
    std::uint64_t epoch = 0;
  };

  void OnOp(int proc, const RecordLine& line);
  void OnStep(int proc, const RecordLine& line);
  // Checks `r` against the reports of `key` already in `op`.
  void Compare(const OpKey& key, Op* op, const Report& r);
  void CheckReference(const OpKey& key, Op* op, const Report& r);
  // One state per revision (see the file comment).
  void CheckCanon(std::uint64_t revision, std::uint64_t state, std::uint64_t epoch,
                  const std::string& what);
  void Log(const char* kind, const OpKey& key, const Report& a, const Report* b);

  std::uint64_t large_count_;
  std::vector<OpSpec> specs_;
  std::FILE* log_;
  AffectedFn affected_;
  TimeMs window_ms_;
  CheckCounts counts_;
  std::map<int, std::uint64_t> peer_of_;  // proc -> peer id (HELLO)
  std::map<int, std::uint64_t> held_;     // proc -> the revision it holds (HELLO, STEP, sync)
  std::map<OpKey, Op> ops_;
  std::map<std::uint64_t, Canon> canon_;                               // revision -> state
  std::map<std::pair<std::uint64_t, std::uint64_t>, bool> step_keys_;  // (epoch, revision)
  std::vector<std::pair<TimeMs, TimeMs>> step_times_;
  std::uint64_t revision_max_ = 0;
  std::uint64_t epoch_max_ = 0;
  std::map<std::uint64_t, std::uint64_t> revision_by_epoch_;  // the highest revision seen in each
  std::set<std::uint64_t> reset_checked_;       // epochs whose syncs were checked for a reset
  std::set<std::uint64_t> reset_epochs_;        // epochs in which a lineage reset was seen
  std::set<std::uint64_t> diverged_revisions_;  // revisions already counted as divergent
};

}  // namespace shoal::chaos
