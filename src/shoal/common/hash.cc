#include "shoal/common/hash.h"

#include <xxhash.h>

namespace shoal {

std::uint64_t ContentHash(const void* data, std::size_t bytes) {
  return XXH3_64bits(bytes == 0 ? nullptr : data, bytes);
}

}  // namespace shoal
