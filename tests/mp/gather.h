// The start and the step boundaries of the test peer programs: the first boundary waits until the group has `expect`
// members; each prints "MEMBER epoch=.. n=.. rank=.." lines, and "ERROR what=.." on failure.
// Header-only.
#pragma once

#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "shoal/common/clock.h"
#include "shoal/shoal.hpp"

namespace shoal::mp {

// A step boundary: update_topology, then the MEMBER line (with the status when `with_status`, as
// after a failed step; without it only on success).
inline Status StepBoundary(Communicator* comm, bool with_status) {
  Status s = comm->UpdateTopology();
  if (with_status) {
    std::printf("MEMBER epoch=%" PRIu64 " n=%u rank=%u status=%d\n", comm->epoch(),
                comm->world_size(), comm->rank(), s.code());
  } else if (s.ok()) {
    std::printf("MEMBER epoch=%" PRIu64 " n=%u rank=%u\n", comm->epoch(), comm->world_size(),
                comm->rank());
  }
  return s;
}

// Creates the peer's communicator and prints "READY peer=<hex>", or "ERROR what=create ..." and
// returns null.
inline std::unique_ptr<Communicator> CreatePeer(int coord_port, std::int64_t timeout_ms,
                                                const std::string& log_level,
                                                const std::string& secret = "",
                                                const std::vector<std::string>& standbys = {},
                                                bool tls = false) {
  Options opt;
  opt.tls = tls;
  opt.coordinator_port = static_cast<std::uint16_t>(coord_port);
  opt.timeout_ms = timeout_ms;
  opt.log_level = log_level;
  opt.secret = secret;
  opt.coordinator_standbys = standbys;
  std::unique_ptr<Communicator> comm;
  Status s = Communicator::Create(opt, &comm);
  if (!s.ok()) {
    std::printf("ERROR what=create status=%d msg=\"%s\"\n", s.code(), s.ToString().c_str());
    return nullptr;
  }
  std::printf("READY peer=%016" PRIx64 "\n", comm->peer_id());
  return comm;
}

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
