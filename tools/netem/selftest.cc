#include "tools/netem/selftest.h"

#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tools/netem/emulator.h"
#include "tools/netem/netns.h"
#include "tools/netem/probe.h"
#include "tools/netem/topology.h"

namespace shoal::netem {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int kHosts = 3;
constexpr double kRttSlackMs = 60;  // generous: a shared 2-core machine under sanitizers
constexpr double kCapMbit = 20;
constexpr double kCapToleranceMbit = 0.5;  // whole-run average over IP bytes cannot exceed the cap
constexpr double kCappedMinMbit = 5;
constexpr double kUncappedMinMbit = 1.5 * kCapMbit;
constexpr int kUdpDatagrams = 200;
constexpr double kLoss = 0.2;
constexpr double kOffloadLoss = 0.02;
constexpr double kOffloadLossyMinMbit = 2;  // TCP at 2% loss, 40 ms: tens of Mbit/s
constexpr milliseconds kChildTimeout{20000};

class Checks {
 public:
  explicit Checks(bool verbose) : verbose_(verbose) {}
  bool Check(bool ok, const std::string& what, const std::string& detail) {
    std::printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", what.c_str(), detail.empty() ? "" : ": ",
                detail.c_str());
    std::fflush(stdout);
    (ok ? passed_ : failed_)++;
    return ok;
  }
  void Note(const std::string& text) {
    if (verbose_) std::printf("     %s\n", text.c_str());
  }
  int Finish() {
    std::printf("selftest: %d passed, %d failed\n", passed_, failed_);
    return failed_ == 0 ? 0 : 1;
  }

 private:
  bool verbose_;
  int passed_ = 0;
  int failed_ = 0;
};

std::string Fixed(double v, int digits = 2) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

// A child running `argv` with stdout to a pipe (read end returned in *stdout_fd) and a parent-death
// SIGKILL. Returns the pid or -1.
pid_t Spawn(const std::vector<std::string>& args, int* stdout_fd) {
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return -1;
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(125);
    ::dup2(fds[1], STDOUT_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  if (pid < 0) {
    ::close(fds[0]);
    return -1;
  }
  *stdout_fd = fds[0];
  return pid;
}

// Reads `fd` until it holds `word` or the deadline passes.
bool WaitForOutput(int fd, const std::string& word, Clock::time_point deadline) {
  std::string text;
  while (text.find(word) == std::string::npos) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
    char buf[256];
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) return false;
    text.append(buf, static_cast<std::size_t>(n));
  }
  return true;
}

// Waits for a child to exit and reaps it; its exit code, or -1 if it did not exit in time.
int WaitChild(pid_t pid, Clock::time_point deadline) {
  if (!WaitProcessGone(pid, deadline)) return -1;
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void KillChild(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGKILL);
  WaitChild(pid, Clock::now() + std::chrono::seconds(5));
}

// The value of `key` on the stats line that starts with `prefix` ("link 0 1 "), or -1.
long long StatValue(const std::string& stats, const std::string& prefix, const std::string& key) {
  std::istringstream in(stats);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    std::istringstream words(line.substr(prefix.size()));
    std::string k;
    std::string v;
    while (words >> k >> v) {
      if (k == key) return std::stoll(v);
    }
  }
  return -1;
}

struct NamespaceIds {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ids;
};

NamespaceIds IdsOf(const std::string& name) {
  NamespaceIds out;
  for (int h = 0; h < kHosts; h++) {
    std::uint64_t dev = 0;
    std::uint64_t ino = 0;
    if (NamespaceId(NamespacePath(name, h), &dev, &ino)) out.ids.emplace_back(dev, ino);
  }
  return out;
}

// Whether any process still lives in one of the namespaces (known by their ids, as the files are
// gone once removed).
int ProcessesInIds(const NamespaceIds& ids) {
  int count = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string pid = e.path().filename().string();
    if (pid.empty() || !std::isdigit(static_cast<unsigned char>(pid[0]))) continue;
    std::uint64_t dev = 0;
    std::uint64_t ino = 0;
    if (!NamespaceId("/proc/" + pid + "/ns/net", &dev, &ino)) continue;
    for (const auto& id : ids.ids) {
      if (id.first == dev && id.second == ino) count++;
    }
  }
  return count;
}

// Everything of emulator `name` is gone: no namespace file, no state dir, no process inside.
std::string Leftovers(const std::string& name, const NamespaceIds& ids) {
  std::string left;
  const auto ns = ListNamespaces(std::string(kNamespacePrefix) + name + "-h");
  if (!ns.empty()) left += std::to_string(ns.size()) + " namespace(s) ";
  if (std::filesystem::exists(StateDir(name))) left += "state dir ";
  const int procs = ProcessesInIds(ids);
  if (procs > 0) left += std::to_string(procs) + " process(es) in the namespaces ";
  return left;
}

// Starts `exec HOST -- sh -c 'echo up; exec sleep 60'` and waits until it runs in the host.
pid_t StartSleeper(const std::string& bin, const std::string& name, int host, Checks* checks) {
  int out = -1;
  const pid_t pid =
      Spawn(ExecArgvFor(bin, name, host, {"/bin/sh", "-c", "echo up; exec sleep 60"}), &out);
  if (pid < 0) {
    checks->Check(false, "exec in h" + std::to_string(host), "cannot fork");
    return -1;
  }
  const bool up = WaitForOutput(out, "up", Clock::now() + kChildTimeout);
  ::close(out);
  std::uint64_t dev = 0, ino = 0, pdev = 0, pino = 0;
  const bool inside = up && NamespaceId(NamespacePath(name, host), &dev, &ino) &&
                      NamespaceId("/proc/" + std::to_string(pid) + "/ns/net", &pdev, &pino) &&
                      dev == pdev && ino == pino;
  checks->Check(inside, "exec runs the program in h" + std::to_string(host) + "'s namespace",
                up ? "" : "it did not start");
  return pid;
}

bool StartEmulator(const std::string& name, const std::string& bin, int delay_ms,
                   std::unique_ptr<Emulator>* emu, Checks* checks, bool offload = false) {
  Emulator::Options options;
  options.name = name;
  options.netem_bin = bin;
  options.offload = offload;
  std::string error;
  if (!ParseTopology({"hosts " + std::to_string(kHosts),
                      "link * * delay " + std::to_string(delay_ms) + "ms", "seed 7"},
                     &options.topology, &error)) {
    return checks->Check(false, "topology", error);
  }
  const auto start = Clock::now();
  const bool ok = Emulator::Start(options, emu, &error);
  return checks->Check(
      ok,
      "up: " + std::to_string(kHosts) + " hosts, " + std::to_string(delay_ms) + " ms one-way" +
          (offload ? ", TUN offloads" : ""),
      ok ? Fixed(std::chrono::duration<double, std::milli>(Clock::now() - start).count(), 0) +
               " ms to start"
         : error);
}

void CheckDelay(const std::string& name, int delay_ms, Checks* checks) {
  const double rtt_ms = 2.0 * delay_ms;
  const ProbeEnds ends{name, 0, 1};
  std::vector<double> connect;
  std::vector<double> rtt;
  std::string error;
  const milliseconds timeout(2 * delay_ms + 2000);
  if (!MeasureConnectMs(ends, 5, timeout, &connect, &error) ||
      !MeasureRoundTripMs(ends, 10, timeout, &rtt, &error)) {
    checks->Check(false, "round trip h0 <-> h1", error);
    return;
  }
  const double connect_min = *std::min_element(connect.begin(), connect.end());
  const double rtt_min = *std::min_element(rtt.begin(), rtt.end());
  checks->Check(connect_min >= rtt_ms && rtt_min >= rtt_ms,
                "no packet early: connect and ping-pong >= " + Fixed(rtt_ms, 0) + " ms",
                "connect " + SummaryMs(connect) + ", ping-pong " + SummaryMs(rtt));
  checks->Check(MedianOf(rtt) <= rtt_ms + kRttSlackMs && MedianOf(connect) <= rtt_ms + kRttSlackMs,
                "round trip near " + Fixed(rtt_ms, 0) + " ms (median within +" +
                    Fixed(kRttSlackMs, 0) + " ms)",
                "ping-pong median " + Fixed(MedianOf(rtt), 3) + " ms, connect median " +
                    Fixed(MedianOf(connect), 3) + " ms");
}

void CheckCut(Emulator* emu, int delay_ms, Checks* checks) {
  const std::string& name = emu->name();
  std::string error;
  if (!checks->Check(emu->Cut(0, 1, &error), "cut h0 h1", error)) return;
  error.clear();
  std::vector<double> ms;
  const milliseconds probe(4 * delay_ms + 500);
  const bool through = MeasureConnectMs({name, 0, 1}, 1, probe, &ms, &error);
  checks->Check(!through, "cut link carries nothing", through ? "connected anyway" : error);
  ms.clear();
  const bool other = MeasureConnectMs({name, 0, 2}, 1, milliseconds(2000), &ms, &error);
  checks->Check(other, "other links still work (h0 -> h2)", other ? "" : error);
  std::string stats;
  emu->Stats(&stats, &error);
  const long long dropped = StatValue(stats, "link 0 1 ", "dropped_cut");
  checks->Check(dropped > 0, "forwarder counts the dropped packets",
                "dropped_cut " + std::to_string(dropped));
  error.clear();
  if (!checks->Check(emu->Heal(0, 1, &error), "heal h0 h1", error)) return;
  ms.clear();
  const bool healed = MeasureConnectMs({name, 0, 1}, 1, milliseconds(3000), &ms, &error);
  checks->Check(healed, "healed link carries traffic again",
                healed ? "connect " + Fixed(ms[0], 3) + " ms" : error);
}

void CheckRate(Emulator* emu, Checks* checks) {
  std::string error;
  if (!checks->Check(emu->Set("host 2 rate " + Fixed(kCapMbit, 0) + "mbit", &error),
                     "set host 2 rate " + Fixed(kCapMbit, 0) + "mbit", error)) {
    return;
  }
  Throughput capped;
  if (!MeasureThroughput({emu->name(), 0, 2}, 1, 2.0, milliseconds(3000), &capped, &error)) {
    checks->Check(false, "bulk transfer to the capped host", error);
    return;
  }
  checks->Check(
      capped.mbit_per_s <= kCapMbit + kCapToleranceMbit && capped.mbit_per_s >= kCappedMinMbit,
      "cap bounds a bulk transfer (" + Fixed(kCappedMinMbit, 0) + ".." +
          Fixed(kCapMbit + kCapToleranceMbit, 1) + " Mbit/s)",
      Fixed(capped.mbit_per_s, 1) + " Mbit/s over " + Fixed(capped.seconds) + " s");
  Throughput free;
  if (!MeasureThroughput({emu->name(), 0, 1}, 1, 1.5, milliseconds(3000), &free, &error)) {
    checks->Check(false, "bulk transfer to an uncapped host", error);
    return;
  }
  checks->Check(free.mbit_per_s >= kUncappedMinMbit,
                "uncapped link is faster (>= " + Fixed(kUncappedMinMbit, 0) + " Mbit/s)",
                Fixed(free.mbit_per_s, 1) + " Mbit/s");
  emu->Set("host 2 rate 0", &error);
}

// On link 1 -> 2, which the checks before carried nothing over: the tail of an earlier bulk
// transfer still draining over a link (a closed socket sends its buffer on) would be counted too.
void CheckLoss(Emulator* emu, int delay_ms, Checks* checks) {
  std::string error;
  if (!checks->Check(emu->ResetStats(&error) &&
                         emu->Set("link 1 2 loss " + Fixed(kLoss * 100, 0) + "% one-way", &error),
                     "set link 1 2 loss " + Fixed(kLoss * 100, 0) + "%", error)) {
    return;
  }
  UdpDelivery d;
  if (!MeasureUdpDelivery({emu->name(), 1, 2}, kUdpDatagrams, milliseconds(4 * delay_ms + 1000), &d,
                          &error)) {
    checks->Check(false, "UDP through the lossy link", error);
    return;
  }
  const int lost = d.sent - d.received;
  // Binomial(200, 0.2): mean 40, sd 5.7; the bounds are 5 sd below and 7 above.
  checks->Check(d.sent == kUdpDatagrams && lost >= 10 && lost <= 80,
                "loss drops packets (10..80 of " + std::to_string(kUdpDatagrams) + ")",
                "sent " + std::to_string(d.sent) + ", lost " + std::to_string(lost));
  std::string stats;
  emu->Stats(&stats, &error);
  const long long counted = StatValue(stats, "link 1 2 ", "dropped_loss");
  checks->Check(counted == lost, "every lost datagram is one the forwarder dropped",
                "dropped_loss " + std::to_string(counted));
  emu->Set("link 1 2 loss 0", &error);
}

// With TUN offloads: super-packets must be shaped per segment and cut into real segments when some
// are lost (gso.h); a bad segment (length, sequence number, checksum) would stall the transfer.
void CheckOffload(Emulator* emu, Checks* checks) {
  std::string error;
  std::string stats;
  if (!checks->Check(
          emu->Set("link 0 1 loss " + Fixed(kOffloadLoss * 100, 0) + "% one-way", &error),
          "offload: set link 0 1 loss " + Fixed(kOffloadLoss * 100, 0) + "%", error)) {
    return;
  }
  Throughput lossy;
  if (!MeasureThroughput({emu->name(), 0, 1}, 1, 1.5, milliseconds(3000), &lossy, &error)) {
    checks->Check(false, "offload: bulk transfer through the lossy link", error);
    return;
  }
  emu->Stats(&stats, &error);
  const long long split = StatValue(stats, "forwarder ", "split_packets");
  const long long lost = StatValue(stats, "link 0 1 ", "dropped_loss");
  const long long packets = StatValue(stats, "link 0 1 ", "packets");
  checks->Check(StatValue(stats, "forwarder ", "offload") == 1 && split > 0 && lost > 0,
                "offload: losses cut super-packets into their segments",
                "split_packets " + std::to_string(split) + ", dropped_loss " +
                    std::to_string(lost) + " of " + std::to_string(packets + lost));
  checks->Check(lossy.mbit_per_s >= kOffloadLossyMinMbit,
                "offload: the cut segments are good TCP (>= " + Fixed(kOffloadLossyMinMbit, 0) +
                    " Mbit/s at " + Fixed(kOffloadLoss * 100, 0) + "% loss)",
                Fixed(lossy.mbit_per_s, 1) + " Mbit/s");
  emu->Set("link 0 1 loss 0", &error);
  CheckRate(emu, checks);
}

}  // namespace

int RunSelfTest(const SelfTestOptions& options) {
  std::string error;
  if (!CheckPrivileges(&error)) {
    std::printf("SKIP: shoal-netem selftest: %s\n", error.c_str());
    return kSelfTestSkipped;
  }
  // A child's exit must not kill us through SIGPIPE on a closed pipe.
  ::signal(SIGPIPE, SIG_IGN);
  Checks checks(options.verbose);
  const std::string bin = DefaultNetemBinary();
  const std::string name = "selftest-" + std::to_string(::getpid());
  const int delay_ms = options.delay_ms;

  // 1. An orderly run: delay, cut/heal, caps, loss, then down.
  {
    std::unique_ptr<Emulator> emu;
    if (!StartEmulator(name, bin, delay_ms, &emu, &checks)) return checks.Finish();
    const NamespaceIds ids = IdsOf(name);
    checks.Check(ids.ids.size() == kHosts, "one namespace per host",
                 std::to_string(ids.ids.size()) + " of " + std::to_string(kHosts));
    const pid_t sleeper = StartSleeper(bin, name, 1, &checks);
    CheckDelay(name, delay_ms, &checks);
    CheckCut(emu.get(), delay_ms, &checks);
    CheckRate(emu.get(), &checks);
    CheckLoss(emu.get(), delay_ms, &checks);
    const pid_t forwarder = emu->forwarder_pid();
    const bool stopped = emu->Stop(&error);
    checks.Check(stopped, "down", stopped ? "" : error);
    const int sleeper_exit = WaitChild(sleeper, Clock::now() + kChildTimeout);
    checks.Check(sleeper_exit >= 0, "down stops the programs in the hosts",
                 sleeper_exit >= 0 ? "exit " + std::to_string(sleeper_exit) : "still running");
    if (sleeper_exit < 0) KillChild(sleeper);
    const std::string left = Leftovers(name, ids);
    checks.Check(left.empty() && ::kill(forwarder, 0) != 0, "nothing left after down",
                 left.empty() ? "" : left);
  }

  // 2. A crash: SIGKILL the forwarder; its devices vanish, `cleanup` removes the rest.
  {
    std::unique_ptr<Emulator> emu;
    if (!StartEmulator(name, bin, delay_ms, &emu, &checks)) return checks.Finish();
    const NamespaceIds ids = IdsOf(name);
    const pid_t sleeper = StartSleeper(bin, name, 0, &checks);
    const pid_t forwarder = emu->forwarder_pid();
    ::kill(forwarder, SIGKILL);
    const bool died = WaitProcessGone(forwarder, Clock::now() + std::chrono::seconds(5));
    checks.Check(died && !EmulatorRunning(name), "SIGKILL of the forwarder frees its lock", "");
    bool devices_gone = true;
    {
      ScopedNetns in(NamespacePath(name, 0));
      devices_gone = in.ok() && ::if_nametoindex(kTunName) == 0;
    }
    checks.Check(devices_gone, "its TUN devices vanish with it", "");
    checks.Check(!Leftovers(name, ids).empty(), "namespaces and programs are left for cleanup",
                 Leftovers(name, ids));
    int out = -1;
    const pid_t cleaner = Spawn({bin, "cleanup", "--name", name}, &out);
    ::close(out);
    const int cleanup_exit = cleaner < 0 ? -1 : WaitChild(cleaner, Clock::now() + kChildTimeout);
    checks.Check(cleanup_exit == 0, "shoal-netem cleanup --name " + name,
                 "exit " + std::to_string(cleanup_exit));
    const int sleeper_exit = WaitChild(sleeper, Clock::now() + kChildTimeout);
    if (sleeper_exit < 0) KillChild(sleeper);
    const std::string left = Leftovers(name, ids);
    checks.Check(left.empty() && sleeper_exit >= 0, "nothing left after cleanup",
                 left + (sleeper_exit >= 0 ? "" : "program in h0 still running"));
    emu->Stop(&error);  // reaps the killed forwarder; nothing else to do
  }

  // 3. TUN offloads (--offload): losses and a cap act per segment of the super-packets.
  {
    std::unique_ptr<Emulator> emu;
    if (!StartEmulator(name, bin, delay_ms, &emu, &checks, /*offload=*/true)) {
      return checks.Finish();
    }
    CheckOffload(emu.get(), &checks);
    const bool stopped = emu->Stop(&error);
    checks.Check(stopped, "down (offload)", stopped ? "" : error);
  }
  return checks.Finish();
}

}  // namespace shoal::netem
