// Server: the I/O shell of shoal-coord around the Coordinator state machine (coordinator.h).
//
// It owns a listening TCP socket and one control connection per peer on a single-threaded
// asio::io_context. For every connection it reads frames (12-byte header, then the payload; both
// decoded by net/codec.h against limits::kControlPayloadBytesMax before any allocation), feeds the
// Coordinator OnConnect / OnMessage / OnDisconnect and a periodic OnTick with the monotonic time,
// and carries out the Outputs it returns, in order.
//
// Robustness, all enforced here rather than in the state machine:
//   - A frame that does not decode is logged with the peer's address and its connection closed;
//     the Coordinator sees OnDisconnect. Everyone else is unaffected.
//   - A frame of an unsupported protocol version is answered with Reject before the close.
//   - Payload memory grows with the bytes actually received, never with the announced length.
//   - Each connection has a bounded write queue; a peer that does not read is closed.
//   - The number of connections is bounded (connections_max), and each remote address has a
//     token bucket of connection attempts; attempts over either limit are closed at once.
//   - A Close output closes the socket after its queued writes flush, or after
//     close_flush_timeout_ms at the latest.
//   - With a group secret, a connection must pass the HMAC challenge-response (net/auth.h) before
//     the Coordinator sees any of its messages; a peer without the secret, or with another one,
//     gets Reject{SHOAL_ERR_AUTH} and the close, and the attempt is logged with its address.
//   - With tls, each connection runs the TLS 1.3 handshake first (bounded by the Coordinator's
//     Hello deadline) and the secret's proofs are bound to the TLS session (net/auth.h).
//
// Thread safety: Start() and Run() are called from one thread (the one that owns the Server).
// Stop() may be called from any thread, before or during Run(). Stop() is not async-signal-safe:
// to stop on signals, list them in ServerConfig::stop_signals (they are handled with an
// asio::signal_set, which is).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "shoal/common/limits.h"
#include "shoal/status.hpp"
#include "shoal/coord/coordinator.h"

namespace shoal::coord {

struct ServerConfig {
  std::string listen_host = "127.0.0.1";  // an IPv4/IPv6 address or a name that resolves to one
  std::uint16_t port = 0;                 // 0: the OS picks one; see Server::port()
  Config coordinator;

  std::uint32_t connections_max = limits::kConnectionsMax;  // open connections at once
  // Per remote address: a burst of accept_burst connection attempts, refilled at
  // accept_rate_per_s. An attempt without a token is closed at once.
  std::uint32_t accept_burst = 256;
  std::uint32_t accept_rate_per_s = 64;
  std::size_t write_queue_bytes_max = std::size_t{64} << 20;  // per connection
  std::uint32_t close_flush_timeout_ms = 2000;  // how long a Close waits for queued writes
  // The group secret (any bytes; empty: no authentication). Every peer must hold the same one.
  std::string secret;
  // TLS 1.3 on every connection (docs/protocol.md, "TLS"). Peers must match: a TLS peer of a
  // plain coordinator, or the reverse, gets Reject{SHOAL_ERR_PROTOCOL} saying which side differs.
  bool tls = false;

  // Signals that stop Run() (e.g. SIGINT, SIGTERM). Empty: the server installs no handlers.
  std::vector<int> stop_signals;
};

class Server {
 public:
  explicit Server(ServerConfig config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Resolves the listen address, binds and listens. Errors are SHOAL_ERR_IO (bind, resolve) or
  // SHOAL_ERR_INVALID_ARGUMENT (a bad config). REQUIRES: not started yet.
  Status Start();

  // The bound port. REQUIRES: Start() returned ok.
  std::uint16_t port() const;

  // Serves until Stop() is called or a stop signal arrives; then closes every connection and the
  // listener and returns. REQUIRES: Start() returned ok; Run() has not been called before.
  void Run();

  // Makes Run() return (or return at once, if it has not started yet). Thread-safe; idempotent.
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Checks a ServerConfig and the Config inside it against limits.h and against each other (for
// example heartbeat timeout above the interval). Start() calls it; shoal-coord calls it to report
// bad flags before binding. Errors are SHOAL_ERR_INVALID_ARGUMENT naming the field.
Status ValidateServerConfig(const ServerConfig& config);

}  // namespace shoal::coord
