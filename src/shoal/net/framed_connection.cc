#include "shoal/net/framed_connection.h"

#include <algorithm>
#include <fstream>
#include <utility>

#include "shoal/common/limits.h"

namespace shoal::net {

void TuneSocket(asio::ip::tcp::socket& socket) {
  asio::error_code ec;
  socket.set_option(asio::ip::tcp::no_delay(true), ec);
  socket.set_option(asio::socket_base::keep_alive(true), ec);
}

namespace {

// The last number in a /proc/sys file (tcp_wmem holds "min default max"), or 0.
std::size_t LastNumberIn(const char* path) {
  std::ifstream in(path);
  std::size_t value = 0;
  std::size_t last = 0;
  while (in >> value) last = value;
  return last;
}

}  // namespace

std::size_t DataSendBufferBytes() {
  static const std::size_t bytes = [] {
    const std::size_t core_max = LastNumberIn("/proc/sys/net/core/wmem_max");
    const std::size_t autotune_max = LastNumberIn("/proc/sys/net/ipv4/tcp_wmem");
    const std::size_t asked = std::min<std::size_t>(limits::kDataSendBufferBytes, core_max);
    // The kernel doubles SO_SNDBUF (bookkeeping overhead); autotuning stops at tcp_wmem's max.
    return 2 * asked > autotune_max ? asked : std::size_t{0};
  }();
  return bytes;
}

void TuneDataSocket(asio::ip::tcp::socket& socket) {
  TuneSocket(socket);
  if (std::size_t bytes = DataSendBufferBytes()) {
    asio::error_code ec;
    socket.set_option(asio::socket_base::send_buffer_size(static_cast<int>(bytes)), ec);
  }
}

std::string RemoteName(const asio::ip::tcp::socket& socket) {
  asio::error_code ec;
  auto ep = socket.remote_endpoint(ec);
  if (ec) return "?";
  return ep.address().to_string(ec) + ":" + std::to_string(ep.port());
}

FramedConnection::FramedConnection(Stream stream, std::uint32_t payload_bytes_max,
                                   std::size_t write_queue_bytes_max)
    : socket_(std::move(stream)),
      payload_bytes_max_(payload_bytes_max),
      write_queue_bytes_max_(write_queue_bytes_max) {
  TuneSocket(socket_.lowest_layer());
  remote_ = RemoteName(socket_.lowest_layer());
}

void FramedConnection::Start(MessageHandler on_message, CloseHandler on_close) {
  on_message_ = std::move(on_message);
  on_close_ = std::move(on_close);
  if (!socket_.tls()) return ReadHeader();
  Handshake();
}

void FramedConnection::Handshake() {
  writing_ = true;  // Send() queues until the handshake is done
  auto self = shared_from_this();
  socket_.AsyncHandshake(Stream::Role::kClient, [this, self](const asio::error_code& ec) {
    if (closed_) return;
    if (ec) {
      Fail(Status(SHOAL_ERR_PROTOCOL, "TLS with " + remote_ + ": " + TlsErrorText(ec)));
      return;
    }
    if (Status s = socket_.GetChannelBinding(&channel_binding_); !s.ok()) {
      Fail(s);
      return;
    }
    writing_ = false;
    WriteNext();
    ReadHeader();
  });
}

void FramedConnection::ReadHeader() {
  auto self = shared_from_this();
  asio::async_read(socket_, asio::buffer(header_, kHeaderBytes),
                   [this, self](const asio::error_code& ec, std::size_t) {
                     if (closed_) return;
                     if (ec) {
                       Fail(Status(SHOAL_ERR_PEER_LOST, "connection to " + remote_ + " ended: " +
                                                            ec.message()));
                       return;
                     }
                     FrameHeader h;
                     Status s = DecodeHeader(header_, payload_bytes_max_, &h);
                     if (!s.ok()) {
                       Fail(s);
                       return;
                     }
                     ReadPayload(h);
                   });
}

void FramedConnection::ReadPayload(FrameHeader h) {
  payload_.resize(h.payload_bytes);  // bounded by DecodeHeader
  auto self = shared_from_this();
  asio::async_read(socket_, asio::buffer(payload_),
                   [this, self, h](const asio::error_code& ec, std::size_t) {
                     if (closed_) return;
                     if (ec) {
                       Fail(Status(SHOAL_ERR_PEER_LOST, "connection to " + remote_ + " ended: " +
                                                            ec.message()));
                       return;
                     }
                     Message m;
                     Status s = DecodePayload(h.type, payload_.data(), payload_.size(), &m);
                     if (!s.ok()) {
                       Fail(s);
                       return;
                     }
                     on_message_(std::move(m));
                     if (!closed_) ReadHeader();
                   });
}

void FramedConnection::Send(const Message& message) {
  if (closed_) return;
  std::vector<std::uint8_t> frame;
  Encode(message, &frame);
  if (write_queue_bytes_ + frame.size() > write_queue_bytes_max_) {
    Fail(Status(SHOAL_ERR_PROTOCOL, "write queue to " + remote_ + " over its limit"));
    return;
  }
  write_queue_bytes_ += frame.size();
  write_queue_.push_back(std::move(frame));
  if (!writing_) WriteNext();
}

void FramedConnection::WriteNext() {
  if (write_queue_.empty() || closed_) {
    writing_ = false;
    return;
  }
  writing_ = true;
  auto self = shared_from_this();
  asio::async_write(socket_, asio::buffer(write_queue_.front()),
                    [this, self](const asio::error_code& ec, std::size_t) {
                      if (closed_) return;
                      if (ec) {
                        Fail(Status(SHOAL_ERR_PEER_LOST, "write to " + remote_ + " failed: " +
                                                             ec.message()));
                        return;
                      }
                      write_queue_bytes_ -= write_queue_.front().size();
                      write_queue_.pop_front();
                      WriteNext();
                    });
}

void FramedConnection::Fail(Status status) {
  if (closed_) return;
  closed_ = true;
  asio::error_code ec;
  socket_.close(ec);
  write_queue_.clear();
  if (on_close_) {
    CloseHandler h = std::move(on_close_);
    h(status);
  }
}

void FramedConnection::Close() {
  if (closed_) return;
  closed_ = true;
  asio::error_code ec;
  socket_.shutdown(ec);
  socket_.close(ec);
  write_queue_.clear();
  on_close_ = nullptr;
}

}  // namespace shoal::net
