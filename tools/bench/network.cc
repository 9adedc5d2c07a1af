#include "tools/bench/network.h"

#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "tools/bench/sysstat.h"
#include "tools/netem/emulator.h"
#include "tools/netem/netns.h"

namespace shoal::bench {
namespace {

using Clock = std::chrono::steady_clock;

// `sysctl -w` in a host: a fork and an exec, well below this.
constexpr std::chrono::seconds kSysctlTimeout{10};
constexpr int kExitAgentRefused = 126;

class LoopbackNetwork final : public Network {
 public:
  std::string Address(int) const override { return "127.0.0.1"; }
  std::vector<std::string> OnHost(int, std::vector<std::string> argv) const override {
    return argv;
  }
  std::optional<std::uint64_t> SentBytes(int) override { return ReadLoopbackTxBytes(); }
  void ResetRunStats() override {}
  std::string RunStats(int) override { return {}; }
  std::string Label(int) const override { return "net=lo"; }
  std::optional<double> CapGBps(int) const override { return std::nullopt; }
  int ReapStragglers(int) override { return 0; }
  int hosts() const override { return 1 << 20; }
  bool emulated() const override { return false; }
  std::string Describe() const override { return "loopback (127.0.0.1)"; }
};

// The value after `key` in a line of "key value" pairs of the emulator's stats; nullopt if none.
std::optional<double> StatsValue(const std::vector<std::string>& words, const std::string& key) {
  for (std::size_t i = 0; i + 1 < words.size(); i++) {
    if (words[i] != key) continue;
    char* end = nullptr;
    const double v = std::strtod(words[i + 1].c_str(), &end);
    if (end != words[i + 1].c_str() + words[i + 1].size()) return std::nullopt;
    return v;
  }
  return std::nullopt;
}

// The words of each "host I ..." line of the emulator's stats, by host; and its "lateness" line.
struct ParsedStats {
  std::vector<std::vector<std::string>> host;
  std::vector<std::string> lateness;
};

ParsedStats ParseStats(const std::string& stats, int hosts) {
  ParsedStats out;
  out.host.resize(static_cast<std::size_t>(hosts));
  std::istringstream in(stats);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> words = SplitList(line);
    if (words.empty()) continue;
    long long host = 0;
    if (words[0] == "host" && words.size() >= 2 && ParseInt(words[1], 0, hosts - 1, &host)) {
      out.host[static_cast<std::size_t>(host)] = std::move(words);
    } else if (words[0] == "lateness") {
      out.lateness = std::move(words);
    }
  }
  return out;
}

class NetemNetwork final : public Network {
 public:
  NetemNetwork(const NetemConfig& config, std::unique_ptr<netem::Emulator> emulator)
      : config_(config), emulator_(std::move(emulator)) {}

  ~NetemNetwork() override {
    std::string error;
    if (!emulator_->Stop(&error)) std::fprintf(stderr, "# netem: %s\n", error.c_str());
  }

  std::string Address(int host) const override { return emulator_->Address(host); }

  std::vector<std::string> OnHost(int host, std::vector<std::string> argv) const override {
    return emulator_->ExecArgv(host, argv);
  }

  std::optional<std::uint64_t> SentBytes(int n) override {
    std::string stats;
    std::string error;
    if (!emulator_->Stats(&stats, &error)) return std::nullopt;
    const ParsedStats parsed = ParseStats(stats, emulator_->hosts());
    std::uint64_t total = 0;
    for (int h = 0; h < n && h < emulator_->hosts(); h++) {
      total += static_cast<std::uint64_t>(StatsValue(parsed.host[h], "sent_bytes").value_or(0));
    }
    return total;
  }

  void ResetRunStats() override {
    std::string error;
    if (!emulator_->ResetStats(&error)) std::fprintf(stderr, "# netem: %s\n", error.c_str());
  }

  std::string RunStats(int n) override {
    std::string stats;
    std::string error;
    if (!emulator_->Stats(&stats, &error)) return {};
    const ParsedStats parsed = ParseStats(stats, emulator_->hosts());
    double drops = 0;
    for (int h = 0; h < n && h < emulator_->hosts(); h++) {
      drops += StatsValue(parsed.host[h], "dropped_egress_queue").value_or(0) +
               StatsValue(parsed.host[h], "dropped_ingress_queue").value_or(0);
    }
    return fmt::format(
        " fw_late_mean_us={:.0f} fw_late_p99_us={:.0f} fw_late_max_us={:.0f} drops={:.0f}",
        StatsValue(parsed.lateness, "mean_us").value_or(-1),
        StatsValue(parsed.lateness, "p99_us_below").value_or(-1),
        StatsValue(parsed.lateness, "max_us").value_or(-1), drops);
  }

  std::string Label(int n) const override {
    const netem::Topology& t = config_.topology;
    std::string label = "net=netem";
    if (n >= 2) {
      const std::optional<std::int64_t> delay =
          SameOnLinks<std::int64_t>(n, [](const netem::LinkParams& p) { return p.delay_us; });
      label += " delay=" + (delay ? netem::FormatDurationUs(*delay) : std::string("mixed"));
      const std::optional<std::int64_t> jitter =
          SameOnLinks<std::int64_t>(n, [](const netem::LinkParams& p) { return p.jitter_us; });
      if (!jitter || *jitter != 0) {
        label += " jitter=" + (jitter ? netem::FormatDurationUs(*jitter) : std::string("mixed"));
      }
      const std::optional<double> loss =
          SameOnLinks<double>(n, [](const netem::LinkParams& p) { return p.loss; });
      if (!loss || *loss != 0) {
        label += " loss=" + (loss ? fmt::format("{:g}%", *loss * 100) : std::string("mixed"));
      }
    }
    std::optional<std::int64_t> rate;
    bool mixed = false;
    for (int h = 0; h < n; h++) {
      for (std::int64_t bps : {t.host[h].egress_bps, t.host[h].ingress_bps}) {
        if (rate && *rate != bps) mixed = true;
        rate = bps;
      }
    }
    label += " rate=" + (mixed ? std::string("mixed") : netem::FormatRateBps(rate.value_or(0)));
    if (const std::optional<double> cap = CapGBps(n))
      label += fmt::format(" cap_GBps={:.4g}", *cap);
    if (!config_.sysctls.empty())
      label += " sysctl=" + fmt::format("{}", fmt::join(config_.sysctls, ","));
    return label;
  }

  std::optional<double> CapGBps(int n) const override {
    std::int64_t cap_bps = 0;
    for (int h = 0; h < n && h < config_.topology.hosts; h++) {
      for (std::int64_t bps :
           {config_.topology.host[h].egress_bps, config_.topology.host[h].ingress_bps}) {
        if (bps > 0 && (cap_bps == 0 || bps < cap_bps)) cap_bps = bps;
      }
    }
    if (cap_bps == 0) return std::nullopt;
    return static_cast<double>(cap_bps) / 8 / 1e9;
  }

  int ReapStragglers(int n) override {
    int stopped = 0;
    for (int h = 0; h < n && h < emulator_->hosts(); h++) {
      for (pid_t pid : netem::ProcessesInNamespace(emulator_->NamespacePath(h))) {
        if (::kill(pid, SIGKILL) == 0) stopped++;
      }
    }
    return stopped;
  }

  int hosts() const override { return emulator_->hosts(); }
  bool emulated() const override { return true; }

  std::string Describe() const override {
    return fmt::format("netem '{}' ({} hosts, 10.77.0.1-{}, forwarder pid {}): {}{}{}",
                       emulator_->name(), emulator_->hosts(), emulator_->hosts(),
                       emulator_->forwarder_pid(), Label(emulator_->hosts()),
                       config_.realtime ? "" : " (forwarder not real-time)",
                       config_.offload ? " (TUN offloads)" : "");
  }

 private:
  // The value of `get` on every link among hosts [0, n) if they all agree; nullopt otherwise.
  template <typename T, typename Get>
  std::optional<T> SameOnLinks(int n, Get get) const {
    std::optional<T> value;
    for (int a = 0; a < n; a++) {
      for (int b = 0; b < n; b++) {
        if (a == b) continue;
        const T v = get(config_.topology.Link(a, b));
        if (value && *value != v) return std::nullopt;
        value = v;
      }
    }
    return value;
  }

  const NetemConfig config_;
  std::unique_ptr<netem::Emulator> emulator_;
};

// Runs `sysctl -q -w KEY=VALUE...` in every host and waits for each.
bool SetSysctls(const netem::Emulator& emulator, const std::vector<std::string>& sysctls,
                Supervisor& supervisor, std::string* error) {
  if (sysctls.empty()) return true;
  std::vector<std::string> argv = {"sysctl", "-q", "-w"};
  for (std::string kv : sysctls) {
    // "net.ipv4.tcp_wmem=4096,16384,33554432": the kernel wants blanks between a vector's values.
    std::replace(kv.begin() + static_cast<std::ptrdiff_t>(kv.find('=')), kv.end(), ',', ' ');
    argv.push_back(kv);
  }
  for (int h = 0; h < emulator.hosts(); h++) {
    SpawnSpec spec;
    spec.name = fmt::format("sysctl in host {}", h);
    spec.argv = emulator.ExecArgv(h, argv);
    pid_t pid = -1;
    if (!supervisor.Spawn(spec, &pid, error)) return false;
    const auto deadline = Clock::now() + kSysctlTimeout;
    while (supervisor.Running(pid)) {
      if (supervisor.Wait(deadline) != Supervisor::Event::kChildExited) break;
    }
    if (supervisor.Running(pid)) {
      supervisor.Stop(pid, std::chrono::milliseconds(500));
      *error = supervisor.interrupted() ? "interrupted" : spec.name + " did not finish";
      return false;
    }
    if (supervisor.ExitCode(pid) != 0) {
      *error = fmt::format("{} failed (exit {}): sysctl -w {}", spec.name, supervisor.ExitCode(pid),
                           fmt::join(sysctls, " "));
      return false;
    }
  }
  return true;
}

}  // namespace

std::unique_ptr<Network> MakeLoopbackNetwork() { return std::make_unique<LoopbackNetwork>(); }

std::unique_ptr<Network> StartNetemNetwork(const NetemConfig& config, Supervisor& supervisor,
                                           bool* skipped, std::string* error) {
  *skipped = false;
  if (!netem::CheckPrivileges(error)) {
    *skipped = true;
    return nullptr;
  }
  netem::Emulator::Options options;
  options.name = config.name;
  options.topology = config.topology;
  options.netem_bin = config.netem_bin;
  options.realtime = config.realtime;
  options.offload = config.offload;
  std::unique_ptr<netem::Emulator> emulator;
  if (!netem::Emulator::Start(options, &emulator, error)) return nullptr;
  const netem::Emulator& emu = *emulator;
  // From here the Network owns the emulator: a failure below stops it on the way out.
  auto network = std::make_unique<NetemNetwork>(config, std::move(emulator));
  if (!SetSysctls(emu, config.sysctls, supervisor, error)) return nullptr;
  return network;
}

int RunNetemMpiAgent(int argc, char** argv) {
  // argv: shoal-bench --netem-mpi-agent NAME NETEM_BIN SESSION_BASE HOST CMD...
  if (argc < 7) {
    std::fprintf(stderr, "%s: usage: %s NAME NETEM_BIN SESSION_BASE HOST CMD...\n", argv[0],
                 kNetemMpiAgentFlag);
    return kExitUsage;
  }
  const std::string name = argv[2];
  const std::string netem_bin = argv[3];
  const std::string session_base = argv[4];
  const std::string host_text = argv[5];
  // Only an address of this emulator's hosts: the agent must never reach out to a real machine.
  int host = -1;
  unsigned a = 0, b = 0, c = 0, d = 0;
  char tail = 0;
  if (std::sscanf(host_text.c_str(), "%u.%u.%u.%u%c", &a, &b, &c, &d, &tail) == 4 && a <= 255 &&
      b <= 255 && c <= 255 && d <= 255) {
    host = netem::HostOfAddress((a << 24) | (b << 16) | (c << 8) | d, netem::kHostsMax);
  }
  if (host < 0 || ::access(netem::NamespacePath(name, host).c_str(), F_OK) != 0) {
    std::fprintf(stderr, "%s: refusing host '%s': not a host of emulator '%s'\n",
                 kNetemMpiAgentFlag, host_text.c_str(), name.c_str());
    return kExitAgentRefused;
  }
  // Each host's orted gets a session directory of its own (see MpiSessionDir).
  const std::string session_dir = MpiSessionDir(session_base, host);
  std::error_code ec;
  std::filesystem::create_directories(session_dir, ec);
  if (ec) {
    std::fprintf(stderr, "%s: cannot create %s: %s\n", kNetemMpiAgentFlag, session_dir.c_str(),
                 ec.message().c_str());
    return kExitAgentRefused;
  }
  ::setenv("OMPI_MCA_orte_tmpdir_base", session_dir.c_str(), 1);
  // The rest is a command line meant for a remote shell.
  std::string command;
  for (int i = 6; i < argc; i++) command += (command.empty() ? "" : " ") + std::string(argv[i]);
  std::vector<std::string> args =
      netem::ExecArgvFor(netem_bin, name, host, {"/bin/sh", "-c", command});
  std::vector<char*> exec_argv;
  for (std::string& s : args) exec_argv.push_back(s.data());
  exec_argv.push_back(nullptr);
  ::execv(exec_argv[0], exec_argv.data());
  std::fprintf(stderr, "%s: exec %s: %s\n", kNetemMpiAgentFlag, exec_argv[0], std::strerror(errno));
  return 127;
}

std::string MpiSessionDir(const std::string& base, int host) {
  return base + "/h" + std::to_string(host);
}

}  // namespace shoal::bench
