// What shoal-bench measures and how: the parsed command line, and the small parsers behind it.
//
// Vocabulary (used in all of tools/bench):
//   run       one group of processes measuring one (K, n, size) cell: a fresh coordinator with
//             K streams per link and n fresh workers (local mode), or one peers library/algorithm.
//   sample    the time of one timed all-reduce: the maximum over ranks of that op's time.
//   batch     `batch` back-to-back all-reduces after one barrier; batch_s is the time per op.
//   K         streams (TCP connections) per ring link, the coordinator's --streams-per-link.
//
// Plain data and stateless functions; thread-compatible.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tools/common/pattern.h"
#include "tools/common/process.h"
#include "tools/netem/topology.h"

namespace shoal::bench {

// The process helpers and the data pattern are shared by the tools (tools/common/).
using tools::BusBandwidthFactor;
using tools::CheckResult;
using tools::CheckSum;
using tools::ComputeStats;
using tools::CountNonZero;
using tools::FillPattern;
using tools::FormatResultLine;
using tools::kPatternPeriod;
using tools::MaxExactRanks;
using tools::ResultLine;
using tools::SampleStats;
using tools::SelfExecutablePath;
using tools::IsExecutableFile;
using tools::SpawnSpec;
using tools::SteadyTime;
using tools::Supervisor;
using tools::TailOfFile;
using tools::TempDir;

// Exit codes of shoal-bench and of its workers (3 and 64 as in the peers harness).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;       // local mode: a run or a check failed
inline constexpr int kExitShoalError = 2;   // a shoal call failed, or the set-up did
inline constexpr int kExitCheckFailed = 3;  // a worker saw a wrong result
inline constexpr int kExitUsage = 64;       // bad command line
inline constexpr int kExitSkipped = 77;     // --netem on a machine without root or /dev/net/tun

enum class CheckMode { kEvery, kLast, kNone };

// Iteration counts of one size.
struct IterCounts {
  int iters = 0;   // timed all-reduces, each after a barrier
  int warmup = 0;  // untimed all-reduces before them
  int batch = 0;   // back-to-back all-reduces of the batch phase (0: none)
};

// The peers harness's defaults: <=1 MiB 50+5, <=16 MiB 20+3, <=64 MiB 10+2, larger 5+1; batch =
// iters. Explicit values override each count.
IterCounts ResolveIterCounts(std::uint64_t bytes, std::optional<int> iters,
                             std::optional<int> warmup, std::optional<int> batch);

// "64K", "16M", "1G", "4096", "1.5M" (binary suffixes K/M/G, also KiB/MiB/GiB; B or none: bytes).
// False if malformed, not a whole number of bytes, or above 2^62.
bool ParseBytes(std::string_view text, std::uint64_t* bytes);
// Splits at spaces, tabs and commas; drops empty pieces.
std::vector<std::string> SplitList(std::string_view text);
// A decimal integer in [min, max].
bool ParseInt(std::string_view text, long long min, long long max, long long* value);
// "auto" (nullopt) or a non-negative integer.
bool ParseAutoInt(std::string_view text, std::optional<int>* value);
// "host:port" or "[v6]:port".
bool ParseHostPort(std::string_view text, std::string* host, std::uint16_t* port);
bool ParseCheckMode(std::string_view text, CheckMode* mode);
const char* CheckModeName(CheckMode mode);
// 65536 -> "64K", 1048576 -> "1M", 1000 -> "1000B".
std::string SizeLabel(std::uint64_t bytes);

// One worker: a Communicator that joins a group and runs the sizes (join mode and --worker).
struct WorkerConfig {
  std::string coordinator_host;
  std::uint16_t coordinator_port = 0;
  std::string data_host = "127.0.0.1";  // address the other peers reach this one at
  std::string data_bind_host;           // empty: data_host
  std::uint16_t data_port = 0;
  int expected_world_size = 0;
  std::vector<std::uint64_t> sizes_bytes;
  std::optional<int> iters, warmup, batch;  // nullopt: by size (ResolveIterCounts)
  CheckMode check = CheckMode::kEvery;
  std::string streams_label = "?";             // K= of the result line; the coordinator decides K
  std::optional<std::uint64_t> segment_bytes;  // only for the result line
  std::string label;                           // appended to each result line
  int timeout_s = 300;                 // deadline for the whole worker (membership included)
  std::int64_t op_timeout_ms = 60000;  // shoal::Options::timeout_ms
  std::string log_level = "warn";
  bool tls = false;  // Options::tls (and shoal-coord --tls in local mode)
  bool inject_error = false;  // rank 0 corrupts one element of the last timed op's input
  bool quiet = false;         // --worker: result lines only, no table
  std::string out_path;       // append result lines here (rank 0)
};

// --netem: the runs cross an emulated internet (tools/netem, docs/netem.md) instead of loopback.
struct NetemConfig {
  std::string name;                  // emulator name (default: "sb" + pid)
  std::string netem_bin;             // empty: netem::DefaultNetemBinary()
  netem::Topology topology;          // its hosts = the largest world size
  std::vector<std::string> sysctls;  // "key=value", set in every host before the first run
  bool realtime = true;              // the forwarder's SCHED_FIFO (shoal-netem up --no-realtime)
  bool offload = false;              // TUN offloads (shoal-netem up --offload)
  std::string peers_build_dir;       // the peers' binaries (run.sh --build-only --build-dir DIR)
};

// Local mode: coordinator and workers on 127.0.0.1 (or each in a host of an emulated internet),
// optionally the peers.
struct LocalConfig {
  std::vector<int> world_sizes;
  std::vector<std::uint64_t> sizes_bytes;
  std::optional<int> iters, warmup, batch;
  std::vector<int> streams_per_link;
  std::optional<std::uint64_t> segment_bytes;
  CheckMode check = CheckMode::kEvery;
  int timeout_s = 300;  // per run: everything of the run is killed after it
  std::int64_t op_timeout_ms = 60000;
  std::string log_level = "warn";
  bool tls = false;  // Options::tls (and shoal-coord --tls in local mode)
  bool inject_error = false;
  int wait_idle_s = 0;  // before each run, wait up to this long for an idle CPU
  std::string out_path;
  std::string keep_logs_dir;  // copy the folder of each failed run here; empty: don't
  std::string coord_bin;      // resolved path of shoal-coord
  std::string self_bin;       // this executable, re-executed as --worker

  // Peers (shared/peers/run.sh); empty peer_libs: none.
  std::vector<std::string> peer_libs;  // gloo mpi mpi_sm torch
  std::string peers_dir;
  std::string gloo_algos = "new_ring ring_chunked";
  std::string mpi_algos = "default";
  bool peers_interleaved = true;  // per (n, size) next to shoal, else all peers after shoal
  std::string mpi_args;           // netem: extra mpirun arguments

  std::optional<NetemConfig> netem;  // set: every process runs in its own emulated host
};

}  // namespace shoal::bench
