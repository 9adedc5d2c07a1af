// Element-wise reductions for every shoal dtype and op, and the conversions f16/bf16 <-> f32.
//
// Semantics (all members must compute the same bits, so these are exact specifications):
// - Integers: SUM and PROD wrap modulo 2^bits (computed in the unsigned type, no UB); MIN/MAX as
//   usual for the signed or unsigned type. AVG's division truncates toward zero.
// - f32/f64: IEEE arithmetic in that type, no fast-math; MIN/MAX: if either is NaN the result is
//   NaN, else the smaller/larger (for -0 vs +0 either may be returned, consistently).
// - f16/bf16: each element is converted to f32, combined, and rounded back to nearest-even once.
// - AVG is reduced as SUM; the owner of each chunk then calls DivideBy once.
//
// Stateless functions; thread-safe. Buffers may alias exactly (dst == a or dst == b), never partly.
#pragma once

#include <cstddef>
#include <cstdint>

#include "shoal/common/dtype.h"
#include "shoal/types.h"

namespace shoal::collective {

using shoal::DtypeBytes;  // common/dtype.h, named here too for the reduction code and its users
using shoal::DtypeName;
using shoal::IsValidDtype;
bool IsValidReduceOp(int op);
const char* ReduceOpName(shoal_reduce_op op);

// dst[i] = a[i] op b[i] for i < count.
void Reduce(shoal_dtype dtype, shoal_reduce_op op, void* dst, const void* a, const void* b,
            std::size_t count);

// data[i] = data[i] / divisor (the finishing step of AVG). REQUIRES: divisor >= 1.
void DivideBy(shoal_dtype dtype, void* data, std::size_t count, std::uint32_t divisor);

float HalfToFloat(std::uint16_t h);
std::uint16_t FloatToHalf(float f);  // round to nearest even; overflow to inf; NaN stays NaN
float Bf16ToFloat(std::uint16_t b);
std::uint16_t FloatToBf16(float f);  // round to nearest even; NaN stays NaN

}  // namespace shoal::collective
