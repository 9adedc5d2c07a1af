// The chaos run's workload, shared by its peers (which run it) and its driver (which checks it).
//
// Vocabulary (docs/chaos.md uses the same words):
//   step     one iteration of a peer's training loop: update_topology, a sync of the shared state,
//            the step's all-reduces (StepOps, in order), then the same update of the shared state
//            on every member and revision + 1. A step whose sync or all-reduce fails is an
//            *attempt* that is retried from update_topology.
//   op       one collective, named as the protocol names it: (epoch, tag, seq), where seq counts
//            the ops of that tag a member ran in that epoch. The sync is op (epoch, kSyncTag, seq).
//   input    what member `peer` contributes to op (epoch, tag, seq): element i is InputValue of
//            InputStream(epoch, tag, seq, peer) and i, a small integer. Any process can recompute
//            every member's input from the op's name and the member list.
//   reference  the exact result of an all-reduce among a member list: integer sums of small
//            integers, exact in every dtype used here in any order (f32 below 2^24), then for AVG
//            the library's own division (C++ truncation for integers, one IEEE division for f32).
//
// Stateless free functions; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "shoal/types.h"

namespace shoal::chaos {

// The protocol's tag of shared-state syncs (docs/protocol.md, "Shared state").
inline constexpr std::uint64_t kSyncTag = ~std::uint64_t{0};
// Inputs are integers in [-kInputMagnitude, kInputMagnitude]: with at most kMembersExactMax
// members every partial sum stays below 2^24, so f32 sums are exact in any order.
inline constexpr std::int64_t kInputMagnitude = 1000;
inline constexpr int kMembersExactMax = 64;
static_assert(kInputMagnitude * kMembersExactMax < (std::int64_t{1} << 24));

struct OpSpec {
  std::uint64_t tag = 0;
  shoal_dtype dtype = SHOAL_F32;
  std::uint64_t count = 0;
  shoal_reduce_op op = SHOAL_SUM;
  bool in_place = false;
};

// The all-reduces of one step, in the order every member runs them: a latency-bound one (one i32),
// an odd-sized f32 average, a mid-sized i64 sum and a large in-place f32 sum of `large_count`
// elements (with the driver's 4 KiB segment, the last two run the pipelined multi-segment path).
std::vector<OpSpec> StepOps(std::uint64_t large_count);

// Bytes of one element of the dtypes StepOps uses (i32, i64, f32).
std::size_t ElementBytes(shoal_dtype dtype);

// The seed of one member's input to one op.
std::uint64_t InputStream(std::uint64_t epoch, std::uint64_t tag, std::uint64_t seq,
                          std::uint64_t peer);
// Element i of that input: an integer in [-kInputMagnitude, kInputMagnitude].
std::int64_t InputValue(std::uint64_t stream, std::uint64_t i);

// Writes member `peer`'s input to op (epoch, spec.tag, seq) into out[0, spec.count) (of
// spec.dtype).
void FillInput(const OpSpec& spec, std::uint64_t epoch, std::uint64_t seq, std::uint64_t peer,
               void* out);

// The reference result of op (epoch, spec.tag, seq) among `members`, in spec.dtype's bytes.
// REQUIRES: 1 <= members.size() <= kMembersExactMax.
std::vector<std::uint8_t> Reference(const OpSpec& spec, std::uint64_t epoch, std::uint64_t seq,
                                    const std::vector<std::uint64_t>& members);

// xxHash3-64 of a buffer: how results and states are compared across processes.
std::uint64_t HashBytes(const void* data, std::size_t bytes);

// A 64-bit mixer (splitmix64's finalizer).
std::uint64_t Mix(std::uint64_t x);

}  // namespace shoal::chaos
