// One chaos peer: a process that runs the workload of workload.h through the public C++ API
// (include/shoal/shoal.hpp) until SIGTERM, and writes every call's outcome to its record
// (record.h). The driver starts it inside an emulated host (shoal-netem exec) as
// `shoal-chaos --peer ...`.
//
// The loop, one step per iteration:
//   update_topology (retried on any error; a pending peer waits there to be admitted)
//   sync the shared state (on failure: back to update_topology)
//   the step's all-reduces, inputs from (epoch, tag, seq, peer id) (on failure: back to
//   update_topology; the next attempt runs the whole step again in the new epoch)
//   the update: every tensor of the state changes as a function of the results only, so members
//   that agree on the results hold the same bits; then revision + 1
// The state: "w" (f32, moved by the large all-reduce's result), "counters" (i64: steps, a running
// sum of the small results) and "opt" (f32, allow_divergence: per-peer bytes, sent to joiners
// only). Founders start at revision 1 with the same content; a joiner starts at revision 0 with
// zeros and must receive the state at its first sync.
//
// A Create that fails (coordinator down) is retried. The peer leaves and exits 0 on SIGTERM; it
// exits 3 if the communicator can no longer work (closed, or the coordinator lost for longer than
// the reconnect window).
#pragma once

#include <cstdint>
#include <string>

namespace shoal::chaos {

struct PeerConfig {
  std::string coord_host;
  int coord_port = 0;
  std::string data_host;  // this peer's address in its emulated host
  std::string record_path;
  bool joiner = false;
  std::int64_t timeout_ms = 8000;
  std::int64_t grace_ms = 2000;
  std::uint64_t large_count = 65536;
  std::uint64_t state_count = 4096;  // elements of "w" and "opt"
  int solo_pause_ms = 50;  // a group of one steps without waiting for anyone: slow it down
  std::string log_level = "error";
  // The driver's self-check (shoal-chaos --sabotage): after `sabotage_after_steps` steps, this
  // peer misbehaves once per listed kind (comma-separated) so that a check must fire: "result"
  // flips a bit of a result it records, "state" changes its shared state, "hang" makes no call
  // for 60 s (SIGTERM ends that).
  std::string sabotage;
  int sabotage_after_steps = 5;
};

// Runs the peer until SIGTERM. Returns the process exit code.
int RunPeer(const PeerConfig& config);

}  // namespace shoal::chaos
