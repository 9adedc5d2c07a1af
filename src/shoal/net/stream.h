// Stream: one TCP connection of shoal, plain or TLS (net/tls.h), with the small surface that the
// code reading and writing frames needs: Asio's AsyncReadStream/AsyncWriteStream (so
// asio::async_read/async_write compose over it), cancel, close.
//
// Why not a virtual interface: the plain path keeps its speed. A Stream is a concrete type; each
// read or write *operation* (not each byte) branches once on tls(), and the plain branch is the
// same asio::ip::tcp::socket call as before, with no extra copy.
//
// cancel() keeps the guarantee the engine and the transfers rely on for a plain socket: once it
// returns, no operation that was pending writes into the caller's buffers. A plain socket gives it
// by construction (the kernel copies into the buffer before the completion is queued). A TLS
// stream decrypts into the caller's buffer in the completion of its own read of the socket, which
// may already be queued when cancel() runs; GuardedSocket below turns every such completion into
// operation_aborted, so OpenSSL never gets the bytes and never writes the caller's buffer.
// (Those bytes are lost and the TLS stream is then unusable, as a cancelled connection is anyway:
// a connection that had an error is never reused.)
//
// Thread safety: none; all calls and handlers on the thread of the socket's io_context (as for an
// Asio socket). At most one read and one write operation pending at a time. Movable while no
// operation is pending; a TLS stream's state lives on the heap, so handlers never see it move.
#pragma once

#include <asio.hpp>
#include <asio/ssl.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "shoal/net/tls.h"
#include "shoal/status.hpp"

namespace shoal::net {

// The next layer under a TLS stream: a TCP socket whose cancel() also voids completions that are
// already queued (see the comment at the top).
class GuardedSocket {
 public:
  using executor_type = asio::ip::tcp::socket::executor_type;
  using lowest_layer_type = asio::ip::tcp::socket;

  explicit GuardedSocket(asio::ip::tcp::socket socket) : socket_(std::move(socket)) {}

  executor_type get_executor() { return socket_.get_executor(); }
  lowest_layer_type& lowest_layer() { return socket_; }
  const lowest_layer_type& lowest_layer() const { return socket_; }

  template <typename MutableBuffers, typename Handler>
  void async_read_some(const MutableBuffers& buffers, Handler&& handler) {
    socket_.async_read_some(buffers, Guard<std::decay_t<Handler>>{this, generation_,
                                                                  std::forward<Handler>(handler)});
  }
  template <typename ConstBuffers, typename Handler>
  void async_write_some(const ConstBuffers& buffers, Handler&& handler) {
    socket_.async_write_some(buffers, Guard<std::decay_t<Handler>>{this, generation_,
                                                                   std::forward<Handler>(handler)});
  }
  void cancel(asio::error_code& ec) {
    generation_++;
    socket_.cancel(ec);
  }

 private:
  template <typename Handler>
  struct Guard {
    GuardedSocket* owner;
    std::uint64_t generation;
    Handler handler;
    void operator()(asio::error_code ec, std::size_t bytes) {
      if (owner->generation_ != generation) {
        ec = asio::error::operation_aborted;
        bytes = 0;
      }
      std::move(handler)(ec, bytes);
    }
  };

  asio::ip::tcp::socket socket_;
  std::uint64_t generation_ = 0;  // cancel() count; a completion from an older one is voided
};

class Stream {
 public:
  using executor_type = asio::ip::tcp::socket::executor_type;
  using lowest_layer_type = asio::ip::tcp::socket;
  enum class Role { kClient, kServer };  // TLS handshake role: the connecting side is the client

  // A plain stream over `socket` (connected or not yet).
  explicit Stream(asio::ip::tcp::socket socket) : socket_(std::move(socket)) {}
  explicit Stream(asio::io_context& io) : socket_(io) {}
  Stream(Stream&&) noexcept = default;
  Stream& operator=(Stream&&) noexcept = default;

  // Turns this plain stream into a TLS one; the handshake is still to run (AsyncHandshake).
  // REQUIRES: !tls(), connected, no operation pending.
  void UseTls(std::shared_ptr<TlsContext> context);
  bool tls() const { return tls_ != nullptr; }

  // Runs the TLS handshake. REQUIRES: tls(). Handler: void(const asio::error_code&).
  template <typename Handler>
  void AsyncHandshake(Role role, Handler&& handler) {
    tls_->ssl.async_handshake(role == Role::kClient ? asio::ssl::stream_base::client
                                                    : asio::ssl::stream_base::server,
                              std::forward<Handler>(handler));
  }
  // The channel binding of this connection: empty when plain, the TLS exporter value otherwise.
  // REQUIRES: the handshake completed, if tls().
  Status GetChannelBinding(ChannelBinding* out);

  // Asio stream concepts.
  executor_type get_executor() { return lowest_layer().get_executor(); }
  lowest_layer_type& lowest_layer() { return tls_ ? tls_->ssl.lowest_layer() : socket_; }
  const lowest_layer_type& lowest_layer() const {
    return tls_ ? tls_->ssl.lowest_layer() : socket_;
  }
  template <typename MutableBuffers, typename Handler>
  void async_read_some(const MutableBuffers& buffers, Handler&& handler) {
    if (tls_) {
      tls_->ssl.async_read_some(buffers, std::forward<Handler>(handler));
    } else {
      socket_.async_read_some(buffers, std::forward<Handler>(handler));
    }
  }
  template <typename ConstBuffers, typename Handler>
  void async_write_some(const ConstBuffers& buffers, Handler&& handler) {
    if (tls_) {
      tls_->ssl.async_write_some(buffers, std::forward<Handler>(handler));
    } else {
      socket_.async_write_some(buffers, std::forward<Handler>(handler));
    }
  }

  // Cancels pending operations; none of them touches its buffers after this (see above).
  void cancel(asio::error_code& ec);
  void shutdown(asio::error_code& ec) {
    lowest_layer().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  }
  void close(asio::error_code& ec) { lowest_layer().close(ec); }
  bool is_open() const { return lowest_layer().is_open(); }

 private:
  struct Tls {
    Tls(asio::ip::tcp::socket socket, std::shared_ptr<TlsContext> context_in)
        : context(std::move(context_in)), ssl(GuardedSocket(std::move(socket)),
                                              context->asio_context()) {}
    std::shared_ptr<TlsContext> context;  // outlives `ssl`, which refers to it
    asio::ssl::stream<GuardedSocket> ssl;
  };

  asio::ip::tcp::socket socket_;  // the connection while plain; moved into tls_ by UseTls
  std::unique_ptr<Tls> tls_;
};

// Reads, without consuming it, the first byte a newly accepted connection sends, and tells
// whether it opens a TLS handshake (kTlsHandshakeRecordType) or a plain shoal frame. The caller
// bounds the wait (it closes the socket at its deadline). Handler: void(const asio::error_code&,
// bool tls).
template <typename Handler>
void AsyncDetectTls(asio::ip::tcp::socket& socket, Handler&& handler) {
  auto byte = std::make_shared<std::uint8_t>(0);
  socket.async_receive(asio::buffer(byte.get(), 1), asio::socket_base::message_peek,
                       [byte, handler = std::forward<Handler>(handler)](
                           const asio::error_code& ec, std::size_t n) mutable {
                         if (!ec && n == 0) {
                           handler(asio::error_code(asio::error::eof), false);
                           return;
                         }
                         handler(ec, !ec && *byte == kTlsHandshakeRecordType);
                       });
}

// "TLS handshake failed: <reason>" in words a user can act on.
std::string TlsErrorText(const asio::error_code& ec);

}  // namespace shoal::net
