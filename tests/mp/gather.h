// The start of every test peer program: call update_topology until the group has `expect`
// members, printing "MEMBER epoch=.. n=.. rank=.." after each success and an "ERROR what=.." line
// on failure. Header-only.
#pragma once

#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <thread>

#include "shoal/common/clock.h"
#include "shoal/shoal.hpp"

namespace shoal::mp {

// True once the group has at least `expect` members; false (after printing why) on an error other
// than a timeout, or when `timeout_ms` passes first.
inline bool GatherGroup(Communicator* comm, int expect, std::int64_t timeout_ms) {
  Deadline gather = Deadline::After(timeout_ms);
  while (true) {
    Status s = comm->UpdateTopology();
    if (s.ok()) {
      std::printf("MEMBER epoch=%" PRIu64 " n=%u rank=%u\n", comm->epoch(), comm->world_size(),
                  comm->rank());
      if (static_cast<int>(comm->world_size()) >= expect) return true;
      // A group of one returns from update_topology at once: do not spin.
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } else if (s.code() != SHOAL_ERR_TIMEOUT) {
      std::printf("ERROR what=update status=%d msg=\"%s\"\n", s.code(), s.ToString().c_str());
      return false;
    }
    if (gather.passed()) {
      std::printf("ERROR what=gather n=%u\n", comm->world_size());
      return false;
    }
  }
}

}  // namespace shoal::mp
