#include "shoal/common/dtype.h"

namespace shoal {

bool IsValidDtype(int dtype) { return dtype >= 0 && dtype < SHOAL_DTYPE_COUNT; }

std::size_t DtypeBytes(shoal_dtype dtype) {
  switch (dtype) {
    case SHOAL_F16:
    case SHOAL_BF16:
    case SHOAL_I16:
    case SHOAL_U16:
      return 2;
    case SHOAL_F32:
    case SHOAL_I32:
    case SHOAL_U32:
      return 4;
    case SHOAL_F64:
    case SHOAL_I64:
    case SHOAL_U64:
      return 8;
    case SHOAL_I8:
    case SHOAL_U8:
      return 1;
  }
  return 0;
}

const char* DtypeName(shoal_dtype dtype) {
  switch (dtype) {
    case SHOAL_F32:
      return "f32";
    case SHOAL_F64:
      return "f64";
    case SHOAL_F16:
      return "f16";
    case SHOAL_BF16:
      return "bf16";
    case SHOAL_I8:
      return "i8";
    case SHOAL_I16:
      return "i16";
    case SHOAL_I32:
      return "i32";
    case SHOAL_I64:
      return "i64";
    case SHOAL_U8:
      return "u8";
    case SHOAL_U16:
      return "u16";
    case SHOAL_U32:
      return "u32";
    case SHOAL_U64:
      return "u64";
  }
  return "unknown";
}

}  // namespace shoal
