// Tests of shoal::collective::Reduce, DivideBy and the f16/bf16 conversions.
//
// Every result is checked against a reference written differently from the implementation:
// integers are combined in 128 bits and then truncated; f16/bf16 are decoded with ldexp and
// encoded with nearbyint on a scaled double, instead of the implementation's bit tricks. NaN
// results are checked for being NaN (the payload is not specified); MIN/MAX of equal values
// (-0 vs +0) may return either operand.
#include "shoal/collective/reduce.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

namespace shoal::collective {
namespace {

constexpr shoal_dtype kAllDtypes[] = {SHOAL_F32, SHOAL_F64, SHOAL_F16, SHOAL_BF16,
                                      SHOAL_I8,  SHOAL_I16, SHOAL_I32, SHOAL_I64,
                                      SHOAL_U8,  SHOAL_U16, SHOAL_U32, SHOAL_U64};
constexpr shoal_reduce_op kAllOps[] = {SHOAL_SUM, SHOAL_AVG, SHOAL_PROD, SHOAL_MIN, SHOAL_MAX};

// ---- reference conversions ----

bool IsHalfNan(std::uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x03ff) != 0; }
bool IsBf16Nan(std::uint16_t b) { return (b & 0x7f80) == 0x7f80 && (b & 0x007f) != 0; }
std::uint32_t Bits(float f) { return std::bit_cast<std::uint32_t>(f); }
std::uint64_t Bits(double d) { return std::bit_cast<std::uint64_t>(d); }
float FloatFromBits(std::uint32_t u) { return std::bit_cast<float>(u); }

float RefHalfToFloat(std::uint16_t h) {
  const int exponent = (h >> 10) & 0x1f;
  const int mantissa = h & 0x3ff;
  double v;
  if (exponent == 0x1f) {
    v = mantissa == 0 ? std::numeric_limits<double>::infinity()
                      : std::numeric_limits<double>::quiet_NaN();
  } else if (exponent == 0) {
    v = std::ldexp(mantissa, -24);
  } else {
    v = std::ldexp(mantissa + 1024, exponent - 25);
  }
  return static_cast<float>((h & 0x8000) ? -v : v);
}

// For a NaN input this returns a quiet NaN of the same sign; tests only check NaN-ness then.
std::uint16_t RefFloatToHalf(float f) {
  const std::uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  if (std::isnan(f)) return sign | 0x7e00;
  const double v = std::fabs(static_cast<double>(f));
  if (v >= 65520.0) return sign | 0x7c00;  // halfway past 65504 and beyond (ties go to even = inf)
  if (v < 0x1p-14) return sign | static_cast<std::uint16_t>(std::nearbyint(v * 0x1p24));
  int e = std::ilogb(v);
  double q = std::nearbyint(std::ldexp(v, 10 - e));  // 11 significant bits, in [1024, 2048]
  if (q == 2048) {
    q = 1024;
    ++e;
  }
  return sign | static_cast<std::uint16_t>((e + 15) << 10) | static_cast<std::uint16_t>(q - 1024);
}

float RefBf16ToFloat(std::uint16_t b) {
  const int exponent = (b >> 7) & 0xff;
  const int mantissa = b & 0x7f;
  double v;
  if (exponent == 0xff) {
    v = mantissa == 0 ? std::numeric_limits<double>::infinity()
                      : std::numeric_limits<double>::quiet_NaN();
  } else if (exponent == 0) {
    v = std::ldexp(mantissa, -133);
  } else {
    v = std::ldexp(mantissa + 128, exponent - 134);
  }
  return static_cast<float>((b & 0x8000) ? -v : v);
}

std::uint16_t RefFloatToBf16(float f) {
  const std::uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  if (std::isnan(f)) return sign | 0x7fc0;
  if (std::isinf(f)) return sign | 0x7f80;
  const double v = std::fabs(static_cast<double>(f));
  if (v < 0x1p-126) return sign | static_cast<std::uint16_t>(std::nearbyint(v * 0x1p133));
  int e = std::ilogb(v);
  double q = std::nearbyint(std::ldexp(v, 7 - e));  // 8 significant bits, in [128, 256]
  if (q == 256) {
    q = 128;
    ++e;
  }
  if (e > 127) return sign | 0x7f80;
  return sign | static_cast<std::uint16_t>((e + 127) << 7) | static_cast<std::uint16_t>(q - 128);
}

// ---- reference element types: random and special inputs, and the expected result ----

// The acceptable results of one element: `want`, or `alt` (the other operand of a MIN/MAX tie),
// or any NaN when `nan`.
template <typename S>
struct Expected {
  S want{};
  S alt{};
  bool nan = false;
};

template <typename F>
struct FloatResult {
  F want;
  F alt;
};

template <typename F>
FloatResult<F> RefFloatOp(shoal_reduce_op op, F a, F b) {
  switch (op) {
    case SHOAL_SUM:
    case SHOAL_AVG:
      return {a + b, a + b};
    case SHOAL_PROD:
      return {a * b, a * b};
    case SHOAL_MIN:
    case SHOAL_MAX: {
      if (std::isnan(a) || std::isnan(b)) {
        return {std::numeric_limits<F>::quiet_NaN(), std::numeric_limits<F>::quiet_NaN()};
      }
      if (a == b) return {a, b};
      const bool a_wins = (op == SHOAL_MIN) ? (a < b) : (a > b);
      return a_wins ? FloatResult<F>{a, a} : FloatResult<F>{b, b};
    }
  }
  ADD_FAILURE() << "unknown op";
  return {};
}

template <typename T>
struct IntRef {
  using S = T;
  using Wide = std::conditional_t<std::is_signed_v<T>, __int128, unsigned __int128>;
  static std::vector<S> Specials() {
    using L = std::numeric_limits<T>;
    return {0,
            1,
            static_cast<T>(-1),
            L::min(),
            L::max(),
            static_cast<T>(L::min() + 1),
            static_cast<T>(L::max() - 1),
            2,
            static_cast<T>(L::max() / 2 + 1)};
  }
  static S Random(std::mt19937_64& rng) { return static_cast<S>(rng()); }
  static Expected<S> Combine(shoal_reduce_op op, S a, S b) {
    const Wide x = a;
    const Wide y = b;
    Wide r = 0;
    switch (op) {
      case SHOAL_SUM:
      case SHOAL_AVG:
        r = x + y;
        break;
      case SHOAL_PROD:
        r = x * y;
        break;
      case SHOAL_MIN:
        r = x < y ? x : y;
        break;
      case SHOAL_MAX:
        r = x > y ? x : y;
        break;
    }
    // Keep the low bits (conversion of an out-of-range value to T is modular since C++20).
    const S s = static_cast<S>(static_cast<unsigned __int128>(r));
    return {s, s, false};
  }
  static bool IsNan(S) { return false; }
  static std::string Show(S x) {
    return std::to_string(static_cast<long long>(x)) + " / 0x" +
           ToHex(static_cast<std::uint64_t>(x));
  }
  static std::string ToHex(std::uint64_t v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(v));
    return buf;
  }
};

template <typename F>
struct FloatRef {
  using S = F;
  using L = std::numeric_limits<F>;
  static std::vector<S> Specials() {
    return {F(0),
            -F(0),
            F(1),
            F(-1),
            L::infinity(),
            -L::infinity(),
            L::quiet_NaN(),
            -L::quiet_NaN(),
            L::signaling_NaN(),
            L::denorm_min(),
            -L::denorm_min(),
            L::max(),
            -L::max(),
            L::min(),
            F(1.5),
            F(3) * L::denorm_min()};
  }
  static S Random(std::mt19937_64& rng) {
    switch (rng() % 4) {
      case 0: {  // any bit pattern: NaNs, infinities, subnormals, huge and tiny values
        if constexpr (sizeof(F) == 4)
          return std::bit_cast<F>(static_cast<std::uint32_t>(rng()));
        else
          return std::bit_cast<F>(rng());
      }
      default:
        return std::uniform_real_distribution<F>(F(-100), F(100))(rng);
    }
  }
  static Expected<S> Combine(shoal_reduce_op op, S a, S b) {
    const FloatResult<F> r = RefFloatOp(op, a, b);
    return {r.want, r.alt, std::isnan(r.want)};
  }
  static bool IsNan(S x) { return std::isnan(x); }
  static std::string Show(S x) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%a / 0x%llx", static_cast<double>(x),
                  static_cast<unsigned long long>(Bits(x)));
    return buf;
  }
};

// f16 and bf16: combine the decoded values in f32, then encode with the reference encoder.
template <float (*kDecode)(std::uint16_t), std::uint16_t (*kEncode)(float),
          bool (*kIsNan)(std::uint16_t), std::uint16_t kOne, std::uint16_t kMax,
          std::uint16_t kMinNormal, std::uint16_t kQuietNan, std::uint16_t kSignalingNan>
struct Half16Ref {
  using S = std::uint16_t;
  static std::vector<S> Specials() {
    const S inf = static_cast<S>(kMax + 1);
    return {0x0000,
            0x8000,
            kOne,
            static_cast<S>(kOne | 0x8000),
            inf,
            static_cast<S>(inf | 0x8000),
            kQuietNan,
            static_cast<S>(kQuietNan | 0x8000),
            kSignalingNan,
            0x0001,
            0x8001,
            kMax,
            static_cast<S>(kMax | 0x8000),
            kMinNormal,
            static_cast<S>(kOne + 1),
            0x0003};
  }
  static S Random(std::mt19937_64& rng) {
    if (rng() % 4 == 0) return static_cast<S>(rng());  // any bit pattern
    return kEncode(std::uniform_real_distribution<float>(-100.0f, 100.0f)(rng));
  }
  static Expected<S> Combine(shoal_reduce_op op, S a, S b) {
    const FloatResult<float> r = RefFloatOp(op, kDecode(a), kDecode(b));
    return {kEncode(r.want), kEncode(r.alt), std::isnan(r.want)};
  }
  static bool IsNan(S x) { return kIsNan(x); }
  static std::string Show(S x) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "0x%04x (%a)", x, static_cast<double>(kDecode(x)));
    return buf;
  }
};

using HalfRef =
    Half16Ref<RefHalfToFloat, RefFloatToHalf, IsHalfNan, 0x3c00, 0x7bff, 0x0400, 0x7e00, 0x7c01>;
using Bf16Ref =
    Half16Ref<RefBf16ToFloat, RefFloatToBf16, IsBf16Nan, 0x3f80, 0x7f7f, 0x0080, 0x7fc0, 0x7f81>;

// ---- the Reduce matrix: dtype x op x aliasing x count x alignment ----

enum class Aliasing { kDistinct, kDstIsA, kDstIsB, kSameInputs, kAllSame };
constexpr Aliasing kAllAliasings[] = {Aliasing::kDistinct, Aliasing::kDstIsA, Aliasing::kDstIsB,
                                      Aliasing::kSameInputs, Aliasing::kAllSame};
const char* AliasingName(Aliasing x) {
  switch (x) {
    case Aliasing::kDistinct:
      return "distinct";
    case Aliasing::kDstIsA:
      return "dst==a";
    case Aliasing::kDstIsB:
      return "dst==b";
    case Aliasing::kSameInputs:
      return "a==b";
    case Aliasing::kAllSame:
      return "dst==a==b";
  }
  return "?";
}

// Counts around vector widths (2 to 64 elements) and their remainders, plus a large one.
constexpr std::size_t kCounts[] = {0,  1,  2,  3,  5,  7,   8,   15,   16,  17,
                                   31, 33, 63, 64, 65, 255, 257, 1000, 4099};
constexpr std::size_t kGuardElems = 9;  // after the data; must stay untouched

// Inputs: the cross product of the specials first (so every pair of edge values meets), then
// random values.
template <typename R>
void MakeInputs(std::size_t count, std::mt19937_64& rng, std::vector<typename R::S>& a,
                std::vector<typename R::S>& b) {
  const std::vector<typename R::S> specials = R::Specials();
  a.resize(count);
  b.resize(count);
  for (std::size_t i = 0; i < count; ++i) {
    if (i < specials.size() * specials.size()) {
      a[i] = specials[i / specials.size()];
      b[i] = specials[i % specials.size()];
    } else {
      a[i] = R::Random(rng);
      b[i] = R::Random(rng);
    }
  }
}

template <typename R>
void CheckReduceTyped(shoal_dtype dtype, shoal_reduce_op op) {
  using S = typename R::S;
  ASSERT_EQ(DtypeBytes(dtype), sizeof(S));
  std::mt19937_64 rng(static_cast<std::uint64_t>(dtype) * 131 + static_cast<std::uint64_t>(op));
  S guard;
  std::memset(&guard, 0xa5, sizeof guard);
  for (std::size_t count : kCounts) {
    for (Aliasing aliasing : kAllAliasings) {
      for (std::size_t offset : {0, 1}) {  // 1: element-aligned but not vector-aligned
        SCOPED_TRACE(std::string(DtypeName(dtype)) + " " + ReduceOpName(op) +
                     " count=" + std::to_string(count) + " " + AliasingName(aliasing) +
                     " offset=" + std::to_string(offset));
        std::vector<S> a;
        std::vector<S> b;
        MakeInputs<R>(count, rng, a, b);
        if (aliasing == Aliasing::kSameInputs || aliasing == Aliasing::kAllSame) b = a;

        // Three buffers with room for the offset and a guard; the aliasing decides which ones
        // Reduce gets.
        const std::size_t size = offset + count + kGuardElems;
        std::vector<S> buf_a(size, guard);
        std::vector<S> buf_b(size, guard);
        std::vector<S> buf_dst(size, guard);
        std::copy(a.begin(), a.end(), buf_a.begin() + offset);
        std::copy(b.begin(), b.end(), buf_b.begin() + offset);
        S* pa = buf_a.data() + offset;
        S* pb = buf_b.data() + offset;
        S* pd = buf_dst.data() + offset;
        switch (aliasing) {
          case Aliasing::kDistinct:
            break;
          case Aliasing::kDstIsA:
            pd = pa;
            break;
          case Aliasing::kDstIsB:
            pd = pb;
            break;
          case Aliasing::kSameInputs:
            pb = pa;
            break;
          case Aliasing::kAllSame:
            pb = pa;
            pd = pa;
            break;
        }
        Reduce(dtype, op, pd, pa, pb, count);

        int failures = 0;
        for (std::size_t i = 0; i < count && failures < 5; ++i) {
          const Expected<S> e = R::Combine(op, a[i], b[i]);
          const S got = pd[i];
          const bool ok = e.nan ? R::IsNan(got)
                                : (!R::IsNan(got) && (std::memcmp(&got, &e.want, sizeof got) == 0 ||
                                                      std::memcmp(&got, &e.alt, sizeof got) == 0));
          if (!ok) {
            ++failures;
            ADD_FAILURE() << "i=" << i << " a=" << R::Show(a[i]) << " b=" << R::Show(b[i])
                          << " got=" << R::Show(got)
                          << (e.nan ? std::string(" want NaN") : " want=" + R::Show(e.want));
          }
        }
        // Nothing past count is written, in any buffer.
        for (std::vector<S>* v : {&buf_a, &buf_b, &buf_dst}) {
          for (std::size_t i = offset + count; i < size; ++i) {
            ASSERT_EQ(std::memcmp(&(*v)[i], &guard, sizeof guard), 0)
                << "wrote past count at " << i;
          }
        }
        // Inputs that are not dst are unchanged.
        if (pa != pd && count > 0) {
          ASSERT_EQ(std::memcmp(pa, a.data(), count * sizeof(S)), 0) << "input a modified";
        }
        if (pb != pd && count > 0) {
          ASSERT_EQ(std::memcmp(pb, b.data(), count * sizeof(S)), 0) << "input b modified";
        }
      }
    }
  }
}

void CheckReduce(shoal_dtype dtype, shoal_reduce_op op) {
  switch (dtype) {
    case SHOAL_F32:
      return CheckReduceTyped<FloatRef<float>>(dtype, op);
    case SHOAL_F64:
      return CheckReduceTyped<FloatRef<double>>(dtype, op);
    case SHOAL_F16:
      return CheckReduceTyped<HalfRef>(dtype, op);
    case SHOAL_BF16:
      return CheckReduceTyped<Bf16Ref>(dtype, op);
    case SHOAL_I8:
      return CheckReduceTyped<IntRef<std::int8_t>>(dtype, op);
    case SHOAL_I16:
      return CheckReduceTyped<IntRef<std::int16_t>>(dtype, op);
    case SHOAL_I32:
      return CheckReduceTyped<IntRef<std::int32_t>>(dtype, op);
    case SHOAL_I64:
      return CheckReduceTyped<IntRef<std::int64_t>>(dtype, op);
    case SHOAL_U8:
      return CheckReduceTyped<IntRef<std::uint8_t>>(dtype, op);
    case SHOAL_U16:
      return CheckReduceTyped<IntRef<std::uint16_t>>(dtype, op);
    case SHOAL_U32:
      return CheckReduceTyped<IntRef<std::uint32_t>>(dtype, op);
    case SHOAL_U64:
      return CheckReduceTyped<IntRef<std::uint64_t>>(dtype, op);
  }
  FAIL() << "unknown dtype " << dtype;
}

class ReduceMatrixTest : public ::testing::TestWithParam<std::tuple<shoal_dtype, shoal_reduce_op>> {
};

TEST_P(ReduceMatrixTest, MatchesReference) {
  CheckReduce(std::get<0>(GetParam()), std::get<1>(GetParam()));
}

INSTANTIATE_TEST_SUITE_P(AllDtypesAndOps, ReduceMatrixTest,
                         ::testing::Combine(::testing::ValuesIn(kAllDtypes),
                                            ::testing::ValuesIn(kAllOps)),
                         [](const ::testing::TestParamInfo<ReduceMatrixTest::ParamType>& info) {
                           return std::string(DtypeName(std::get<0>(info.param))) + "_" +
                                  ReduceOpName(std::get<1>(info.param));
                         });

// ---- hand-checked values (independent of the references above) ----

template <typename T>
T ReduceOne(shoal_dtype dtype, shoal_reduce_op op, T a, T b) {
  T out;
  Reduce(dtype, op, &out, &a, &b, 1);
  return out;
}

TEST(ReduceTest, IntegersWrapAround) {
  EXPECT_EQ(ReduceOne<std::int8_t>(SHOAL_I8, SHOAL_SUM, 127, 1), -128);
  EXPECT_EQ(ReduceOne<std::int8_t>(SHOAL_I8, SHOAL_PROD, -128, -1), -128);
  EXPECT_EQ(ReduceOne<std::int8_t>(SHOAL_I8, SHOAL_PROD, 16, 16), 0);
  EXPECT_EQ(ReduceOne<std::uint8_t>(SHOAL_U8, SHOAL_SUM, 200, 100), 44);
  EXPECT_EQ(ReduceOne<std::uint8_t>(SHOAL_U8, SHOAL_PROD, 200, 2), 144);
  EXPECT_EQ(ReduceOne<std::int16_t>(SHOAL_I16, SHOAL_SUM, -32768, -1), 32767);
  // 65535 * 65535 overflows int if computed after the usual promotion; must be 1 mod 2^16.
  EXPECT_EQ(ReduceOne<std::uint16_t>(SHOAL_U16, SHOAL_PROD, 65535, 65535), 1);
  EXPECT_EQ(ReduceOne<std::int32_t>(SHOAL_I32, SHOAL_SUM, INT32_MAX, 1), INT32_MIN);
  EXPECT_EQ(ReduceOne<std::int32_t>(SHOAL_I32, SHOAL_PROD, INT32_MAX, 2), -2);
  EXPECT_EQ(ReduceOne<std::uint32_t>(SHOAL_U32, SHOAL_SUM, UINT32_MAX, 2), 1u);
  EXPECT_EQ(ReduceOne<std::int64_t>(SHOAL_I64, SHOAL_SUM, INT64_MIN, -1), INT64_MAX);
  EXPECT_EQ(ReduceOne<std::int64_t>(SHOAL_I64, SHOAL_PROD, INT64_MIN, -1), INT64_MIN);
  EXPECT_EQ(ReduceOne<std::uint64_t>(SHOAL_U64, SHOAL_PROD, 1ull << 63, 2), 0u);
  EXPECT_EQ(ReduceOne<std::int64_t>(SHOAL_I64, SHOAL_MIN, INT64_MIN, INT64_MAX), INT64_MIN);
  EXPECT_EQ(ReduceOne<std::uint64_t>(SHOAL_U64, SHOAL_MAX, UINT64_MAX, 1), UINT64_MAX);
  EXPECT_EQ(ReduceOne<std::int8_t>(SHOAL_I8, SHOAL_MIN, -1, 1), -1);
  EXPECT_EQ(ReduceOne<std::uint8_t>(SHOAL_U8, SHOAL_MIN, 255, 1), 1);
  EXPECT_EQ(ReduceOne<std::int32_t>(SHOAL_I32, SHOAL_AVG, 5, 7), 12);  // AVG reduces as SUM
}

TEST(ReduceTest, FloatSpecials) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(std::isnan(ReduceOne<float>(SHOAL_F32, SHOAL_MIN, nan, 1.0f)));
  EXPECT_TRUE(std::isnan(ReduceOne<float>(SHOAL_F32, SHOAL_MIN, 1.0f, nan)));
  EXPECT_TRUE(std::isnan(ReduceOne<float>(SHOAL_F32, SHOAL_MAX, nan, -inf)));
  EXPECT_TRUE(std::isnan(ReduceOne<float>(SHOAL_F32, SHOAL_MAX, inf, nan)));
  EXPECT_TRUE(std::isnan(ReduceOne<double>(SHOAL_F64, SHOAL_MIN, 0.0, std::nan(""))));
  EXPECT_TRUE(std::isnan(ReduceOne<float>(SHOAL_F32, SHOAL_SUM, inf, -inf)));
  EXPECT_TRUE(std::isnan(ReduceOne<float>(SHOAL_F32, SHOAL_PROD, inf, 0.0f)));
  EXPECT_EQ(ReduceOne<float>(SHOAL_F32, SHOAL_MIN, -inf, 3.0f), -inf);
  EXPECT_EQ(ReduceOne<double>(SHOAL_F64, SHOAL_MAX, -1.0, -2.0), -1.0);
  // -0 + -0 is -0; -0 + +0 is +0.
  EXPECT_TRUE(std::signbit(ReduceOne<float>(SHOAL_F32, SHOAL_SUM, -0.0f, -0.0f)));
  EXPECT_FALSE(std::signbit(ReduceOne<float>(SHOAL_F32, SHOAL_SUM, -0.0f, 0.0f)));
  // Subnormals are not flushed.
  const float tiny = std::numeric_limits<float>::denorm_min();
  EXPECT_EQ(ReduceOne<float>(SHOAL_F32, SHOAL_SUM, tiny, tiny), 2 * tiny);
  EXPECT_EQ(ReduceOne<float>(SHOAL_F32, SHOAL_MAX, tiny, 0.0f), tiny);
}

TEST(ReduceTest, HalfSpecials) {
  // 65504 + 32 = 65536 -> inf; 65504 + 8 = 65512 rounds back to 65504.
  EXPECT_EQ(ReduceOne<std::uint16_t>(SHOAL_F16, SHOAL_SUM, 0x7bff, 0x5000), 0x7c00);
  EXPECT_EQ(ReduceOne<std::uint16_t>(SHOAL_F16, SHOAL_SUM, 0x7bff, 0x4800), 0x7bff);
  // smallest subnormal + itself = 2 * 2^-24; 1 + 2^-11 is a tie and rounds to even (1.0).
  EXPECT_EQ(ReduceOne<std::uint16_t>(SHOAL_F16, SHOAL_SUM, 0x0001, 0x0001), 0x0002);
  EXPECT_EQ(ReduceOne<std::uint16_t>(SHOAL_F16, SHOAL_SUM, 0x3c00, 0x1000), 0x3c00);
  EXPECT_TRUE(IsHalfNan(ReduceOne<std::uint16_t>(SHOAL_F16, SHOAL_MIN, 0x7e00, 0x3c00)));
  EXPECT_TRUE(IsHalfNan(ReduceOne<std::uint16_t>(SHOAL_F16, SHOAL_MAX, 0x3c00, 0x7c01)));
  EXPECT_TRUE(IsHalfNan(ReduceOne<std::uint16_t>(SHOAL_F16, SHOAL_SUM, 0x7c00, 0xfc00)));
  EXPECT_EQ(ReduceOne<std::uint16_t>(SHOAL_F16, SHOAL_PROD, 0xc000, 0x3800), 0xbc00);  // -2*.5
  // bf16: 1 + 1 = 2; max + max = inf; NaN wins MIN.
  EXPECT_EQ(ReduceOne<std::uint16_t>(SHOAL_BF16, SHOAL_SUM, 0x3f80, 0x3f80), 0x4000);
  EXPECT_EQ(ReduceOne<std::uint16_t>(SHOAL_BF16, SHOAL_SUM, 0x7f7f, 0x7f7f), 0x7f80);
  EXPECT_TRUE(IsBf16Nan(ReduceOne<std::uint16_t>(SHOAL_BF16, SHOAL_MIN, 0xff80, 0x7fc0)));
  EXPECT_EQ(ReduceOne<std::uint16_t>(SHOAL_BF16, SHOAL_MAX, 0xff80, 0x0001), 0x0001);
}

TEST(ReduceTest, CountZeroTouchesNothing) {
  Reduce(SHOAL_F32, SHOAL_SUM, nullptr, nullptr, nullptr, 0);
  Reduce(SHOAL_F16, SHOAL_MAX, nullptr, nullptr, nullptr, 0);
  DivideBy(SHOAL_I64, nullptr, 0, 3);
  DivideBy(SHOAL_BF16, nullptr, 0, 3);
  std::uint32_t dst = 7;
  const std::uint32_t a = 1;
  const std::uint32_t b = 2;
  Reduce(SHOAL_U32, SHOAL_SUM, &dst, &a, &b, 0);
  EXPECT_EQ(dst, 7u);
}

// Programmer errors are checked in every build (not only with assertions on).
TEST(ReduceDeathTest, MisuseAborts) {
  float buf[8] = {};
  EXPECT_DEATH(Reduce(SHOAL_F32, SHOAL_SUM, buf + 1, buf, buf + 4, 4), "overlap");
  EXPECT_DEATH(Reduce(SHOAL_F32, SHOAL_SUM, buf, buf + 4, buf + 1, 4), "overlap");
  EXPECT_DEATH(Reduce(static_cast<shoal_dtype>(SHOAL_DTYPE_COUNT), SHOAL_SUM, buf, buf, buf, 1),
               "unknown dtype");
  EXPECT_DEATH(Reduce(SHOAL_F32, static_cast<shoal_reduce_op>(-1), buf, buf, buf, 1),
               "unknown dtype or reduce op");
  EXPECT_DEATH(DivideBy(SHOAL_I32, buf, 1, 0), "divisor");
  EXPECT_DEATH(DivideBy(static_cast<shoal_dtype>(-1), buf, 1, 2), "unknown dtype");
}

// ---- conversions ----

TEST(ConversionTest, HalfKnownValues) {
  EXPECT_EQ(Bits(HalfToFloat(0x3c00)), Bits(1.0f));
  EXPECT_EQ(Bits(HalfToFloat(0xc000)), Bits(-2.0f));
  EXPECT_EQ(Bits(HalfToFloat(0x7bff)), Bits(65504.0f));
  EXPECT_EQ(Bits(HalfToFloat(0x0001)), Bits(0x1p-24f));
  EXPECT_EQ(Bits(HalfToFloat(0x03ff)), Bits(0x3ffp-24f));
  EXPECT_EQ(Bits(HalfToFloat(0x0400)), Bits(0x1p-14f));
  EXPECT_EQ(Bits(HalfToFloat(0x8000)), Bits(-0.0f));
  EXPECT_EQ(Bits(HalfToFloat(0x7c00)), Bits(std::numeric_limits<float>::infinity()));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7c01)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0xfe00)));
  EXPECT_TRUE(std::signbit(HalfToFloat(0xfe00)));

  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(1.0f / 3.0f), 0x3555);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65519.996f), 0x7bff);  // just below the halfway point
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);    // halfway: ties to even, which is inf
  EXPECT_EQ(FloatToHalf(1e10f), 0x7c00);
  EXPECT_EQ(FloatToHalf(-1e10f), 0xfc00);
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::max()), 0x7c00);
  EXPECT_EQ(FloatToHalf(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_EQ(FloatToHalf(0x1p-24f), 0x0001);
  EXPECT_EQ(FloatToHalf(0x1p-25f), 0x0000);  // halfway between 0 and the smallest: to even (0)
  EXPECT_EQ(FloatToHalf(0x1.000002p-25f), 0x0001);  // just above halfway
  EXPECT_EQ(FloatToHalf(0x3p-25f), 0x0002);         // halfway between 1 and 2 ulps: to even (2)
  EXPECT_EQ(FloatToHalf(0x5p-25f), 0x0002);         // halfway between 2 and 3 ulps: to even (2)
  EXPECT_EQ(FloatToHalf(-0x1p-26f), 0x8000);        // rounds to -0
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(FloatToHalf(0x1.ff8p-15f), 0x03ff);   // largest subnormal
  EXPECT_EQ(FloatToHalf(0x1.ffap-15f), 0x03ff);   // a quarter step above it
  EXPECT_EQ(FloatToHalf(0x1.ffcp-15f), 0x0400);   // halfway to the smallest normal: to even
  EXPECT_EQ(FloatToHalf(0x1.002p0f), 0x3c00);     // 1 + 2^-11: tie, to even (1)
  EXPECT_EQ(FloatToHalf(0x1.006p0f), 0x3c02);     // 1 + 3*2^-11: tie, to even (1 + 2^-9)
  EXPECT_EQ(FloatToHalf(0x1.002002p0f), 0x3c01);  // just above the tie
  EXPECT_EQ(FloatToHalf(0x1.ffep0f), 0x4000);     // mantissa carry into the exponent
}

TEST(ConversionTest, Bf16KnownValues) {
  EXPECT_EQ(Bits(Bf16ToFloat(0x3f80)), Bits(1.0f));
  EXPECT_EQ(Bits(Bf16ToFloat(0x0001)), 0x00010000u);
  EXPECT_EQ(Bits(Bf16ToFloat(0xff80)), Bits(-std::numeric_limits<float>::infinity()));
  EXPECT_TRUE(std::isnan(Bf16ToFloat(0x7f81)));

  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBf16(1.0f / 3.0f), 0x3eab);
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x3f808000)), 0x3f80);          // tie, to even
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x3f818000)), 0x3f82);          // tie, to even (up)
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x3f808001)), 0x3f81);          // above the tie
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x3f807fff)), 0x3f80);          // below the tie
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x3fff8000)), 0x4000);          // carry into the exponent
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::max()), 0x7f80);  // overflow to inf
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x7f7f7fff)), 0x7f7f);          // largest that stays finite
  EXPECT_EQ(FloatToBf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x00008000)), 0x0000);  // subnormal tie, to even
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x00018000)), 0x0002);  // subnormal tie, to even (up)
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x807fffff)), 0x8080);  // largest subnormal -> -min normal
  EXPECT_EQ(FloatToBf16(-0.0f), 0x8000);
  // NaNs stay NaN, become quiet and keep their sign, even if the payload is only in low bits.
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x7f800001)), 0x7fc0);
  EXPECT_EQ(FloatToBf16(FloatFromBits(0xff800001)), 0xffc0);
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x7fffffff)), 0x7fff);  // must not round over to +0
  EXPECT_EQ(FloatToBf16(FloatFromBits(0xffffffff)), 0xffff);
  EXPECT_EQ(FloatToBf16(FloatFromBits(0x7fa10000)), 0x7fe1);  // signalling: quieted, payload kept
}

TEST(ConversionTest, HalfNanStaysNan) {
  EXPECT_EQ(FloatToHalf(FloatFromBits(0x7f800001)), 0x7e00);  // payload only in dropped bits
  EXPECT_EQ(FloatToHalf(FloatFromBits(0xff800001)), 0xfe00);
  EXPECT_EQ(FloatToHalf(FloatFromBits(0x7fc00000)), 0x7e00);
  EXPECT_EQ(FloatToHalf(FloatFromBits(0x7fffffff)), 0x7fff);
  EXPECT_EQ(FloatToHalf(FloatFromBits(0x7fa02000)), 0x7f01);  // signalling: quieted, payload kept
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::signaling_NaN()) & 0x7e00, 0x7e00);
}

// Every f16 bit pattern: decodes to the reference value and encodes back to itself; NaNs stay
// NaN (quiet, same sign, same payload).
TEST(ConversionTest, HalfRoundTripAllPatterns) {
  int failures = 0;
  for (std::uint32_t i = 0; i <= 0xffff && failures < 10; ++i) {
    const auto h = static_cast<std::uint16_t>(i);
    const float f = HalfToFloat(h);
    const std::uint16_t back = FloatToHalf(f);
    if (IsHalfNan(h)) {
      // Decoded quiet, sign and payload kept (bit for bit what F16C's vcvtph2ps gives).
      const std::uint32_t want =
          (std::uint32_t{h} & 0x8000) << 16 | 0x7fc00000u | (std::uint32_t{h} & 0x03ff) << 13;
      const bool ok = Bits(f) == want && back == (h | 0x0200);
      if (!ok)
        ADD_FAILURE() << "NaN 0x" << std::hex << i << " -> 0x" << Bits(f) << " -> 0x" << back;
      failures += !ok;
    } else {
      const bool ok = Bits(f) == Bits(RefHalfToFloat(h)) && back == h;
      if (!ok) ADD_FAILURE() << "0x" << std::hex << i << " -> 0x" << Bits(f) << " -> 0x" << back;
      failures += !ok;
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST(ConversionTest, Bf16RoundTripAllPatterns) {
  int failures = 0;
  for (std::uint32_t i = 0; i <= 0xffff && failures < 10; ++i) {
    const auto b = static_cast<std::uint16_t>(i);
    const float f = Bf16ToFloat(b);
    const std::uint16_t back = FloatToBf16(f);
    if (IsBf16Nan(b)) {
      const bool ok =
          std::isnan(f) && std::signbit(f) == ((b & 0x8000) != 0) && back == (b | 0x0040);
      if (!ok)
        ADD_FAILURE() << "NaN 0x" << std::hex << i << " -> 0x" << Bits(f) << " -> 0x" << back;
      failures += !ok;
    } else {
      const bool ok = Bits(f) == Bits(RefBf16ToFloat(b)) && back == b;
      if (!ok) ADD_FAILURE() << "0x" << std::hex << i << " -> 0x" << Bits(f) << " -> 0x" << back;
      failures += !ok;
    }
  }
  EXPECT_EQ(failures, 0);
}

// For every pair of adjacent finite values of a 16-bit format (both signs): their exact midpoint
// must go to the one with the even mantissa, and one f32 step either side of it to the nearer.
// Covers subnormals, the subnormal/normal border, and the overflow tie (max -> inf).
template <float (*kDecode)(std::uint16_t), std::uint16_t (*kEncode)(float)>
void CheckAllTies(std::uint16_t inf_bits) {
  int failures = 0;
  for (std::uint16_t sign : {std::uint16_t{0}, std::uint16_t{0x8000}}) {
    for (std::uint16_t lo = 0; lo < inf_bits && failures < 10; ++lo) {
      const auto lo_bits = static_cast<std::uint16_t>(sign | lo);
      const auto hi_bits = static_cast<std::uint16_t>(sign | (lo + 1));
      const double lo_value = kDecode(lo_bits);
      const double hi_value = kDecode(hi_bits);  // inf for the last one
      // Signed step; past the largest finite value, the step of the binade below.
      const double step =
          std::isinf(hi_value) ? lo_value - kDecode(sign | (lo - 1)) : hi_value - lo_value;
      const auto mid = static_cast<float>(lo_value + step / 2);  // exact: one more bit than 16
      ASSERT_EQ(static_cast<double>(mid), lo_value + step / 2);
      const std::uint16_t even = (lo & 1) ? hi_bits : lo_bits;
      const float toward_lo = std::nextafter(mid, static_cast<float>(lo_value));
      const float toward_hi = std::nextafter(mid, sign ? -INFINITY : INFINITY);
      const bool ok =
          kEncode(mid) == even && kEncode(toward_lo) == lo_bits && kEncode(toward_hi) == hi_bits;
      if (!ok) {
        ADD_FAILURE() << std::hex << "between 0x" << lo_bits << " and 0x" << hi_bits << ": mid->0x"
                      << kEncode(mid) << " below->0x" << kEncode(toward_lo) << " above->0x"
                      << kEncode(toward_hi);
        ++failures;
      }
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST(ConversionTest, HalfTiesToEvenEverywhere) { CheckAllTies<HalfToFloat, FloatToHalf>(0x7c00); }

TEST(ConversionTest, Bf16TiesToEvenEverywhere) { CheckAllTies<Bf16ToFloat, FloatToBf16>(0x7f80); }

// FloatToHalf/FloatToBf16 against the references on a spread of f32 bit patterns (every
// 4099th, plus random ones): all exponents, subnormals, NaNs.
TEST(ConversionTest, EncodersMatchReferenceOnManyFloats) {
  std::mt19937_64 rng(12345);
  int failures = 0;
  auto check = [&](std::uint32_t u) {
    const float f = FloatFromBits(u);
    const std::uint16_t h = FloatToHalf(f);
    const std::uint16_t b = FloatToBf16(f);
    bool ok;
    if (std::isnan(f)) {
      ok = IsHalfNan(h) && (h & 0x0200) && IsBf16Nan(b) && (b & 0x0040) && (h >> 15) == (u >> 31) &&
           (b >> 15) == (u >> 31);
    } else {
      ok = h == RefFloatToHalf(f) && b == RefFloatToBf16(f);
    }
    if (!ok && failures++ < 10) {
      ADD_FAILURE() << std::hex << "f32 0x" << u << ": f16 0x" << h << " (want 0x"
                    << RefFloatToHalf(f) << "), bf16 0x" << b << " (want 0x" << RefFloatToBf16(f)
                    << ")";
    }
  };
  for (std::uint64_t u = 0; u <= 0xffffffffu; u += 4099) check(static_cast<std::uint32_t>(u));
  for (int i = 0; i < 1000000; ++i) check(static_cast<std::uint32_t>(rng()));
  EXPECT_EQ(failures, 0);
}

// ---- DivideBy ----

constexpr std::uint32_t kDivisors[] = {1,   2,    3,     7,           10,         255,
                                       256, 1000, 65537, 0x80000001u, 0xffffffffu};

template <typename T>
void CheckIntDivide(shoal_dtype dtype) {
  std::mt19937_64 rng(static_cast<std::uint64_t>(dtype));
  std::vector<T> values = IntRef<T>::Specials();
  for (int i = 0; i < 2000; ++i) values.push_back(static_cast<T>(rng() >> (rng() % 64)));
  for (int i = 0; i < 2000; ++i) values.push_back(static_cast<T>(rng()));
  for (std::uint32_t divisor : kDivisors) {
    SCOPED_TRACE(std::string(DtypeName(dtype)) + " / " + std::to_string(divisor));
    std::vector<T> data = values;
    DivideBy(dtype, data.data(), data.size(), divisor);
    for (std::size_t i = 0; i < data.size(); ++i) {
      // Truncating division: x = q*d + r with |r| < d and r of x's sign (or zero).
      const __int128 x = values[i];
      const __int128 q = data[i];
      const __int128 r = x - q * divisor;
      const bool ok = (r >= 0 ? r : -r) < divisor && (r == 0 || (r < 0) == (x < 0));
      ASSERT_TRUE(ok) << "x=" << static_cast<long long>(values[i])
                      << " got=" << static_cast<long long>(data[i]);
    }
  }
}

template <typename R, typename F>
void CheckFloatDivide(shoal_dtype dtype, F (*decode)(typename R::S), typename R::S (*encode)(F)) {
  using S = typename R::S;
  std::mt19937_64 rng(static_cast<std::uint64_t>(dtype));
  std::vector<S> values = R::Specials();
  for (int i = 0; i < 4000; ++i) values.push_back(R::Random(rng));
  for (std::uint32_t divisor : kDivisors) {
    SCOPED_TRACE(std::string(DtypeName(dtype)) + " / " + std::to_string(divisor));
    std::vector<S> data = values;
    DivideBy(dtype, data.data(), data.size(), divisor);
    for (std::size_t i = 0; i < data.size(); ++i) {
      const F quotient = decode(values[i]) / static_cast<F>(divisor);
      if (std::isnan(quotient)) {
        ASSERT_TRUE(R::IsNan(data[i])) << R::Show(values[i]) << " -> " << R::Show(data[i]);
      } else {
        const S want = encode(quotient);
        ASSERT_EQ(std::memcmp(&data[i], &want, sizeof(S)), 0)
            << R::Show(values[i]) << " -> " << R::Show(data[i]) << " want " << R::Show(want);
      }
    }
  }
}

float Identity(float x) { return x; }
double Identity(double x) { return x; }

TEST(DivideByTest, EveryDtypeMatchesReference) {
  CheckFloatDivide<FloatRef<float>, float>(SHOAL_F32, Identity, Identity);
  CheckFloatDivide<FloatRef<double>, double>(SHOAL_F64, Identity, Identity);
  CheckFloatDivide<HalfRef, float>(SHOAL_F16, RefHalfToFloat, RefFloatToHalf);
  CheckFloatDivide<Bf16Ref, float>(SHOAL_BF16, RefBf16ToFloat, RefFloatToBf16);
  CheckIntDivide<std::int8_t>(SHOAL_I8);
  CheckIntDivide<std::int16_t>(SHOAL_I16);
  CheckIntDivide<std::int32_t>(SHOAL_I32);
  CheckIntDivide<std::int64_t>(SHOAL_I64);
  CheckIntDivide<std::uint8_t>(SHOAL_U8);
  CheckIntDivide<std::uint16_t>(SHOAL_U16);
  CheckIntDivide<std::uint32_t>(SHOAL_U32);
  CheckIntDivide<std::uint64_t>(SHOAL_U64);
}

TEST(DivideByTest, KnownValues) {
  std::int8_t i8[] = {-7, 7, -128, 127, -1};
  DivideBy(SHOAL_I8, i8, 5, 2);
  EXPECT_EQ(i8[0], -3);  // toward zero, not -4
  EXPECT_EQ(i8[1], 3);
  EXPECT_EQ(i8[2], -64);
  EXPECT_EQ(i8[3], 63);
  EXPECT_EQ(i8[4], 0);
  std::uint8_t u8[] = {255, 200};
  DivideBy(SHOAL_U8, u8, 2, 300);  // divisor wider than the dtype
  EXPECT_EQ(u8[0], 0);
  std::int64_t i64[] = {INT64_MIN, INT64_MAX, -10};
  DivideBy(SHOAL_I64, i64, 3, 1);
  EXPECT_EQ(i64[0], INT64_MIN);
  DivideBy(SHOAL_I64, i64, 3, 4);
  EXPECT_EQ(i64[0], INT64_MIN / 4);
  EXPECT_EQ(i64[2], -2);
  std::uint64_t u64[] = {UINT64_MAX};
  DivideBy(SHOAL_U64, u64, 1, 0xffffffffu);
  EXPECT_EQ(u64[0], 0x100000001ull);
  float f32[] = {1.0f, -3.0f};
  DivideBy(SHOAL_F32, f32, 2, 3);
  EXPECT_EQ(f32[0], 1.0f / 3.0f);
  EXPECT_EQ(f32[1], -1.0f);
  std::uint16_t f16[] = {0x3c00, 0x0001, 0x7bff};  // 1, smallest subnormal, max
  DivideBy(SHOAL_F16, f16, 3, 3);
  EXPECT_EQ(f16[0], 0x3555);                // 1/3 rounded once from f32
  EXPECT_EQ(f16[1], 0x0000);                // 2^-24 / 3 < half the smallest subnormal
  EXPECT_EQ(f16[2], 0x7555);                // 65504 / 3 = 21834.67 -> 21840
  std::uint16_t bf16[] = {0x3f80, 0x4040};  // 1, 3
  DivideBy(SHOAL_BF16, bf16, 2, 3);
  EXPECT_EQ(bf16[0], 0x3eab);
  EXPECT_EQ(bf16[1], 0x3f80);
}

// ---- names and validity ----

TEST(DtypeTest, NamesSizesAndValidity) {
  const std::size_t want_bytes[] = {4, 8, 2, 2, 1, 2, 4, 8, 1, 2, 4, 8};
  const char* want_names[] = {"f32", "f64", "f16", "bf16", "i8",  "i16",
                              "i32", "i64", "u8",  "u16",  "u32", "u64"};
  for (shoal_dtype d : kAllDtypes) {
    EXPECT_TRUE(IsValidDtype(d));
    EXPECT_EQ(DtypeBytes(d), want_bytes[d]);
    EXPECT_STREQ(DtypeName(d), want_names[d]);
  }
  EXPECT_FALSE(IsValidDtype(-1));
  EXPECT_FALSE(IsValidDtype(SHOAL_DTYPE_COUNT));
  const char* want_ops[] = {"sum", "avg", "prod", "min", "max"};
  for (shoal_reduce_op op : kAllOps) {
    EXPECT_TRUE(IsValidReduceOp(op));
    EXPECT_STREQ(ReduceOpName(op), want_ops[op]);
  }
  EXPECT_FALSE(IsValidReduceOp(-1));
  EXPECT_FALSE(IsValidReduceOp(SHOAL_REDUCE_OP_COUNT));
}

}  // namespace
}  // namespace shoal::collective
