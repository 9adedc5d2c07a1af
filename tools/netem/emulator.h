// The C++ API of shoal-netem, for programs that run experiments over an emulated internet (the
// chaos driver, shoal-bench, tests): start an emulator, run programs inside its hosts, cut, heal
// and throttle links while they run, read its counters, stop it.
//
//   netem::Emulator::Options opt;
//   opt.name = "chaos1";
//   ParseTopology({"hosts 4", "link * * delay 50ms", "host * rate 200mbit"}, &opt.topology, &err);
//   std::unique_ptr<netem::Emulator> emu;
//   if (!netem::Emulator::Start(opt, &emu, &err)) ...
//   supervisor.Spawn({"peer 1", emu->ExecArgv(1, {"/path/peer", "--host", emu->Address(1)})}, ...);
//   emu->Cut(1, 2, &err);  ...  emu->Heal(1, 2, &err);
//   emu->Set("host 3 rate 20mbit", &err);
//   emu->Stop(&err);  // also done by the destructor
//
// Start runs `shoal-netem up` as a child process (the forwarder), with a parent-death signal: if
// the program dies, the forwarder tears the emulator down by itself. The signal follows the thread
// that called Start (PR_SET_PDEATHSIG), so call it from a thread that lives as long as the emulator
// should, normally the main thread. Everything else talks to the
// forwarder over its control socket, with a deadline on every call. The free functions work on any
// emulator by name, including ones started from a shell.
//
// Thread safety: an Emulator is not thread-safe (one owner). The free functions are.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "tools/netem/topology.h"

namespace shoal::netem {

constexpr std::chrono::milliseconds kControlTimeoutDefault{5000};
constexpr std::chrono::milliseconds kStartTimeoutDefault{30000};
// Down: the forwarder stops the programs in the hosts (SIGTERM, then SIGKILL after 1 s) and
// removes the namespaces.
constexpr std::chrono::milliseconds kStopTimeoutDefault{15000};

// Sends one request to the control socket of emulator `name` and reads the reply up to its final
// line. *reply gets the lines before "ok". False and *error if the emulator cannot be reached
// (with a hint when it is not running), the deadline passes, or the reply is "error: ...".
bool ControlRequest(const std::string& name, const std::string& request,
                    std::chrono::milliseconds timeout, std::string* reply, std::string* error);

// Asks emulator `name` to go down and waits (up to `timeout`) until its forwarder has released its
// lock. An emulator whose forwarder is gone has its leftovers removed instead.
bool StopEmulator(const std::string& name, std::chrono::milliseconds timeout, std::string* error);

// Removes the leftovers of emulators that are not running: of `name`, or of every such emulator
// when `name` is empty. Running emulators are left alone. *removed lists what went.
bool CleanupEmulators(const std::string& name, std::vector<std::string>* removed,
                      std::string* error);

// The argv that runs `argv` inside host `host` of emulator `name`, through `netem_bin exec`.
std::vector<std::string> ExecArgvFor(const std::string& netem_bin, const std::string& name,
                                     int host, const std::vector<std::string>& argv);

// The default path of the shoal-netem executable: the one next to the running program, else the
// build tree's (SHOAL_NETEM_BIN at compile time), else "shoal-netem" from PATH.
std::string DefaultNetemBinary();

class Emulator {
 public:
  struct Options {
    std::string name;
    Topology topology;
    std::string netem_bin;  // empty: DefaultNetemBinary()
    std::string log_path;   // the forwarder's stderr; empty: inherit ours
    int txqueuelen = 1000;
    bool realtime = true;  // see UpOptions::realtime
    int spin_us = 0;       // see kSpinMaxUs
    bool offload = false;  // see UpOptions::offload
    std::chrono::milliseconds start_timeout = kStartTimeoutDefault;
  };

  // Starts the emulator and waits until it is ready. False and *error (the forwarder's own message
  // when it reported one) otherwise; nothing is left behind then.
  static bool Start(const Options& options, std::unique_ptr<Emulator>* emulator,
                    std::string* error);
  // Stops the emulator if still running (Stop with the default deadline).
  ~Emulator();
  Emulator(const Emulator&) = delete;
  Emulator& operator=(const Emulator&) = delete;

  // Down: the programs in the hosts are stopped, the namespaces removed, the forwarder exits. If it
  // does not exit in time it is killed and the leftovers removed. True if all is gone.
  bool Stop(std::string* error, std::chrono::milliseconds timeout = kStopTimeoutDefault);

  const std::string& name() const { return name_; }
  int hosts() const { return hosts_; }
  pid_t forwarder_pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  std::string Address(int host) const { return HostAddressText(host); }
  // The namespace file of a host (for setns or `ip netns exec`).
  std::string NamespacePath(int host) const;
  // argv that runs `argv` inside `host` (see ExecArgvFor); give it to a Supervisor or execv.
  std::vector<std::string> ExecArgv(int host, const std::vector<std::string>& argv) const;

  // Live changes (see forwarder.h). `b` may be -1 for "every other host".
  bool Cut(int a, int b, std::string* error, bool one_way = false);
  bool Heal(int a, int b, std::string* error, bool one_way = false);
  // A topology statement: "link 0 1 delay 80ms loss 1%", "host 3 rate 20mbit".
  bool Set(const std::string& statement, std::string* error);
  // Counter lines (see `shoal-netem stats`).
  bool Stats(std::string* text, std::string* error);
  bool ResetStats(std::string* error);
  // Sends any control request.
  bool Request(const std::string& request, std::string* reply, std::string* error);

 private:
  Emulator() = default;
  // Reaps the forwarder if it has exited; true if it has.
  bool Reap();

  std::string name_;
  std::string netem_bin_;
  int hosts_ = 0;
  pid_t pid_ = -1;
};

}  // namespace shoal::netem
