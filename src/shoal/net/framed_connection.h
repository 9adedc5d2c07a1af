// FramedConnection: a TCP connection (plain or TLS, net/stream.h) that carries shoal control
// frames (codec.h) in both directions over Asio: it reads frames and hands each decoded Message to
// a callback, and queues messages for writing in order. It is the connecting side's connection:
// over TLS, Start() runs the client handshake first, and messages sent meanwhile wait for it.
//
// Thread safety: all methods and callbacks run on the connection's io_context thread (the
// owner posts to it). Lifetime: shared_ptr; pending operations hold a reference, so the object
// lives until they finish after Close(). A connection that had an error is closed and never reused.
#pragma once

#include <asio.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "shoal/status.hpp"
#include "shoal/net/codec.h"
#include "shoal/net/messages.h"
#include "shoal/net/stream.h"

namespace shoal::net {

class FramedConnection : public std::enable_shared_from_this<FramedConnection> {
 public:
  using MessageHandler = std::function<void(Message&&)>;
  // Called once, when the connection ends for any reason other than Close().
  using CloseHandler = std::function<void(const Status&)>;

  // REQUIRES: `stream` is connected; if it is TLS, its handshake has not run yet.
  FramedConnection(Stream stream, std::uint32_t payload_bytes_max,
                   std::size_t write_queue_bytes_max);

  void Start(MessageHandler on_message, CloseHandler on_close);
  // Queues `message`. If the queue would exceed its limit the connection fails (the reader is not
  // keeping up) and the close handler runs.
  void Send(const Message& message);
  // Closes now; no handler runs after this.
  void Close();
  bool closed() const { return closed_; }
  std::string remote() const { return remote_; }
  // Empty for a plain connection; the TLS exporter value once the handshake is done.
  const ChannelBinding& channel_binding() const { return channel_binding_; }

 private:
  void Handshake();
  void ReadHeader();
  void ReadPayload(FrameHeader header);
  void WriteNext();
  void Fail(Status status);

  Stream socket_;
  ChannelBinding channel_binding_;
  std::uint32_t payload_bytes_max_;
  std::size_t write_queue_bytes_max_;
  MessageHandler on_message_;
  CloseHandler on_close_;
  std::uint8_t header_[kHeaderBytes];
  std::vector<std::uint8_t> payload_;
  std::deque<std::vector<std::uint8_t>> write_queue_;
  std::size_t write_queue_bytes_ = 0;
  bool writing_ = false;
  bool closed_ = false;
  std::string remote_;
};

// Sets TCP_NODELAY (and keep-alive) on a connected socket; errors are ignored (best effort).
void TuneSocket(asio::ip::tcp::socket& socket);

// TuneSocket, and for a data stream (ring or transfer) a send buffer of DataSendBufferBytes()
// when that is larger than what the kernel's autotuning may reach (best effort).
void TuneDataSocket(asio::ip::tcp::socket& socket);

// The SO_SNDBUF a data stream asks for: limits::kDataSendBufferBytes capped by net.core.wmem_max,
// or 0 (leave it to autotuning) when the kernel would give no more than net.ipv4.tcp_wmem's
// maximum, which autotuning reaches by itself. Read once from /proc/sys (this network namespace).
std::size_t DataSendBufferBytes();

// "host:port" of the remote end, or "?" when unknown.
std::string RemoteName(const asio::ip::tcp::socket& socket);

}  // namespace shoal::net
