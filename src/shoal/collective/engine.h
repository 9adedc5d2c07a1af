// RingEngine: runs the collectives of one epoch on one peer over the epoch's data streams.
//
// A ring link is K TCP streams (plain or TLS, net/stream.h): this peer writes units to its next
// neighbour on K outgoing streams and reads units from its previous neighbour on K incoming
// streams (unit u travels on stream u mod K). Every unit is one DataSegment frame whose header
// names the op (tag, seq), the unit and the op's descriptor; the engine checks all three against
// the op before it reads the payload, straight into its destination (ring_allreduce.h). Several
// ops may be in flight at once: each outgoing stream serves them round robin; an incoming frame
// for an op this peer has not started yet parks its stream until the op is added (TCP flow
// control holds the sender meanwhile).
//
// On the first error (a stream closed, a bad frame) the engine stops: it cancels all I/O, so no
// user buffer is touched after that, and reports one fault naming the suspect neighbour. It does
// not close the sockets (a close would make the neighbours blame this peer); Shutdown() does.
//
// Thread safety: every method runs on the io_context's thread. Lifetime: shared_ptr; handlers
// hold a reference.
#pragma once

#include <asio.hpp>
#include <compare>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "shoal/collective/ring_allreduce.h"
#include "shoal/status.hpp"
#include "shoal/net/codec.h"
#include "shoal/net/stream.h"

namespace shoal::collective {

struct OpKey {
  std::uint64_t tag = 0;
  std::uint64_t seq = 0;
  auto operator<=>(const OpKey&) const = default;
};

class RingEngine : public std::enable_shared_from_this<RingEngine> {
 public:
  struct Callbacks {
    std::function<void(OpKey)> on_op_done;         // the op's local part is complete
    std::function<void(const Status&)> on_fault;   // once, on the first failure
  };

  // REQUIRES: out.size() == in.size() == K >= 1, all connected, DataHello already exchanged.
  RingEngine(std::vector<net::Stream> out, std::vector<net::Stream> in,
             PeerId prev, PeerId next, std::uint32_t segment_bytes_max, Callbacks callbacks);

  void Start();
  // Takes the op; reports on_op_done when its last unit is through (at once if it has none).
  void AddOp(OpKey key, std::unique_ptr<RingAllReduce> op);
  // The neighbour a stuck op waits for: prev while units are still to arrive, else next.
  PeerId SuspectFor(OpKey key) const;
  // Cancels all I/O without closing the sockets and reports `why` as the fault (if none yet).
  void Stop(const Status& why);
  // Cancels all I/O and closes the sockets; no callback runs after this.
  void Shutdown();
  bool stopped() const { return stopped_; }
  std::uint32_t streams() const { return static_cast<std::uint32_t>(out_.size()); }

 private:
  struct InStream {
    net::Stream socket;
    std::vector<std::uint8_t> staging;
    std::uint8_t head[net::kHeaderBytes + net::kSegmentHeaderBytes];
    bool parked = false;
    net::SegmentHeader seg;
    std::uint64_t payload_bytes = 0;
    std::uint64_t unit = 0;
    explicit InStream(net::Stream s) : socket(std::move(s)) {}
  };
  struct OutStream {
    net::Stream socket;
    std::uint8_t head[net::kHeaderBytes + net::kSegmentHeaderBytes];
    bool writing = false;
    OpKey last_served;
    explicit OutStream(net::Stream s) : socket(std::move(s)) {}
  };

  void ReadHead(std::uint32_t k);
  void OnHead(std::uint32_t k);
  void ProcessHead(std::uint32_t k, RingAllReduce* op);
  void KickSends();
  void TrySend(std::uint32_t k);
  void FinishIfDone(OpKey key);
  void Fail(shoal_status code, PeerId suspect, const std::string& what);

  std::vector<std::unique_ptr<OutStream>> out_;
  std::vector<std::unique_ptr<InStream>> in_;
  PeerId prev_;
  PeerId next_;
  std::uint32_t segment_bytes_max_;
  Callbacks callbacks_;
  std::map<OpKey, std::unique_ptr<RingAllReduce>> ops_;
  bool stopped_ = false;
};

}  // namespace shoal::collective
