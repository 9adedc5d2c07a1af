// shoal-bench: all-reduce benchmark of shoal (f32 SUM, in place), in the manner of nccl-tests and
// with the same measurement, data pattern, check and result line as the peers harness
// (shared/peers), so that shoal can be compared with Gloo and Open MPI in one invocation.
//
//   shoal-bench                                    local: coordinator + n workers on 127.0.0.1
//   shoal-bench --n "2 4" --sizes "1M 64M" --streams "1 4" --peers "gloo mpi"
//   shoal-bench --coordinator HOST:PORT --expect N  join an existing group as one worker
//   shoal-bench --netem-delay 50ms --netem-rate 200mbit --n 4 --sizes 256M --peers "gloo mpi"
//                                                  local, each process in an emulated host
//
// See --help for every flag; local.h and worker.h describe what a run does.
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "shoal/common/limits.h"
#include "tools/bench/config.h"
#include "tools/bench/host_peers.h"
#include "tools/bench/local.h"
#include "tools/bench/network.h"
#include "tools/bench/peers.h"
#include "tools/bench/report.h"
#include "tools/bench/worker.h"
#include "tools/common/pattern.h"
#include "tools/common/process.h"
#include "tools/netem/emulator.h"
#include "tools/netem/topology.h"

namespace shoal::bench {
namespace {

// Everything the command line says, as typed; checked and converted in Validate*.
struct Flags {
  std::string mode;  // "", local, join
  bool worker = false;
  std::string n_list = "2 3 4";
  std::string sizes = "1M 16M 64M 256M";
  std::string iters = "auto";
  std::string warmup = "auto";
  std::string batch = "auto";
  std::string streams = "1 2 4";
  std::string segment_bytes;
  int timeout_s = 300;
  std::int64_t op_timeout_ms = 60000;
  std::string check = "every";
  std::string out_path;
  std::string keep_logs_dir;
  std::string coord_bin;
  std::string log_level = "warn";
  bool tls = false;
  int wait_idle_s = 0;
  bool inject_error = false;
  std::string peers;
  std::string peers_dir = SHOAL_BENCH_PEERS_DIR;
  std::string gloo_algos = "new_ring ring_chunked";
  std::string mpi_algos = "default";
  std::string peers_order = "interleaved";
  bool peers_only = false;
  std::string mpi_args;
  // netem
  std::string netem_spec;
  std::string netem_delay;
  std::string netem_rate;
  std::string netem_sysctl;
  std::string netem_name;
  std::string netem_bin;
  bool netem_no_realtime = false;
  bool netem_offload = false;
  std::string peers_build_dir;
  // join mode
  std::string coordinator;
  int expect = 0;
  std::string data_host = "127.0.0.1";
  std::string data_bind_host;
  int data_port = 0;
  std::string label;
};

// Reports a command-line error; false, for the validators.
bool Usage(const std::string& message) {
  std::fprintf(stderr, "error: %s (see --help)\n", message.c_str());
  return false;
}

int UsageExit(const std::string& message) {
  Usage(message);
  return kExitUsage;
}

bool ParseSizes(const std::string& text, std::vector<std::uint64_t>* sizes) {
  sizes->clear();
  for (const std::string& word : SplitList(text)) {
    std::uint64_t bytes = 0;
    if (!ParseBytes(word, &bytes)) return Usage("bad size '" + word + "' (use e.g. 64K 16M 1G)");
    if (bytes == 0 || bytes % sizeof(float) != 0) {
      return Usage("size '" + word + "' must be a positive multiple of 4 bytes");
    }
    if (bytes > limits::kCollectiveBytesMax) return Usage("size '" + word + "' is too large");
    sizes->push_back(bytes);
  }
  if (sizes->empty()) return Usage("--sizes is empty");
  return true;
}

bool ParseIntList(const std::string& flag, const std::string& text, long long min, long long max,
                  std::vector<int>* out) {
  out->clear();
  for (const std::string& word : SplitList(text)) {
    long long v = 0;
    if (!ParseInt(word, min, max, &v)) {
      return Usage(fmt::format("{}: '{}' is not an integer in [{}, {}]", flag, word, min, max));
    }
    out->push_back(static_cast<int>(v));
  }
  if (out->empty()) return Usage(flag + " is empty");
  return true;
}

// The flags shared by local and join mode.
bool ValidateCommon(const Flags& f, std::vector<std::uint64_t>* sizes, std::optional<int>* iters,
                    std::optional<int>* warmup, std::optional<int>* batch, CheckMode* check,
                    std::optional<std::uint64_t>* segment_bytes) {
  if (!ParseSizes(f.sizes, sizes)) return false;
  if (!ParseAutoInt(f.iters, iters) || (*iters && **iters < 1)) {
    return Usage("--iters must be 'auto' or a positive integer");
  }
  if (!ParseAutoInt(f.warmup, warmup)) return Usage("--warmup must be 'auto' or an integer >= 0");
  if (!ParseAutoInt(f.batch, batch)) return Usage("--batch must be 'auto' or an integer >= 0");
  if (!ParseCheckMode(f.check, check)) return Usage("--check must be every, last or none");
  if (!f.segment_bytes.empty()) {
    std::uint64_t s = 0;
    if (!ParseBytes(f.segment_bytes, &s) || s < limits::kSegmentBytesMin ||
        s > limits::kSegmentBytesMax) {
      return Usage(fmt::format("--segment-bytes must be in [{}, {}]", limits::kSegmentBytesMin,
                               limits::kSegmentBytesMax));
    }
    *segment_bytes = s;
  }
  if (f.timeout_s < 1) return Usage("--timeout-s must be at least 1");
  if (f.op_timeout_ms < 1) return Usage("--op-timeout-ms must be at least 1");
  return true;
}

// Where shoal-coord is: --coord-bin, else next to shoal-bench (installed, or one build output
// folder), else the build tree's own target, else the build tree's tools/coord next to tools/bench.
std::string FindCoordinator(const std::string& flag, const std::string& self,
                            std::vector<std::string>* tried) {
  std::vector<std::string> candidates;
  if (!flag.empty()) {
    candidates.push_back(flag);
  } else {
    const std::filesystem::path dir = std::filesystem::path(self).parent_path();
    candidates.push_back((dir / "shoal-coord").string());
#ifdef SHOAL_BENCH_COORD_BIN
    candidates.push_back(SHOAL_BENCH_COORD_BIN);
#endif
    candidates.push_back((dir.parent_path() / "coord" / "shoal-coord").string());
  }
  for (const std::string& c : candidates) {
    tried->push_back(c);
    if (IsExecutableFile(c)) return std::filesystem::absolute(c).lexically_normal().string();
  }
  return {};
}

// An executable named without a slash, looked up in PATH (the Supervisor execs paths only).
std::string FindInPath(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    return IsExecutableFile(name) ? std::filesystem::absolute(name).lexically_normal().string()
                                  : std::string();
  }
  const char* path = std::getenv("PATH");
  const std::string all = path == nullptr ? "" : path;
  std::size_t start = 0;
  while (start <= all.size()) {
    std::size_t end = all.find(':', start);
    if (end == std::string::npos) end = all.size();
    const std::string candidate = all.substr(start, end - start) + "/" + name;
    if (end > start && IsExecutableFile(candidate)) return candidate;
    start = end + 1;
  }
  return {};
}

// --netem and its companions: the emulator's topology (hosts = the largest world size, then
// --netem-delay/--netem-rate, then the --netem statements), name, binary and sysctls.
bool ValidateNetem(const Flags& f, int hosts, NetemConfig* c) {
  std::vector<std::string> statements;
  if (!f.netem_delay.empty()) statements.push_back("link * * delay " + f.netem_delay);
  if (!f.netem_rate.empty()) statements.push_back("host * rate " + f.netem_rate);
  bool has_hosts = false;
  std::string current;
  for (char ch : f.netem_spec + ";") {
    if (ch != ';' && ch != '\n') {
      current += ch;
      continue;
    }
    const std::vector<std::string> words = SplitList(current);
    if (!words.empty()) {
      has_hosts = has_hosts || words[0] == "hosts";
      statements.push_back(current);
    }
    current.clear();
  }
  if (!has_hosts) statements.insert(statements.begin(), "hosts " + std::to_string(hosts));
  std::string error;
  if (!netem::ParseTopology(statements, &c->topology, &error)) return Usage("--netem: " + error);
  if (c->topology.hosts < hosts) {
    return Usage(fmt::format("--netem: {} hosts, but --n asks for {}", c->topology.hosts, hosts));
  }
  c->name = f.netem_name.empty() ? fmt::format("sb{}", getpid()) : f.netem_name;
  if (!netem::ValidEmulatorName(c->name)) {
    return Usage(fmt::format("--netem-name: 1-{} of a-z 0-9 _ -", netem::kNameBytesMax));
  }
  c->netem_bin = FindInPath(f.netem_bin.empty() ? netem::DefaultNetemBinary() : f.netem_bin);
  if (c->netem_bin.empty()) return Usage("shoal-netem not found (build it or pass --netem-bin)");
  // mpirun splits its launch agent's command line at blanks.
  if (c->netem_bin.find(' ') != std::string::npos) {
    return Usage("the path of shoal-netem must not contain blanks (mpirun's launch agent)");
  }
  // KEY=VALUE items separated by blanks; a vector value has commas for its blanks.
  std::string item;
  for (char ch : f.netem_sysctl + " ") {
    if (ch != ' ' && ch != '\t' && ch != '\n') {
      item += ch;
      continue;
    }
    if (item.empty()) continue;
    const std::size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size()) {
      return Usage("--netem-sysctl: '" + item + "' is not KEY=VALUE");
    }
    c->sysctls.push_back(item);
    item.clear();
  }
  c->realtime = !f.netem_no_realtime;
  c->offload = f.netem_offload;
  if (!f.peers_build_dir.empty()) {
    c->peers_build_dir = f.peers_build_dir;
  } else if (const char* dir = std::getenv("PEERS_BUILD_DIR"); dir != nullptr && *dir != '\0') {
    c->peers_build_dir = dir;  // run.sh's own default
  } else {
    const char* tmp = std::getenv("TMPDIR");
    c->peers_build_dir =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/peers-build";
  }
  c->peers_build_dir = std::filesystem::absolute(c->peers_build_dir).lexically_normal().string();
  return true;
}

int RunLocalMode(const Flags& f, CLI::App& app) {
  for (const char* join_only :
       {"--coordinator", "--expect", "--data-host", "--data-bind-host", "--data-port", "--label"}) {
    if (app.count(join_only) > 0) {
      return UsageExit(std::string(join_only) + " is for join mode (--mode join)");
    }
  }
  LocalConfig c;
  if (!ValidateCommon(f, &c.sizes_bytes, &c.iters, &c.warmup, &c.batch, &c.check,
                      &c.segment_bytes)) {
    return kExitUsage;
  }
  const long long n_max = std::min<long long>(MaxExactRanks(), limits::kMembersMax);
  if (!ParseIntList("--n", f.n_list, 1, n_max, &c.world_sizes)) return kExitUsage;
  if (!ParseIntList("--streams", f.streams, 1, limits::kStreamsPerLinkMax, &c.streams_per_link)) {
    return kExitUsage;
  }
  if (f.wait_idle_s < 0) return UsageExit("--wait-idle must be >= 0");
  c.timeout_s = f.timeout_s;
  c.op_timeout_ms = f.op_timeout_ms;
  c.log_level = f.log_level;
  c.tls = f.tls;
  c.inject_error = f.inject_error;
  c.wait_idle_s = f.wait_idle_s;
  c.out_path = f.out_path;
  c.keep_logs_dir = f.keep_logs_dir;

  c.peer_libs = SplitList(f.peers);
  for (const std::string& lib : c.peer_libs) {
    if (std::find(std::begin(kPeerLibs), std::end(kPeerLibs), lib) == std::end(kPeerLibs)) {
      return UsageExit("--peers: unknown library '" + lib + "' (gloo mpi mpi_sm torch)");
    }
  }
  if (f.peers_only && c.peer_libs.empty()) return UsageExit("--peers-only needs --peers");
  if (f.peers_order != "interleaved" && f.peers_order != "after") {
    return UsageExit("--peers-order must be interleaved or after");
  }
  c.peers_interleaved = f.peers_order == "interleaved";
  c.gloo_algos = f.gloo_algos;
  c.mpi_algos = f.mpi_algos;
  c.mpi_args = f.mpi_args;
  const bool netem =
      app.count("--netem") + app.count("--netem-delay") + app.count("--netem-rate") > 0;
  if (!netem) {
    for (const char* netem_only : {"--netem-sysctl", "--netem-name", "--netem-bin",
                                   "--netem-no-realtime", "--netem-offload", "--peers-build-dir",
                                   "--mpi-args"}) {
      if (app.count(netem_only) > 0) {
        return UsageExit(std::string(netem_only) +
                         " is for --netem (--netem, --netem-delay or --netem-rate)");
      }
    }
  } else {
    NetemConfig netem_config;
    const int hosts = *std::max_element(c.world_sizes.begin(), c.world_sizes.end());
    if (!ValidateNetem(f, hosts, &netem_config)) return kExitUsage;
    for (const std::string& lib : c.peer_libs) {
      if (lib == "mpi_sm") {
        return UsageExit("--peers mpi_sm is shared memory, not a network: not with --netem");
      }
    }
    for (const std::string& a : SplitList(c.mpi_algos)) {
      if (MpiAlgorithmId(a) < 0) return UsageExit("--mpi-algos: unknown '" + a + "'");
    }
    c.netem = std::move(netem_config);
  }
  if (!c.peer_libs.empty()) {
    c.peers_dir = std::filesystem::absolute(f.peers_dir).lexically_normal().string();
    if (!IsExecutableFile(PeersScript(c.peers_dir))) {
      std::fprintf(stderr, "error: no executable %s (set --peers-dir)\n",
                   PeersScript(c.peers_dir).c_str());
      return kExitShoalError;
    }
  }

  c.self_bin = SelfExecutablePath();
  if (f.peers_only) {
    c.streams_per_link.clear();
  } else {
    if (c.self_bin.empty()) {
      std::fprintf(stderr, "error: cannot find this executable (/proc/self/exe)\n");
      return kExitShoalError;
    }
    std::vector<std::string> tried;
    c.coord_bin = FindCoordinator(f.coord_bin, c.self_bin, &tried);
    if (c.coord_bin.empty()) {
      std::fprintf(stderr, "error: shoal-coord not found (tried:");
      for (const std::string& t : tried) std::fprintf(stderr, " %s", t.c_str());
      std::fprintf(stderr, "); build it or pass --coord-bin\n");
      return kExitShoalError;
    }
  }
  return RunLocal(c);
}

int RunJoinMode(const Flags& f, CLI::App& app) {
  for (const char* local_only :
       {"--n", "--coord-bin", "--peers", "--peers-dir", "--gloo-algos", "--mpi-algos",
        "--peers-order", "--peers-only", "--wait-idle", "--keep-logs", "--netem", "--netem-delay",
        "--netem-rate", "--netem-sysctl", "--netem-name", "--netem-bin", "--netem-no-realtime",
        "--netem-offload", "--peers-build-dir", "--mpi-args"}) {
    if (app.count(local_only) > 0) {
      return UsageExit(std::string(local_only) + " is for local mode");
    }
  }
  WorkerConfig c;
  if (!ValidateCommon(f, &c.sizes_bytes, &c.iters, &c.warmup, &c.batch, &c.check,
                      &c.segment_bytes)) {
    return kExitUsage;
  }
  if (!ParseHostPort(f.coordinator, &c.coordinator_host, &c.coordinator_port)) {
    return UsageExit("--coordinator must be HOST:PORT");
  }
  const int n_max = std::min<int>(MaxExactRanks(), static_cast<int>(limits::kMembersMax));
  if (f.expect < 1 || f.expect > n_max) {
    return UsageExit(fmt::format("--expect N (1..{}) is required in join mode", n_max));
  }
  c.expected_world_size = f.expect;
  // K is the coordinator's choice; --streams only labels the result lines.
  const std::vector<std::string> streams = SplitList(f.streams);
  c.streams_label = app.count("--streams") > 0 && streams.size() == 1 ? streams[0] : "?";
  if (f.data_port < 0 || f.data_port > 65535) return UsageExit("--data-port must be 0..65535");
  c.data_host = f.data_host;
  c.data_bind_host = f.data_bind_host;
  c.data_port = static_cast<std::uint16_t>(f.data_port);
  c.label = f.label;
  c.timeout_s = f.timeout_s;
  c.op_timeout_ms = f.op_timeout_ms;
  c.log_level = f.log_level;
  c.tls = f.tls;
  c.inject_error = f.inject_error;
  c.quiet = f.worker;
  c.out_path = f.worker ? std::string() : f.out_path;

  std::vector<std::string> lines;
  const int code = RunWorker(c, &lines);
  if (!c.quiet && !lines.empty()) {
    Report report;
    for (const std::string& line : lines) report.Add(line);
    std::string tables = report.SummaryTable("busbw_GBps", "busbw_GBps from mean_s");
    tables += report.SummaryTable("batch_busbw_GBps", "batch_busbw_GBps");
    std::fputs(tables.c_str(), stdout);
  }
  return code;
}

int Main(int argc, char** argv) {
  Flags f;
  CLI::App app{
      "shoal-bench: all-reduce (f32 SUM, in place) benchmark of shoal, with the peers' method "
      "and result line.\nLocal mode (default) starts shoal-coord and n workers on 127.0.0.1 for "
      "each (n, size, K);\njoin mode (--coordinator HOST:PORT --expect N) is one worker of a group "
      "started elsewhere."};
  app.add_option("--mode", f.mode, "local | join (default: join if --coordinator is given)")
      ->check(CLI::IsMember({"local", "join"}));
  app.add_option("--n", f.n_list, "world sizes, e.g. \"2 3 4\" (local)")->capture_default_str();
  app.add_option("--sizes", f.sizes, "buffer sizes, K/M/G binary suffixes")->capture_default_str();
  app.add_option("--iters", f.iters,
                 "timed ops per size; auto: <=1M 50, <=16M 20, <=64M 10, else 5")
      ->capture_default_str();
  app.add_option("--warmup", f.warmup, "untimed ops first; auto: 5, 3, 2, 1 by size")
      ->capture_default_str();
  app.add_option("--batch", f.batch, "back-to-back ops for batch_s; auto = iters, 0 = off")
      ->capture_default_str();
  app.add_option("--streams", f.streams,
                 "streams per link K; local: a list, a fresh coordinator each; join: label only")
      ->capture_default_str();
  app.add_option("--segment-bytes", f.segment_bytes,
                 "coordinator --segment-bytes (default: the coordinator's)");
  app.add_option("--timeout-s", f.timeout_s,
                 "deadline of each run; after it everything of the run is killed")
      ->capture_default_str();
  app.add_option("--op-timeout-ms", f.op_timeout_ms,
                 "deadline of each shoal call (Options::timeout_ms)")
      ->capture_default_str();
  app.add_option("--check", f.check, "every | last | none")->capture_default_str();
  app.add_option("--out", f.out_path, "also append result lines to FILE");
  app.add_option("--keep-logs", f.keep_logs_dir,
                 "copy the logs of failed runs into DIR (they are removed otherwise)");
  app.add_option("--coord-bin", f.coord_bin,
                 "shoal-coord to start (default: next to shoal-bench, then the build tree's)");
  app.add_option("--log-level", f.log_level, "shoal and shoal-coord log level")
      ->capture_default_str();
  app.add_option("--wait-idle", f.wait_idle_s,
                 "before each run wait up to S s for the CPU to be idle (<15% busy); peers too")
      ->capture_default_str();
  app.add_flag("--tls", f.tls, "TLS on every connection (shoal-coord --tls, Options::tls)");
  app.add_flag("--inject-error", f.inject_error, "rank 0 corrupts one element (tests the check)");
  app.add_option("--peers", f.peers, "also run the peers' run.sh: any of gloo mpi mpi_sm torch");
  app.add_option("--peers-dir", f.peers_dir, "folder of the peers' run.sh")->capture_default_str();
  app.add_option("--gloo-algos", f.gloo_algos, "run.sh --gloo-algos")->capture_default_str();
  app.add_option("--mpi-algos", f.mpi_algos, "run.sh --mpi-algos")->capture_default_str();
  app.add_option("--peers-order", f.peers_order,
                 "interleaved: run.sh per (n, size) next to shoal; after: once after shoal")
      ->capture_default_str();
  app.add_flag("--peers-only", f.peers_only, "run only the peers (checks the harness)");
  app.add_option("--netem", f.netem_spec,
                 "run every process in its own host of an emulated internet (shoal-netem, root): "
                 "topology statements separated by ';', e.g. \"link * * delay 50ms; host * rate "
                 "200mbit\" (hosts = the largest --n unless given)")
      ->group("Emulated internet (--netem)");
  app.add_option("--netem-delay", f.netem_delay,
                 "one-way delay of every link, e.g. 50ms (implies --netem)")
      ->group("Emulated internet (--netem)");
  app.add_option("--netem-rate", f.netem_rate,
                 "rate cap of every host, egress and ingress, e.g. 200mbit (implies --netem)")
      ->group("Emulated internet (--netem)");
  app.add_option("--netem-sysctl", f.netem_sysctl,
                 "sysctls set in every host before the runs, for every library alike: KEY=VALUE "
                 "separated by blanks, commas for the blanks of a vector value, e.g. "
                 "\"net.ipv4.tcp_wmem=4096,16384,33554432\"")
      ->group("Emulated internet (--netem)");
  app.add_option("--netem-name", f.netem_name, "emulator name (default: sb<pid>)")
      ->group("Emulated internet (--netem)");
  app.add_option("--netem-bin", f.netem_bin,
                 "shoal-netem (default: next to shoal-bench, then the build tree's, then PATH)")
      ->group("Emulated internet (--netem)");
  app.add_flag("--netem-no-realtime", f.netem_no_realtime,
               "forwarder without SCHED_FIFO (shoal-netem up --no-realtime)")
      ->group("Emulated internet (--netem)");
  app.add_flag("--netem-offload", f.netem_offload,
               "TUN offloads in the emulator (shoal-netem up --offload), for rates that one "
               "packet per system call cannot forward")
      ->group("Emulated internet (--netem)");
  app.add_option("--peers-build-dir", f.peers_build_dir,
                 "--netem: where run.sh --build-only puts the peers' binaries (default: as run.sh)")
      ->group("Emulated internet (--netem)");
  app.add_option("--mpi-args", f.mpi_args, "--netem: extra mpirun arguments")
      ->group("Emulated internet (--netem)");
  app.add_option("--coordinator", f.coordinator, "join: the coordinator's HOST:PORT");
  app.add_option("--expect", f.expect, "join: the number of workers in the group");
  app.add_option("--data-host", f.data_host, "join: address the other workers reach this one at")
      ->capture_default_str();
  app.add_option("--data-bind-host", f.data_bind_host,
                 "join: address to listen on (default: --data-host)");
  app.add_option("--data-port", f.data_port, "join: data port (0: any)")->capture_default_str();
  app.add_option("--label", f.label, "join: text appended to each result line, e.g. net=eth0");
  app.add_flag("--worker", f.worker, "internal: one worker of local mode")->group("");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }

  std::string mode = f.mode;
  if (mode.empty()) mode = (f.worker || !f.coordinator.empty()) ? "join" : "local";
  if (f.worker && mode != "join") return UsageExit("--worker is join mode");
  if (mode == "join") return RunJoinMode(f, app);
  return RunLocalMode(f, app);
}

}  // namespace
}  // namespace shoal::bench

int main(int argc, char** argv) {
  // mpirun's launch agent under --netem (network.h): before any parsing, mpirun's own convention.
  if (argc >= 2 && std::string(argv[1]) == shoal::bench::kNetemMpiAgentFlag) {
    return shoal::bench::RunNetemMpiAgent(argc, argv);
  }
  return shoal::bench::Main(argc, argv);
}
