// Child processes and temporary directories for the tools (shoal-bench, the demo).
//
// A Supervisor starts children (the coordinator, the workers, the peers' run.sh), waits for them
// with deadlines and kills and reaps every one of them on every exit path: its destructor stops
// whatever still runs. It takes over SIGCHLD, SIGINT, SIGTERM and SIGHUP by blocking them in the
// calling thread and receiving them only inside its waits (sigtimedwait), so there is no signal
// handler and no lost wake-up: a child that exits or a Ctrl-C before a wait is seen by that wait.
// Children get an empty signal mask, default dispositions and a parent-death signal, so they do not
// outlive the tool even if it is SIGKILLed.
//
// Thread safety: none. One Supervisor per process, created and used by the main thread of a
// process that starts no other threads (it owns the signal mask).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <string>
#include <vector>

namespace shoal::tools {

using SteadyTime = std::chrono::steady_clock::time_point;

struct SpawnSpec {
  std::string name;                   // for messages: "coordinator", "worker 2", "peers run.sh"
  std::vector<std::string> argv;      // argv[0] is the path of the program
  std::string stdout_path;            // empty: inherit ours
  std::string stderr_path;            // empty: inherit ours
  bool own_process_group = false;     // kill the whole group (for children that start children)
  int parent_death_signal = SIGKILL;  // sent to the child when the tool dies
};

class Supervisor {
 public:
  enum class Event { kChildExited, kDeadline, kInterrupted };

  // Blocks SIGCHLD, SIGINT, SIGTERM and SIGHUP in the calling thread. REQUIRES: no other
  // Supervisor.
  Supervisor();
  // Stops every child that still runs (see StopAll).
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Starts a child. False (and *error) if it could not be started; a program that cannot be
  // executed shows up as a child exiting with status 127.
  bool Spawn(const SpawnSpec& spec, pid_t* pid, std::string* error);

  // Waits until a child exits (kChildExited, already reaped), a terminating signal arrives
  // (kInterrupted, sticky: every later wait returns it at once) or `deadline` passes.
  Event Wait(SteadyTime deadline);
  // Sleeps until `deadline` unless interrupted. False when interrupted.
  bool SleepUntil(SteadyTime deadline);

  bool Running(pid_t pid) const;
  // The exit code of a reaped child: its status, or 128 + signal. REQUIRES: !Running(pid).
  int ExitCode(pid_t pid) const;

  // SIGTERM (to the group for own_process_group children), then SIGKILL after `grace`, and reaps.
  // Returns within grace plus a short bound even if interrupted; a second Ctrl-C skips the grace.
  void Stop(pid_t pid, std::chrono::milliseconds grace);
  // Stop for every child still running, all at once.
  void StopAll(std::chrono::milliseconds grace);

  bool interrupted() const { return interrupt_signal_ != 0; }
  // The signal that interrupted us (SIGINT, SIGTERM, SIGHUP) or 0.
  int interrupt_signal() const { return interrupt_signal_; }

 private:
  struct Child {
    std::string name;
    pid_t pid = -1;
    bool own_process_group = false;
    bool running = true;
    int exit_code = -1;
  };
  // Reaps every exited child without blocking. True if any was reaped.
  bool ReapExited();
  // sigtimedwait until `deadline`; records interrupts. Returns the signal or 0 on timeout.
  int WaitSignal(SteadyTime deadline);
  void SignalChild(const Child& c, int sig);
  Child* Find(pid_t pid);
  const Child* Find(pid_t pid) const;

  std::vector<Child> children_;
  int interrupt_signal_ = 0;
  int extra_interrupts_ = 0;  // interrupts received after the first
};

// A directory made with mkdtemp under $TMPDIR (or /tmp), removed with its contents on destruction.
// Not thread-safe.
class TempDir {
 public:
  TempDir() = default;
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  // Creates "<tmp>/<prefix>XXXXXX". False (and *error) on failure.
  bool Create(const std::string& prefix, std::string* error);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The absolute path of the running executable (/proc/self/exe); empty if unknown.
std::string SelfExecutablePath();
// Whether `path` names an executable regular file.
bool IsExecutableFile(const std::string& path);
// The last `max_lines` lines of a text file (for failure reports); empty if unreadable.
std::string TailOfFile(const std::string& path, int max_lines);

}  // namespace shoal::tools
