#include "tools/netem/netns.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "tools/netem/gso.h"
#include "tools/netem/topology.h"

namespace shoal::netem {
namespace {

using Clock = std::chrono::steady_clock;

// Rounds of "find the processes, SIGKILL them" before giving up on a namespace whose processes keep
// forking faster than we kill them.
constexpr int kKillRoundsMax = 10;
constexpr std::chrono::milliseconds kKillWaitMax{3000};

// glibc 2.36's <sys/pidfd.h> lacks extern "C", so the wrapper cannot be linked from C++.
int PidfdOpen(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

// A file descriptor closed on scope exit.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

// `ip netns add` makes /run/netns a shared mount point, so that namespace files bind-mounted later
// show up in mount namespaces made before (those of `ip netns exec` and ours). Same here.
bool MakeNetnsDirShared(std::string* error) {
  if (::mkdir(kNetnsDir, 0755) != 0 && errno != EEXIST) {
    *error = Errno(std::string("mkdir ") + kNetnsDir);
    return false;
  }
  bool bound = false;
  for (;;) {
    if (::mount("", kNetnsDir, "none", MS_SHARED | MS_REC, nullptr) == 0) return true;
    if (errno != EINVAL || bound) {
      *error = Errno(std::string("mount --make-shared ") + kNetnsDir);
      return false;
    }
    // Not a mount point yet: bind it onto itself, then retry.
    if (::mount(kNetnsDir, kNetnsDir, "none", MS_BIND | MS_REC, nullptr) != 0) {
      *error = Errno(std::string("mount --bind ") + kNetnsDir);
      return false;
    }
    bound = true;
  }
}

// Parses "shoal-netem-NAME-h<i>" into NAME; false for other names.
bool EmulatorOfNamespace(const std::string& ns, std::string* emulator) {
  const std::string prefix = kNamespacePrefix;
  if (ns.rfind(prefix, 0) != 0) return false;
  const std::size_t dash_h = ns.rfind("-h");
  if (dash_h == std::string::npos || dash_h < prefix.size() + 1) return false;
  const std::string index = ns.substr(dash_h + 2);
  if (index.empty() || !std::all_of(index.begin(), index.end(), ::isdigit)) return false;
  *emulator = ns.substr(prefix.size(), dash_h - prefix.size());
  return ValidEmulatorName(*emulator);
}

bool SetInterfaceFlags(int sock, const char* name, short add, std::string* error) {
  ifreq ifr{};
  std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
  if (::ioctl(sock, SIOCGIFFLAGS, &ifr) != 0) {
    *error = Errno(std::string("SIOCGIFFLAGS ") + name);
    return false;
  }
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | add);
  if (::ioctl(sock, SIOCSIFFLAGS, &ifr) != 0) {
    *error = Errno(std::string("SIOCSIFFLAGS ") + name);
    return false;
  }
  return true;
}

bool SetInterfaceAddress(int sock, unsigned long request, std::uint32_t address,
                         std::string* error) {
  ifreq ifr{};
  std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", kTunName);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(address);
  std::memcpy(&ifr.ifr_addr, &sin, sizeof(sin));
  if (::ioctl(sock, request, &ifr) != 0) {
    *error = Errno(request == SIOCSIFADDR ? "SIOCSIFADDR" : "SIOCSIFNETMASK");
    return false;
  }
  return true;
}

// Waits until every pidfd is readable (its process exited) or the deadline passes.
void WaitPidfds(const std::vector<int>& pidfds, Clock::time_point deadline) {
  std::vector<pollfd> fds;
  for (int fd : pidfds) fds.push_back(pollfd{fd, POLLIN, 0});
  while (!fds.empty()) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return;
    const int n = ::poll(fds.data(), fds.size(), static_cast<int>(left) + 1);
    if (n < 0 && errno != EINTR) return;
    std::erase_if(fds, [](const pollfd& p) { return p.revents != 0; });
  }
}

// Signals every process in the namespace; returns pidfds of those signalled (caller closes them).
std::vector<int> SignalAll(const std::string& ns_path, int sig) {
  std::vector<int> pidfds;
  for (pid_t pid : ProcessesInNamespace(ns_path)) {
    const int fd = PidfdOpen(pid);
    if (fd < 0) continue;  // already gone
    ::kill(pid, sig);
    pidfds.push_back(fd);
  }
  return pidfds;
}

void CloseAll(const std::vector<int>& fds) {
  for (int fd : fds) ::close(fd);
}

}  // namespace

std::string NamespaceName(const std::string& emulator, int host) {
  return std::string(kNamespacePrefix) + emulator + "-h" + std::to_string(host);
}
std::string NamespacePath(const std::string& emulator, int host) {
  return std::string(kNetnsDir) + "/" + NamespaceName(emulator, host);
}
std::string StateDir(const std::string& emulator) {
  return std::string(kStateRoot) + "/" + emulator;
}
std::string ControlSocketPath(const std::string& emulator) {
  return StateDir(emulator) + "/control.sock";
}
std::string LockPath(const std::string& emulator) { return StateDir(emulator) + "/lock"; }
std::string TopologyPath(const std::string& emulator) { return StateDir(emulator) + "/topology"; }
std::string LogPath(const std::string& emulator) { return StateDir(emulator) + "/forwarder.log"; }
std::string PidPath(const std::string& emulator) { return StateDir(emulator) + "/pid"; }

bool CheckPrivileges(std::string* error) {
  if (::geteuid() != 0) {
    *error = "shoal-netem needs root (network namespaces and TUN devices)";
    return false;
  }
  if (::access("/dev/net/tun", R_OK | W_OK) != 0) {
    *error = Errno("/dev/net/tun (TUN devices)");
    return false;
  }
  return true;
}

bool CreateNamespace(const std::string& name, std::string* error) {
  if (!MakeNetnsDirShared(error)) return false;
  const std::string path = std::string(kNetnsDir) + "/" + name;
  Fd file(::open(path.c_str(), O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0));
  if (file.get() < 0) {
    *error = Errno("create " + path);
    return false;
  }
  // A fresh thread leaves its new namespace behind when it ends; the bind mount keeps it alive.
  std::string thread_error;
  std::thread maker([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      thread_error = Errno("unshare(CLONE_NEWNET)");
      return;
    }
    if (::mount("/proc/thread-self/ns/net", path.c_str(), "none", MS_BIND, nullptr) != 0) {
      thread_error = Errno("bind-mount the namespace on " + path);
    }
  });
  maker.join();
  if (!thread_error.empty()) {
    ::unlink(path.c_str());
    *error = thread_error;
    return false;
  }
  return true;
}

bool NamespaceId(const std::string& path, std::uint64_t* dev, std::uint64_t* ino) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return false;
  *dev = st.st_dev;
  *ino = st.st_ino;
  return true;
}

std::vector<pid_t> ProcessesInNamespace(const std::string& ns_path) {
  std::vector<pid_t> pids;
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  if (!NamespaceId(ns_path, &dev, &ino)) return pids;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return pids;
  const pid_t self = ::getpid();
  while (dirent* e = ::readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0 || pid == self) continue;
    std::uint64_t pdev = 0;
    std::uint64_t pino = 0;
    if (NamespaceId("/proc/" + std::string(e->d_name) + "/ns/net", &pdev, &pino) && pdev == dev &&
        pino == ino) {
      pids.push_back(static_cast<pid_t>(pid));
    }
  }
  ::closedir(proc);
  return pids;
}

bool DeleteNamespace(const std::string& name, std::chrono::milliseconds grace, std::string* error) {
  const std::string path = std::string(kNetnsDir) + "/" + name;
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return true;  // already gone
  // Polite first, then SIGKILL until nothing is left (a process may fork meanwhile).
  std::vector<int> pidfds = SignalAll(path, SIGTERM);
  if (!pidfds.empty()) WaitPidfds(pidfds, Clock::now() + grace);
  CloseAll(pidfds);
  for (int round = 0; round < kKillRoundsMax; round++) {
    pidfds = SignalAll(path, SIGKILL);
    if (pidfds.empty()) break;
    WaitPidfds(pidfds, Clock::now() + kKillWaitMax);
    CloseAll(pidfds);
  }
  const std::vector<pid_t> left = ProcessesInNamespace(path);
  if (!left.empty()) {
    *error = name + ": " + std::to_string(left.size()) + " process(es) survive SIGKILL (pid " +
             std::to_string(left[0]) + ")";
    return false;
  }
  if (::umount2(path.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
    *error = Errno("umount " + path);
    return false;
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    *error = Errno("remove " + path);
    return false;
  }
  return true;
}

std::vector<std::string> ListNamespaces(const std::string& prefix) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(kNetnsDir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) == 0) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

ScopedNetns::ScopedNetns(const std::string& ns_path) {
  saved_fd_ = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (saved_fd_ < 0) {
    error_ = Errno("open /proc/thread-self/ns/net");
    return;
  }
  Fd target(::open(ns_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (target.get() < 0) {
    error_ = Errno("open " + ns_path);
    return;
  }
  if (::setns(target.get(), CLONE_NEWNET) != 0) {
    error_ = Errno("setns " + ns_path);
    return;
  }
  ok_ = true;
}

ScopedNetns::~ScopedNetns() {
  if (ok_ && ::setns(saved_fd_, CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "shoal-netem: cannot return to the original network namespace: %s\n",
                 std::strerror(errno));
    std::abort();
  }
  if (saved_fd_ >= 0) ::close(saved_fd_);
}

int CreateTun(const std::string& ns_path, const TunConfig& config, std::string* error) {
  ScopedNetns in(ns_path);
  if (!in.ok()) {
    *error = in.error();
    return -1;
  }
  Fd tun(::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC));
  if (tun.get() < 0) {
    *error = Errno("open /dev/net/tun");
    return -1;
  }
  ifreq ifr{};
  std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", kTunName);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (config.offload ? IFF_VNET_HDR : 0);
  if (::ioctl(tun.get(), TUNSETIFF, &ifr) != 0) {
    *error = Errno("TUNSETIFF");
    return -1;
  }
  if (config.offload) {
    int hdr_bytes = static_cast<int>(kVnetHdrBytes);
    if (::ioctl(tun.get(), TUNSETVNETHDRSZ, &hdr_bytes) != 0) {
      *error = Errno("TUNSETVNETHDRSZ");
      return -1;
    }
    if (::ioctl(tun.get(), TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4) != 0) {
      *error = Errno("TUNSETOFFLOAD");
      return -1;
    }
  }
  Fd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (sock.get() < 0) {
    *error = Errno("socket");
    return -1;
  }
  if (!SetInterfaceFlags(sock.get(), "lo", IFF_UP, error)) return -1;
  ifr = ifreq{};
  std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", kTunName);
  ifr.ifr_mtu = config.mtu;
  if (::ioctl(sock.get(), SIOCSIFMTU, &ifr) != 0) {
    *error = Errno("SIOCSIFMTU " + std::to_string(config.mtu));
    return -1;
  }
  ifr = ifreq{};
  std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", kTunName);
  ifr.ifr_qlen = config.txqueuelen;
  if (::ioctl(sock.get(), SIOCSIFTXQLEN, &ifr) != 0) {
    *error = Errno("SIOCSIFTXQLEN");
    return -1;
  }
  // The hosts speak IPv4 only; without IPv6 the device sends no router solicitations or MLD.
  // Best effort: a kernel without IPv6 has no such file and sends none anyway.
  const std::string disable_ipv6 =
      std::string("/proc/sys/net/ipv6/conf/") + kTunName + "/disable_ipv6";
  if (std::FILE* f = std::fopen(disable_ipv6.c_str(), "w")) {
    std::fputs("1\n", f);
    std::fclose(f);
  }
  const std::uint32_t netmask = ~((1u << (32 - kSubnetPrefixLength)) - 1);
  if (!SetInterfaceAddress(sock.get(), SIOCSIFADDR, HostAddress(config.host), error) ||
      !SetInterfaceAddress(sock.get(), SIOCSIFNETMASK, netmask, error) ||
      !SetInterfaceFlags(sock.get(), kTunName, IFF_UP | IFF_RUNNING, error)) {
    return -1;
  }
  return tun.release();
}

void ExecInNamespace(const std::string& ns_path, const std::vector<std::string>& argv,
                     const std::vector<std::pair<std::string, std::string>>& env,
                     std::string* error) {
  if (argv.empty()) {
    *error = "no command given";
    return;
  }
  Fd target(::open(ns_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (target.get() < 0) {
    *error = Errno("open " + ns_path);
    return;
  }
  if (::setns(target.get(), CLONE_NEWNET) != 0) {
    *error = Errno("setns " + ns_path);
    return;
  }
  // As `ip netns exec`: a private mount namespace whose /sys shows this namespace's devices.
  if (::unshare(CLONE_NEWNS) != 0) {
    *error = Errno("unshare(CLONE_NEWNS)");
    return;
  }
  if (::mount("", "/", "none", MS_SLAVE | MS_REC, nullptr) != 0) {
    *error = Errno("mount --make-rslave /");
    return;
  }
  unsigned long sys_flags = 0;
  if (::umount2("/sys", MNT_DETACH) != 0) {
    struct statvfs fs;
    if (::statvfs("/sys", &fs) == 0 && (fs.f_flag & ST_RDONLY) != 0) sys_flags = MS_RDONLY;
  }
  const std::string ns_name = std::filesystem::path(ns_path).filename().string();
  if (::mount(ns_name.c_str(), "/sys", "sysfs", sys_flags, nullptr) != 0) {
    *error = Errno("mount sysfs on /sys");
    return;
  }
  for (const auto& [key, value] : env) ::setenv(key.c_str(), value.c_str(), 1);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  ::execvp(args[0], args.data());
  *error = Errno("exec " + argv[0]);
}

int TakeLock(const std::string& emulator, bool* busy, std::string* error) {
  *busy = false;
  for (const std::string& dir : {std::string(kStateRoot), StateDir(emulator)}) {
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      *error = Errno("mkdir " + dir);
      return -1;
    }
  }
  const std::string path = LockPath(emulator);
  Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (fd.get() < 0) {
    *error = Errno("open " + path);
    return -1;
  }
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    *busy = errno == EWOULDBLOCK;
    *error = *busy ? "emulator '" + emulator + "' is already running" : Errno("flock " + path);
    return -1;
  }
  return fd.release();
}

bool EmulatorRunning(const std::string& emulator) {
  Fd fd(::open(LockPath(emulator).c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return false;
  if (::flock(fd.get(), LOCK_SH | LOCK_NB) != 0) return errno == EWOULDBLOCK;
  ::flock(fd.get(), LOCK_UN);
  return false;
}

std::vector<std::string> KnownEmulators() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(kStateRoot, ec)) {
    const std::string name = e.path().filename().string();
    if (ValidEmulatorName(name)) names.push_back(name);
  }
  for (const std::string& ns : ListNamespaces(kNamespacePrefix)) {
    std::string name;
    if (EmulatorOfNamespace(ns, &name)) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

bool RemoveEmulatorNamespaces(const std::string& emulator, std::vector<std::string>* removed,
                              std::string* error) {
  bool ok = true;
  for (const std::string& ns : ListNamespaces(std::string(kNamespacePrefix) + emulator + "-h")) {
    std::string owner;
    if (!EmulatorOfNamespace(ns, &owner) || owner != emulator) continue;
    std::string e;
    if (DeleteNamespace(ns, kKillGrace, &e)) {
      removed->push_back("namespace " + ns);
    } else {
      if (ok) *error = e;
      ok = false;
    }
  }
  return ok;
}

bool RemoveEmulatorLeftovers(const std::string& emulator, std::vector<std::string>* removed,
                             std::string* error) {
  bool ok = RemoveEmulatorNamespaces(emulator, removed, error);
  const std::string dir = StateDir(emulator);
  std::error_code ec;
  if (std::filesystem::exists(dir, ec)) {
    std::filesystem::remove_all(dir, ec);
    if (ec) {
      if (ok) *error = "remove " + dir + ": " + ec.message();
      ok = false;
    } else {
      removed->push_back("state " + dir);
    }
  }
  return ok;
}

bool WaitProcessGone(pid_t pid, Clock::time_point deadline) {
  const int fd = PidfdOpen(pid);
  if (fd < 0) return errno == ESRCH;
  WaitPidfds({fd}, deadline);
  pollfd p{fd, POLLIN, 0};
  const bool gone = ::poll(&p, 1, 0) == 1;
  ::close(fd);
  return gone;
}

}  // namespace shoal::netem
