// The --layout of shoal_sync_peer ("dtype:count,dtype:count,..."; tensors named t0, t1, ...), parsed
// in one place for the peer program and the tests that predict what it moves. Header-only.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "shoal/common/dtype.h"

namespace shoal::mp {

struct LayoutTensor {
  shoal_dtype dtype = SHOAL_F32;
  std::uint64_t count = 0;
  std::uint64_t bytes() const { return count * DtypeBytes(dtype); }
};

// "a:1,b:2" as {"a:1", "b:2"} (the lists of --layout and of a SYNC line's senders=).
inline std::vector<std::string> SplitList(const std::string& s) {
  std::vector<std::string> items;
  std::size_t pos = 0;
  while (pos < s.size()) {
    std::size_t comma = s.find(',', pos);
    items.push_back(s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
    pos = comma == std::string::npos ? s.size() : comma + 1;
  }
  return items;
}

// False if an item has no ':' or names no dtype.
inline bool ParseLayout(const std::string& spec, std::vector<LayoutTensor>* out) {
  for (const std::string& item : SplitList(spec)) {
    std::size_t colon = item.find(':');
    if (colon == std::string::npos) return false;
    std::string dt = item.substr(0, colon);
    LayoutTensor t;
    bool found = false;
    for (int d = 0; d < SHOAL_DTYPE_COUNT; d++) {
      if (dt == DtypeName(static_cast<shoal_dtype>(d))) {
        t.dtype = static_cast<shoal_dtype>(d);
        found = true;
      }
    }
    if (!found) return false;
    t.count = std::strtoull(item.c_str() + colon + 1, nullptr, 10);
    out->push_back(t);
  }
  return true;
}

}  // namespace shoal::mp
