#include "tools/chaos/peer.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "shoal/shoal.hpp"
#include "tools/chaos/record.h"
#include "tools/chaos/workload.h"

namespace shoal::chaos {
namespace {

std::atomic<bool> g_stop{false};
void OnStopSignal(int) { g_stop = true; }

std::int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void SleepMs(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// Founders start at revision 1 with the same state, a joiner at 0 with zeros.
std::uint64_t InitialRevision(const PeerConfig& config) { return config.joiner ? 0 : 1; }

std::string Members(const std::vector<PeerId>& members) {
  std::string out;
  for (PeerId p : members) out += (out.empty() ? "" : ",") + HexId(p);
  return out.empty() ? "-" : out;
}

// The shared state of workload.h's step: its tensors and the update of one step.
class State {
 public:
  State(const PeerConfig& config, PeerId self) : w_(config.state_count), opt_(config.state_count) {
    shared_.revision = InitialRevision(config);
    if (!config.joiner) {
      for (std::size_t i = 0; i < w_.size(); i++) w_[i] = static_cast<float>(i % 1000) * 1e-3f;
    }
    // Optimizer-like state that each member keeps for itself (allow_divergence): only a joiner
    // receives it. Its bytes are this peer's own from the start.
    for (std::size_t i = 0; i < opt_.size(); i++) {
      opt_[i] = static_cast<float>(Mix(self ^ i) % 1000);
    }
    shared_.tensors.push_back({"w", SHOAL_F32, w_.size(), w_.data()});
    shared_.tensors.push_back({"counters", SHOAL_I64, counters_.size(), counters_.data()});
    shared_.tensors.push_back({"opt", SHOAL_F32, opt_.size(), opt_.data(), true});
  }

  SharedState* shared() { return &shared_; }

  // For the driver's self-check: one bit of "w" changes, as a silent corruption would.
  void Perturb() { w_[0] = std::nextafter(w_[0], 1e30f); }

  // The hash of every tensor that must be identical on all members ("opt" aside).
  std::uint64_t Hash() const {
    const std::uint64_t h[2] = {HashBytes(w_.data(), w_.size() * sizeof(float)),
                                HashBytes(counters_.data(), counters_.size() * 8)};
    return HashBytes(h, sizeof h);
  }

  // One step's update from the step's all-reduce results (in StepOps order). The same results
  // and the same bits before give the same bits after: plain float and integer arithmetic in a
  // fixed order.
  void Apply(const std::vector<OpSpec>& ops,
             const std::vector<std::vector<std::uint8_t>>& results) {
    const auto* small = reinterpret_cast<const std::int32_t*>(results[0].data());
    const auto* avg = reinterpret_cast<const float*>(results[1].data());
    const auto* mid = reinterpret_cast<const std::int64_t*>(results[2].data());
    const auto* large = reinterpret_cast<const float*>(results[3].data());
    const std::uint64_t n_large = ops[3].count;
    for (std::size_t i = 0; i < w_.size() && n_large > 0; i++) {
      w_[i] = w_[i] * 0.999f + large[i % n_large] * (1.0f / 1024.0f) + avg[i % ops[1].count];
    }
    counters_[0] += 1;
    counters_[1] += small[0];
    counters_[2] += mid[ops[2].count / 2];
    counters_[3] = static_cast<std::int64_t>(HashBytes(large, n_large * sizeof(float)) >> 1);
    for (float& x : opt_) x += 1.0f;  // diverges per member by design
    shared_.revision++;
  }

 private:
  SharedState shared_;
  std::vector<float> w_;
  std::vector<std::int64_t> counters_ = std::vector<std::int64_t>(4, 0);
  std::vector<float> opt_;
};

class Peer {
 public:
  explicit Peer(const PeerConfig& config) : config_(config), ops_(StepOps(config.large_count)) {}

  int Run() {
    if (!record_.Open(config_.record_path)) {
      std::printf("cannot open the record %s\n", config_.record_path.c_str());
      return 2;
    }
    if (!Connect()) return 0;  // stopped before the coordinator answered
    State state(config_, comm_->peer_id());
    for (const OpSpec& spec : ops_) {
      inputs_.emplace_back(spec.count * ElementBytes(spec.dtype));
      results_.emplace_back(spec.count * ElementBytes(spec.dtype));
    }
    while (!g_stop) {
      const std::int64_t attempt_ms = NowMs();
      if (!Boundary()) {
        if (closed_) return 3;
        continue;
      }
      if (comm_->world_size() == 1) SleepMs(config_.solo_pause_ms);
      if (g_stop) break;
      if (!Sync(&state)) continue;
      if (!AllReduces()) continue;
      state.Apply(ops_, results_);
      // The sabotages of one run all happen in the same step (steps_ counts the steps before it).
      if (Sabotage("state")) state.Perturb();
      record_.Write("STEP epoch=" + std::to_string(epoch_) + " rev=" +
                    std::to_string(state.shared()->revision) + " state=" + HexId(state.Hash()) +
                    " t0=" + std::to_string(attempt_ms) + " t1=" + std::to_string(NowMs()));
      if (Sabotage("hang")) SilentMs(60000);
      steps_++;
    }
    Status s = comm_->Leave();
    record_.Write("LEAVE status=" + std::to_string(s.code()) + " t=" + std::to_string(NowMs()));
    return 0;
  }

 private:
  // Creates the communicator, retrying while the coordinator does not answer. False if stopped.
  bool Connect() {
    Options opt;
    opt.coordinator_host = config_.coord_host;
    opt.coordinator_port = static_cast<std::uint16_t>(config_.coord_port);
    opt.data_host = config_.data_host;
    opt.timeout_ms = config_.timeout_ms;
    opt.verdict_grace_ms = config_.grace_ms;
    opt.setup_timeout_ms = config_.timeout_ms;
    opt.log_level = config_.log_level;
    while (!g_stop) {
      const std::int64_t t0 = NowMs();
      Status s = Communicator::Create(opt, &comm_);
      if (s.ok()) {
        record_.Write("HELLO peer=" + HexId(comm_->peer_id()) + " rev=" +
                      std::to_string(InitialRevision(config_)) + " t=" + std::to_string(NowMs()));
        return true;
      }
      std::printf("create: %s\n", s.ToString().c_str());
      record_.Write("CREATE status=" + std::to_string(s.code()) + " t0=" + std::to_string(t0) +
                    " t1=" + std::to_string(NowMs()));
      SleepMs(200);
    }
    return false;
  }

  // update_topology. True once this peer is a member of a committed epoch.
  bool Boundary() {
    const std::int64_t t0 = NowMs();
    Status s = comm_->UpdateTopology();
    record_.Write("UT status=" + std::to_string(s.code()) + " lost=" + HexId(s.peer()) + " epoch=" +
                  std::to_string(comm_->epoch()) + " n=" + std::to_string(comm_->world_size()) +
                  " t0=" + std::to_string(t0) + " t1=" + std::to_string(NowMs()));
    if (!s.ok()) {
      if (s.code() == SHOAL_ERR_CLOSED) {
        closed_ = true;
      } else if (s.code() != SHOAL_ERR_TIMEOUT) {
        std::printf("update_topology: %s\n", s.ToString().c_str());
        SleepMs(100);  // an error that returns at once must not spin
      }
      return false;
    }
    if (!comm_->is_member()) return false;
    if (comm_->epoch() != epoch_) {
      epoch_ = comm_->epoch();
      seq_.clear();
    }
    return true;
  }

  void WriteOp(const char* kind, std::uint64_t tag, std::uint64_t seq,
               const std::vector<PeerId>& members, const Status& s, std::uint64_t revision,
               std::uint64_t result_hash, std::uint64_t state_hash, std::uint64_t rx_bytes,
               std::int64_t t0) {
    record_.Write(std::string("OP kind=") + kind +
                  " tag=" + (tag == kSyncTag ? std::string("sync") : std::to_string(tag)) +
                  " seq=" + std::to_string(seq) + " epoch=" + std::to_string(epoch_) +
                  " members=" + Members(members) + " status=" + std::to_string(s.code()) +
                  " lost=" + HexId(s.peer()) + " rev=" + std::to_string(revision) +
                  " hash=" + HexId(result_hash) + " state=" + HexId(state_hash) +
                  " rx=" + std::to_string(rx_bytes) + " t0=" + std::to_string(t0) +
                  " t1=" + std::to_string(NowMs()));
  }

  bool Sync(State* state) {
    const std::uint64_t seq = seq_[kSyncTag]++;
    const std::vector<PeerId> members = comm_->members();
    const std::uint64_t revision = state->shared()->revision;
    const std::int64_t t0 = NowMs();
    SyncInfo info;
    Status s = comm_->SyncSharedState(state->shared(), &info);
    if (!s.ok()) state->shared()->revision = revision;  // unchanged: the next sync sends again
    if (!s.ok()) std::printf("sync: %s\n", s.ToString().c_str());
    WriteOp("sync", kSyncTag, seq, members, s, state->shared()->revision, 0,
            s.ok() ? state->Hash() : 0, info.rx_bytes, t0);
    return s.ok();
  }

  bool AllReduces() {
    const std::vector<PeerId> members = comm_->members();
    for (std::size_t k = 0; k < ops_.size() && !g_stop; k++) {
      const OpSpec& spec = ops_[k];
      const std::uint64_t seq = seq_[spec.tag]++;
      std::vector<std::uint8_t>& out = results_[k];
      void* send = spec.in_place ? out.data() : inputs_[k].data();
      FillInput(spec, epoch_, seq, comm_->peer_id(), send);
      CollectiveOptions opt;
      opt.tag = spec.tag;
      const std::int64_t t0 = NowMs();
      Status s = comm_->AllReduce(send, out.data(), spec.count, spec.dtype, spec.op, opt);
      if (s.ok() && k + 1 == ops_.size() && Sabotage("result")) out[0] ^= 1;
      if (!s.ok())
        std::printf("all-reduce %llu: %s\n", static_cast<unsigned long long>(spec.tag),
                    s.ToString().c_str());
      WriteOp("ar", spec.tag, seq, members, s, 0, s.ok() ? HashBytes(out.data(), out.size()) : 0, 0,
              0, t0);
      if (!s.ok()) return false;
    }
    return !g_stop;
  }

  // True once per kind, at the first chance after the configured step, for each configured kind
  // (config_.sabotage is a comma-separated list).
  bool Sabotage(const std::string& kind) {
    if (steps_ < config_.sabotage_after_steps || sabotaged_.count(kind)) return false;
    if (("," + config_.sabotage + ",").find("," + kind + ",") == std::string::npos) return false;
    sabotaged_.insert(kind);
    std::printf("sabotage: %s\n", kind.c_str());
    return true;
  }

  // The "hang" sabotage: silent for 60 s, but a SIGTERM still ends it (the run's end).
  static void SilentMs(int ms) {
    for (int slept = 0; slept < ms && !g_stop; slept += 100) SleepMs(100);
  }

  PeerConfig config_;
  std::vector<OpSpec> ops_;
  std::unique_ptr<Communicator> comm_;
  RecordWriter record_;
  std::uint64_t epoch_ = 0;
  std::map<std::uint64_t, std::uint64_t> seq_;  // tag -> next seq in epoch_
  std::vector<std::vector<std::uint8_t>> inputs_, results_;
  bool closed_ = false;
  int steps_ = 0;
  std::set<std::string> sabotaged_;  // the kinds already done
};

}  // namespace

int RunPeer(const PeerConfig& config) {
  std::signal(SIGTERM, OnStopSignal);
  std::signal(SIGINT, OnStopSignal);
  // Its own lines go to stdout with the library's log (spdlog's default sink), in order.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  Peer peer(config);
  return peer.Run();
}

}  // namespace shoal::chaos
