// Where the processes of a shoal-bench run live, and how their traffic is counted: on this
// machine's loopback (local mode), or each in its own host of an emulated internet (shoal-netem,
// `--netem`), so that shoal, Gloo and Open MPI cross the same emulated links in the same run.
//
// Vocabulary (besides config.h's): a *host* is a place a process of a run is started in. Process i
// of a run (shoal worker i, Gloo or MPI rank i) runs on host i and listens on Address(i); the
// shoal coordinator and mpirun run on host 0 as well. On loopback every host is this machine and
// every address 127.0.0.1. Under netem host i is the emulator's host i (namespace, TUN device,
// address 10.77.0.(i+1)), and the emulator has as many hosts as the largest world size.
//
// The *cap* of a run is the smallest rate cap (egress or ingress) among its n hosts: a
// bandwidth-optimal ring all-reduce sends 2(n-1)/n of the buffer out of and into every host, which
// is exactly busbw * time, so busbw can reach the cap at best (in IP bytes; TCP/IP headers take
// 3.5% of a 1500-byte packet).
//
// Thread safety: none; owned and used by the main thread of shoal-bench (with its Supervisor).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tools/bench/config.h"

namespace shoal::bench {

class Network {
 public:
  virtual ~Network() = default;

  // The address process `host` of a run listens on.
  virtual std::string Address(int host) const = 0;
  // The argv that runs `argv` on `host`.
  virtual std::vector<std::string> OnHost(int host, std::vector<std::string> argv) const = 0;
  // Bytes that hosts [0, n) have sent so far (for tx_x); nullopt if unknown.
  virtual std::optional<std::uint64_t> SentBytes(int n) = 0;
  // At the start of a run: zeroes the counters behind RunStats (under netem: the emulator's).
  virtual void ResetRunStats() = 0;
  // At the end of a run: fields for its result line on how faithful the network was since
  // ResetRunStats, e.g. " fw_late_mean_us=42 fw_late_p99_us=256 fw_late_max_us=3120 drops=17"
  // (the forwarder's lateness: how long after its due time it wrote each packet; drops: packets
  // the caps' queues dropped on hosts [0, n)). Empty on loopback.
  virtual std::string RunStats(int n) = 0;
  // Appended to every result line: "net=lo", or "net=netem delay_ms=50 rate=200mbit ...".
  virtual std::string Label(int n) const = 0;
  // The cap of a run on hosts [0, n) in GB/s (1e9 B/s); nullopt if uncapped (loopback).
  virtual std::optional<double> CapGBps(int n) const = 0;
  // After a run: stops whatever the run left behind on hosts [0, n) (for example Open MPI's
  // daemonized orted after a killed mpirun). Returns how many processes it stopped.
  virtual int ReapStragglers(int n) = 0;
  // Whether processes can run on `host` at all.
  virtual int hosts() const = 0;
  virtual bool emulated() const = 0;
  // Description for the log.
  virtual std::string Describe() const = 0;
};

// 127.0.0.1 for everything; traffic counted on lo (which counts every program's loopback bytes).
std::unique_ptr<Network> MakeLoopbackNetwork();

// Starts the emulator described by `config` (hosts: config.hosts), sets its per-host sysctls
// (each `sysctl -w` run in every host through `supervisor`) and returns it. The emulator is
// stopped, and everything in its hosts with it, when the Network is destroyed; if shoal-bench dies
// without that, the emulator's forwarder gets a parent-death signal and tears itself down.
// nullptr and *error on failure (nothing is left behind then); *skipped when this machine cannot
// run an emulator at all (not root, no /dev/net/tun).
std::unique_ptr<Network> StartNetemNetwork(const NetemConfig& config, Supervisor& supervisor,
                                           bool* skipped, std::string* error);

// The hidden `--netem-mpi-agent` mode: mpirun's launch agent (plm_rsh_agent) under netem. mpirun
// calls `shoal-bench --netem-mpi-agent NAME NETEM_BIN SESSION_BASE HOST CMD...` (its rsh
// convention: the host, then a command line for a remote shell); this execs `NETEM_BIN exec --name
// NAME i -- /bin/sh -c CMD` for the host i whose address is HOST, so that each orted (and the ranks
// it starts) runs in its own emulated host, with OMPI_MCA_orte_tmpdir_base = MpiSessionDir(
// SESSION_BASE, i). Refuses any address that is not a host of emulator NAME. Returns only on
// failure (an exit code).
int RunNetemMpiAgent(int argc, char** argv);
inline constexpr const char* kNetemMpiAgentFlag = "--netem-mpi-agent";

// Open MPI's session directory base of host `host`. The hosts share the machine's host name and
// /tmp, so by default every orted of a run would make its session directory under the same
// /tmp/ompi.<hostname>.<uid>/jf.<job family>/, and two of them starting at once race on it ("mkdir:
// File exists", orte_init fails; a daemonized orted then dies silently and mpirun waits forever).
// One base per host, as on separate machines. mpirun itself (host 0) keeps Open MPI's default: a
// base given to it would be passed on to every orted.
std::string MpiSessionDir(const std::string& base, int host);

}  // namespace shoal::bench
