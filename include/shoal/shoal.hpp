// shoal C++ API: a Communicator is one peer of a shoal group.
//
//   shoal::Options opt;
//   opt.coordinator_host = "127.0.0.1";
//   std::unique_ptr<shoal::Communicator> comm;
//   if (auto s = shoal::Communicator::Create(opt, &comm); !s.ok()) { ... }
//   for (;;) {                                   // one training step
//     comm->UpdateTopology();                    // step boundary: admit joiners, drop the dead
//     shoal::Status s = comm->AllReduce(grad, grad, n, SHOAL_F32, SHOAL_AVG);
//     if (!s.ok()) continue;                     // a peer was lost: every survivor saw the same
//   }                                            // error; retry after UpdateTopology
//
// Promises: every blocking call ends by its deadline (timeout_ms, or Options::timeout_ms when
// negative) plus at most Options::verdict_grace_ms; a collective that fails because a member died
// fails on every surviving member with the same status code and lost peer; a collective never
// succeeds on one member while it fails on another; after it succeeds all members hold the same
// bits. docs/protocol.md has the details.
//
// Thread safety: a Communicator may be used from several threads at once (for example, collectives
// with different tags). Buffers passed to a collective must stay valid and untouched until it
// returns (or its Request completes).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "shoal/status.hpp"
#include "shoal/types.h"

namespace shoal {

struct Options {
  std::string coordinator_host = "127.0.0.1";
  std::uint16_t coordinator_port = 48150;
  // Address other peers use to reach this peer's data listener, and where it listens
  // (data_bind_host empty: the same as data_host). Port 0 lets the OS choose.
  std::string data_host = "127.0.0.1";
  std::string data_bind_host;
  std::uint16_t data_port = 0;
  PeerId peer_id = 0;                   // 0: draw a random one
  std::int64_t timeout_ms = 30000;      // default deadline of every blocking call
  std::int64_t verdict_grace_ms = 2000; // how long past a deadline to wait for the agreed outcome
  std::int64_t setup_timeout_ms = 10000;  // to open the data connections of a new epoch
  std::string log_level = "warn";       // trace, debug, info, warn, error, off
};

struct CollectiveOptions {
  std::uint64_t tag = 0;          // tells concurrent collectives apart; same on every member
  std::int64_t timeout_ms = -1;   // < 0: Options::timeout_ms
};

// A collective started with one of the *Async calls. Destroying an unfinished Request waits for it
// (within its deadline).
class Request {
 public:
  virtual ~Request() = default;
  // Waits until the collective is decided or timeout_ms passes (< 0: until the collective's own
  // deadline). SHOAL_ERR_TIMEOUT from Wait with a shorter timeout means "not yet": call again.
  virtual Status Wait(std::int64_t timeout_ms = -1) = 0;
  // Whether Wait would return at once.
  virtual bool Done() const = 0;
};

class Communicator {
 public:
  // Connects to the coordinator and waits to be welcomed (pending). The first peer of an empty group
  // becomes its only member at once; others become members in a later UpdateTopology().
  static Status Create(const Options& options, std::unique_ptr<Communicator>* out);
  // Leaves the group cleanly if still in it.
  virtual ~Communicator() = default;

  // Step boundary. For a member: a barrier with the other members, after which pending peers are
  // admitted and failed members are gone. For a pending peer: waits until it is admitted.
  virtual Status UpdateTopology(std::int64_t timeout_ms = -1) = 0;

  // Ring all-reduce of `count` elements. send == recv is in place. Members must call with the same
  // count, dtype, op and tag. On a group of one it copies.
  virtual Status AllReduce(const void* send, void* recv, std::uint64_t count, shoal_dtype dtype,
                           shoal_reduce_op op, const CollectiveOptions& options = {}) = 0;
  virtual Status AllReduceAsync(const void* send, void* recv, std::uint64_t count,
                                shoal_dtype dtype, shoal_reduce_op op,
                                const CollectiveOptions& options,
                                std::unique_ptr<Request>* out) = 0;

  // Leaves the group; later calls fail with SHOAL_ERR_CLOSED.
  virtual Status Leave() = 0;

  virtual PeerId peer_id() const = 0;
  // Of the committed epoch this peer is a member of (0 / empty while pending).
  virtual std::uint64_t epoch() const = 0;
  virtual std::uint32_t world_size() const = 0;
  virtual std::uint32_t rank() const = 0;
  virtual std::vector<PeerId> members() const = 0;
  virtual bool is_member() const = 0;
};

}  // namespace shoal
