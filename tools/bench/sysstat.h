// Cheap sanity readings of the machine around a run, the same as the peers harness records:
// how busy the CPUs are (/proc/stat) and how many bytes loopback sent (/sys/class/net/lo).
//
// Stateless functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>

namespace shoal::bench {

// Cumulative CPU time of all cores from the first line of /proc/stat, in clock ticks.
struct CpuTimes {
  std::uint64_t total = 0;
  std::uint64_t busy = 0;  // everything but idle and iowait
};

std::optional<CpuTimes> ReadCpuTimes();
// Percent of CPU time that was busy between two readings (0 if none passed).
int BusyPercent(const CpuTimes& before, const CpuTimes& after);
// Bytes sent on the loopback interface so far.
std::optional<std::uint64_t> ReadLoopbackTxBytes();

}  // namespace shoal::bench
