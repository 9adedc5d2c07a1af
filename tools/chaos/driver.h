// The chaos driver: a coordinator and a changing set of peers (peer.h) over an emulated internet
// (tools/netem/emulator.h), and random faults, one every few seconds, drawn from a seeded
// generator so that --seed replays the same schedule:
//   kill       SIGKILL a peer
//   join       start a new peer (a joiner: empty state, revision 0)
//   cut        cut the link between two peers' hosts, heal it after 1-8 s
//   cut-coord  cut a peer's host from the coordinator's, heal it after 1-8 s
//   throttle   cap a host at 1-20 Mbit/s for 3-10 s
//   loss       1-10% loss on every link of a host for 3-10 s
//   lag        100-300 ms more one-way delay on every link of a host for 3-10 s
//   stop       SIGSTOP a peer for longer than the heartbeat timeout (up to past its call
//              deadlines plus grace), then SIGCONT
//   coord      SIGKILL the coordinator and start a new one at the same address after 0.2-2 s
// The number of live peers stays within [min, max] (a stopped peer does not count as live).
//
// Host 0 runs the coordinator, hosts 1..max the peers (a killed peer's host is reused by a later
// joiner). The driver reads every peer's record as it grows and applies the checks of checker.h,
// and checks that no running, non-stopped peer goes without a record line for longer than its call
// deadline plus grace plus a margin (a hang). At the end it stops everyone (the peers leave), tears
// the emulator down and prints the counts, the faults by kind, the time from each fault to the next
// successful step, and PASS or FAIL.
//
// Thread safety: one Driver per process, on the main thread (it owns the Supervisor, which owns the
// signal mask).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace shoal::chaos {

struct DriverConfig {
  double seconds = 60;
  std::uint64_t seed = 0;  // 0: a random one (printed)
  int peers = 6;           // at the start
  int min_peers = 3;
  int max_peers = 8;
  double fault_min_s = 2;  // between two faults: uniform in [fault_min_s, fault_max_s]
  double fault_max_s = 5;
  std::vector<std::string> kinds;  // empty: every kind
  std::int64_t timeout_ms = 8000;  // the peers' call deadline
  std::int64_t grace_ms = 2000;    // the peers' verdict grace
  std::int64_t heartbeat_timeout_ms = 3000;
  std::int64_t barrier_timeout_ms = 12000;
  // The coordinator's pipelining unit. Small, so that every all-reduce here runs the
  // multi-segment path (the large one: ~11 segments per chunk with 6 peers).
  std::uint32_t segment_bytes = 4096;
  std::int64_t hang_margin_ms = 5000;
  // A call (update_topology, a collective, a create) that takes longer than the peers' deadline +
  // grace + this, on a peer that was not SIGSTOPped during it, overran its deadline: counted with
  // the hangs. The slack is the scheduling of a loaded machine, not the library's.
  std::int64_t call_slack_ms = 2000;
  std::uint64_t large_count = 65536;
  std::uint64_t state_count = 4096;
  std::string delay = "5ms-20ms";  // one-way delay of each link, drawn per pair
  std::string rate = "100mbit";    // every host's cap
  std::string dir;                 // empty: a temporary directory, removed after a PASS
  bool keep = false;
  bool quiet = false;
  bool stacks = true;    // a gdb backtrace of a hung peer into the run directory
  bool strict = false;   // documented exceptions (checker.h) fail the run too
  std::string sabotage;  // self-check: the first peer misbehaves once (peer.h); the run must FAIL
  std::string coord_bin;
  std::string netem_bin;
  std::string self;  // this program (the peers run it with --peer)
};

// Every fault kind, in the order the summary lists them.
const std::vector<std::string>& FaultKinds();

// Runs the chaos run. Returns the exit code: 0 pass, 1 a check failed, 2 the run could not be set
// up, 77 skipped (not root, or no /dev/net/tun), 130 interrupted.
int RunDriver(const DriverConfig& config);

}  // namespace shoal::chaos
