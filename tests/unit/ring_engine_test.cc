// RingEngine over real TCP sockets on 127.0.0.1, all ranks in one process on one io_context:
// the all-reduce matrix (world size x count x dtype x op x in-place x streams), concurrent ops
// started in different orders on different ranks, and faults.
#include "shoal/collective/engine.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "shoal/collective/reduce.h"

namespace shoal::collective {
namespace {

using asio::ip::tcp;

// n ranks joined in a ring by K TCP streams per link, plain or TLS (handshakes done here).
struct Ring {
  asio::io_context io;
  std::vector<std::shared_ptr<RingEngine>> engines;
  std::vector<std::vector<OpKey>> done;  // per rank
  std::vector<Status> faults;            // per rank
  std::uint32_t n;
  std::uint32_t k;

  Ring(std::uint32_t n_, std::uint32_t k_, std::uint32_t segment_bytes_max, bool tls = false)
      : n(n_), k(k_) {
    done.resize(n);
    faults.resize(n);
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    std::vector<std::vector<net::Stream>> out(n), in(n);
    for (std::uint32_t r = 0; r < n; r++) {
      for (std::uint32_t s = 0; s < k; s++) {
        tcp::socket c(io);
        c.connect(acceptor.local_endpoint());
        c.set_option(tcp::no_delay(true));
        out[r].emplace_back(std::move(c));
        in[(r + 1) % n].emplace_back(acceptor.accept());
      }
    }
    if (tls) {
      std::shared_ptr<net::TlsContext> context;
      Status s = net::TlsContext::Create(&context);
      EXPECT_TRUE(s.ok()) << s.ToString();
      std::size_t handshakes = 0;
      for (std::uint32_t r = 0; r < n; r++) {
        for (std::uint32_t s = 0; s < k; s++) {
          for (auto* stream : {&out[r][s], &in[r][s]}) {
            stream->UseTls(context);
            auto role = stream == &out[r][s] ? net::Stream::Role::kClient
                                             : net::Stream::Role::kServer;
            stream->AsyncHandshake(role, [&handshakes](const asio::error_code& ec) {
              EXPECT_FALSE(ec) << ec.message();
              handshakes++;
            });
          }
        }
      }
      EXPECT_TRUE(RunUntil([&] { return handshakes == 2 * n * k; })) << "TLS handshakes";
    }
    for (std::uint32_t r = 0; r < n; r++) {
      RingEngine::Callbacks cb;
      cb.on_op_done = [this, r](OpKey key) { done[r].push_back(key); };
      cb.on_fault = [this, r](const Status& s) { faults[r] = s; };
      engines.push_back(std::make_shared<RingEngine>(std::move(out[r]), std::move(in[r]),
                                                     /*prev=*/1000 + (r + n - 1) % n,
                                                     /*next=*/1000 + (r + 1) % n,
                                                     segment_bytes_max, cb));
    }
    for (auto& e : engines) e->Start();
  }
  ~Ring() {
    for (auto& e : engines) e->Shutdown();
  }
  // Runs the io_context until `pred` holds or 30 s pass.
  template <typename Pred>
  bool RunUntil(Pred pred) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      io.run_for(std::chrono::milliseconds(5));
      io.restart();
    }
    return true;
  }
};

// Values that every dtype represents exactly and whose sums/products stay exact for n <= 8.
std::vector<std::uint8_t> RandomData(shoal_dtype dtype, shoal_reduce_op op, std::uint64_t count,
                                     std::mt19937_64& rng) {
  std::size_t eb = DtypeBytes(dtype);
  std::vector<std::uint8_t> v(count * eb);
  for (std::uint64_t i = 0; i < count; i++) {
    std::uint8_t* p = v.data() + i * eb;
    int small = op == SHOAL_PROD ? std::array<int, 4>{-2, -1, 1, 2}[rng() % 4]
                                 : static_cast<int>(rng() % 17) - 8;
    switch (dtype) {
      case SHOAL_F32: { float f = static_cast<float>(small); std::memcpy(p, &f, 4); break; }
      case SHOAL_F64: { double d = small; std::memcpy(p, &d, 8); break; }
      case SHOAL_F16: { std::uint16_t h = FloatToHalf(static_cast<float>(small)); std::memcpy(p, &h, 2); break; }
      case SHOAL_BF16: { std::uint16_t h = FloatToBf16(static_cast<float>(small)); std::memcpy(p, &h, 2); break; }
      default: {  // integers: full range, wrap-around is part of the contract
        std::uint64_t x = rng();
        std::memcpy(p, &x, eb);
      }
    }
  }
  return v;
}

struct Case {
  std::uint32_t n;
  std::uint64_t count;
  shoal_dtype dtype;
  shoal_reduce_op op;
  bool in_place;
  std::uint32_t k;
  bool tls = false;
};

void RunCase(const Case& c, std::mt19937_64& rng) {
  SCOPED_TRACE(::testing::Message() << "n=" << c.n << " count=" << c.count << " dtype="
                                    << DtypeName(c.dtype) << " op=" << ReduceOpName(c.op)
                                    << " in_place=" << c.in_place << " k=" << c.k
                                    << " tls=" << c.tls);
  Ring ring(c.n, c.k, /*segment_bytes_max=*/4096, c.tls);
  std::size_t eb = DtypeBytes(c.dtype);
  std::vector<std::vector<std::uint8_t>> send(c.n), recv(c.n);
  std::vector<std::uint8_t> want;
  for (std::uint32_t r = 0; r < c.n; r++) {
    send[r] = RandomData(c.dtype, c.op, c.count, rng);
    recv[r].assign(c.count * eb, 0xAB);
    if (r == 0) {
      want = send[0];
    } else {
      Reduce(c.dtype, c.op == SHOAL_AVG ? SHOAL_SUM : c.op, want.data(), want.data(),
             send[r].data(), c.count);
    }
  }
  if (c.op == SHOAL_AVG) DivideBy(c.dtype, want.data(), c.count, c.n);
  for (std::uint32_t r = 0; r < c.n; r++) {
    RingAllReduceParams p;
    p.send = send[r].data();
    p.recv = c.in_place ? send[r].data() : recv[r].data();
    p.count = c.count;
    p.dtype = c.dtype;
    p.op = c.op;
    p.n = c.n;
    p.rank = r;
    p.streams = c.k;
    p.segment_bytes_max = 4096;
    ring.engines[r]->AddOp(OpKey{7, 0}, std::make_unique<RingAllReduce>(p));
  }
  ASSERT_TRUE(ring.RunUntil([&] {
    for (auto& d : ring.done) if (d.empty()) return false;
    return true;
  })) << "the ring did not finish";
  for (std::uint32_t r = 0; r < c.n; r++) {
    EXPECT_TRUE(ring.faults[r].ok()) << ring.faults[r].ToString();
    const auto& got = c.in_place ? send[r] : recv[r];
    ASSERT_EQ(got.size(), want.size());
    EXPECT_TRUE(got == want) << "rank " << r;
    if (r > 0) {
      const auto& first = c.in_place ? send[0] : recv[0];
      EXPECT_TRUE(got == first) << "ranks differ";
    }
  }
}

TEST(RingEngine, MatrixAllDtypesAndOps) {
  std::mt19937_64 rng(42);
  for (std::uint32_t n : {2u, 3u, 5u}) {
    for (int dt = 0; dt < SHOAL_DTYPE_COUNT; dt++) {
      for (int op = 0; op < SHOAL_REDUCE_OP_COUNT; op++) {
        RunCase({n, 3001, static_cast<shoal_dtype>(dt), static_cast<shoal_reduce_op>(op),
                 (dt + op) % 2 == 0, 1 + static_cast<std::uint32_t>(op % 3)},
                rng);
      }
    }
  }
}

TEST(RingEngine, OddCountsAndWorldSizes) {
  std::mt19937_64 rng(7);
  for (std::uint32_t n = 2; n <= 8; n++) {
    for (std::uint64_t count : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{n - 1},
                                std::uint64_t{n}, std::uint64_t{n + 1}, std::uint64_t{4099},
                                std::uint64_t{100003}}) {
      for (bool in_place : {false, true}) {
        RunCase({n, count, SHOAL_F32, SHOAL_SUM, in_place, n % 4 + 1}, rng);
      }
    }
  }
}

// The same engine over TLS streams (net/stream.h): every dtype once, odd counts, K in {1, 3}.
TEST(RingEngine, OverTls) {
  std::mt19937_64 rng(11);
  for (int dt = 0; dt < SHOAL_DTYPE_COUNT; dt++) {
    RunCase(
        {3, 3001, static_cast<shoal_dtype>(dt), SHOAL_SUM, dt % 2 == 0, 1 + 2u * (dt % 2), true},
        rng);
  }
  for (std::uint64_t count : {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{100003}}) {
    RunCase({4, count, SHOAL_F32, SHOAL_AVG, false, 3, true}, rng);
  }
}

TEST(RingEngine, ConcurrentOpsStartedInDifferentOrders) {
  const std::uint32_t n = 4, k = 2, ops = 6;
  Ring ring(n, k, 4096);
  std::mt19937_64 rng(3);
  const std::uint64_t count = 20000;
  std::vector<std::vector<std::vector<std::int32_t>>> buf(n, std::vector<std::vector<std::int32_t>>(ops));
  for (std::uint32_t r = 0; r < n; r++) {
    for (std::uint32_t t = 0; t < ops; t++) {
      buf[r][t].resize(count);
      for (std::uint64_t i = 0; i < count; i++) buf[r][t][i] = static_cast<std::int32_t>(r * 1000 + t * 10 + i % 7);
    }
  }
  for (std::uint32_t r = 0; r < n; r++) {
    std::vector<std::uint32_t> order(ops);
    for (std::uint32_t t = 0; t < ops; t++) order[t] = t;
    std::shuffle(order.begin(), order.end(), rng);
    for (std::uint32_t t : order) {
      RingAllReduceParams p;
      p.send = p.recv = buf[r][t].data();
      p.count = count;
      p.dtype = SHOAL_I32;
      p.op = SHOAL_SUM;
      p.n = n;
      p.rank = r;
      p.streams = k;
      p.segment_bytes_max = 4096;
      ring.engines[r]->AddOp(OpKey{t, 0}, std::make_unique<RingAllReduce>(p));
    }
  }
  ASSERT_TRUE(ring.RunUntil([&] {
    for (auto& d : ring.done) if (d.size() < ops) return false;
    return true;
  }));
  for (std::uint32_t r = 0; r < n; r++) {
    for (std::uint32_t t = 0; t < ops; t++) {
      for (std::uint64_t i = 0; i < count; i += 997) {
        std::int32_t want = 0;
        for (std::uint32_t q = 0; q < n; q++) want += static_cast<std::int32_t>(q * 1000 + t * 10 + i % 7);
        ASSERT_EQ(buf[r][t][i], want) << "rank " << r << " op " << t << " elem " << i;
      }
    }
  }
}

TEST(RingEngine, LostNeighbourIsNamedAndBuffersAreReleased) {
  const std::uint32_t n = 3;
  Ring ring(n, 2, 4096);
  const std::uint64_t count = 1 << 20;
  std::vector<std::vector<float>> buf(n, std::vector<float>(count, 1.0f));
  // Ranks 0 and 1 start; rank 2 never does and then dies: its sockets close.
  for (std::uint32_t r = 0; r < 2; r++) {
    RingAllReduceParams p;
    p.send = p.recv = buf[r].data();
    p.count = count;
    p.n = n;
    p.rank = r;
    p.streams = 2;
    p.segment_bytes_max = 4096;
    ring.engines[r]->AddOp(OpKey{1, 0}, std::make_unique<RingAllReduce>(p));
  }
  ring.io.run_for(std::chrono::milliseconds(50));
  ring.io.restart();
  ring.engines[2]->Shutdown();
  // Rank 0 reads from rank 2 (its previous neighbour) and sees the streams end. Rank 1 sends to
  // rank 2 and may have handed all its bytes to the kernel already; it then waits on rank 0 and
  // learns of the failure from the coordinator's verdict, not from its sockets.
  ASSERT_TRUE(ring.RunUntil([&] { return !ring.faults[0].ok(); }));
  ring.io.run_for(std::chrono::milliseconds(100));
  EXPECT_EQ(ring.faults[0].code(), SHOAL_ERR_PEER_LOST);
  EXPECT_EQ(ring.faults[0].peer(), 1002u);
  if (!ring.faults[1].ok()) {
    EXPECT_EQ(ring.faults[1].code(), SHOAL_ERR_PEER_LOST);
    EXPECT_EQ(ring.faults[1].peer(), 1002u);
  }
  EXPECT_TRUE(ring.engines[0]->stopped());
  EXPECT_TRUE(ring.done[0].empty());
}

TEST(RingEngine, MismatchedCountsAreDetected) {
  const std::uint32_t n = 2;
  Ring ring(n, 1, 4096);
  std::vector<float> a(1000, 1.0f), b(1001, 1.0f);
  for (std::uint32_t r = 0; r < n; r++) {
    RingAllReduceParams p;
    p.send = p.recv = r == 0 ? a.data() : b.data();
    p.count = r == 0 ? a.size() : b.size();
    p.n = n;
    p.rank = r;
    p.segment_bytes_max = 4096;
    ring.engines[r]->AddOp(OpKey{1, 0}, std::make_unique<RingAllReduce>(p));
  }
  ASSERT_TRUE(ring.RunUntil([&] { return !ring.faults[0].ok() || !ring.faults[1].ok(); }));
  Status f = !ring.faults[0].ok() ? ring.faults[0] : ring.faults[1];
  EXPECT_EQ(f.code(), SHOAL_ERR_MISMATCH) << f.ToString();
}

}  // namespace
}  // namespace shoal::collective
