#include "tools/bench/worker.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <thread>

#include "shoal/shoal.hpp"
#include "tools/common/pattern.h"

namespace shoal::bench {
namespace {

using Clock = std::chrono::steady_clock;

// Tags keep the three kinds of collectives apart (each tag has its own op sequence).
constexpr std::uint64_t kTagBarrier = 1;
constexpr std::uint64_t kTagBench = 2;
constexpr std::uint64_t kTagResult = 3;

// While the group is smaller than expected, a member's UpdateTopology returns at once; this paces
// those rounds (it is not a synchronisation: correctness does not depend on it).
constexpr std::chrono::milliseconds kMembershipPollPause{5};
constexpr std::size_t kBufferAlignmentBytes = 4096;

double SecondsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Errors after which waiting for more members is pointless.
bool IsFatalForMembership(shoal_status code) {
  switch (code) {
    case SHOAL_ERR_COORDINATOR_LOST:
    case SHOAL_ERR_REJECTED:
    case SHOAL_ERR_AUTH:
    case SHOAL_ERR_CLOSED:
    case SHOAL_ERR_INVALID_ARGUMENT:
    case SHOAL_ERR_INTERNAL:
    case SHOAL_ERR_IO:
    case SHOAL_ERR_PROTOCOL:
      return true;
    case SHOAL_OK:
    case SHOAL_ERR_TIMEOUT:
    case SHOAL_ERR_PEER_LOST:
    case SHOAL_ERR_PEER_LEFT:
    case SHOAL_ERR_MISMATCH:
    case SHOAL_ERR_NOT_MEMBER:
    case SHOAL_ERR_EPOCH_CHANGED:
    case SHOAL_ERR_INTEGRITY:
    case SHOAL_ERR_REVISION:
      return false;
  }
  return true;
}

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<float[], FreeDeleter>;

Buffer AllocateBuffer(std::size_t bytes) {
  const std::size_t rounded =
      (bytes + kBufferAlignmentBytes - 1) / kBufferAlignmentBytes * kBufferAlignmentBytes;
  return Buffer(static_cast<float*>(std::aligned_alloc(kBufferAlignmentBytes, rounded)));
}

class Worker {
 public:
  Worker(const WorkerConfig& config, std::vector<std::string>* lines)
      : config_(config), lines_(lines) {}

  int Run() {
    const Clock::time_point start = Clock::now();
    deadline_ = start + std::chrono::seconds(config_.timeout_s);
    Options options;
    options.coordinator_host = config_.coordinator_host;
    options.coordinator_port = config_.coordinator_port;
    options.data_host = config_.data_host;
    options.data_bind_host = config_.data_bind_host;
    options.data_port = config_.data_port;
    options.timeout_ms = config_.op_timeout_ms;
    options.log_level = config_.log_level;
    options.tls = config_.tls;
    if (Status s = Communicator::Create(options, &comm_); !s.ok()) {
      return Fail("joining the coordinator", s);
    }
    if (Status s = WaitForMembers(); !s.ok()) return Fail("waiting for the group", s);
    connect_s_ = SecondsBetween(start, Clock::now());
    rank_ = static_cast<int>(comm_->rank());
    if (!config_.quiet) {
      std::fprintf(stderr, "# joined as rank %d of %d in %.3f s\n", rank_,
                   config_.expected_world_size, connect_s_);
    }
    bool any_check_failed = false;
    for (std::uint64_t bytes : config_.sizes_bytes) {
      bool check_failed = false;
      if (int code = RunSize(bytes, &check_failed); code != kExitOk) return code;
      any_check_failed = any_check_failed || check_failed;
    }
    // Keep every rank in the group until all are done.
    if (Status s = Barrier(); !s.ok()) return Fail("final barrier", s);
    comm_->Leave().IgnoreError();
    if (!config_.quiet && rank_ != 0) {
      std::fprintf(stderr, "# done; rank 0 prints the results\n");
    }
    return any_check_failed ? kExitCheckFailed : kExitOk;
  }

 private:
  int Fail(const std::string& what, const Status& s) {
    std::fprintf(stderr, "SHOAL ERROR lib=shoal K=%s rank=%d n=%d: %s: %s\n",
                 config_.streams_label.c_str(), rank_, config_.expected_world_size, what.c_str(),
                 s.ToString().c_str());
    return kExitShoalError;
  }

  std::int64_t RemainingMs() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now()).count();
  }

  // Calls UpdateTopology until this peer is a member of a group of exactly the expected size.
  Status WaitForMembers() {
    const auto expected = static_cast<std::uint32_t>(config_.expected_world_size);
    for (;;) {
      if (comm_->is_member() && comm_->world_size() == expected) return Status::Ok();
      if (comm_->is_member() && comm_->world_size() > expected) {
        return Status(SHOAL_ERR_INVALID_ARGUMENT,
                      fmt::format("the group has {} members, more than --expect {}",
                                  comm_->world_size(), expected));
      }
      const std::int64_t remaining_ms = RemainingMs();
      if (remaining_ms <= 0) {
        return Status(SHOAL_ERR_TIMEOUT,
                      fmt::format("the group has {} of {} members at the deadline",
                                  comm_->is_member() ? comm_->world_size() : 0, expected));
      }
      const std::uint32_t size_before = comm_->is_member() ? comm_->world_size() : 0;
      Status s = comm_->UpdateTopology(std::min(remaining_ms, config_.op_timeout_ms));
      if (!s.ok() && IsFatalForMembership(s.code())) return s;
      const std::uint32_t size_after = comm_->is_member() ? comm_->world_size() : 0;
      if (s.ok() && size_after == size_before && size_after < expected) {
        std::this_thread::sleep_for(kMembershipPollPause);
      }
    }
  }

  Status Barrier() {
    float one = 1.0f;
    CollectiveOptions opt;
    opt.tag = kTagBarrier;
    return comm_->AllReduce(&one, &one, 1, SHOAL_F32, SHOAL_SUM, opt);
  }

  Status AllReduceBench(float* buf, std::size_t count) {
    CollectiveOptions opt;
    opt.tag = kTagBench;
    return comm_->AllReduce(buf, buf, count, SHOAL_F32, SHOAL_SUM, opt);
  }

  int RunSize(std::uint64_t bytes, bool* check_failed) {
    const IterCounts counts =
        ResolveIterCounts(bytes, config_.iters, config_.warmup, config_.batch);
    const int n = config_.expected_world_size;
    const std::size_t count = bytes / sizeof(float);
    Buffer buf = AllocateBuffer(bytes);
    if (!buf) return Fail("allocating " + SizeLabel(bytes), Status(SHOAL_ERR_IO, "out of memory"));
    float* x = buf.get();
    FillPattern(x, count, rank_);  // touch every page before anything is timed

    std::vector<double> samples_s(counts.iters, 0.0);
    std::size_t errors = 0;
    std::string first_error;
    for (int it = -counts.warmup; it < counts.iters; it++) {
      FillPattern(x, count, rank_);
      if (config_.inject_error && rank_ == 0 && it == counts.iters - 1 && count > 0) {
        x[count / 2] += 1.0f;
      }
      if (Status s = Barrier(); !s.ok()) return Fail(fmt::format("barrier, iter {}", it), s);
      const Clock::time_point t0 = Clock::now();
      Status s = AllReduceBench(x, count);
      const Clock::time_point t1 = Clock::now();
      if (!s.ok()) return Fail(fmt::format("all-reduce of {}, iter {}", SizeLabel(bytes), it), s);
      if (it >= 0) samples_s[it] = SecondsBetween(t0, t1);
      const bool do_check = config_.check == CheckMode::kEvery ||
                            (config_.check == CheckMode::kLast && it == counts.iters - 1);
      if (!do_check) continue;
      const CheckResult r = CheckSum(x, count, n);
      if (r.bad_count == 0) continue;
      errors += r.bad_count;
      if (first_error.empty()) {
        first_error = fmt::format("iter={} bad={} first_idx={} got={:.1f} want={:.1f}", it,
                                  r.bad_count, r.first_bad_index, r.got, r.want);
      }
    }

    double batch_s = 0;
    if (counts.batch > 0) {
      std::memset(x, 0, count * sizeof(float));
      if (Status s = Barrier(); !s.ok()) return Fail("barrier before the batch", s);
      const Clock::time_point t0 = Clock::now();
      for (int k = 0; k < counts.batch; k++) {
        if (Status s = AllReduceBench(x, count); !s.ok()) {
          return Fail(fmt::format("all-reduce of {}, batch op {}", SizeLabel(bytes), k), s);
        }
      }
      batch_s = SecondsBetween(t0, Clock::now()) / counts.batch;
      if (config_.check != CheckMode::kNone) {
        const std::size_t bad = CountNonZero(x, count);
        if (bad != 0) {
          errors += bad;
          if (first_error.empty()) first_error = fmt::format("batch phase: {} nonzero", bad);
        }
      }
    }

    // Max over ranks of each sample, of the batch time and of the error count (untimed).
    std::vector<double> combined(samples_s);
    combined.push_back(batch_s);
    combined.push_back(static_cast<double>(errors));
    CollectiveOptions opt;
    opt.tag = kTagResult;
    if (Status s = comm_->AllReduce(combined.data(), combined.data(), combined.size(), SHOAL_F64,
                                    SHOAL_MAX, opt);
        !s.ok()) {
      return Fail("gathering the times", s);
    }
    const bool any_errors = combined.back() > 0;
    combined.pop_back();
    batch_s = combined.back();
    combined.pop_back();

    if (errors != 0) {
      std::fprintf(stderr, "CHECK FAILED lib=shoal K=%s rank=%d n=%d bytes=%llu %s\n",
                   config_.streams_label.c_str(), rank_, n, static_cast<unsigned long long>(bytes),
                   first_error.c_str());
    }
    *check_failed = any_errors;
    if (rank_ == 0) {
      ResultLine line;
      line.streams = config_.streams_label;
      line.world_size = n;
      line.bytes = bytes;
      line.iters = counts.iters;
      line.warmup = counts.warmup;
      line.stats = ComputeStats(combined);
      line.batch = counts.batch;
      line.batch_s = batch_s;
      line.check = config_.check == CheckMode::kNone ? "skipped" : any_errors ? "FAILED" : "ok";
      line.extra = fmt::format("transport=tcp connect_s={:.3f}", connect_s_);
      if (config_.segment_bytes)
        line.extra += fmt::format(" segment_bytes={}", *config_.segment_bytes);
      if (!config_.label.empty()) line.extra += " " + config_.label;
      const std::string text = FormatResultLine(line);
      std::printf("%s\n", text.c_str());
      std::fflush(stdout);
      if (!config_.out_path.empty()) {
        std::ofstream out(config_.out_path, std::ios::app);
        out << text << "\n";
      }
      lines_->push_back(text);
    }
    return kExitOk;
  }

  const WorkerConfig& config_;
  std::vector<std::string>* lines_;
  std::unique_ptr<Communicator> comm_;
  Clock::time_point deadline_;
  double connect_s_ = 0;
  int rank_ = -1;
};

}  // namespace

int RunWorker(const WorkerConfig& config, std::vector<std::string>* lines) {
  Worker worker(config, lines);
  return worker.Run();
}

}  // namespace shoal::bench
