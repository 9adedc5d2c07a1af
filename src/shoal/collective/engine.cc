#include "shoal/collective/engine.h"

#include <array>
#include <string>
#include <utility>

namespace shoal::collective {
namespace {

// The completion condition of every read and write: Asio's default ones move at most 64 KiB per
// read_some/write_some, i.e. one system call and one trip through the reactor per 64 KiB, and
// segments are up to several MiB, so each step may move as much as the kernel takes. It also ends
// the composed operation once the engine is stopped: cancel() reaches only a step waiting in the
// reactor, and a step whose completion was already queued would otherwise go on to read into the
// user's buffer after Stop().
auto UntilStopped(const bool* stopped) {
  return [stopped](const asio::error_code& ec, std::size_t) -> std::size_t {
    return ec || *stopped ? 0 : std::size_t{1} << 30;
  };
}

}  // namespace

RingEngine::RingEngine(std::vector<net::Stream> out,
                       std::vector<net::Stream> in, PeerId prev, PeerId next,
                       std::uint32_t segment_bytes_max, Callbacks callbacks)
    : prev_(prev), next_(next), segment_bytes_max_(segment_bytes_max),
      callbacks_(std::move(callbacks)) {
  for (auto& s : out) out_.push_back(std::make_unique<OutStream>(std::move(s)));
  for (auto& s : in) in_.push_back(std::make_unique<InStream>(std::move(s)));
}

void RingEngine::Start() {
  for (std::uint32_t k = 0; k < in_.size(); k++) ReadHead(k);
}

void RingEngine::AddOp(OpKey key, std::unique_ptr<RingAllReduce> op) {
  if (stopped_) return;
  RingAllReduce* raw = op.get();
  ops_.emplace(key, std::move(op));
  for (std::uint32_t k = 0; k < in_.size(); k++) {
    InStream& s = *in_[k];
    if (s.parked && s.seg.tag == key.tag && s.seg.seq == key.seq) {
      s.parked = false;
      ProcessHead(k, raw);
      if (stopped_) return;
    }
  }
  KickSends();
  FinishIfDone(key);
}

PeerId RingEngine::SuspectFor(OpKey key) const {
  auto it = ops_.find(key);
  if (it == ops_.end() || it->second->waiting_on_recv()) return prev_;
  return next_;
}

void RingEngine::ReadHead(std::uint32_t k) {
  auto self = shared_from_this();
  InStream& s = *in_[k];
  asio::async_read(s.socket, asio::buffer(s.head), UntilStopped(&stopped_),
                   [this, self, k](const asio::error_code& ec, std::size_t) {
    if (stopped_) return;
    if (ec) {
      Fail(SHOAL_ERR_PEER_LOST, prev_,
           "data stream " + std::to_string(k) + " from the previous neighbour ended: " +
               ec.message());
      return;
    }
    OnHead(k);
  });
}

void RingEngine::OnHead(std::uint32_t k) {
  InStream& s = *in_[k];
  net::FrameHeader h;
  Status st = net::DecodeHeader(s.head, net::kSegmentHeaderBytes + segment_bytes_max_, &h);
  if (!st.ok()) {
    Fail(SHOAL_ERR_PROTOCOL, prev_, "bad frame on data stream: " + st.message());
    return;
  }
  if (h.type != net::MsgType::kDataSegment || h.payload_bytes < net::kSegmentHeaderBytes) {
    Fail(SHOAL_ERR_PROTOCOL, prev_,
         std::string("unexpected ") + net::MsgTypeName(h.type) + " on a data stream");
    return;
  }
  s.seg = net::DecodeSegmentHeader(s.head + net::kHeaderBytes);
  s.payload_bytes = h.payload_bytes - net::kSegmentHeaderBytes;
  auto it = ops_.find(OpKey{s.seg.tag, s.seg.seq});
  if (it == ops_.end()) {
    s.parked = true;  // AddOp resumes this stream
    return;
  }
  ProcessHead(k, it->second.get());
}

void RingEngine::ProcessHead(std::uint32_t k, RingAllReduce* op) {
  InStream& s = *in_[k];
  if (s.seg.desc != op->descriptor()) {
    Fail(SHOAL_ERR_MISMATCH, prev_,
         "members disagree on collective tag " + std::to_string(s.seg.tag) +
             " (count, dtype, op or world size differ)");
    return;
  }
  std::uint64_t expected = op->NextRecv(k);
  if (s.seg.unit != expected) {
    Fail(SHOAL_ERR_PROTOCOL, prev_,
         "unit " + std::to_string(s.seg.unit) + " arrived where unit " +
             (expected == RingAllReduce::kNone ? std::string("none")
                                               : std::to_string(expected)) +
             " was due");
    return;
  }
  std::uint64_t bytes = op->UnitBytes(expected, false);
  if (s.payload_bytes != bytes) {
    Fail(SHOAL_ERR_MISMATCH, prev_,
         "segment of " + std::to_string(s.payload_bytes) + " bytes where " +
             std::to_string(bytes) + " were due");
    return;
  }
  if (s.staging.size() < op->segment_bytes()) s.staging.resize(op->segment_bytes());
  s.unit = expected;
  std::uint8_t* target = op->RecvTarget(expected, s.staging.data());
  OpKey key{s.seg.tag, s.seg.seq};
  auto self = shared_from_this();
  asio::async_read(s.socket, asio::buffer(target, bytes), UntilStopped(&stopped_),
                   [this, self, k, key](const asio::error_code& ec, std::size_t) {
                     if (stopped_) return;
                     if (ec) {
                       Fail(SHOAL_ERR_PEER_LOST, prev_,
                            "data stream from the previous neighbour ended mid-segment: " +
                                ec.message());
                       return;
                     }
                     InStream& s = *in_[k];
                     auto it = ops_.find(key);
                     it->second->OnReceived(s.unit, s.staging.data());
                     KickSends();
                     FinishIfDone(key);
                     if (!stopped_) ReadHead(k);
                   });
}

void RingEngine::KickSends() {
  for (std::uint32_t k = 0; k < out_.size() && !stopped_; k++) TrySend(k);
}

void RingEngine::TrySend(std::uint32_t k) {
  OutStream& s = *out_[k];
  if (s.writing || ops_.empty()) return;
  // Round robin: the first op after the one served last that has a unit ready on this stream.
  auto start = ops_.upper_bound(s.last_served);
  RingAllReduce* op = nullptr;
  OpKey key;
  std::uint64_t unit = RingAllReduce::kNone;
  for (int pass = 0; pass < 2 && op == nullptr; pass++) {
    auto begin = pass == 0 ? start : ops_.begin();
    auto end = pass == 0 ? ops_.end() : start;
    for (auto it = begin; it != end; ++it) {
      std::uint64_t u = it->second->NextSend(k);
      if (u != RingAllReduce::kNone) {
        op = it->second.get();
        key = it->first;
        unit = u;
        break;
      }
    }
  }
  if (op == nullptr) return;
  s.writing = true;
  s.last_served = key;
  std::uint64_t bytes = op->UnitBytes(unit, true);
  net::SegmentHeader seg{key.tag, key.seq, static_cast<std::uint32_t>(unit), op->descriptor()};
  net::EncodeSegmentHead(seg, static_cast<std::uint32_t>(bytes), s.head);
  std::array<asio::const_buffer, 2> bufs{asio::buffer(s.head),
                                         asio::buffer(op->SendData(unit), bytes)};
  auto self = shared_from_this();
  asio::async_write(s.socket, bufs, UntilStopped(&stopped_),
                    [this, self, k, key, unit](const asio::error_code& ec, std::size_t) {
                      if (stopped_) return;
                      out_[k]->writing = false;
                      if (ec) {
                        Fail(SHOAL_ERR_PEER_LOST, next_,
                             "data stream to the next neighbour failed: " + ec.message());
                        return;
                      }
                      ops_.find(key)->second->OnSent(unit);
                      FinishIfDone(key);
                      if (!stopped_) KickSends();
                    });
}

void RingEngine::FinishIfDone(OpKey key) {
  if (stopped_) return;
  auto it = ops_.find(key);
  if (it == ops_.end() || !it->second->done()) return;
  ops_.erase(it);
  if (callbacks_.on_op_done) callbacks_.on_op_done(key);
}

void RingEngine::Fail(shoal_status code, PeerId suspect, const std::string& what) {
  Stop(Status(code, what, suspect));
}

void RingEngine::Stop(const Status& why) {
  if (stopped_) return;
  stopped_ = true;
  asio::error_code ec;
  for (auto& s : out_) s->socket.cancel(ec);
  for (auto& s : in_) s->socket.cancel(ec);
  ops_.clear();
  auto cb = std::move(callbacks_.on_fault);
  callbacks_ = {};
  if (cb) cb(why);
}

void RingEngine::Shutdown() {
  stopped_ = true;
  callbacks_ = {};
  asio::error_code ec;
  for (auto& s : out_) s->socket.close(ec);
  for (auto& s : in_) s->socket.close(ec);
  ops_.clear();
}

}  // namespace shoal::collective
