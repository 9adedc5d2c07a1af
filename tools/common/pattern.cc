#include "tools/common/pattern.h"

#include <fmt/format.h>

#include <algorithm>

namespace shoal::tools {

int MaxExactRanks() {
  // Largest n with (kPatternPeriod-1) n(n+1)/2 + n(n-1)/2 < 2^24.
  constexpr double kExactFloatMax = 16777216.0;
  int n = 1;
  for (;;) {
    const double m = n + 1;
    const double top = (kPatternPeriod - 1) * m * (m + 1) / 2 + m * (m - 1) / 2;
    if (top >= kExactFloatMax) return n;
    n++;
  }
}

void FillPattern(float* x, std::size_t count, int rank) {
  const float mul = static_cast<float>(rank + 1);
  const float add = static_cast<float>(rank);
  std::uint32_t j = 0;
  for (std::size_t i = 0; i < count; i++) {
    x[i] = static_cast<float>(j) * mul + add;
    if (++j == kPatternPeriod) j = 0;
  }
}

CheckResult CheckSum(const float* x, std::size_t count, int world_size) {
  CheckResult r;
  const float n = static_cast<float>(world_size);
  const float mul = n * (n + 1) / 2;
  const float add = n * (n - 1) / 2;
  std::uint32_t j = 0;
  for (std::size_t i = 0; i < count; i++) {
    const float want = static_cast<float>(j) * mul + add;
    if (x[i] != want) {
      if (r.bad_count == 0) {
        r.first_bad_index = i;
        r.got = x[i];
        r.want = want;
      }
      r.bad_count++;
    }
    if (++j == kPatternPeriod) j = 0;
  }
  return r;
}

std::size_t CountNonZero(const float* x, std::size_t count) {
  std::size_t bad = 0;
  for (std::size_t i = 0; i < count; i++) bad += (x[i] != 0.0f);
  return bad;
}

SampleStats ComputeStats(std::vector<double> samples_s) {
  SampleStats s;
  if (samples_s.empty()) return s;
  std::sort(samples_s.begin(), samples_s.end());
  double sum = 0;
  for (double t : samples_s) sum += t;
  const std::size_t size = samples_s.size();
  s.mean_s = sum / static_cast<double>(size);
  const std::size_t mid = size / 2;
  s.p50_s = (size % 2) ? samples_s[mid] : 0.5 * (samples_s[mid - 1] + samples_s[mid]);
  s.min_s = samples_s.front();
  s.max_s = samples_s.back();
  return s;
}

double BusBandwidthFactor(int world_size) {
  return world_size > 0 ? 2.0 * (world_size - 1) / world_size : 0.0;
}

std::string FormatResultLine(const ResultLine& r) {
  const double factor = BusBandwidthFactor(r.world_size);
  const double bytes = static_cast<double>(r.bytes);
  const double algbw_gbps = r.stats.mean_s > 0 ? bytes / r.stats.mean_s / 1e9 : 0;
  const double batch_busbw_gbps = r.batch_s > 0 ? bytes / r.batch_s / 1e9 * factor : 0;
  std::string line = fmt::format(
      "lib={} algo={} K={} n={} bytes={} iters={} warmup={} mean_s={:.6f} p50_s={:.6f} "
      "min_s={:.6f} max_s={:.6f} algbw_GBps={:.3f} busbw_GBps={:.3f} batch={} batch_s={:.6f} "
      "batch_busbw_GBps={:.3f} check={}",
      r.lib, r.algo, r.streams, r.world_size, r.bytes, r.iters, r.warmup, r.stats.mean_s,
      r.stats.p50_s, r.stats.min_s, r.stats.max_s, algbw_gbps, algbw_gbps * factor, r.batch,
      r.batch_s, batch_busbw_gbps, r.check);
  if (!r.extra.empty()) line += " " + r.extra;
  return line;
}

}  // namespace shoal::tools
