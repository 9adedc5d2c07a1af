// Group-secret authentication (docs/protocol.md, "Authentication"): a mutual HMAC-SHA256
// challenge-response that every connection of a group with a secret runs before its first
// protocol message, peer to coordinator and peer to peer alike:
//
//   connecting side                       accepting side
//   AuthHello{client_nonce}          ->
//                                    <-   AuthChallenge{server_nonce, ServerProof}
//   AuthProof{ClientProof}           ->   (then Hello or DataHello as usual)
//
// Each side proves that it holds the secret over a nonce the other side chose, so a recorded
// exchange cannot be replayed, and the two proofs carry different labels, so one side's proof
// cannot be reflected back as the other's. The secret never crosses the wire. This authenticates;
// it does not encrypt (that is TLS's job).
//
// Over TLS (net/tls.h) the exchange runs inside the TLS channel and both proofs also cover the
// session's channel binding (its exporter value): a man in the middle who terminates one TLS
// session towards each side sees two different bindings, so a proof relayed from one session does
// not verify on the other. Over a plain connection the binding is empty and the proofs are those
// of protocol version 1 without TLS.
//
// Stateless functions; thread-safe. OpenSSL (libssl-dev) provides HMAC-SHA256, the random nonces
// and the constant-time comparison.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include <vector>

#include "shoal/status.hpp"

namespace shoal::net {

inline constexpr std::size_t kNonceBytes = 32;
inline constexpr std::size_t kMacBytes = 32;  // HMAC-SHA256
using Nonce = std::array<std::uint8_t, kNonceBytes>;
using Mac = std::array<std::uint8_t, kMacBytes>;
// Bytes of the TLS exporter value mixed into the proofs (net/tls.h).
inline constexpr std::size_t kChannelBindingBytes = 32;
// Empty for a plain connection; kChannelBindingBytes from the TLS exporter otherwise.
using ChannelBinding = std::vector<std::uint8_t>;

// A fresh nonce from OpenSSL's CSPRNG; IO error if it cannot produce one.
Status RandomNonce(Nonce* out);

// The accepting side's proof: HMAC-SHA256(secret, "shoal/1 server" || client || server || binding).
Mac ServerProof(const std::string& secret, const Nonce& client, const Nonce& server,
                const ChannelBinding& binding = {});
// The connecting side's proof:
// HMAC-SHA256(secret, "shoal/1 client" || server || client || binding).
Mac ClientProof(const std::string& secret, const Nonce& client, const Nonce& server,
                const ChannelBinding& binding = {});

// Compares in time independent of where the MACs differ.
bool MacEqual(const Mac& a, const Mac& b);

}  // namespace shoal::net
