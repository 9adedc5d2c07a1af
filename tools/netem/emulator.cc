#include "tools/netem/emulator.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "tools/netem/netns.h"

namespace shoal::netem {
namespace {

using Clock = std::chrono::steady_clock;

int MsLeft(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

// Reads from `fd` until `done(buffer)` or EOF (*eof) or the deadline. False unless done.
template <typename Done>
bool ReadUntil(int fd, Clock::time_point deadline, std::string* buffer, Done done,
               bool* eof = nullptr) {
  for (;;) {
    if (done(*buffer)) return true;
    pollfd p{fd, POLLIN, 0};
    const int left = MsLeft(deadline);
    if (left == 0) return false;
    const int n = ::poll(&p, 1, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    char buf[4096];
    const ssize_t r = ::read(fd, buf, sizeof(buf));
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (r <= 0) {
      if (eof != nullptr) *eof = true;
      return done(*buffer);
    }
    buffer->append(buf, static_cast<std::size_t>(r));
  }
}

// The reply is complete when its last line is "ok" or starts with "error:".
bool ReplyComplete(const std::string& text, std::size_t* final_line_start) {
  if (text.empty() || text.back() != '\n') return false;
  const std::size_t start = text.rfind('\n', text.size() - 2);
  const std::size_t line = start == std::string::npos ? 0 : start + 1;
  const std::string last = text.substr(line, text.size() - 1 - line);
  if (last == "ok" || last.rfind("error:", 0) == 0) {
    *final_line_start = line;
    return true;
  }
  return false;
}

bool ReadPid(const std::string& name, pid_t* pid) {
  std::ifstream in(PidPath(name));
  long v = 0;
  if (!(in >> v) || v <= 0) return false;
  *pid = static_cast<pid_t>(v);
  return true;
}

}  // namespace

bool ControlRequest(const std::string& name, const std::string& request,
                    std::chrono::milliseconds timeout, std::string* reply, std::string* error) {
  const auto deadline = Clock::now() + timeout;
  if (request.find('\n') != std::string::npos || request.size() > kStatementBytesMax) {
    *error = "a request is one line of at most " + std::to_string(kStatementBytesMax) + " bytes";
    return false;
  }
  const std::string path = ControlSocketPath(name);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    *error = "control socket path too long: " + path;
    return false;
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + std::strerror(errno);
    return false;
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    *error = "emulator '" + name + "' is not reachable at " + path + " (" + std::strerror(errno) +
             ")" + (EmulatorRunning(name) ? "" : ": it is not running (see shoal-netem list)");
    return false;
  }
  // Unix stream sockets to a listening peer take a short line at once; a send timeout covers a
  // stuck forwarder all the same.
  const int left_ms = std::max(MsLeft(deadline), 1);
  timeval tv{left_ms / 1000, (left_ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  const std::string line = request + "\n";
  if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    *error = "emulator '" + name + "': cannot send the request: " + std::strerror(errno);
    return false;
  }
  std::string text;
  std::size_t final_line = 0;
  const bool complete = ReadUntil(
      fd, deadline, &text, [&](const std::string& t) { return ReplyComplete(t, &final_line); });
  if (!complete) {
    *error = "emulator '" + name + "': no complete reply to '" + request + "' within " +
             std::to_string(timeout.count()) + " ms";
    return false;
  }
  const std::string last = text.substr(final_line, text.size() - 1 - final_line);
  if (reply != nullptr) *reply = text.substr(0, final_line);
  if (last != "ok") {
    *error = "emulator '" + name + "': " + last.substr(std::strlen("error: "));
    return false;
  }
  return true;
}

bool CleanupEmulators(const std::string& name, std::vector<std::string>* removed,
                      std::string* error) {
  std::vector<std::string> names;
  if (name.empty()) {
    names = KnownEmulators();
  } else {
    names.push_back(name);
  }
  bool ok = true;
  for (const std::string& n : names) {
    bool busy = false;
    std::string e;
    // Holding its lock while removing keeps an `up` of the same name from starting meanwhile.
    const int lock = TakeLock(n, &busy, &e);
    if (lock < 0) {
      if (busy && name.empty()) continue;  // a running emulator is no leftover
      if (ok)
        *error = busy ? "emulator '" + n + "' is running (stop it with: shoal-netem down)" : e;
      ok = false;
      continue;
    }
    if (!RemoveEmulatorLeftovers(n, removed, &e)) {
      if (ok) *error = e;
      ok = false;
    }
    ::close(lock);
  }
  return ok;
}

bool StopEmulator(const std::string& name, std::chrono::milliseconds timeout, std::string* error) {
  const auto deadline = Clock::now() + timeout;
  std::vector<std::string> removed;
  pid_t pid = 0;
  if (!EmulatorRunning(name) || !ReadPid(name, &pid)) {
    return CleanupEmulators(name, &removed, error);
  }
  // The pid was read while the lock was held, so it is the forwarder's (no reuse yet).
  std::string e;
  const bool asked = ControlRequest(name, "down", timeout, nullptr, &e);
  if (!WaitProcessGone(pid, asked ? deadline : Clock::now())) {
    ::kill(pid, SIGKILL);
    WaitProcessGone(pid, Clock::now() + std::chrono::seconds(5));
    const bool cleaned = CleanupEmulators(name, &removed, error);
    *error = "emulator '" + name + "' did not go down within " + std::to_string(timeout.count()) +
             " ms" + (asked ? "" : " (" + e + ")") + "; its forwarder was killed" +
             (cleaned ? " and its leftovers removed" : " and cleanup failed: " + *error);
    return false;
  }
  // An orderly stop leaves nothing; a failed teardown leaves what cleanup names.
  if (std::filesystem::exists(StateDir(name)) ||
      !ListNamespaces(std::string(kNamespacePrefix) + name + "-h").empty()) {
    return CleanupEmulators(name, &removed, error);
  }
  return true;
}

std::vector<std::string> ExecArgvFor(const std::string& netem_bin, const std::string& name,
                                     int host, const std::vector<std::string>& argv) {
  std::vector<std::string> out = {netem_bin, "exec", "--name", name, std::to_string(host), "--"};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

std::string DefaultNetemBinary() {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto next_to = self.parent_path() / "shoal-netem";
    if (::access(next_to.c_str(), X_OK) == 0) return next_to.string();
  }
#ifdef SHOAL_NETEM_BIN
  if (::access(SHOAL_NETEM_BIN, X_OK) == 0) return SHOAL_NETEM_BIN;
#endif
  return "shoal-netem";
}

bool Emulator::Start(const Options& options, std::unique_ptr<Emulator>* emulator,
                     std::string* error) {
  if (!ValidEmulatorName(options.name)) {
    *error = "bad emulator name '" + options.name + "' (1-" + std::to_string(kNameBytesMax) +
             " of a-z 0-9 _ -)";
    return false;
  }
  const std::string bin = options.netem_bin.empty() ? DefaultNetemBinary() : options.netem_bin;
  std::vector<std::string> args = {
      bin,          "up",           "--name",
      options.name, "--ready-fd",   "3",
      "--quiet",    "--txqueuelen", std::to_string(options.txqueuelen)};
  if (!options.realtime) args.push_back("--no-realtime");
  if (options.offload) args.push_back("--offload");
  if (options.spin_us > 0) {
    args.push_back("--spin-us");
    args.push_back(std::to_string(options.spin_us));
  }
  for (const std::string& line : SplitLines(TopologyText(options.topology))) {
    args.push_back("--spec");
    args.push_back(line);
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    *error = std::string("pipe: ") + std::strerror(errno);
    return false;
  }
  const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  const int log_fd =
      options.log_path.empty()
          ? -1
          : ::open(options.log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Only async-signal-safe calls until exec.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(125);
    if (pipe_fds[1] == 3) {
      ::fcntl(3, F_SETFD, 0);  // dup2 onto itself would keep close-on-exec
    } else {
      ::dup2(pipe_fds[1], 3);
    }
    if (null_fd >= 0) {
      ::dup2(null_fd, STDIN_FILENO);
      ::dup2(null_fd, STDOUT_FILENO);
    }
    if (log_fd >= 0) ::dup2(log_fd, STDERR_FILENO);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD}) ::signal(s, SIG_DFL);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  if (null_fd >= 0) ::close(null_fd);
  if (log_fd >= 0) ::close(log_fd);
  if (pid < 0) {
    ::close(pipe_fds[0]);
    *error = std::string("fork: ") + std::strerror(errno);
    return false;
  }
  std::unique_ptr<Emulator> emu(new Emulator());
  emu->name_ = options.name;
  emu->netem_bin_ = bin;
  emu->hosts_ = options.topology.hosts;
  emu->pid_ = pid;
  std::string status;
  bool eof = false;
  const bool got = ReadUntil(
      pipe_fds[0], Clock::now() + options.start_timeout, &status,
      [](const std::string& s) { return s.find('\n') != std::string::npos; }, &eof);
  ::close(pipe_fds[0]);
  if (got && status.rfind("ready ", 0) == 0) {
    *emulator = std::move(emu);
    return true;
  }
  if (!status.empty() && status.back() == '\n') status.pop_back();
  if (status.rfind("error: ", 0) == 0) {
    *error = "shoal-netem up: " + status.substr(7);
  } else if (!got && !eof) {
    *error =
        "shoal-netem up: not ready within " + std::to_string(options.start_timeout.count()) + " ms";
  } else {
    *error = "shoal-netem up (" + bin + ") exited without reporting (not executable?)";
  }
  std::string stop_error;
  emu->Stop(&stop_error);  // it tears down what it made, or is killed and cleaned up
  return false;
}

Emulator::~Emulator() {
  std::string error;
  if (running() && !Stop(&error)) {
    std::fprintf(stderr, "shoal-netem: %s\n", error.c_str());
  }
}

bool Emulator::Reap() {
  if (pid_ <= 0) return true;
  int status = 0;
  const pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_ || (r < 0 && errno == ECHILD)) {
    pid_ = -1;
    return true;
  }
  return false;
}

bool Emulator::Stop(std::string* error, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  bool ok = true;
  if (!Reap()) {
    std::string e;
    const bool asked = ControlRequest(name_, "down", timeout, nullptr, &e);
    if (!WaitProcessGone(pid_, asked ? deadline : Clock::now() + std::chrono::seconds(2))) {
      ::kill(pid_, SIGKILL);
      WaitProcessGone(pid_, Clock::now() + std::chrono::seconds(5));
      *error = "emulator '" + name_ + "' did not go down in time" + (asked ? "" : " (" + e + ")") +
               "; its forwarder was killed";
      ok = false;
    }
    int status = 0;
    ::waitpid(pid_, &status, 0);  // it has exited: returns at once
    if (ok && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
      *error = "emulator '" + name_ + "': the forwarder's teardown failed (exit status " +
               std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status)) +
               ")";
      ok = false;
    }
    pid_ = -1;
  }
  // Whatever a failed teardown or a kill left behind.
  if (std::filesystem::exists(StateDir(name_)) ||
      !ListNamespaces(std::string(kNamespacePrefix) + name_ + "-h").empty()) {
    std::vector<std::string> removed;
    std::string e;
    if (!CleanupEmulators(name_, &removed, &e)) {
      *error = (ok ? "" : *error + "; ") + "cleanup: " + e;
      return false;
    }
  }
  return ok;
}

std::string Emulator::NamespacePath(int host) const {
  return shoal::netem::NamespacePath(name_, host);
}

std::vector<std::string> Emulator::ExecArgv(int host, const std::vector<std::string>& argv) const {
  return ExecArgvFor(netem_bin_, name_, host, argv);
}

bool Emulator::Request(const std::string& request, std::string* reply, std::string* error) {
  return ControlRequest(name_, request, kControlTimeoutDefault, reply, error);
}

bool Emulator::Cut(int a, int b, std::string* error, bool one_way) {
  return Request("cut " + std::to_string(a) + " " + (b < 0 ? "*" : std::to_string(b)) +
                     (one_way ? " one-way" : ""),
                 nullptr, error);
}

bool Emulator::Heal(int a, int b, std::string* error, bool one_way) {
  return Request("heal " + std::to_string(a) + " " + (b < 0 ? "*" : std::to_string(b)) +
                     (one_way ? " one-way" : ""),
                 nullptr, error);
}

bool Emulator::Set(const std::string& statement, std::string* error) {
  return Request(statement, nullptr, error);
}

bool Emulator::Stats(std::string* text, std::string* error) {
  return Request("stats", text, error);
}

bool Emulator::ResetStats(std::string* error) { return Request("stats reset", nullptr, error); }

}  // namespace shoal::netem
