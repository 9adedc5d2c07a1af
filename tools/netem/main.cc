// shoal-netem: an emulated internet on one machine. One network namespace per host, a TUN device in
// each, and a forwarder process that moves every packet between them with the configured one-way
// delay, jitter, loss, reordering and rate caps, so every TCP connection sees the whole round trip
// (docs/netem.md).
//
//   shoal-netem up --hosts 4 --delay 50ms --rate 200mbit --spec "host 3 rate 20mbit" [--daemon]
//   shoal-netem exec h1 -- ./my-program --listen 10.77.0.2
//   shoal-netem cut h1 h2 ; shoal-netem heal h1 h2 ; shoal-netem set link 0 1 delay 80ms loss 1%
//   shoal-netem probe --from 0 --to 1 --seconds 5 --streams 4
//   shoal-netem stats ; shoal-netem down ; shoal-netem cleanup ; shoal-netem selftest
//
// Every subcommand takes --name (default $SHOAL_NETEM_NAME, else "net"); --help lists the flags.
#include <fcntl.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tools/netem/emulator.h"
#include "tools/netem/forwarder.h"
#include "tools/netem/instance.h"
#include "tools/netem/netns.h"
#include "tools/netem/probe.h"
#include "tools/netem/selftest.h"
#include "tools/netem/topology.h"

namespace shoal::netem {
namespace {

constexpr std::chrono::seconds kDaemonReadyTimeout{60};

int Fail(const std::string& message) {
  std::fprintf(stderr, "shoal-netem: %s\n", message.c_str());
  return 1;
}

std::string DefaultName() {
  const char* env = std::getenv("SHOAL_NETEM_NAME");
  return env != nullptr && *env != '\0' ? env : "net";
}

// The flags of `up`, as typed; turned into topology statements by Statements().
struct UpFlags {
  std::string topology_file;
  int hosts = 0;
  std::string delay, jitter, loss, reorder, rate, egress, ingress, queue;
  int mtu = 0;
  long long seed = -1;
  std::vector<std::string> specs;
  int txqueuelen = kTxQueueLenDefault;
  bool daemon = false;
  int ready_fd = -1;
  bool quiet = false;
  bool no_realtime = false;
  int spin_us = 0;
  bool offload = false;
};

// Flags first (defaults for every host and link), then the file, then --spec: later ones win.
bool Statements(const UpFlags& f, std::vector<std::string>* lines, std::string* error) {
  if (f.hosts > 0) lines->push_back("hosts " + std::to_string(f.hosts));
  if (f.mtu > 0) lines->push_back("mtu " + std::to_string(f.mtu));
  if (f.seed >= 0) lines->push_back("seed " + std::to_string(f.seed));
  auto link = [&](const char* key, const std::string& v) {
    if (!v.empty()) lines->push_back(std::string("link * * ") + key + " " + v);
  };
  auto host = [&](const char* key, const std::string& v) {
    if (!v.empty()) lines->push_back(std::string("host * ") + key + " " + v);
  };
  link("delay", f.delay);
  link("jitter", f.jitter);
  link("loss", f.loss);
  link("reorder", f.reorder);
  host("rate", f.rate);
  host("egress", f.egress);
  host("ingress", f.ingress);
  host("queue", f.queue);
  if (!f.topology_file.empty()) {
    std::ifstream in(f.topology_file);
    if (!in) {
      *error = "cannot read topology file " + f.topology_file;
      return false;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    for (std::string& line : SplitLines(ss.str())) lines->push_back(std::move(line));
  }
  lines->insert(lines->end(), f.specs.begin(), f.specs.end());
  return true;
}

// `up --daemon`: the child becomes the forwarder; the parent waits for its report and exits.
int Daemonize(UpOptions options) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Fail(std::string("pipe: ") + std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid < 0) return Fail(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::close(fds[0]);
    ::setsid();
    const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    ::dup2(null_fd, STDIN_FILENO);
    ::dup2(null_fd, STDOUT_FILENO);
    ::dup2(null_fd, STDERR_FILENO);  // until the log file: errors before it go through the pipe
    if (::chdir("/") != 0) ::_exit(1);
    options.ready_fd = fds[1];
    options.print_summary = false;
    options.log_to_state_dir = true;
    std::exit(RunEmulator(options));
  }
  ::close(fds[1]);
  std::string status;
  const auto deadline = std::chrono::steady_clock::now() + kDaemonReadyTimeout;
  char buf[512];
  while (status.find('\n') == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    pollfd p{fds[0], POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) == 0) {
      status = "error: the forwarder did not report within " +
               std::to_string(kDaemonReadyTimeout.count()) + " s (pid " + std::to_string(pid) +
               ", log " + LogPath(options.name) + ")\n";
      break;
    }
    const ssize_t n = ::read(fds[0], buf, sizeof(buf));  // the child reports or exits
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    status.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  if (status.rfind("ready ", 0) == 0) {
    std::fputs(SummaryText(options.name, options.topology).c_str(), stdout);
    std::printf("forwarder pid %s", status.substr(6).c_str());
    return 0;
  }
  if (!status.empty() && status.back() == '\n') status.pop_back();
  if (status.rfind("error: ", 0) == 0) status.erase(0, 7);
  return Fail(status.empty()
                  ? "the forwarder exited without reporting (see " + LogPath(options.name) + ")"
                  : status);
}

int RunUp(const std::string& name, const UpFlags& flags) {
  if (!ValidEmulatorName(name)) {
    return Fail("bad name '" + name + "': 1-" + std::to_string(kNameBytesMax) +
                " characters of a-z 0-9 _ -");
  }
  std::vector<std::string> lines;
  std::string error;
  UpOptions options;
  if (!Statements(flags, &lines, &error) || !ParseTopology(lines, &options.topology, &error)) {
    return Fail(error);
  }
  options.name = name;
  options.txqueuelen = flags.txqueuelen;
  options.ready_fd = flags.ready_fd;
  options.print_summary = !flags.quiet;
  options.realtime = !flags.no_realtime;
  options.spin_us = flags.spin_us;
  options.offload = flags.offload;
  if (flags.daemon) return Daemonize(options);
  return RunEmulator(options);
}

int RunExec(const std::string& name, std::vector<std::string> rest) {
  if (!rest.empty() && rest.front() == "--") rest.erase(rest.begin());
  if (rest.empty()) return Fail("usage: shoal-netem exec [--name NAME] HOST -- COMMAND [ARGS...]");
  int host = 0;
  if (!ParseHostRef(rest.front(), kHostsMax, false, &host)) {
    return Fail("bad host '" + rest.front() + "' (an index or hI)");
  }
  rest.erase(rest.begin());
  if (!rest.empty() && rest.front() == "--") rest.erase(rest.begin());
  if (rest.empty()) return Fail("no command to run in host " + std::to_string(host));
  if (!EmulatorRunning(name)) {
    return Fail("emulator '" + name + "' is not running (start it with shoal-netem up)");
  }
  const std::string ns = NamespacePath(name, host);
  if (::access(ns.c_str(), F_OK) != 0)
    return Fail("emulator '" + name + "' has no host " + std::to_string(host));
  std::string error;
  ExecInNamespace(ns, rest,
                  {{"SHOAL_NETEM_NAME", name},
                   {"SHOAL_NETEM_HOST", std::to_string(host)},
                   {"SHOAL_NETEM_ADDR", HostAddressText(host)}},
                  &error);
  std::fprintf(stderr, "shoal-netem exec: %s\n", error.c_str());
  return 127;
}

int PrintReply(const std::string& name, const std::string& request) {
  std::string reply;
  std::string error;
  if (!ControlRequest(name, request, kControlTimeoutDefault, &reply, &error)) return Fail(error);
  std::fputs(reply.c_str(), stdout);
  return 0;
}

int RunList() {
  const std::vector<std::string> names = KnownEmulators();
  if (names.empty()) std::printf("no emulators\n");
  for (const std::string& n : names) {
    const bool running = EmulatorRunning(n);
    const std::size_t namespaces = ListNamespaces(std::string(kNamespacePrefix) + n + "-h").size();
    std::printf("%-24s %-9s %zu namespace(s)%s\n", n.c_str(), running ? "running" : "dead",
                namespaces, running ? "" : "  (leftovers: shoal-netem cleanup)");
  }
  return 0;
}

struct ProbeFlags {
  std::string from = "0";
  std::string to = "1";
  int connects = 5;
  int rtts = 10;
  double seconds = 5;
  int streams = 1;
  int udp = 0;
  int timeout_ms = 5000;
};

int RunProbe(const std::string& name, const ProbeFlags& f) {
  ProbeEnds ends;
  ends.emulator = name;
  if (!ParseHostRef(f.from, kHostsMax, false, &ends.from) ||
      !ParseHostRef(f.to, kHostsMax, false, &ends.to)) {
    return Fail("--from and --to take a host index or hI");
  }
  const std::chrono::milliseconds timeout(f.timeout_ms);
  std::string error;
  std::printf("probe h%d -> h%d (%s -> %s) of '%s'\n", ends.from, ends.to,
              HostAddressText(ends.from).c_str(), HostAddressText(ends.to).c_str(), name.c_str());
  if (f.connects > 0) {
    std::vector<double> ms;
    if (!MeasureConnectMs(ends, f.connects, timeout, &ms, &error)) return Fail(error);
    std::printf("tcp_connect_ms %s (n=%d)\n", SummaryMs(ms).c_str(), f.connects);
  }
  if (f.rtts > 0) {
    std::vector<double> ms;
    if (!MeasureRoundTripMs(ends, f.rtts, timeout, &ms, &error)) return Fail(error);
    std::printf("tcp_rtt_ms %s (n=%d)\n", SummaryMs(ms).c_str(), f.rtts);
  }
  if (f.seconds > 0) {
    Throughput t;
    if (!MeasureThroughput(ends, f.streams, f.seconds, timeout, &t, &error)) return Fail(error);
    std::printf("throughput_mbit %.1f second_half_mbit %.1f streams %d seconds %.2f bytes %llu\n",
                t.mbit_per_s, t.mbit_per_s_second_half, f.streams, t.seconds,
                static_cast<unsigned long long>(t.bytes));
  }
  if (f.udp > 0) {
    UdpDelivery d;
    if (!MeasureUdpDelivery(ends, f.udp, timeout, &d, &error)) return Fail(error);
    std::printf("udp sent %d received %d lost %d\n", d.sent, d.received, d.sent - d.received);
  }
  return 0;
}

std::string Join(const std::vector<std::string>& words) {
  std::string out;
  for (const std::string& w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

}  // namespace
}  // namespace shoal::netem

int main(int argc, char** argv) {
  using namespace shoal::netem;
  CLI::App app{
      "shoal-netem: an emulated internet on one machine (namespaces, TUN devices and a "
      "forwarder with delay, jitter, loss, reordering and rate caps); see docs/netem.md"};
  app.require_subcommand(1);
  std::string name = DefaultName();
  auto add_name = [&](CLI::App* sub) {
    sub->add_option("--name", name, "Emulator name (default: $SHOAL_NETEM_NAME or 'net')")
        ->capture_default_str();
  };

  UpFlags up;
  CLI::App* up_cmd = app.add_subcommand("up", "Create the hosts and run the forwarder");
  add_name(up_cmd);
  up_cmd->add_option("--topology", up.topology_file, "Topology file (statements, see docs)");
  up_cmd->add_option("--hosts", up.hosts, "Number of hosts")->check(CLI::Range(1, kHostsMax));
  up_cmd->add_option("--delay", up.delay, "One-way delay of every link, e.g. 50ms");
  up_cmd->add_option("--jitter", up.jitter, "Jitter of every link: delay +- uniform(jitter)");
  up_cmd->add_option("--loss", up.loss, "Random loss of every link, e.g. 1% or 0.01");
  up_cmd->add_option("--reorder", up.reorder, "Share of packets held back 1 ms, e.g. 0.5%");
  up_cmd->add_option("--rate", up.rate, "Egress and ingress cap of every host, e.g. 200mbit");
  up_cmd->add_option("--egress", up.egress, "Egress (upload) cap of every host");
  up_cmd->add_option("--ingress", up.ingress, "Ingress (download) cap of every host");
  up_cmd->add_option("--queue", up.queue, "Queue limit at a cap, as time (default: max RTT)");
  up_cmd->add_option("--mtu", up.mtu, "MTU of the TUN devices (default 1500)");
  up_cmd->add_option("--seed", up.seed, "Seed of loss, jitter and reordering");
  up_cmd->add_option("--spec", up.specs,
                     "A topology statement, e.g. \"host 3 rate 20mbit\" (repeatable; applied "
                     "after the flags and the file)");
  up_cmd->add_option("--txqueuelen", up.txqueuelen, "Queue length of the TUN devices")
      ->check(CLI::Range(16, 100000))
      ->capture_default_str();
  up_cmd->add_flag("--daemon", up.daemon, "Run the forwarder in the background");
  up_cmd->add_option("--ready-fd", up.ready_fd, "Report 'ready PID' or 'error: ...' on this fd");
  up_cmd->add_flag("--quiet", up.quiet, "Do not print the hosts once up");
  up_cmd->add_flag("--no-realtime", up.no_realtime,
                   "Run the forwarder at normal priority (default: SCHED_FIFO 10)");
  up_cmd
      ->add_option("--spin-us", up.spin_us,
                   "Wake this long before a packet is due and poll: less delay error on idle "
                   "links for more CPU (0: sleep until due)")
      ->check(CLI::Range(0, kSpinMaxUs))
      ->capture_default_str();
  up_cmd->add_flag("--offload", up.offload,
                   "TUN offloads (TSO): TCP hands over 64 KiB super-packets, shaped per segment "
                   "and moved in one piece; for rates above ~1 Gbit/s in all");

  int down_timeout_s = 15;
  CLI::App* down_cmd = app.add_subcommand("down", "Stop an emulator (and what runs in its hosts)");
  add_name(down_cmd);
  down_cmd->add_option("--timeout-s", down_timeout_s, "Kill the forwarder after this long")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();

  bool cleanup_all = false;
  CLI::App* cleanup_cmd = app.add_subcommand(
      "cleanup", "Remove the leftovers of emulators that are not running (crashed or killed)");
  cleanup_cmd->add_option("--name", name, "Only this emulator (default: every dead one)");
  cleanup_cmd->add_flag("--all", cleanup_all, "Every dead emulator (the default without --name)");

  CLI::App* list_cmd = app.add_subcommand("list", "Emulators on this machine, running or dead");

  CLI::App* exec_cmd = app.add_subcommand("exec", "Run a command inside a host: exec HOST -- CMD");
  add_name(exec_cmd);
  exec_cmd->prefix_command();

  std::string a_host;
  std::string b_host;
  bool one_way = false;
  CLI::App* cut_cmd = app.add_subcommand("cut", "Cut the link between two hosts (A B, * = all)");
  CLI::App* heal_cmd = app.add_subcommand("heal", "Heal the link between two hosts");
  for (CLI::App* sub : {cut_cmd, heal_cmd}) {
    add_name(sub);
    sub->add_option("a", a_host, "Host (index, hI or *)")->required();
    sub->add_option("b", b_host, "Other host (index, hI or *)")->required();
    sub->add_flag("--one-way", one_way, "Only the direction a -> b");
  }

  CLI::App* set_cmd = app.add_subcommand(
      "set",
      "Change a host or link while running: set link 0 1 delay 80ms | set host 3 rate "
      "20mbit | set 0 1 loss 1%");
  add_name(set_cmd);
  set_cmd->prefix_command();

  bool stats_reset = false;
  CLI::App* stats_cmd = app.add_subcommand("stats", "Counters of the hosts and links");
  add_name(stats_cmd);
  stats_cmd->add_flag("--reset", stats_reset, "Reset the counters after printing them");

  CLI::App* topo_cmd = app.add_subcommand("topology", "The running emulator's topology");
  add_name(topo_cmd);

  std::string addr_host;
  CLI::App* addr_cmd = app.add_subcommand("addr", "The address of a host");
  add_name(addr_cmd);
  addr_cmd->add_option("host", addr_host, "Host (index or hI)")->required();

  ProbeFlags probe;
  CLI::App* probe_cmd =
      app.add_subcommand("probe", "Measure connect time, round trip and TCP throughput");
  add_name(probe_cmd);
  probe_cmd->add_option("--from", probe.from, "Sending host")->capture_default_str();
  probe_cmd->add_option("--to", probe.to, "Receiving host")->capture_default_str();
  probe_cmd->add_option("--connects", probe.connects, "TCP connect samples (0: none)")
      ->check(CLI::Range(0, kProbeSamplesMax))
      ->capture_default_str();
  probe_cmd->add_option("--rtts", probe.rtts, "TCP ping-pong samples (0: none)")
      ->check(CLI::Range(0, kProbeSamplesMax))
      ->capture_default_str();
  probe_cmd->add_option("--seconds", probe.seconds, "Bulk transfer time (0: none)")
      ->check(CLI::Range(0.0, kProbeSecondsMax))
      ->capture_default_str();
  probe_cmd->add_option("--streams", probe.streams, "Parallel TCP streams of the bulk transfer")
      ->check(CLI::Range(1, kProbeStreamsMax))
      ->capture_default_str();
  probe_cmd->add_option("--udp", probe.udp, "UDP datagrams to send and count (0: none)")
      ->check(CLI::Range(0, kUdpDatagramsMax))
      ->capture_default_str();
  probe_cmd->add_option("--timeout-ms", probe.timeout_ms, "Deadline of each step")
      ->check(CLI::Range(1, 600000))
      ->capture_default_str();

  SelfTestOptions selftest;
  CLI::App* selftest_cmd = app.add_subcommand(
      "selftest", "Bring up 3 hosts and check delay, cut/heal, rate cap, loss and cleanup");
  selftest_cmd->add_option("--delay-ms", selftest.delay_ms, "One-way delay to check")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  selftest_cmd->add_flag("--verbose", selftest.verbose, "Print every measurement");

  CLI11_PARSE(app, argc, argv);

  if (up_cmd->parsed()) return RunUp(name, up);
  if (exec_cmd->parsed()) return RunExec(name, exec_cmd->remaining());
  if (list_cmd->parsed()) return RunList();
  if (selftest_cmd->parsed()) return RunSelfTest(selftest);
  if (cleanup_cmd->parsed()) {
    std::vector<std::string> removed;
    std::string error;
    const bool ok = CleanupEmulators(cleanup_cmd->count("--name") > 0 && !cleanup_all ? name : "",
                                     &removed, &error);
    for (const std::string& r : removed) std::printf("removed %s\n", r.c_str());
    if (removed.empty() && ok) std::printf("nothing to clean up\n");
    return ok ? 0 : Fail(error);
  }
  if (!ValidEmulatorName(name)) return Fail("bad name '" + name + "'");
  if (down_cmd->parsed()) {
    std::string error;
    if (!StopEmulator(name, std::chrono::seconds(down_timeout_s), &error)) return Fail(error);
    std::printf("emulator '%s' is down\n", name.c_str());
    return 0;
  }
  if (cut_cmd->parsed() || heal_cmd->parsed()) {
    return PrintReply(name, std::string(cut_cmd->parsed() ? "cut " : "heal ") + a_host + " " +
                                b_host + (one_way ? " one-way" : ""));
  }
  if (set_cmd->parsed()) {
    std::vector<std::string> words = set_cmd->remaining();
    if (words.empty()) return Fail("usage: shoal-netem set link A B KEY VALUE... | host H ...");
    if (words.front() != "link" && words.front() != "host") words.insert(words.begin(), "link");
    return PrintReply(name, Join(words));
  }
  if (stats_cmd->parsed()) {
    const int rc = PrintReply(name, "stats");
    return rc != 0 || !stats_reset ? rc : PrintReply(name, "stats reset");
  }
  if (topo_cmd->parsed()) return PrintReply(name, "topology");
  if (addr_cmd->parsed()) {
    int host = 0;
    if (!ParseHostRef(addr_host, kHostsMax, false, &host)) return Fail("bad host " + addr_host);
    std::printf("%s\n", HostAddressText(host).c_str());
    return 0;
  }
  if (probe_cmd->parsed()) return RunProbe(name, probe);
  return Fail("no subcommand");
}
