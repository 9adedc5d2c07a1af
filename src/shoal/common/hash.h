// Content hashes of tensors: xxHash3, 64 bits, seed 0 (Debian's libxxhash). Used to compare
// shared-state tensors between members and to check the bytes a transfer delivered. Not
// cryptographic: it detects corruption and divergence, not tampering (that is the group secret's
// job). Stateless; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

namespace shoal {

std::uint64_t ContentHash(const void* data, std::size_t bytes);

}  // namespace shoal
