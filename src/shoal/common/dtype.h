// Facts about the element types of include/shoal/types.h that every layer needs: validity, size,
// name. Stateless functions; thread-safe.
#pragma once

#include <cstddef>

#include "shoal/types.h"

namespace shoal {

bool IsValidDtype(int dtype);                // one of the SHOAL_DTYPE_COUNT values
std::size_t DtypeBytes(shoal_dtype dtype);   // 1 for i8 ... 8 for f64; 0 for an invalid value
const char* DtypeName(shoal_dtype dtype);    // "f32", ...

}  // namespace shoal
