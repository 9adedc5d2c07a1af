#include "tools/bench/local.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tools/bench/host_peers.h"
#include "tools/bench/network.h"
#include "tools/bench/peers.h"
#include "tools/bench/report.h"
#include "tools/bench/sysstat.h"
#include "tools/common/process.h"
#include "tools/netem/topology.h"

namespace shoal::bench {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kWorkerStopGrace{2000};
constexpr milliseconds kCoordinatorStopGrace{3000};
// How often the port file is looked at while the coordinator starts.
constexpr milliseconds kPortFilePollInterval{10};
// CPU busy readings, as in the peers harness: 0.3 s windows, "idle" below 15 %.
constexpr milliseconds kBusyWindow{300};
constexpr int kIdleBusyPercentMax = 15;
constexpr int kTailLines = 5;
constexpr int kExitCodeTimeout = 124;  // as timeout(1), which the peers' run.sh reports
// --netem with peers: `run.sh --build-only` compiles the two peer benchmarks if they are stale.
constexpr std::chrono::seconds kPeersBuildTimeout{300};
constexpr milliseconds kPeersBuildStopGrace{5000};

void Log(const std::string& text) {
  std::fprintf(stderr, "# %s\n", text.c_str());
  std::fflush(stderr);
}

std::string UtcNow() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The port in the coordinator's port file. shoal-coord writes it atomically (rename) as decimal
// digits and a newline once it listens, so a file without the newline is not the coordinator's.
std::optional<std::uint16_t> ReadPortFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string content = ss.str();
  if (content.empty() || content.back() != '\n') return std::nullopt;
  long long port = 0;
  if (!ParseInt(std::string_view(content).substr(0, content.size() - 1), 1, 65535, &port)) {
    return std::nullopt;
  }
  return static_cast<std::uint16_t>(port);
}

// shoal-coord knows no "off"; its quietest level is "error".
std::string CoordinatorLogLevel(const std::string& level) {
  return level == "off" ? "error" : level;
}

class LocalBench {
 public:
  LocalBench(const LocalConfig& config, Supervisor& supervisor, const std::string& work_dir,
             Network& network)
      : config_(config), supervisor_(supervisor), work_dir_(work_dir), network_(network) {}

  int Run() {
    LogHost();
    const auto start = Clock::now();
    if (network_.emulated() && !config_.peer_libs.empty() && !BuildPeers()) return Finish(start);
    for (int n : config_.world_sizes) {
      for (std::uint64_t bytes : config_.sizes_bytes) {
        const IterCounts counts =
            ResolveIterCounts(bytes, config_.iters, config_.warmup, config_.batch);
        for (int k : config_.streams_per_link) {
          if (!RunShoal(k, n, bytes, counts)) return Finish(start);
        }
        if (!config_.peer_libs.empty() && config_.peers_interleaved) {
          if (!RunPeersFor({n}, {bytes}, counts, fmt::format("{}.{}", n, bytes))) {
            return Finish(start);
          }
        }
      }
    }
    if (!config_.peer_libs.empty() && !config_.peers_interleaved) {
      IterCounts explicit_counts;  // only what the user gave; run.sh fills in the same defaults
      RunPeersFor(config_.world_sizes, config_.sizes_bytes, explicit_counts, "all");
    }
    return Finish(start);
  }

 private:
  void LogHost() {
    utsname u{};
    uname(&u);
    Log(fmt::format("{} host: {} cores, {}; shoal-bench {}; coordinator {}", UtcNow(),
                    sysconf(_SC_NPROCESSORS_ONLN), u.release, SHOAL_BENCH_VERSION,
                    config_.coord_bin.empty() ? "(not used)" : config_.coord_bin));
    if (network_.emulated()) Log("network: " + network_.Describe());
  }

  int Finish(Clock::time_point start) {
    if (!supervisor_.interrupted()) {
      std::string tables = report_.SummaryTable(
          "busbw_GBps", "busbw_GBps from mean_s (barrier before each op; higher is better)");
      bool any_batch = true;
      for (std::uint64_t bytes : config_.sizes_bytes) {
        any_batch =
            any_batch &&
            ResolveIterCounts(bytes, config_.iters, config_.warmup, config_.batch).batch > 0;
      }
      if (any_batch) {
        tables += report_.SummaryTable("batch_busbw_GBps",
                                       "batch_busbw_GBps (back-to-back ops, no barriers)");
      }
      if (network_.emulated()) {
        tables += report_.PercentTable("busbw_GBps", "cap_GBps",
                                       "busbw_GBps from mean_s as % of the per-host cap");
        if (any_batch) {
          tables += report_.PercentTable("batch_busbw_GBps", "cap_GBps",
                                         "batch_busbw_GBps as % of the per-host cap");
        }
      }
      tables += report_.ComparisonTables("busbw_GBps", "busbw_GBps from mean_s");
      if (any_batch) tables += report_.ComparisonTables("batch_busbw_GBps", "batch_busbw_GBps");
      std::fputs(tables.c_str(), stdout);
      std::fflush(stdout);
    }
    const double total_s = std::chrono::duration<double>(Clock::now() - start).count();
    const int failed = report_.failed_count() + failures_without_line_;
    Log(fmt::format("total wall time {:.0f}s, failed runs: {}{}", total_s, failed,
                    supervisor_.interrupted() ? ", interrupted" : ""));
    if (supervisor_.interrupted()) return 128 + supervisor_.interrupt_signal();
    return failed > 0 ? kExitFailed : kExitOk;
  }

  // Prints a result line, appends it to --out and to the report.
  void Emit(const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    if (!config_.out_path.empty()) {
      std::ofstream out(config_.out_path, std::ios::app);
      out << line << "\n";
      if (!out) Log("cannot append to " + config_.out_path);
    }
    report_.Add(line);
  }

  // Busy percent over one window; nullopt when interrupted.
  std::optional<int> MeasureBusy() {
    const std::optional<CpuTimes> a = ReadCpuTimes();
    if (!supervisor_.SleepUntil(Clock::now() + kBusyWindow)) return std::nullopt;
    const std::optional<CpuTimes> b = ReadCpuTimes();
    return a && b ? BusyPercent(*a, *b) : 0;
  }

  // Waits up to --wait-idle seconds for the CPU to be idle; the last busy percent seen.
  std::optional<int> WaitIdle() {
    std::optional<int> pct = MeasureBusy();
    const auto give_up = Clock::now() + std::chrono::seconds(config_.wait_idle_s);
    while (pct && *pct > kIdleBusyPercentMax && Clock::now() < give_up) {
      if (!supervisor_.SleepUntil(Clock::now() + std::chrono::seconds(1))) return std::nullopt;
      pct = MeasureBusy();
    }
    if (pct && *pct > kIdleBusyPercentMax && config_.wait_idle_s > 0) {
      Log(fmt::format("CPU still {}% busy after waiting {}s; running anyway", *pct,
                      config_.wait_idle_s));
    }
    return pct;
  }

  // Starts the coordinator of a run and waits for its port. False on failure (*why says why).
  bool StartCoordinator(const std::string& dir, int k, Clock::time_point deadline, pid_t* pid,
                        std::uint16_t* port, std::string* why) {
    const std::string port_file = dir + "/coord.port";
    SpawnSpec spec;
    spec.name = "coordinator";
    spec.argv = {config_.coord_bin,
                 "--host",
                 network_.Address(0),
                 "--port",
                 "0",
                 "--port-file",
                 port_file,
                 "--streams-per-link",
                 std::to_string(k),
                 "--log-level",
                 CoordinatorLogLevel(config_.log_level)};
    if (config_.tls) spec.argv.push_back("--tls");
    if (config_.segment_bytes) {
      spec.argv.insert(spec.argv.end(),
                       {"--segment-bytes", std::to_string(*config_.segment_bytes)});
    }
    spec.argv = network_.OnHost(0, std::move(spec.argv));
    spec.stdout_path = dir + "/coord.out";
    spec.stderr_path = dir + "/coord.err";
    if (!supervisor_.Spawn(spec, pid, why)) return false;
    for (;;) {
      if (auto p = ReadPortFile(port_file)) {
        *port = *p;
        return true;
      }
      if (!supervisor_.Running(*pid)) {
        *why = fmt::format("the coordinator exited with {} before writing its port file",
                           supervisor_.ExitCode(*pid));
        return false;
      }
      const auto now = Clock::now();
      if (now >= deadline) {
        *why = "the coordinator wrote no port file before the deadline";
        return false;
      }
      if (supervisor_.Wait(std::min(deadline, now + kPortFilePollInterval)) ==
          Supervisor::Event::kInterrupted) {
        *why = "interrupted";
        return false;
      }
    }
  }

  // Worker `i` of a run, on host i.
  std::vector<std::string> WorkerArgv(int i, int k, int n, std::uint64_t bytes,
                                      const IterCounts& counts, std::uint16_t port,
                                      int timeout_s) const {
    std::vector<std::string> argv = {
        config_.self_bin,  "--worker",
        "--coordinator",   fmt::format("{}:{}", network_.Address(0), port),
        "--data-host",     network_.Address(i),
        "--expect",        std::to_string(n),
        "--sizes",         std::to_string(bytes),
        "--iters",         std::to_string(counts.iters),
        "--warmup",        std::to_string(counts.warmup),
        "--batch",         std::to_string(counts.batch),
        "--check",         CheckModeName(config_.check),
        "--streams",       std::to_string(k),
        "--timeout-s",     std::to_string(timeout_s),
        "--op-timeout-ms", std::to_string(config_.op_timeout_ms),
        "--log-level",     config_.log_level};
    if (config_.segment_bytes) {
      argv.insert(argv.end(), {"--segment-bytes", std::to_string(*config_.segment_bytes)});
    }
    if (config_.inject_error) argv.push_back("--inject-error");
    if (config_.tls) argv.push_back("--tls");
    return network_.OnHost(i, std::move(argv));
  }

  // One shoal run. False only when interrupted (the caller stops everything).
  bool RunShoal(int k, int n, std::uint64_t bytes, const IterCounts& counts) {
    const std::string dir = fmt::format("{}/run.K{}.n{}.{}", work_dir_, k, n, bytes);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    const std::string failed_prefix =
        fmt::format("lib=shoal algo=ring K={} n={} bytes={} status=FAILED", k, n, bytes);
    if (ec) {
      FailWithoutLine(failed_prefix + " reason=error", "cannot create " + dir + ": " + ec.message(),
                      "");
      return true;
    }
    const std::optional<int> pre_busy = WaitIdle();
    if (!pre_busy) return false;
    network_.ResetRunStats();
    const std::optional<std::uint64_t> tx0 = network_.SentBytes(n);
    const auto t0 = Clock::now();
    const auto deadline = t0 + std::chrono::seconds(config_.timeout_s);

    pid_t coord = -1;
    std::uint16_t port = 0;
    std::string why;
    if (!StartCoordinator(dir, k, deadline, &coord, &port, &why)) {
      if (coord > 0) supervisor_.Stop(coord, kCoordinatorStopGrace);
      if (supervisor_.interrupted()) return false;
      FailWithoutLine(failed_prefix + " reason=coordinator", why, dir);
      return true;
    }

    std::vector<pid_t> workers;
    std::string reason;
    for (int i = 0; i < n && reason.empty(); i++) {
      SpawnSpec spec;
      spec.name = fmt::format("worker {}", i);
      spec.argv = WorkerArgv(i, k, n, bytes, counts, port, config_.timeout_s);
      spec.stdout_path = fmt::format("{}/worker{}.out", dir, i);
      spec.stderr_path = fmt::format("{}/worker{}.err", dir, i);
      pid_t pid = -1;
      if (!supervisor_.Spawn(spec, &pid, &why)) {
        reason = "error";
      } else {
        workers.push_back(pid);
      }
    }

    // Wait for the workers; the first failure (or the coordinator's exit) ends the run.
    int first_bad_code = 0;
    while (reason.empty()) {
      bool any_running = false;
      first_bad_code = FirstBadExit(workers, &any_running);
      if (first_bad_code != 0) reason = first_bad_code == kExitCheckFailed ? "wrong_result" : "error";
      if (!reason.empty() || !any_running) break;
      if (!supervisor_.Running(coord)) {
        reason = "coordinator_exited";
        why = fmt::format("the coordinator exited with {} during the run",
                          supervisor_.ExitCode(coord));
        break;
      }
      const Supervisor::Event e = supervisor_.Wait(deadline);
      if (e == Supervisor::Event::kInterrupted) reason = "interrupted";
      if (e == Supervisor::Event::kDeadline) reason = "timeout";
    }
    // A check failure ends every worker normally; let them finish, within the deadline.
    if (reason == "wrong_result") {
      for (pid_t pid : workers) {
        while (supervisor_.Running(pid) &&
               supervisor_.Wait(deadline) == Supervisor::Event::kChildExited) {
        }
      }
    }
    for (pid_t pid : workers) {
      if (supervisor_.Running(pid)) supervisor_.Stop(pid, kWorkerStopGrace);
    }
    supervisor_.Stop(coord, kCoordinatorStopGrace);
    ReapStragglers(n);
    if (supervisor_.interrupted()) return false;

    const auto t1 = Clock::now();
    const std::optional<std::uint64_t> tx1 = network_.SentBytes(n);
    const std::optional<int> post_busy = MeasureBusy();
    if (!post_busy) return false;

    std::string line;
    for (int i = 0; i < static_cast<int>(workers.size()) && line.empty(); i++) {
      std::ifstream in(fmt::format("{}/worker{}.out", dir, i));
      std::string l;
      while (std::getline(in, l)) {
        if (l.rfind("lib=", 0) == 0) {
          line = l;
          break;
        }
      }
    }
    // A wrong result still has its line (check=FAILED); anything else is a failed run.
    if ((!reason.empty() && reason != "wrong_result") || line.empty()) {
      if (reason.empty()) reason = "error";
      std::string detail = why;
      int rc = first_bad_code;
      if (reason == "timeout") {
        detail = fmt::format("the run did not finish within --timeout-s {}", config_.timeout_s);
        rc = kExitCodeTimeout;
      }
      FailWithoutLine(fmt::format("{} reason={} rc={}", failed_prefix, reason, rc), detail, dir);
      return true;
    }
    std::string extra = network_.Label(n);
    if (tx0 && tx1) {
      const double per_op_units = static_cast<double>(n) *
                                  (counts.iters + counts.warmup + counts.batch) *
                                  static_cast<double>(bytes);
      extra += fmt::format(" tx_x={:.2f}", static_cast<double>(*tx1 - *tx0) / per_op_units);
    }
    extra += fmt::format(" run_wall_s={:.1f} pre_busy={} post_busy={}",
                         std::chrono::duration<double>(t1 - t0).count(), *pre_busy, *post_busy);
    extra += network_.RunStats(n);
    if (reason == "wrong_result") extra += ReportLogs(dir);
    Emit(line + " " + extra);
    return true;
  }

  // Prints the last lines of the run's logs and, with --keep-logs, copies the run's folder there
  // (the temp dir is removed at exit). Returns " logs=PATH" for the result line, or "".
  std::string ReportLogs(const std::string& dir) {
    std::vector<std::filesystem::path> logs;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
      const std::string ext = entry.path().extension().string();
      if (ext == ".err" || ext == ".out") logs.push_back(entry.path());
    }
    std::sort(logs.begin(), logs.end());
    for (const auto& path : logs) {
      if (path.extension() == ".out" && path.filename() != "coord.out") continue;  // result lines
      const std::string tail = TailOfFile(path.string(), kTailLines);
      if (!tail.empty()) {
        std::fprintf(stderr, "--- %s (last lines)\n%s", path.filename().c_str(), tail.c_str());
      }
    }
    if (config_.keep_logs_dir.empty()) return {};
    const std::filesystem::path kept =
        std::filesystem::path(config_.keep_logs_dir) /
        fmt::format("{}.{}", std::filesystem::path(dir).filename().string(), getpid());
    std::filesystem::create_directories(kept.parent_path(), ec);
    std::filesystem::copy(dir, kept, std::filesystem::copy_options::recursive, ec);
    if (ec) {
      Log("cannot keep the logs in " + kept.string() + ": " + ec.message());
      return {};
    }
    return " logs=" + kept.string();
  }

  void FailWithoutLine(const std::string& line, const std::string& detail, const std::string& dir) {
    if (!detail.empty()) Log(detail);
    const std::string kept = dir.empty() ? std::string() : ReportLogs(dir);
    Emit(line + kept);
  }

  // Under netem: stops what a run left in its hosts (normally nothing).
  void ReapStragglers(int n) {
    const int stopped = network_.ReapStragglers(n);
    if (stopped > 0) Log(fmt::format("stopped {} process(es) left in the hosts", stopped));
  }

  // --netem with peers: has run.sh build (or find up to date) the peers' benchmarks, which
  // shoal-bench then starts on the hosts itself. False on failure (counted) or interrupt.
  bool BuildPeers() {
    SpawnSpec spec;
    spec.name = "peers run.sh --build-only";
    spec.argv = {PeersScript(config_.peers_dir), "--build-only", "--build-dir",
                 config_.netem->peers_build_dir};
    spec.stdout_path = work_dir_ + "/peers-build.out";
    spec.stderr_path = work_dir_ + "/peers-build.err";
    spec.own_process_group = true;
    spec.parent_death_signal = SIGTERM;
    pid_t pid = -1;
    std::string why;
    if (supervisor_.Spawn(spec, &pid, &why)) {
      const auto deadline = Clock::now() + kPeersBuildTimeout;
      while (supervisor_.Running(pid)) {
        if (supervisor_.Wait(deadline) != Supervisor::Event::kChildExited) break;
      }
      if (supervisor_.Running(pid)) {
        supervisor_.Stop(pid, kPeersBuildStopGrace);
        why = "did not finish in time";
      } else if (supervisor_.ExitCode(pid) != 0) {
        why = fmt::format("exited with {}:\n{}{}", supervisor_.ExitCode(pid),
                          TailOfFile(spec.stdout_path, kTailLines),
                          TailOfFile(spec.stderr_path, kTailLines));
      } else {
        return true;
      }
    }
    if (supervisor_.interrupted()) return false;
    Log("peers: " + spec.name + " " + why);
    failures_without_line_++;
    return false;
  }

  // One run of a peer library on the emulated hosts (host_peers.h), measured like RunShoal: the
  // same idle wait, deadline, first-failure stop, traffic count and appended fields. False only
  // when interrupted.
  bool RunPeerOnHosts(const std::string& lib, const std::string& algo, int n, std::uint64_t bytes,
                      const IterCounts& counts) {
    const std::string dir = fmt::format("{}/run.{}.{}.n{}.{}", work_dir_, lib, algo, n, bytes);
    const std::string failed_prefix =
        fmt::format("lib={} algo={} n={} bytes={} status=FAILED", lib, algo, n, bytes);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) {
      FailWithoutLine(failed_prefix + " reason=error", "cannot create " + dir + ": " + ec.message(),
                      "");
      return true;
    }
    HostPeersSetup setup;
    setup.peers_dir = config_.peers_dir;
    setup.build_dir = config_.netem->peers_build_dir;
    setup.mpi_session_base = work_dir_ + "/mpi";
    // mpirun splits its launch agent's command line at blanks.
    setup.mpi_agent =
        fmt::format("{} {} {} {} {}", config_.self_bin, kNetemMpiAgentFlag, config_.netem->name,
                    config_.netem->netem_bin, setup.mpi_session_base);
    if (lib == "mpi" &&
        (config_.self_bin + setup.mpi_session_base).find_first_of(" \t") != std::string::npos) {
      FailWithoutLine(failed_prefix + " reason=error",
                      "mpirun's launch agent: blanks in " + config_.self_bin + " or " + work_dir_,
                      "");
      return true;
    }
    setup.mpi_subnet = fmt::format("{}.{}.{}.{}/{}", netem::kSubnet >> 24,
                                   (netem::kSubnet >> 16) & 0xff, (netem::kSubnet >> 8) & 0xff,
                                   netem::kSubnet & 0xff, netem::kSubnetPrefixLength);
    setup.mpi_args = config_.mpi_args;
    HostPeerRun run;
    run.lib = lib;
    run.algo = algo;
    run.world_size = n;
    run.bytes = bytes;
    run.counts = counts;
    run.check = config_.check;
    run.timeout_s = config_.timeout_s;
    run.inject_error = config_.inject_error;
    run.label = network_.Label(n);
    run.run_dir = dir;
    std::vector<HostPeerProcess> processes;
    std::string why;
    if (!HostPeerProcesses(setup, run, network_, &processes, &why)) {
      FailWithoutLine(failed_prefix + " reason=error", why, "");
      return true;
    }

    const std::optional<int> pre_busy = WaitIdle();
    if (!pre_busy) return false;
    network_.ResetRunStats();
    const std::optional<std::uint64_t> tx0 = network_.SentBytes(n);
    const auto t0 = Clock::now();
    const auto deadline = t0 + std::chrono::seconds(config_.timeout_s);
    std::vector<pid_t> pids;
    std::string reason;
    for (std::size_t i = 0; i < processes.size() && reason.empty(); i++) {
      SpawnSpec spec;
      spec.name = processes[i].name;
      spec.argv = network_.OnHost(processes[i].host, processes[i].argv);
      spec.own_process_group = processes[i].own_process_group;
      spec.stdout_path = fmt::format("{}/rank{}.out", dir, i);
      spec.stderr_path = fmt::format("{}/rank{}.err", dir, i);
      pid_t pid = -1;
      if (supervisor_.Spawn(spec, &pid, &why)) {
        pids.push_back(pid);
      } else {
        reason = "error";
      }
    }
    // The first process that fails ends the run, as in run.sh.
    int first_bad_code = 0;
    while (reason.empty()) {
      bool any_running = false;
      first_bad_code = FirstBadExit(pids, &any_running);
      if (first_bad_code != 0) reason = first_bad_code == kExitCheckFailed ? "wrong_result" : "error";
      if (!reason.empty() || !any_running) break;
      const Supervisor::Event e = supervisor_.Wait(deadline);
      if (e == Supervisor::Event::kInterrupted) reason = "interrupted";
      if (e == Supervisor::Event::kDeadline) reason = "timeout";
    }
    for (pid_t pid : pids) {
      if (supervisor_.Running(pid)) supervisor_.Stop(pid, kWorkerStopGrace);
    }
    ReapStragglers(n);
    if (supervisor_.interrupted()) return false;

    const auto t1 = Clock::now();
    const std::optional<std::uint64_t> tx1 = network_.SentBytes(n);
    const std::optional<int> post_busy = MeasureBusy();
    if (!post_busy) return false;
    std::string line;
    {
      std::ifstream in(dir + "/rank0.out");
      std::string l;
      while (line.empty() && std::getline(in, l)) {
        if (l.rfind("lib=", 0) == 0) line = l;
      }
    }
    // As run.sh: any failed process makes the run FAILED (a wrong result included).
    if (!reason.empty() || line.empty()) {
      if (reason.empty()) reason = "error";
      int rc = first_bad_code;
      if (reason == "timeout") {
        why = fmt::format("the run did not finish within --timeout-s {}", config_.timeout_s);
        rc = kExitCodeTimeout;
      }
      FailWithoutLine(fmt::format("{} reason={} rc={}", failed_prefix, reason, rc), why, dir);
      return true;
    }
    std::string extra;
    if (tx0 && tx1) {
      const double per_op_units = static_cast<double>(n) *
                                  (counts.iters + counts.warmup + counts.batch) *
                                  static_cast<double>(bytes);
      extra += fmt::format(" tx_x={:.2f}", static_cast<double>(*tx1 - *tx0) / per_op_units);
    }
    extra += fmt::format(" run_wall_s={:.1f} pre_busy={} post_busy={}",
                         std::chrono::duration<double>(t1 - t0).count(), *pre_busy, *post_busy);
    extra += network_.RunStats(n);
    Emit(line + extra);
    return true;
  }

  // Runs the peers for the given cells. False only when interrupted.
  bool RunPeersFor(const std::vector<int>& world_sizes, const std::vector<std::uint64_t>& sizes,
                   const IterCounts& counts, const std::string& tag) {
    if (network_.emulated()) {
      for (int n : world_sizes) {
        for (std::uint64_t bytes : sizes) {
          const IterCounts c =
              config_.peers_interleaved
                  ? counts
                  : ResolveIterCounts(bytes, config_.iters, config_.warmup, config_.batch);
          for (const std::string& lib : config_.peer_libs) {
            for (const std::string& algo :
                 HostPeerAlgos(lib, config_.gloo_algos, config_.mpi_algos)) {
              if (!RunPeerOnHosts(lib, algo, n, bytes, c)) return false;
            }
          }
        }
      }
      return true;
    }
    PeersRequest request;
    request.peers_dir = config_.peers_dir;
    request.libs = config_.peer_libs;
    request.gloo_algos = config_.gloo_algos;
    request.mpi_algos = config_.mpi_algos;
    request.world_sizes = world_sizes;
    request.sizes_bytes = sizes;
    if (config_.peers_interleaved) {
      request.iters = counts.iters;
      request.warmup = counts.warmup;
      request.batch = counts.batch;
    } else {
      request.iters = config_.iters;
      request.warmup = config_.warmup;
      request.batch = config_.batch;
    }
    request.check = config_.check;
    request.timeout_s = config_.timeout_s;
    request.wait_idle_s = config_.wait_idle_s;
    std::vector<std::string> size_labels;
    for (std::uint64_t b : sizes) size_labels.push_back(SizeLabel(b));
    Log(fmt::format("peers: run.sh {} for n={} sizes={}", fmt::join(config_.peer_libs, " "),
                    fmt::join(world_sizes, " "), fmt::join(size_labels, " ")));
    const PeersOutcome outcome = RunPeers(supervisor_, request, work_dir_, tag);
    for (const std::string& line : outcome.lines) Emit(line);
    if (outcome.end == PeersOutcome::End::kInterrupted) return false;
    if (outcome.end != PeersOutcome::End::kOk) {
      Log("peers: " + outcome.error);
      // Failed runs that left a line are counted by the report; the rest here.
      if (outcome.lines.empty()) failures_without_line_++;
    }
    return true;
  }

  const LocalConfig& config_;
  // The exit code of the first of `pids` that exited non-zero, else 0; whether any still runs.
  int FirstBadExit(const std::vector<pid_t>& pids, bool* any_running) {
    *any_running = false;
    int first = 0;
    for (pid_t pid : pids) {
      if (supervisor_.Running(pid)) {
        *any_running = true;
      } else if (int code = supervisor_.ExitCode(pid); code != 0 && first == 0) {
        first = code;
      }
    }
    return first;
  }

  Supervisor& supervisor_;
  const std::string work_dir_;
  Network& network_;
  Report report_;
  int failures_without_line_ = 0;  // peers invocations that failed without any result line
};

}  // namespace

int RunLocal(const LocalConfig& config) {
  Supervisor supervisor;  // first: from here on a Ctrl-C is ours to handle
  TempDir work_dir;
  std::string error;
  if (!work_dir.Create("shoal-bench.", &error)) {
    std::fprintf(stderr, "error: %s\n", error.c_str());
    return kExitShoalError;
  }
  std::unique_ptr<Network> network;
  if (config.netem) {
    bool skipped = false;
    network = StartNetemNetwork(*config.netem, supervisor, &skipped, &error);
    if (!network) {
      std::fprintf(stderr, "%s: --netem: %s\n", skipped ? "skipped" : "error", error.c_str());
      if (supervisor.interrupted()) return 128 + supervisor.interrupt_signal();
      return skipped ? kExitSkipped : kExitShoalError;
    }
  } else {
    network = MakeLoopbackNetwork();
  }
  LocalBench bench(config, supervisor, work_dir.path(), *network);
  const int code = bench.Run();
  supervisor.StopAll(kWorkerStopGrace);  // (none should be left) before the temp dir goes
  network.reset();  // the emulator last: it stops whatever still runs in its hosts
  return code;
}

}  // namespace shoal::bench
