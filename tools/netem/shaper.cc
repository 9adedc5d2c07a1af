#include "tools/netem/shaper.h"

#include <algorithm>
#include <cassert>

namespace shoal::netem {
namespace {

constexpr std::int64_t kNsPerUs = 1000;
constexpr std::int64_t kNsPerS = 1'000'000'000;

// Time to send `bytes` at `rate_bps`, rounded up to whole nanoseconds.
std::int64_t SerializationNs(std::uint32_t bytes, std::int64_t rate_bps) {
  // bytes <= 65535 and 8e9 fit easily: 65535 * 8 * 1e9 < 2^63.
  const std::int64_t bit_ns = static_cast<std::int64_t>(bytes) * 8 * kNsPerS;
  return (bit_ns + rate_bps - 1) / rate_bps;
}

}  // namespace

bool Serializer::Admit(std::int64_t now_ns, std::uint32_t bytes, std::int64_t* depart_ns) {
  if (rate_bps == 0) {
    *depart_ns = now_ns;
    return true;
  }
  const std::int64_t start_ns = std::max(now_ns, free_at_ns);
  if (start_ns - now_ns > queue_ns) return false;
  free_at_ns = start_ns + SerializationNs(bytes, rate_bps);
  *depart_ns = free_at_ns;
  return true;
}

std::uint64_t Random::Next() {
  std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

double Random::Uniform01() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

bool Random::Chance(double p) { return p > 0 && Uniform01() < p; }

Shaper::Shaper(const Topology& topology) : topology_(topology), random_(topology.seed) {
  const std::size_t n = static_cast<std::size_t>(topology.hosts);
  cut_.assign(n * n, false);
  last_arrive_ns_.assign(n * n, 0);
  egress_.assign(n, Serializer{});
  ingress_.assign(n, Serializer{});
  link_.assign(n * n, LinkCounters{});
  host_.assign(n, HostCounters{});
  ApplyRates();
}

void Shaper::SetTopology(const Topology& topology) {
  assert(topology.hosts == topology_.hosts);
  topology_ = topology;
  ApplyRates();
}

void Shaper::ApplyRates() {
  for (int h = 0; h < topology_.hosts; h++) {
    const HostParams& p = topology_.host[static_cast<std::size_t>(h)];
    const std::int64_t queue_ns = QueueLimitUs(topology_, h) * kNsPerUs;
    egress_[static_cast<std::size_t>(h)].rate_bps = p.egress_bps;
    egress_[static_cast<std::size_t>(h)].queue_ns = queue_ns;
    ingress_[static_cast<std::size_t>(h)].rate_bps = p.ingress_bps;
    ingress_[static_cast<std::size_t>(h)].queue_ns = queue_ns;
  }
}

void Shaper::SetCut(int src, int dst, bool cut) {
  assert(src != dst);
  cut_[Index(src, dst)] = cut;
}

Verdict Shaper::Egress(std::int64_t now_ns, int src, int dst, std::uint32_t bytes,
                       std::int64_t* arrive_ns, bool* reordered) {
  assert(src != dst && src >= 0 && dst >= 0 && src < topology_.hosts && dst < topology_.hosts);
  const std::size_t i = Index(src, dst);
  LinkCounters& counters = link_[i];
  if (cut_[i]) {
    counters.dropped_cut++;
    return Verdict::kDropCut;
  }
  std::int64_t depart_ns = 0;
  if (!egress_[static_cast<std::size_t>(src)].Admit(now_ns, bytes, &depart_ns)) {
    host_[static_cast<std::size_t>(src)].dropped_egress_queue++;
    return Verdict::kDropEgressQueue;
  }
  const LinkParams& p = topology_.Link(src, dst);
  if (random_.Chance(p.loss)) {
    counters.dropped_loss++;
    return Verdict::kDropLoss;
  }
  std::int64_t delay_ns = p.delay_us * kNsPerUs;
  if (p.jitter_us > 0) {
    const double offset = (2 * random_.Uniform01() - 1) * static_cast<double>(p.jitter_us);
    delay_ns += static_cast<std::int64_t>(offset * kNsPerUs);
  }
  std::int64_t t2 = depart_ns + std::max<std::int64_t>(delay_ns, 0);
  const bool held_back = random_.Chance(p.reorder);
  if (reordered != nullptr) *reordered = held_back;
  if (held_back) {
    // Held back; it does not hold back the packets after it.
    t2 += p.reorder_gap_us * kNsPerUs;
    counters.reordered++;
  } else {
    t2 = std::max(t2, last_arrive_ns_[i]);
    last_arrive_ns_[i] = t2;
  }
  counters.packets++;
  counters.bytes += bytes;
  *arrive_ns = t2;
  return Verdict::kForward;
}

Verdict Shaper::Ingress(std::int64_t now_ns, int dst, std::uint32_t bytes,
                        std::int64_t* deliver_ns) {
  if (!ingress_[static_cast<std::size_t>(dst)].Admit(now_ns, bytes, deliver_ns)) {
    host_[static_cast<std::size_t>(dst)].dropped_ingress_queue++;
    return Verdict::kDropIngressQueue;
  }
  return Verdict::kForward;
}

void Shaper::ResetCounters() {
  std::fill(link_.begin(), link_.end(), LinkCounters{});
  std::fill(host_.begin(), host_.end(), HostCounters{});
}

}  // namespace shoal::netem
