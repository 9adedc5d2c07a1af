// The operating-system side of the emulator: named network namespaces (the same files under
// /run/netns that `ip netns` uses, so `ip netns exec` works on them too), the TUN device of each
// host, the processes running inside a namespace, and the state directory of each emulator
// (/run/shoal-netem/NAME: its lock, control socket and description).
//
// Naming: the namespace of host i of emulator NAME is "shoal-netem-NAME-h<i>"; inside it the TUN
// device is "netem0" with address 10.77.0.(i+1)/24, and "lo" is up. A namespace whose emulator is
// not running (its lock is free) is a leftover that Cleanup removes.
//
// Every function reports failures as false plus *error (with the OS's reason); none throws.
// Thread safety: the functions are safe to call from any thread; ScopedNetns changes only the
// calling thread's network namespace.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace shoal::netem {

constexpr char kNetnsDir[] = "/run/netns";
constexpr char kStateRoot[] = "/run/shoal-netem";
constexpr char kNamespacePrefix[] = "shoal-netem-";
constexpr char kTunName[] = "netem0";
// How long processes in a namespace get between SIGTERM and SIGKILL when it is removed.
constexpr std::chrono::milliseconds kKillGrace{1000};

std::string NamespaceName(const std::string& emulator, int host);
std::string NamespacePath(const std::string& emulator, int host);
std::string StateDir(const std::string& emulator);
std::string ControlSocketPath(const std::string& emulator);
std::string LockPath(const std::string& emulator);
std::string TopologyPath(const std::string& emulator);  // the topology the emulator started with
std::string LogPath(const std::string& emulator);       // --daemon: the forwarder's stderr
std::string PidPath(const std::string& emulator);       // the forwarder's pid (valid while locked)

// Root and a TUN device node: false and *error (what is missing) otherwise.
bool CheckPrivileges(std::string* error);

// Creates the named namespace (like `ip netns add`). Fails if it exists.
bool CreateNamespace(const std::string& name, std::string* error);
// Stops every process in the namespace (SIGTERM, SIGKILL after `grace`), then unmounts and
// removes its file. True if the namespace is gone afterwards (or never existed).
bool DeleteNamespace(const std::string& name, std::chrono::milliseconds grace, std::string* error);
// Names under /run/netns starting with `prefix`.
std::vector<std::string> ListNamespaces(const std::string& prefix);
// The pids of the processes whose network namespace is the one at `ns_path`.
std::vector<pid_t> ProcessesInNamespace(const std::string& ns_path);
// Identity (device, inode) of a namespace file or of /proc/PID/ns/net; false if unreadable.
bool NamespaceId(const std::string& path, std::uint64_t* dev, std::uint64_t* ino);

// Switches the calling thread into a named namespace for its lifetime and back at the end (sockets
// created meanwhile belong to that namespace and keep working after). REQUIRES: ok() before use;
// the destructor aborts if it cannot switch back, as going on in the wrong namespace would send
// traffic where it must not go.
class ScopedNetns {
 public:
  explicit ScopedNetns(const std::string& ns_path);
  ~ScopedNetns();
  ScopedNetns(const ScopedNetns&) = delete;
  ScopedNetns& operator=(const ScopedNetns&) = delete;
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }

 private:
  int saved_fd_ = -1;
  bool ok_ = false;
  std::string error_;
};

struct TunConfig {
  int host = 0;
  int mtu = 1500;
  int txqueuelen = 1000;
  // IFF_VNET_HDR with checksum and TCPv4 segmentation offload: reads and writes start with a
  // virtio_net_hdr and TCP may hand over 64 KiB super-packets (gso.h).
  bool offload = false;
};
// In the namespace at `ns_path`: brings lo up, creates the TUN device (IFF_TUN | IFF_NO_PI, plus
// IFF_VNET_HDR and offloads if asked; not persistent: it vanishes when the returned fd is closed),
// gives it the host's address, MTU and queue length, switches IPv6 off on it and brings it up.
// Returns the non-blocking fd, or -1.
int CreateTun(const std::string& ns_path, const TunConfig& config, std::string* error);

// Runs `argv` (searched in PATH) inside the namespace, replacing this process like `ip netns exec`:
// its own mount namespace with /sys remounted, so that tools reading /sys see the host's devices.
// Returns only on failure.
void ExecInNamespace(const std::string& ns_path, const std::vector<std::string>& argv,
                     const std::vector<std::pair<std::string, std::string>>& env,
                     std::string* error);

// The emulator's lock: held (flock) by its forwarder for its whole life, so a free lock means the
// forwarder is gone, whatever the pid file says.
// Takes the lock, creating the state directory; returns the fd (close-on-exec) or -1. *busy is set
// when another live forwarder holds it.
int TakeLock(const std::string& emulator, bool* busy, std::string* error);
// Whether a live forwarder holds the lock of `emulator`.
bool EmulatorRunning(const std::string& emulator);
// Names of the emulators that have a state directory or a namespace, running or not.
std::vector<std::string> KnownEmulators();

// Removes the namespaces of an emulator (and the processes in them), leaving its state directory.
bool RemoveEmulatorNamespaces(const std::string& emulator, std::vector<std::string>* removed,
                              std::string* error);
// Removes what an emulator left: its namespaces (and the processes in them) and its state dir.
// REQUIRES: the caller holds its lock or has seen it free. Appends one line per removed thing to
// *removed. False if something could not be removed (*error says what).
bool RemoveEmulatorLeftovers(const std::string& emulator, std::vector<std::string>* removed,
                             std::string* error);

// Waits until `pid` has exited or `deadline` passes, without being its parent (pidfd). True if it
// has exited.
bool WaitProcessGone(pid_t pid, std::chrono::steady_clock::time_point deadline);

}  // namespace shoal::netem
