// RingSchedule: which bytes a rank sends and receives, and when, in a ring all-reduce.
//
// Vocabulary (used by every file in collective/):
// - The buffer of `count` elements is cut into n *chunks*, one per rank: chunk c is elements
//   [ChunkBegin(c), ChunkEnd(c)); the first count % n chunks have one element more than the rest.
// - Each chunk is cut into *segments* of at most `segment_elems` elements. S, the segments per
//   step, is the number of segments of the largest chunk; in a smaller chunk the last segment
//   may be empty.
// - The algorithm has 2(n-1) *steps*: steps 0..n-2 are the reduce-scatter, steps n-1..2n-3 the
//   all-gather. At step s rank r sends chunk (r - s - 1) mod n to rank r+1 and receives chunk
//   (r - s - 2) mod n from rank r-1. After the reduce-scatter rank r owns chunk r, fully reduced.
// - A *unit* is one segment of one step: unit u = s * S + j is segment j of step s. Units are the
//   pieces that travel; a rank sends units 0..U-1 and receives units 0..U-1 (U = 2(n-1) * S), each
//   over stream u mod K of its link. Empty units are not sent.
// - Dependencies: send unit u of step s > 0 forwards what receive unit u - S brought (after the
//   reduction, in the reduce-scatter), so it may go only once receive unit u - S is done. Units of
//   step 0 depend on nothing. On every stream this order is monotone, so each stream is a FIFO.
//
// Value type; thread-compatible. All arithmetic is on 64-bit element counts.
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>

namespace shoal::collective {

struct ElemRange {
  std::uint64_t begin = 0;  // element index
  std::uint64_t end = 0;    // one past the last
  std::uint64_t size() const { return end - begin; }
  bool empty() const { return end == begin; }
};

class RingSchedule {
 public:
  // REQUIRES: n >= 1, rank < n, segment_elems >= 1.
  RingSchedule(std::uint64_t count, std::uint32_t n, std::uint32_t rank, std::uint64_t segment_elems);

  std::uint64_t count() const { return count_; }
  std::uint32_t n() const { return n_; }
  std::uint32_t rank() const { return rank_; }
  std::uint32_t steps() const { return n_ > 1 ? 2 * (n_ - 1) : 0; }
  std::uint64_t segments_per_step() const { return segments_per_step_; }
  std::uint64_t units() const { return steps() * segments_per_step_; }

  // REQUIRES (here and below, for every function taking a unit): unit < units(). With count 0 or
  // n 1 there are no units, so none of them may be called.
  ElemRange Chunk(std::uint32_t c) const;
  std::uint32_t StepOf(std::uint64_t unit) const {
    assert(unit < units());
    return static_cast<std::uint32_t>(unit / segments_per_step_);
  }
  bool IsReduceScatter(std::uint64_t unit) const { return StepOf(unit) + 1 < n_; }
  // The last reduce-scatter step: what it receives is the rank's own chunk, now fully reduced.
  bool IsLastReduceScatter(std::uint64_t unit) const { return StepOf(unit) + 2 == n_; }
  std::uint32_t SendChunk(std::uint64_t unit) const;
  std::uint32_t RecvChunk(std::uint64_t unit) const;
  ElemRange SendRange(std::uint64_t unit) const;
  ElemRange RecvRange(std::uint64_t unit) const;
  // Whether sending `unit` must wait for receive unit `unit - segments_per_step()`.
  bool SendDependsOnRecv(std::uint64_t unit) const { return StepOf(unit) > 0; }

 private:
  ElemRange Segment(std::uint32_t chunk, std::uint64_t unit) const;

  std::uint64_t count_;
  std::uint32_t n_;
  std::uint32_t rank_;
  std::uint64_t segment_elems_;
  std::uint64_t segments_per_step_;
};

}  // namespace shoal::collective
