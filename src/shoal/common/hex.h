// A 64-bit value (a peer id, a hash) as 16 lower-case hex digits: the one spelling logs, errors and
// status messages use for them. Stateless; thread-safe.
#pragma once

#include <cstdint>
#include <string>

namespace shoal {

inline std::string Hex64(std::uint64_t v) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; i--, v >>= 4) s[static_cast<std::size_t>(i)] = kDigits[v & 15];
  return s;
}

}  // namespace shoal
