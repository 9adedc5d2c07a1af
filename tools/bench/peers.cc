#include "tools/bench/peers.h"

#include <fstream>

namespace shoal::bench {
namespace {

// run.sh's own start-up: building the peers once (a minute at most), importing torch to see
// whether it is there, and its busy checks before and after the matrix.
constexpr int kPeersOverheadS = 300;
// Per single run on top of --timeout: the idle wait and run.sh's own bookkeeping.
constexpr int kPeersPerRunSlackS = 5;
constexpr std::chrono::milliseconds kPeersStopGrace{15000};

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : " ") + s;
  return out;
}

}  // namespace

std::string PeersScript(const std::string& peers_dir) { return peers_dir + "/run.sh"; }

int CountPeerRuns(const PeersRequest& request) {
  int per_cell = 0;
  for (const std::string& lib : request.libs) {
    if (lib == "gloo") per_cell += static_cast<int>(SplitList(request.gloo_algos).size());
    if (lib == "mpi" || lib == "mpi_sm")
      per_cell += static_cast<int>(SplitList(request.mpi_algos).size());
    if (lib == "torch") per_cell += 1;
  }
  return per_cell * static_cast<int>(request.world_sizes.size() * request.sizes_bytes.size());
}

PeersOutcome RunPeers(Supervisor& supervisor, const PeersRequest& request,
                      const std::string& work_dir, const std::string& tag) {
  PeersOutcome outcome;
  const std::string out_path = work_dir + "/peers." + tag + ".lines";
  const std::string stdout_path = work_dir + "/peers." + tag + ".stdout";
  std::vector<std::string> world_sizes;
  for (int n : request.world_sizes) world_sizes.push_back(std::to_string(n));
  std::vector<std::string> sizes;
  for (std::uint64_t b : request.sizes_bytes) sizes.push_back(std::to_string(b));

  SpawnSpec spec;
  spec.name = "peers run.sh";
  spec.argv = {PeersScript(request.peers_dir),
               "--libs",
               Join(request.libs),
               "--gloo-algos",
               request.gloo_algos,
               "--mpi-algos",
               request.mpi_algos,
               "--n",
               Join(world_sizes),
               "--sizes",
               Join(sizes),
               "--check",
               CheckModeName(request.check),
               "--timeout",
               std::to_string(request.timeout_s),
               "--wait-idle",
               std::to_string(request.wait_idle_s),
               "--out",
               out_path};
  if (request.iters) spec.argv.insert(spec.argv.end(), {"--iters", std::to_string(*request.iters)});
  if (request.warmup)
    spec.argv.insert(spec.argv.end(), {"--warmup", std::to_string(*request.warmup)});
  if (request.batch) spec.argv.insert(spec.argv.end(), {"--batch", std::to_string(*request.batch)});
  spec.stdout_path = stdout_path;
  spec.own_process_group = true;
  spec.parent_death_signal = SIGTERM;  // lets its traps clean up

  pid_t pid = -1;
  if (!supervisor.Spawn(spec, &pid, &outcome.error)) {
    outcome.end = PeersOutcome::End::kFailed;
    return outcome;
  }
  const int runs = CountPeerRuns(request);
  const auto deadline =
      std::chrono::steady_clock::now() +
      std::chrono::seconds(kPeersOverheadS +
                           runs * (request.timeout_s + request.wait_idle_s + kPeersPerRunSlackS));
  while (supervisor.Running(pid)) {
    const Supervisor::Event e = supervisor.Wait(deadline);
    if (e == Supervisor::Event::kInterrupted) {
      outcome.end = PeersOutcome::End::kInterrupted;
      break;
    }
    if (e == Supervisor::Event::kDeadline) {
      outcome.end = PeersOutcome::End::kTimeout;
      outcome.error = "run.sh did not finish within its deadline";
      break;
    }
  }
  if (supervisor.Running(pid)) supervisor.Stop(pid, kPeersStopGrace);
  outcome.exit_code = supervisor.ExitCode(pid);

  std::ifstream in(out_path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("lib=", 0) == 0) outcome.lines.push_back(line);
  }
  if (outcome.end == PeersOutcome::End::kOk && outcome.exit_code != 0) {
    outcome.end = PeersOutcome::End::kFailed;
    outcome.error = "run.sh exited with " + std::to_string(outcome.exit_code);
    if (outcome.lines.empty()) {
      const std::string tail = TailOfFile(stdout_path, 5);
      if (!tail.empty()) outcome.error += "; its last output:\n" + tail;
    }
  }
  return outcome;
}

}  // namespace shoal::bench
