#include "shoal/collective/ring_schedule.h"

#include <algorithm>
#include <cassert>

namespace shoal::collective {

RingSchedule::RingSchedule(std::uint64_t count, std::uint32_t n, std::uint32_t rank,
                           std::uint64_t segment_elems)
    : count_(count), n_(n), rank_(rank), segment_elems_(segment_elems) {
  assert(n >= 1 && rank < n && segment_elems >= 1);
  std::uint64_t largest_chunk = (count + n - 1) / n;
  segments_per_step_ = (largest_chunk + segment_elems - 1) / segment_elems;
}

ElemRange RingSchedule::Chunk(std::uint32_t c) const {
  assert(c < n_);
  std::uint64_t base = count_ / n_;
  std::uint64_t extra = count_ % n_;
  std::uint64_t begin = c * base + std::min<std::uint64_t>(c, extra);
  return {begin, begin + base + (c < extra ? 1 : 0)};
}

std::uint32_t RingSchedule::SendChunk(std::uint64_t unit) const {
  std::uint64_t s = StepOf(unit);
  return static_cast<std::uint32_t>((rank_ + 2 * std::uint64_t{n_} - s % n_ - 1) % n_);
}

std::uint32_t RingSchedule::RecvChunk(std::uint64_t unit) const {
  std::uint64_t s = StepOf(unit);
  return static_cast<std::uint32_t>((rank_ + 2 * std::uint64_t{n_} - s % n_ - 2) % n_);
}

ElemRange RingSchedule::Segment(std::uint32_t chunk, std::uint64_t unit) const {
  ElemRange c = Chunk(chunk);
  std::uint64_t j = unit % segments_per_step_;
  std::uint64_t begin = std::min(c.end, c.begin + j * segment_elems_);
  std::uint64_t end = std::min(c.end, begin + segment_elems_);
  return {begin, end};
}

ElemRange RingSchedule::SendRange(std::uint64_t unit) const {
  return Segment(SendChunk(unit), unit);
}

ElemRange RingSchedule::RecvRange(std::uint64_t unit) const {
  return Segment(RecvChunk(unit), unit);
}

}  // namespace shoal::collective
