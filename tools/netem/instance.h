// One running emulator, from the forwarder process's side: `shoal-netem up` calls RunEmulator,
// which sets everything up, runs the Forwarder until `down` or a signal, and tears everything down
// again.
//
// Set-up order, chosen so that a crash at any point leaves only what `cleanup` removes:
//   1. SIGINT, SIGTERM and SIGHUP are blocked and read from a signalfd by the loop (a signal during
//      set-up is seen by the loop's first wait and leads to an orderly teardown);
//   2. the state directory /run/shoal-netem/NAME and its lock (held until the process ends: a free
//      lock is how `cleanup` knows the emulator is dead); leftovers of an earlier run of the same
//      name are removed;
//   3. per host: the namespace, then its TUN device (held by this process only, so the devices
//      vanish with it even on SIGKILL);
//   4. the control socket and the topology file; then "ready" is reported.
// Teardown, on every exit path of RunEmulator: close the TUN devices, stop the processes in the
// namespaces and remove the namespaces, remove the state directory, release the lock.
//
// Thread safety: RunEmulator owns the process (signal mask, timer slack); call it once, from main.
#pragma once

#include <string>

#include "tools/netem/topology.h"

namespace shoal::netem {

constexpr int kTxQueueLenDefault = 1000;
constexpr int kRealtimePriority = 10;  // SCHED_FIFO, low among real-time threads (kernel ones: 50)

struct UpOptions {
  std::string name;
  Topology topology;
  int txqueuelen = kTxQueueLenDefault;
  // If >= 0: "ready <pid>\n" or "error: <reason>\n" is written here once set-up ends, then closed.
  int ready_fd = -1;
  bool print_summary = true;      // the hosts and their addresses on stdout once ready
  bool log_to_state_dir = false;  // --daemon: stderr goes to /run/shoal-netem/NAME/forwarder.log
  // The forwarder runs with SCHED_FIFO priority kRealtimePriority: a network does not slow down
  // when the machine's CPUs are busy, and on a loaded 2-core machine a normal-priority forwarder
  // released packets milliseconds late (docs/netem.md has the figures). It uses CPU only while
  // packets flow.
  bool realtime = true;
  int spin_us = 0;  // see kSpinMaxUs
  // TUN offloads (--offload, docs/netem.md): TCP hands the forwarder 64 KiB super-packets, which
  // it shapes per segment but moves in one piece, for rates one packet per system call cannot
  // reach.
  bool offload = false;
};

// What `up` prints once ready: the hosts, their addresses, namespaces and caps.
std::string SummaryText(const std::string& name, const Topology& topology);

// Returns the process exit code: 0 after an orderly stop, 1 on a set-up or loop error, 2 if the
// teardown could not remove everything (the message names what is left for `cleanup`).
int RunEmulator(const UpOptions& options);

}  // namespace shoal::netem
