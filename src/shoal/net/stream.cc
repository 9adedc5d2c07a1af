#include "shoal/net/stream.h"

namespace shoal::net {

void Stream::UseTls(std::shared_ptr<TlsContext> context) {
  tls_ = std::make_unique<Tls>(std::move(socket_), std::move(context));
}

Status Stream::GetChannelBinding(ChannelBinding* out) {
  if (!tls_) {
    out->clear();
    return Status::Ok();
  }
  return ExportChannelBinding(tls_->ssl.native_handle(), out);
}

void Stream::cancel(asio::error_code& ec) {
  if (tls_) {
    tls_->ssl.next_layer().cancel(ec);
  } else {
    socket_.cancel(ec);
  }
}

std::string TlsErrorText(const asio::error_code& ec) {
  if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
    return "the other side closed the connection during the TLS handshake (does it use TLS?)";
  }
  return "TLS handshake failed: " + ec.message();
}

}  // namespace shoal::net
