#include "tools/bench/host_peers.h"

#include <fmt/format.h>

#include <fstream>

#include "tools/bench/network.h"

namespace shoal::bench {

int MpiAlgorithmId(const std::string& algo) {
  // Open MPI 4.1's coll_tuned_allreduce_algorithm numbering (ompi_info --param coll tuned).
  static const std::pair<const char*, int> kIds[] = {
      {"default", 0}, {"linear", 1},         {"nonoverlapping", 2}, {"recursive_doubling", 3},
      {"ring", 4},    {"segmented_ring", 5}, {"rabenseifner", 6}};
  for (const auto& [name, id] : kIds) {
    if (algo == name) return id;
  }
  return -1;
}

std::vector<std::string> HostPeerAlgos(const std::string& lib, const std::string& gloo_algos,
                                       const std::string& mpi_algos) {
  if (lib == "gloo") return SplitList(gloo_algos);
  if (lib == "mpi") return SplitList(mpi_algos);
  return {"default"};
}

bool HostPeerProcesses(const HostPeersSetup& setup, const HostPeerRun& run, const Network& network,
                       std::vector<HostPeerProcess>* processes, std::string* error) {
  processes->clear();
  const int n = run.world_size;
  if (n < 1 || n > network.hosts()) {
    *error = fmt::format("{} ranks but {} hosts", n, network.hosts());
    return false;
  }
  // As run.sh labels them: MPI's lines say which transport (the report tells tcp from shm by it).
  const std::string label = run.lib == "mpi" ? run.label + " btl=tcp" : run.label;
  const std::vector<std::string> common = {
      "--bytes",  std::to_string(run.bytes),         "--iters", std::to_string(run.counts.iters),
      "--warmup", std::to_string(run.counts.warmup), "--batch", std::to_string(run.counts.batch),
      "--check",  CheckModeName(run.check),          "--extra", label};
  if (run.lib == "gloo" || run.lib == "torch") {
    for (int r = 0; r < n; r++) {
      HostPeerProcess p;
      p.name = fmt::format("{} rank {}", run.lib, r);
      p.host = r;
      if (run.lib == "gloo") {
        p.argv = {setup.build_dir + "/gloo_allreduce_bench", "--algo", run.algo};
      } else {
        p.argv = {setup.python, setup.peers_dir + "/torch_gloo_bench.py"};
      }
      p.argv.insert(p.argv.end(), {"--rank", std::to_string(r), "--size", std::to_string(n),
                                   "--host", network.Address(r), "--store", run.run_dir,
                                   "--timeout-s", std::to_string(run.timeout_s)});
      p.argv.insert(p.argv.end(), common.begin(), common.end());
      if (run.inject_error) p.argv.push_back("--inject-error");
      processes->push_back(std::move(p));
    }
    return true;
  }
  if (run.lib != "mpi") {
    *error = "no way to run '" + run.lib + "' on emulated hosts (gloo, mpi, torch)";
    return false;
  }
  const int algo_id = MpiAlgorithmId(run.algo);
  if (algo_id < 0) {
    *error = "unknown MPI algorithm '" + run.algo + "'";
    return false;
  }
  const std::string hostfile = run.run_dir + "/hosts";
  {
    std::ofstream out(hostfile);
    for (int r = 0; r < n; r++) out << network.Address(r) << " slots=1\n";
    if (!out) {
      *error = "cannot write " + hostfile;
      return false;
    }
  }
  HostPeerProcess p;
  p.name = "mpirun";
  p.host = 0;
  p.own_process_group = true;
  // mpirun from /usr/bin, the Debian package's, as there is no shell for PATH. It keeps Open MPI's
  // default session directory: any it were given (command line or environment) it would pass on
  // to every orted, overriding the agent's per-host ones.
  p.argv = {"/usr/bin/mpirun",
            "--allow-run-as-root",
            "--leave-session-attached",
            "--bind-to",
            "none",
            "-np",
            std::to_string(n),
            "--hostfile",
            hostfile};
  auto mca = [&p](const std::string& key, const std::string& value) {
    p.argv.insert(p.argv.end(), {"--mca", key, value});
  };
  mca("pml", "ob1");
  mca("btl", "tcp,self");
  mca("btl_tcp_if_include", setup.mpi_subnet);
  mca("oob_tcp_if_include", setup.mpi_subnet);
  mca("plm_rsh_agent", setup.mpi_agent);
  mca("plm_rsh_no_tree_spawn", "1");
  if (algo_id > 0) {
    mca("coll_tuned_use_dynamic_rules", "1");
    mca("coll_tuned_allreduce_algorithm", std::to_string(algo_id));
  }
  // Split at blanks only: MCA values hold commas ("--mca btl tcp,self").
  std::string word;
  for (char ch : setup.mpi_args + " ") {
    if (ch == ' ' || ch == '\t' || ch == '\n') {
      if (!word.empty()) p.argv.push_back(word);
      word.clear();
    } else {
      word += ch;
    }
  }
  p.argv.insert(p.argv.end(), {setup.build_dir + "/mpi_allreduce_bench", "--size",
                               std::to_string(n), "--algo", run.algo});
  p.argv.insert(p.argv.end(), common.begin(), common.end());
  if (run.inject_error) p.argv.push_back("--inject-error");
  processes->push_back(std::move(p));
  return true;
}

}  // namespace shoal::bench
