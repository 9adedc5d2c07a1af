// Helpers for multi-process tests (tests/mp): real processes, real sockets, and a deadline on
// every wait. Nothing here sleeps to synchronise: waits are poll(2) on a socket, an inotify
// descriptor or a pidfd, bounded by a shoal::Deadline.
//
//   TempDir        a mkdtemp directory, removed with its contents by the destructor.
//   ChildProcess   posix_spawn with stdout/stderr to files; WaitExit with a deadline; SIGKILL and
//                  reap in the destructor, so a failing test never leaves a process behind.
//   ReadPortFile   waits (inotify) for a port file written atomically by the child.
//   FramedClient   a blocking-with-deadline control connection speaking shoal frames (codec.h),
//                  plus raw byte sends for malformed input.
//
// Thread safety: none; each object belongs to one test thread. Header-only.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "shoal/common/clock.h"
#include "shoal/common/limits.h"
#include "shoal/status.hpp"
#include "shoal/net/codec.h"
#include "shoal/net/messages.h"

extern char** environ;

namespace shoal::mp {

inline std::string ErrnoText(const std::string& what) { return what + ": " + std::strerror(errno); }

// poll(2) on one descriptor until `events` or the deadline. Returns the revents, 0 on timeout.
inline short PollOne(int fd, short events, const Deadline& deadline) {
  for (;;) {
    TimeMs remaining_ms = deadline.remaining_ms();
    int timeout_ms = static_cast<int>(std::min<TimeMs>(remaining_ms, 60'000));
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, timeout_ms);
    if (n > 0) return p.revents;
    if (n < 0 && errno != EINTR) return POLLERR;
    if (n == 0 && deadline.passed()) return 0;
  }
}

inline std::string ReadWholeFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// ---------------------------------------------------------------------------------------------

class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "shoal-mp-XXXXXX").string();
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) != nullptr) path_ = buf.data();
  }
  ~TempDir() {
    if (path_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  bool ok() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// ---------------------------------------------------------------------------------------------

// A child process. The destructor SIGKILLs it if it still runs and always reaps it.
class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess() { KillAndReap(); }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Starts argv[0] (a path) with `argv`; stdout and stderr go to the given files (truncated).
  Status Spawn(const std::vector<std::string>& argv, const std::string& stdout_path,
               const std::string& stderr_path) {
    if (pid_ > 0) return Status(SHOAL_ERR_INVALID_ARGUMENT, "child already spawned");
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, stdout_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, stderr_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid = 0;
    int rc = ::posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      return Status(SHOAL_ERR_IO, "posix_spawn " + argv[0] + ": " + std::strerror(rc));
    }
    pid_ = pid;
    exited_ = false;
    // A pidfd lets waits poll for the exit instead of sleeping. Kernels before 5.3 lack it; then
    // WaitExit falls back to short poll timeouts.
    pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    return Status::Ok();
  }

  pid_t pid() const { return pid_; }
  int pidfd() const { return pidfd_; }
  // True once the exit was observed (and the process reaped).
  bool exited() const { return exited_; }

  // True while the process has not exited. Reaps it if it has (kill(pid, 0) alone would report a
  // zombie as alive).
  bool Running() {
    if (pid_ <= 0 || exited_) return false;
    if (::kill(pid_, 0) != 0) return false;
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      wait_status_ = status;
      return false;
    }
    return true;
  }

  // Waits until the process exits or the deadline passes. Returns the waitpid status, or nothing
  // on timeout.
  std::optional<int> WaitExit(const Deadline& deadline) {
    if (pid_ <= 0) return std::nullopt;
    for (;;) {
      if (!Running()) return exited_ ? std::optional<int>(wait_status_) : std::nullopt;
      if (deadline.passed()) return std::nullopt;
      if (pidfd_ >= 0) {
        PollOne(pidfd_, POLLIN, deadline);
      } else {
        PollOne(-1, 0, Deadline::At(std::min(deadline.at_ms(), MonotonicNowMs() + 10)));
      }
    }
  }

  // Sends `signal_number` and waits for the exit. Returns the waitpid status.
  std::optional<int> Signal(int signal_number, const Deadline& deadline) {
    if (!Running()) return exited_ ? std::optional<int>(wait_status_) : std::nullopt;
    ::kill(pid_, signal_number);
    return WaitExit(deadline);
  }

  void KillAndReap() {
    if (pid_ > 0 && !exited_) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
      exited_ = true;
      wait_status_ = status;
    }
    if (pidfd_ >= 0) {
      ::close(pidfd_);
      pidfd_ = -1;
    }
  }

 private:
  pid_t pid_ = -1;
  int pidfd_ = -1;
  bool exited_ = false;
  int wait_status_ = 0;
};

inline std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "wait status " + std::to_string(status);
}

// ---------------------------------------------------------------------------------------------

// Waits until `path` holds a port number (written atomically by rename) and returns it. Fails
// early if `child` exits first. Watches the directory with inotify, so there is no polling delay.
inline Status ReadPortFile(const std::string& path, const Deadline& deadline, ChildProcess* child,
                           std::uint16_t* port) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  int inotify_fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd < 0) return Status(SHOAL_ERR_IO, ErrnoText("inotify_init1"));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{inotify_fd};
  if (::inotify_add_watch(inotify_fd, dir.c_str(), IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE) < 0) {
    return Status(SHOAL_ERR_IO, ErrnoText("inotify_add_watch " + dir));
  }
  for (;;) {
    // Check after arming the watch, so a rename between the check and the poll is not missed.
    std::ifstream in(path);
    unsigned long value = 0;
    if (in >> value) {
      if (value == 0 || value > 65535) {
        return Status(SHOAL_ERR_PROTOCOL, "port file " + path + " holds " + std::to_string(value));
      }
      *port = static_cast<std::uint16_t>(value);
      return Status::Ok();
    }
    if (child != nullptr && !child->Running()) {
      return Status(SHOAL_ERR_IO, "the child exited before writing " + path);
    }
    if (deadline.passed()) return Status(SHOAL_ERR_TIMEOUT, "no port in " + path + " in time");
    pollfd fds[2] = {{inotify_fd, POLLIN, 0}, {child ? child->pidfd() : -1, POLLIN, 0}};
    TimeMs wait_ms = deadline.remaining_ms();
    if (child != nullptr && child->pidfd() < 0) wait_ms = std::min<TimeMs>(wait_ms, 10);
    int n = ::poll(fds, 2, static_cast<int>(std::min<TimeMs>(wait_ms, 60'000)));
    if (n > 0 && (fds[0].revents & POLLIN)) {
      char events[4096];
      while (::read(inotify_fd, events, sizeof(events)) > 0) {
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------

// One TCP connection with every operation bounded by a deadline. Errors: SHOAL_ERR_TIMEOUT (the
// deadline passed), SHOAL_ERR_PEER_LOST (the other side closed or reset), SHOAL_ERR_PROTOCOL (a
// frame did not decode), SHOAL_ERR_IO (anything else).
class FramedClient {
 public:
  FramedClient() = default;
  ~FramedClient() { Close(); }
  FramedClient(FramedClient&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  FramedClient& operator=(FramedClient&& o) noexcept {
    if (this != &o) {
      Close();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  FramedClient(const FramedClient&) = delete;
  FramedClient& operator=(const FramedClient&) = delete;

  // Starts a non-blocking connect to host:port (IPv4 literal), from `source_ip` if given.
  // Finish with FinishConnect(); Connect() does both.
  Status StartConnect(const std::string& host, std::uint16_t port,
                      const std::string& source_ip = "") {
    Close();
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return Status(SHOAL_ERR_IO, ErrnoText("socket"));
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (!source_ip.empty()) {
      sockaddr_in src{};
      src.sin_family = AF_INET;
      if (::inet_pton(AF_INET, source_ip.c_str(), &src.sin_addr) != 1) {
        return Status(SHOAL_ERR_INVALID_ARGUMENT, "bad source address " + source_ip);
      }
      if (::bind(fd_, reinterpret_cast<sockaddr*>(&src), sizeof(src)) != 0) {
        return Status(SHOAL_ERR_IO, ErrnoText("bind " + source_ip));
      }
    }
    sockaddr_in dst{};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(port);
    if (::inet_pton(AF_INET, host.c_str(), &dst.sin_addr) != 1) {
      return Status(SHOAL_ERR_INVALID_ARGUMENT, "bad address " + host);
    }
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&dst), sizeof(dst)) != 0 &&
        errno != EINPROGRESS) {
      return Status(SHOAL_ERR_IO, ErrnoText("connect " + host + ":" + std::to_string(port)));
    }
    return Status::Ok();
  }

  Status FinishConnect(const Deadline& deadline) {
    if (fd_ < 0) return Status(SHOAL_ERR_IO, "not connected");
    short revents = PollOne(fd_, POLLOUT, deadline);
    if (revents == 0) return Status(SHOAL_ERR_TIMEOUT, "connect timed out");
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return Status(SHOAL_ERR_IO, std::string("connect: ") + std::strerror(err));
    return Status::Ok();
  }

  Status Connect(const std::string& host, std::uint16_t port, const Deadline& deadline,
                 const std::string& source_ip = "") {
    Status s = StartConnect(host, port, source_ip);
    if (!s.ok()) return s;
    return FinishConnect(deadline);
  }

  bool connected() const { return fd_ >= 0; }
  int fd() const { return fd_; }

  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Half-close: the other side reads end of stream; we can still read its answers.
  void ShutdownWrite() {
    if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
  }

  Status SendBytes(const std::uint8_t* data, std::size_t size, const Deadline& deadline) {
    std::size_t sent = 0;
    while (sent < size) {
      ssize_t n = ::send(fd_, data + sent, size - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (PollOne(fd_, POLLOUT, deadline) == 0)
          return Status(SHOAL_ERR_TIMEOUT, "send timed out");
        continue;
      }
      if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
        return Status(SHOAL_ERR_PEER_LOST, ErrnoText("send"));
      }
      return Status(SHOAL_ERR_IO, ErrnoText("send"));
    }
    return Status::Ok();
  }
  Status SendBytes(const std::vector<std::uint8_t>& bytes, const Deadline& deadline) {
    return SendBytes(bytes.data(), bytes.size(), deadline);
  }

  Status Send(const net::Message& message, const Deadline& deadline) {
    std::vector<std::uint8_t> frame;
    net::Encode(message, &frame);
    return SendBytes(frame, deadline);
  }

  // Reads exactly `size` bytes.
  Status RecvBytes(std::uint8_t* data, std::size_t size, const Deadline& deadline) {
    std::size_t got = 0;
    while (got < size) {
      ssize_t n = ::recv(fd_, data + got, size - got, 0);
      if (n > 0) {
        got += static_cast<std::size_t>(n);
        continue;
      }
      if (n == 0) return Status(SHOAL_ERR_PEER_LOST, "connection closed by the other side");
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (PollOne(fd_, POLLIN, deadline) == 0) return Status(SHOAL_ERR_TIMEOUT, "recv timed out");
        continue;
      }
      if (errno == ECONNRESET) return Status(SHOAL_ERR_PEER_LOST, "connection reset");
      return Status(SHOAL_ERR_IO, ErrnoText("recv"));
    }
    return Status::Ok();
  }

  // Reads one whole frame and decodes it.
  Status Recv(net::Message* out, const Deadline& deadline) {
    std::uint8_t header[net::kHeaderBytes];
    Status s = RecvBytes(header, sizeof(header), deadline);
    if (!s.ok()) return s;
    net::FrameHeader h;
    s = net::DecodeHeader(header, limits::kControlPayloadBytesMax, &h);
    if (!s.ok()) return s;
    std::vector<std::uint8_t> payload(h.payload_bytes);
    s = RecvBytes(payload.data(), payload.size(), deadline);
    if (!s.ok()) return s;
    return net::DecodePayload(h.type, payload.data(), payload.size(), out);
  }

  // Like Recv, but skips Heartbeats.
  Status RecvSkippingHeartbeats(net::Message* out, const Deadline& deadline) {
    for (;;) {
      Status s = Recv(out, deadline);
      if (!s.ok() || !std::holds_alternative<net::Heartbeat>(*out)) return s;
    }
  }

  // Reads and discards until the other side closes (true) or the deadline passes (false).
  bool WaitClosedByPeer(const Deadline& deadline) {
    std::uint8_t buf[4096];
    for (;;) {
      ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n == 0) return true;
      if (n > 0) continue;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (PollOne(fd_, POLLIN, deadline) == 0) return false;
        continue;
      }
      return true;  // reset or another error: the connection is gone
    }
  }

 private:
  int fd_ = -1;
};

// A frame header with arbitrary fields, for malformed input.
inline std::vector<std::uint8_t> RawHeader(std::uint32_t magic, std::uint16_t version,
                                           std::uint16_t type, std::uint32_t payload_bytes) {
  std::vector<std::uint8_t> h;
  for (int i = 0; i < 4; i++) h.push_back(static_cast<std::uint8_t>(magic >> (8 * i)));
  for (int i = 0; i < 2; i++) h.push_back(static_cast<std::uint8_t>(version >> (8 * i)));
  for (int i = 0; i < 2; i++) h.push_back(static_cast<std::uint8_t>(type >> (8 * i)));
  for (int i = 0; i < 4; i++) h.push_back(static_cast<std::uint8_t>(payload_bytes >> (8 * i)));
  return h;
}

// Peak resident memory of a process in KiB (VmHWM from /proc), or -1 if unknown.
inline long PeakRssKiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

}  // namespace shoal::mp
