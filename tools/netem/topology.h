// The emulated internet's description: hosts, per-host rate caps, per-link delay, jitter, loss and
// reordering; its text form (the topology file, the `--spec` flags and the live `set` commands all
// use the same statements); and the limits every value is checked against.
//
// Vocabulary (docs/netem.md has the whole picture):
//   host   one network namespace with one TUN device and address 10.77.0.(index+1)/24.
//   link   the one-way path from host a to host b (a != b); "link a b" in a statement means both
//          directions unless it says one-way.
//   egress the host's upload cap: packets leaving the host are serialized at this rate;
//   ingress its download cap: packets reaching the host are serialized at this rate.
//   queue  how long a packet may wait behind others at a capped egress or ingress before it is
//          dropped (a time, converted to bytes at the cap's rate).
//
// Statements, one per line ('#' starts a comment):
//   hosts N                                  number of hosts (exactly once, anywhere)
//   mtu BYTES                                MTU of every TUN device (default 1500)
//   seed N                                   seed of the loss/jitter/reorder generator
//   host SEL [rate R] [egress R] [ingress R] [queue T]
//   link SEL SEL [delay T] [jitter T] [loss P] [reorder P] [reorder-gap T] [one-way]
// SEL is a host index (0-based), "hI", or "*" (every host). R is a rate: "200mbit", "1gbit",
// "500kbit", "1.5mbit/s", or 0 / "unlimited". T is a duration: "50ms", "250us", "1.5s", "0".
// P is a probability: "1%", "0.5%" or a fraction "0.01". Statements apply in order, so a later
// one overrides an earlier one for the hosts or links it selects.
//
// Thread safety: plain values; the free functions are stateless.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::netem {

// Limits. Every value read from a file, a flag or the control socket is checked against these.
constexpr int kHostsMax = 64;
constexpr int kMtuMin = 576;                           // the IPv4 minimum every host must accept
constexpr int kMtuMax = 9000;                          // jumbo frames
constexpr int kMtuDefault = 1500;                      // what paths across the internet carry
constexpr std::int64_t kDelayMaxUs = 10'000'000;       // one-way delay and jitter: 10 s
constexpr std::int64_t kQueueMaxUs = 10'000'000;       // queue limit: 10 s at the cap's rate
constexpr std::int64_t kRateMaxBps = 100'000'000'000;  // 100 Gbit/s
constexpr std::int64_t kRateMinBps = 8'000;            // 1 kB/s; below that a cap is a cut
constexpr int kStatementBytesMax = 1024;               // one topology line or control request
constexpr int kNameBytesMax = 24;                      // emulator names: [a-z0-9_-]
// Subnet of the hosts: host i has 10.77.0.(i+1)/24.
constexpr std::uint32_t kSubnet = (10u << 24) | (77u << 16);  // 10.77.0.0
constexpr int kSubnetPrefixLength = 24;
static_assert(kHostsMax + 1 < 255, "host addresses must fit in the /24 (no .0, no .255)");
static_assert(kMtuMin <= kMtuDefault && kMtuDefault <= kMtuMax);
static_assert(kDelayMaxUs < (std::int64_t{1} << 40), "times in ns must fit in int64 with room");

struct LinkParams {
  std::int64_t delay_us = 0;   // one-way propagation delay
  std::int64_t jitter_us = 0;  // each packet gets delay + uniform(-jitter, +jitter)
  double loss = 0;             // probability that a packet is dropped
  double reorder = 0;          // probability that a packet is held back reorder_gap_us longer
  std::int64_t reorder_gap_us = 1000;  //   and later packets overtake it
  bool operator==(const LinkParams&) const = default;
};

struct HostParams {
  std::int64_t egress_bps = 0;   // 0: unlimited
  std::int64_t ingress_bps = 0;  // 0: unlimited
  std::int64_t queue_us = 0;     // 0: automatic (QueueLimitUs)
  bool operator==(const HostParams&) const = default;
};

struct Topology {
  int hosts = 0;
  int mtu = kMtuDefault;
  std::uint64_t seed = 1;
  std::vector<HostParams> host;  // [hosts]
  std::vector<LinkParams> link;  // [hosts * hosts], link[a * hosts + b] is a -> b; diagonal unused

  LinkParams& Link(int a, int b) { return link[static_cast<std::size_t>(a * hosts + b)]; }
  const LinkParams& Link(int a, int b) const {
    return link[static_cast<std::size_t>(a * hosts + b)];
  }
  bool operator==(const Topology&) const = default;
};

// Builds a topology from statements (lines of a file, flags, --spec values). Empty lines and
// comments are skipped. False and *error (naming the line) if a statement is malformed, a value is
// out of its limits, or `hosts` is missing or given twice with different values.
bool ParseTopology(const std::vector<std::string>& lines, Topology* topology, std::string* error);

// Applies one host/link statement to a topology that already has its hosts (the live `set`
// command). `hosts`, `mtu` and `seed` are refused: they cannot change while the emulator runs.
bool ApplyStatement(std::string_view line, Topology* topology, std::string* error);

// The canonical text form; ParseTopology(SplitLines(TopologyText(t))) gives back t.
std::string TopologyText(const Topology& topology);
std::vector<std::string> SplitLines(std::string_view text);

// The queue limit of a host in microseconds: its own, or automatically the largest round trip over
// its links (2 x (delay + jitter)), at least 20 ms: a bottleneck buffer of about one
// bandwidth-delay product, what a single Reno/CUBIC flow needs to fill the link.
std::int64_t QueueLimitUs(const Topology& topology, int host);

// Value parsers, shared with the command line. False if `text` is not a valid value or out of
// range.
bool ParseDurationUs(std::string_view text, std::int64_t max_us, std::int64_t* us);
bool ParseRateBps(std::string_view text, std::int64_t* bps);
bool ParseProbability(std::string_view text, double* p);
// A host selector: index, "hI" or "*" (-1). `hosts` bounds the index.
bool ParseHostRef(std::string_view text, int hosts, bool allow_all, int* host);
// Names of emulators become parts of namespace names and paths: 1..kNameBytesMax of [a-z0-9_-].
bool ValidEmulatorName(std::string_view name);

std::string FormatDurationUs(std::int64_t us);
std::string FormatRateBps(std::int64_t bps);

// 10.77.0.(host+1), in host byte order, and as text.
std::uint32_t HostAddress(int host);
std::string HostAddressText(int host);
// The host whose address is `address` (host byte order), or -1.
int HostOfAddress(std::uint32_t address, int hosts);

}  // namespace shoal::netem
