#include "tools/netem/instance.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

#include "tools/netem/forwarder.h"
#include "tools/netem/netns.h"

namespace shoal::netem {
namespace {

void Report(int fd, const std::string& line) {
  if (fd < 0) return;
  const std::string text = line + "\n";
  [[maybe_unused]] const ssize_t w = ::write(fd, text.data(), text.size());
}

int ListenControl(const std::string& path, std::string* error) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    *error = "control socket path too long: " + path;
    return -1;
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ::unlink(path.c_str());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("socket(AF_UNIX): ") + std::strerror(errno);
    return -1;
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::chmod(path.c_str(), 0600) != 0 || ::listen(fd, kControlConnectionsMax) != 0) {
    *error = "control socket " + path + ": " + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

// Everything set up so far; the destructor tears it down in reverse order.
class Setup {
 public:
  explicit Setup(const std::string& name) : name_(name) {}
  ~Setup() { Teardown(); }

  bool Teardown() {
    bool ok = true;
    forwarder_.reset();  // closes the TUN devices and the control socket
    for (int fd : tun_fds_) ::close(fd);
    tun_fds_.clear();
    if (lock_fd_ >= 0) {
      std::vector<std::string> removed;
      std::string error;
      if (!RemoveEmulatorNamespaces(name_, &removed, &error)) {
        std::fprintf(stderr, "shoal-netem: teardown: %s (run: shoal-netem cleanup --name %s)\n",
                     error.c_str(), name_.c_str());
        ok = false;
      }
      // The state directory goes while the lock is still held, so no one sees it half removed as
      // a dead emulator's; only then is the lock released.
      std::error_code ec;
      if (ok) std::filesystem::remove_all(StateDir(name_), ec);
      ::close(lock_fd_);
      lock_fd_ = -1;
    }
    return ok;
  }

  const std::string name_;
  int lock_fd_ = -1;
  std::vector<int> tun_fds_;  // until the forwarder owns them
  std::unique_ptr<Forwarder> forwarder_;
};

bool WriteFile(const std::string& path, const std::string& text, std::string* error) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  out.close();
  if (!out) {
    *error = "cannot write " + path;
    return false;
  }
  return true;
}

}  // namespace

std::string SummaryText(const std::string& name, const Topology& topology) {
  std::string out = "shoal-netem '" + name + "' is up: " + std::to_string(topology.hosts) +
                    " hosts, MTU " + std::to_string(topology.mtu) +
                    " (stop: Ctrl-C in the foreground, or shoal-netem down --name " + name + ")\n";
  for (int h = 0; h < topology.hosts; h++) {
    const HostParams& p = topology.host[static_cast<std::size_t>(h)];
    char line[256];
    std::snprintf(line, sizeof(line), "  h%-2d %-12s netns %s  egress %s  ingress %s\n", h,
                  HostAddressText(h).c_str(), NamespaceName(name, h).c_str(),
                  FormatRateBps(p.egress_bps).c_str(), FormatRateBps(p.ingress_bps).c_str());
    out += line;
  }
  return out;
}

int RunEmulator(const UpOptions& options) {
  const Topology& topology = options.topology;
  auto fail = [&](const std::string& error) {
    std::fprintf(stderr, "shoal-netem: %s\n", error.c_str());
    Report(options.ready_fd, "error: " + error);
    return 1;
  };
  std::string error;
  if (!CheckPrivileges(&error)) return fail(error);

  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&signals, s);
  sigprocmask(SIG_BLOCK, &signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  const int signal_fd = ::signalfd(-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signal_fd < 0) return fail(std::string("signalfd: ") + std::strerror(errno));

  Setup setup(options.name);
  bool busy = false;
  setup.lock_fd_ = TakeLock(options.name, &busy, &error);
  if (setup.lock_fd_ < 0) {
    ::close(signal_fd);
    return fail(error);
  }
  if (options.log_to_state_dir) {
    const int log =
        ::open(LogPath(options.name).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (log >= 0) {
      ::dup2(log, STDERR_FILENO);
      ::close(log);
    }
  }
  std::vector<std::string> removed;
  if (!RemoveEmulatorNamespaces(options.name, &removed, &error)) {
    ::close(signal_fd);
    return fail("leftovers of an earlier run: " + error);
  }
  for (const std::string& r : removed) {
    std::fprintf(stderr, "shoal-netem: removed a leftover %s\n", r.c_str());
  }
  for (int h = 0; h < topology.hosts; h++) {
    if (!CreateNamespace(NamespaceName(options.name, h), &error)) {
      ::close(signal_fd);
      return fail("host " + std::to_string(h) + ": " + error);
    }
    const int fd =
        CreateTun(NamespacePath(options.name, h),
                  TunConfig{h, topology.mtu, options.txqueuelen, options.offload}, &error);
    if (fd < 0) {
      ::close(signal_fd);
      return fail("host " + std::to_string(h) + ": " + error);
    }
    setup.tun_fds_.push_back(fd);
  }
  const int listen_fd = ListenControl(ControlSocketPath(options.name), &error);
  if (listen_fd < 0) {
    ::close(signal_fd);
    return fail(error);
  }
  setup.forwarder_ = std::make_unique<Forwarder>(topology, std::move(setup.tun_fds_), listen_fd,
                                                 signal_fd, options.spin_us, options.offload);
  setup.tun_fds_.clear();
  if (!WriteFile(TopologyPath(options.name), TopologyText(topology), &error) ||
      !WriteFile(PidPath(options.name), std::to_string(::getpid()) + "\n", &error)) {
    return fail(error);
  }

  if (options.print_summary) {
    std::fputs(SummaryText(options.name, topology).c_str(), stdout);
    std::fflush(stdout);
  }
  if (options.realtime) {
    sched_param param{};
    param.sched_priority = kRealtimePriority;
    if (::sched_setscheduler(0, SCHED_FIFO | SCHED_RESET_ON_FORK, &param) != 0) {
      std::fprintf(stderr,
                   "shoal-netem: no real-time priority (%s); delays will be less exact "
                   "on a busy machine\n",
                   std::strerror(errno));
    }
  }
  Report(options.ready_fd, "ready " + std::to_string(::getpid()));
  if (options.ready_fd >= 0) ::close(options.ready_fd);

  const bool ran = setup.forwarder_->Run(&error);
  if (!ran) std::fprintf(stderr, "shoal-netem: forwarder: %s\n", error.c_str());
  std::fprintf(stderr, "shoal-netem '%s': stopping (%s)\n", options.name.c_str(),
               ran ? setup.forwarder_->stop_reason().c_str() : "error");
  if (!setup.Teardown()) return 2;
  return ran ? 0 : 1;
}

}  // namespace shoal::netem
