#include "tools/netem/probe.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "tools/netem/netns.h"
#include "tools/netem/topology.h"

namespace shoal::netem {
namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

int MsLeft(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

// Closes the fds it holds on scope exit.
struct Fds {
  std::vector<int> fds;
  ~Fds() {
    for (int fd : fds) ::close(fd);
  }
  int Add(int fd) {
    if (fd >= 0) fds.push_back(fd);
    return fd;
  }
};

sockaddr_in AddressOf(int host, std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(HostAddress(host));
  a.sin_port = htons(port);
  return a;
}

// A socket of `type` created in the namespace of `host`; -1 and *error on failure.
int SocketIn(const std::string& emulator, int host, int type, std::string* error) {
  ScopedNetns in(NamespacePath(emulator, host));
  if (!in.ok()) {
    *error = "host " + std::to_string(host) + ": " + in.error() +
             (EmulatorRunning(emulator) ? "" : " (is emulator '" + emulator + "' up?)");
    return -1;
  }
  const int fd = ::socket(AF_INET, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) *error = std::string("socket: ") + std::strerror(errno);
  return fd;
}

// A listening TCP socket on `to`'s address with a port from the OS.
int Listen(const ProbeEnds& ends, std::uint16_t* port, std::string* error) {
  const int fd = SocketIn(ends.emulator, ends.to, SOCK_STREAM, error);
  if (fd < 0) return -1;
  sockaddr_in a = AddressOf(ends.to, 0);
  socklen_t len = sizeof(a);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::listen(fd, kProbeStreamsMax) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    *error = "listen on " + HostAddressText(ends.to) + ": " + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  *port = ntohs(a.sin_port);
  return fd;
}

bool WaitFd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, MsLeft(deadline));
    if (n < 0 && errno == EINTR) continue;
    return n == 1;
  }
}

// Connects from `from` to the listener; returns the connected fd or -1 (*error).
int Connect(const ProbeEnds& ends, std::uint16_t port, Clock::time_point deadline,
            std::string* error) {
  const int fd = SocketIn(ends.emulator, ends.from, SOCK_STREAM, error);
  if (fd < 0) return -1;
  const sockaddr_in a = AddressOf(ends.to, port);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) != 0 &&
      errno != EINPROGRESS) {
    *error = "connect: " + std::string(std::strerror(errno));
    ::close(fd);
    return -1;
  }
  int so_error = 0;
  socklen_t len = sizeof(so_error);
  if (!WaitFd(fd, POLLOUT, deadline)) {
    *error = "connect h" + std::to_string(ends.from) + " -> " + HostAddressText(ends.to) +
             ": no answer in time";
    ::close(fd);
    return -1;
  }
  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
  if (so_error != 0) {
    *error = "connect h" + std::to_string(ends.from) + " -> " + HostAddressText(ends.to) + ": " +
             std::strerror(so_error);
    ::close(fd);
    return -1;
  }
  return fd;
}

int Accept(int listen_fd, Clock::time_point deadline, std::string* error) {
  if (!WaitFd(listen_fd, POLLIN, deadline)) {
    *error = "accept: no connection in time";
    return -1;
  }
  const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) *error = std::string("accept: ") + std::strerror(errno);
  return fd;
}

bool ValidEnds(const ProbeEnds& ends, std::string* error) {
  if (ends.from == ends.to || ends.from < 0 || ends.to < 0 || ends.from >= kHostsMax ||
      ends.to >= kHostsMax) {
    *error = "probe: need two different hosts";
    return false;
  }
  return true;
}

}  // namespace

double MedianOf(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string SummaryMs(std::vector<double> ms) {
  if (ms.empty()) return "none";
  std::sort(ms.begin(), ms.end());
  char buf[128];
  std::snprintf(buf, sizeof(buf), "min %.3f median %.3f max %.3f", ms.front(), MedianOf(ms),
                ms.back());
  return buf;
}

bool MeasureConnectMs(const ProbeEnds& ends, int samples, std::chrono::milliseconds timeout,
                      std::vector<double>* ms, std::string* error) {
  if (!ValidEnds(ends, error)) return false;
  Fds fds;
  std::uint16_t port = 0;
  const int listen_fd = fds.Add(Listen(ends, &port, error));
  if (listen_fd < 0) return false;
  for (int i = 0; i < samples; i++) {
    const auto deadline = Clock::now() + timeout;
    const auto start = Clock::now();
    const int fd = Connect(ends, port, deadline, error);
    if (fd < 0) return false;
    ms->push_back(MsSince(start));
    ::close(fd);
    const int server = Accept(listen_fd, deadline, error);
    if (server < 0) return false;
    ::close(server);
  }
  return true;
}

bool MeasureRoundTripMs(const ProbeEnds& ends, int samples, std::chrono::milliseconds timeout,
                        std::vector<double>* ms, std::string* error) {
  if (!ValidEnds(ends, error)) return false;
  Fds fds;
  std::uint16_t port = 0;
  const int listen_fd = fds.Add(Listen(ends, &port, error));
  if (listen_fd < 0) return false;
  const auto setup_deadline = Clock::now() + timeout;
  const int client = fds.Add(Connect(ends, port, setup_deadline, error));
  if (client < 0) return false;
  const int server = fds.Add(Accept(listen_fd, setup_deadline, error));
  if (server < 0) return false;
  const int one = 1;
  ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  ::setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  for (int i = 0; i < samples; i++) {
    const auto deadline = Clock::now() + timeout;
    const auto start = Clock::now();
    char byte = static_cast<char>(i);
    if (::send(client, &byte, 1, MSG_NOSIGNAL) != 1 || !WaitFd(server, POLLIN, deadline) ||
        ::recv(server, &byte, 1, 0) != 1 || ::send(server, &byte, 1, MSG_NOSIGNAL) != 1 ||
        !WaitFd(client, POLLIN, deadline) || ::recv(client, &byte, 1, 0) != 1) {
      *error = "round trip h" + std::to_string(ends.from) + " <-> h" + std::to_string(ends.to) +
               " " + std::to_string(i + 1) + ": no echo within " + std::to_string(timeout.count()) +
               " ms";
      return false;
    }
    ms->push_back(MsSince(start));
  }
  return true;
}

bool MeasureThroughput(const ProbeEnds& ends, int streams, double seconds,
                       std::chrono::milliseconds connect_timeout, Throughput* result,
                       std::string* error) {
  if (!ValidEnds(ends, error)) return false;
  if (streams < 1 || streams > kProbeStreamsMax || !(seconds > 0) || seconds > kProbeSecondsMax) {
    *error = "throughput: 1.." + std::to_string(kProbeStreamsMax) +
             " streams, 0 < seconds <= " + std::to_string(static_cast<int>(kProbeSecondsMax));
    return false;
  }
  Fds fds;
  std::uint16_t port = 0;
  const int listen_fd = fds.Add(Listen(ends, &port, error));
  if (listen_fd < 0) return false;
  const auto setup_deadline = Clock::now() + connect_timeout;
  std::vector<int> senders;
  std::vector<int> receivers;
  for (int i = 0; i < streams; i++) {
    const int c = fds.Add(Connect(ends, port, setup_deadline, error));
    if (c < 0) return false;
    const int s = fds.Add(Accept(listen_fd, setup_deadline, error));
    if (s < 0) return false;
    senders.push_back(c);
    receivers.push_back(s);
  }
  const int ep = fds.Add(::epoll_create1(EPOLL_CLOEXEC));
  if (ep < 0) {
    *error = std::string("epoll_create1: ") + std::strerror(errno);
    return false;
  }
  // Senders are tagged with their index, receivers with index + kProbeStreamsMax.
  for (int i = 0; i < streams; i++) {
    epoll_event ev{};
    ev.events = EPOLLOUT;
    ev.data.u32 = static_cast<std::uint32_t>(i);
    epoll_ctl(ep, EPOLL_CTL_ADD, senders[static_cast<std::size_t>(i)], &ev);
    ev.events = EPOLLIN;
    ev.data.u32 = static_cast<std::uint32_t>(i + kProbeStreamsMax);
    epoll_ctl(ep, EPOLL_CTL_ADD, receivers[static_cast<std::size_t>(i)], &ev);
  }
  constexpr std::size_t kChunkBytes = 256 * 1024;
  auto out = std::make_unique<char[]>(kChunkBytes);
  auto in = std::make_unique<char[]>(kChunkBytes);
  std::memset(out.get(), 0x5a, kChunkBytes);
  const auto start = Clock::now();
  const auto half = start + std::chrono::duration_cast<Clock::duration>(
                                std::chrono::duration<double>(seconds / 2));
  const auto end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::uint64_t received = 0;
  std::uint64_t received_at_half = 0;
  bool half_seen = false;
  epoll_event events[2 * kProbeStreamsMax];
  while (Clock::now() < end) {
    const int n = epoll_wait(ep, events, 2 * kProbeStreamsMax, std::max(MsLeft(end), 1));
    if (n < 0 && errno != EINTR) {
      *error = std::string("epoll_wait: ") + std::strerror(errno);
      return false;
    }
    for (int i = 0; i < n; i++) {
      const std::uint32_t tag = events[i].data.u32;
      if (tag < static_cast<std::uint32_t>(kProbeStreamsMax)) {
        const ssize_t w = ::send(senders[tag], out.get(), kChunkBytes, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN) {
          *error = std::string("send: ") + std::strerror(errno);
          return false;
        }
      } else {
        const ssize_t r = ::recv(receivers[tag - kProbeStreamsMax], in.get(), kChunkBytes, 0);
        if (r > 0) received += static_cast<std::uint64_t>(r);
        if (r == 0 || (r < 0 && errno != EAGAIN)) {
          *error = "a stream ended early";
          return false;
        }
      }
    }
    if (!half_seen && Clock::now() >= half) {
      half_seen = true;
      received_at_half = received;
    }
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  result->seconds = elapsed;
  result->bytes = received;
  result->mbit_per_s = static_cast<double>(received) * 8 / elapsed / 1e6;
  result->mbit_per_s_second_half =
      static_cast<double>(received - received_at_half) * 8 / (elapsed - seconds / 2) / 1e6;
  return true;
}

bool MeasureUdpDelivery(const ProbeEnds& ends, int count, std::chrono::milliseconds wait,
                        UdpDelivery* result, std::string* error) {
  if (!ValidEnds(ends, error)) return false;
  if (count < 1 || count > kUdpDatagramsMax) {
    *error = "udp: 1.." + std::to_string(kUdpDatagramsMax) + " datagrams";
    return false;
  }
  Fds fds;
  const int receiver = fds.Add(SocketIn(ends.emulator, ends.to, SOCK_DGRAM, error));
  if (receiver < 0) return false;
  sockaddr_in a = AddressOf(ends.to, 0);
  socklen_t len = sizeof(a);
  if (::bind(receiver, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(receiver, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    *error = std::string("udp bind: ") + std::strerror(errno);
    return false;
  }
  const int sender = fds.Add(SocketIn(ends.emulator, ends.from, SOCK_DGRAM, error));
  if (sender < 0) return false;
  char payload[100] = {};
  result->sent = 0;
  result->received = 0;
  for (int i = 0; i < count; i++) {
    std::memcpy(payload, &i, sizeof(i));
    if (::sendto(sender, payload, sizeof(payload), 0, reinterpret_cast<sockaddr*>(&a), sizeof(a)) ==
        static_cast<ssize_t>(sizeof(payload))) {
      result->sent++;
    }
  }
  const auto deadline = Clock::now() + wait;
  while (result->received < result->sent && WaitFd(receiver, POLLIN, deadline)) {
    while (::recv(receiver, payload, sizeof(payload), 0) > 0) result->received++;
  }
  return true;
}

}  // namespace shoal::netem
