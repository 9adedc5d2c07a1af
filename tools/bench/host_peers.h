// The peers' benchmarks (shared/peers: Gloo, Open MPI, torch.distributed) started by shoal-bench
// itself on the hosts of a Network (network.h), for --netem: run.sh can only place ranks on
// loopback or in namespaces of its own, so under netem shoal-bench runs the binaries that run.sh
// builds, with run.sh's arguments, one rank per emulated host:
//
//   gloo, torch   rank r on host r: --rank r --size n --host <address of r> --store <run dir>
//                 (Gloo's FileStore rendezvous: a directory every host sees, since the hosts share
//                 the machine's file system; only the network is per host).
//   mpi           one mpirun on host 0 with a hostfile of the n addresses (slots=1 each), so rank r
//                 runs on host r; mpirun starts each other host's orted through shoal-bench's
//                 hidden
//                 --netem-mpi-agent (plm_rsh_agent, instead of ssh), which enters that host with
//                 `shoal-netem exec`. pml ob1, btl tcp,self, btl_tcp_if_include and
//                 oob_tcp_if_include 10.77.0.0/24: every byte between ranks crosses the emulator,
//                 as in run.sh's netns mode. Each host has its own Open MPI session directory
//                 (network.h, MpiSessionDir), and --leave-session-attached keeps the orteds from
//                 daemonizing, so that one that fails to start makes mpirun fail with its message
//                 instead of waiting for it forever.
//
// The binaries print the peers' result line (bench_common.h); the caller adds tx_x, run_wall_s and
// the busy readings as for shoal's runs.
//
// Pure functions building command lines; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tools/bench/config.h"

namespace shoal::bench {

class Network;

// Where the peers' binaries are and how to reach the hosts.
struct HostPeersSetup {
  std::string peers_dir;         // shared/peers (run.sh, torch_gloo_bench.py)
  std::string build_dir;         // gloo_allreduce_bench, mpi_allreduce_bench (run.sh --build-only)
  std::string mpi_agent;         // plm_rsh_agent command line (network.h, kNetemMpiAgentFlag)
  std::string mpi_session_base;  // the agent's SESSION_BASE: per-host Open MPI session dirs
  std::string mpi_subnet;        // btl/oob_tcp_if_include, e.g. "10.77.0.0/24"
  std::string mpi_args;          // extra mpirun arguments, split at spaces
  std::string python = "/usr/bin/python3";
};

// One run of one peer library and algorithm.
struct HostPeerRun {
  std::string lib;   // gloo, mpi, torch
  std::string algo;  // gloo: run.sh's names; mpi: default or a tuned algorithm name; torch: default
  int world_size = 0;
  std::uint64_t bytes = 0;
  IterCounts counts;
  CheckMode check = CheckMode::kEvery;
  int timeout_s = 300;  // also the libraries' own op timeout where they have one (Gloo, torch)
  bool inject_error = false;
  std::string label;    // --extra: appended to the result line
  std::string run_dir;  // exists; Gloo's store, MPI's hostfile
};

// One process of a run: `argv` to start on `host` (not yet wrapped by Network::OnHost).
struct HostPeerProcess {
  std::string name;  // "gloo rank 2", "mpirun"
  int host = 0;
  std::vector<std::string> argv;
  bool own_process_group = false;  // mpirun: its agents and orted go with it
};

// Open MPI's tuned allreduce algorithm id for coll_tuned_allreduce_algorithm (run.sh's names);
// 0 for "default" (the tuned component's own choice), -1 if unknown.
int MpiAlgorithmId(const std::string& algo);

// The algorithms of `lib` to run: gloo and mpi from the lists, torch: {"default"}.
std::vector<std::string> HostPeerAlgos(const std::string& lib, const std::string& gloo_algos,
                                       const std::string& mpi_algos);

// The processes of one run. Writes MPI's hostfile into run.run_dir. False and *error if the run
// cannot be built (unknown algorithm, unwritable run dir).
bool HostPeerProcesses(const HostPeersSetup& setup, const HostPeerRun& run, const Network& network,
                       std::vector<HostPeerProcess>* processes, std::string* error);

}  // namespace shoal::bench
