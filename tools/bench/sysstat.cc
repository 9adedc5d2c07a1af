#include "tools/bench/sysstat.h"

#include <fstream>
#include <sstream>
#include <string>

namespace shoal::bench {

std::optional<CpuTimes> ReadCpuTimes() {
  std::ifstream in("/proc/stat");
  std::string line;
  if (!std::getline(in, line) || line.rfind("cpu ", 0) != 0) return std::nullopt;
  std::istringstream fields(line.substr(4));
  // user nice system idle iowait irq softirq steal (guest time is already inside user/nice).
  constexpr int kFieldCount = 8;
  constexpr int kIdleField = 3;
  constexpr int kIowaitField = 4;
  CpuTimes t;
  for (int i = 0; i < kFieldCount; i++) {
    std::uint64_t v = 0;
    if (!(fields >> v)) return std::nullopt;
    t.total += v;
    if (i != kIdleField && i != kIowaitField) t.busy += v;
  }
  return t;
}

int BusyPercent(const CpuTimes& before, const CpuTimes& after) {
  if (after.total <= before.total || after.busy < before.busy) return 0;
  const double total = static_cast<double>(after.total - before.total);
  const double busy = static_cast<double>(after.busy - before.busy);
  return static_cast<int>(100.0 * busy / total + 0.5);
}

std::optional<std::uint64_t> ReadLoopbackTxBytes() {
  std::ifstream in("/sys/class/net/lo/statistics/tx_bytes");
  std::uint64_t v = 0;
  if (!(in >> v)) return std::nullopt;
  return v;
}

}  // namespace shoal::bench
