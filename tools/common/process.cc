#include "tools/common/process.h"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace shoal::tools {
namespace {

using std::chrono::milliseconds;

// After SIGKILL a child is normally gone at once; this bounds the wait for one stuck in the kernel.
constexpr milliseconds kReapAfterKillMax{5000};

sigset_t HandledSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  return set;
}

int ExitCodeOf(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return 255;
}

int OpenForChild(const std::string& path, int flags) {
  return ::open(path.c_str(), flags | O_CLOEXEC, 0644);
}

}  // namespace

Supervisor::Supervisor() {
  sigset_t set = HandledSignals();
  sigprocmask(SIG_BLOCK, &set, nullptr);
  // A closed stdout (a tool piped into head) must not kill us before the children are stopped.
  signal(SIGPIPE, SIG_IGN);
}

Supervisor::~Supervisor() { StopAll(milliseconds(2000)); }

bool Supervisor::Spawn(const SpawnSpec& spec, pid_t* pid, std::string* error) {
  if (spec.argv.empty()) {
    *error = spec.name + ": empty command";
    return false;
  }
  // Everything the child needs is prepared before fork: between fork and exec it only makes
  // async-signal-safe calls.
  std::vector<char*> argv;
  for (const std::string& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const int in_fd = OpenForChild("/dev/null", O_RDONLY);
  const int out_fd =
      spec.stdout_path.empty() ? -1 : OpenForChild(spec.stdout_path, O_WRONLY | O_CREAT | O_TRUNC);
  const int err_fd =
      spec.stderr_path.empty() ? -1 : OpenForChild(spec.stderr_path, O_WRONLY | O_CREAT | O_TRUNC);
  auto close_fds = [&] {
    for (int fd : {in_fd, out_fd, err_fd})
      if (fd >= 0) ::close(fd);
  };
  if (in_fd < 0 || (!spec.stdout_path.empty() && out_fd < 0) ||
      (!spec.stderr_path.empty() && err_fd < 0)) {
    *error = spec.name + ": cannot open its output files: " + std::strerror(errno);
    close_fds();
    return false;
  }
  const pid_t parent = getpid();
  const pid_t child = fork();
  if (child < 0) {
    *error = spec.name + ": fork: " + std::strerror(errno);
    close_fds();
    return false;
  }
  if (child == 0) {
    if (spec.own_process_group) setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, spec.parent_death_signal);
    if (getppid() != parent) _exit(125);  // we died between fork and prctl
    dup2(in_fd, STDIN_FILENO);
    if (out_fd >= 0) dup2(out_fd, STDOUT_FILENO);
    if (err_fd >= 0) dup2(err_fd, STDERR_FILENO);
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  if (spec.own_process_group) setpgid(child, child);  // also here: no race with an early kill
  close_fds();
  children_.push_back(Child{spec.name, child, spec.own_process_group, true, -1});
  *pid = child;
  return true;
}

Supervisor::Child* Supervisor::Find(pid_t pid) {
  for (Child& c : children_)
    if (c.pid == pid) return &c;
  return nullptr;
}

const Supervisor::Child* Supervisor::Find(pid_t pid) const {
  for (const Child& c : children_)
    if (c.pid == pid) return &c;
  return nullptr;
}

bool Supervisor::Running(pid_t pid) const {
  const Child* c = Find(pid);
  return c != nullptr && c->running;
}

int Supervisor::ExitCode(pid_t pid) const {
  const Child* c = Find(pid);
  return c == nullptr ? -1 : c->exit_code;
}

bool Supervisor::ReapExited() {
  bool any = false;
  for (Child& c : children_) {
    if (!c.running) continue;
    int status = 0;
    const pid_t r = waitpid(c.pid, &status, WNOHANG);
    if (r == c.pid) {
      c.running = false;
      c.exit_code = ExitCodeOf(status);
      any = true;
    } else if (r < 0 && errno == ECHILD) {
      c.running = false;  // not ours any more; nothing left to reap
      c.exit_code = 255;
      any = true;
    }
  }
  return any;
}

int Supervisor::WaitSignal(SteadyTime deadline) {
  const sigset_t set = HandledSignals();
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return 0;
    const auto left_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now).count();
    // Long waits are cut into pieces of at most an hour (timespec needs no care then).
    const long long step_ns = std::min<long long>(left_ns, 3600LL * 1000000000LL);
    timespec ts{static_cast<time_t>(step_ns / 1000000000LL),
                static_cast<long>(step_ns % 1000000000LL)};
    siginfo_t info;
    const int sig = sigtimedwait(&set, &info, &ts);
    if (sig < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;  // EAGAIN: this piece timed out
      return 0;
    }
    if (sig != SIGCHLD) {
      if (interrupt_signal_ == 0) {
        interrupt_signal_ = sig;
      } else {
        extra_interrupts_++;
      }
    }
    return sig;
  }
}

Supervisor::Event Supervisor::Wait(SteadyTime deadline) {
  for (;;) {
    if (interrupted()) return Event::kInterrupted;
    if (ReapExited()) return Event::kChildExited;
    const int sig = WaitSignal(deadline);
    if (sig == 0) return ReapExited() ? Event::kChildExited : Event::kDeadline;
  }
}

bool Supervisor::SleepUntil(SteadyTime deadline) {
  for (;;) {
    const Event e = Wait(deadline);
    if (e == Event::kInterrupted) return false;
    if (e == Event::kDeadline) return true;
  }
}

void Supervisor::SignalChild(const Child& c, int sig) {
  if (c.own_process_group) {
    ::kill(-c.pid, sig);
  } else {
    ::kill(c.pid, sig);
  }
}

void Supervisor::Stop(pid_t pid, milliseconds grace) {
  Child* c = Find(pid);
  if (c == nullptr) return;
  if (!c->running) return;
  SignalChild(*c, SIGTERM);
  const auto term_deadline = std::chrono::steady_clock::now() + grace;
  const int interrupts_before = extra_interrupts_ + (interrupted() ? 1 : 0);
  while (Running(pid) && std::chrono::steady_clock::now() < term_deadline) {
    WaitSignal(term_deadline);
    ReapExited();
    // A further Ctrl-C while we wait politely means: stop now.
    if (extra_interrupts_ + (interrupted() ? 1 : 0) > interrupts_before) break;
  }
  c = Find(pid);
  if (c->own_process_group) SignalChild(*c, SIGKILL);  // stragglers of the group, if any
  if (!c->running) return;
  SignalChild(*c, SIGKILL);
  const auto kill_deadline = std::chrono::steady_clock::now() + kReapAfterKillMax;
  while (Running(pid) && std::chrono::steady_clock::now() < kill_deadline) {
    WaitSignal(kill_deadline);
    ReapExited();
  }
}

void Supervisor::StopAll(milliseconds grace) {
  ReapExited();
  std::vector<pid_t> live;
  for (const Child& c : children_)
    if (c.running) live.push_back(c.pid);
  if (live.empty()) return;
  for (pid_t pid : live) SignalChild(*Find(pid), SIGTERM);
  const auto term_deadline = std::chrono::steady_clock::now() + grace;
  auto any_running = [&] {
    for (pid_t pid : live)
      if (Running(pid)) return true;
    return false;
  };
  const int interrupts_before = extra_interrupts_;
  while (any_running() && std::chrono::steady_clock::now() < term_deadline) {
    WaitSignal(term_deadline);
    ReapExited();
    if (extra_interrupts_ > interrupts_before) break;
  }
  for (pid_t pid : live) {
    Child* c = Find(pid);
    if (c->running || c->own_process_group) SignalChild(*c, SIGKILL);
  }
  const auto kill_deadline = std::chrono::steady_clock::now() + kReapAfterKillMax;
  while (any_running() && std::chrono::steady_clock::now() < kill_deadline) {
    WaitSignal(kill_deadline);
    ReapExited();
  }
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

bool TempDir::Create(const std::string& prefix, std::string* error) {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ =
      std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/" + prefix + "XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    *error = "mkdtemp " + templ + ": " + std::strerror(errno);
    return false;
  }
  path_ = buf.data();
  return true;
}

std::string SelfExecutablePath() {
  std::error_code ec;
  const auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.string();
}

bool IsExecutableFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

std::string TailOfFile(const std::string& path, int max_lines) {
  constexpr std::streamoff kTailBytesMax = 16384;
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(size > kTailBytesMax ? size - kTailBytesMax : 0);
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(ss, line)) lines.push_back(line);
  const std::size_t keep = std::min<std::size_t>(lines.size(), static_cast<std::size_t>(max_lines));
  std::string tail;
  for (std::size_t i = lines.size() - keep; i < lines.size(); i++) tail += lines[i] + "\n";
  return tail;
}

}  // namespace shoal::tools
