// Element-wise reductions and the f16/bf16 <-> f32 conversions.
//
// Vocabulary:
// - element type ("E"): how one dtype is stored and computed. `Storage` is the type in memory,
//   `Compute` the type the op runs in (float for f16/bf16, the dtype itself otherwise); `Load` and
//   `Store` convert between them.
// - op ("Op"): a struct with a static `Apply(Compute, Compute)`; AVG uses the SUM op.
// - loop: one plain `for` over typed pointers. There are four loops per (element type, op), one per
//   aliasing pattern (distinct, dst == a, dst == b, dst == a == b), so that every pointer in a loop
//   can be `__restrict` without lying to the compiler: restrict is only broken when an object that
//   is written is also reached through another pointer, which the in-place loops avoid by reading
//   and writing the accumulator through the same pointer.
//
// Speed: Reduce dispatches once per call on (dtype, op) and then runs a loop that GCC auto-
// vectorises at -O3 (set for this file in CMakeLists.txt). The f16/bf16 conversions are written as
// integer arithmetic plus selects (no data-dependent branches) so that their loops vectorise too.
// The conversions assume the default rounding mode (to nearest). They give the same bits with
// denormals-are-zero/flush-to-zero on (checked over all inputs): their float operations never
// produce a subnormal, and a subnormal f32 input rounds to a zero binary16 either way. (The f32
// arithmetic of the reduction itself does follow DAZ/FTZ if a user's process turns them on.)
#include "shoal/collective/reduce.h"

#include <bit>
#include <type_traits>

#include "shoal/common/check.h"

namespace shoal::collective {
namespace {

// ---- f16 / bf16 bit conversions (inline so the loops can vectorise them) ----

// IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits. binary32: 1, 8 (bias 127), 23.
constexpr std::uint32_t kF32AbsMask = 0x7fffffffu;
constexpr std::uint32_t kF32ExpMask = 0x7f800000u;        // also the bits of +inf
constexpr std::uint32_t kF16ExpMask = 0x7c00u;            // also the bits of +inf
constexpr std::uint32_t kF32QuietBit = 0x00400000u;       // top mantissa bit of binary32
constexpr std::uint32_t kF16QuietBit = 0x0200u;           // top mantissa bit of binary16
constexpr std::uint32_t kBf16QuietBit = 0x0040u;          // top mantissa bit of bfloat16
constexpr std::uint32_t kF16MinNormal = 0x0400u;          // 2^-14 as binary16
constexpr std::uint32_t kExpRebias = (127u - 15u) << 23;  // binary32 minus binary16 exponent bias
// |f| below 2^-14 (binary32 bits) is a binary16 subnormal or zero after rounding (or exactly
// 2^-14).
constexpr std::uint32_t kF32HalfMinNormal = 0x38800000u;
// |f| at or above 65520 (halfway between 65504, the largest binary16, and 2^16) rounds to inf:
// the tie goes to the even neighbour, which is 2^16 = inf.
constexpr std::uint32_t kF32HalfOverflow = 0x477ff000u;

// when ? yes : no, written as bit masks. A plain `?:` lets GCC move the float arithmetic that feeds
// one side under a branch, and then (with the default -ftrapping-math) it refuses to if-convert the
// branch back, which stops the loop from vectorising.
inline std::uint32_t Select(bool when, std::uint32_t yes, std::uint32_t no) {
  const std::uint32_t mask = 0u - static_cast<std::uint32_t>(when);
  return (yes & mask) | (no & ~mask);
}

inline float HalfBitsToFloat(std::uint16_t h) {
  const std::uint32_t sign = (std::uint32_t{h} & 0x8000u) << 16;
  const std::uint32_t exp_mant = std::uint32_t{h} & 0x7fffu;
  // Normal: move exponent and mantissa into place and rebias the exponent. Inf/NaN (exponent 31):
  // rebias twice, which gives exponent 255 with the mantissa kept.
  const std::uint32_t inf_nan_rebias = Select(exp_mant >= kF16ExpMask, kExpRebias, 0u);
  // A NaN comes out quiet (as F16C's vcvtph2ps does): bit 15 of exp_mant + 0x3ff is set exactly
  // when the exponent is 31 and the mantissa is not zero; moved to the binary32 quiet bit.
  const std::uint32_t quiet = ((exp_mant + 0x3ffu) & 0x8000u) << 7;
  static_assert((0x8000u << 7) == kF32QuietBit);
  const std::uint32_t normal = ((exp_mant << 13) + kExpRebias + inf_nan_rebias) | quiet;
  // Subnormal or zero: the value is mantissa * 2^-24, exact in binary32 and never subnormal there.
  const std::uint32_t subnormal = std::bit_cast<std::uint32_t>(
      static_cast<float>(static_cast<std::int32_t>(exp_mant)) * 0x1p-24f);
  return std::bit_cast<float>(Select(exp_mant < kF16MinNormal, subnormal, normal) | sign);
}

inline std::uint16_t FloatToHalfBits(float f) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  const std::uint32_t abs = x & kF32AbsMask;
  // Every candidate is built 13 bits up (binary16 bits << 13) and the chosen one is shifted down
  // once at the end. (Selecting among 16-bit values makes GCC narrow each candidate and each
  // mask separately, which costs several shuffles apiece on SSE2.)
  //
  // Normal result: rebias, then round the 13 dropped bits to nearest even by adding 0xfff plus the
  // lowest kept bit; a carry out of the mantissa correctly bumps the exponent.
  const std::uint32_t normal = abs - kExpRebias + 0xfffu + ((abs >> 13) & 1u);
  // Subnormal result: adding 0.5f makes the float unit in the last place exactly 2^-24, the
  // binary16 subnormal step, so the FPU rounds to nearest even for us; the low bits are then the
  // mantissa (0x400 when it rounds up to the smallest normal, which is the right encoding).
  const std::uint32_t subnormal =
      (std::bit_cast<std::uint32_t>(std::bit_cast<float>(abs) + 0.5f) - 0x3f000000u) << 13;
  // NaN: keep the top payload bits and set the quiet bit so the result is a NaN even when the
  // payload lived only in the dropped bits.
  const std::uint32_t nan = ((kF16ExpMask | kF16QuietBit) << 13) | (abs & (0x3ffu << 13));
  const std::uint32_t sign = (x >> 3) & (0x8000u << 13);
  std::uint32_t bits = Select(abs < kF32HalfMinNormal, subnormal, normal);
  bits = Select(abs >= kF32HalfOverflow, kF16ExpMask << 13, bits);
  bits = Select(abs > kF32ExpMask, nan, bits);
  return static_cast<std::uint16_t>((bits | sign) >> 13);
}

inline float Bf16BitsToFloat(std::uint16_t b) {
  return std::bit_cast<float>(std::uint32_t{b} << 16);
}

inline std::uint16_t FloatToBf16Bits(float f) {
  const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
  // Round to nearest even on the 16 dropped bits; finite values past the largest bf16 carry into
  // the exponent and become inf, as they should. No NaN reaches the 32-bit overflow. Select
  // before shifting down, as in FloatToHalfBits.
  const std::uint32_t rounded = x + 0x7fffu + ((x >> 16) & 1u);
  const std::uint32_t quiet_nan = x | (kBf16QuietBit << 16);
  const std::uint32_t bits = Select((x & kF32AbsMask) > kF32ExpMask, quiet_nan, rounded);
  return static_cast<std::uint16_t>(bits >> 16);
}

// ---- element types ----

template <typename T>
struct Native {
  using Storage = T;
  using Compute = T;
  static Compute Load(Storage x) { return x; }
  static Storage Store(Compute x) { return x; }
};

struct Half {
  using Storage = std::uint16_t;
  using Compute = float;
  static Compute Load(Storage x) { return HalfBitsToFloat(x); }
  static Storage Store(Compute x) { return FloatToHalfBits(x); }
};

struct Bfloat {
  using Storage = std::uint16_t;
  using Compute = float;
  static Compute Load(Storage x) { return Bf16BitsToFloat(x); }
  static Storage Store(Compute x) { return FloatToBf16Bits(x); }
};

// ---- ops ----

// Integers wrap: compute in an unsigned type at least as wide as unsigned int, so neither signed
// overflow nor the promotion of small types to (signed) int can be undefined.
template <typename T>
using WrapType =
    std::conditional_t<(sizeof(T) < sizeof(unsigned)), unsigned, std::make_unsigned_t<T>>;

struct SumOp {
  template <typename T>
  static T Apply(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      return static_cast<T>(static_cast<WrapType<T>>(a) + static_cast<WrapType<T>>(b));
    } else {
      return a + b;
    }
  }
};

struct ProdOp {
  template <typename T>
  static T Apply(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      return static_cast<T>(static_cast<WrapType<T>>(a) * static_cast<WrapType<T>>(b));
    } else {
      return a * b;
    }
  }
};

// Floats: NaN if either is NaN. `a < b || a != a` picks a when a is smaller or NaN, and b
// otherwise, which includes b being NaN. Equal values (-0 vs +0) give b.
struct MinOp {
  template <typename T>
  static T Apply(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      return a < b ? a : b;
    } else {
      return (a < b || a != a) ? a : b;
    }
  }
};

struct MaxOp {
  template <typename T>
  static T Apply(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      return a > b ? a : b;
    } else {
      return (a > b || a != a) ? a : b;
    }
  }
};

// ---- loops ----

template <typename E, typename Op>
void LoopDistinct(typename E::Storage* __restrict dst, const typename E::Storage* __restrict a,
                  const typename E::Storage* __restrict b, std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    dst[i] = E::Store(Op::Apply(E::Load(a[i]), E::Load(b[i])));
  }
}

// dst == a: acc[i] = acc[i] op b[i].
template <typename E, typename Op>
void LoopIntoA(typename E::Storage* __restrict acc, const typename E::Storage* __restrict b,
               std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    acc[i] = E::Store(Op::Apply(E::Load(acc[i]), E::Load(b[i])));
  }
}

// dst == b: acc[i] = a[i] op acc[i] (operand order kept, it decides which NaN payload survives).
template <typename E, typename Op>
void LoopIntoB(typename E::Storage* __restrict acc, const typename E::Storage* __restrict a,
               std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    acc[i] = E::Store(Op::Apply(E::Load(a[i]), E::Load(acc[i])));
  }
}

// dst == a == b.
template <typename E, typename Op>
void LoopSelf(typename E::Storage* __restrict acc, std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    const typename E::Compute x = E::Load(acc[i]);
    acc[i] = E::Store(Op::Apply(x, x));
  }
}

using ReduceFn = void (*)(void* dst, const void* a, const void* b, std::size_t count);

template <typename E, typename Op>
void ReduceAs(void* dst, const void* a, const void* b, std::size_t count) {
  using S = typename E::Storage;
  S* d = static_cast<S*>(dst);
  const S* pa = static_cast<const S*>(a);
  const S* pb = static_cast<const S*>(b);
  if (d == pa && d == pb) {
    LoopSelf<E, Op>(d, count);
  } else if (d == pa) {
    LoopIntoA<E, Op>(d, pb, count);
  } else if (d == pb) {
    LoopIntoB<E, Op>(d, pa, count);
  } else {
    // a == b (with dst elsewhere) is fine here: restrict allows two pointers to the same
    // read-only memory.
    LoopDistinct<E, Op>(d, pa, pb, count);
  }
}

template <typename E>
ReduceFn SelectOp(shoal_reduce_op op) {
  switch (op) {
    case SHOAL_SUM:
    case SHOAL_AVG:  // reduced as SUM; the chunk owner calls DivideBy
      return &ReduceAs<E, SumOp>;
    case SHOAL_PROD:
      return &ReduceAs<E, ProdOp>;
    case SHOAL_MIN:
      return &ReduceAs<E, MinOp>;
    case SHOAL_MAX:
      return &ReduceAs<E, MaxOp>;
  }
  return nullptr;
}

ReduceFn SelectReduce(shoal_dtype dtype, shoal_reduce_op op) {
  switch (dtype) {
    case SHOAL_F32:
      return SelectOp<Native<float>>(op);
    case SHOAL_F64:
      return SelectOp<Native<double>>(op);
    case SHOAL_F16:
      return SelectOp<Half>(op);
    case SHOAL_BF16:
      return SelectOp<Bfloat>(op);
    case SHOAL_I8:
      return SelectOp<Native<std::int8_t>>(op);
    case SHOAL_I16:
      return SelectOp<Native<std::int16_t>>(op);
    case SHOAL_I32:
      return SelectOp<Native<std::int32_t>>(op);
    case SHOAL_I64:
      return SelectOp<Native<std::int64_t>>(op);
    case SHOAL_U8:
      return SelectOp<Native<std::uint8_t>>(op);
    case SHOAL_U16:
      return SelectOp<Native<std::uint16_t>>(op);
    case SHOAL_U32:
      return SelectOp<Native<std::uint32_t>>(op);
    case SHOAL_U64:
      return SelectOp<Native<std::uint64_t>>(op);
  }
  return nullptr;
}

// ---- division (the finishing step of AVG) ----

template <typename E>
void DivideAs(void* data, std::size_t count, std::uint32_t divisor) {
  using S = typename E::Storage;
  using C = typename E::Compute;
  S* __restrict p = static_cast<S*>(data);
  if constexpr (std::is_floating_point_v<C>) {
    // Divide in the compute type (f16/bf16: in f32, rounded back once). A divisor above 2^24 is
    // rounded when converted to float; member counts are far below that.
    const C d = static_cast<C>(divisor);
    for (std::size_t i = 0; i < count; ++i) p[i] = E::Store(E::Load(p[i]) / d);
  } else {
    if (divisor == 1) return;
    // Divide in 64 bits so that a divisor wider than the dtype is fine; C++ division truncates
    // toward zero, and |x / d| <= |x| always fits back. d >= 1, so INT64_MIN / -1 cannot happen.
    using Wide = std::conditional_t<std::is_signed_v<C>, std::int64_t, std::uint64_t>;
    const Wide d = static_cast<Wide>(divisor);
    for (std::size_t i = 0; i < count; ++i) p[i] = static_cast<S>(static_cast<Wide>(p[i]) / d);
  }
}

// True if [x, x + bytes) and [y, y + bytes) are the same range or do not overlap.
bool ExactOrNoOverlap(const void* x, const void* y, std::size_t bytes) {
  const auto xi = reinterpret_cast<std::uintptr_t>(x);
  const auto yi = reinterpret_cast<std::uintptr_t>(y);
  return xi == yi || xi + bytes <= yi || yi + bytes <= xi;
}

}  // namespace


bool IsValidReduceOp(int op) { return op >= 0 && op < SHOAL_REDUCE_OP_COUNT; }



const char* ReduceOpName(shoal_reduce_op op) {
  switch (op) {
    case SHOAL_SUM:
      return "sum";
    case SHOAL_AVG:
      return "avg";
    case SHOAL_PROD:
      return "prod";
    case SHOAL_MIN:
      return "min";
    case SHOAL_MAX:
      return "max";
  }
  return "unknown";
}

void Reduce(shoal_dtype dtype, shoal_reduce_op op, void* dst, const void* a, const void* b,
            std::size_t count) {
  // Programmer errors (the API validates user input before it gets here); checked in every build,
  // since a silently skipped or half-aliased reduction would corrupt a collective. O(1) per call.
  const ReduceFn fn = SelectReduce(dtype, op);
  SHOAL_CHECK_MSG(fn != nullptr, "unknown dtype or reduce op");
  const std::size_t bytes = count * DtypeBytes(dtype);
  SHOAL_CHECK_MSG(ExactOrNoOverlap(dst, a, bytes) && ExactOrNoOverlap(dst, b, bytes),
                  "dst must be a, b, or not overlap them");
  fn(dst, a, b, count);
}

void DivideBy(shoal_dtype dtype, void* data, std::size_t count, std::uint32_t divisor) {
  SHOAL_CHECK_MSG(divisor >= 1, "DivideBy needs a divisor of at least 1");
  switch (dtype) {
    case SHOAL_F32:
      return DivideAs<Native<float>>(data, count, divisor);
    case SHOAL_F64:
      return DivideAs<Native<double>>(data, count, divisor);
    case SHOAL_F16:
      return DivideAs<Half>(data, count, divisor);
    case SHOAL_BF16:
      return DivideAs<Bfloat>(data, count, divisor);
    case SHOAL_I8:
      return DivideAs<Native<std::int8_t>>(data, count, divisor);
    case SHOAL_I16:
      return DivideAs<Native<std::int16_t>>(data, count, divisor);
    case SHOAL_I32:
      return DivideAs<Native<std::int32_t>>(data, count, divisor);
    case SHOAL_I64:
      return DivideAs<Native<std::int64_t>>(data, count, divisor);
    case SHOAL_U8:
      return DivideAs<Native<std::uint8_t>>(data, count, divisor);
    case SHOAL_U16:
      return DivideAs<Native<std::uint16_t>>(data, count, divisor);
    case SHOAL_U32:
      return DivideAs<Native<std::uint32_t>>(data, count, divisor);
    case SHOAL_U64:
      return DivideAs<Native<std::uint64_t>>(data, count, divisor);
  }
  SHOAL_CHECK_MSG(false, "unknown dtype");
}

float HalfToFloat(std::uint16_t h) { return HalfBitsToFloat(h); }

std::uint16_t FloatToHalf(float f) { return FloatToHalfBits(f); }

float Bf16ToFloat(std::uint16_t b) { return Bf16BitsToFloat(b); }

std::uint16_t FloatToBf16(float f) { return FloatToBf16Bits(f); }

}  // namespace shoal::collective
