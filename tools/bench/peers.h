// The peers harness (shared/peers/run.sh: Gloo, Open MPI, torch.distributed) run as a child of
// shoal-bench with the same world sizes, sizes, iteration counts and check, so that its result
// lines can be tabled next to shoal's.
//
// run.sh is started in its own process group; on a deadline or Ctrl-C it gets SIGTERM (its traps
// stop its ranks and remove its temp files) and, after a grace period, SIGKILL to the group.
// Not thread-safe (uses the caller's Supervisor).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tools/bench/config.h"

namespace shoal::bench {


inline constexpr const char* kPeerLibs[] = {"gloo", "mpi", "mpi_sm", "torch"};

struct PeersRequest {
  std::string peers_dir;  // holds run.sh
  std::vector<std::string> libs;
  std::string gloo_algos;
  std::string mpi_algos;
  std::vector<int> world_sizes;
  std::vector<std::uint64_t> sizes_bytes;
  std::optional<int> iters, warmup, batch;  // nullopt: run.sh's defaults (the same table)
  CheckMode check = CheckMode::kEvery;
  int timeout_s = 300;  // run.sh --timeout: per single run
  int wait_idle_s = 0;
};

struct PeersOutcome {
  enum class End { kOk, kFailed, kTimeout, kInterrupted };
  End end = End::kOk;
  int exit_code = 0;
  std::vector<std::string> lines;  // run.sh's result lines, failed runs included
  std::string error;               // why it failed, for humans
};

// The path of run.sh in `peers_dir`.
std::string PeersScript(const std::string& peers_dir);

// How many single runs run.sh makes for `request` (for the outer deadline).
int CountPeerRuns(const PeersRequest& request);

// Runs run.sh once; its progress goes to our stderr, its tables are dropped. `work_dir` must exist;
// files are made in it with `tag` in their names.
PeersOutcome RunPeers(Supervisor& supervisor, const PeersRequest& request,
                      const std::string& work_dir, const std::string& tag);

}  // namespace shoal::bench
