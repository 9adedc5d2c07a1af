// The I/O shell of shoal-coord. Vocabulary used below:
//   - connection: one accepted control socket and its record (Connection). Its ConnId is what the
//     Coordinator knows it by; ids are never reused while the server lives.
//   - frame: header + payload of one message on a connection.
//   - closing: the Coordinator asked to close the connection (or the shell refused it with a
//     Reject); nothing more is read or sent, queued bytes are flushed, then it is finished.
//   - finished: the socket is closed and the record is gone; the Coordinator is told with
//     OnDisconnect exactly once per connection (it ignores ids it already forgot).
//   - carry out: apply the Outputs of one Coordinator call in order; OnDisconnects that this causes
//     (a write queue overflowing) are delivered after, and their outputs carried out in turn.
#include "shoal/coord/server.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <asio.hpp>
#include <cassert>
#include <chrono>
#include <deque>
#include <map>
#include <unordered_map>
#include <utility>

#include "shoal/common/clock.h"
#include "shoal/net/auth.h"
#include "shoal/net/codec.h"
#include "shoal/net/stream.h"
#include "shoal/net/tls.h"

namespace shoal::coord {
namespace {

using asio::ip::tcp;

// Payloads are read in pieces of at most this much so that memory follows the bytes received,
// not the length a header announces.
constexpr std::size_t kReadChunkBytes = 64 * 1024;
// Buffers larger than this are released once their frame is done rather than kept for reuse.
constexpr std::size_t kBufferKeepBytes = 64 * 1024;
// After accept() fails (for example EMFILE), wait this long before trying again.
constexpr TimeMs kAcceptRetryDelayMs = 100;
// At most this many remote addresses have a token bucket at once (full buckets are pruned).
constexpr std::size_t kAddressBucketsMax = 2 * limits::kConnectionsMax;
// At most one refusal is logged per this interval; the others are counted.
constexpr TimeMs kRefusalLogIntervalMs = 1000;

static_assert(kReadChunkBytes <= limits::kControlPayloadBytesMax);

std::string EndpointString(const tcp::endpoint& ep) {
  asio::error_code ec;
  std::string address = ep.address().to_string(ec);
  if (ec) address = "?";
  if (ep.address().is_v6()) return "[" + address + "]:" + std::to_string(ep.port());
  return address + ":" + std::to_string(ep.port());
}

std::string ReadErrorText(const asio::error_code& ec) {
  if (ec == asio::error::eof) return "connection closed by peer";
  return "read failed: " + ec.message();
}

struct Connection {
  Connection(ConnId id_in, tcp::socket socket_in, std::string peer_in)
      : id(id_in),
        socket(std::move(socket_in)),
        close_timer(socket.get_executor()),
        peer(std::move(peer_in)) {}

  const ConnId id;
  net::Stream socket;  // plain until Classify() finds a TLS ClientHello
  asio::steady_timer close_timer;  // bounds the flush of a closing connection
  const std::string peer;          // "address:port", for logs

  std::array<std::uint8_t, net::kHeaderBytes> header{};
  net::FrameHeader frame;             // the decoded header of the frame being read
  std::vector<std::uint8_t> payload;  // the payload bytes of that frame received so far

  std::vector<std::uint8_t> writing;  // bytes of the async write in flight
  std::vector<std::uint8_t> queued;   // bytes for the next write
  bool write_in_flight = false;

  bool closing = false;
  // Refused for a TLS mismatch: after the Reject, bytes are read and dropped until the peer
  // closes (or close_flush_timeout_ms), so that the close does not reset the connection before
  // the peer has read why (a close with unread bytes sends RST).
  bool draining = false;
  bool finished = false;

  // Authentication, when the server has a secret: the Coordinator sees messages once `authed`.
  net::ChannelBinding binding;  // of the TLS session (empty when plain): the proofs cover it
  bool authed = false;
  bool challenged = false;  // AuthChallenge sent; AuthProof expected next
  net::Nonce client_nonce{};
  net::Nonce server_nonce{};
};

// Connection attempts of one remote address: up to `burst` at once, refilled at a steady rate.
struct AttemptBucket {
  double tokens = 0;
  TimeMs refilled_ms = 0;
};

}  // namespace

Status ValidateServerConfig(const ServerConfig& s) {
  auto bad = [](const std::string& what) { return Status(SHOAL_ERR_INVALID_ARGUMENT, what); };
  const Config& c = s.coordinator;
  if (s.listen_host.empty()) return bad("listen host is empty");
  if (s.connections_max < 1 || s.connections_max > limits::kConnectionsMax) {
    return bad("connections_max must be in [1, " + std::to_string(limits::kConnectionsMax) + "]");
  }
  if (s.accept_burst < 1) return bad("accept_burst must be at least 1");
  if (s.write_queue_bytes_max < net::kHeaderBytes + limits::kSyncPayloadBytesMax) {
    return bad("write_queue_bytes_max must hold at least one control message of the largest size");
  }
  if (c.heartbeat_interval_ms < 1) return bad("heartbeat_interval_ms must be at least 1");
  if (c.heartbeat_timeout_ms <= c.heartbeat_interval_ms) {
    return bad("heartbeat_timeout_ms (" + std::to_string(c.heartbeat_timeout_ms) +
               ") must be above heartbeat_interval_ms (" + std::to_string(c.heartbeat_interval_ms) +
               ")");
  }
  if (c.hello_timeout_ms < 1) return bad("hello_timeout_ms must be at least 1");
  if (c.barrier_timeout_ms < 1) return bad("barrier_timeout_ms must be at least 1");
  if (c.setup_timeout_ms < 1) return bad("setup_timeout_ms must be at least 1");
  if (c.streams_per_link < 1 || c.streams_per_link > limits::kStreamsPerLinkMax) {
    return bad("streams_per_link must be in [1, " + std::to_string(limits::kStreamsPerLinkMax) +
               "]");
  }
  if (c.segment_bytes < limits::kSegmentBytesMin || c.segment_bytes > limits::kSegmentBytesMax) {
    return bad("segment_bytes must be in [" + std::to_string(limits::kSegmentBytesMin) + ", " +
               std::to_string(limits::kSegmentBytesMax) + "]");
  }
  if (c.max_members < 1 || c.max_members > limits::kMembersMax) {
    return bad("max_members must be in [1, " + std::to_string(limits::kMembersMax) + "]");
  }
  if (c.max_pending < 1 || c.max_pending > limits::kPendingMax) {
    return bad("max_pending must be in [1, " + std::to_string(limits::kPendingMax) + "]");
  }
  if (c.max_open_ops < 1) return bad("max_open_ops must be at least 1");
  return Status::Ok();
}

struct Server::Impl {
  explicit Impl(ServerConfig c)
      : config(std::move(c)),
        io(1),
        acceptor(io),
        tick_timer(io),
        accept_retry_timer(io),
        signals(io) {}

  // --- Lifecycle -------------------------------------------------------------------------------

  Status Start() {
    if (started) return Status(SHOAL_ERR_INVALID_ARGUMENT, "server already started");
    Status valid = ValidateServerConfig(config);
    if (!valid.ok()) return valid;

    asio::error_code ec;
    asio::ip::address address = asio::ip::make_address(config.listen_host, ec);
    if (ec) {
      tcp::resolver resolver(io);
      auto results = resolver.resolve(config.listen_host, "", tcp::resolver::passive, ec);
      if (ec || results.empty()) {
        return Status(SHOAL_ERR_IO, "cannot resolve listen host '" + config.listen_host +
                                        "': " + (ec ? ec.message() : "no addresses"));
      }
      address = results.begin()->endpoint().address();
    }
    tcp::endpoint endpoint(address, config.port);
    std::string where = EndpointString(endpoint);
    if (acceptor.open(endpoint.protocol(), ec)) {
      return Status(SHOAL_ERR_IO, "socket for " + where + ": " + ec.message());
    }
    // Lets a restarted coordinator bind while connections of the old one sit in TIME_WAIT.
    if (acceptor.set_option(tcp::acceptor::reuse_address(true), ec)) {
      return Status(SHOAL_ERR_IO, "SO_REUSEADDR on " + where + ": " + ec.message());
    }
    if (acceptor.bind(endpoint, ec)) {
      return Status(SHOAL_ERR_IO, "bind " + where + ": " + ec.message());
    }
    if (acceptor.listen(asio::socket_base::max_listen_connections, ec)) {
      return Status(SHOAL_ERR_IO, "listen on " + where + ": " + ec.message());
    }
    tcp::endpoint local = acceptor.local_endpoint(ec);
    if (ec) return Status(SHOAL_ERR_IO, "local address of " + where + ": " + ec.message());
    bound_port = local.port();
    listen_address = EndpointString(local);

    for (int signal_number : config.stop_signals) {
      if (signals.add(signal_number, ec)) {
        return Status(SHOAL_ERR_IO, "cannot handle signal " + std::to_string(signal_number) + ": " +
                                        ec.message());
      }
    }
    // A plain coordinator keeps a TLS context too, only to refuse TLS peers in words they can read.
    if (Status s = net::TlsContext::Create(&tls_context); !s.ok()) {
      if (config.tls) return s;
      spdlog::warn("no TLS context ({}): TLS peers will be dropped without a reason", s.message());
    }
    coordinator = std::make_unique<Coordinator>(config.coordinator);
    started = true;
    return Status::Ok();
  }

  void Run() {
    assert(started && !ran && "Run() requires a successful Start() and runs once");
    ran = true;
    if (!config.stop_signals.empty()) {
      signals.async_wait([this](const asio::error_code& ec, int signal_number) {
        if (ec) return;
        spdlog::info("signal {} received, stopping", signal_number);
        Shutdown();
      });
    }
    next_tick_ms = MonotonicNowMs();
    ScheduleTick();
    StartAccept();
    io.run();
  }

  // Runs on the io_context thread. Closes everything; pending handlers then complete with
  // operation_aborted and see `stopping`, so io.run() returns once they are done.
  void Shutdown() {
    if (stopping) return;
    stopping = true;
    asio::error_code ec;
    acceptor.close(ec);
    tick_timer.cancel();
    accept_retry_timer.cancel();
    signals.cancel(ec);
    std::size_t open = connections.size();
    for (auto& entry : connections) {
      Connection& c = *entry.second;
      c.finished = true;
      c.close_timer.cancel();
      c.socket.shutdown(ec);
      c.socket.close(ec);
    }
    connections.clear();
    lost.clear();
    spdlog::info("stopped; closed {} connection(s)", open);
  }

  // --- Accepting -------------------------------------------------------------------------------

  void StartAccept() {
    acceptor.async_accept([this](const asio::error_code& ec, tcp::socket socket) {
      if (stopping) return;
      if (ec) {
        if (ec == asio::error::operation_aborted) return;
        if (ec == asio::error::connection_aborted) {  // the client gave up before accept()
          StartAccept();
          return;
        }
        spdlog::warn("accept on {} failed: {}; retrying in {} ms", listen_address, ec.message(),
                     kAcceptRetryDelayMs);
        accept_retry_timer.expires_after(std::chrono::milliseconds(kAcceptRetryDelayMs));
        accept_retry_timer.async_wait([this](const asio::error_code& wait_ec) {
          if (!wait_ec && !stopping) StartAccept();
        });
        return;
      }
      Admit(std::move(socket));
      StartAccept();
    });
  }

  void Admit(tcp::socket socket) {
    asio::error_code ec;
    tcp::endpoint remote = socket.remote_endpoint(ec);
    if (ec) {  // already gone
      socket.close(ec);
      return;
    }
    TimeMs now_ms = MonotonicNowMs();
    std::string peer = EndpointString(remote);
    // Every attempt costs a token, so a flooding address cannot also hold the connection limit.
    if (!TakeAttemptToken(remote.address(), now_ms)) {
      Refuse(&socket, peer, "too many connection attempts from this address", now_ms);
      return;
    }
    if (connections.size() >= config.connections_max) {
      Refuse(&socket, peer,
             "connection limit of " + std::to_string(config.connections_max) + " reached", now_ms);
      return;
    }
    socket.set_option(tcp::no_delay(true), ec);
    if (ec) spdlog::debug("TCP_NODELAY for {}: {}", peer, ec.message());

    auto c = std::make_shared<Connection>(next_conn_id++, std::move(socket), std::move(peer));
    connections.emplace(c->id, c);
    spdlog::debug("connection {} from {} ({} open)", c->id, c->peer, connections.size());
    coordinator->OnConnect(c->id, now_ms);
    Classify(c);
  }

  // Plain or TLS, told by the first byte (a TLS ClientHello starts with a handshake record, a
  // shoal frame with its magic). A mismatch with config.tls is answered with Reject in the peer's
  // own framing, so that it fails with a clear message rather than a broken handshake: over TLS
  // (with the ephemeral certificate) to a TLS peer of a plain coordinator, in the clear to a plain
  // peer of a TLS coordinator. The Coordinator's Hello deadline bounds all of it: its Close ends
  // the connection and any pending handshake.
  void Classify(const std::shared_ptr<Connection>& c) {
    net::AsyncDetectTls(c->socket.lowest_layer(), [this, c](const asio::error_code& ec, bool tls) {
      if (stopping || c->finished || c->closing) return;
      if (ec) {
        Drop(c, ReadErrorText(ec));
        return;
      }
      if (!tls) {
        if (config.tls) {
          RefuseMismatch(c, "this coordinator requires TLS (shoal-coord --tls); the peer does not "
                            "use it: turn tls on in its options");
          return;
        }
        ReadHeader(c);
        return;
      }
      if (!tls_context) {
        Drop(c, "a TLS connection, but this coordinator has no TLS context", spdlog::level::warn);
        return;
      }
      c->socket.UseTls(tls_context);
      c->socket.AsyncHandshake(net::Stream::Role::kServer, [this, c](const asio::error_code& ec) {
        if (stopping || c->finished || c->closing) return;
        if (ec) {
          Drop(c, net::TlsErrorText(ec), spdlog::level::warn);
          return;
        }
        if (!config.tls) {
          RefuseMismatch(c, "this coordinator does not use TLS (no shoal-coord --tls); the peer "
                            "does: turn tls off in its options, or restart the coordinator with "
                            "--tls");
          return;
        }
        if (Status s = c->socket.GetChannelBinding(&c->binding); !s.ok()) {
          Drop(c, s.message(), spdlog::level::err);
          return;
        }
        ReadHeader(c);
      });
    });
  }

  void RefuseMismatch(const std::shared_ptr<Connection>& c, const std::string& why) {
    spdlog::warn("refusing connection {} from {}: {}", c->id, c->peer, why);
    Send(c, net::Reject{SHOAL_ERR_PROTOCOL, why});
    if (c->finished) return;
    c->closing = true;
    c->draining = true;
    c->close_timer.expires_after(std::chrono::milliseconds(config.close_flush_timeout_ms));
    c->close_timer.async_wait([this, c](const asio::error_code& ec) {
      if (ec || stopping || c->finished) return;
      Finish(c);
      CarryOut();
    });
    Drain(c);
  }

  void Drain(const std::shared_ptr<Connection>& c) {
    c->payload.resize(kReadChunkBytes);
    c->socket.async_read_some(asio::buffer(c->payload),
                              [this, c](const asio::error_code& ec, std::size_t) {
                                if (stopping || c->finished) return;
                                if (!ec) return Drain(c);
                                Finish(c);  // the peer closed (or the connection failed)
                                CarryOut();
                              });
  }

  void Refuse(tcp::socket* socket, const std::string& peer, const std::string& why, TimeMs now_ms) {
    asio::error_code ec;
    socket->close(ec);
    if (now_ms - refusal_logged_ms >= kRefusalLogIntervalMs) {
      if (refusals_unlogged > 0) {
        spdlog::warn("refused connection from {}: {} ({} more refused since the last report)", peer,
                     why, refusals_unlogged);
      } else {
        spdlog::warn("refused connection from {}: {}", peer, why);
      }
      refusal_logged_ms = now_ms;
      refusals_unlogged = 0;
    } else {
      refusals_unlogged++;
      spdlog::debug("refused connection from {}: {}", peer, why);
    }
  }

  bool TakeAttemptToken(const asio::ip::address& address, TimeMs now_ms) {
    auto it = buckets.find(address);
    if (it == buckets.end()) {
      if (buckets.size() >= kAddressBucketsMax) PruneBuckets(now_ms);
      // Still full: that many distinct addresses are all attempting at once; refuse newcomers
      // until their buckets refill rather than grow without bound.
      if (buckets.size() >= kAddressBucketsMax) return false;
      it = buckets.emplace(address, AttemptBucket{double(config.accept_burst), now_ms}).first;
    }
    AttemptBucket& b = it->second;
    Refill(&b, now_ms);
    if (b.tokens < 1.0) return false;
    b.tokens -= 1.0;
    return true;
  }

  void Refill(AttemptBucket* b, TimeMs now_ms) const {
    TimeMs elapsed_ms = std::max<TimeMs>(0, now_ms - b->refilled_ms);
    double burst = config.accept_burst;
    b->tokens = std::min(burst, b->tokens + double(elapsed_ms) * config.accept_rate_per_s / 1000.0);
    b->refilled_ms = now_ms;
  }

  // A full bucket is the same as no bucket: forget it.
  void PruneBuckets(TimeMs now_ms) {
    for (auto it = buckets.begin(); it != buckets.end();) {
      Refill(&it->second, now_ms);
      if (it->second.tokens >= double(config.accept_burst)) {
        it = buckets.erase(it);
      } else {
        ++it;
      }
    }
  }

  // --- Reading ---------------------------------------------------------------------------------

  void ReadHeader(const std::shared_ptr<Connection>& c) {
    asio::async_read(c->socket, asio::buffer(c->header),
                     [this, c](const asio::error_code& ec, std::size_t) {
                       if (stopping || c->finished || c->closing) return;
                       if (ec) {
                         Drop(c, ReadErrorText(ec));
                         return;
                       }
                       OnHeader(c);
                     });
  }

  void OnHeader(const std::shared_ptr<Connection>& c) {
    net::FrameHeader frame;
    Status s = net::DecodeHeader(c->header.data(), limits::kSyncPayloadBytesMax, &frame);
    if (!s.ok()) {
      RefuseFrame(c, s);
      return;
    }
    c->frame = frame;
    c->payload.clear();
    ReadPayload(c);
  }

  void ReadPayload(const std::shared_ptr<Connection>& c) {
    std::size_t have = c->payload.size();
    std::size_t want = c->frame.payload_bytes;
    if (have == want) {
      OnFrame(c);
      return;
    }
    std::size_t chunk = std::min(want - have, kReadChunkBytes);
    c->payload.resize(have + chunk);
    asio::async_read(c->socket, asio::buffer(c->payload.data() + have, chunk),
                     [this, c](const asio::error_code& ec, std::size_t) {
                       if (stopping || c->finished || c->closing) return;
                       if (ec) {
                         Drop(c, ReadErrorText(ec) + " in the middle of a frame");
                         return;
                       }
                       ReadPayload(c);
                     });
  }

  void OnFrame(const std::shared_ptr<Connection>& c) {
    net::Message message;
    Status s = net::DecodePayload(c->frame.type, c->payload.data(), c->payload.size(), &message);
    if (c->payload.capacity() > kBufferKeepBytes) {
      c->payload = std::vector<std::uint8_t>();
    } else {
      c->payload.clear();
    }
    if (!s.ok()) {
      RefuseFrame(c, s);
      return;
    }
    if (!Authenticate(c, message)) return;
    if (!IsAuthMessage(message)) {
      coordinator->OnMessage(c->id, message, MonotonicNowMs(), &outputs);
      CarryOut();
    }
    if (!c->finished && !c->closing) ReadHeader(c);
  }

  static bool IsAuthMessage(const net::Message& m) {
    return std::holds_alternative<net::AuthHello>(m) ||
           std::holds_alternative<net::AuthChallenge>(m) ||
           std::holds_alternative<net::AuthProof>(m);
  }

  // The group-secret handshake (net/auth.h), before anything reaches the Coordinator. Returns
  // whether the connection goes on; `message` is then either an auth message it consumed or one
  // for the Coordinator.
  bool Authenticate(const std::shared_ptr<Connection>& c, const net::Message& message) {
    if (config.secret.empty()) {
      if (!IsAuthMessage(message)) return true;
      RefuseAuth(c, "this coordinator runs without a group secret, but the peer has one");
      return false;
    }
    if (c->authed) {
      if (!IsAuthMessage(message)) return true;
      RefuseAuth(c, "a second authentication on one connection");
      return false;
    }
    if (!c->challenged) {
      const auto* hello = std::get_if<net::AuthHello>(&message);
      if (hello == nullptr) {
        RefuseAuth(c, "this group requires its secret; the peer sent " +
                          std::string(net::MsgTypeName(net::TypeOf(message))) +
                          " without authenticating");
        return false;
      }
      if (Status s = net::RandomNonce(&c->server_nonce); !s.ok()) {
        Drop(c, s.message(), spdlog::level::err);
        return false;
      }
      c->client_nonce = hello->nonce;
      c->challenged = true;
      Send(c, net::AuthChallenge{c->server_nonce, net::ServerProof(config.secret, c->client_nonce,
                                                                   c->server_nonce, c->binding)});
      return true;
    }
    const auto* proof = std::get_if<net::AuthProof>(&message);
    if (proof == nullptr ||
        !net::MacEqual(proof->proof,
                       net::ClientProof(config.secret, c->client_nonce, c->server_nonce,
                                        c->binding))) {
      RefuseAuth(c, proof == nullptr ? "expected AuthProof" : "wrong group secret");
      return false;
    }
    c->authed = true;
    return true;
  }

  void RefuseAuth(const std::shared_ptr<Connection>& c, const std::string& why) {
    spdlog::warn("refusing connection {} from {}: {}", c->id, c->peer, why);
    Send(c, net::Reject{SHOAL_ERR_AUTH, why});
    BeginClose(c);
    CarryOut();
  }

  // A frame that did not decode: log it, close the connection, tell the Coordinator. A frame of
  // another protocol version gets a Reject first (docs/protocol.md: "Reject ... bad version"), so
  // that a peer built from another release learns why.
  void RefuseFrame(const std::shared_ptr<Connection>& c, const Status& s) {
    std::uint32_t magic = std::uint32_t{c->header[0]} | std::uint32_t{c->header[1]} << 8 |
                          std::uint32_t{c->header[2]} << 16 | std::uint32_t{c->header[3]} << 24;
    std::uint16_t version = static_cast<std::uint16_t>(c->header[4] | c->header[5] << 8);
    if (magic == net::kMagic && version != net::kProtocolVersion) {
      spdlog::warn("rejecting connection {} from {}: {}", c->id, c->peer, s.message());
      Send(c, net::Reject{SHOAL_ERR_REJECTED, s.message()});
      BeginClose(c);
      CarryOut();
      return;
    }
    Drop(c, "malformed frame: " + s.message(), spdlog::level::warn);
  }

  // --- Writing and closing ---------------------------------------------------------------------

  void Send(const std::shared_ptr<Connection>& c, const net::Message& message) {
    net::Encode(message, &c->queued);
    std::size_t backlog_bytes = c->writing.size() + c->queued.size();
    if (backlog_bytes > config.write_queue_bytes_max) {
      spdlog::warn("closing connection {} from {}: it does not read ({} bytes queued, limit {})",
                   c->id, c->peer, backlog_bytes, config.write_queue_bytes_max);
      Finish(c);
      return;
    }
    if (!c->write_in_flight) StartWrite(c);
  }

  void StartWrite(const std::shared_ptr<Connection>& c) {
    assert(!c->write_in_flight && !c->queued.empty());
    std::swap(c->writing, c->queued);
    c->queued.clear();
    c->write_in_flight = true;
    asio::async_write(c->socket, asio::buffer(c->writing),
                      [this, c](const asio::error_code& ec, std::size_t) {
                        c->write_in_flight = false;
                        if (stopping || c->finished) return;
                        if (ec) {
                          Drop(c, "write failed: " + ec.message());
                          return;
                        }
                        if (c->writing.capacity() > kBufferKeepBytes) {
                          c->writing = std::vector<std::uint8_t>();
                        } else {
                          c->writing.clear();
                        }
                        if (!c->queued.empty()) {
                          StartWrite(c);
                        } else if (c->closing && !c->draining) {
                          Finish(c);
                          CarryOut();
                        }
                      });
  }

  void BeginClose(const std::shared_ptr<Connection>& c) {
    if (c->closing || c->finished) return;
    c->closing = true;
    if (!c->write_in_flight && c->queued.empty()) {
      Finish(c);
      return;
    }
    c->close_timer.expires_after(std::chrono::milliseconds(config.close_flush_timeout_ms));
    c->close_timer.async_wait([this, c](const asio::error_code& ec) {
      if (ec || stopping || c->finished) return;
      spdlog::debug("connection {} from {}: queued writes did not flush within {} ms", c->id,
                    c->peer, config.close_flush_timeout_ms);
      Finish(c);
      CarryOut();
    });
  }

  // Closes the socket, forgets the connection and queues its OnDisconnect for CarryOut().
  void Finish(const std::shared_ptr<Connection>& c) {
    if (c->finished) return;
    c->finished = true;
    asio::error_code ec;
    c->close_timer.cancel();
    // shutdown first: the FIN then follows the bytes already written.
    c->socket.shutdown(ec);
    c->socket.close(ec);
    connections.erase(c->id);
    lost.push_back(c->id);
    spdlog::debug("connection {} from {} closed ({} open)", c->id, c->peer, connections.size());
  }

  // The connection failed (I/O error, end of stream, bad frame): log, finish, tell the Coordinator.
  void Drop(const std::shared_ptr<Connection>& c, const std::string& why,
            spdlog::level::level_enum level = spdlog::level::info) {
    spdlog::log(level, "connection {} from {}: {}", c->id, c->peer, why);
    Finish(c);
    CarryOut();
  }

  // --- Carrying out the Coordinator's outputs --------------------------------------------------

  void CarryOut() {
    assert(!carrying_out && "CarryOut is not reentrant");
    carrying_out = true;
    std::size_t next = 0;
    for (;;) {
      for (; next < outputs.size(); next++) Apply(outputs[next]);
      if (lost.empty()) break;
      ConnId id = lost.front();
      lost.pop_front();
      coordinator->OnDisconnect(id, MonotonicNowMs(), &outputs);
    }
    outputs.clear();
    carrying_out = false;
  }

  void Apply(const Output& o) {
    auto it = connections.find(o.conn);
    if (it == connections.end() || it->second->closing) {
      // The connection went away after the Coordinator decided; its OnDisconnect is queued or done.
      spdlog::trace("output for connection {} dropped: connection gone or closing", o.conn);
      return;
    }
    std::shared_ptr<Connection> c = it->second;
    switch (o.kind) {
      case Output::Kind::kSend:
        Send(c, o.message);
        return;
      case Output::Kind::kClose:
        BeginClose(c);
        return;
    }
    assert(false && "unknown Output::Kind");
  }

  // --- Time ------------------------------------------------------------------------------------

  void ScheduleTick() {
    TimeMs period_ms = std::max<TimeMs>(1, config.coordinator.heartbeat_interval_ms / 2);
    TimeMs now_ms = MonotonicNowMs();
    next_tick_ms += period_ms;
    if (next_tick_ms < now_ms) next_tick_ms = now_ms;  // fell behind: do not burst to catch up
    tick_timer.expires_after(std::chrono::milliseconds(next_tick_ms - now_ms));
    tick_timer.async_wait([this](const asio::error_code& ec) {
      if (ec || stopping) return;
      TimeMs tick_now_ms = MonotonicNowMs();
      coordinator->OnTick(tick_now_ms, &outputs);
      CarryOut();
      PruneBuckets(tick_now_ms);
      ScheduleTick();
    });
  }

  // --- State -----------------------------------------------------------------------------------

  const ServerConfig config;
  asio::io_context io;  // declared before everything that uses it, so destroyed after them
  tcp::acceptor acceptor;
  asio::steady_timer tick_timer;
  asio::steady_timer accept_retry_timer;
  asio::signal_set signals;
  std::unique_ptr<Coordinator> coordinator;  // made by Start(), after the config is validated
  std::shared_ptr<net::TlsContext> tls_context;  // made by Start(); shared by TLS connections

  std::unordered_map<ConnId, std::shared_ptr<Connection>> connections;  // open or closing
  std::map<asio::ip::address, AttemptBucket> buckets;
  ConnId next_conn_id = 1;
  std::vector<Output> outputs;  // of the Coordinator calls being carried out
  std::deque<ConnId> lost;      // finished connections whose OnDisconnect is due
  bool carrying_out = false;

  TimeMs next_tick_ms = 0;
  TimeMs refusal_logged_ms = -kRefusalLogIntervalMs;
  std::uint64_t refusals_unlogged = 0;

  std::uint16_t bound_port = 0;
  std::string listen_address;
  bool started = false;
  bool ran = false;
  bool stopping = false;
};

Server::Server(ServerConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}

Server::~Server() = default;

Status Server::Start() { return impl_->Start(); }

std::uint16_t Server::port() const {
  assert(impl_->started);
  return impl_->bound_port;
}

void Server::Run() { impl_->Run(); }

void Server::Stop() {
  Impl* impl = impl_.get();
  asio::post(impl->io, [impl] { impl->Shutdown(); });
}

}  // namespace shoal::coord
