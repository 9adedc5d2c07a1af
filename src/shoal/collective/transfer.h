// Transfer: one peer's part of a shared-state sync — it sends byte ranges of its tensors to some
// peers and receives byte ranges of its tensors from others, over point-to-point links of K TCP
// streams, and checks the hash of every tensor it received.
//
// Framing (the same frames as the ring engine's): the pieces one peer sends to another, taken in
// plan order, are cut into frames of at most segment_bytes_max payload bytes; the frames of that
// pair are numbered f = 0, 1, 2, ... across all its pieces, and frame f travels on stream f mod K
// of the pair's link. Each frame is one DataSegment whose SegmentHeader carries {tag, seq, unit = f,
// desc}, where desc is PiecesDescriptor() of the pair's piece list; both ends compute it from their
// own plan, so a frame from another sync or another plan is caught before its payload is read. A
// receiver reads each frame's payload straight into the tensor at the piece's offset (no staging).
// Both ends know the exact frame sequence, so a receiver reads exactly its frames and nothing more:
// the link's streams can carry the next sync's frames afterwards.
//
// Completion: on_done once every frame was written and read and every received tensor's xxHash3
// equals its expected hash. on_fault once, on the first failure: a read error or early close names
// the sender (SHOAL_ERR_PEER_LOST), a write error the receiver (PEER_LOST), a frame that does not
// match (wrong type, tag, seq, unit, desc or size) the sender (SHOAL_ERR_PROTOCOL), a hash that
// does not match the sender of that tensor's first piece, the one at its lowest offset
// (SHOAL_ERR_INTEGRITY). The Status's peer() is that suspect. After on_fault, and after Stop(), no
// byte of any tensor is read or written. Exactly one of on_done and on_fault is reported, never
// from inside AddOutgoing/AddIncoming, and on_done never before Start().
//
// Sockets belong to the caller's link pool and may be reused by later transfers: the Transfer only
// reads, writes and cancels; it never closes them.
//
// Thread safety: every method runs on the thread of the sockets' io_context. Lifetime: shared_ptr;
// handlers hold a reference.
#pragma once

#include <asio.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "shoal/net/codec.h"
#include "shoal/net/stream.h"
#include "shoal/status.hpp"

namespace shoal::collective {

struct TensorRegion {
  std::uint8_t* data = nullptr;  // the caller's memory; may be null when bytes == 0
  std::uint64_t bytes = 0;
};

struct Piece {
  std::uint32_t tensor = 0;
  std::uint64_t offset = 0;
  std::uint64_t bytes = 0;  // > 0 in a sane plan; a piece of 0 bytes has no frames (and no check)
  bool operator==(const Piece&) const = default;
};

// The desc of a pair's frames: a 32-bit digest of its pieces (tensor, offset, bytes) in order.
std::uint32_t PiecesDescriptor(const std::vector<Piece>& pieces);

class Transfer : public std::enable_shared_from_this<Transfer> {
 public:
  using Socket = net::Stream;  // plain or TLS (net/stream.h)
  struct Params {
    std::uint64_t tag = 0;
    std::uint64_t seq = 0;
    std::uint32_t segment_bytes_max = 1u << 20;        // frame payload; >= 1
    std::vector<TensorRegion> tensors;                 // indexed by Piece::tensor
    std::map<PeerId, std::vector<Piece>> sends;        // per receiver, in plan order; non-empty lists
    std::map<PeerId, std::vector<Piece>> recvs;        // per sender, in plan order; non-empty lists
    std::map<std::uint32_t, std::uint64_t> expected_hashes;  // every tensor that recvs touch
  };
  struct Callbacks {
    std::function<void()> on_done;
    std::function<void(const Status&)> on_fault;
  };

  // REQUIRES: every piece lies inside its tensor; the pieces received into one tensor do not
  // overlap; streams are given for exactly the peers in sends (AddOutgoing) and recvs
  // (AddIncoming). The runtime checks a plan against the caller's tensors before it builds one;
  // the constructor checks the memory-safety part again (bounds, overlap, expected hashes,
  // 1 <= segment_bytes_max <= 2^32 - 1 - 24) with SHOAL_CHECK, i.e. a broken plan aborts.
  Transfer(Params params, Callbacks callbacks);

  // Begins; reports on_done at once (from inside Start) when there is nothing to send or receive.
  void Start();
  // The K >= 1 connected, greeted streams to `to`: frames to it start at once. Once per receiver.
  void AddOutgoing(PeerId to, std::vector<std::shared_ptr<Socket>> streams);
  // The K >= 1 streams from `from` (its DataHellos already read): reading starts at once. Once per
  // sender. The two ends of a link must use the same K.
  void AddIncoming(PeerId from, std::vector<std::shared_ptr<Socket>> streams);
  // Cancels all I/O of this transfer (without closing) and reports `why` as the fault if none was.
  // After on_done it only marks the transfer stopped: it has no I/O left, and its sockets may
  // already carry the next transfer's frames, so it cancels nothing and reports nothing.
  void Stop(const Status& why);

  bool done() const;
  bool stopped() const { return stopped_; }
  // A peer this transfer still waits for: a sender with frames not yet read, else a receiver with
  // frames not yet written; 0 if none.
  PeerId Suspect() const;
  // Payload bytes read from each sender / written in all (so far).
  const std::map<PeerId, std::uint64_t>& received_bytes() const { return received_bytes_; }
  std::uint64_t sent_bytes() const { return sent_bytes_; }

 private:
  struct Stream;
  struct Link;
  struct Impl;

  void StartLink(Link& link, std::vector<std::shared_ptr<Socket>> streams, bool outgoing);
  void ReadHead(Link& link, Stream& s);
  void OnHead(Link& link, Stream& s);
  void ReadPayload(Link& link, Stream& s);
  void OnFrameRead(Link& link, Stream& s);
  void WriteFrame(Link& link, Stream& s);
  void WriteSome(Link& link, Stream& s);
  void OnFrameDone(Link& link, Stream& s);
  void FinishIfDone();
  void Fail(shoal_status code, PeerId suspect, const std::string& what);

  std::shared_ptr<Impl> impl_;  // shared_ptr: its deleter is bound in the .cc (Impl is opaque here)
  Callbacks callbacks_;
  bool stopped_ = false;
  std::map<PeerId, std::uint64_t> received_bytes_;
  std::uint64_t sent_bytes_ = 0;
};

}  // namespace shoal::collective
