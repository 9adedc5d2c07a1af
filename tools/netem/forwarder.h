// Forwarder: the emulator's packet loop. One thread, one epoll set over every host's TUN device,
// the control socket and a signalfd; a min-heap of packets ordered by the time they are due (a
// packet is due at its ingress time t2 and, behind a capped ingress, again at its delivery time t3;
// see shaper.h). Each wake-up reads up to kReadBatch packets per readable TUN device, then writes
// every packet that is due (up to kWriteBatch before looking at the devices again), then sleeps
// with epoll_pwait2 until the next packet is due (nanosecond timeout, timer slack 1 us).
//
// Only IPv4 packets addressed to another host of this emulator are forwarded; everything else
// (IPv6, other addresses) is dropped and counted, so no traffic ever leaves the emulated hosts.
//
// Offload mode (TUN devices with IFF_VNET_HDR and TSO, gso.h): a read may be a TCP super-packet of
// up to 64 KiB standing for several segments. Each segment passes the shaper as a packet of its
// own; the read moves as one piece (one read, one write: the point of offloads) when every segment
// is forwarded in order, and is cut into its segments when some are dropped or reordered, so that
// the survivors alone arrive, each at its own time. Counters count segments, as packets on a wire.
//
// Control protocol (a unix stream socket; docs/netem.md): one request per line, the reply is zero
// or more lines of text followed by a line "ok" or "error: <reason>". Requests:
//   ping | stats | stats reset | topology | down
//   cut A B [one-way] | heal A B [one-way]   (A, B: index, hI or *)
//   host ... | link ...                      (a topology statement, applied live)
//
// Thread safety: none; the object lives in the forwarder process's main thread.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "tools/netem/gso.h"
#include "tools/netem/shaper.h"
#include "tools/netem/topology.h"

namespace shoal::netem {

constexpr int kReadBatch = 64;    // packets read from one TUN device per wake-up
constexpr int kWriteBatch = 256;  // due packets written before the devices are looked at
constexpr std::int64_t kInFlightBytesMax = 256LL << 20;  // packet memory held in the delay line
constexpr int kControlConnectionsMax = 16;
// Waking from a sleep takes this VM 0.2-0.3 ms, so an idle link's packets are written that late.
// --spin-us wakes the forwarder earlier and has it poll (burning CPU) until the packet is due.
constexpr int kSpinMaxUs = 2000;
constexpr std::size_t kControlReplyBytesMax = 4u << 20;
static_assert(kInFlightBytesMax / (kMtuMax + 64) > 1000, "room for at least a 1000 jumbo frames");

// How late packets were written compared with their due time, for `stats`: a log2 histogram in
// microseconds.
struct Lateness {
  static constexpr int kBuckets = 24;  // [0,1) us, [1,2), [2,4), ..., [2^22, inf)
  std::uint64_t count = 0;
  std::int64_t sum_ns = 0;
  std::int64_t max_ns = 0;
  std::uint64_t bucket[kBuckets] = {};
  void Add(std::int64_t late_ns);
  // Upper bound in microseconds of the bucket that holds quantile q.
  double QuantileUs(double q) const;
};

class Forwarder {
 public:
  // Takes ownership of every fd: tun_fds[host] (non-blocking), the listening control socket
  // (non-blocking) and a signalfd for SIGINT, SIGTERM and SIGHUP.
  // spin_us: wake up this long before a packet is due and poll until then (see kSpinMaxUs).
  // offload: the TUN devices were made with IFF_VNET_HDR (netns.h, TunConfig::offload).
  Forwarder(const Topology& topology, std::vector<int> tun_fds, int control_listen_fd,
            int signal_fd, int spin_us, bool offload = false);
  ~Forwarder();
  Forwarder(const Forwarder&) = delete;
  Forwarder& operator=(const Forwarder&) = delete;

  // Runs until a `down` request or a signal. False and *error only on an error of the loop itself
  // (epoll), which is fatal.
  bool Run(std::string* error);
  // Why Run returned: "down requested" or "signal SIGTERM" (etc.).
  const std::string& stop_reason() const { return stop_reason_; }
  // Closes the TUN devices (they vanish: they are not persistent). Also done by the destructor.
  void CloseTuns();

 private:
  struct Slot {
    std::unique_ptr<std::uint8_t[]> data;
    bool big = false;         // capacity big_bytes_ (offload mode) rather than small_bytes_
    std::uint32_t bytes = 0;  // as read: the virtio_net_hdr (offload mode), then the IP packet
    OffloadedPacket packet;   // its segments (one unless a GSO super-packet)
    std::uint16_t src = 0;
    std::uint16_t dst = 0;
    bool past_ingress = false;  // due time is t3 (write) rather than t2 (ingress)
  };
  struct Due {
    std::int64_t at_ns;
    std::uint64_t seq;  // FIFO among equal times
    std::uint32_t slot;
  };
  struct HostIo {
    int tun_fd = -1;
    std::uint64_t rx_packets = 0;  // read from the host's TUN (sent by the host), in segments
    std::uint64_t rx_bytes = 0;    // IP bytes of those segments
    std::uint64_t tx_packets = 0;  // written to its TUN (received by the host), in segments
    std::uint64_t tx_bytes = 0;
    std::uint64_t dropped_not_ipv4 = 0;
    std::uint64_t dropped_foreign = 0;    // to an address that is no other host
    std::uint64_t dropped_no_memory = 0;  // delay line full (kInFlightBytesMax)
    std::uint64_t write_errors = 0;
  };
  struct Control {
    int fd = -1;
    std::string in;
    std::string out;
    bool close_after_write = false;
  };

  void ReadTun(int host);
  void Schedule(std::int64_t at_ns, std::uint32_t slot);
  // Writes or advances the due packets; false if there are more due than kWriteBatch allowed.
  bool ProcessDue(std::int64_t now_ns);
  bool AllocSlot(bool big, std::uint32_t* slot);
  void FreeSlot(std::uint32_t slot);
  // Offload mode: `slot` holds a super-packet of which only the segments with seg_at_[i] >= 0
  // survived; schedules each of them as a packet of its own at that time (past_ingress as given)
  // and frees `slot`.
  void Split(std::uint32_t slot, bool past_ingress);

  void AcceptControl();
  void ServeControl(std::size_t index, std::uint32_t events);
  void FlushControl(std::size_t index);
  void CloseControl(std::size_t index);
  std::string Handle(const std::string& request);
  std::string StatsText() const;
  void ResetStats();
  bool CutOrHeal(const std::string& request, bool cut, std::string* error);

  Topology topology_;
  Shaper shaper_;
  std::vector<HostIo> hosts_;
  int control_listen_fd_;
  int signal_fd_;
  int epoll_fd_ = -1;
  std::vector<Control> controls_;
  std::vector<Slot> slots_;
  std::vector<std::uint32_t> free_small_;
  std::vector<std::uint32_t> free_big_;
  std::vector<Due> heap_;
  std::uint64_t seq_ = 0;
  std::int64_t in_flight_bytes_ = 0;
  bool offload_;
  std::uint32_t hdr_bytes_;                  // kVnetHdrBytes in offload mode, else 0
  std::uint32_t small_bytes_;                // a slot for one packet of the MTU
  std::uint32_t big_bytes_;                  // offload mode: a slot for a super-packet
  std::unique_ptr<std::uint8_t[]> scratch_;  // reads that find no free memory go here
  std::vector<std::int64_t> seg_at_;         // per segment of the packet at hand: time, or -1
  std::uint64_t split_packets_ = 0;
  std::int64_t spin_ns_;
  std::int64_t spin_for_ns_ = 0;  // due time of the packet we woke early for, polling until then
  Lateness lateness_;
  bool stop_ = false;
  std::string stop_reason_;
};

}  // namespace shoal::netem
