// The data pattern, the exact check, the statistics and the result line of the tools (shoal-bench,
// the demo). They match the peers' harness (shared/peers, bench_common.h) in meaning and output
// format so that shoal's lines can be compared with Gloo's and Open MPI's; the code is written here,
// not included from there.
//
// Pattern: rank r, element i holds (i mod kPatternPeriod)(r+1) + r. The sum over n ranks is
// (i mod kPatternPeriod) n(n+1)/2 + n(n-1)/2. Every value and every partial sum is a small integer,
// exact in float32 in any reduction order while the total stays below 2^24, so the check is exact;
// kPatternPeriod is prime, so a chunk placed at a wrong offset shows up.
//
// Stateless free functions; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace shoal::tools {

inline constexpr std::uint32_t kPatternPeriod = 1021;

// The largest world size for which the check stays exact in float32.
int MaxExactRanks();

// Writes rank `rank`'s pattern into x[0, count).
void FillPattern(float* x, std::size_t count, int rank);

struct CheckResult {
  std::size_t bad_count = 0;  // elements that differ from the expected sum
  std::size_t first_bad_index = 0;
  float got = 0;
  float want = 0;
};

// Compares x[0, count) with the sum of the patterns of `world_size` ranks.
CheckResult CheckSum(const float* x, std::size_t count, int world_size);

// Elements of x[0, count) that are not 0 (the batch phase reduces zeros).
std::size_t CountNonZero(const float* x, std::size_t count);

struct SampleStats {
  double mean_s = 0;
  double p50_s = 0;
  double min_s = 0;
  double max_s = 0;
};

// Mean, median (mean of the two middle samples for an even count), min, max. Empty: all 0.
SampleStats ComputeStats(std::vector<double> samples_s);

// busbw / algbw for all-reduce: 2(n-1)/n, as in NCCL's tests.
double BusBandwidthFactor(int world_size);

struct ResultLine {
  std::string lib = "shoal";
  std::string algo = "ring";
  std::string streams;  // the K= field: streams per link ("?" when unknown)
  int world_size = 0;
  std::size_t bytes = 0;
  int iters = 0;
  int warmup = 0;
  SampleStats stats;
  int batch = 0;
  double batch_s = 0;
  std::string check;  // ok | FAILED | skipped
  std::string extra;  // appended verbatim after check= ("key=value ...")
};

// `lib=shoal algo=ring K=.. n=.. bytes=.. iters=.. warmup=.. mean_s=.. p50_s=.. min_s=.. max_s=..
// algbw_GBps=.. busbw_GBps=.. batch=.. batch_s=.. batch_busbw_GBps=.. check=..[ extra]`, without a
// newline. GB = 1e9 bytes; algbw = bytes / mean_s.
std::string FormatResultLine(const ResultLine& r);

}  // namespace shoal::tools
