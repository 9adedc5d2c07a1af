// Shaper: the emulated internet's timing and loss decisions, as a pure function of packet arrivals
// (no clock, no sockets; randomness from a seeded generator), so tests can drive it with made-up
// times and the forwarder only does I/O around it.
//
// The path of a packet sent by host `src` to host `dst` (docs/netem.md draws it):
//   1. read from src's TUN at time t0
//   2. the link src->dst is cut: drop (counted as cut)
//   3. src's egress serializer (if capped): the packet waits behind the bytes queued before it and
//      leaves when its last bit is out, at t1; a packet that would wait longer than the host's
//      queue limit is dropped (egress queue). Uncapped: t1 = t0.
//   4. random loss on the link: drop with probability `loss` (it did use the egress capacity)
//   5. propagation: t2 = t1 + delay + uniform(-jitter, +jitter), never before t1, and never before
//      the previous packet's t2 on the same link (order is kept) unless this packet is picked for
//      reordering (probability `reorder`): then t2 += reorder_gap and later packets may overtake it
//   6. at t2 the packet reaches dst's ingress serializer (if capped), same rule as in 3: t3
//   7. written to dst's TUN at t3.
// Egress() does steps 2-5 when the packet is read; Ingress() does step 6 when the forwarder's timer
// reaches t2. Times are nanoseconds of any monotonic clock; Ingress must be called in order of t2.
//
// Thread safety: none (one owner, the forwarder's loop).
#pragma once

#include <cstdint>
#include <vector>

#include "tools/netem/topology.h"

namespace shoal::netem {

// A FIFO link of a given rate: packets are sent one after another; each one's departure is when its
// last bit has been sent. Rate 0 means unlimited (no wait, no queue).
struct Serializer {
  std::int64_t rate_bps = 0;
  std::int64_t queue_ns = 0;    // the longest a packet may wait before its first bit is sent
  std::int64_t free_at_ns = 0;  // when the last admitted packet's last bit is out

  // False (drop) if the packet would wait longer than queue_ns; else *depart_ns.
  bool Admit(std::int64_t now_ns, std::uint32_t bytes, std::int64_t* depart_ns);
};

// splitmix64: small, fast, and reproducible from a seed on every platform.
class Random {
 public:
  explicit Random(std::uint64_t seed) : state_(seed) {}
  std::uint64_t Next();
  double Uniform01();  // [0, 1)
  // True with probability p (p <= 0: never, without drawing; so loss 0 uses no randomness).
  bool Chance(double p);

 private:
  std::uint64_t state_;
};

enum class Verdict : std::uint8_t {
  kForward,
  kDropCut,
  kDropEgressQueue,
  kDropLoss,
  kDropIngressQueue
};

struct LinkCounters {
  std::uint64_t packets = 0;  // reached the far end's ingress (or were written, uncapped)
  std::uint64_t bytes = 0;
  std::uint64_t dropped_cut = 0;
  std::uint64_t dropped_loss = 0;
  std::uint64_t reordered = 0;
};

struct HostCounters {
  std::uint64_t dropped_egress_queue = 0;
  std::uint64_t dropped_ingress_queue = 0;
};

class Shaper {
 public:
  explicit Shaper(const Topology& topology);

  // Replaces the parameters (a live `set`): queued packets keep their times, serializers keep their
  // backlog, and the new rates and limits apply from the next packet on.
  void SetTopology(const Topology& topology);
  const Topology& topology() const { return topology_; }

  void SetCut(int src, int dst, bool cut);
  bool IsCut(int src, int dst) const { return cut_[Index(src, dst)]; }

  // Steps 2-5 for a packet read at now_ns. kForward sets *arrive_ns (t2) and, if given,
  // *reordered (whether the packet was picked to be held back and overtaken).
  Verdict Egress(std::int64_t now_ns, int src, int dst, std::uint32_t bytes,
                 std::int64_t* arrive_ns, bool* reordered = nullptr);
  // Step 6 at t2 (= now_ns). kForward sets *deliver_ns (t3 >= now_ns; == now_ns when uncapped).
  Verdict Ingress(std::int64_t now_ns, int dst, std::uint32_t bytes, std::int64_t* deliver_ns);

  const LinkCounters& link_counters(int src, int dst) const { return link_[Index(src, dst)]; }
  const HostCounters& host_counters(int host) const {
    return host_[static_cast<std::size_t>(host)];
  }
  void ResetCounters();

 private:
  std::size_t Index(int src, int dst) const {
    return static_cast<std::size_t>(src * topology_.hosts + dst);
  }
  void ApplyRates();

  Topology topology_;
  Random random_;
  std::vector<bool> cut_;                     // [src * hosts + dst]
  std::vector<std::int64_t> last_arrive_ns_;  // [src * hosts + dst]: t2 of the last in-order packet
  std::vector<Serializer> egress_;            // [host]
  std::vector<Serializer> ingress_;           // [host]
  std::vector<LinkCounters> link_;
  std::vector<HostCounters> host_;
};

}  // namespace shoal::netem
