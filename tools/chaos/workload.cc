#include "tools/chaos/workload.h"

#include <xxhash.h>

#include <cassert>
#include <cstring>
#include <type_traits>

namespace shoal::chaos {
namespace {

// Element i of a stream: an affine walk modulo 2 kInputMagnitude + 1, one multiply per element (a
// full mix per element would make the driver's references of the large op cost more than the
// peers' all-reduces). The stride is odd and the modulus is odd, so consecutive elements differ.
constexpr std::uint64_t kInputModulus = 2 * kInputMagnitude + 1;

template <typename T>
void FillAs(const OpSpec& spec, std::uint64_t stream, void* out) {
  T* p = static_cast<T*>(out);
  for (std::uint64_t i = 0; i < spec.count; i++) p[i] = static_cast<T>(InputValue(stream, i));
}

template <typename T>
void StoreAs(const std::vector<std::int64_t>& sums, std::int64_t n, shoal_reduce_op op,
             std::vector<std::uint8_t>* out) {
  out->resize(sums.size() * sizeof(T));
  T* p = reinterpret_cast<T*>(out->data());
  for (std::size_t i = 0; i < sums.size(); i++) {
    if constexpr (std::is_floating_point_v<T>) {
      // The sum is an integer below 2^24: exact as a float. AVG is one IEEE division by the
      // member count, as the chunk owner computes it.
      T sum = static_cast<T>(sums[i]);
      p[i] = op == SHOAL_AVG ? sum / static_cast<T>(n) : sum;
    } else {
      p[i] = static_cast<T>(op == SHOAL_AVG ? sums[i] / n : sums[i]);  // truncates toward zero
    }
  }
}

}  // namespace

std::vector<OpSpec> StepOps(std::uint64_t large_count) {
  return {
      {1, SHOAL_I32, 1, SHOAL_SUM, false},
      {2, SHOAL_F32, 1537, SHOAL_AVG, false},
      {3, SHOAL_I64, 12289, SHOAL_SUM, false},
      {4, SHOAL_F32, large_count, SHOAL_SUM, true},
  };
}

std::size_t ElementBytes(shoal_dtype dtype) {
  switch (dtype) {
    case SHOAL_I32:
    case SHOAL_F32:
      return 4;
    case SHOAL_I64:
      return 8;
    default:
      assert(false && "StepOps uses i32, i64 and f32 only");
      return 0;
  }
}

std::uint64_t Mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::uint64_t InputStream(std::uint64_t epoch, std::uint64_t tag, std::uint64_t seq,
                          std::uint64_t peer) {
  return Mix(Mix(Mix(Mix(epoch) ^ tag) ^ seq) ^ peer);
}

std::int64_t InputValue(std::uint64_t stream, std::uint64_t i) {
  const std::uint64_t stride = (stream >> 33) | 1;
  return static_cast<std::int64_t>((stream + i * stride) % kInputModulus) - kInputMagnitude;
}

void FillInput(const OpSpec& spec, std::uint64_t epoch, std::uint64_t seq, std::uint64_t peer,
               void* out) {
  const std::uint64_t stream = InputStream(epoch, spec.tag, seq, peer);
  switch (spec.dtype) {
    case SHOAL_I32:
      return FillAs<std::int32_t>(spec, stream, out);
    case SHOAL_I64:
      return FillAs<std::int64_t>(spec, stream, out);
    case SHOAL_F32:
      return FillAs<float>(spec, stream, out);
    default:
      assert(false && "StepOps uses i32, i64 and f32 only");
  }
}

std::vector<std::uint8_t> Reference(const OpSpec& spec, std::uint64_t epoch, std::uint64_t seq,
                                    const std::vector<std::uint64_t>& members) {
  assert(!members.empty() && members.size() <= kMembersExactMax);
  std::vector<std::int64_t> sums(spec.count, 0);
  for (std::uint64_t peer : members) {
    const std::uint64_t stream = InputStream(epoch, spec.tag, seq, peer);
    for (std::uint64_t i = 0; i < spec.count; i++) sums[i] += InputValue(stream, i);
  }
  const auto n = static_cast<std::int64_t>(members.size());
  std::vector<std::uint8_t> out;
  switch (spec.dtype) {
    case SHOAL_I32:
      StoreAs<std::int32_t>(sums, n, spec.op, &out);
      break;
    case SHOAL_I64:
      StoreAs<std::int64_t>(sums, n, spec.op, &out);
      break;
    case SHOAL_F32:
      StoreAs<float>(sums, n, spec.op, &out);
      break;
    default:
      assert(false && "StepOps uses i32, i64 and f32 only");
  }
  return out;
}

std::uint64_t HashBytes(const void* data, std::size_t bytes) { return XXH3_64bits(data, bytes); }

}  // namespace shoal::chaos
