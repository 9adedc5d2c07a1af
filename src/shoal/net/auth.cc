#include "shoal/net/auth.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstring>
#include <vector>

#include "shoal/common/check.h"

namespace shoal::net {
namespace {

Mac Hmac(const std::string& secret, const char* label, const Nonce& a, const Nonce& b,
         const ChannelBinding& binding) {
  std::vector<std::uint8_t> msg(std::strlen(label));
  std::memcpy(msg.data(), label, msg.size());
  msg.insert(msg.end(), a.begin(), a.end());
  msg.insert(msg.end(), b.begin(), b.end());
  msg.insert(msg.end(), binding.begin(), binding.end());
  Mac out{};
  unsigned int len = 0;
  const unsigned char* r =
      HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), msg.data(), msg.size(),
           out.data(), &len);
  // HMAC-SHA256 with a valid key and output buffer fails only if OpenSSL itself is broken.
  SHOAL_CHECK_MSG(r != nullptr && len == kMacBytes, "OpenSSL HMAC-SHA256 failed");
  return out;
}

}  // namespace

Status RandomNonce(Nonce* out) {
  if (RAND_bytes(out->data(), static_cast<int>(out->size())) != 1) {
    return Status(SHOAL_ERR_IO, "OpenSSL could not produce random bytes (error " +
                                    std::to_string(ERR_get_error()) + ")");
  }
  return Status::Ok();
}

Mac ServerProof(const std::string& secret, const Nonce& client, const Nonce& server,
                const ChannelBinding& binding) {
  return Hmac(secret, "shoal/1 server", client, server, binding);
}

Mac ClientProof(const std::string& secret, const Nonce& client, const Nonce& server,
                const ChannelBinding& binding) {
  return Hmac(secret, "shoal/1 client", server, client, binding);
}

bool MacEqual(const Mac& a, const Mac& b) { return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0; }

}  // namespace shoal::net
