#include "shoal/net/codec.h"

#include <array>
#include <cstring>
#include <string>
#include <type_traits>

#include "shoal/common/dtype.h"
#include "shoal/common/limits.h"

namespace shoal::net {
namespace {

// Little-endian writer that appends to a vector.
class Writer {
 public:
  explicit Writer(std::vector<std::uint8_t>* out) : out_(out) {}
  void u8(std::uint8_t v) { out_->push_back(v); }
  void u16(std::uint16_t v) { le(v, 2); }
  void u32(std::uint32_t v) { le(v, 4); }
  void u64(std::uint64_t v) { le(v, 8); }
  void status(shoal_status s) { u16(static_cast<std::uint16_t>(s)); }
  // Strings are a u16 length and the bytes. Callers keep them within limits; longer ones are cut.
  void str(const std::string& s, std::uint32_t max_bytes) {
    std::size_t n = s.size() < max_bytes ? s.size() : max_bytes;
    u16(static_cast<std::uint16_t>(n));
    out_->insert(out_->end(), s.begin(), s.begin() + static_cast<std::ptrdiff_t>(n));
  }

 private:
  void le(std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) out_->push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  std::vector<std::uint8_t>* out_;
};

// Bounds-checked little-endian reader. After the first failure every read fails and returns 0.
class Reader {
 public:
  Reader(const std::uint8_t* p, std::size_t n) : p_(p), n_(n) {}
  bool ok() const { return ok_; }
  bool done() const { return ok_ && pos_ == n_; }
  std::uint8_t u8() { return static_cast<std::uint8_t>(le(1)); }
  std::uint16_t u16() { return static_cast<std::uint16_t>(le(2)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(le(4)); }
  std::uint64_t u64() { return le(8); }
  bool boolean() {
    std::uint8_t v = u8();
    if (v > 1) ok_ = false;
    return v == 1;
  }
  shoal_status status() {
    std::uint16_t v = u16();
    if (v >= SHOAL_STATUS_COUNT) {
      ok_ = false;  // and no cast: a shoal_status cannot hold every u16
      return SHOAL_ERR_PROTOCOL;
    }
    return static_cast<shoal_status>(v);
  }
  std::string str(std::uint32_t max_bytes) {
    std::uint16_t len = u16();
    if (!ok_ || len > max_bytes || n_ - pos_ < len) {
      ok_ = false;
      return {};
    }
    std::string s(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len;
    return s;
  }
  std::size_t remaining() const { return ok_ ? n_ - pos_ : 0; }
  void fail() { ok_ = false; }
  // A u32 count of entries of at least `entry_bytes` each: fails (and returns 0) above `max` or
  // when the bytes left cannot hold that many, before the caller allocates anything.
  std::uint32_t count(std::uint32_t max, std::size_t entry_bytes) {
    std::uint32_t n = u32();
    if (!ok_ || n > max || remaining() < std::size_t{n} * entry_bytes) {
      ok_ = false;
      return 0;
    }
    return n;
  }
  // A count of peer ids (non-zero, at most kMembersMax) and the ids.
  void peer_ids(std::vector<PeerId>* out) {
    out->resize(count(limits::kMembersMax, 8));
    for (PeerId& id : *out) {
      id = u64();
      if (id == 0) ok_ = false;
    }
  }

 private:
  std::uint64_t le(int bytes) {
    if (!ok_ || n_ - pos_ < static_cast<std::size_t>(bytes)) {
      ok_ = false;
      return 0;
    }
    std::uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= std::uint64_t{p_[pos_ + i]} << (8 * i);
    pos_ += static_cast<std::size_t>(bytes);
    return v;
  }
  const std::uint8_t* p_;
  std::size_t n_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

bool IsKnownType(std::uint16_t t) {
  return (t >= static_cast<std::uint16_t>(MsgType::kHello) &&
          t <= static_cast<std::uint16_t>(MsgType::kAuthProof)) ||
         t == static_cast<std::uint16_t>(MsgType::kDataHello) ||
         t == static_cast<std::uint16_t>(MsgType::kDataSegment);
}

// One function per message: encode and decode side by side so that they cannot drift apart.
void Put(Writer& w, const Hello& m) {
  w.u64(m.peer_id);
  w.str(m.host, limits::kHostBytesMax);
  w.u16(m.data_port);
  w.u8(m.rejoin ? 1 : 0);
  if (!m.rejoin) return;
  const Rejoin& j = *m.rejoin;
  w.u64(j.epoch);
  w.u8(j.committed ? 1 : 0);
  w.u8(j.broken ? 1 : 0);
  w.status(j.abort_code);
  w.u64(j.abort_lost);
  w.u8(j.fault_sent ? 1 : 0);
  w.status(j.fault_code);
  w.u64(j.fault_suspect);
  w.u8(j.in_barrier ? 1 : 0);
  w.u8(j.has_revision ? 1 : 0);
  w.u64(j.revision);
  w.u64(j.state_digest);
  w.u32(static_cast<std::uint32_t>(j.members.size()));
  for (PeerId id : j.members) w.u64(id);
  w.u32(static_cast<std::uint32_t>(j.next_seq.size()));
  for (const TagSeq& t : j.next_seq) {
    w.u64(t.tag);
    w.u64(t.next_seq);
  }
  w.u32(static_cast<std::uint32_t>(j.ops.size()));
  for (const RejoinOp& op : j.ops) {
    w.u64(op.tag);
    w.u64(op.seq);
    w.u8(static_cast<std::uint8_t>(op.state));
    w.u64(op.revision);
    w.u64(op.digest);
  }
  w.u64(j.last_epoch);
  w.u32(static_cast<std::uint32_t>(j.last_ring.size()));
  for (PeerId id : j.last_ring) w.u64(id);
  w.u64(j.seen_epoch);
}
void Get(Reader& r, Hello& m) {
  m.peer_id = r.u64();
  m.host = r.str(limits::kHostBytesMax);
  m.data_port = r.u16();
  if (m.peer_id == 0) r.fail();
  if (!r.boolean()) return;
  Rejoin& j = m.rejoin.emplace();
  j.epoch = r.u64();
  j.committed = r.boolean();
  j.broken = r.boolean();
  j.abort_code = r.status();
  j.abort_lost = r.u64();
  j.fault_sent = r.boolean();
  j.fault_code = r.status();
  j.fault_suspect = r.u64();
  j.in_barrier = r.boolean();
  j.has_revision = r.boolean();
  j.revision = r.u64();
  j.state_digest = r.u64();
  // Every count is checked against its limit and the bytes left before anything is allocated.
  r.peer_ids(&j.members);
  j.next_seq.resize(r.count(limits::kTagsPerEpochMax, 16));
  for (TagSeq& t : j.next_seq) {
    t.tag = r.u64();
    t.next_seq = r.u64();
  }
  j.ops.resize(r.count(limits::kOpsInFlightMax, 33));
  for (RejoinOp& op : j.ops) {
    op.tag = r.u64();
    op.seq = r.u64();
    std::uint8_t state = r.u8();
    if (state > 2) r.fail();
    op.state = static_cast<RejoinOpState>(state > 2 ? 0 : state);
    op.revision = r.u64();
    op.digest = r.u64();
  }
  j.last_epoch = r.u64();
  r.peer_ids(&j.last_ring);
  j.seen_epoch = r.u64();
  if (j.seen_epoch < j.epoch || j.seen_epoch < j.last_epoch) r.fail();
  if (j.epoch == 0 && (j.committed || !j.members.empty())) r.fail();
  if ((j.last_epoch == 0) != j.last_ring.empty()) r.fail();
}
void Put(Writer& w, const Welcome& m) {
  w.u64(m.peer_id);
  w.u32(m.heartbeat_interval_ms);
  w.u32(m.heartbeat_timeout_ms);
}
void Get(Reader& r, Welcome& m) {
  m.peer_id = r.u64();
  m.heartbeat_interval_ms = r.u32();
  m.heartbeat_timeout_ms = r.u32();
  if (m.peer_id == 0) r.fail();
}
void Put(Writer& w, const Reject& m) {
  w.status(m.code);
  w.str(m.reason, limits::kDetailBytesMax);
}
void Get(Reader& r, Reject& m) {
  m.code = r.status();
  m.reason = r.str(limits::kDetailBytesMax);
}
void Put(Writer&, const Heartbeat&) {}
void Get(Reader&, Heartbeat&) {}
void Put(Writer& w, const UpdateTopology& m) { w.u64(m.epoch); }
void Get(Reader& r, UpdateTopology& m) { m.epoch = r.u64(); }
void Put(Writer& w, const TopologyUnchanged& m) { w.u64(m.epoch); }
void Get(Reader& r, TopologyUnchanged& m) { m.epoch = r.u64(); }
void Put(Writer& w, const EpochPropose& m) {
  w.u64(m.epoch);
  w.u32(m.streams_per_link);
  w.u32(m.segment_bytes);
  w.u32(static_cast<std::uint32_t>(m.members.size()));
  for (const Member& x : m.members) {
    w.u64(x.peer_id);
    w.u16(x.port);
    w.str(x.host, limits::kHostBytesMax);
  }
}
void Get(Reader& r, EpochPropose& m) {
  m.epoch = r.u64();
  m.streams_per_link = r.u32();
  m.segment_bytes = r.u32();
  std::uint32_t n = r.u32();
  if (!r.ok() || n == 0 || n > limits::kMembersMax || m.streams_per_link == 0 ||
      m.streams_per_link > limits::kStreamsPerLinkMax ||
      m.segment_bytes < limits::kSegmentBytesMin || m.segment_bytes > limits::kSegmentBytesMax ||
      r.remaining() < std::size_t{n} * 12) {  // 12 = the fixed part of a member entry
    r.fail();
    return;
  }
  m.members.resize(n);
  for (Member& x : m.members) {
    x.peer_id = r.u64();
    x.port = r.u16();
    x.host = r.str(limits::kHostBytesMax);
    if (x.peer_id == 0) r.fail();
  }
}
void Put(Writer& w, const EpochReady& m) {
  w.u64(m.epoch);
  w.u8(m.ok ? 1 : 0);
  w.u64(m.suspect);
  w.status(m.code);
}
void Get(Reader& r, EpochReady& m) {
  m.epoch = r.u64();
  m.ok = r.boolean();
  m.suspect = r.u64();
  m.code = r.status();
}
void Put(Writer& w, const EpochCommit& m) { w.u64(m.epoch); }
void Get(Reader& r, EpochCommit& m) { m.epoch = r.u64(); }
void Put(Writer& w, const OpResult& m) {
  w.u64(m.epoch);
  w.u64(m.tag);
  w.u64(m.seq);
}
void Get(Reader& r, OpResult& m) {
  m.epoch = r.u64();
  m.tag = r.u64();
  m.seq = r.u64();
}
void Put(Writer& w, const OpCommit& m) {
  w.u64(m.epoch);
  w.u64(m.tag);
  w.u64(m.seq);
}
void Get(Reader& r, OpCommit& m) {
  m.epoch = r.u64();
  m.tag = r.u64();
  m.seq = r.u64();
}
void Put(Writer& w, const EpochFault& m) {
  w.u64(m.epoch);
  w.u64(m.suspect);
  w.status(m.code);
  w.u64(m.tag);
  w.u64(m.seq);
  w.str(m.detail, limits::kDetailBytesMax);
}
void Get(Reader& r, EpochFault& m) {
  m.epoch = r.u64();
  m.suspect = r.u64();
  m.code = r.status();
  m.tag = r.u64();
  m.seq = r.u64();
  m.detail = r.str(limits::kDetailBytesMax);
}
void Put(Writer& w, const EpochAbort& m) {
  w.u64(m.epoch);
  w.status(m.code);
  w.u64(m.lost_peer);
}
void Get(Reader& r, EpochAbort& m) {
  m.epoch = r.u64();
  m.code = r.status();
  m.lost_peer = r.u64();
}
void Put(Writer&, const Leave&) {}
void Get(Reader&, Leave&) {}
void Put(Writer& w, const Removed& m) {
  w.status(m.code);
  w.str(m.reason, limits::kDetailBytesMax);
}
void Get(Reader& r, Removed& m) {
  m.code = r.status();
  m.reason = r.str(limits::kDetailBytesMax);
}
void Put(Writer& w, const Error& m) {
  w.status(m.code);
  w.str(m.reason, limits::kDetailBytesMax);
}
void Get(Reader& r, Error& m) {
  m.code = r.status();
  m.reason = r.str(limits::kDetailBytesMax);
}
template <std::size_t N>
void PutBytes(Writer& w, const std::array<std::uint8_t, N>& a) {
  for (std::uint8_t b : a) w.u8(b);
}
template <std::size_t N>
void GetBytes(Reader& r, std::array<std::uint8_t, N>* a) {
  for (std::uint8_t& b : *a) b = r.u8();
}
void Put(Writer& w, const AuthHello& m) { PutBytes(w, m.nonce); }
void Get(Reader& r, AuthHello& m) { GetBytes(r, &m.nonce); }
void Put(Writer& w, const AuthChallenge& m) {
  PutBytes(w, m.nonce);
  PutBytes(w, m.proof);
}
void Get(Reader& r, AuthChallenge& m) {
  GetBytes(r, &m.nonce);
  GetBytes(r, &m.proof);
}
void Put(Writer& w, const AuthProof& m) { PutBytes(w, m.proof); }
void Get(Reader& r, AuthProof& m) { GetBytes(r, &m.proof); }
void Put(Writer& w, const DataHello& m) {
  w.u64(m.epoch);
  w.u64(m.from);
  w.u64(m.to);
  w.u16(m.stream_index);
  w.u16(m.stream_count);
  w.u8(static_cast<std::uint8_t>(m.kind));
}
void Get(Reader& r, DataHello& m) {
  m.epoch = r.u64();
  m.from = r.u64();
  m.to = r.u64();
  m.stream_index = r.u16();
  m.stream_count = r.u16();
  std::uint8_t kind = r.u8();
  m.kind = kind == 1 ? StreamKind::kTransfer : StreamKind::kRing;
  if (kind > 1 || m.stream_count == 0 || m.stream_count > limits::kStreamsPerLinkMax ||
      m.stream_index >= m.stream_count || m.from == 0 || m.to == 0) {
    r.fail();
  }
}
void Put(Writer& w, const SyncReport& m) {
  w.u64(m.epoch);
  w.u64(m.seq);
  w.u64(m.revision);
  w.u32(static_cast<std::uint32_t>(m.tensors.size()));
  for (const TensorReport& t : m.tensors) {
    w.str(t.name, limits::kTensorNameBytesMax);
    w.u8(static_cast<std::uint8_t>(t.dtype));
    w.u8(t.allow_divergence ? 1 : 0);
    w.u64(t.count);
    w.u64(t.hash);
  }
}
void Get(Reader& r, SyncReport& m) {
  m.epoch = r.u64();
  m.seq = r.u64();
  m.revision = r.u64();
  std::uint32_t n = r.u32();
  // 20 = the fixed part of a tensor entry (name length, dtype, flags, count, hash).
  if (!r.ok() || n > limits::kSharedTensorsMax || r.remaining() < std::size_t{n} * 20) {
    r.fail();
    return;
  }
  m.tensors.resize(n);
  for (TensorReport& t : m.tensors) {
    t.name = r.str(limits::kTensorNameBytesMax);
    std::uint8_t dtype = r.u8();
    t.allow_divergence = r.boolean();
    t.count = r.u64();
    t.hash = r.u64();
    // A tensor is at most kCollectiveBytesMax bytes, like a piece of it.
    if (!IsValidDtype(dtype) ||
        t.count > limits::kCollectiveBytesMax / DtypeBytes(static_cast<shoal_dtype>(dtype))) {
      r.fail();
      return;
    }
    t.dtype = static_cast<shoal_dtype>(dtype);
  }
}
void PutPieces(Writer& w, const std::vector<TransferPiece>& pieces) {
  w.u32(static_cast<std::uint32_t>(pieces.size()));
  for (const TransferPiece& p : pieces) {
    w.u64(p.peer);
    w.u32(p.tensor);
    w.u64(p.offset);
    w.u64(p.bytes);
  }
}
void GetPieces(Reader& r, std::vector<TransferPiece>* pieces) {
  std::uint32_t n = r.u32();
  if (!r.ok() || n > limits::kSyncPiecesMax || r.remaining() < std::size_t{n} * limits::kPieceBytes) {
    r.fail();
    return;
  }
  pieces->resize(n);
  for (TransferPiece& p : *pieces) {
    p.peer = r.u64();
    p.tensor = r.u32();
    p.offset = r.u64();
    p.bytes = r.u64();
    if (p.peer == 0 || p.tensor >= limits::kSharedTensorsMax || p.bytes == 0 ||
        p.offset > limits::kCollectiveBytesMax ||
        p.bytes > limits::kCollectiveBytesMax - p.offset) {  // the piece ends inside 1 TiB
      r.fail();
      return;
    }
  }
}
void Put(Writer& w, const SyncPlan& m) {
  w.u64(m.epoch);
  w.u64(m.seq);
  w.status(m.code);
  w.str(m.reason, limits::kDetailBytesMax);
  w.u64(m.revision);
  w.u32(static_cast<std::uint32_t>(m.expect.size()));
  for (const ExpectedHash& e : m.expect) {
    w.u32(e.tensor);
    w.u64(e.hash);
  }
  PutPieces(w, m.recvs);
  PutPieces(w, m.sends);
}
void Get(Reader& r, SyncPlan& m) {
  m.epoch = r.u64();
  m.seq = r.u64();
  m.code = r.status();
  m.reason = r.str(limits::kDetailBytesMax);
  m.revision = r.u64();
  std::uint32_t n = r.u32();
  if (!r.ok() || n > limits::kSharedTensorsMax || r.remaining() < std::size_t{n} * 12) {
    r.fail();
    return;
  }
  m.expect.resize(n);
  for (ExpectedHash& e : m.expect) {
    e.tensor = r.u32();
    e.hash = r.u64();
    if (e.tensor >= limits::kSharedTensorsMax) r.fail();
  }
  GetPieces(r, &m.recvs);
  GetPieces(r, &m.sends);
  if (m.recvs.size() + m.sends.size() > limits::kSyncPiecesMax) r.fail();
}

template <typename T>
constexpr MsgType TypeFor() {
  if constexpr (std::is_same_v<T, Hello>) return MsgType::kHello;
  if constexpr (std::is_same_v<T, Welcome>) return MsgType::kWelcome;
  if constexpr (std::is_same_v<T, Reject>) return MsgType::kReject;
  if constexpr (std::is_same_v<T, Heartbeat>) return MsgType::kHeartbeat;
  if constexpr (std::is_same_v<T, UpdateTopology>) return MsgType::kUpdateTopology;
  if constexpr (std::is_same_v<T, TopologyUnchanged>) return MsgType::kTopologyUnchanged;
  if constexpr (std::is_same_v<T, EpochPropose>) return MsgType::kEpochPropose;
  if constexpr (std::is_same_v<T, EpochReady>) return MsgType::kEpochReady;
  if constexpr (std::is_same_v<T, EpochCommit>) return MsgType::kEpochCommit;
  if constexpr (std::is_same_v<T, OpResult>) return MsgType::kOpResult;
  if constexpr (std::is_same_v<T, OpCommit>) return MsgType::kOpCommit;
  if constexpr (std::is_same_v<T, EpochFault>) return MsgType::kEpochFault;
  if constexpr (std::is_same_v<T, EpochAbort>) return MsgType::kEpochAbort;
  if constexpr (std::is_same_v<T, Leave>) return MsgType::kLeave;
  if constexpr (std::is_same_v<T, Removed>) return MsgType::kRemoved;
  if constexpr (std::is_same_v<T, Error>) return MsgType::kError;
  if constexpr (std::is_same_v<T, DataHello>) return MsgType::kDataHello;
  if constexpr (std::is_same_v<T, SyncReport>) return MsgType::kSyncReport;
  if constexpr (std::is_same_v<T, SyncPlan>) return MsgType::kSyncPlan;
  if constexpr (std::is_same_v<T, AuthHello>) return MsgType::kAuthHello;
  if constexpr (std::is_same_v<T, AuthChallenge>) return MsgType::kAuthChallenge;
  if constexpr (std::is_same_v<T, AuthProof>) return MsgType::kAuthProof;
}

template <typename T>
Status DecodeAs(const std::uint8_t* p, std::size_t n, Message* out) {
  Reader r(p, n);
  T m;
  Get(r, m);
  if (!r.done()) {
    return Status(SHOAL_ERR_PROTOCOL, std::string("malformed ") + MsgTypeName(TypeFor<T>()) +
                                          " payload (" + std::to_string(n) + " bytes)");
  }
  *out = std::move(m);
  return Status::Ok();
}

void PutU32At(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
void PutU16At(std::uint8_t* p, std::uint16_t v) {
  p[0] = static_cast<std::uint8_t>(v);
  p[1] = static_cast<std::uint8_t>(v >> 8);
}
void PutU64At(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
std::uint64_t GetU64At(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= std::uint64_t{p[i]} << (8 * i);
  return v;
}
std::uint32_t GetU32At(const std::uint8_t* p) {
  return std::uint32_t{p[0]} | std::uint32_t{p[1]} << 8 | std::uint32_t{p[2]} << 16 |
         std::uint32_t{p[3]} << 24;
}

}  // namespace

MsgType TypeOf(const Message& m) {
  return std::visit([](const auto& x) { return TypeFor<std::decay_t<decltype(x)>>(); }, m);
}

const char* MsgTypeName(MsgType t) {
  switch (t) {
    case MsgType::kHello: return "Hello";
    case MsgType::kWelcome: return "Welcome";
    case MsgType::kReject: return "Reject";
    case MsgType::kHeartbeat: return "Heartbeat";
    case MsgType::kUpdateTopology: return "UpdateTopology";
    case MsgType::kTopologyUnchanged: return "TopologyUnchanged";
    case MsgType::kEpochPropose: return "EpochPropose";
    case MsgType::kEpochReady: return "EpochReady";
    case MsgType::kEpochCommit: return "EpochCommit";
    case MsgType::kOpResult: return "OpResult";
    case MsgType::kOpCommit: return "OpCommit";
    case MsgType::kEpochFault: return "EpochFault";
    case MsgType::kEpochAbort: return "EpochAbort";
    case MsgType::kLeave: return "Leave";
    case MsgType::kRemoved: return "Removed";
    case MsgType::kError: return "Error";
    case MsgType::kDataHello: return "DataHello";
    case MsgType::kDataSegment: return "DataSegment";
    case MsgType::kSyncReport: return "SyncReport";
    case MsgType::kSyncPlan: return "SyncPlan";
    case MsgType::kAuthHello: return "AuthHello";
    case MsgType::kAuthChallenge: return "AuthChallenge";
    case MsgType::kAuthProof: return "AuthProof";
  }
  return "unknown";
}

Status DecodeHeader(const std::uint8_t* b, std::uint32_t payload_bytes_max, FrameHeader* out) {
  std::uint32_t magic = GetU32At(b);
  if (magic != kMagic) return Status(SHOAL_ERR_PROTOCOL, "bad magic: not a shoal frame");
  std::uint16_t version = static_cast<std::uint16_t>(b[4] | b[5] << 8);
  if (version != kProtocolVersion) {
    return Status(SHOAL_ERR_PROTOCOL, "protocol version " + std::to_string(version) +
                                          " not supported (this side speaks " +
                                          std::to_string(kProtocolVersion) + ")");
  }
  std::uint16_t type = static_cast<std::uint16_t>(b[6] | b[7] << 8);
  if (!IsKnownType(type)) {
    return Status(SHOAL_ERR_PROTOCOL, "unknown message type " + std::to_string(type));
  }
  std::uint32_t len = GetU32At(b + 8);
  std::uint32_t max = payload_bytes_max;
  if (type != static_cast<std::uint16_t>(MsgType::kDataSegment)) {
    bool sync = type == static_cast<std::uint16_t>(MsgType::kSyncReport) ||
                type == static_cast<std::uint16_t>(MsgType::kSyncPlan);
    std::uint32_t type_max = sync ? limits::kSyncPayloadBytesMax : limits::kControlPayloadBytesMax;
    if (max > type_max) max = type_max;
  }
  if (len > max) {
    return Status(SHOAL_ERR_PROTOCOL, std::string(MsgTypeName(static_cast<MsgType>(type))) +
                                          " of " + std::to_string(len) +
                                          " bytes exceeds the limit of " + std::to_string(max));
  }
  // A segment's payload starts with its segment header; callers read it without checking again.
  if (type == static_cast<std::uint16_t>(MsgType::kDataSegment) && len < kSegmentHeaderBytes) {
    return Status(SHOAL_ERR_PROTOCOL, "DataSegment of " + std::to_string(len) +
                                          " bytes is shorter than its segment header");
  }
  out->type = static_cast<MsgType>(type);
  out->payload_bytes = len;
  return Status::Ok();
}

Status DecodePayload(MsgType type, const std::uint8_t* p, std::size_t n, Message* out) {
  switch (type) {
    case MsgType::kHello: return DecodeAs<Hello>(p, n, out);
    case MsgType::kWelcome: return DecodeAs<Welcome>(p, n, out);
    case MsgType::kReject: return DecodeAs<Reject>(p, n, out);
    case MsgType::kHeartbeat: return DecodeAs<Heartbeat>(p, n, out);
    case MsgType::kUpdateTopology: return DecodeAs<UpdateTopology>(p, n, out);
    case MsgType::kTopologyUnchanged: return DecodeAs<TopologyUnchanged>(p, n, out);
    case MsgType::kEpochPropose: return DecodeAs<EpochPropose>(p, n, out);
    case MsgType::kEpochReady: return DecodeAs<EpochReady>(p, n, out);
    case MsgType::kEpochCommit: return DecodeAs<EpochCommit>(p, n, out);
    case MsgType::kOpResult: return DecodeAs<OpResult>(p, n, out);
    case MsgType::kOpCommit: return DecodeAs<OpCommit>(p, n, out);
    case MsgType::kEpochFault: return DecodeAs<EpochFault>(p, n, out);
    case MsgType::kEpochAbort: return DecodeAs<EpochAbort>(p, n, out);
    case MsgType::kLeave: return DecodeAs<Leave>(p, n, out);
    case MsgType::kRemoved: return DecodeAs<Removed>(p, n, out);
    case MsgType::kError: return DecodeAs<Error>(p, n, out);
    case MsgType::kDataHello: return DecodeAs<DataHello>(p, n, out);
    case MsgType::kSyncReport: return DecodeAs<SyncReport>(p, n, out);
    case MsgType::kSyncPlan: return DecodeAs<SyncPlan>(p, n, out);
    case MsgType::kAuthHello: return DecodeAs<AuthHello>(p, n, out);
    case MsgType::kAuthChallenge: return DecodeAs<AuthChallenge>(p, n, out);
    case MsgType::kAuthProof: return DecodeAs<AuthProof>(p, n, out);
    case MsgType::kDataSegment: break;
  }
  return Status(SHOAL_ERR_PROTOCOL,
                std::string(MsgTypeName(type)) + " is not a control message");
}

Status DecodeFrame(const std::uint8_t* bytes, std::size_t size, Message* out) {
  if (size < kHeaderBytes) return Status(SHOAL_ERR_PROTOCOL, "truncated frame header");
  FrameHeader h;
  Status s = DecodeHeader(bytes, limits::kSyncPayloadBytesMax, &h);
  if (!s.ok()) return s;
  if (size - kHeaderBytes != h.payload_bytes) {
    return Status(SHOAL_ERR_PROTOCOL, "frame length " + std::to_string(size - kHeaderBytes) +
                                          " does not match header length " +
                                          std::to_string(h.payload_bytes));
  }
  return DecodePayload(h.type, bytes + kHeaderBytes, h.payload_bytes, out);
}

void Encode(const Message& message, std::vector<std::uint8_t>* out) {
  std::size_t start = out->size();
  out->resize(start + kHeaderBytes);
  Writer w(out);
  std::visit([&](const auto& m) { Put(w, m); }, message);
  std::uint8_t* h = out->data() + start;
  PutU32At(h, kMagic);
  PutU16At(h + 4, kProtocolVersion);
  PutU16At(h + 6, static_cast<std::uint16_t>(TypeOf(message)));
  PutU32At(h + 8, static_cast<std::uint32_t>(out->size() - start - kHeaderBytes));
}

void EncodeSegmentHead(const SegmentHeader& s, std::uint32_t segment_bytes, std::uint8_t* out) {
  PutU32At(out, kMagic);
  PutU16At(out + 4, kProtocolVersion);
  PutU16At(out + 6, static_cast<std::uint16_t>(MsgType::kDataSegment));
  PutU32At(out + 8, static_cast<std::uint32_t>(kSegmentHeaderBytes) + segment_bytes);
  PutU64At(out + 12, s.tag);
  PutU64At(out + 20, s.seq);
  PutU32At(out + 28, s.unit);
  PutU32At(out + 32, s.desc);
}

SegmentHeader DecodeSegmentHeader(const std::uint8_t* b) {
  SegmentHeader s;
  s.tag = GetU64At(b);
  s.seq = GetU64At(b + 8);
  s.unit = GetU32At(b + 16);
  s.desc = GetU32At(b + 20);
  return s;
}

}  // namespace shoal::net
