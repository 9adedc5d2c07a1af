#include "shoal/collective/ring_allreduce.h"

#include <algorithm>
#include <cassert>
#include <cstring>

#include "shoal/collective/reduce.h"

namespace shoal::collective {

std::uint64_t ChooseSegmentElems(std::uint64_t count, std::uint32_t n, std::uint32_t streams,
                                 std::size_t elem_bytes, std::uint32_t segment_bytes_max) {
  constexpr std::uint64_t kSegmentBytesFloor = 64 * 1024;
  std::uint64_t chunk_bytes = (count + n - 1) / n * elem_bytes;
  std::uint64_t per_stream = (chunk_bytes + streams - 1) / streams;
  std::uint64_t bytes = std::min<std::uint64_t>(segment_bytes_max,
                                                std::max(kSegmentBytesFloor, per_stream));
  return std::max<std::uint64_t>(1, bytes / elem_bytes);
}

std::uint32_t OpDescriptor(std::uint64_t count, shoal_dtype dtype, shoal_reduce_op op,
                           std::uint32_t n, std::uint32_t streams, std::uint64_t segment_elems) {
  // FNV-1a over the fields: not security, just a tripwire for members that disagree.
  std::uint32_t h = 2166136261u;
  auto mix = [&h](std::uint64_t v) {
    for (int i = 0; i < 8; i++) {
      h ^= static_cast<std::uint8_t>(v >> (8 * i));
      h *= 16777619u;
    }
  };
  mix(count);
  mix(static_cast<std::uint64_t>(dtype));
  mix(static_cast<std::uint64_t>(op));
  mix(n);
  mix(streams);
  mix(segment_elems);
  return h;
}

RingAllReduce::RingAllReduce(const RingAllReduceParams& p)
    : p_(p),
      elem_bytes_(DtypeBytes(p.dtype)),
      segment_elems_(ChooseSegmentElems(p.count, p.n, p.streams, DtypeBytes(p.dtype),
                                        p.segment_bytes_max)),
      schedule_(p.count, p.n, p.rank, segment_elems_),
      descriptor_(OpDescriptor(p.count, p.dtype, p.op, p.n, p.streams, segment_elems_)) {
  assert(p.streams >= 1);
  if (p.n == 1) {
    if (p.send != p.recv && p.count > 0) std::memmove(p.recv, p.send, p.count * elem_bytes_);
    return;
  }
  std::uint64_t units = schedule_.units();
  received_units_.assign(units, false);
  for (std::uint64_t u = 0; u < units; u++) {
    if (!schedule_.SendRange(u).empty()) send_total_++;
    if (!schedule_.RecvRange(u).empty()) recv_total_++;
  }
  next_send_.resize(p.streams);
  next_recv_.resize(p.streams);
  for (std::uint32_t k = 0; k < p.streams; k++) {
    next_send_[k] = NextNonEmpty(k, k, true);
    next_recv_[k] = NextNonEmpty(k, k, false);
  }
}

std::uint64_t RingAllReduce::NextNonEmpty(std::uint64_t from, std::uint32_t stream,
                                          bool sending) const {
  std::uint64_t units = schedule_.units();
  for (std::uint64_t u = from; u < units; u += p_.streams) {
    assert(u % p_.streams == stream);
    ElemRange r = sending ? schedule_.SendRange(u) : schedule_.RecvRange(u);
    if (!r.empty()) return u;
  }
  return kNone;
}

std::uint64_t RingAllReduce::NextSend(std::uint32_t stream) const {
  if (stream >= next_send_.size()) return kNone;
  std::uint64_t u = next_send_[stream];
  if (u == kNone) return kNone;
  if (schedule_.SendDependsOnRecv(u) && !received_units_[u - schedule_.segments_per_step()]) {
    return kNone;
  }
  return u;
}

const std::uint8_t* RingAllReduce::SendData(std::uint64_t unit) const {
  ElemRange r = schedule_.SendRange(unit);
  const void* base = schedule_.StepOf(unit) == 0 ? p_.send : p_.recv;
  return static_cast<const std::uint8_t*>(base) + r.begin * elem_bytes_;
}

std::uint64_t RingAllReduce::UnitBytes(std::uint64_t unit, bool sending) const {
  ElemRange r = sending ? schedule_.SendRange(unit) : schedule_.RecvRange(unit);
  return r.size() * elem_bytes_;
}

void RingAllReduce::OnSent(std::uint64_t unit) {
  std::uint32_t k = static_cast<std::uint32_t>(unit % p_.streams);
  assert(next_send_[k] == unit);
  next_send_[k] = NextNonEmpty(unit + p_.streams, k, true);
  sent_++;
}

std::uint64_t RingAllReduce::NextRecv(std::uint32_t stream) const {
  if (stream >= next_recv_.size()) return kNone;
  return next_recv_[stream];
}

std::uint8_t* RingAllReduce::RecvTarget(std::uint64_t unit, std::uint8_t* staging) const {
  if (schedule_.IsReduceScatter(unit)) return staging;
  ElemRange r = schedule_.RecvRange(unit);
  return static_cast<std::uint8_t*>(p_.recv) + r.begin * elem_bytes_;
}

void RingAllReduce::OnReceived(std::uint64_t unit, const std::uint8_t* staging) {
  std::uint32_t k = static_cast<std::uint32_t>(unit % p_.streams);
  assert(next_recv_[k] == unit);
  if (schedule_.IsReduceScatter(unit)) {
    ElemRange r = schedule_.RecvRange(unit);
    std::size_t off = r.begin * elem_bytes_;
    void* dst = static_cast<std::uint8_t*>(p_.recv) + off;
    const void* mine = static_cast<const std::uint8_t*>(p_.send) + off;
    shoal_reduce_op op = p_.op == SHOAL_AVG ? SHOAL_SUM : p_.op;
    Reduce(p_.dtype, op, dst, mine, staging, r.size());
    if (p_.op == SHOAL_AVG && schedule_.IsLastReduceScatter(unit)) {
      DivideBy(p_.dtype, dst, r.size(), p_.n);
    }
  }
  received_units_[unit] = true;
  next_recv_[k] = NextNonEmpty(unit + p_.streams, k, false);
  received_++;
}

}  // namespace shoal::collective
