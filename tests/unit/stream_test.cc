// net::Stream over real sockets on 127.0.0.1: plain and TLS round trips through asio::async_read /
// async_write, the channel binding (equal on both ends of one session, different across
// sessions), and cancel() on a TLS stream whose socket read has already completed (the case that
// would let OpenSSL write into a released buffer without GuardedSocket).
#include "shoal/net/stream.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "shoal/net/auth.h"

namespace shoal::net {
namespace {

using asio::ip::tcp;

struct Pair {
  asio::io_context io;
  std::shared_ptr<TlsContext> tls;
  std::unique_ptr<Stream> client;
  std::unique_ptr<Stream> server;

  explicit Pair(bool use_tls) {
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    tcp::socket c(io);
    c.connect(acceptor.local_endpoint());
    client = std::make_unique<Stream>(std::move(c));
    server = std::make_unique<Stream>(acceptor.accept());
    if (!use_tls) return;
    Status s = TlsContext::Create(&tls);
    EXPECT_TRUE(s.ok()) << s.ToString();
    client->UseTls(tls);
    server->UseTls(tls);
    int done = 0;
    asio::error_code cec, sec;
    client->AsyncHandshake(Stream::Role::kClient, [&](const asio::error_code& ec) {
      cec = ec;
      done++;
    });
    server->AsyncHandshake(Stream::Role::kServer, [&](const asio::error_code& ec) {
      sec = ec;
      done++;
    });
    EXPECT_TRUE(RunUntil([&] { return done == 2; }));
    EXPECT_FALSE(cec) << cec.message();
    EXPECT_FALSE(sec) << sec.message();
  }

  template <typename Pred>
  bool RunUntil(Pred pred) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      io.restart();
      io.run_one_for(std::chrono::milliseconds(10));
    }
    return true;
  }
};

class StreamTest : public ::testing::TestWithParam<bool> {};

TEST_P(StreamTest, LargeTransfersArriveIntactBothWays) {
  Pair p(GetParam());
  EXPECT_EQ(p.client->tls(), GetParam());
  // Larger than many TLS records and than the socket buffers, so both sides interleave.
  std::vector<std::uint8_t> a(3 << 20), b(1 << 20), got_a(a.size()), got_b(b.size());
  for (std::size_t i = 0; i < a.size(); i++) a[i] = static_cast<std::uint8_t>(i * 31 + 7);
  for (std::size_t i = 0; i < b.size(); i++) b[i] = static_cast<std::uint8_t>(i * 17 + 3);
  int done = 0;
  auto count = [&](const asio::error_code& ec, std::size_t) {
    EXPECT_FALSE(ec) << ec.message();
    done++;
  };
  asio::async_write(*p.client, asio::buffer(a), count);
  asio::async_read(*p.server, asio::buffer(got_a), count);
  asio::async_write(*p.server, asio::buffer(b), count);
  asio::async_read(*p.client, asio::buffer(got_b), count);
  ASSERT_TRUE(p.RunUntil([&] { return done == 4; }));
  EXPECT_TRUE(got_a == a);
  EXPECT_TRUE(got_b == b);
}

TEST_P(StreamTest, ChannelBindingIsEmptyWhenPlainAndSharedPerTlsSession) {
  Pair p(GetParam());
  ChannelBinding c, s;
  ASSERT_TRUE(p.client->GetChannelBinding(&c).ok());
  ASSERT_TRUE(p.server->GetChannelBinding(&s).ok());
  if (!GetParam()) {
    EXPECT_TRUE(c.empty());
    EXPECT_TRUE(s.empty());
    return;
  }
  EXPECT_EQ(c.size(), kChannelBindingBytes);
  EXPECT_EQ(c, s);
  Pair other(true);
  ChannelBinding o;
  ASSERT_TRUE(other.client->GetChannelBinding(&o).ok());
  EXPECT_NE(c, o) << "two sessions must not share a binding";
}

INSTANTIATE_TEST_SUITE_P(PlainAndTls, StreamTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Tls" : "Plain"; });

// The record is in the server's kernel buffer before the read starts, so Asio reads it at once
// and queues the completion; cancel() runs before that completion. The caller's buffer must stay
// untouched and the read must report operation_aborted.
TEST(StreamTls, CancelVoidsAReadWhoseSocketReadAlreadyCompleted) {
  Pair p(true);
  std::vector<std::uint8_t> msg(1000, 0x5A);
  bool written = false;
  asio::async_write(*p.client, asio::buffer(msg), [&](const asio::error_code& ec, std::size_t) {
    EXPECT_FALSE(ec);
    written = true;
  });
  ASSERT_TRUE(p.RunUntil([&] { return written; }));
  pollfd pfd{p.server->lowest_layer().native_handle(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 10000), 1);
  std::vector<std::uint8_t> buf(msg.size(), 0xAB);
  bool read_done = false;
  asio::error_code read_ec;
  p.server->async_read_some(asio::buffer(buf), [&](const asio::error_code& ec, std::size_t) {
    read_ec = ec;
    read_done = true;
  });
  asio::error_code ignored;
  p.server->cancel(ignored);
  ASSERT_TRUE(p.RunUntil([&] { return read_done; }));
  EXPECT_EQ(read_ec, asio::error::operation_aborted);
  EXPECT_EQ(buf, std::vector<std::uint8_t>(msg.size(), 0xAB)) << "written after cancel()";
}

TEST(StreamTls, AHandshakeAgainstGarbageFailsWithAnError) {
  asio::io_context io;
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  tcp::socket c(io);
  c.connect(acceptor.local_endpoint());
  Stream server(acceptor.accept());
  std::shared_ptr<TlsContext> tls;
  ASSERT_TRUE(TlsContext::Create(&tls).ok());
  server.UseTls(tls);
  const std::uint8_t junk[] = {0x16, 0x03, 0x01, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef};
  asio::write(c, asio::buffer(junk));
  bool done = false;
  asio::error_code hec;
  server.AsyncHandshake(Stream::Role::kServer, [&](const asio::error_code& ec) {
    hec = ec;
    done = true;
  });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!done && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_one_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(done);
  EXPECT_TRUE(hec) << "a handshake over garbage succeeded";
  EXPECT_FALSE(TlsErrorText(hec).empty());
}

TEST(Auth, TheChannelBindingChangesBothProofs) {
  Nonce a{}, b{};
  a[0] = 1;
  b[0] = 2;
  ChannelBinding one(kChannelBindingBytes, 1), two(kChannelBindingBytes, 2);
  EXPECT_FALSE(MacEqual(ServerProof("s", a, b, one), ServerProof("s", a, b, two)));
  EXPECT_FALSE(MacEqual(ClientProof("s", a, b, one), ClientProof("s", a, b, two)));
  EXPECT_FALSE(MacEqual(ServerProof("s", a, b, one), ServerProof("s", a, b)));
  EXPECT_TRUE(MacEqual(ServerProof("s", a, b, one), ServerProof("s", a, b, one)));
  EXPECT_FALSE(MacEqual(ServerProof("s", a, b, one), ClientProof("s", a, b, one)));
}

}  // namespace
}  // namespace shoal::net
