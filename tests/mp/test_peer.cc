// shoal_test_peer: one peer process for the multi-process tests. It joins a group through the
// public C++ API and runs a scripted loop, printing one line per event on stdout so the test can
// follow it, compare result hashes across peers (bit-identity) and inject faults at known points.
//
// Inputs are deterministic: element i of the peer of rank r, in the k-th collective of epoch e, is
// Small(seed, e, k, r, i). Every member can therefore compute the exact expected result of an
// all-reduce among the epoch's members, whoever they are, and a joiner (which enters at a new
// epoch, where k starts from 0 again) agrees with the others without knowing their history. Values are small integers (and
// {-2,-1,1,2} for PROD) so every dtype represents them and every partial result exactly.
//
// Lines (space-separated key=value after a word):
//   READY peer=<hex> port=..         after Create
//   MEMBER epoch=.. n=.. rank=..     after each successful update_topology
//   START step=.. epoch=.. bytes=..  just before a collective
//   RESULT step=.. epoch=.. n=.. dtype=.. op=.. status=<code> lost=<hex> hash=<hex> check=ok|FAILED|-
//   LEFT / DONE / ERROR what=..
#include <xxhash.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "mp/gather.h"
#include "shoal/collective/reduce.h"
#include "shoal/common/clock.h"
#include "shoal/shoal.hpp"

namespace {

using shoal::collective::DtypeBytes;

struct Args {
  int coord_port = 0;
  int expect = 1;           // wait until the group has this many members
  int steps = 1;            // steps of the loop (all dtype x op pairs count as one step in matrix)
  std::uint64_t count = 1000;
  std::uint64_t seed = 1;
  bool matrix = false;      // every dtype x op in each step
  int leave_after = -1;     // leave cleanly after this many steps
  std::int64_t timeout_ms = 20000;
  bool retry = true;        // on failure: update_topology and redo the step
  std::string log_level = "warn";
  bool tls = false;  // --tls: TLS on every connection (shoal-coord --tls)
  std::string secret;  // --secret: the group secret, if the coordinator has one
};

std::int64_t Small(std::uint64_t seed, std::uint64_t epoch, int k, std::uint32_t rank,
                   std::uint64_t i, shoal_reduce_op op) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull ^ (epoch * 0xD6E8FEB86659FD93ull) ^
                    (std::uint64_t(k) << 44) ^ (std::uint64_t(rank) << 32) ^ i;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  if (op == SHOAL_PROD) {
    static const int kProd[4] = {-2, -1, 1, 2};
    // Keep products within 2^8 for n <= 8 members: at most one factor of magnitude 2 per element
    // from rank 0, the others +-1.
    return rank == 0 ? kProd[x % 4] : (x & 1 ? 1 : -1);
  }
  return static_cast<std::int64_t>(x % 17) - 8;
}

void Store(shoal_dtype dt, std::int64_t v, std::uint8_t* p) {
  switch (dt) {
    case SHOAL_F32: { float f = static_cast<float>(v); std::memcpy(p, &f, 4); return; }
    case SHOAL_F64: { double d = static_cast<double>(v); std::memcpy(p, &d, 8); return; }
    case SHOAL_F16: { auto h = shoal::collective::FloatToHalf(static_cast<float>(v)); std::memcpy(p, &h, 2); return; }
    case SHOAL_BF16: { auto h = shoal::collective::FloatToBf16(static_cast<float>(v)); std::memcpy(p, &h, 2); return; }
    default: {
      std::uint64_t u = static_cast<std::uint64_t>(v);  // two's complement, truncated to the width
      std::memcpy(p, &u, DtypeBytes(dt));
      return;
    }
  }
}

std::vector<std::uint8_t> Input(const Args& a, std::uint64_t epoch, int k, std::uint32_t rank,
                                shoal_dtype dt, shoal_reduce_op op) {
  std::size_t eb = DtypeBytes(dt);
  std::vector<std::uint8_t> v(a.count * eb);
  for (std::uint64_t i = 0; i < a.count; i++) {
    Store(dt, Small(a.seed, epoch, k, rank, i, op), v.data() + i * eb);
  }
  return v;
}

std::vector<std::uint8_t> Expected(const Args& a, std::uint64_t epoch, int k, std::uint32_t n,
                                   shoal_dtype dt, shoal_reduce_op op) {
  std::vector<std::uint8_t> want = Input(a, epoch, k, 0, dt, op);
  shoal_reduce_op base = op == SHOAL_AVG ? SHOAL_SUM : op;
  for (std::uint32_t r = 1; r < n; r++) {
    std::vector<std::uint8_t> x = Input(a, epoch, k, r, dt, op);
    shoal::collective::Reduce(dt, base, want.data(), want.data(), x.data(), a.count);
  }
  if (op == SHOAL_AVG) shoal::collective::DivideBy(dt, want.data(), a.count, n);
  return want;
}

// For large buffers: compares every stride-th element (and the last) against the exact expected
// value computed for that element alone.
bool CheckSampled(const Args& a, std::uint64_t epoch, int k, std::uint32_t n, shoal_dtype dt,
                  shoal_reduce_op op, const std::vector<std::uint8_t>& got) {
  std::size_t eb = DtypeBytes(dt);
  shoal_reduce_op base = op == SHOAL_AVG ? SHOAL_SUM : op;
  std::uint8_t want[8], x[8];
  auto check_one = [&](std::uint64_t i) {
    Store(dt, Small(a.seed, epoch, k, 0, i, op), want);
    for (std::uint32_t r = 1; r < n; r++) {
      Store(dt, Small(a.seed, epoch, k, r, i, op), x);
      shoal::collective::Reduce(dt, base, want, want, x, 1);
    }
    if (op == SHOAL_AVG) shoal::collective::DivideBy(dt, want, 1, n);
    return std::memcmp(want, got.data() + i * eb, eb) == 0;
  };
  for (std::uint64_t i = 0; i < a.count; i += 4099) {
    if (!check_one(i)) return false;
  }
  if (a.count > 0 && !check_one(a.count - 1)) return false;
  return true;
}

bool ParseArgs(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; i++) {
    std::string k = argv[i];
    auto val = [&]() -> const char* { return i + 1 < argc ? argv[++i] : ""; };
    if (k == "--coord-port") a->coord_port = std::atoi(val());
    else if (k == "--expect") a->expect = std::atoi(val());
    else if (k == "--steps") a->steps = std::atoi(val());
    else if (k == "--count") a->count = std::strtoull(val(), nullptr, 10);
    else if (k == "--seed") a->seed = std::strtoull(val(), nullptr, 10);
    else if (k == "--matrix") a->matrix = true;
    else if (k == "--leave-after") a->leave_after = std::atoi(val());
    else if (k == "--timeout-ms") a->timeout_ms = std::atoll(val());
    else if (k == "--no-retry") a->retry = false;
    else if (k == "--log-level") a->log_level = val();
    else if (k == "--tls") a->tls = true;
    else if (k == "--secret") a->secret = val();
    else {
      std::fprintf(stderr, "unknown argument %s\n", k.c_str());
      return false;
    }
  }
  return a->coord_port > 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (!ParseArgs(argc, argv, &a)) return 64;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::unique_ptr<shoal::Communicator> comm =
      shoal::mp::CreatePeer(a.coord_port, a.timeout_ms, a.log_level, a.secret, {}, a.tls);
  if (!comm) return 1;
  shoal::Status s;

  // Wait for the expected group size (joiners are admitted at the members' update_topology).
  if (!shoal::mp::GatherGroup(comm.get(), a.expect, a.timeout_ms)) return 1;

  std::vector<std::pair<shoal_dtype, shoal_reduce_op>> kinds;
  if (a.matrix) {
    for (int d = 0; d < SHOAL_DTYPE_COUNT; d++)
      for (int o = 0; o < SHOAL_REDUCE_OP_COUNT; o++)
        kinds.emplace_back(static_cast<shoal_dtype>(d), static_cast<shoal_reduce_op>(o));
  } else {
    kinds.emplace_back(SHOAL_F32, SHOAL_SUM);
  }
  int failures = 0;
  std::uint64_t counted_epoch = 0;
  int op_in_epoch = 0;  // collectives started in counted_epoch
  for (int step = 0; step < a.steps; step++) {
    if (a.leave_after >= 0 && step == a.leave_after) {
      s = comm->Leave();
      std::printf("LEFT status=%d\n", s.code());
      return s.ok() ? 0 : 1;
    }
    for (std::size_t k = 0; k < kinds.size(); k++) {
      auto [dt, op] = kinds[k];
      for (int attempt = 0;; attempt++) {
        std::uint32_t n = comm->world_size(), rank = comm->rank();
        std::uint64_t epoch = comm->epoch();
        if (epoch != counted_epoch) {
          counted_epoch = epoch;
          op_in_epoch = 0;
        }
        int k_in_epoch = op_in_epoch++;
        std::vector<std::uint8_t> buf = Input(a, epoch, k_in_epoch, rank, dt, op);
        std::printf("START step=%d epoch=%" PRIu64 " k=%d bytes=%zu t_ms=%lld\n", step, epoch,
                    k_in_epoch, buf.size(), static_cast<long long>(shoal::MonotonicNowMs()));
        shoal::CollectiveOptions co;
        co.tag = k;
        s = comm->AllReduce(buf.data(), buf.data(), a.count, dt, op, co);
        const char* check = "-";
        if (s.ok()) {
          bool good = a.count > (1u << 22) ? CheckSampled(a, epoch, k_in_epoch, n, dt, op, buf)
                                           : buf == Expected(a, epoch, k_in_epoch, n, dt, op);
          check = good ? "ok" : "FAILED";
          if (std::strcmp(check, "FAILED") == 0) failures++;
        }
        std::printf("RESULT step=%d epoch=%" PRIu64 " k=%d n=%u dtype=%s op=%s status=%d lost=%016" PRIx64
                    " hash=%016llx check=%s t_ms=%lld\n",
                    step, epoch, k_in_epoch, n, shoal::collective::DtypeName(dt),
                    shoal::collective::ReduceOpName(op), s.code(), s.peer(),
                    static_cast<unsigned long long>(s.ok() ? XXH3_64bits(buf.data(), buf.size()) : 0),
                    check, static_cast<long long>(shoal::MonotonicNowMs()));
        if (s.ok()) break;
        if (!a.retry || attempt >= 20) return 1;
        shoal::mp::StepBoundary(comm.get(), /*with_status=*/true).IgnoreError();
      }
    }
    // Step boundary: admit joiners, drop the dead.
    shoal::mp::StepBoundary(comm.get(), /*with_status=*/false).IgnoreError();
  }
  std::printf("DONE failures=%d\n", failures);
  return failures == 0 ? 0 : 3;
}
