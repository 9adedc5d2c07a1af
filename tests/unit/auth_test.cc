// Unit tests of the group-secret proofs (net/auth.h). The expected MACs were computed with
// Python's hmac and hashlib modules, an implementation independent of OpenSSL's API as used here:
//   hmac.new(b"correct horse", b"shoal/1 server" + client + server, hashlib.sha256)
#include "shoal/net/auth.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

namespace shoal::net {
namespace {

std::string HexOf(const Mac& m) {
  std::string s;
  char buf[3];
  for (std::uint8_t b : m) {
    std::snprintf(buf, sizeof buf, "%02x", b);
    s += buf;
  }
  return s;
}

struct Nonces {
  Nonce client{}, server{};
  Nonces() {
    for (std::size_t i = 0; i < kNonceBytes; i++) {
      client[i] = static_cast<std::uint8_t>(i);
      server[i] = static_cast<std::uint8_t>(32 + i);
    }
  }
};

TEST(AuthTest, ProofsMatchAnIndependentHmacSha256) {
  Nonces n;
  EXPECT_EQ(HexOf(ServerProof("correct horse", n.client, n.server)),
            "8272220cff7c7eb02daf0ec2466c4ba8d71513333a34971bba890eff11e4560f");
  EXPECT_EQ(HexOf(ClientProof("correct horse", n.client, n.server)),
            "5b0cad2d108ae469b7961bac9b3b9e422b41dff345642b72d729656947b4b32a");
}

TEST(AuthTest, TheTwoSidesProofsDifferSoNeitherCanBeReflected) {
  Nonces n;
  EXPECT_FALSE(MacEqual(ServerProof("s", n.client, n.server), ClientProof("s", n.client, n.server)));
  // Swapping the nonces does not turn one side's proof into the other's either.
  EXPECT_FALSE(MacEqual(ServerProof("s", n.server, n.client), ClientProof("s", n.client, n.server)));
}

TEST(AuthTest, AnotherSecretOrNonceGivesAnotherProof) {
  Nonces n;
  Mac good = ClientProof("secret", n.client, n.server);
  EXPECT_TRUE(MacEqual(good, ClientProof("secret", n.client, n.server)));
  EXPECT_FALSE(MacEqual(good, ClientProof("Secret", n.client, n.server)));
  EXPECT_FALSE(MacEqual(good, ClientProof("", n.client, n.server)));
  Nonce other = n.server;
  other[31] ^= 1;
  EXPECT_FALSE(MacEqual(good, ClientProof("secret", n.client, other)));
}

TEST(AuthTest, BinarySecretsWithZeroBytesAreWhole) {
  Nonces n;
  std::string a("ab\0cd", 5), b("ab\0ce", 5);
  EXPECT_FALSE(MacEqual(ServerProof(a, n.client, n.server), ServerProof(b, n.client, n.server)));
}

TEST(AuthTest, NoncesAreFresh) {
  Nonce a{}, b{};
  ASSERT_TRUE(RandomNonce(&a).ok());
  ASSERT_TRUE(RandomNonce(&b).ok());
  EXPECT_NE(a, b);
}

}  // namespace
}  // namespace shoal::net
