// Transfer over real TCP sockets on 127.0.0.1, every peer in one process on one io_context:
// exact delivery for K = 1, 2, 4 and many frames per piece, several senders into one tensor, both
// directions in one transfer, the wire format, hash mismatches, lost peers, crafted bad frames,
// Stop() mid-transfer, and back-to-back transfers on the same sockets.
#include "shoal/collective/transfer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <tuple>

#include "shoal/common/hash.h"

namespace shoal::collective {
namespace {

using asio::ip::tcp;
using SocketPtr = std::shared_ptr<net::Stream>;
using Bytes = std::vector<std::uint8_t>;

constexpr std::size_t kHead = net::kHeaderBytes + net::kSegmentHeaderBytes;

struct Net {
  asio::io_context io;
  tcp::acceptor acceptor{io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)};

  // K connected streams: the sending ends and the receiving ends.
  struct Pair {
    std::vector<SocketPtr> out;
    std::vector<SocketPtr> in;
  };
  // The sending ends belong to `out_io` (default: io).
  Pair Connect(std::uint32_t k, asio::io_context* out_io = nullptr) {
    Pair p;
    for (std::uint32_t i = 0; i < k; i++) {
      tcp::socket c(out_io != nullptr ? *out_io : io);
      c.connect(acceptor.local_endpoint());
      c.set_option(tcp::no_delay(true));
      p.out.push_back(std::make_shared<net::Stream>(std::move(c)));
      p.in.push_back(std::make_shared<net::Stream>(acceptor.accept()));
    }
    return p;
  }
  // Runs handlers one at a time until `pred` holds or `limit` passes.
  template <typename Pred>
  bool RunUntil(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(30)) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      if (io.stopped()) io.restart();
      io.run_one_for(std::chrono::milliseconds(5));
    }
    return true;
  }
  void RunFor(std::chrono::milliseconds d) {
    io.restart();
    io.run_for(d);
  }
};

struct Outcome {
  int dones = 0;
  int faults = 0;
  Status fault;
  bool done() const { return dones > 0; }
  bool failed() const { return faults > 0; }
};

std::shared_ptr<Transfer> Make(Transfer::Params p, Outcome* o) {
  Transfer::Callbacks cb;
  cb.on_done = [o] { o->dones++; };
  cb.on_fault = [o](const Status& s) {
    o->faults++;
    o->fault = s;
  };
  return std::make_shared<Transfer>(std::move(p), std::move(cb));
}

Bytes Random(std::size_t n, std::mt19937_64& rng) {
  Bytes v(n);
  for (auto& b : v) b = static_cast<std::uint8_t>(rng());
  return v;
}

// A set of tensors in one allocation, each followed by a guard region that must stay untouched.
struct Tensors {
  static constexpr std::size_t kGuard = 256;
  static constexpr std::uint8_t kGuardByte = 0xCD;
  Bytes mem;
  std::vector<std::size_t> start;
  std::vector<std::size_t> size;

  Tensors(const std::vector<std::size_t>& sizes, std::uint8_t fill) : size(sizes) {
    std::size_t total = 0;
    for (std::size_t s : sizes) {
      start.push_back(total);
      total += s + kGuard;
    }
    mem.assign(total, kGuardByte);
    for (std::size_t i = 0; i < sizes.size(); i++) {
      std::memset(mem.data() + start[i], fill, sizes[i]);
    }
  }
  Tensors(const std::vector<std::size_t>& sizes, std::mt19937_64& rng) : Tensors(sizes, 0) {
    for (std::size_t i = 0; i < sizes.size(); i++) {
      Bytes r = Random(sizes[i], rng);
      std::memcpy(mem.data() + start[i], r.data(), r.size());
    }
  }
  std::uint8_t* data(std::size_t i) { return mem.data() + start[i]; }
  std::vector<TensorRegion> Regions() {
    std::vector<TensorRegion> r;
    for (std::size_t i = 0; i < size.size(); i++) r.push_back({data(i), size[i]});
    return r;
  }
  bool GuardsIntact() const {
    for (std::size_t i = 0; i < size.size(); i++) {
      for (std::size_t j = 0; j < kGuard; j++) {
        if (mem[start[i] + size[i] + j] != kGuardByte) return false;
      }
    }
    return true;
  }
};

// What `dst` should hold once `pieces` came from `src`, and the matching expected hashes.
void Apply(const std::vector<Piece>& pieces, Tensors& src, Tensors& want) {
  for (const Piece& p : pieces) {
    std::memcpy(want.data(p.tensor) + p.offset, src.data(p.tensor) + p.offset, p.bytes);
  }
}
std::map<std::uint32_t, std::uint64_t> HashesOf(Tensors& want,
                                                const std::map<PeerId, std::vector<Piece>>& recvs) {
  std::map<std::uint32_t, std::uint64_t> h;
  for (const auto& [peer, pieces] : recvs) {
    for (const Piece& p : pieces)
      h[p.tensor] = ContentHash(want.data(p.tensor), want.size[p.tensor]);
  }
  return h;
}
std::uint64_t Sum(const std::vector<Piece>& pieces) {
  std::uint64_t s = 0;
  for (const Piece& p : pieces) s += p.bytes;
  return s;
}

TEST(PiecesDescriptor, DependsOnEveryFieldAndTheOrder) {
  std::vector<Piece> a{{0, 0, 100}, {1, 5, 7}};
  std::uint32_t d = PiecesDescriptor(a);
  EXPECT_EQ(d, PiecesDescriptor(a));
  EXPECT_NE(d, PiecesDescriptor({{1, 5, 7}, {0, 0, 100}}));
  EXPECT_NE(d, PiecesDescriptor({{0, 0, 100}, {2, 5, 7}}));
  EXPECT_NE(d, PiecesDescriptor({{0, 0, 100}, {1, 6, 7}}));
  EXPECT_NE(d, PiecesDescriptor({{0, 0, 100}, {1, 5, 8}}));
  EXPECT_NE(d, PiecesDescriptor({{0, 0, 100}}));
}

// One sender, one receiver: pieces in plan order (not tensor order) that span many 4 KiB frames,
// end mid-frame, are one byte long, or cover part of a tensor.
TEST(Transfer, OneSenderManyFramesExact) {
  for (std::uint32_t k : {1u, 2u, 4u}) {
    SCOPED_TRACE(::testing::Message() << "K=" << k);
    std::mt19937_64 rng(k);
    Net net;
    const std::vector<std::size_t> sizes{50000, 4096 * 5, 1, 30000};
    Tensors src(sizes, rng), dst(sizes, 0xAB), want(sizes, 0xAB);
    std::vector<Piece> pieces{{1, 0, 20480},     {0, 0, 12345},  {2, 0, 1},
                              {0, 12345, 37655}, {3, 100, 5000}, {3, 5100, 4096}};
    Apply(pieces, src, want);
    const PeerId s_id = 101, r_id = 202;

    Transfer::Params sp;
    sp.tag = 9;
    sp.seq = 3;
    sp.segment_bytes_max = 4096;
    sp.tensors = src.Regions();
    sp.sends[r_id] = pieces;
    Transfer::Params rp;
    rp.tag = 9;
    rp.seq = 3;
    rp.segment_bytes_max = 4096;
    rp.tensors = dst.Regions();
    rp.recvs[s_id] = pieces;
    rp.expected_hashes = HashesOf(want, rp.recvs);

    Outcome so, ro;
    auto sender = Make(sp, &so);
    auto receiver = Make(rp, &ro);
    sender->Start();
    receiver->Start();
    EXPECT_FALSE(so.done());
    EXPECT_EQ(receiver->Suspect(), s_id);
    EXPECT_EQ(sender->Suspect(), r_id);
    auto link = net.Connect(k);
    receiver->AddIncoming(s_id, link.in);
    sender->AddOutgoing(r_id, link.out);
    ASSERT_TRUE(
        net.RunUntil([&] { return (so.done() && ro.done()) || so.failed() || ro.failed(); }));
    EXPECT_FALSE(so.failed()) << so.fault.ToString();
    EXPECT_FALSE(ro.failed()) << ro.fault.ToString();
    EXPECT_TRUE(dst.mem == want.mem);
    EXPECT_TRUE(dst.GuardsIntact());
    EXPECT_EQ(receiver->received_bytes().at(s_id), Sum(pieces));
    EXPECT_EQ(sender->sent_bytes(), Sum(pieces));
    EXPECT_TRUE(sender->done());
    EXPECT_TRUE(receiver->done());
    EXPECT_EQ(receiver->Suspect(), 0u);
    EXPECT_EQ(sender->Suspect(), 0u);
    net.RunFor(std::chrono::milliseconds(10));
    EXPECT_EQ(so.dones, 1);
    EXPECT_EQ(ro.dones, 1);
    for (auto& s : link.in) EXPECT_TRUE(s->is_open());  // never closed by the transfer
    for (auto& s : link.out) EXPECT_TRUE(s->is_open());
  }
}

// Pieces of 0 bytes (which a sane plan does not hold, but a plan from the wire might) carry no
// frames and do not upset the numbering of the others; a link with only such pieces has nothing
// to do.
TEST(Transfer, EmptyPiecesHaveNoFrames) {
  std::mt19937_64 rng(29);
  Net net;
  const std::vector<std::size_t> sizes{8000, 100};
  Tensors src(sizes, rng), dst(sizes, 0), want(sizes, 0);
  const std::vector<Piece> from_a{{0, 5000, 3000}, {1, 0, 0}, {0, 5000, 0}, {0, 0, 5000}};
  const std::vector<Piece> from_b{{1, 10, 0}};
  Apply(from_a, src, want);
  const PeerId a = 1, b = 2, r = 3;
  Transfer::Params rp;
  rp.segment_bytes_max = 4096;
  rp.tensors = dst.Regions();
  rp.recvs[a] = from_a;
  rp.recvs[b] = from_b;
  rp.expected_hashes = HashesOf(want, rp.recvs);
  Outcome ro, ao, bo;
  auto receiver = Make(rp, &ro);
  receiver->Start();
  for (auto [peer, list, o] : {std::tuple{a, &from_a, &ao}, std::tuple{b, &from_b, &bo}}) {
    Transfer::Params sp;
    sp.segment_bytes_max = 4096;
    sp.tensors = src.Regions();
    sp.sends[r] = *list;
    auto sender = Make(sp, o);
    sender->Start();
    auto link = net.Connect(2);
    sender->AddOutgoing(r, link.out);
    receiver->AddIncoming(peer, link.in);
  }
  ASSERT_TRUE(net.RunUntil([&] { return ro.done() || ro.failed(); }));
  EXPECT_FALSE(ro.failed()) << ro.fault.ToString();
  EXPECT_TRUE(ao.done());
  EXPECT_TRUE(bo.done());
  EXPECT_TRUE(dst.mem == want.mem);
  EXPECT_EQ(receiver->received_bytes().at(a), 8000u);
  EXPECT_EQ(receiver->received_bytes().at(b), 0u);
}

// The frames on the wire: numbered across pieces, frame f on stream f mod K, never spanning two
// pieces, desc = PiecesDescriptor, and nothing after the last frame.
TEST(Transfer, WireFormat) {
  std::mt19937_64 rng(5);
  Net net;
  Tensors src({20000, 200}, rng);
  std::vector<Piece> pieces{{0, 0, 5000}, {1, 7, 100}, {0, 5000, 8192}};
  Transfer::Params sp;
  sp.tag = 77;
  sp.seq = 12;
  sp.segment_bytes_max = 4096;
  sp.tensors = src.Regions();
  sp.sends[2] = pieces;
  Outcome so;
  auto sender = Make(sp, &so);
  sender->Start();
  auto link = net.Connect(2);
  sender->AddOutgoing(2, link.out);
  ASSERT_TRUE(net.RunUntil([&] { return so.done() || so.failed(); }));
  ASSERT_FALSE(so.failed()) << so.fault.ToString();

  struct Want {
    std::uint32_t unit;
    std::uint32_t tensor;
    std::uint64_t offset;
    std::uint32_t bytes;
  };
  const std::vector<std::vector<Want>> streams{
      {{0, 0, 0, 4096}, {2, 1, 7, 100}, {4, 0, 5000 + 4096, 4096}},
      {{1, 0, 4096, 904}, {3, 0, 5000, 4096}}};
  for (std::size_t k = 0; k < streams.size(); k++) {
    for (const Want& w : streams[k]) {
      SCOPED_TRACE(::testing::Message() << "stream " << k << " unit " << w.unit);
      std::uint8_t head[kHead];
      asio::read(link.in[k]->lowest_layer(), asio::buffer(head));
      net::FrameHeader h;
      ASSERT_TRUE(net::DecodeHeader(head, 1u << 20, &h).ok());
      EXPECT_EQ(h.type, net::MsgType::kDataSegment);
      ASSERT_EQ(h.payload_bytes, net::kSegmentHeaderBytes + w.bytes);
      net::SegmentHeader seg = net::DecodeSegmentHeader(head + net::kHeaderBytes);
      EXPECT_EQ(seg.tag, 77u);
      EXPECT_EQ(seg.seq, 12u);
      EXPECT_EQ(seg.unit, w.unit);
      EXPECT_EQ(seg.desc, PiecesDescriptor(pieces));
      Bytes payload(w.bytes);
      asio::read(link.in[k]->lowest_layer(), asio::buffer(payload));
      EXPECT_EQ(0, std::memcmp(payload.data(), src.data(w.tensor) + w.offset, w.bytes));
    }
    EXPECT_EQ(link.in[k]->lowest_layer().available(), 0u);
  }
}

// One receiver, three senders with K = 1, 2, 3: one tensor cut into interleaved pieces from all
// three, one tensor split between two senders, whole tensors, all in one plan.
TEST(Transfer, ThreeSendersInterleavedExact) {
  std::mt19937_64 rng(11);
  Net net;
  const std::vector<std::size_t> sizes{200000, 9000, 7000, 12289};
  Tensors src(sizes, rng), dst(sizes, 0), want(sizes, 0);
  const PeerId a = 11, b = 22, c = 33, r = 44;
  std::map<PeerId, std::vector<Piece>> lists;
  lists[a].push_back({3, 0, 12289});
  for (std::uint32_t i = 0; i < 20; i++) {
    PeerId from = i % 3 == 0 ? a : i % 3 == 1 ? b : c;
    lists[from].push_back({0, i * 10000u, 10000});
  }
  lists[b].insert(lists[b].begin() + 2, Piece{1, 0, 9000});
  lists[c].push_back({2, 0, 3000});
  lists[a].push_back({2, 3000, 4000});
  for (auto& [peer, pieces] : lists) Apply(pieces, src, want);

  Transfer::Params rp;
  rp.segment_bytes_max = 4096;
  rp.tensors = dst.Regions();
  rp.recvs = lists;
  rp.expected_hashes = HashesOf(want, rp.recvs);
  Outcome ro;
  auto receiver = Make(rp, &ro);
  receiver->Start();
  std::map<PeerId, Outcome> so;
  std::vector<std::shared_ptr<Transfer>> senders;
  std::uint32_t k = 1;
  for (auto& [peer, pieces] : lists) {
    Transfer::Params sp;
    sp.segment_bytes_max = 4096;
    sp.tensors = src.Regions();
    sp.sends[r] = pieces;
    auto s = Make(sp, &so[peer]);
    s->Start();
    auto link = net.Connect(k++);
    s->AddOutgoing(r, link.out);
    receiver->AddIncoming(peer, link.in);
    senders.push_back(s);
  }
  ASSERT_TRUE(net.RunUntil([&] {
    for (auto& [p, o] : so)
      if (!o.done() && !o.failed()) return false;
    return ro.done() || ro.failed();
  }));
  EXPECT_FALSE(ro.failed()) << ro.fault.ToString();
  for (auto& [p, o] : so) EXPECT_FALSE(o.failed()) << o.fault.ToString();
  EXPECT_TRUE(dst.mem == want.mem);
  EXPECT_TRUE(dst.GuardsIntact());
  for (auto& [peer, pieces] : lists) EXPECT_EQ(receiver->received_bytes().at(peer), Sum(pieces));
}

// Two peers that each send one tensor to the other in one transfer, plus a third that only sends.
TEST(Transfer, SendsAndReceivesInOneTransfer) {
  std::mt19937_64 rng(3);
  Net net;
  const std::vector<std::size_t> sizes{100000, 77777, 5000};
  Tensors p_mem(sizes, rng), q_mem(sizes, rng), third(sizes, rng);
  // P holds the elected tensor 0 and 2, Q tensor 1; each ends with all three.
  std::memcpy(third.data(2), p_mem.data(2), sizes[2]);
  Tensors p_want(sizes, 0), q_want(sizes, 0);
  p_want.mem = p_mem.mem;
  q_want.mem = q_mem.mem;
  std::vector<Piece> p_to_q{{0, 0, 100000}, {2, 0, 2000}};
  std::vector<Piece> t_to_q{{2, 2000, 3000}};
  std::vector<Piece> q_to_p{{1, 0, 77777}};
  Apply(p_to_q, p_mem, q_want);
  Apply(t_to_q, third, q_want);
  Apply(q_to_p, q_mem, p_want);
  const PeerId p = 1, q = 2, t = 3;

  Transfer::Params pp;
  pp.segment_bytes_max = 4096;
  pp.tensors = p_mem.Regions();
  pp.sends[q] = p_to_q;
  pp.recvs[q] = q_to_p;
  pp.expected_hashes = HashesOf(p_want, pp.recvs);
  Transfer::Params qp;
  qp.segment_bytes_max = 4096;
  qp.tensors = q_mem.Regions();
  qp.sends[p] = q_to_p;
  qp.recvs[p] = p_to_q;
  qp.recvs[t] = t_to_q;
  qp.expected_hashes = HashesOf(q_want, qp.recvs);
  Transfer::Params tp;
  tp.segment_bytes_max = 4096;
  tp.tensors = third.Regions();
  tp.sends[q] = t_to_q;

  Outcome po, qo, to;
  auto pt = Make(pp, &po), qt = Make(qp, &qo), tt = Make(tp, &to);
  for (auto& x : {pt, qt, tt}) x->Start();
  auto pq = net.Connect(2), qpl = net.Connect(2), tq = net.Connect(1);
  pt->AddOutgoing(q, pq.out);
  qt->AddIncoming(p, pq.in);
  qt->AddOutgoing(p, qpl.out);
  pt->AddIncoming(q, qpl.in);
  tt->AddOutgoing(q, tq.out);
  qt->AddIncoming(t, tq.in);
  ASSERT_TRUE(net.RunUntil([&] {
    for (Outcome* o : {&po, &qo, &to})
      if (!o->done() && !o->failed()) return false;
    return true;
  }));
  for (Outcome* o : {&po, &qo, &to}) EXPECT_FALSE(o->failed()) << o->fault.ToString();
  EXPECT_TRUE(p_mem.mem == p_want.mem);
  EXPECT_TRUE(q_mem.mem == q_want.mem);
  EXPECT_EQ(pt->sent_bytes(), Sum(p_to_q));
  EXPECT_EQ(qt->sent_bytes(), Sum(q_to_p));
  EXPECT_EQ(qt->received_bytes().at(t), 3000u);
}

TEST(Transfer, NothingToDoFinishesInStart) {
  Outcome o;
  auto t = Make(Transfer::Params{}, &o);
  EXPECT_FALSE(t->done());
  t->Start();
  EXPECT_EQ(o.dones, 1);
  EXPECT_TRUE(t->done());
  EXPECT_EQ(t->Suspect(), 0u);
  t->Stop(Status(SHOAL_ERR_TIMEOUT, "late"));  // after on_done: no fault
  EXPECT_EQ(o.faults, 0);
}

// The received bytes do not hash to the plan's value: INTEGRITY, naming the sender of the tensor's
// lowest piece (here not the sender that comes first in id order).
TEST(Transfer, HashMismatchNamesSenderOfFirstPiece) {
  std::mt19937_64 rng(17);
  Net net;
  const std::vector<std::size_t> sizes{10000, 3000};
  Tensors src(sizes, rng), dst(sizes, 0), want(sizes, 0);
  const PeerId a = 10, b = 20, r = 30;
  std::map<PeerId, std::vector<Piece>> lists;
  lists[a] = {{0, 5000, 5000}, {1, 0, 3000}};
  lists[b] = {{0, 0, 5000}};
  for (auto& [peer, pieces] : lists) Apply(pieces, src, want);
  Transfer::Params rp;
  rp.segment_bytes_max = 4096;
  rp.tensors = dst.Regions();
  rp.recvs = lists;
  rp.expected_hashes = HashesOf(want, rp.recvs);
  rp.expected_hashes[0] ^= 1;
  Outcome ro;
  auto receiver = Make(rp, &ro);
  receiver->Start();
  std::map<PeerId, Outcome> so;
  std::vector<std::shared_ptr<Transfer>> senders;
  for (auto& [peer, pieces] : lists) {
    Transfer::Params sp;
    sp.segment_bytes_max = 4096;
    sp.tensors = src.Regions();
    sp.sends[r] = pieces;
    auto s = Make(sp, &so[peer]);
    s->Start();
    auto link = net.Connect(2);
    s->AddOutgoing(r, link.out);
    receiver->AddIncoming(peer, link.in);
    senders.push_back(s);
  }
  ASSERT_TRUE(net.RunUntil([&] { return ro.done() || ro.failed(); }));
  net.RunFor(std::chrono::milliseconds(20));
  ASSERT_EQ(ro.faults, 1);
  EXPECT_EQ(ro.dones, 0);
  EXPECT_EQ(ro.fault.code(), SHOAL_ERR_INTEGRITY) << ro.fault.ToString();
  EXPECT_EQ(ro.fault.peer(), b);
  EXPECT_TRUE(receiver->stopped());
  EXPECT_FALSE(receiver->done());
}

// A sender (big transfer) to a receiver, already under way when the test pulls the plug.
struct BigTransfer {
  static constexpr PeerId kSender = 7, kReceiver = 8;
  Net net;
  Bytes src;
  Bytes dst;
  Outcome so, ro;
  std::shared_ptr<Transfer> sender, receiver;
  Net::Pair link;

  explicit BigTransfer(std::size_t bytes, std::uint32_t k, bool with_receiver = true)
      : src(bytes), dst(bytes, 0xAB) {
    for (std::size_t i = 0; i < bytes; i += 8) {
      std::uint64_t v = i * 0x9E3779B97F4A7C15ull;
      std::memcpy(src.data() + i, &v, std::min<std::size_t>(8, bytes - i));
    }
    std::vector<Piece> pieces{{0, 0, bytes}};
    Transfer::Params sp;
    sp.tensors = {{src.data(), bytes}};
    sp.sends[kReceiver] = pieces;
    sender = Make(sp, &so);
    sender->Start();
    link = net.Connect(k);
    if (with_receiver) {
      Transfer::Params rp;
      rp.tensors = {{dst.data(), bytes}};
      rp.recvs[kSender] = pieces;
      rp.expected_hashes[0] = ContentHash(src.data(), bytes);
      receiver = Make(rp, &ro);
      receiver->Start();
      receiver->AddIncoming(kSender, link.in);
    }
    sender->AddOutgoing(kReceiver, link.out);
  }
  std::uint64_t received() const { return receiver->received_bytes().at(kSender); }
};

TEST(Transfer, SenderClosesMidTransfer) {
  BigTransfer t(64 << 20, 2);
  ASSERT_TRUE(t.net.RunUntil([&] { return t.received() > 0; }));
  t.sender->Stop(Status(SHOAL_ERR_CLOSED, "test"));
  for (auto& s : t.link.out) s->lowest_layer().close();
  ASSERT_TRUE(t.net.RunUntil([&] { return t.ro.failed() || t.ro.done(); }));
  EXPECT_EQ(t.ro.fault.code(), SHOAL_ERR_PEER_LOST) << t.ro.fault.ToString();
  EXPECT_EQ(t.ro.fault.peer(), BigTransfer::kSender);
  EXPECT_EQ(t.ro.dones, 0);
  EXPECT_EQ(t.so.fault.code(), SHOAL_ERR_CLOSED);
  EXPECT_LT(t.received(), t.src.size());
  EXPECT_EQ(t.receiver->Suspect(), BigTransfer::kSender);
}

TEST(Transfer, ReceiverClosesMidTransfer) {
  BigTransfer t(64 << 20, 2, /*with_receiver=*/false);
  ASSERT_TRUE(t.net.RunUntil([&] { return t.sender->sent_bytes() > 0; }));
  t.net.RunFor(std::chrono::milliseconds(20));  // until the kernel buffers are full
  for (auto& s : t.link.in) s->lowest_layer().close();  // unread data: the sender gets a reset
  ASSERT_TRUE(t.net.RunUntil([&] { return t.so.failed() || t.so.done(); }));
  EXPECT_EQ(t.so.fault.code(), SHOAL_ERR_PEER_LOST) << t.so.fault.ToString();
  EXPECT_EQ(t.so.fault.peer(), BigTransfer::kReceiver);
  EXPECT_EQ(t.so.dones, 0);
  EXPECT_EQ(t.sender->Suspect(), BigTransfer::kReceiver);
}

// Stop() while frames are in flight: no byte of the receiving tensor changes afterwards, the fault
// is the one given, reported once, and the transfer can be dropped with its handlers still queued.
TEST(Transfer, StopMidTransferTouchesNothingAfterwards) {
  BigTransfer t(64 << 20, 2);
  ASSERT_TRUE(t.net.RunUntil([&] { return t.received() > (1u << 20); }));
  t.receiver->Stop(Status(SHOAL_ERR_TIMEOUT, "deadline", BigTransfer::kSender));
  ASSERT_EQ(t.ro.faults, 1);
  EXPECT_EQ(t.ro.fault.code(), SHOAL_ERR_TIMEOUT);
  EXPECT_EQ(t.ro.fault.peer(), BigTransfer::kSender);
  const Bytes snapshot = t.dst;
  const std::uint64_t received = t.received();
  std::weak_ptr<Transfer> weak = t.receiver;
  auto held = t.receiver;
  t.receiver.reset();
  held.reset();
  t.net.RunFor(std::chrono::milliseconds(200));  // the sender keeps pushing bytes into the sockets
  EXPECT_TRUE(weak.expired());
  EXPECT_TRUE(t.dst == snapshot);
  EXPECT_LT(received, t.src.size());
  EXPECT_EQ(t.ro.faults, 1);
  EXPECT_EQ(t.ro.dones, 0);
  for (auto& s : t.link.in) EXPECT_TRUE(s->is_open());
  t.sender->Stop(Status(SHOAL_ERR_CLOSED, "test over"));
}

// Stop() while the reads wait in the reactor for bytes that have not come yet: the bytes that come
// afterwards stay in the sockets (the next owner of the link may read them) and never reach the
// tensor.
TEST(Transfer, StopWhileReadsWaitLeavesLaterBytesAlone) {
  Net net;
  const PeerId x = 9;
  const std::size_t seg = 16384;
  Tensors dst({4 * seg}, 0xAB);
  const std::vector<Piece> pieces{{0, 0, 4 * seg}};
  Transfer::Params rp;
  rp.segment_bytes_max = seg;
  rp.tensors = dst.Regions();
  rp.recvs[x] = pieces;
  rp.expected_hashes[0] = 0;
  Outcome ro;
  auto receiver = Make(rp, &ro);
  receiver->Start();
  auto link = net.Connect(2);
  receiver->AddIncoming(x, link.in);
  const std::uint32_t desc = PiecesDescriptor(pieces);
  auto head = [&](std::uint32_t unit) {
    Bytes h(kHead);
    net::EncodeSegmentHead({0, 0, unit, desc}, seg, h.data());
    return h;
  };
  const Bytes payload(seg, 0x11);
  // Stream 0: frame 0's head and 8000 of its bytes; stream 1: frame 1's head only.
  asio::write(link.out[0]->lowest_layer(), asio::buffer(head(0)));
  asio::write(link.out[0]->lowest_layer(), asio::buffer(payload.data(), 8000));
  asio::write(link.out[1]->lowest_layer(), asio::buffer(head(1)));
  ASSERT_TRUE(net.RunUntil([&] { return receiver->received_bytes().at(x) == 8000; }));
  net.RunFor(std::chrono::milliseconds(20));  // both streams now wait in the reactor
  receiver->Stop(Status(SHOAL_ERR_TIMEOUT, "deadline"));
  EXPECT_EQ(ro.faults, 1);
  const Bytes snapshot = dst.mem;
  std::weak_ptr<Transfer> weak = receiver;
  receiver.reset();
  // The rest of frames 0 and 1, and frames 2 and 3.
  asio::write(link.out[0]->lowest_layer(), asio::buffer(payload.data(), seg - 8000));
  asio::write(link.out[0]->lowest_layer(), asio::buffer(head(2)));
  asio::write(link.out[0]->lowest_layer(), asio::buffer(payload));
  asio::write(link.out[1]->lowest_layer(), asio::buffer(payload));
  asio::write(link.out[1]->lowest_layer(), asio::buffer(head(3)));
  asio::write(link.out[1]->lowest_layer(), asio::buffer(payload));
  net.RunFor(std::chrono::milliseconds(50));
  EXPECT_TRUE(weak.expired());
  EXPECT_TRUE(dst.mem == snapshot);
  EXPECT_TRUE(dst.GuardsIntact());
  EXPECT_EQ(link.in[0]->lowest_layer().available(), (seg - 8000) + kHead + seg);
  EXPECT_EQ(link.in[1]->lowest_layer().available(), seg + kHead + seg);
  EXPECT_EQ(ro.faults, 1);
  EXPECT_EQ(ro.dones, 0);
}

// A stream that carries one good frame and then a bad one: PROTOCOL naming the sender, and only
// the good frame's bytes in the tensor.
enum class Bad { kDesc, kSeq, kTag, kUnit, kSize, kType, kMagic };

class BadFrameTest : public ::testing::TestWithParam<Bad> {};

TEST_P(BadFrameTest, IsProtocolFaultAndWritesNothing) {
  Net net;
  const PeerId x = 5;
  const std::size_t tensor_bytes = 3 * 4096;
  Tensors dst({tensor_bytes}, 0xAB);
  std::vector<Piece> pieces{{0, 0, tensor_bytes}};
  Transfer::Params rp;
  rp.tag = 4;
  rp.seq = 6;
  rp.segment_bytes_max = 4096;
  rp.tensors = dst.Regions();
  rp.recvs[x] = pieces;
  rp.expected_hashes[0] = 0;
  Outcome ro;
  auto receiver = Make(rp, &ro);
  receiver->Start();
  auto link = net.Connect(1);
  receiver->AddIncoming(x, link.in);

  const std::uint32_t desc = PiecesDescriptor(pieces);
  std::uint8_t head[kHead];
  net::EncodeSegmentHead({4, 6, 0, desc}, 4096, head);
  Bytes good(4096, 0x11);
  asio::write(link.out[0]->lowest_layer(),
              std::array<asio::const_buffer, 2>{asio::buffer(head), asio::buffer(good)});
  net::SegmentHeader seg{4, 6, 1, desc};
  std::uint32_t bytes = 4096;
  switch (GetParam()) {
    case Bad::kDesc:
      seg.desc ^= 1;
      break;
    case Bad::kSeq:
      seg.seq = 7;
      break;
    case Bad::kTag:
      seg.tag = 5;
      break;
    case Bad::kUnit:
      seg.unit = 2;
      break;
    case Bad::kSize:
      bytes = 4095;
      break;
    default:
      break;
  }
  net::EncodeSegmentHead(seg, bytes, head);
  Bytes frame(head, head + kHead);
  if (GetParam() == Bad::kType) {
    frame.clear();
    net::Encode(net::Heartbeat{}, &frame);
  }
  if (GetParam() == Bad::kMagic) frame[0] ^= 0xFF;
  Bytes evil(bytes, 0xEE);
  frame.insert(frame.end(), evil.begin(), evil.end());
  asio::write(link.out[0]->lowest_layer(), asio::buffer(frame));

  ASSERT_TRUE(net.RunUntil([&] { return ro.failed() || ro.done(); }));
  net.RunFor(std::chrono::milliseconds(20));
  EXPECT_EQ(ro.faults, 1);
  EXPECT_EQ(ro.fault.code(), SHOAL_ERR_PROTOCOL) << ro.fault.ToString();
  EXPECT_EQ(ro.fault.peer(), x);
  EXPECT_EQ(receiver->received_bytes().at(x), 4096u);
  Tensors want({tensor_bytes}, 0xAB);
  std::memset(want.data(0), 0x11, 4096);
  EXPECT_TRUE(dst.mem == want.mem);
  EXPECT_TRUE(link.in[0]->is_open());
}

INSTANTIATE_TEST_SUITE_P(Transfer, BadFrameTest,
                         ::testing::Values(Bad::kDesc, Bad::kSeq, Bad::kTag, Bad::kUnit, Bad::kSize,
                                           Bad::kType, Bad::kMagic));

// Sync seq 0 then seq 1 over the same streams. The sender starts seq 1 as soon as its seq 0 is
// written, so seq 1's frames sit behind seq 0's in the sockets while the receiver still reads seq
// 0: the receiver must read exactly its frames and leave the rest to the next transfer.
TEST(Transfer, ConsecutiveTransfersShareSockets) {
  std::mt19937_64 rng(23);
  Net net;
  const std::vector<std::size_t> sizes{40000, 30000};
  Tensors src0(sizes, rng), src1(sizes, rng), dst(sizes, 0), want0(sizes, 0), want1(sizes, 0);
  const std::vector<Piece> l0{{0, 0, 40000}, {1, 0, 10000}};
  const std::vector<Piece> l1{{1, 0, 30000}, {0, 1000, 9000}};
  Apply(l0, src0, want0);
  want1.mem = want0.mem;
  Apply(l1, src1, want1);
  const PeerId s_id = 1, r_id = 2;
  auto link = net.Connect(2);
  std::shared_ptr<Transfer> s0, s1, r0, r1;
  Outcome so0, so1, ro0, ro1;
  bool r0_ok_at_end = false;

  auto sender_params = [&](std::uint64_t seq, Tensors& src, const std::vector<Piece>& l) {
    Transfer::Params p;
    p.tag = net::kSharedStateTag;
    p.seq = seq;
    p.segment_bytes_max = 4096;
    p.tensors = src.Regions();
    p.sends[r_id] = l;
    return p;
  };
  auto receiver_params = [&](std::uint64_t seq, Tensors& want, const std::vector<Piece>& l) {
    Transfer::Params p;
    p.tag = net::kSharedStateTag;
    p.seq = seq;
    p.segment_bytes_max = 4096;
    p.tensors = dst.Regions();
    p.recvs[s_id] = l;
    p.expected_hashes = HashesOf(want, p.recvs);
    return p;
  };
  Transfer::Callbacks scb;
  scb.on_done = [&] {
    so0.dones++;
    s1 = Make(sender_params(1, src1, l1), &so1);
    s1->Start();
    s1->AddOutgoing(r_id, link.out);
  };
  scb.on_fault = [&](const Status& s) {
    so0.faults++;
    so0.fault = s;
  };
  Transfer::Callbacks rcb;
  rcb.on_done = [&] {
    ro0.dones++;
    r0_ok_at_end = dst.mem == want0.mem;
    r1 = Make(receiver_params(1, want1, l1), &ro1);
    r1->Start();
    r1->AddIncoming(s_id, link.in);
  };
  rcb.on_fault = [&](const Status& s) {
    ro0.faults++;
    ro0.fault = s;
  };
  s0 = std::make_shared<Transfer>(sender_params(0, src0, l0), scb);
  r0 = std::make_shared<Transfer>(receiver_params(0, want0, l0), rcb);
  r0->Start();
  r0->AddIncoming(s_id, link.in);
  s0->Start();
  s0->AddOutgoing(r_id, link.out);
  ASSERT_TRUE(net.RunUntil([&] {
    for (Outcome* o : {&so0, &so1, &ro0, &ro1})
      if (o->failed()) return true;
    return so1.done() && ro1.done();
  }));
  for (Outcome* o : {&so0, &so1, &ro0, &ro1}) EXPECT_FALSE(o->failed()) << o->fault.ToString();
  EXPECT_TRUE(r0_ok_at_end);
  EXPECT_TRUE(dst.mem == want1.mem);
  EXPECT_EQ(r0->received_bytes().at(s_id), Sum(l0));
  EXPECT_EQ(r1->received_bytes().at(s_id), Sum(l1));
  for (auto& s : link.in) EXPECT_EQ(s->lowest_layer().available(), 0u);
}

// Not an assertion: how fast a tensor moves through loopback, the sender on an io thread of its
// own (as in a real group) and the receiver on the test's thread, as three back-to-back transfers
// (seq 0, 1, 2) of the same tensor over the same streams: on this project's VM the first pass
// through fresh memory (the kernel's socket buffers included) costs several times what later
// passes do. SHOAL_TRANSFER_BENCH_MIB overrides the size (256 MiB).
TEST(Transfer, ThroughputPrintout) {
  std::size_t mib = 256;
  if (const char* e = std::getenv("SHOAL_TRANSFER_BENCH_MIB")) mib = std::strtoull(e, nullptr, 10);
  const std::size_t bytes = mib << 20;
  const std::uint32_t k = 2;
  const PeerId s_id = 1, r_id = 2;
  Net net;
  asio::io_context sender_io;
  Bytes src(bytes), dst(bytes, 0);
  for (std::size_t i = 0; i < bytes; i += 8) {
    std::uint64_t v = i * 0x9E3779B97F4A7C15ull;
    std::memcpy(src.data() + i, &v, std::min<std::size_t>(8, bytes - i));
  }
  const std::uint64_t hash = ContentHash(src.data(), bytes);
  auto link = net.Connect(k, &sender_io);
  for (std::uint64_t seq = 0; seq < 3; seq++) {
    std::memset(dst.data(), 0, bytes);
    const std::vector<Piece> pieces{{0, 0, bytes}};
    Transfer::Params sp;
    sp.seq = seq;
    sp.tensors = {{src.data(), bytes}};
    sp.sends[r_id] = pieces;
    Transfer::Params rp;
    rp.seq = seq;
    rp.tensors = {{dst.data(), bytes}};
    rp.recvs[s_id] = pieces;
    rp.expected_hashes[0] = hash;
    Outcome so, ro;
    auto sender = Make(sp, &so), receiver = Make(rp, &ro);
    auto start = std::chrono::steady_clock::now();
    receiver->Start();
    receiver->AddIncoming(s_id, link.in);
    std::thread sender_thread([&] {
      sender->Start();
      sender->AddOutgoing(r_id, link.out);
      sender_io.restart();
      sender_io.run();  // until the sender has no I/O left: done or failed
    });
    bool finished =
        net.RunUntil([&] { return ro.done() || ro.failed(); }, std::chrono::seconds(120));
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!finished) receiver->Stop(Status(SHOAL_ERR_TIMEOUT, "bench"));
    sender_thread.join();
    ASSERT_TRUE(finished);
    ASSERT_FALSE(ro.failed()) << ro.fault.ToString();
    ASSERT_FALSE(so.failed()) << so.fault.ToString();
    std::printf(
        "transfer seq %llu: %zu MiB, K=%u, 1 MiB frames: %.3f s, %.2f GB/s (incl. the "
        "receiver's hash)\n",
        static_cast<unsigned long long>(seq), mib, k, s, static_cast<double>(bytes) / s / 1e9);
  }
  auto start = std::chrono::steady_clock::now();
  std::uint64_t h = ContentHash(dst.data(), bytes);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(h, hash);
  std::printf("the hash alone: %.3f s\n", s);
}

}  // namespace
}  // namespace shoal::collective
