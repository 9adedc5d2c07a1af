// TLS for shoal connections (docs/protocol.md, "TLS"): the OpenSSL context every TLS connection of
// a process uses, and the channel binding that ties the group-secret proofs (net/auth.h) to one
// TLS session.
//
// Choices (why, in docs/protocol.md):
//   - TLS 1.3 only; AES-128-GCM preferred (the cheapest AEAD on CPUs with AES instructions), the
//     other TLS 1.3 suites allowed.
//   - No CA: each process makes an ephemeral P-256 key and a self-signed certificate when it first
//     needs TLS; neither side verifies the other's certificate. Authentication is the group-secret
//     HMAC exchange, run inside the TLS channel with the session's exporter value mixed into both
//     proofs, so a man in the middle who terminates two TLS sessions cannot relay the proofs.
//     Without a secret, TLS protects against passive eavesdroppers only.
//
// Thread safety: TlsContext is immutable after Create and may be shared by any number of
// connections on any threads (OpenSSL's SSL_CTX is thread-safe for creating sessions).
#pragma once

#include <asio/ssl.hpp>
#include <cstdint>
#include <memory>
#include <vector>

#include "shoal/net/auth.h"
#include "shoal/status.hpp"

namespace shoal::net {

// The first byte of a TLS record that carries a handshake message (a ClientHello, first thing a
// TLS client sends). Never the first byte of a shoal frame (codec.h: the magic starts with 'S').
inline constexpr std::uint8_t kTlsHandshakeRecordType = 0x16;

class TlsContext {
 public:
  // Makes the context with a fresh ephemeral key and self-signed certificate. SHOAL_ERR_IO if
  // OpenSSL fails (the message carries OpenSSL's reason).
  static Status Create(std::shared_ptr<TlsContext>* out);

  asio::ssl::context& asio_context() { return context_; }

 private:
  TlsContext() : context_(asio::ssl::context::tls) {}
  asio::ssl::context context_;
};

// The exporter value of an established TLS session (RFC 8446 section 7.5, label
// "EXPORTER-shoal-auth"): the same on both ends of one session, different for every session.
Status ExportChannelBinding(SSL* ssl, ChannelBinding* out);

}  // namespace shoal::net
