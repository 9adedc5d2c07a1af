// RingAllReduce: the logic of one ring all-reduce on one rank, with no I/O.
//
// Words as in ring_schedule.h (chunk, segment, step, unit). The transport asks this object which
// unit to send next on a stream and where the bytes of an arriving unit go, and tells it when a
// unit was sent or has arrived; the object does the reductions and tracks what is done.
//
// - Send unit u: step 0 sends from the send buffer (the rank's own contribution); later steps
//   forward from the recv buffer what receive unit u - S left there.
// - Receive unit u in the reduce-scatter: the bytes land in the stream's staging area, then
//   recv[range] = send[range] op staging. In the last reduce-scatter step the range is the rank's
//   own chunk, now complete; for AVG it is divided by n there, once, by its owner.
// - Receive unit u in the all-gather: the bytes land in the recv buffer directly (no copy).
// Every rank ends with the owner's bytes for every chunk, so all ranks hold identical bits.
//
// Thread safety: none; the engine drives it from one thread. The buffers must outlive it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "shoal/collective/ring_schedule.h"
#include "shoal/status.hpp"
#include "shoal/types.h"

namespace shoal::collective {

struct RingAllReduceParams {
  const void* send = nullptr;
  void* recv = nullptr;
  std::uint64_t count = 0;
  shoal_dtype dtype = SHOAL_F32;
  shoal_reduce_op op = SHOAL_SUM;
  std::uint32_t n = 1;
  std::uint32_t rank = 0;
  std::uint32_t streams = 1;           // K
  std::uint32_t segment_bytes_max = 1u << 20;
};

// Segment size (in elements) that every rank derives from the same inputs: enough segments per
// chunk to keep all K streams busy, none larger than segment_bytes_max, none smaller than 64 KiB
// unless the chunk is.
std::uint64_t ChooseSegmentElems(std::uint64_t count, std::uint32_t n, std::uint32_t streams,
                                 std::size_t elem_bytes, std::uint32_t segment_bytes_max);

// A checksum of the parameters all members must agree on; carried by every segment frame.
std::uint32_t OpDescriptor(std::uint64_t count, shoal_dtype dtype, shoal_reduce_op op,
                           std::uint32_t n, std::uint32_t streams, std::uint64_t segment_elems);

class RingAllReduce {
 public:
  static constexpr std::uint64_t kNone = ~std::uint64_t{0};

  // REQUIRES: valid dtype/op, n >= 1, rank < n, streams >= 1, buffers of count elements (they may
  // be the same buffer).
  explicit RingAllReduce(const RingAllReduceParams& params);

  const RingSchedule& schedule() const { return schedule_; }
  std::uint32_t descriptor() const { return descriptor_; }
  std::size_t elem_bytes() const { return elem_bytes_; }
  std::uint64_t segment_bytes() const { return segment_elems_ * elem_bytes_; }

  // The next unit to send on `stream` if it may go now, else kNone.
  std::uint64_t NextSend(std::uint32_t stream) const;
  // Where the bytes of send unit `unit` are, and how many.
  const std::uint8_t* SendData(std::uint64_t unit) const;
  std::uint64_t UnitBytes(std::uint64_t unit, bool sending) const;
  void OnSent(std::uint64_t unit);

  // The unit expected next on `stream`, or kNone if nothing more comes on it.
  std::uint64_t NextRecv(std::uint32_t stream) const;
  // Where the bytes of receive unit `unit` must be written: `staging` (at least segment_bytes())
  // in the reduce-scatter, the recv buffer in the all-gather.
  std::uint8_t* RecvTarget(std::uint64_t unit, std::uint8_t* staging) const;
  // The bytes of `unit` are at RecvTarget(unit, staging): reduce them and mark the unit received.
  void OnReceived(std::uint64_t unit, const std::uint8_t* staging);

  // Every unit was sent and received (for n == 1, after the local copy in the constructor).
  bool done() const { return sent_ == send_total_ && received_ == recv_total_; }
  // Whether any unit is still to be received (the rank waits on its previous neighbour) or only
  // sends remain (it waits on its next neighbour).
  bool waiting_on_recv() const { return received_ < recv_total_; }

 private:
  std::uint64_t NextNonEmpty(std::uint64_t from, std::uint32_t stream, bool sending) const;

  RingAllReduceParams p_;
  std::size_t elem_bytes_;
  std::uint64_t segment_elems_;
  RingSchedule schedule_;
  std::uint32_t descriptor_;
  std::vector<bool> received_units_;
  std::vector<std::uint64_t> next_send_;  // per stream
  std::vector<std::uint64_t> next_recv_;  // per stream
  std::uint64_t send_total_ = 0;
  std::uint64_t recv_total_ = 0;
  std::uint64_t sent_ = 0;
  std::uint64_t received_ = 0;
};

}  // namespace shoal::collective
