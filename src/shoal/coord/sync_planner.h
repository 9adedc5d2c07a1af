// The election and transfer plan of a shared-state sync (docs/protocol.md, "Shared state").
//
// Input: every member's SyncReport, in ring order, and the group's revision after its last
// committed sync. Output: one SyncPlan per member: what it sends, what it receives and which hash
// each received tensor must have, or why it is refused. A pure function: no clock, no I/O, no
// randomness, so the coordinator, its unit tests and the simulator get the same plan from the same
// reports.
//
// Rules, in the order they apply:
// 1. Schema. A member's schema is its list of (name, dtype, count, allow_divergence). The reference
//    schema is the one held by the most members (a tie goes to the schema of the earliest member in
//    ring order). Every member votes, those that rule 2 refuses included. A member with another
//    schema is refused with SHOAL_ERR_MISMATCH (whatever its revision); the reason names the first
//    tensor that differs, as this member has it and as the group has it (or, when one list is a
//    prefix of the other, the two tensor counts and the first tensor only one side has).
// 2. Revision. With a last revision L, a member reporting more than L + 1 is refused with
//    SHOAL_ERR_REVISION ("ahead of the group"). Without one (the group's first sync, or the first
//    after it was empty) no member is ahead.
// 3. The admitted members are the others. The elected revision E is the highest among them; those
//    at E are up to date, those below are behind.
// 4. Per tensor, the elected hash is the one held by the most up-to-date members (a tie goes to the
//    hash of the earliest of them in ring order). Its holders are the up-to-date members with it.
// 5. Receivers of a tensor: every behind member whose hash differs from the elected one, and every
//    up-to-date member whose hash differs unless the tensor allows divergence. A tensor of 0 bytes
//    is never moved (all its hashes are equal).
// 6. Pieces. Each (receiver, tensor) is cut into k = min(#holders, ceil(bytes / piece_bytes_min))
//    ranges of nearly equal size (at least one), in offset order: bytes / k bytes each, the first
//    bytes % k of them one byte more. Each range goes to the holder that has been given the fewest
//    bytes so far in this plan, counting the ranges just given (a tie goes to the earliest in ring
//    order); so a holder may get more than one range of a tensor when the others were loaded
//    before. Receivers are taken in ring order, tensors in schema order, so the plan is
//    deterministic.
// 7. Order. The pieces that one member sends to another appear in the same order in the sender's
//    `sends` and the receiver's `recvs`; the receiver's `expect` lists each received tensor once,
//    in tensor order.
// 8. Limit. If some member's plan would hold more than pieces_max pieces (sends plus receives), the
//    plan is made again with one piece per (receiver, tensor); if that is still too many, every
//    member is refused with SHOAL_ERR_INVALID_ARGUMENT and a reason saying how many transfers the
//    sync needed and what the limit is (members refused by rule 1 or 2 keep their own code and
//    reason, which are about them and still true).
//
// Every plan gets epoch and seq from its member's report (they are all equal), and `revision` = E.
// A refused member's plan has a reason of at most limits::kDetailBytesMax bytes and no pieces or
// expected hashes. If every member is refused (rule 8's included), there is no E: `revision` is 0,
// `any_admitted` false and `bytes_moved` 0. No piece has 0 bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "shoal/common/limits.h"
#include "shoal/net/messages.h"
#include "shoal/status.hpp"

namespace shoal::coord {

struct SyncPlannerConfig {
  // Split a tensor no finer than this; 0 counts as 1.
  std::uint64_t piece_bytes_min = std::uint64_t{8} << 20;
  // Sends plus receives of one member's plan; values above limits::kSyncPiecesMax (more than a
  // SyncPlan may carry) count as that.
  std::uint32_t pieces_max = limits::kSyncPiecesMax;
};

struct MemberSyncReport {
  PeerId peer = 0;
  net::SyncReport report;
};

struct SyncDecision {
  std::vector<net::SyncPlan> plans;  // plans[i] is for members[i]
  std::uint64_t revision = 0;        // E, when some member is admitted
  bool any_admitted = false;
  std::uint64_t bytes_moved = 0;  // sum of all pieces
};

// REQUIRES: members is not empty; peer ids are distinct and non-zero; every report's tensors are
// within limits (the codec checked them: valid dtypes, counts of at most kCollectiveBytesMax).
// Cost: O(members * tensors) expected plus O(log members) per piece in the usual case; see
// sync_planner.cc for the exceptions.
SyncDecision PlanSync(const std::vector<MemberSyncReport>& members,
                      std::optional<std::uint64_t> last_revision, const SyncPlannerConfig& config);

}  // namespace shoal::coord
