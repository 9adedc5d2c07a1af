#include "tools/netem/forwarder.h"

#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstring>
#include <ctime>

namespace shoal::netem {
namespace {

// epoll data: kind in the high 32 bits, index in the low ones.
enum class Kind : std::uint32_t { kTun = 1, kListen = 2, kSignal = 3, kControl = 4 };

std::uint64_t Tag(Kind kind, std::uint32_t index) {
  return (static_cast<std::uint64_t>(kind) << 32) | index;
}

std::int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Min-heap on (at_ns, seq) with the std heap functions (which build max-heaps).
template <typename T>
bool Later(const T& a, const T& b) {
  return a.at_ns != b.at_ns ? a.at_ns > b.at_ns : a.seq > b.seq;
}

std::vector<std::string> Words(const std::string& line) {
  std::vector<std::string> words;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) i++;
    std::size_t j = i;
    while (j < line.size() && line[j] != ' ' && line[j] != '\t') j++;
    if (j > i) words.push_back(line.substr(i, j - i));
    i = j;
  }
  return words;
}

}  // namespace

void Lateness::Add(std::int64_t late_ns) {
  late_ns = std::max<std::int64_t>(late_ns, 0);
  count++;
  sum_ns += late_ns;
  max_ns = std::max(max_ns, late_ns);
  const std::int64_t us = late_ns / 1000;
  int b = 0;
  while (b + 1 < kBuckets && (std::int64_t{1} << b) <= us) b++;
  bucket[b]++;
}

double Lateness::QuantileUs(double q) const {
  if (count == 0) return 0;
  const double target = q * static_cast<double>(count);
  std::uint64_t seen = 0;
  for (int b = 0; b < kBuckets; b++) {
    seen += bucket[b];
    if (static_cast<double>(seen) >= target) return static_cast<double>(std::int64_t{1} << b);
  }
  return static_cast<double>(max_ns) / 1000;
}

Forwarder::Forwarder(const Topology& topology, std::vector<int> tun_fds, int control_listen_fd,
                     int signal_fd, int spin_us, bool offload)
    : topology_(topology),
      shaper_(topology),
      control_listen_fd_(control_listen_fd),
      signal_fd_(signal_fd),
      offload_(offload),
      hdr_bytes_(offload ? kVnetHdrBytes : 0),
      small_bytes_(hdr_bytes_ + static_cast<std::uint32_t>(topology.mtu) + 64),
      big_bytes_(offload ? kVnetHdrBytes + kGsoPacketMax : small_bytes_),
      scratch_(std::make_unique<std::uint8_t[]>(big_bytes_)),
      spin_ns_(static_cast<std::int64_t>(spin_us) * 1000) {
  hosts_.resize(tun_fds.size());
  for (std::size_t h = 0; h < tun_fds.size(); h++) hosts_[h].tun_fd = tun_fds[h];
}

Forwarder::~Forwarder() {
  CloseTuns();
  for (Control& c : controls_) ::close(c.fd);
  for (int fd : {control_listen_fd_, signal_fd_, epoll_fd_}) {
    if (fd >= 0) ::close(fd);
  }
}

void Forwarder::CloseTuns() {
  for (HostIo& h : hosts_) {
    if (h.tun_fd >= 0) ::close(h.tun_fd);
    h.tun_fd = -1;
  }
}

bool Forwarder::Run(std::string* error) {
  // Timers fire within 1 us of their time rather than the default 50 us slack.
  prctl(PR_SET_TIMERSLACK, 1UL);
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) {
    *error = std::string("epoll_create1: ") + std::strerror(errno);
    return false;
  }
  auto add = [&](int fd, std::uint64_t tag) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag;
    return epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) == 0;
  };
  bool ok =
      add(control_listen_fd_, Tag(Kind::kListen, 0)) && add(signal_fd_, Tag(Kind::kSignal, 0));
  for (std::size_t h = 0; h < hosts_.size() && ok; h++) {
    ok = add(hosts_[h].tun_fd, Tag(Kind::kTun, static_cast<std::uint32_t>(h)));
  }
  if (!ok) {
    *error = std::string("epoll_ctl: ") + std::strerror(errno);
    return false;
  }
  constexpr int kEventsMax = 64;
  epoll_event events[kEventsMax];
  bool more_due = false;
  while (!stop_) {
    timespec timeout{};
    timespec* timeout_ptr = &timeout;  // zero: poll
    if (!more_due) {
      if (heap_.empty()) {
        timeout_ptr = nullptr;  // nothing due: sleep until a packet or a request arrives
      } else {
        const std::int64_t due_ns = heap_.front().at_ns;
        std::int64_t wait_ns = std::max<std::int64_t>(due_ns - NowNs(), 0);
        // Spin only before a packet that follows a long sleep, when the CPU may have gone idle
        // and waking takes long; between packets of a busy link the sleeps are short anyway, and
        // spinning there would only burn the CPU (and at real-time priority get throttled).
        if (spin_ns_ > 0) {
          if (due_ns <= spin_for_ns_) {
            wait_ns = 0;
          } else if (wait_ns > 2 * spin_ns_) {
            wait_ns -= spin_ns_;
            spin_for_ns_ = due_ns;
          }
        }
        timeout.tv_sec = static_cast<time_t>(wait_ns / 1'000'000'000);
        timeout.tv_nsec = static_cast<long>(wait_ns % 1'000'000'000);
      }
    }
    const int n = epoll_pwait2(epoll_fd_, events, kEventsMax, timeout_ptr, nullptr);
    if (n < 0) {
      if (errno == EINTR) continue;
      *error = std::string("epoll_pwait2: ") + std::strerror(errno);
      return false;
    }
    for (int i = 0; i < n; i++) {
      const Kind kind = static_cast<Kind>(events[i].data.u64 >> 32);
      const std::uint32_t index = static_cast<std::uint32_t>(events[i].data.u64);
      switch (kind) {
        case Kind::kTun:
          ReadTun(static_cast<int>(index));
          break;
        case Kind::kListen:
          AcceptControl();
          break;
        case Kind::kSignal: {
          signalfd_siginfo info;
          if (::read(signal_fd_, &info, sizeof(info)) == sizeof(info)) {
            stop_ = true;
            stop_reason_ = std::string("signal ") + sigabbrev_np(static_cast<int>(info.ssi_signo));
          }
          break;
        }
        case Kind::kControl:
          // The index may be stale if an earlier event of this batch closed a connection; the
          // fd check finds the connection by what epoll reported.
          for (std::size_t c = 0; c < controls_.size(); c++) {
            if (static_cast<std::uint32_t>(controls_[c].fd) == index) {
              ServeControl(c, events[i].events);
              break;
            }
          }
          break;
      }
    }
    more_due = ProcessDue(NowNs());
  }
  return true;
}

bool Forwarder::AllocSlot(bool big, std::uint32_t* slot) {
  const std::uint32_t bytes = big ? big_bytes_ : small_bytes_;
  if (in_flight_bytes_ + bytes > kInFlightBytesMax) return false;
  std::vector<std::uint32_t>& free = big ? free_big_ : free_small_;
  if (free.empty()) {
    slots_.emplace_back();
    slots_.back().data = std::make_unique<std::uint8_t[]>(bytes);
    slots_.back().big = big;
    *slot = static_cast<std::uint32_t>(slots_.size() - 1);
  } else {
    *slot = free.back();
    free.pop_back();
  }
  in_flight_bytes_ += bytes;
  return true;
}

void Forwarder::FreeSlot(std::uint32_t slot) {
  const bool big = slots_[slot].big;
  (big ? free_big_ : free_small_).push_back(slot);
  in_flight_bytes_ -= big ? big_bytes_ : small_bytes_;
}

void Forwarder::Schedule(std::int64_t at_ns, std::uint32_t slot) {
  heap_.push_back(Due{at_ns, seq_++, slot});
  std::push_heap(heap_.begin(), heap_.end(), Later<Due>);
}

namespace {

// IP bytes on the wire of a read: every segment carries the headers.
std::uint64_t WireBytes(const OffloadedPacket& packet, std::uint32_t ip_bytes) {
  return ip_bytes + std::uint64_t{packet.segments - 1} * packet.header_bytes;
}

}  // namespace

void Forwarder::ReadTun(int host) {
  HostIo& io = hosts_[static_cast<std::size_t>(host)];
  for (int i = 0; i < kReadBatch; i++) {
    // Offload mode reads into a big slot; a packet that fits a small one moves there, so that
    // the many ACKs and short packets do not each hold 64 KiB of the delay line.
    std::uint32_t slot = 0;
    const bool have_slot = AllocSlot(offload_, &slot);
    std::uint8_t* buf = have_slot ? slots_[slot].data.get() : scratch_.get();
    const ssize_t n = ::read(io.tun_fd, buf, big_bytes_);
    if (n <= 0) {
      if (have_slot) FreeSlot(slot);
      return;  // EAGAIN: drained (other errors: the device is gone; teardown is under way)
    }
    const std::int64_t now_ns = NowNs();
    const std::uint32_t bytes = static_cast<std::uint32_t>(n);
    OffloadedPacket packet;
    // IPv4 only, to another host, and every packet (each segment of a super-packet) at most the
    // MTU: a longer read was cut short, and a segment must fit a small slot when it is split.
    const std::uint32_t mtu = static_cast<std::uint32_t>(topology_.mtu);
    bool valid = bytes >= hdr_bytes_ + 20 && (buf[hdr_bytes_] >> 4) == 4;
    if (valid && offload_) valid = ParseOffloaded({buf, bytes}, &packet);
    const std::uint32_t ip_bytes = bytes > hdr_bytes_ ? bytes - hdr_bytes_ : 0;
    valid = valid && (packet.gso ? packet.header_bytes + packet.gso_size <= mtu : ip_bytes <= mtu);
    io.rx_packets += packet.segments;
    io.rx_bytes += valid ? WireBytes(packet, ip_bytes) : ip_bytes;
    if (!have_slot) {
      io.dropped_no_memory++;
      continue;
    }
    int dst = -1;
    if (!valid) {
      io.dropped_not_ipv4++;
    } else {
      const std::uint8_t* ip = buf + hdr_bytes_;
      const std::uint32_t daddr = (std::uint32_t{ip[16]} << 24) | (std::uint32_t{ip[17]} << 16) |
                                  (std::uint32_t{ip[18]} << 8) | ip[19];
      dst = HostOfAddress(daddr, topology_.hosts);
      if (dst < 0 || dst == host) {
        io.dropped_foreign++;
        dst = -1;
      }
    }
    if (dst < 0) {
      FreeSlot(slot);
      continue;
    }
    if (offload_ && bytes <= small_bytes_) {
      std::uint32_t small = 0;
      if (!AllocSlot(false, &small)) {
        io.dropped_no_memory++;
        FreeSlot(slot);
        continue;
      }
      std::memcpy(slots_[small].data.get(), slots_[slot].data.get(), bytes);
      FreeSlot(slot);
      slot = small;
    }
    // Steps 2-5 of the shaper for every segment, as if they had been read one after another.
    seg_at_.assign(packet.segments, -1);
    std::uint32_t forwarded = 0;
    bool any_reordered = false;
    std::int64_t arrive_ns = 0;
    for (std::uint32_t k = 0; k < packet.segments; k++) {
      std::int64_t t2 = 0;
      bool reordered = false;
      if (shaper_.Egress(now_ns, host, dst, SegmentIpBytes(packet, k, ip_bytes), &t2, &reordered) ==
          Verdict::kForward) {
        seg_at_[k] = t2;
        arrive_ns = std::max(arrive_ns, t2);
        forwarded++;
        any_reordered = any_reordered || reordered;
      }
    }
    Slot& s = slots_[slot];
    s.bytes = bytes;
    s.packet = packet;
    s.src = static_cast<std::uint16_t>(host);
    s.dst = static_cast<std::uint16_t>(dst);
    s.past_ingress = false;
    if (forwarded == 0) {
      FreeSlot(slot);
    } else if (!packet.gso || (forwarded == packet.segments && !any_reordered)) {
      // One piece, due when its last segment arrives (as a receiver's GRO would hand it up).
      Schedule(arrive_ns, slot);
    } else {
      Split(slot, false);
    }
  }
}

void Forwarder::Split(std::uint32_t slot, bool past_ingress) {
  split_packets_++;
  const std::uint8_t* data = slots_[slot].data.get();  // stable: slots own their buffers
  const std::uint32_t bytes = slots_[slot].bytes;
  const OffloadedPacket packet = slots_[slot].packet;
  const std::uint16_t src = slots_[slot].src;
  const std::uint16_t dst = slots_[slot].dst;
  for (std::uint32_t k = 0; k < packet.segments; k++) {
    if (seg_at_[k] < 0) continue;
    std::uint32_t seg = 0;
    if (!AllocSlot(false, &seg)) {
      hosts_[src].dropped_no_memory++;
      continue;
    }
    Slot& s = slots_[seg];
    s.bytes = WriteSegment({data, bytes}, packet, k, s.data.get());
    s.packet = OffloadedPacket{};
    s.src = src;
    s.dst = dst;
    s.past_ingress = past_ingress;
    Schedule(seg_at_[k], seg);
  }
  FreeSlot(slot);
}

bool Forwarder::ProcessDue(std::int64_t now_ns) {
  for (int done = 0; done < kWriteBatch; done++) {
    if (heap_.empty() || heap_.front().at_ns > now_ns) return false;
    std::pop_heap(heap_.begin(), heap_.end(), Later<Due>);
    const Due due = heap_.back();
    heap_.pop_back();
    Slot& s = slots_[due.slot];
    const std::uint32_t ip_bytes = s.bytes - hdr_bytes_;
    if (!s.past_ingress) {
      // Step 6 for every segment; they reach the ingress together.
      seg_at_.assign(s.packet.segments, -1);
      std::uint32_t admitted = 0;
      std::int64_t deliver_ns = due.at_ns;
      for (std::uint32_t k = 0; k < s.packet.segments; k++) {
        std::int64_t t3 = 0;
        if (shaper_.Ingress(due.at_ns, s.dst, SegmentIpBytes(s.packet, k, ip_bytes), &t3) ==
            Verdict::kForward) {
          seg_at_[k] = t3;
          deliver_ns = std::max(deliver_ns, t3);
          admitted++;
        }
      }
      if (admitted == 0) {
        FreeSlot(due.slot);
        continue;
      }
      if (admitted < s.packet.segments) {
        Split(due.slot, true);
        continue;
      }
      if (deliver_ns > due.at_ns) {  // behind a capped ingress: due again when serialized
        s.past_ingress = true;
        Schedule(deliver_ns, due.slot);
        continue;
      }
    }
    HostIo& io = hosts_[s.dst];
    lateness_.Add(NowNs() - due.at_ns);  // the time of this write, not of the wake-up
    if (io.tun_fd >= 0 &&
        ::write(io.tun_fd, s.data.get(), s.bytes) == static_cast<ssize_t>(s.bytes)) {
      io.tx_packets += s.packet.segments;
      io.tx_bytes += WireBytes(s.packet, ip_bytes);
    } else {
      io.write_errors++;
    }
    FreeSlot(due.slot);
  }
  return !heap_.empty() && heap_.front().at_ns <= now_ns;
}

void Forwarder::AcceptControl() {
  for (;;) {
    const int fd = ::accept4(control_listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    if (controls_.size() >= static_cast<std::size_t>(kControlConnectionsMax)) {
      static constexpr char kBusy[] = "error: too many control connections\n";
      [[maybe_unused]] const ssize_t w = ::write(fd, kBusy, sizeof(kBusy) - 1);
      ::close(fd);
      continue;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = Tag(Kind::kControl, static_cast<std::uint32_t>(fd));
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      ::close(fd);
      continue;
    }
    controls_.push_back(Control{fd, {}, {}, false});
  }
}

void Forwarder::CloseControl(std::size_t index) {
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, controls_[index].fd, nullptr);
  ::close(controls_[index].fd);
  controls_.erase(controls_.begin() + static_cast<std::ptrdiff_t>(index));
}

void Forwarder::FlushControl(std::size_t index) {
  Control& c = controls_[index];
  while (!c.out.empty()) {
    const ssize_t w = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EAGAIN) break;
      CloseControl(index);
      return;
    }
    c.out.erase(0, static_cast<std::size_t>(w));
  }
  if (c.out.empty() && c.close_after_write) {
    CloseControl(index);
    return;
  }
  epoll_event ev{};
  ev.events = EPOLLIN | (c.out.empty() ? 0u : static_cast<std::uint32_t>(EPOLLOUT));
  ev.data.u64 = Tag(Kind::kControl, static_cast<std::uint32_t>(c.fd));
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
}

void Forwarder::ServeControl(std::size_t index, std::uint32_t events) {
  if ((events & EPOLLIN) != 0) {
    char buf[4096];
    const ssize_t n = ::read(controls_[index].fd, buf, sizeof(buf));
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
      CloseControl(index);
      return;
    }
    if (n > 0) controls_[index].in.append(buf, static_cast<std::size_t>(n));
    Control& c = controls_[index];
    std::size_t newline;
    while ((newline = c.in.find('\n')) != std::string::npos) {
      std::string request = c.in.substr(0, newline);
      c.in.erase(0, newline + 1);
      if (!request.empty() && request.back() == '\r') request.pop_back();
      c.out += Handle(request);
      if (c.out.size() > kControlReplyBytesMax) {
        c.out = "error: reply too long\n";
        c.close_after_write = true;
      }
    }
    if (c.in.size() > static_cast<std::size_t>(kStatementBytesMax)) {
      c.out += "error: request longer than " + std::to_string(kStatementBytesMax) + " bytes\n";
      c.in.clear();
      c.close_after_write = true;
    }
  }
  FlushControl(index);
}

bool Forwarder::CutOrHeal(const std::string& request, bool cut, std::string* error) {
  const std::vector<std::string> w = Words(request);
  int a = 0;
  int b = 0;
  const bool one_way = w.size() == 4 && w[3] == "one-way";
  if ((w.size() != 3 && !one_way) || !ParseHostRef(w[1], topology_.hosts, true, &a) ||
      !ParseHostRef(w[2], topology_.hosts, true, &b) || (a >= 0 && a == b)) {
    *error = "usage: " + w[0] + " A B [one-way] (A, B: two hosts, index, hI or *)";
    return false;
  }
  for (int src = 0; src < topology_.hosts; src++) {
    for (int dst = 0; dst < topology_.hosts; dst++) {
      if (src == dst) continue;
      const bool forward = (a < 0 || a == src) && (b < 0 || b == dst);
      const bool backward = !one_way && (a < 0 || a == dst) && (b < 0 || b == src);
      if (forward || backward) shaper_.SetCut(src, dst, cut);
    }
  }
  return true;
}

std::string Forwarder::Handle(const std::string& request) {
  const std::vector<std::string> w = Words(request);
  if (w.empty()) return "error: empty request\n";
  const std::string& verb = w[0];
  std::string error;
  if (verb == "ping" && w.size() == 1) return "ok\n";
  if (verb == "stats" && w.size() == 1) return StatsText() + "ok\n";
  if (verb == "stats" && w.size() == 2 && w[1] == "reset") {
    ResetStats();
    return "ok\n";
  }
  if (verb == "topology" && w.size() == 1) {
    std::string text = TopologyText(shaper_.topology());
    for (int a = 0; a < topology_.hosts; a++) {
      for (int b = 0; b < topology_.hosts; b++) {
        if (a != b && shaper_.IsCut(a, b)) {
          text += "# cut " + std::to_string(a) + " " + std::to_string(b) + "\n";
        }
      }
    }
    return text + "ok\n";
  }
  if (verb == "down" && w.size() == 1) {
    stop_ = true;
    stop_reason_ = "down requested";
    return "ok\n";
  }
  if (verb == "cut" || verb == "heal") {
    if (!CutOrHeal(request, verb == "cut", &error)) return "error: " + error + "\n";
    return "ok\n";
  }
  if (verb == "host" || verb == "link") {
    Topology changed = shaper_.topology();
    if (!ApplyStatement(request, &changed, &error)) return "error: " + error + "\n";
    shaper_.SetTopology(changed);
    return "ok\n";
  }
  return "error: unknown request '" + request +
         "' (ping, stats, stats reset, topology, down, cut, heal, host, link)\n";
}

std::string Forwarder::StatsText() const {
  std::string out;
  auto u = [](std::uint64_t v) { return std::to_string(v); };
  for (int h = 0; h < topology_.hosts; h++) {
    const HostIo& io = hosts_[static_cast<std::size_t>(h)];
    const HostCounters& hc = shaper_.host_counters(h);
    out += "host " + std::to_string(h) + " addr " + HostAddressText(h) + " sent_packets " +
           u(io.rx_packets) + " sent_bytes " + u(io.rx_bytes) + " received_packets " +
           u(io.tx_packets) + " received_bytes " + u(io.tx_bytes) + " dropped_egress_queue " +
           u(hc.dropped_egress_queue) + " dropped_ingress_queue " + u(hc.dropped_ingress_queue) +
           " dropped_not_ipv4 " + u(io.dropped_not_ipv4) + " dropped_foreign " +
           u(io.dropped_foreign) + " dropped_no_memory " + u(io.dropped_no_memory) +
           " write_errors " + u(io.write_errors) + "\n";
  }
  for (int a = 0; a < topology_.hosts; a++) {
    for (int b = 0; b < topology_.hosts; b++) {
      if (a == b) continue;
      const LinkCounters& c = shaper_.link_counters(a, b);
      if (c.packets + c.dropped_cut + c.dropped_loss == 0 && !shaper_.IsCut(a, b)) continue;
      out += "link " + std::to_string(a) + " " + std::to_string(b) + " packets " + u(c.packets) +
             " bytes " + u(c.bytes) + " dropped_cut " + u(c.dropped_cut) + " dropped_loss " +
             u(c.dropped_loss) + " reordered " + u(c.reordered) + " cut " +
             (shaper_.IsCut(a, b) ? "1" : "0") + "\n";
    }
  }
  char late[256];
  const double mean_us = lateness_.count == 0 ? 0
                                              : static_cast<double>(lateness_.sum_ns) / 1000 /
                                                    static_cast<double>(lateness_.count);
  std::snprintf(late, sizeof(late),
                "lateness count %llu mean_us %.1f p50_us_below %.0f p99_us_below %.0f max_us "
                "%.1f\n",
                static_cast<unsigned long long>(lateness_.count), mean_us,
                lateness_.QuantileUs(0.5), lateness_.QuantileUs(0.99),
                static_cast<double>(lateness_.max_ns) / 1000);
  out += late;
  out += "delay_line packets " + u(heap_.size()) + " bytes_reserved " +
         std::to_string(in_flight_bytes_) + "\n";
  out += std::string("forwarder offload ") + (offload_ ? "1" : "0") + " split_packets " +
         u(split_packets_) + "\n";
  return out;
}

void Forwarder::ResetStats() {
  shaper_.ResetCounters();
  for (HostIo& io : hosts_) {
    const int fd = io.tun_fd;
    io = HostIo{};
    io.tun_fd = fd;
  }
  lateness_ = Lateness{};
  split_packets_ = 0;
}

}  // namespace shoal::netem
