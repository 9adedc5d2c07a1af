// Fuzz target: the receiving side of a shared-state transfer (collective/transfer.h): the frame
// checks of Transfer::OnHead (DecodeHeader, DecodeSegmentHeader, tag, seq, unit, desc, length)
// and where the payload lands, fed with the bytes of its senders' streams.
//
// The input (transfer_input.h) makes a plan that the runtime's check of a plan would accept
// (pieces inside their tensors, no overlapping receives) and the streams of a correct sender for
// it, then edits the streams: flipped bytes, cut streams, inserted bytes, garbage after the end.
// Each stream is one end of a Unix socket pair handed to the Transfer as its socket (the code
// under test only reads, so the socket's family does not matter, and no port is used); the other
// end holds the stream's bytes and is closed, so every stream ends.
//
// Properties:
// - The transfer ends: exactly one of on_done and on_fault is reported once the streams ran dry.
// - No byte of the receiver's memory outside the pieces it receives ever changes (guard bytes
//   around every tensor included), whatever the streams carry; after on_fault, nothing changes.
// - on_done means every received tensor holds exactly the senders' bytes (its hash matched).
// - Streams that carry exactly a correct sender's frames (garbage after the last frame aside)
//   with right expected hashes end in on_done; with one wrong expected hash, in on_fault
//   INTEGRITY naming the sender of that tensor's first piece.
// - on_fault names one of the senders, with PEER_LOST, PROTOCOL or INTEGRITY. After exactly one
//   edit: a flipped byte of a frame head is PROTOCOL and a cut stream PEER_LOST, both naming that
//   stream's sender; a flipped payload byte is INTEGRITY.
// - received_bytes() of a sender never exceeds the bytes of its pieces.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <map>

#include "fuzz_support.h"
#include "shoal/collective/transfer.h"
#include "shoal/common/hash.h"
#include "transfer_input.h"

namespace shoal::fuzz {
namespace {

namespace ti = transfer_input;
using collective::Piece;
using collective::Transfer;
using Bytes = std::vector<std::uint8_t>;

constexpr std::size_t kGuardBytes = 16;
constexpr std::uint8_t kGuard = 0xA5;
constexpr PeerId kFirstSender = 0x10;

std::string Str(std::uint64_t v) { return std::to_string(v); }

// The receiver's tensors in one block, each between guard bytes.
struct Memory {
  Bytes block;
  std::vector<std::size_t> start;
  std::vector<std::uint64_t> size;

  explicit Memory(const std::vector<std::uint64_t>& sizes) : size(sizes) {
    std::size_t at = kGuardBytes;
    for (std::uint64_t s : sizes) {
      start.push_back(at);
      at += s + kGuardBytes;
    }
    block.assign(at, kGuard);
    for (std::size_t t = 0; t < sizes.size(); t++) {
      for (std::uint64_t j = 0; j < sizes[t]; j++) block[start[t] + j] = Initial(t, j);
    }
  }
  static std::uint8_t Initial(std::size_t t, std::uint64_t j) {
    return static_cast<std::uint8_t>(j * 7 + t * 31 + 1);
  }
  std::uint8_t* data(std::size_t t) { return block.data() + start[t]; }
};

std::uint8_t Source(std::uint8_t seed, std::uint32_t t, std::uint64_t j) {
  return static_cast<std::uint8_t>(seed + j * 13 + t * 101);
}

struct Case {
  std::uint32_t k = 1;
  std::vector<std::uint64_t> sizes;
  std::uint32_t segment_bytes = 1;
  bool wrong_hash = false;
  std::map<PeerId, std::vector<Piece>> recvs;
  std::uint8_t seed = 0;
  std::vector<Bytes> streams;  // sender-major: stream k of sender i is streams[i * K + k]
  std::vector<std::vector<std::size_t>> heads;  // per stream: where each frame's head starts
  std::vector<std::size_t> frames_bytes;        // per stream: where its last frame ends
  bool clean = true;  // the streams carry exactly the correct frames (and maybe garbage)
  // The edit, when exactly one changed the streams: what the transfer must report.
  int edits = 0;
  std::size_t edited_stream = 0;
  shoal_status due = SHOAL_OK;  // PROTOCOL (a head byte flipped), INTEGRITY (a payload byte
                                // flipped), PEER_LOST (a stream cut), OK (no prediction)
};

Case Read(Input& in) {
  Case c;
  c.k = 1 + in.U8() % 3;
  const std::uint32_t senders = 1 + in.U8() % ti::kSendersMax;
  const std::uint32_t tensors = 1 + in.U8() % ti::kTensorsMax;
  for (std::uint32_t t = 0; t < tensors; t++) c.sizes.push_back(in.U8());
  c.segment_bytes = 1 + in.U8() % ti::kSegmentBytesMax;
  c.wrong_hash = (in.U8() & 1) != 0;
  std::vector<std::uint64_t> used(tensors, 0);  // each tensor is filled in offset order
  for (std::uint32_t i = 0; i < senders; i++) {
    const std::uint32_t pieces = 1 + in.U8() % 4;
    for (std::uint32_t p = 0; p < pieces; p++) {
      const std::uint32_t t = in.U8() % tensors;
      const std::uint64_t gap = in.U8() % 4;
      const std::uint8_t length = in.U8();
      if (used[t] + gap >= c.sizes[t]) continue;
      const std::uint64_t offset = used[t] + gap;
      const std::uint64_t bytes = 1 + length % (c.sizes[t] - offset);
      used[t] = offset + bytes;
      c.recvs[kFirstSender + i].push_back(Piece{t, offset, bytes});
    }
  }
  c.seed = in.U8();
  if (Tracing()) {
    Trace("K=" + Str(c.k) + " segment_bytes=" + Str(c.segment_bytes) +
          " wrong_hash=" + Str(c.wrong_hash));
    for (const auto& [peer, pieces] : c.recvs) {
      for (const Piece& p : pieces) {
        Trace("  from " + Str(peer) + ": tensor " + Str(p.tensor) + " [" + Str(p.offset) + ", +" +
              Str(p.bytes) + ") of " + Str(c.sizes[p.tensor]));
      }
    }
  }
  return c;
}

// The frames a correct sender writes, stream by stream (frame f on stream f mod K).
void WriteFrames(Case& c) {
  c.streams.assign(c.recvs.size() * c.k, {});
  c.heads.assign(c.streams.size(), {});
  std::size_t sender = 0;
  for (const auto& [peer, pieces] : c.recvs) {
    const std::uint32_t desc = collective::PiecesDescriptor(pieces);
    std::uint64_t frame = 0;
    for (const Piece& p : pieces) {
      for (std::uint64_t done = 0; done < p.bytes; done += c.segment_bytes, frame++) {
        const std::uint64_t n = std::min<std::uint64_t>(c.segment_bytes, p.bytes - done);
        Bytes& stream = c.streams[sender * c.k + frame % c.k];
        c.heads[sender * c.k + frame % c.k].push_back(stream.size());
        std::uint8_t head[net::kHeaderBytes + net::kSegmentHeaderBytes];
        net::EncodeSegmentHead({ti::kTag, ti::kSeq, static_cast<std::uint32_t>(frame), desc},
                               static_cast<std::uint32_t>(n), head);
        stream.insert(stream.end(), head, head + sizeof head);
        for (std::uint64_t j = 0; j < n; j++) {
          stream.push_back(Source(c.seed, p.tensor, p.offset + done + j));
        }
      }
    }
    sender++;
  }
  for (const Bytes& stream : c.streams) c.frames_bytes.push_back(stream.size());
}

// Whether byte `at` of stream `k` is in a frame's head (as the correct sender wrote it).
bool InHead(const Case& c, std::size_t k, std::size_t at) {
  for (std::size_t start : c.heads[k]) {
    if (at >= start && at < start + net::kHeaderBytes + net::kSegmentHeaderBytes) return true;
  }
  return false;
}

void Edit(Case& c, Input& in) {
  while (!in.done() && !c.streams.empty()) {
    const std::uint8_t kind = in.U8() % 4;
    const std::size_t k = in.U8() % c.streams.size();
    Bytes& s = c.streams[k];
    const std::size_t pos = in.U16();
    const std::uint8_t value = in.U8();
    const bool first = c.edits == 0;
    // Until a first edit the stream holds the correct frames, maybe with garbage after them: an
    // edit in that garbage changes nothing the transfer reads.
    auto in_frames = [&](std::size_t at) { return c.edits > 0 || at < c.frames_bytes[k]; };
    switch (kind) {
      case 0:
        if (s.empty() || value == 0 || !in_frames(pos % s.size())) break;
        s[pos % s.size()] ^= value;
        c.edits++;
        c.due = InHead(c, k, pos % s.size()) ? SHOAL_ERR_PROTOCOL : SHOAL_ERR_INTEGRITY;
        break;
      case 1:
        if (pos % (s.size() + 1) == s.size() || !in_frames(pos % (s.size() + 1))) break;
        s.resize(pos % (s.size() + 1));
        c.edits++;
        c.due = SHOAL_ERR_PEER_LOST;
        break;
      case 2:
        if (!in_frames(pos % (s.size() + 1))) break;
        s.insert(s.begin() + static_cast<std::ptrdiff_t>(pos % (s.size() + 1)), value);
        c.edits++;
        c.due = SHOAL_OK;
        break;
      default:
        s.push_back(value);  // after the last frame of a correct stream: never read
        if (c.edits > 0 && k == c.edited_stream) c.edits++;  // after a cut it is read
        break;
    }
    if (first && c.edits == 1) c.edited_stream = k;
    if (Tracing()) {
      Trace("edit kind " + Str(kind) + " stream " + Str(k) + " at " + Str(pos) + " value " +
            Str(value) + ": " + Str(c.edits) + " edits, due " + Str(c.due));
    }
  }
  c.clean = c.edits == 0;
  // Later edits may change a stream the first one already broke: predict for one edit only.
  if (c.edits != 1) c.due = SHOAL_OK;
}

// One end of a socket pair holding `bytes`, then the end of the stream.
std::shared_ptr<Transfer::Socket> StreamOf(asio::io_context& io, const Bytes& bytes) {
  int fds[2];
  FUZZ_REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0, "socketpair");
  int buffer = 1 << 20;
  setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
  std::size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = write(fds[1], bytes.data() + written, bytes.size() - written);
    FUZZ_REQUIRE(n > 0, "could not fill a stream");
    written += static_cast<std::size_t>(n);
  }
  close(fds[1]);
  asio::ip::tcp::socket socket(io);
  socket.assign(asio::ip::tcp::v4(), fds[0]);
  return std::make_shared<Transfer::Socket>(std::move(socket));  // a plain net::Stream
}

void Run(Case& c) {
  Memory memory(c.sizes);
  const Memory before = memory;
  // What the memory must hold once every piece arrived, and the expected hashes.
  Memory want = memory;
  std::map<std::uint32_t, PeerId> first_sender;  // of each received tensor's lowest piece
  std::map<std::uint32_t, std::uint64_t> lowest;
  for (const auto& [peer, pieces] : c.recvs) {
    for (const Piece& p : pieces) {
      for (std::uint64_t j = 0; j < p.bytes; j++) {
        want.data(p.tensor)[p.offset + j] = Source(c.seed, p.tensor, p.offset + j);
      }
      if (lowest.count(p.tensor) == 0 || p.offset < lowest[p.tensor]) {
        lowest[p.tensor] = p.offset;
        first_sender[p.tensor] = peer;
      }
    }
  }
  Transfer::Params params;
  params.tag = ti::kTag;
  params.seq = ti::kSeq;
  params.segment_bytes_max = c.segment_bytes;
  for (std::size_t t = 0; t < c.sizes.size(); t++) {
    params.tensors.push_back({memory.data(t), c.sizes[t]});
  }
  params.recvs = c.recvs;
  for (const auto& [t, sender] : first_sender) {
    params.expected_hashes[t] = ContentHash(want.data(t), c.sizes[t]);
  }
  const bool wrong = c.wrong_hash && !first_sender.empty();
  if (wrong) params.expected_hashes.begin()->second ^= 1;

  static asio::io_context io;
  int dones = 0;
  int faults = 0;
  Status fault;
  Bytes at_fault;
  Transfer::Callbacks callbacks;
  callbacks.on_done = [&] { dones++; };
  callbacks.on_fault = [&](const Status& s) {
    faults++;
    fault = s;
    at_fault = memory.block;
  };
  auto transfer = std::make_shared<Transfer>(std::move(params), std::move(callbacks));
  transfer->Start();
  std::size_t sender = 0;
  for (const auto& [peer, pieces] : c.recvs) {
    std::vector<std::shared_ptr<Transfer::Socket>> streams;
    for (std::uint32_t k = 0; k < c.k; k++) {
      streams.push_back(StreamOf(io, c.streams[sender * c.k + k]));
    }
    transfer->AddIncoming(peer, std::move(streams));
    sender++;
  }
  io.restart();
  io.run();

  FUZZ_REQUIRE(dones + faults == 1,
               "the transfer reported " + Str(dones) + " dones and " + Str(faults) + " faults");
  // Outside the received pieces nothing changes; `want` differs from `before` only inside them.
  std::vector<bool> inside(memory.block.size(), false);
  for (const auto& [peer, pieces] : c.recvs) {
    for (const Piece& p : pieces) {
      for (std::uint64_t j = 0; j < p.bytes; j++)
        inside[memory.start[p.tensor] + p.offset + j] = true;
    }
  }
  for (std::size_t i = 0; i < memory.block.size(); i++) {
    FUZZ_REQUIRE(inside[i] || memory.block[i] == before.block[i],
                 "byte " + Str(i) + " outside every received piece was written");
  }
  for (const auto& [peer, bytes] : transfer->received_bytes()) {
    std::uint64_t due = 0;
    for (const Piece& p : c.recvs.at(peer)) due += p.bytes;
    FUZZ_REQUIRE(bytes <= due, "received more than the plan's bytes from a sender");
  }
  if (dones == 1) {
    FUZZ_REQUIRE(memory.block == want.block, "on_done with other bytes than the senders'");
    FUZZ_REQUIRE(!wrong, "on_done although an expected hash was wrong");
    FUZZ_REQUIRE(c.due == SHOAL_OK, "on_done although one edit calls for " + Str(c.due));
    return;
  }
  FUZZ_REQUIRE(memory.block == at_fault, "the tensors changed after on_fault");
  FUZZ_REQUIRE(c.recvs.count(fault.peer()) == 1,
               "on_fault names " + Str(fault.peer()) + ", not a sender: " + fault.ToString());
  FUZZ_REQUIRE(fault.code() == SHOAL_ERR_PEER_LOST || fault.code() == SHOAL_ERR_PROTOCOL ||
                   fault.code() == SHOAL_ERR_INTEGRITY,
               "on_fault with " + fault.ToString());
  FUZZ_REQUIRE(!c.clean || wrong, "correct streams ended in " + fault.ToString());
  if (c.due != SHOAL_OK && !wrong) {
    FUZZ_REQUIRE(fault.code() == c.due,
                 "one edit that calls for " + Str(c.due) + " ended in " + fault.ToString());
    const PeerId sender = std::next(c.recvs.begin(), c.edited_stream / c.k)->first;
    FUZZ_REQUIRE(c.due == SHOAL_ERR_INTEGRITY || fault.peer() == sender,
                 "the fault names another sender than the one whose stream broke");
  }
  if (c.clean) {
    FUZZ_REQUIRE(
        fault.code() == SHOAL_ERR_INTEGRITY && fault.peer() == first_sender.begin()->second,
        "a wrong expected hash ended in " + fault.ToString());
  }
}

}  // namespace
}  // namespace shoal::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  shoal::fuzz::Input in(data, size);
  shoal::fuzz::Case c = shoal::fuzz::Read(in);
  shoal::fuzz::WriteFrames(c);
  shoal::fuzz::Edit(c, in);
  shoal::fuzz::Run(c);
  return 0;
}
