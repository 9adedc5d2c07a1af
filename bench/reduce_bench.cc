// Throughput of shoal::collective::Reduce (Google Benchmark).
//
// "bytes" below are the bytes of one input (count * element size) per second: the rate at which a
// member can fold a received segment into its own, which is what has to keep up with the network.
// The memory traffic is three times that (read a, read b, write dst). Sizes span the segment limits
// (4 KiB .. 64 MiB), i.e. L1-resident up to DRAM-bound.
//
// Built as <build>/bench/reduce_bench when Google Benchmark is installed.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "shoal/collective/reduce.h"

namespace shoal::collective {
namespace {

enum class Place { kOutOfPlace, kInPlace };  // in place: dst == a, the usual accumulate

template <shoal_dtype kDtype, shoal_reduce_op kOp, Place kPlace>
void BM_Reduce(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  const std::size_t count = bytes / DtypeBytes(kDtype);
  // Every byte 0x3c: a normal finite number in every float format (f16 0x3c3c ~ 1.06, f32
  // 0x3c3c3c3c ~ 0.0115), so no subnormal slow paths distort the figures.
  std::vector<std::uint8_t> a(bytes, 0x3c);
  std::vector<std::uint8_t> b(bytes, 0x3c);
  std::vector<std::uint8_t> dst(bytes, 0);
  void* out = kPlace == Place::kInPlace ? static_cast<void*>(a.data()) : dst.data();
  for (auto _ : state) {
    Reduce(kDtype, kOp, out, a.data(), b.data(), count);
    benchmark::DoNotOptimize(out);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(count * DtypeBytes(kDtype)));
}

#define SHOAL_REDUCE_BENCH(dtype, op, place) \
  BENCHMARK(BM_Reduce<dtype, op, place>)->RangeMultiplier(16)->Range(4 << 10, 64 << 20)

SHOAL_REDUCE_BENCH(SHOAL_F32, SHOAL_SUM, Place::kOutOfPlace);
SHOAL_REDUCE_BENCH(SHOAL_F32, SHOAL_SUM, Place::kInPlace);
SHOAL_REDUCE_BENCH(SHOAL_F32, SHOAL_MAX, Place::kInPlace);
SHOAL_REDUCE_BENCH(SHOAL_F64, SHOAL_SUM, Place::kInPlace);
SHOAL_REDUCE_BENCH(SHOAL_F16, SHOAL_SUM, Place::kInPlace);
SHOAL_REDUCE_BENCH(SHOAL_BF16, SHOAL_SUM, Place::kInPlace);
SHOAL_REDUCE_BENCH(SHOAL_I32, SHOAL_SUM, Place::kInPlace);
SHOAL_REDUCE_BENCH(SHOAL_I64, SHOAL_PROD, Place::kInPlace);
SHOAL_REDUCE_BENCH(SHOAL_U8, SHOAL_MIN, Place::kInPlace);

}  // namespace
}  // namespace shoal::collective
