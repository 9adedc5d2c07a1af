#include "tools/chaos/driver.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "shoal/common/clock.h"
#include "tools/chaos/checker.h"
#include "tools/chaos/record.h"
#include "tools/common/process.h"
#include "tools/netem/emulator.h"
#include "tools/netem/topology.h"

namespace shoal::chaos {
namespace {

using tools::Supervisor;
using Clock = std::chrono::steady_clock;

constexpr int kCoordHost = 0;
constexpr int kCoordPort = 48150;
// How often the driver reads the records and looks for hangs when nothing else is due.
constexpr TimeMs kTickMs = 100;
constexpr TimeMs kStatusEveryMs = 10000;
// Ops with no new report for this long are settled (counted and forgotten): far longer than any
// call may take (deadline + grace) plus the longest stop, so no member's report comes later.
constexpr TimeMs kOpSettleMs = 120000;
constexpr TimeMs kCoordStartTimeoutMs = 10000;
// How long after a coordinator's restart its rebuild may still drop a member: the startup hold
// (1 s) and the rebuild timeout (3 s), and some.
constexpr TimeMs kRebuildSpanMs = 6000;

enum class Kind { kKill, kJoin, kCut, kCutCoord, kThrottle, kLoss, kLag, kStop, kCoord };
constexpr int kKindCount = 9;
const char* const kKindNames[kKindCount] = {"kill", "join", "cut",  "cut-coord", "throttle",
                                            "loss", "lag",  "stop", "coord"};
// How often each kind is drawn, relative to the others.
constexpr double kKindWeights[kKindCount] = {2, 2, 2, 1, 1, 1, 1, 1.5, 1};

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, rank == 0 ? 0 : rank - 1)];
}

// A peer process and what the driver knows of it.
struct Proc {
  int index = 0;
  int host = 0;
  pid_t pid = -1;
  bool joiner = false;
  bool running = true;
  bool stopped = false;  // SIGSTOPped by the driver, not yet continued
  bool killed = false;   // SIGKILLed by the driver
  int exit_code = -1;
  std::unique_ptr<RecordTail> tail;
  std::string log_path;
  std::string err_path;
  TimeMs progress_ms = 0;  // its last record line (or its start, or its SIGCONT)
  std::string last_line;
  bool hang_flagged = false;
};

// When and where a fault acted: a peer process (stop), the links of one or two hosts (cut,
// throttle, loss, lag; host 0 is the coordinator's, so a fault there touches every peer's control
// connection), or everyone (the coordinator's downtime and the rebuild after it).
struct Span {
  TimeMs from_ms = 0;
  TimeMs to_ms = 0;
  int proc = -1;
  int host_a = -1;
  int host_b = -1;
  bool everyone = false;
};

// A fault's undo, due at a time (heal, restore, SIGCONT, the coordinator's restart).
struct Revert {
  TimeMs due_ms = 0;
  std::string what;
  std::function<void()> undo;
};

// One chaos run: its processes, its emulator, its fault schedule and its checks (see driver.h).
class Run {
 public:
  Run(const DriverConfig& config, std::uint64_t seed) : config_(config), seed_(seed), rng_(seed) {}

  int Execute();

 private:
  // Seeded draws. Own formulas (not std distributions, whose results differ between standard
  // libraries) so that a seed names one schedule.
  double Uniform(double lo, double hi) {
    return lo + (hi - lo) * static_cast<double>(rng_() >> 11) * 0x1.0p-53;
  }
  TimeMs UniformMs(TimeMs lo, TimeMs hi) {
    return lo + static_cast<TimeMs>(rng_() % static_cast<std::uint64_t>(hi - lo + 1));
  }
  template <typename T>
  const T& Pick(const std::vector<T>& v) {
    return v[rng_() % v.size()];
  }

  double Elapsed(TimeMs t) const { return static_cast<double>(t - start_ms_) / 1000.0; }
  void Say(const char* fmt, ...) __attribute__((format(printf, 2, 3)));

  bool Setup();
  bool StartEmulator();
  bool StartCoordinator(bool first);
  bool StartPeer(bool joiner);
  void PollRecords();
  void ReapChildren();
  bool EmulatorAlive();
  void InjectFault(TimeMs now);
  bool Inject(Kind kind, TimeMs now);
  void Schedule(TimeMs due_ms, std::string what, std::function<void()> undo);
  // Records a fault's span (until `to_ms`, moved when the fault ends); returns its index.
  std::size_t AddSpan(Span span);
  bool Affected(int proc, TimeMs from_ms, TimeMs to_ms) const;
  void RunReverts(TimeMs now, bool all);
  void CheckHangs(TimeMs now);
  // A call that outlived the peers' deadline + grace + call slack (unless the peer was stopped).
  void CheckCallLength(const Proc& p, const RecordLine& line, const std::string& text);
  bool StoppedDuring(int proc, TimeMs from_ms, TimeMs to_ms) const;
  void DumpStacks(const Proc& p, int hang);
  void Shutdown();
  // Counts the stderr files of every peer and coordinator (killed ones included, whose exit code
  // says nothing) that hold a sanitizer report, and prints the first lines of each.
  void FindSanitizerReports();
  bool NetemSet(const std::string& statement);
  int PrintSummary();

  std::vector<Proc*> Active();  // running, not stopped
  int RunningCount() const;
  std::vector<int> FreeHosts() const;

  DriverConfig config_;
  std::uint64_t seed_;
  std::mt19937_64 rng_;
  Supervisor sup_;
  std::unique_ptr<netem::Emulator> emu_;
  std::string dir_;
  bool dir_is_temp_ = false;
  std::FILE* violations_ = nullptr;
  std::unique_ptr<Checker> checker_;
  TimeMs start_ms_ = 0;
  TimeMs end_ms_ = 0;
  bool stopping_ = false;
  bool interrupted_ = false;
  bool passed_ = false;  // the verdict of PrintSummary
  bool fatal_ = false;   // the run could not go on (the emulator died, a netem request failed)

  int hosts_ = 0;
  std::vector<std::vector<std::int64_t>> delay_us_;  // baseline one-way delay per link
  std::string rate_;
  std::vector<bool> kind_enabled_ = std::vector<bool>(kKindCount, false);

  std::vector<std::unique_ptr<Proc>> procs_;
  pid_t coord_pid_ = -1;
  bool coord_down_ = false;  // killed by the driver, restart pending
  int coord_starts_ = 0;
  int coord_unexpected_exits_ = 0;
  int unexpected_exits_ = 0;
  int bad_exit_codes_ = 0;
  int sanitizer_files_ = 0;     // peers' stderr and coordinators' logs with a sanitizer report
  int hangs_ = 0;               // silent peers and calls past their deadline
  int overruns_ = 0;            // of which calls past their deadline
  TimeMs longest_call_ms_ = 0;  // the longest call of a peer that was not stopped during it
  int driver_errors_ = 0;

  std::vector<Revert> reverts_;
  std::set<std::pair<int, int>> cut_pairs_;
  std::set<int> throttled_;
  bool loss_active_ = false;
  bool lag_active_ = false;
  bool stop_active_ = false;
  std::vector<std::pair<TimeMs, Kind>> faults_;
  std::vector<Span> spans_;
  int fault_counts_[kKindCount] = {};
};

void Run::Say(const char* fmt, ...) {
  if (config_.quiet) return;
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  std::printf("[%7.1fs] %s\n", Elapsed(MonotonicNowMs()), buf);
}

std::vector<Proc*> Run::Active() {
  std::vector<Proc*> out;
  for (auto& p : procs_)
    if (p->running && !p->stopped && !p->killed) out.push_back(p.get());
  return out;
}

int Run::RunningCount() const {
  int n = 0;
  for (const auto& p : procs_) n += p->running && !p->killed;
  return n;
}

std::vector<int> Run::FreeHosts() const {
  std::vector<bool> used(static_cast<std::size_t>(hosts_), false);
  for (const auto& p : procs_)
    if (p->running) used[static_cast<std::size_t>(p->host)] = true;
  std::vector<int> out;
  for (int h = 1; h < hosts_; h++)
    if (!used[static_cast<std::size_t>(h)]) out.push_back(h);
  return out;
}

bool Run::StartEmulator() {
  hosts_ = 1 + config_.max_peers;
  std::int64_t lo_us = 0, hi_us = 0;
  const std::size_t dash = config_.delay.find('-');
  const std::string lo = config_.delay.substr(0, dash);
  const std::string hi = dash == std::string::npos ? lo : config_.delay.substr(dash + 1);
  if (!netem::ParseDurationUs(lo, netem::kDelayMaxUs, &lo_us) ||
      !netem::ParseDurationUs(hi, netem::kDelayMaxUs, &hi_us) || hi_us < lo_us) {
    std::fprintf(stderr, "bad --delay '%s' (e.g. 5ms-20ms)\n", config_.delay.c_str());
    return false;
  }
  std::vector<std::string> lines = {"hosts " + std::to_string(hosts_),
                                    "seed " + std::to_string(seed_), "host * rate " + config_.rate};
  delay_us_.assign(static_cast<std::size_t>(hosts_),
                   std::vector<std::int64_t>(static_cast<std::size_t>(hosts_), 0));
  for (int a = 0; a < hosts_; a++) {
    for (int b = a + 1; b < hosts_; b++) {
      const std::int64_t d = UniformMs(lo_us, hi_us);  // in us: the draw does not care
      delay_us_[a][b] = delay_us_[b][a] = d;
      const std::int64_t jitter_us = std::min<std::int64_t>(d / 10, 1000);
      lines.push_back("link " + std::to_string(a) + " " + std::to_string(b) + " delay " +
                      std::to_string(d) + "us jitter " + std::to_string(jitter_us) + "us");
    }
  }
  netem::Emulator::Options opt;
  opt.name = "chaos-" + std::to_string(::getpid());
  opt.netem_bin = config_.netem_bin;
  opt.log_path = dir_ + "/netem.log";
  std::string error;
  if (!netem::ParseTopology(lines, &opt.topology, &error)) {
    std::fprintf(stderr, "topology: %s\n", error.c_str());
    return false;
  }
  if (!netem::Emulator::Start(opt, &emu_, &error)) {
    std::fprintf(stderr, "cannot start the emulator: %s\n", error.c_str());
    return false;
  }
  return true;
}

bool Run::StartCoordinator(bool first) {
  const std::string port_file = dir_ + "/coord.port";
  std::error_code ec;
  std::filesystem::remove(port_file, ec);
  std::vector<std::string> argv = {config_.coord_bin,
                                   "--host",
                                   emu_->Address(kCoordHost),
                                   "--port",
                                   std::to_string(kCoordPort),
                                   "--port-file",
                                   port_file,
                                   "--heartbeat-timeout-ms",
                                   std::to_string(config_.heartbeat_timeout_ms),
                                   "--barrier-timeout-ms",
                                   std::to_string(config_.barrier_timeout_ms),
                                   "--segment-bytes",
                                   std::to_string(config_.segment_bytes),
                                   "--max-members",
                                   std::to_string(config_.max_peers),
                                   "--log-level",
                                   "warn"};
  // The first coordinator has no group to wait for; a restarted one keeps its default startup
  // hold, so the old members report before newcomers could start another group.
  if (first) {
    argv.push_back("--startup-hold-ms");
    argv.push_back("0");
  }
  const std::string log = dir_ + "/coord-" + std::to_string(coord_starts_) + ".log";
  std::string error;
  if (!sup_.Spawn({"coordinator", emu_->ExecArgv(kCoordHost, argv), "/dev/null", log}, &coord_pid_,
                  &error)) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return false;
  }
  coord_starts_++;
  coord_down_ = false;
  if (!first) return true;  // the peers reconnect with backoff; nothing to wait for
  const TimeMs deadline = MonotonicNowMs() + kCoordStartTimeoutMs;
  for (;;) {
    std::ifstream in(port_file);
    int port = 0;
    if (in >> port) return true;
    if (!sup_.Running(coord_pid_) || MonotonicNowMs() > deadline ||
        !sup_.SleepUntil(Clock::now() + std::chrono::milliseconds(20))) {
      std::fprintf(stderr, "shoal-coord did not start:\n%s\n", tools::TailOfFile(log, 10).c_str());
      return false;
    }
  }
}

bool Run::StartPeer(bool joiner) {
  const std::vector<int> free = FreeHosts();
  if (free.empty()) return false;
  auto p = std::make_unique<Proc>();
  p->index = static_cast<int>(procs_.size());
  p->host = joiner ? Pick(free) : free.front();
  p->joiner = joiner;
  const std::string name = "p" + std::to_string(p->index);
  const std::string record = dir_ + "/" + name + ".rec";
  p->log_path = dir_ + "/" + name + ".log";  // its stdout: the library's log and its own lines
  p->err_path = dir_ + "/" + name + ".err";  // its stderr: sanitizer reports, netem exec errors
  std::vector<std::string> argv = {config_.self,   "--peer",
                                   "--coord-host", emu_->Address(kCoordHost),
                                   "--coord-port", std::to_string(kCoordPort),
                                   "--data-host",  emu_->Address(p->host),
                                   "--record",     record,
                                   "--timeout-ms", std::to_string(config_.timeout_ms),
                                   "--grace-ms",   std::to_string(config_.grace_ms),
                                   "--large",      std::to_string(config_.large_count),
                                   "--state",      std::to_string(config_.state_count),
                                   "--log-level",  "warn"};
  if (joiner) argv.push_back("--joiner");
  if (p->index == 0 && !config_.sabotage.empty()) {
    argv.push_back("--sabotage");
    argv.push_back(config_.sabotage);
  }
  std::string error;
  if (!sup_.Spawn({name, emu_->ExecArgv(p->host, argv), p->log_path, p->err_path}, &p->pid,
                  &error)) {
    std::fprintf(stderr, "%s\n", error.c_str());
    driver_errors_++;
    return false;
  }
  p->tail = std::make_unique<RecordTail>(record);
  p->progress_ms = MonotonicNowMs();
  procs_.push_back(std::move(p));
  return true;
}

bool Run::Setup() {
  if (config_.dir.empty()) {
    // Not tools::TempDir: the directory is kept when the run fails.
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/shoal-chaos-XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) {
      std::fprintf(stderr, "mkdtemp %s: %s\n", templ.c_str(), std::strerror(errno));
      return false;
    }
    dir_ = buf.data();
    dir_is_temp_ = true;
  } else {
    dir_ = config_.dir;
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    if (ec) {
      std::fprintf(stderr, "cannot create %s: %s\n", dir_.c_str(), ec.message().c_str());
      return false;
    }
  }
  violations_ = std::fopen((dir_ + "/violations.log").c_str(), "w");
  if (violations_ == nullptr) {
    std::fprintf(stderr, "cannot write %s/violations.log\n", dir_.c_str());
    return false;
  }
  checker_ = std::make_unique<Checker>(
      config_.large_count, violations_,
      [this](int proc, TimeMs from_ms, TimeMs to_ms) { return Affected(proc, from_ms, to_ms); },
      config_.heartbeat_timeout_ms + 2000);
  if (config_.kinds.empty()) {
    std::fill(kind_enabled_.begin(), kind_enabled_.end(), true);
  } else {
    for (const std::string& k : config_.kinds) {
      bool known = false;
      for (int i = 0; i < kKindCount; i++) {
        if (k == kKindNames[i]) kind_enabled_[static_cast<std::size_t>(i)] = known = true;
      }
      if (!known) {
        std::fprintf(stderr, "unknown fault kind '%s'\n", k.c_str());
        return false;
      }
    }
  }
  rate_ = config_.rate;
  if (!StartEmulator()) return false;
  if (!StartCoordinator(true)) return false;
  for (int i = 0; i < config_.peers; i++) {
    if (!StartPeer(false)) return false;
  }
  return true;
}

void Run::PollRecords() {
  std::vector<std::string> lines;
  RecordLine line;
  for (auto& p : procs_) {
    lines.clear();
    p->tail->Poll(&lines);
    for (const std::string& text : lines) {
      if (!ParseRecordLine(text, &line)) continue;
      checker_->OnLine(p->index, line);
      const TimeMs t = std::max(line.I64("t1"), line.I64("t"));
      p->progress_ms = std::max(p->progress_ms, t);
      p->last_line = text;
      p->hang_flagged = false;
      CheckCallLength(*p, line, text);
    }
  }
}

void Run::ReapChildren() {
  for (auto& p : procs_) {
    if (!p->running || sup_.Running(p->pid)) continue;
    p->running = false;
    p->exit_code = sup_.ExitCode(p->pid);
    if (p->killed) continue;
    if (!stopping_) {
      unexpected_exits_++;
      std::printf(
          "[%7.1fs] UNEXPECTED EXIT of p%d (host %d) with code %d; its output ends:\n%s%s\n",
          Elapsed(MonotonicNowMs()), p->index, p->host, p->exit_code,
          tools::TailOfFile(p->log_path, 10).c_str(), tools::TailOfFile(p->err_path, 30).c_str());
    } else if (p->exit_code != 0) {
      bad_exit_codes_++;
      std::printf("p%d exited with code %d after SIGTERM; its output ends:\n%s%s\n", p->index,
                  p->exit_code, tools::TailOfFile(p->log_path, 10).c_str(),
                  tools::TailOfFile(p->err_path, 30).c_str());
    }
  }
  if (coord_pid_ > 0 && !coord_down_ && !sup_.Running(coord_pid_) && !stopping_) {
    coord_unexpected_exits_++;
    const std::string log = dir_ + "/coord-" + std::to_string(coord_starts_ - 1) + ".log";
    std::printf("[%7.1fs] UNEXPECTED EXIT of the coordinator (code %d); its log ends:\n%s\n",
                Elapsed(MonotonicNowMs()), sup_.ExitCode(coord_pid_),
                tools::TailOfFile(log, 15).c_str());
    if (!StartCoordinator(false)) fatal_ = true;
  }
}

bool Run::EmulatorAlive() {
  siginfo_t info{};
  const pid_t pid = emu_->forwarder_pid();
  if (pid <= 0) return false;
  // WNOWAIT: look without reaping; the Emulator reaps its own forwarder.
  if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    return errno != ECHILD;
  }
  return info.si_pid == 0;
}

bool Run::NetemSet(const std::string& statement) {
  std::string error;
  if (emu_->Set(statement, &error)) return true;
  std::printf("netem '%s': %s\n", statement.c_str(), error.c_str());
  driver_errors_++;
  return false;
}

std::size_t Run::AddSpan(Span span) {
  spans_.push_back(span);
  return spans_.size() - 1;
}

bool Run::Affected(int proc, TimeMs from_ms, TimeMs to_ms) const {
  if (proc < 0 || proc >= static_cast<int>(procs_.size())) return false;
  const int host = procs_[static_cast<std::size_t>(proc)]->host;
  for (const Span& s : spans_) {
    if (s.to_ms < from_ms || s.from_ms > to_ms) continue;
    if (s.everyone || s.proc == proc) return true;
    if (s.host_a == host || s.host_b == host) return true;
    // Throttle, loss or lag on the coordinator's host touches every control connection; a cut
    // touches only the pair it cuts.
    if (s.host_b < 0 && s.host_a == kCoordHost) return true;
  }
  return false;
}

void Run::Schedule(TimeMs due_ms, std::string what, std::function<void()> undo) {
  reverts_.push_back({due_ms, std::move(what), std::move(undo)});
}

void Run::RunReverts(TimeMs now, bool all) {
  // An undo may schedule nothing new, but keep the loop safe if one does.
  for (std::size_t i = 0; i < reverts_.size();) {
    if (all || reverts_[i].due_ms <= now) {
      Revert r = std::move(reverts_[i]);
      reverts_.erase(reverts_.begin() + static_cast<std::ptrdiff_t>(i));
      Say("end: %s", r.what.c_str());
      r.undo();
    } else {
      i++;
    }
  }
}

bool Run::Inject(Kind kind, TimeMs now) {
  std::vector<Proc*> active = Active();
  const int n_active = static_cast<int>(active.size());
  std::string error;
  switch (kind) {
    case Kind::kKill: {
      if (n_active <= config_.min_peers) return false;
      Proc* p = Pick(active);
      ::kill(p->pid, SIGKILL);
      p->killed = true;
      Say("fault kill: p%d (host %d)", p->index, p->host);
      return true;
    }
    case Kind::kJoin: {
      if (RunningCount() >= config_.max_peers || FreeHosts().empty()) return false;
      if (!StartPeer(true)) return false;
      Say("fault join: p%d starts in host %d (empty state)", procs_.back()->index,
          procs_.back()->host);
      return true;
    }
    case Kind::kCut:
    case Kind::kCutCoord: {
      if (active.size() < (kind == Kind::kCut ? 2u : 1u)) return false;
      Proc* a = Pick(active);
      int hb = kCoordHost;
      if (kind == Kind::kCut) {
        std::vector<Proc*> others;
        for (Proc* p : active)
          if (p != a) others.push_back(p);
        hb = Pick(others)->host;
      }
      const int ha = a->host;
      const std::pair<int, int> pair{std::min(ha, hb), std::max(ha, hb)};
      if (cut_pairs_.count(pair)) return false;
      // Some cuts are one-way: TCP then stalls in one direction while the other still flows.
      const bool one_way = Uniform(0, 1) < 0.25;
      if (!emu_->Cut(ha, hb, &error, one_way)) {
        std::printf("netem cut: %s\n", error.c_str());
        driver_errors_++;
        return false;
      }
      cut_pairs_.insert(pair);
      const TimeMs duration = UniformMs(1000, 8000);
      const std::size_t span = AddSpan({now, now + duration, -1, ha, hb, false});
      const std::string what = std::string(one_way ? "one-way cut " : "cut ") + std::to_string(ha) +
                               (one_way ? "->" : "<->") + std::to_string(hb) + " (" +
                               std::to_string(duration) + " ms)";
      Say("fault %s: %s", kKindNames[static_cast<int>(kind)], what.c_str());
      Schedule(now + duration, "heal " + what, [this, ha, hb, one_way, pair, span] {
        spans_[span].to_ms = MonotonicNowMs();
        std::string e;
        if (!emu_->Heal(ha, hb, &e, one_way)) {
          std::printf("netem heal: %s\n", e.c_str());
          driver_errors_++;
        }
        cut_pairs_.erase(pair);
      });
      return true;
    }
    case Kind::kThrottle: {
      std::vector<int> hosts = {kCoordHost};
      for (Proc* p : active)
        if (!throttled_.count(p->host)) hosts.push_back(p->host);
      if (throttled_.count(kCoordHost)) hosts.erase(hosts.begin());
      if (hosts.empty()) return false;
      const int h = Pick(hosts);
      const std::string rate = Pick(std::vector<std::string>{"1mbit", "4mbit", "20mbit"});
      if (!NetemSet("host " + std::to_string(h) + " rate " + rate)) return false;
      throttled_.insert(h);
      const TimeMs duration = UniformMs(3000, 10000);
      const std::size_t span = AddSpan({now, now + duration, -1, h, -1, false});
      Say("fault throttle: host %d at %s for %" PRId64 " ms", h, rate.c_str(), duration);
      Schedule(now + duration, "throttle of host " + std::to_string(h), [this, h, span] {
        spans_[span].to_ms = MonotonicNowMs();
        NetemSet("host " + std::to_string(h) + " rate " + rate_);
        throttled_.erase(h);
      });
      return true;
    }
    case Kind::kLoss:
    case Kind::kLag: {
      bool& active_flag = kind == Kind::kLoss ? loss_active_ : lag_active_;
      if (active_flag) return false;
      std::vector<int> hosts = {kCoordHost};
      for (Proc* p : active) hosts.push_back(p->host);
      const int h = Pick(hosts);
      const std::string value = kind == Kind::kLoss
                                    ? Pick(std::vector<std::string>{"1%", "3%", "10%"})
                                    : Pick(std::vector<std::string>{"100ms", "200ms", "300ms"});
      const std::string key = kind == Kind::kLoss ? "loss" : "delay";
      if (!NetemSet("link " + std::to_string(h) + " * " + key + " " + value)) return false;
      active_flag = true;
      const TimeMs duration = UniformMs(3000, 10000);
      const std::size_t span = AddSpan({now, now + duration, -1, h, -1, false});
      Say("fault %s: every link of host %d %s %s for %" PRId64 " ms",
          kKindNames[static_cast<int>(kind)], h, key.c_str(), value.c_str(), duration);
      Schedule(now + duration, key + " on host " + std::to_string(h), [this, h, kind, span] {
        spans_[span].to_ms = MonotonicNowMs();
        if (kind == Kind::kLoss) {
          NetemSet("link " + std::to_string(h) + " * loss 0");
          loss_active_ = false;
          return;
        }
        for (int o = 0; o < hosts_; o++) {
          if (o == h) continue;
          NetemSet(
              "link " + std::to_string(h) + " " + std::to_string(o) + " delay " +
              std::to_string(delay_us_[static_cast<std::size_t>(h)][static_cast<std::size_t>(o)]) +
              "us");
        }
        lag_active_ = false;
      });
      return true;
    }
    case Kind::kStop: {
      if (stop_active_ || n_active <= config_.min_peers) return false;
      Proc* p = Pick(active);
      // Past the heartbeat timeout always (the coordinator drops it), sometimes past its own
      // call deadline plus grace as well.
      const TimeMs duration = UniformMs(config_.heartbeat_timeout_ms + 500,
                                        config_.timeout_ms + config_.grace_ms + 3000);
      ::kill(p->pid, SIGSTOP);
      p->stopped = true;
      stop_active_ = true;
      const std::size_t span = AddSpan({now, now + duration, p->index, -1, -1, false});
      Say("fault stop: p%d (host %d) for %" PRId64 " ms", p->index, p->host, duration);
      Schedule(now + duration, "stop of p" + std::to_string(p->index), [this, p, span] {
        spans_[span].to_ms = MonotonicNowMs();
        if (p->running) ::kill(p->pid, SIGCONT);
        p->stopped = false;
        p->progress_ms = MonotonicNowMs();
        stop_active_ = false;
      });
      return true;
    }
    case Kind::kCoord: {
      if (coord_down_) return false;
      ::kill(coord_pid_, SIGKILL);
      coord_down_ = true;
      const TimeMs downtime = UniformMs(200, 2000);
      // Down, then the new coordinator's startup hold and rebuild.
      const std::size_t span = AddSpan({now, now + downtime + kRebuildSpanMs, -1, -1, -1, true});
      Say("fault coord: SIGKILL the coordinator; a new one starts in %" PRId64 " ms", downtime);
      Schedule(now + downtime, "coordinator down: restart it", [this, span] {
        spans_[span].to_ms = MonotonicNowMs() + kRebuildSpanMs;
        // Reap the killed one first, so its exit is not mistaken for the new one's.
        sup_.Stop(coord_pid_, std::chrono::milliseconds(0));
        if (!StartCoordinator(false)) fatal_ = true;
      });
      return true;
    }
  }
  return false;
}

void Run::InjectFault(TimeMs now) {
  // Below the minimum (a peer exited on its own): a joiner first.
  if (static_cast<int>(Active().size()) < config_.min_peers &&
      kind_enabled_[static_cast<std::size_t>(Kind::kJoin)] && Inject(Kind::kJoin, now)) {
    faults_.push_back({now, Kind::kJoin});
    fault_counts_[static_cast<int>(Kind::kJoin)]++;
    return;
  }
  // Draw among the enabled kinds; a kind that cannot apply now (bounds, one at a time) is dropped
  // from the draw and another is drawn.
  std::vector<int> candidates;
  for (int k = 0; k < kKindCount; k++)
    if (kind_enabled_[static_cast<std::size_t>(k)]) candidates.push_back(k);
  while (!candidates.empty()) {
    double total = 0;
    for (int k : candidates) total += kKindWeights[k];
    double x = Uniform(0, total);
    std::size_t i = 0;
    while (i + 1 < candidates.size() && x >= kKindWeights[candidates[i]]) {
      x -= kKindWeights[candidates[i]];
      i++;
    }
    const Kind kind = static_cast<Kind>(candidates[i]);
    if (Inject(kind, now)) {
      faults_.push_back({now, kind});
      fault_counts_[candidates[i]]++;
      return;
    }
    candidates.erase(candidates.begin() + static_cast<std::ptrdiff_t>(i));
  }
}

void Run::DumpStacks(const Proc& p, int hang) {
  const std::string out =
      dir_ + "/hang-" + std::to_string(hang) + "-p" + std::to_string(p.index) + ".txt";
  pid_t pid;
  std::string error;
  if (!sup_.Spawn(
          {"gdb",
           {"/usr/bin/gdb", "-p", std::to_string(p.pid), "-batch", "-ex", "thread apply all bt"},
           out,
           out},
          &pid, &error)) {
    return;
  }
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (sup_.Running(pid) && Clock::now() < deadline) {
    if (sup_.Wait(deadline) == Supervisor::Event::kInterrupted) break;
  }
  sup_.Stop(pid, std::chrono::milliseconds(1000));
  std::printf("  stacks of p%d: %s\n", p.index, out.c_str());
}

bool Run::StoppedDuring(int proc, TimeMs from_ms, TimeMs to_ms) const {
  for (const Span& s : spans_) {
    if (s.proc == proc && s.from_ms <= to_ms && s.to_ms >= from_ms) return true;
  }
  return false;
}

void Run::CheckCallLength(const Proc& p, const RecordLine& line, const std::string& text) {
  if (!line.Has("t0") || !line.Has("t1") || line.word == "STEP") return;
  const TimeMs t0 = line.I64("t0");
  const TimeMs t1 = line.I64("t1");
  if (StoppedDuring(p.index, t0, t1)) return;
  longest_call_ms_ = std::max(longest_call_ms_, t1 - t0);
  const TimeMs bound = config_.timeout_ms + config_.grace_ms + config_.call_slack_ms;
  if (t1 - t0 <= bound) return;
  hangs_++;
  overruns_++;
  std::printf("[%7.1fs] HANG p%d (host %d): a call took %" PRId64 " ms (bound %" PRId64
              " ms): %s\n",
              Elapsed(MonotonicNowMs()), p.index, p.host, t1 - t0, bound, text.c_str());
  std::fprintf(violations_, "HANG p%d: a call took %" PRId64 " ms (bound %" PRId64 " ms): %s\n",
               p.index, t1 - t0, bound, text.c_str());
  std::fflush(violations_);
}

void Run::CheckHangs(TimeMs now) {
  const TimeMs bound = config_.timeout_ms + config_.grace_ms + config_.hang_margin_ms;
  for (auto& p : procs_) {
    if (!p->running || p->stopped || p->killed || p->hang_flagged) continue;
    if (now - p->progress_ms <= bound) continue;
    p->hang_flagged = true;
    hangs_++;
    std::printf("[%7.1fs] HANG p%d (host %d, pid %d): no record line for %" PRId64
                " ms (bound %" PRId64 " ms); last line: %s\n",
                Elapsed(now), p->index, p->host, p->pid, now - p->progress_ms, bound,
                p->last_line.c_str());
    std::fprintf(violations_, "HANG p%d: no record line for %" PRId64 " ms; last: %s\n", p->index,
                 now - p->progress_ms, p->last_line.c_str());
    std::fflush(violations_);
    if (config_.stacks && ::access("/usr/bin/gdb", X_OK) == 0) DumpStacks(*p, hangs_);
  }
}

void Run::Shutdown() {
  stopping_ = true;
  // Undo every fault, so that the peers can leave through a working network and coordinator.
  RunReverts(0, true);
  if (coord_down_ && !fatal_) StartCoordinator(false);
  for (auto& p : procs_) {
    if (p->running && !p->killed) ::kill(p->pid, SIGTERM);
  }
  // A peer finishes its current call (deadline plus grace at most), then leaves. Stop waits for
  // each in turn (they all run meanwhile) and kills one that is still there at the deadline; it
  // also works after a Ctrl-C, where Wait would return at once.
  const auto deadline =
      Clock::now() + std::chrono::milliseconds(config_.timeout_ms + config_.grace_ms + 10000);
  for (auto& p : procs_) {
    if (!p->running || p->killed) continue;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    sup_.Stop(p->pid, std::max(std::chrono::milliseconds(0), left));
    if (sup_.ExitCode(p->pid) == 128 + SIGKILL) {
      std::printf("p%d did not leave within its deadline after SIGTERM: killed\n", p->index);
    }
  }
  sup_.StopAll(std::chrono::milliseconds(2000));  // the coordinator
  ReapChildren();
  PollRecords();
  checker_->Prune(0, -1);
  FindSanitizerReports();
  std::string error;
  if (emu_ && !emu_->Stop(&error)) {
    std::printf("emulator teardown: %s\n", error.c_str());
    driver_errors_++;
  }
}

void Run::FindSanitizerReports() {
  std::vector<std::string> files;
  for (const auto& p : procs_) files.push_back(p->err_path);
  for (int i = 0; i < coord_starts_; i++)
    files.push_back(dir_ + "/coord-" + std::to_string(i) + ".log");
  const char* const kMarks[] = {"WARNING: ThreadSanitizer", "ERROR: AddressSanitizer",
                                "ERROR: LeakSanitizer", "runtime error:"};
  for (const std::string& path : files) {
    std::ifstream in(path);
    std::string line;
    bool found = false;
    while (!found && std::getline(in, line)) {
      for (const char* mark : kMarks) found = found || line.find(mark) != std::string::npos;
    }
    if (!found) continue;
    sanitizer_files_++;
    std::printf("SANITIZER report in %s: %s\n", path.c_str(), line.c_str());
    std::fprintf(violations_, "SANITIZER report in %s: %s\n", path.c_str(), line.c_str());
    std::fflush(violations_);
  }
}

int Run::PrintSummary() {
  const CheckCounts& c = checker_->counts();
  const double seconds = Elapsed(end_ms_);
  std::printf("\n=== shoal-chaos summary (seed %" PRIu64
              ", %.1f s, %d peers at the start, "
              "between %d and %d)\n",
              seed_, seconds, config_.peers, config_.min_peers, config_.max_peers);
  std::printf("steps: %" PRId64 " (revision %" PRIu64 ", epoch %" PRIu64 ")\n", c.steps,
              checker_->revision(), checker_->epoch());
  std::printf("ops: %" PRId64 " ok, %" PRId64
              " failed (each failure retried after "
              "update_topology); per peer: %" PRId64 " calls ok, %" PRId64 " failed",
              c.ops_ok, c.ops_failed, c.calls_ok, c.calls_failed);
  if (!c.failures_by_code.empty()) {
    std::printf(" (");
    bool first = true;
    for (const auto& [code, n] : c.failures_by_code) {
      std::printf("%s%s %" PRId64, first ? "" : ", ",
                  shoal_strerror(static_cast<shoal_status>(code)), n);
      first = false;
    }
    std::printf(")");
  }
  std::printf("\nupdate_topology: %" PRId64 " ok, %" PRId64 " timed out, %" PRId64
              " other errors; failed creates: %" PRId64 "; state received by %" PRId64
              " syncs (%.1f MiB)\n",
              c.ut_ok, c.ut_timeout, c.ut_error, c.creates_failed, c.joiner_syncs,
              static_cast<double>(c.rx_bytes) / 1048576.0);
  int total_faults = 0;
  std::string kinds;
  for (int k = 0; k < kKindCount; k++) {
    total_faults += fault_counts_[k];
    kinds += std::string(k ? ", " : "") + kKindNames[k] + " " + std::to_string(fault_counts_[k]);
  }
  std::printf("faults: %d (%s)\n", total_faults, kinds.c_str());
  int started = static_cast<int>(procs_.size());
  int killed = 0;
  for (const auto& p : procs_) killed += p->killed;
  std::printf(
      "processes: %d peers started, %d killed, %d exited unexpectedly, %d bad exit codes; "
      "coordinator started %d times, %d unexpected exits; sanitizer reports in %d files\n",
      started, killed, unexpected_exits_, bad_exit_codes_, coord_starts_, coord_unexpected_exits_,
      sanitizer_files_);
  std::printf("hangs: %d (silent peers %d, calls past deadline + grace %d; longest call %" PRId64
              " ms)   divergences: %" PRId64 " (result bits %" PRId64 ", states %" PRId64
              ", member lists %" PRId64 ", success vs failure %" PRId64 ", failure reasons %" PRId64
              ")   wrong results: %" PRId64 "\n",
              hangs_, hangs_ - overruns_, overruns_, longest_call_ms_, c.divergences(),
              c.divergent_results, c.divergent_states, c.divergent_members, c.outcome_splits,
              c.reason_splits, c.wrong_results);
  std::printf("documented exceptions (a fault touched the member): %" PRId64
              " ops a dropped member saw fail, %" PRId64
              " ops that ended without a verdict on a member, %" PRId64 " sync refusals, %" PRId64
              " lineage resets\n",
              c.dropped_member_splits, c.coordinator_lost_splits, c.refusals, c.lineage_resets);

  // Fault -> the end of the first step that began (its update_topology) after the fault.
  std::vector<std::pair<TimeMs, TimeMs>> steps = checker_->steps();
  std::sort(steps.begin(), steps.end());
  std::vector<TimeMs> suffix_min(steps.size() + 1, INT64_MAX);
  for (std::size_t i = steps.size(); i-- > 0;)
    suffix_min[i] = std::min(suffix_min[i + 1], steps[i].second);
  std::vector<double> all;
  std::vector<std::vector<double>> by_kind(kKindCount);
  int unrecovered = 0;
  for (const auto& [t, kind] : faults_) {
    auto it = std::lower_bound(steps.begin(), steps.end(), std::make_pair(t, TimeMs{INT64_MIN}));
    const TimeMs end = suffix_min[static_cast<std::size_t>(it - steps.begin())];
    if (end == INT64_MAX) {
      unrecovered++;
      continue;
    }
    all.push_back(static_cast<double>(end - t));
    by_kind[static_cast<int>(kind)].push_back(static_cast<double>(end - t));
  }
  std::printf(
      "fault -> next successful step: median %.0f ms, p99 %.0f ms, max %.0f ms (%zu faults, "
      "%d with no step after them before the end)\n",
      Percentile(all, 0.5), Percentile(all, 0.99), Percentile(all, 1.0), all.size(), unrecovered);
  for (int k = 0; k < kKindCount; k++) {
    if (by_kind[k].empty()) continue;
    std::printf("  %-9s n=%-4zu median %6.0f ms  p99 %6.0f ms  max %6.0f ms\n", kKindNames[k],
                by_kind[k].size(), Percentile(by_kind[k], 0.5), Percentile(by_kind[k], 0.99),
                Percentile(by_kind[k], 1.0));
  }
  std::vector<TimeMs> ends;
  for (const auto& s : steps) ends.push_back(s.second);
  std::sort(ends.begin(), ends.end());
  TimeMs gap_max = ends.empty() ? end_ms_ - start_ms_ : ends.front() - start_ms_;
  for (std::size_t i = 1; i < ends.size(); i++) gap_max = std::max(gap_max, ends[i] - ends[i - 1]);
  if (!ends.empty()) gap_max = std::max(gap_max, end_ms_ - ends.back());
  std::printf("longest time without a successful step: %" PRId64 " ms\n", gap_max);

  const bool pass = hangs_ == 0 && c.divergences() == 0 && c.wrong_results == 0 &&
                    unexpected_exits_ == 0 && bad_exit_codes_ == 0 &&
                    coord_unexpected_exits_ == 0 && sanitizer_files_ == 0 && driver_errors_ == 0 &&
                    !fatal_ && c.steps > 0 && (!config_.strict || c.exceptions() == 0);
  passed_ = pass;
  if (!pass) {
    std::printf("violations and exceptions: %s/violations.log; records and logs kept in %s\n",
                dir_.c_str(), dir_.c_str());
    std::printf("%s", tools::TailOfFile(dir_ + "/violations.log", 20).c_str());
  } else {
    // The exceptions' descriptions (violations.log) are short: printed here, so that a passing run
    // in the suite leaves no folder behind unless asked to (--keep, --dir).
    if (c.exceptions() > 0)
      std::printf("%s", tools::TailOfFile(dir_ + "/violations.log", 20).c_str());
    if (config_.keep || !dir_is_temp_) std::printf("records and logs kept in %s\n", dir_.c_str());
  }
  std::printf("%s%s (replay: shoal-chaos --seed %" PRIu64 " --seconds %g ...)\n",
              pass ? "PASS" : "FAIL", interrupted_ ? " so far (interrupted)" : "", seed_,
              config_.seconds);
  if (interrupted_) return 130;
  if (fatal_ || driver_errors_ > 0) return pass ? 0 : 2;
  return pass ? 0 : 1;
}

int Run::Execute() {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::printf("shoal-chaos: seed %" PRIu64
              ", %.0f s, %d peers (between %d and %d), a fault every "
              "%.1f-%.1f s; peers' deadline %" PRId64 " ms + grace %" PRId64 " ms\n",
              seed_, config_.seconds, config_.peers, config_.min_peers, config_.max_peers,
              config_.fault_min_s, config_.fault_max_s, config_.timeout_ms, config_.grace_ms);
  start_ms_ = MonotonicNowMs();
  if (!Setup()) {
    end_ms_ = MonotonicNowMs();
    stopping_ = true;
    sup_.StopAll(std::chrono::milliseconds(1000));
    std::string error;
    if (emu_) emu_->Stop(&error);
    std::printf("setup failed; files in %s\n", dir_.c_str());
    return 2;
  }
  std::printf("run directory %s, emulator %s (%d hosts)\n", dir_.c_str(), emu_->name().c_str(),
              hosts_);
  const TimeMs stop_ms = start_ms_ + static_cast<TimeMs>(config_.seconds * 1000);
  // The first fault once the founders had time to form their group.
  TimeMs next_fault_ms = MonotonicNowMs() + static_cast<TimeMs>(config_.fault_max_s * 1000);
  TimeMs next_status_ms = start_ms_ + kStatusEveryMs;
  TimeMs next_prune_ms = start_ms_ + kOpSettleMs;
  while (!fatal_) {
    const TimeMs now = MonotonicNowMs();
    if (now >= stop_ms) break;
    PollRecords();
    ReapChildren();
    if (!EmulatorAlive()) {
      std::printf("the emulator's forwarder died; its log ends:\n%s\n",
                  tools::TailOfFile(dir_ + "/netem.log", 10).c_str());
      fatal_ = true;
      break;
    }
    RunReverts(now, false);
    if (now >= next_fault_ms) {
      InjectFault(now);
      next_fault_ms =
          now + static_cast<TimeMs>(Uniform(config_.fault_min_s, config_.fault_max_s) * 1000);
    }
    CheckHangs(MonotonicNowMs());
    if (now >= next_prune_ms) {
      checker_->Prune(now, kOpSettleMs);
      next_prune_ms = now + kOpSettleMs / 4;
    }
    if (now >= next_status_ms) {
      const CheckCounts& c = checker_->counts();
      int stopped = 0;
      for (auto& p : procs_) stopped += p->running && p->stopped;
      Say("status: %" PRId64 " steps, revision %" PRIu64 ", epoch %" PRIu64
          ", %d peers running "
          "(%d stopped), %zu faults, %d hangs, %" PRId64 " divergences, %" PRId64 " wrong",
          c.steps, checker_->revision(), checker_->epoch(), RunningCount(), stopped, faults_.size(),
          hangs_, c.divergences(), c.wrong_results);
      next_status_ms = now + kStatusEveryMs;
    }
    TimeMs wake = std::min({now + kTickMs, next_fault_ms, stop_ms});
    for (const Revert& r : reverts_) wake = std::min(wake, r.due_ms);
    const auto until = Clock::now() + std::chrono::milliseconds(std::max<TimeMs>(0, wake - now));
    if (sup_.Wait(until) == Supervisor::Event::kInterrupted) {
      std::printf("interrupted (signal %d): stopping everything\n", sup_.interrupt_signal());
      interrupted_ = true;
      break;
    }
  }
  end_ms_ = MonotonicNowMs();
  Shutdown();
  const int code = PrintSummary();
  std::fclose(violations_);
  violations_ = nullptr;
  // A passing run (interrupted or not) leaves no temporary folder behind.
  if (passed_ && dir_is_temp_ && !config_.keep) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  return code;
}

}  // namespace

const std::vector<std::string>& FaultKinds() {
  static const std::vector<std::string> kinds(kKindNames, kKindNames + kKindCount);
  return kinds;
}

int RunDriver(const DriverConfig& config) {
  if (::geteuid() != 0) {
    std::printf("shoal-chaos: skipped: the emulated network needs root\n");
    return 77;
  }
  if (::access("/dev/net/tun", R_OK | W_OK) != 0) {
    std::printf("shoal-chaos: skipped: no /dev/net/tun\n");
    return 77;
  }
  std::uint64_t seed = config.seed;
  if (seed == 0) {
    std::random_device rd;
    seed = (static_cast<std::uint64_t>(rd()) << 32 | rd()) % 1000000000000ull;
    if (seed == 0) seed = 1;
  }
  Run run(config, seed);
  return run.Execute();
}

}  // namespace shoal::chaos
