// shoal_sync_peer: one peer process for the shared-state tests. It joins a group, holds a shared
// state of deterministic content, and runs sync steps through the public C++ API, printing one line
// per event on stdout so that a test can follow it and inject faults at known points.
//
// Content: the state at revision R is Base(seed) with R updates applied; update r adds 1 to one byte
// (chosen from r) of one non-empty tensor. Any peer can therefore compute the exact bytes the group
// must hold at any revision, and a joiner that starts from zeros checks what it received.
//
// Steps: the first sync is made with the starting state; each later step applies the next update,
// advances the revision by one and syncs. On failure (with --retry) the peer calls update_topology
// and syncs again, at most 20 times per step. With --allreduce N a step trains instead: after its
// sync, an f32[N] "gradient" made from the revision and the rank is all-reduced (retried like the
// sync) and added to tensor 0, which must be f32; the next step's revision is one higher. The
// content check is then off (the bytes depend on the group), and the state hashes tell whether
// the members agree.
//
// Lines (space-separated key=value after a word):
//   READY peer=<hex>
//   MEMBER epoch=.. n=.. rank=..
//   SYNCSTART step=.. rev=..
//   SYNC step=.. status=<code> lost=<hex> rev=.. rx=.. tx=.. tensors=.. senders=<hex>:<bytes>,..
//        state=<hex> div=<hex>|- check=ok|FAILED|- hash_ms=.. xfer_ms=.. ms=.. msg=".."
//   (state hashes every tensor but the --divergent one; div hashes that one after a successful
//   sync, so that a test can tell whose bytes a joiner received)
//   ARSTART step=.. rev=..
//   ALLREDUCE step=.. status=<code> lost=<hex> rev=.. t=.. ms=.. msg=".."
//   DONE failures=..   /   ERROR what=..
// t= is the monotonic clock in ms (CLOCK_MONOTONIC, the same in every process of the machine).
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "mp/gather.h"
#include "mp/layout.h"
#include "shoal/common/clock.h"
#include "shoal/common/dtype.h"
#include "shoal/shoal.hpp"

namespace {

struct Args {
  int coord_port = 0;
  int expect = 1;                 // wait until the group has this many members
  std::string layout = "f32:1000";  // dtype:count,... ; tensors are named t0, t1, ...
  std::uint64_t seed = 1;
  std::uint64_t revision = 0;     // start at this revision with its content
  bool zeros = false;             // start with zeros (a joiner); revision stays --revision
  int steps = 1;
  int flip_tensor = -1;           // flip one bit of this tensor before the first sync
  std::uint64_t flip_byte = 0;
  std::uint64_t ahead = 0;        // report revision + ahead at step 1 (the group knows its revision
                                  // only after a first committed sync)
  int divergent = -1;             // this tensor allows divergence and holds per-peer bytes
  bool retry = false;
  std::int64_t timeout_ms = 30000;
  int hold_ms = 0;                // sleep before each step's sync
  int forget_at = -1;             // at this step, lose the state (zeros, revision 0) before syncing
  bool check = true;              // --no-check: skip the content check (benchmarks)
  std::uint64_t allreduce = 0;    // train: all-reduce this many f32 per step into tensor 0
  std::string log_level = "warn";
  std::string secret;             // the group secret, if the coordinator has one
  bool tls = false;               // --tls: TLS on every connection (shoal-coord --tls)
  std::vector<std::string> standbys;  // --standby host:port (repeatable)
};

struct Tensor {
  shoal_dtype dtype = SHOAL_F32;
  std::uint64_t count = 0;
  std::vector<std::uint8_t> bytes;
};

std::uint64_t Mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

void FillBase(std::uint64_t seed, std::size_t t, std::vector<std::uint8_t>* out) {
  std::uint64_t key = Mix(seed * 1000003 + t);
  std::size_t words = out->size() / 8;
  auto* p = out->data();
  for (std::size_t i = 0; i < words; i++) {
    std::uint64_t v = Mix(key ^ i);
    std::memcpy(p + i * 8, &v, 8);
  }
  for (std::size_t i = words * 8; i < out->size(); i++) p[i] = static_cast<std::uint8_t>(Mix(key ^ i));
}

// Update r changes one byte of one non-empty tensor.
void ApplyUpdate(std::uint64_t r, std::vector<Tensor>* state, int skip_tensor) {
  std::vector<std::size_t> nonempty;
  for (std::size_t t = 0; t < state->size(); t++) {
    if (!(*state)[t].bytes.empty() && static_cast<int>(t) != skip_tensor) nonempty.push_back(t);
  }
  if (nonempty.empty()) return;
  Tensor& x = (*state)[nonempty[Mix(r) % nonempty.size()]];
  x.bytes[Mix(r ^ 0x5555) % x.bytes.size()] += 1;
}

// The bytes tensor t must hold at revision r.
std::vector<std::uint8_t> Expected(const Args& a, const std::vector<Tensor>& shape, std::size_t t,
                                   std::uint64_t r) {
  // Only tensor t gets its real size (the others one byte, or none if empty): ApplyUpdate picks
  // tensors by emptiness, which is kept. Tensor t is filled in place, so that a check of a large
  // tensor holds one extra copy of it, not two.
  std::vector<Tensor> one(shape.size());
  for (std::size_t i = 0; i < shape.size(); i++) {
    if (i != t) one[i].bytes.resize(shape[i].bytes.empty() ? 0 : 1);
  }
  one[t].bytes.resize(shape[t].bytes.size());
  FillBase(a.seed, t, &one[t].bytes);
  for (std::uint64_t u = 1; u <= r; u++) ApplyUpdate(u, &one, a.divergent);
  return std::move(one[t].bytes);
}

bool ParseLayout(const std::string& spec, std::vector<Tensor>* out) {
  std::vector<shoal::mp::LayoutTensor> layout;
  if (!shoal::mp::ParseLayout(spec, &layout)) return false;
  for (const shoal::mp::LayoutTensor& l : layout) {
    Tensor t;
    t.dtype = l.dtype;
    t.count = l.count;
    t.bytes.assign(l.bytes(), 0);
    out->push_back(std::move(t));
  }
  return true;
}

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

bool ParseArgs(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; i++) {
    std::string k = argv[i];
    auto val = [&]() -> const char* { return i + 1 < argc ? argv[++i] : ""; };
    if (k == "--coord-port") a->coord_port = std::atoi(val());
    else if (k == "--expect") a->expect = std::atoi(val());
    else if (k == "--layout") a->layout = val();
    else if (k == "--seed") a->seed = std::strtoull(val(), nullptr, 10);
    else if (k == "--revision") a->revision = std::strtoull(val(), nullptr, 10);
    else if (k == "--zeros") a->zeros = true;
    else if (k == "--steps") a->steps = std::atoi(val());
    else if (k == "--flip") {
      std::string v = val();
      a->flip_tensor = std::atoi(v.c_str());
      a->flip_byte = std::strtoull(v.c_str() + v.find(':') + 1, nullptr, 10);
    } else if (k == "--ahead") a->ahead = std::strtoull(val(), nullptr, 10);
    else if (k == "--divergent") a->divergent = std::atoi(val());
    else if (k == "--retry") a->retry = true;
    else if (k == "--timeout-ms") a->timeout_ms = std::atoll(val());
    else if (k == "--hold-ms") a->hold_ms = std::atoi(val());
    else if (k == "--forget-at") a->forget_at = std::atoi(val());
    else if (k == "--no-check") a->check = false;
    else if (k == "--allreduce") a->allreduce = std::strtoull(val(), nullptr, 10);
    else if (k == "--log-level") a->log_level = val();
    else if (k == "--secret") a->secret = val();
    else if (k == "--tls") a->tls = true;
    else if (k == "--standby") a->standbys.push_back(val());
    else {
      std::fprintf(stderr, "unknown argument %s\n", k.c_str());
      return false;
    }
  }
  if (a->allreduce > 0) a->check = false;
  return a->coord_port > 0;
}

// One training step's all-reduce (--allreduce): the gradient of this rank at `revision`, summed
// over the group and added to tensor 0. Retried after update_topology like a sync.
bool TrainStep(const Args& a, shoal::Communicator* comm, int step, std::uint64_t revision,
               Tensor* t0) {
  std::vector<float> grad(a.allreduce);
  for (int attempt = 0;; attempt++) {
    std::uint64_t key = revision * 7919 + comm->rank() * 104729;
    for (std::uint64_t i = 0; i < grad.size(); i++) {
      grad[i] = static_cast<float>(Mix(key + i) % 1000) / 1000.0f;
    }
    std::printf("ARSTART step=%d rev=%" PRIu64 "\n", step, revision);
    auto t0_time = std::chrono::steady_clock::now();
    shoal::Status s = comm->AllReduce(grad.data(), grad.data(), grad.size(), SHOAL_F32, SHOAL_SUM);
    std::printf("ALLREDUCE step=%d status=%d lost=%016" PRIx64 " rev=%" PRIu64
                " t=%lld ms=%.1f msg=\"%s\"\n",
                step, s.code(), s.peer(), revision,
                static_cast<long long>(shoal::MonotonicNowMs()), MsSince(t0_time),
                s.ok() ? "" : s.ToString().c_str());
    if (s.ok()) break;
    if (!a.retry || attempt >= 20) return false;
    shoal::mp::StepBoundary(comm, /*with_status=*/true).IgnoreError();
  }
  auto* w = reinterpret_cast<float*>(t0->bytes.data());
  std::uint64_t n = std::min<std::uint64_t>(t0->count, grad.size());
  for (std::uint64_t i = 0; i < n; i++) w[i] += 0.001f * grad[i];
  return true;
}


}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (!ParseArgs(argc, argv, &a)) return 64;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::vector<Tensor> state;
  if (!ParseLayout(a.layout, &state) ||
      (a.allreduce > 0 && (state.empty() || state[0].dtype != SHOAL_F32))) {
    std::printf("ERROR what=layout\n");
    return 64;
  }
  std::unique_ptr<shoal::Communicator> comm =
      shoal::mp::CreatePeer(a.coord_port, a.timeout_ms, a.log_level, a.secret, a.standbys,
                            a.tls);
  if (!comm) return 1;
  shoal::Status s;

  if (!a.zeros) {
    for (std::size_t t = 0; t < state.size(); t++) FillBase(a.seed, t, &state[t].bytes);
    for (std::uint64_t u = 1; u <= a.revision; u++) ApplyUpdate(u, &state, a.divergent);
  }
  if (a.divergent >= 0 && a.divergent < static_cast<int>(state.size())) {
    FillBase(comm->peer_id(), 999, &state[a.divergent].bytes);  // this peer's own bytes
  }
  if (a.flip_tensor >= 0) state[a.flip_tensor].bytes[a.flip_byte] ^= 1;

  shoal::SharedState shared;
  shared.revision = a.revision;
  for (std::size_t t = 0; t < state.size(); t++) {
    shoal::SharedTensor st;
    st.name = "t" + std::to_string(t);
    st.dtype = state[t].dtype;
    st.count = state[t].count;
    st.data = state[t].bytes.data();
    st.allow_divergence = static_cast<int>(t) == a.divergent;
    shared.tensors.push_back(st);
  }

  if (!shoal::mp::GatherGroup(comm.get(), a.expect, a.timeout_ms)) return 1;

  int failures = 0;
  for (int step = 0; step < a.steps; step++) {
    if (step > 0) {
      if (a.allreduce == 0) ApplyUpdate(shared.revision + 1, &state, a.divergent);
      shared.revision += 1;
    }
    if (step == a.forget_at) {  // as if restarted without its state: it must receive everything
      for (Tensor& t : state) std::fill(t.bytes.begin(), t.bytes.end(), 0);
      shared.revision = 0;
    }
    if (a.hold_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(a.hold_ms));
    for (int attempt = 0;; attempt++) {
      std::uint64_t reported = shared.revision;
      if (step == 1 && attempt == 0) shared.revision += a.ahead;
      std::printf("SYNCSTART step=%d rev=%" PRIu64 "\n", step, shared.revision);
      auto t0 = std::chrono::steady_clock::now();
      shoal::SyncInfo info;
      s = comm->SyncSharedState(&shared, &info);
      double ms = MsSince(t0);
      if (!s.ok()) shared.revision = reported;
      std::string senders;
      for (const auto& [peer, bytes] : info.rx_from) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%s%016" PRIx64 ":%" PRIu64, senders.empty() ? "" : ",",
                      peer, bytes);
        senders += buf;
      }
      const char* check = "-";
      std::uint64_t state_hash = 0;
      std::string div = "-";
      if (s.ok() && a.divergent >= 0 && a.divergent < static_cast<int>(state.size())) {
        const std::vector<std::uint8_t>& d = state[a.divergent].bytes;
        char buf[32];
        std::snprintf(buf, sizeof buf, "%016" PRIx64, XXH3_64bits(d.data(), d.size()));
        div = buf;
      }
      if (s.ok()) {
        bool good = true;
        std::vector<std::uint64_t> hashes;
        for (std::size_t t = 0; t < state.size(); t++) {
          if (static_cast<int>(t) == a.divergent) continue;
          hashes.push_back(XXH3_64bits(state[t].bytes.data(), state[t].bytes.size()));
          if (a.check) good = good && state[t].bytes == Expected(a, state, t, shared.revision);
        }
        state_hash = XXH3_64bits(hashes.data(), hashes.size() * 8);
        check = !a.check ? "-" : good ? "ok" : "FAILED";
        if (!good) failures++;
      }
      std::printf("SYNC step=%d status=%d lost=%016" PRIx64 " rev=%" PRIu64 " rx=%" PRIu64
                  " tx=%" PRIu64 " tensors=%u senders=%s state=%016" PRIx64
                  " div=%s check=%s hash_ms=%.1f xfer_ms=%.1f t=%lld ms=%.1f msg=\"%s\"\n",
                  step, s.code(), s.peer(), shared.revision, info.rx_bytes, info.tx_bytes,
                  info.tensors_received, senders.empty() ? "-" : senders.c_str(), state_hash,
                  div.c_str(), check,
                  info.hash_seconds * 1000, info.transfer_seconds * 1000,
                  static_cast<long long>(shoal::MonotonicNowMs()), ms,
                  s.ok() ? "" : s.ToString().c_str());
      if (s.ok()) break;
      if (!a.retry || attempt >= 20) {
        std::printf("DONE failures=%d\n", failures);
        return 2;
      }
      shoal::mp::StepBoundary(comm.get(), /*with_status=*/true).IgnoreError();
    }
    if (a.allreduce > 0 && !TrainStep(a, comm.get(), step, shared.revision, &state[0])) {
      std::printf("DONE failures=%d\n", failures);
      return 2;
    }
    shoal::mp::StepBoundary(comm.get(), /*with_status=*/false).IgnoreError();
  }
  std::printf("DONE failures=%d\n", failures);
  return failures == 0 ? 0 : 3;
}
