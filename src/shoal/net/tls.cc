#include "shoal/net/tls.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstring>
#include <string>

namespace shoal::net {
namespace {

constexpr char kExporterLabel[] = "EXPORTER-shoal-auth";
constexpr long kCertificateDaysValid = 3650;  // never checked; a far end so clocks do not matter

std::string OpenSslError(const std::string& what) {
  unsigned long e = ERR_get_error();
  char text[256] = "unknown error";
  if (e != 0) ERR_error_string_n(e, text, sizeof(text));
  ERR_clear_error();
  return what + ": " + text;
}

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};

Status MakeSelfSigned(std::unique_ptr<EVP_PKEY, PkeyFree>* key_out,
                      std::unique_ptr<X509, X509Free>* cert_out) {
  std::unique_ptr<EVP_PKEY, PkeyFree> key(EVP_EC_gen("P-256"));
  if (!key) return Status(SHOAL_ERR_IO, OpenSslError("TLS key generation failed"));
  std::unique_ptr<X509, X509Free> cert(X509_new());
  if (!cert) return Status(SHOAL_ERR_IO, OpenSslError("X509_new failed"));
  std::uint8_t serial[8];
  if (RAND_bytes(serial, sizeof(serial)) != 1) {
    return Status(SHOAL_ERR_IO, OpenSslError("no random bytes for the certificate serial"));
  }
  std::uint64_t serial_value = 0;
  std::memcpy(&serial_value, serial, sizeof(serial));
  bool ok = X509_set_version(cert.get(), 2) == 1 &&
            ASN1_INTEGER_set_uint64(X509_get_serialNumber(cert.get()), serial_value >> 1) == 1 &&
            X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) != nullptr &&
            X509_gmtime_adj(X509_getm_notAfter(cert.get()),
                            60L * 60 * 24 * kCertificateDaysValid) != nullptr &&
            X509_set_pubkey(cert.get(), key.get()) == 1;
  X509_NAME* name = X509_get_subject_name(cert.get());
  ok =
      ok && name != nullptr &&
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>("shoal"), -1, -1, 0) == 1 &&
      X509_set_issuer_name(cert.get(), name) == 1 &&
      X509_sign(cert.get(), key.get(), EVP_sha256()) > 0;
  if (!ok) return Status(SHOAL_ERR_IO, OpenSslError("making the self-signed certificate failed"));
  *key_out = std::move(key);
  *cert_out = std::move(cert);
  return Status::Ok();
}

}  // namespace

Status TlsContext::Create(std::shared_ptr<TlsContext>* out) {
  std::shared_ptr<TlsContext> tls(new TlsContext());
  SSL_CTX* ctx = tls->context_.native_handle();
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) {
    return Status(SHOAL_ERR_IO, OpenSslError("this OpenSSL cannot restrict itself to TLS 1.3"));
  }
  if (SSL_CTX_set_ciphersuites(
          ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256") != 1) {
    return Status(SHOAL_ERR_IO, OpenSslError("setting the TLS 1.3 cipher suites failed"));
  }
  // Connections are never resumed (each one authenticates afresh), and tickets would only cost a
  // message after every handshake.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  std::unique_ptr<EVP_PKEY, PkeyFree> key;
  std::unique_ptr<X509, X509Free> cert;
  if (Status s = MakeSelfSigned(&key, &cert); !s.ok()) return s;
  if (SSL_CTX_use_certificate(ctx, cert.get()) != 1 ||
      SSL_CTX_use_PrivateKey(ctx, key.get()) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
    return Status(SHOAL_ERR_IO, OpenSslError("installing the TLS key and certificate failed"));
  }
  *out = std::move(tls);
  return Status::Ok();
}

Status ExportChannelBinding(SSL* ssl, ChannelBinding* out) {
  out->assign(kChannelBindingBytes, 0);
  if (SSL_export_keying_material(ssl, out->data(), out->size(), kExporterLabel,
                                 sizeof(kExporterLabel) - 1, nullptr, 0, 0) != 1) {
    out->clear();
    return Status(SHOAL_ERR_IO, OpenSslError("TLS exporter failed"));
  }
  return Status::Ok();
}

}  // namespace shoal::net
