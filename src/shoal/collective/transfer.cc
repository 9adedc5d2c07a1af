#include "shoal/collective/transfer.h"

#include <algorithm>
#include <array>
#include <limits>
#include <utility>

#include "shoal/common/check.h"
#include "shoal/common/hash.h"
#include "shoal/common/hex.h"

namespace shoal::collective {
namespace {

constexpr std::size_t kHeadBytes = net::kHeaderBytes + net::kSegmentHeaderBytes;

std::uint64_t FramesOf(const Piece& p, std::uint64_t segment_bytes) {
  return (p.bytes + segment_bytes - 1) / segment_bytes;
}

}  // namespace

std::uint32_t PiecesDescriptor(const std::vector<Piece>& pieces) {
  // FNV-1a over the fields, as the ring's OpDescriptor: not security, a tripwire for two ends
  // whose plans differ (another sync, another split). The count goes first so that a list and its
  // prefix differ even where the digest of the tail happens to be neutral.
  std::uint32_t h = 2166136261u;
  auto mix = [&h](std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) {
      h ^= static_cast<std::uint8_t>(v >> (8 * i));
      h *= 16777619u;
    }
  };
  mix(pieces.size(), 8);
  for (const Piece& p : pieces) {
    mix(p.tensor, 4);
    mix(p.offset, 8);
    mix(p.bytes, 8);
  }
  return h;
}

// One of a link's K streams and where it stands in the pair's frame sequence: it carries frames
// k, k + K, ...; its next one is `frame`, which is frame `in_piece` of piece `piece` (piece ==
// pieces.size() once the stream has carried all of its frames).
struct Transfer::Stream {
  std::shared_ptr<Socket> socket;
  std::uint64_t frame = 0;
  std::size_t piece = 0;
  std::uint64_t in_piece = 0;
  // The frame under way: head bytes moved so far, and its payload in tensor memory.
  std::uint8_t head[kHeadBytes];
  std::size_t head_done = 0;
  std::uint8_t* payload = nullptr;
  std::uint64_t payload_bytes = 0;
  std::uint64_t payload_done = 0;
  // An operation of this transfer is pending on the socket. Stop cancels only such sockets: the
  // others may be idle in the link pool or already serve the next transfer.
  bool busy = false;
};

// The frames between this peer and one other, in one direction.
struct Transfer::Link {
  PeerId peer = 0;
  std::vector<Piece> pieces;
  std::uint32_t desc = 0;
  std::uint64_t frames_left = 0;      // not yet completely read / written
  std::vector<Stream> streams;        // sized once by StartLink: handlers hold references
  std::uint64_t* received = nullptr;  // received_bytes_[peer], for incoming links
  bool attached = false;
};

struct Transfer::Impl {
  std::uint64_t tag = 0;
  std::uint64_t seq = 0;
  std::uint64_t segment_bytes = 0;
  std::uint32_t payload_bytes_max = 0;  // of a frame: segment header + segment_bytes
  std::vector<TensorRegion> tensors;
  std::map<std::uint32_t, std::uint64_t> expected_hashes;
  std::map<PeerId, Link> out;  // by receiver; map nodes stay put, handlers hold references
  std::map<PeerId, Link> in;   // by sender
  std::vector<std::uint64_t> tensor_left;  // received bytes still due, per tensor
  std::vector<PeerId> first_sender;        // per received tensor: sender of its lowest piece
  std::uint64_t frames_left = 0;           // over all links
  bool started = false;
  bool done = false;

  std::uint64_t FrameBytes(const Link& link, const Stream& s) const {
    const Piece& p = link.pieces[s.piece];
    return std::min(segment_bytes, p.bytes - s.in_piece * segment_bytes);
  }
  std::uint8_t* FrameData(const Link& link, const Stream& s) const {
    const Piece& p = link.pieces[s.piece];
    return tensors[p.tensor].data + p.offset + s.in_piece * segment_bytes;
  }
  // Moves `s` on by `step` frames of its pair's sequence.
  void Advance(const Link& link, Stream& s, std::uint64_t step) const {
    s.frame += step;
    s.in_piece += step;
    while (s.piece < link.pieces.size() &&
           s.in_piece >= FramesOf(link.pieces[s.piece], segment_bytes)) {
      s.in_piece -= FramesOf(link.pieces[s.piece], segment_bytes);
      s.piece++;
    }
  }
};

Transfer::Transfer(Params params, Callbacks callbacks)
    : impl_(std::make_shared<Impl>()), callbacks_(std::move(callbacks)) {
  Impl& m = *impl_;
  // A frame's length field is a u32 that also counts the segment header.
  SHOAL_CHECK_MSG(params.segment_bytes_max >= 1 &&
                      params.segment_bytes_max <=
                          std::numeric_limits<std::uint32_t>::max() - net::kSegmentHeaderBytes,
                  "segment_bytes_max out of range");
  m.tag = params.tag;
  m.seq = params.seq;
  m.segment_bytes = params.segment_bytes_max;
  m.payload_bytes_max =
      static_cast<std::uint32_t>(net::kSegmentHeaderBytes + params.segment_bytes_max);
  m.tensors = std::move(params.tensors);
  m.expected_hashes = std::move(params.expected_hashes);

  // The REQUIRES of the constructor, checked once here (O(pieces log pieces)) because a piece out
  // of bounds would make the transfer write outside the caller's memory.
  auto check_piece = [&m](const Piece& p) {
    SHOAL_CHECK_MSG(p.tensor < m.tensors.size(), "piece names an unknown tensor");
    const TensorRegion& t = m.tensors[p.tensor];
    SHOAL_CHECK_MSG(p.offset <= t.bytes && p.bytes <= t.bytes - p.offset,
                    "piece lies outside its tensor");
  };
  auto make_link = [&m, &check_piece](PeerId peer, std::vector<Piece> pieces) {
    SHOAL_CHECK_MSG(!pieces.empty(), "a peer of a transfer has no pieces");
    Link link;
    link.peer = peer;
    link.desc = PiecesDescriptor(pieces);
    for (const Piece& p : pieces) {
      check_piece(p);
      link.frames_left += FramesOf(p, m.segment_bytes);
    }
    link.pieces = std::move(pieces);
    m.frames_left += link.frames_left;
    return link;
  };
  for (auto& [peer, pieces] : params.sends) m.out.emplace(peer, make_link(peer, std::move(pieces)));
  for (auto& [peer, pieces] : params.recvs) {
    Link& link = m.in.emplace(peer, make_link(peer, std::move(pieces))).first->second;
    link.received = &received_bytes_.emplace(peer, 0).first->second;
  }

  // Received pieces: no overlap (else a tensor would count as complete before all its bytes are
  // in), an expected hash for every tensor they touch, and who sent each tensor's first piece.
  // Pieces of 0 bytes carry nothing and take no part.
  struct Recv {
    std::uint32_t tensor;
    std::uint64_t offset;
    std::uint64_t bytes;
    PeerId from;
  };
  std::vector<Recv> recvs;
  for (const auto& [peer, link] : m.in) {
    for (const Piece& p : link.pieces) {
      if (p.bytes > 0) recvs.push_back({p.tensor, p.offset, p.bytes, peer});
    }
  }
  std::sort(recvs.begin(), recvs.end(), [](const Recv& a, const Recv& b) {
    return a.tensor != b.tensor ? a.tensor < b.tensor : a.offset < b.offset;
  });
  m.tensor_left.assign(m.tensors.size(), 0);
  m.first_sender.assign(m.tensors.size(), 0);
  for (std::size_t i = 0; i < recvs.size(); i++) {
    const Recv& r = recvs[i];
    if (i == 0 || recvs[i - 1].tensor != r.tensor) {
      SHOAL_CHECK_MSG(m.expected_hashes.count(r.tensor) == 1,
                      "a received tensor has no expected hash");
      m.first_sender[r.tensor] = r.from;
    } else {
      SHOAL_CHECK_MSG(recvs[i - 1].offset + recvs[i - 1].bytes <= r.offset,
                      "received pieces overlap");
    }
    m.tensor_left[r.tensor] += r.bytes;
  }
}

void Transfer::Start() {
  impl_->started = true;
  FinishIfDone();
}

void Transfer::AddOutgoing(PeerId to, std::vector<std::shared_ptr<Socket>> streams) {
  auto it = impl_->out.find(to);
  SHOAL_CHECK_MSG(it != impl_->out.end(), "AddOutgoing for a peer this transfer does not send to");
  StartLink(it->second, std::move(streams), /*outgoing=*/true);
}

void Transfer::AddIncoming(PeerId from, std::vector<std::shared_ptr<Socket>> streams) {
  auto it = impl_->in.find(from);
  SHOAL_CHECK_MSG(it != impl_->in.end(),
                  "AddIncoming for a peer this transfer does not receive from");
  StartLink(it->second, std::move(streams), /*outgoing=*/false);
}

void Transfer::StartLink(Link& link, std::vector<std::shared_ptr<Socket>> streams, bool outgoing) {
  SHOAL_CHECK_MSG(!link.attached, "streams given twice for one peer");
  SHOAL_CHECK_MSG(!streams.empty(), "a link needs at least one stream");
  link.attached = true;
  if (stopped_) return;
  const std::uint64_t k_count = streams.size();
  link.streams.resize(streams.size());
  for (std::uint64_t k = 0; k < k_count; k++) {
    Stream& s = link.streams[k];
    s.socket = std::move(streams[k]);
    impl_->Advance(link, s, k);  // to frame k
  }
  for (Stream& s : link.streams) {
    if (s.piece == link.pieces.size()) continue;  // K > frames: this stream carries none
    if (outgoing) {
      WriteFrame(link, s);
    } else {
      ReadHead(link, s);
    }
  }
}

// Reads and writes go through read_some/write_some, one step at a time, rather than through
// asio::async_read/async_write: those composed operations go on reading into the buffer after a
// step whose completion was already queued when Stop() cancelled the socket (cancel() only reaches
// operations still waiting in the reactor). Here every step's handler checks stopped_ before it
// starts the next, so nothing touches tensor memory once Stop() has run. Each step still moves as
// much as the kernel takes (no 64 KiB cap), so this costs no extra system calls.

void Transfer::ReadHead(Link& link, Stream& s) {
  s.busy = true;
  auto self = shared_from_this();
  s.socket->async_read_some(asio::buffer(s.head + s.head_done, kHeadBytes - s.head_done),
                            [this, self, &link, &s](const asio::error_code& ec, std::size_t n) {
                              s.busy = false;
                              if (stopped_) return;
                              if (ec) {
                                Fail(SHOAL_ERR_PEER_LOST, link.peer,
                                     "transfer stream from the sender ended: " + ec.message());
                                return;
                              }
                              s.head_done += n;
                              if (s.head_done < kHeadBytes) {
                                ReadHead(link, s);
                                return;
                              }
                              s.head_done = 0;
                              OnHead(link, s);
                            });
}

void Transfer::OnHead(Link& link, Stream& s) {
  const Impl& m = *impl_;
  net::FrameHeader h;
  Status st = net::DecodeHeader(s.head, m.payload_bytes_max, &h);
  if (!st.ok()) {
    Fail(SHOAL_ERR_PROTOCOL, link.peer, "bad frame on a transfer stream: " + st.message());
    return;
  }
  if (h.type != net::MsgType::kDataSegment) {
    Fail(SHOAL_ERR_PROTOCOL, link.peer,
         std::string("unexpected ") + net::MsgTypeName(h.type) + " on a transfer stream");
    return;
  }
  net::SegmentHeader seg = net::DecodeSegmentHeader(s.head + net::kHeaderBytes);
  if (seg.tag != m.tag || seg.seq != m.seq) {
    Fail(SHOAL_ERR_PROTOCOL, link.peer,
         "transfer frame of op (" + std::to_string(seg.tag) + ", " + std::to_string(seg.seq) +
             ") where op (" + std::to_string(m.tag) + ", " + std::to_string(m.seq) + ") was due");
    return;
  }
  // The unit field is 32 bits; a pair with more frames than that wraps, at both ends alike.
  if (seg.unit != static_cast<std::uint32_t>(s.frame)) {
    Fail(SHOAL_ERR_PROTOCOL, link.peer,
         "transfer frame " + std::to_string(seg.unit) + " arrived where frame " +
             std::to_string(static_cast<std::uint32_t>(s.frame)) + " was due");
    return;
  }
  if (seg.desc != link.desc) {
    Fail(SHOAL_ERR_PROTOCOL, link.peer,
         "transfer frame for another piece list (sender and receiver plans differ)");
    return;
  }
  std::uint64_t bytes = m.FrameBytes(link, s);
  std::uint64_t got = h.payload_bytes - net::kSegmentHeaderBytes;  // DecodeHeader: >= 24
  if (got != bytes) {
    Fail(SHOAL_ERR_PROTOCOL, link.peer,
         "transfer frame of " + std::to_string(got) + " bytes where " + std::to_string(bytes) +
             " were due");
    return;
  }
  s.payload = m.FrameData(link, s);
  s.payload_bytes = bytes;
  s.payload_done = 0;
  ReadPayload(link, s);
}

void Transfer::ReadPayload(Link& link, Stream& s) {
  s.busy = true;
  auto self = shared_from_this();
  s.socket->async_read_some(
      asio::buffer(s.payload + s.payload_done, s.payload_bytes - s.payload_done),
      [this, self, &link, &s](const asio::error_code& ec, std::size_t n) {
        s.busy = false;
        if (stopped_) return;
        if (ec) {
          Fail(SHOAL_ERR_PEER_LOST, link.peer,
               "transfer stream from the sender ended mid-frame: " + ec.message());
          return;
        }
        *link.received += n;
        s.payload_done += n;
        if (s.payload_done < s.payload_bytes) {
          ReadPayload(link, s);
          return;
        }
        OnFrameRead(link, s);
      });
}

void Transfer::OnFrameRead(Link& link, Stream& s) {
  Impl& m = *impl_;
  std::uint32_t t = link.pieces[s.piece].tensor;
  m.tensor_left[t] -= s.payload_bytes;
  if (m.tensor_left[t] == 0) {
    // The last byte of this tensor is in: the one pass over its bytes that a transfer makes.
    const TensorRegion& region = m.tensors[t];
    std::uint64_t got = ContentHash(region.data, region.bytes);
    std::uint64_t want = m.expected_hashes.find(t)->second;  // the constructor checked
    if (got != want) {
      Fail(SHOAL_ERR_INTEGRITY, m.first_sender[t],
           "tensor " + std::to_string(t) + " hashes to " + Hex64(got) + " after the transfer, " +
               Hex64(want) + " was expected");
      return;
    }
  }
  OnFrameDone(link, s);
  if (s.piece < link.pieces.size()) ReadHead(link, s);
  FinishIfDone();
}

void Transfer::WriteFrame(Link& link, Stream& s) {
  const Impl& m = *impl_;
  std::uint64_t bytes = m.FrameBytes(link, s);
  net::SegmentHeader seg{m.tag, m.seq, static_cast<std::uint32_t>(s.frame), link.desc};
  net::EncodeSegmentHead(seg, static_cast<std::uint32_t>(bytes), s.head);
  s.head_done = 0;
  s.payload = m.FrameData(link, s);
  s.payload_bytes = bytes;
  s.payload_done = 0;
  WriteSome(link, s);
}

void Transfer::WriteSome(Link& link, Stream& s) {
  // Head and payload in one gather write: one system call per frame while the kernel keeps up.
  std::array<asio::const_buffer, 2> bufs{
      asio::buffer(s.head + s.head_done, kHeadBytes - s.head_done),
      asio::buffer(s.payload + s.payload_done, s.payload_bytes - s.payload_done)};
  s.busy = true;
  auto self = shared_from_this();
  s.socket->async_write_some(bufs,
                             [this, self, &link, &s](const asio::error_code& ec, std::size_t n) {
                               s.busy = false;
                               if (stopped_) return;
                               if (ec) {
                                 Fail(SHOAL_ERR_PEER_LOST, link.peer,
                                      "transfer stream to the receiver failed: " + ec.message());
                                 return;
                               }
                               std::size_t head = std::min(n, kHeadBytes - s.head_done);
                               s.head_done += head;
                               s.payload_done += n - head;
                               sent_bytes_ += n - head;
                               if (s.payload_done < s.payload_bytes) {
                                 WriteSome(link, s);
                                 return;
                               }
                               OnFrameDone(link, s);
                               if (s.piece < link.pieces.size()) WriteFrame(link, s);
                               FinishIfDone();
                             });
}

void Transfer::OnFrameDone(Link& link, Stream& s) {
  link.frames_left--;
  impl_->frames_left--;
  impl_->Advance(link, s, link.streams.size());
}

void Transfer::FinishIfDone() {
  Impl& m = *impl_;
  if (stopped_ || m.done || !m.started || m.frames_left != 0) return;
  m.done = true;
  auto cb = std::move(callbacks_.on_done);
  callbacks_ = {};
  if (cb) cb();
}

void Transfer::Fail(shoal_status code, PeerId suspect, const std::string& what) {
  Stop(Status(code, what, suspect));
}

void Transfer::Stop(const Status& why) {
  if (stopped_) return;
  stopped_ = true;
  if (impl_->done) return;
  asio::error_code ec;
  for (auto* links : {&impl_->out, &impl_->in}) {
    for (auto& [peer, link] : *links) {
      for (Stream& s : link.streams) {
        if (s.busy) s.socket->cancel(ec);
      }
    }
  }
  auto cb = std::move(callbacks_.on_fault);
  callbacks_ = {};
  if (cb) cb(why);
}

bool Transfer::done() const { return impl_->done; }

PeerId Transfer::Suspect() const {
  for (const auto& [peer, link] : impl_->in) {
    if (link.frames_left > 0) return peer;
  }
  for (const auto& [peer, link] : impl_->out) {
    if (link.frames_left > 0) return peer;
  }
  return 0;
}

}  // namespace shoal::collective
