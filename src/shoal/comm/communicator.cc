// The public C++ API (include/shoal/shoal.hpp) over PeerRuntime.
#include <chrono>
#include <memory>
#include <set>
#include <string_view>
#include <utility>

#include "shoal/collective/reduce.h"
#include "shoal/comm/peer_runtime.h"
#include "shoal/common/hash.h"
#include "shoal/common/limits.h"
#include "shoal/shoal.hpp"

namespace shoal {
namespace {

class RequestImpl final : public Request {
 public:
  RequestImpl(std::shared_ptr<comm::PeerRuntime> rt, std::shared_ptr<comm::OpRequest> op)
      : rt_(std::move(rt)), op_(std::move(op)) {}
  ~RequestImpl() override {
    if (!decided_) Wait(-1).IgnoreError();
  }
  Status Wait(std::int64_t timeout_ms) override {
    Deadline d = timeout_ms < 0 ? Deadline::Never() : Deadline::After(timeout_ms);
    Status s = rt_->Wait(op_, d);
    if (timeout_ms < 0 || s.code() != SHOAL_ERR_TIMEOUT || op_->completion.done()) decided_ = true;
    return s;
  }
  bool Done() const override { return op_->completion.done(); }

 private:
  std::shared_ptr<comm::PeerRuntime> rt_;
  std::shared_ptr<comm::OpRequest> op_;
  bool decided_ = false;
};

class CommunicatorImpl final : public Communicator {
 public:
  CommunicatorImpl(std::shared_ptr<comm::PeerRuntime> rt, const Options& options)
      : rt_(std::move(rt)), default_timeout_ms_(options.timeout_ms) {}
  ~CommunicatorImpl() override { rt_->Close(); }

  Status UpdateTopology(std::int64_t timeout_ms) override {
    return rt_->UpdateTopology(DeadlineFor(timeout_ms));
  }

  Status AllReduce(const void* send, void* recv, std::uint64_t count, shoal_dtype dtype,
                   shoal_reduce_op op, const CollectiveOptions& options) override {
    std::unique_ptr<Request> req;
    Status s = AllReduceAsync(send, recv, count, dtype, op, options, &req);
    if (!s.ok()) return s;
    return req->Wait(-1);
  }

  Status AllReduceAsync(const void* send, void* recv, std::uint64_t count, shoal_dtype dtype,
                        shoal_reduce_op op, const CollectiveOptions& options,
                        std::unique_ptr<Request>* out) override {
    if (out == nullptr) return Status(SHOAL_ERR_INVALID_ARGUMENT, "out is null");
    if (options.tag == net::kSharedStateTag) {
      return Status(SHOAL_ERR_INVALID_ARGUMENT, "tag 2^64-1 is reserved for shared-state syncs");
    }
    if (!collective::IsValidDtype(dtype)) {
      return Status(SHOAL_ERR_INVALID_ARGUMENT, "unknown dtype " + std::to_string(dtype));
    }
    if (!collective::IsValidReduceOp(op)) {
      return Status(SHOAL_ERR_INVALID_ARGUMENT, "unknown reduce op " + std::to_string(op));
    }
    std::size_t elem = collective::DtypeBytes(dtype);
    if (count > limits::kCollectiveBytesMax / elem) {
      return Status(SHOAL_ERR_INVALID_ARGUMENT, "count too large");
    }
    if (count > 0 && (send == nullptr || recv == nullptr)) {
      return Status(SHOAL_ERR_INVALID_ARGUMENT, "null buffer");
    }
    if (count > 0 && send != recv) {
      auto s0 = static_cast<const std::uint8_t*>(send);
      auto r0 = static_cast<const std::uint8_t*>(recv);
      std::uint64_t bytes = count * elem;
      if (s0 < r0 + bytes && r0 < s0 + bytes) {
        return Status(SHOAL_ERR_INVALID_ARGUMENT, "send and recv overlap without being equal");
      }
    }
    collective::RingAllReduceParams p;
    p.send = send;
    p.recv = recv;
    p.count = count;
    p.dtype = dtype;
    p.op = op;
    std::shared_ptr<comm::OpRequest> req;
    Status s = rt_->StartAllReduce(p, options.tag, DeadlineFor(options.timeout_ms), &req);
    if (!s.ok()) return s;
    *out = std::make_unique<RequestImpl>(rt_, std::move(req));
    return Status::Ok();
  }

  Status SyncSharedState(SharedState* state, SyncInfo* info, std::int64_t timeout_ms) override {
    if (state == nullptr) return Status(SHOAL_ERR_INVALID_ARGUMENT, "state is null");
    if (state->tensors.size() > limits::kSharedTensorsMax) {
      return Status(SHOAL_ERR_INVALID_ARGUMENT,
                    "a shared state holds at most " + std::to_string(limits::kSharedTensorsMax) +
                        " tensors");
    }
    Deadline deadline = DeadlineFor(timeout_ms);
    auto job = std::make_shared<comm::SyncJob>();
    job->revision = state->revision;
    std::set<std::string_view> names;
    for (std::size_t i = 0; i < state->tensors.size(); ++i) {
      const SharedTensor& t = state->tensors[i];
      std::string which = "tensor " + std::to_string(i) + " ('" + t.name.substr(0, 64) + "')";
      if (t.name.empty() || t.name.size() > limits::kTensorNameBytesMax) {
        return Status(SHOAL_ERR_INVALID_ARGUMENT, which + ": a name needs 1 to " +
                                                      std::to_string(limits::kTensorNameBytesMax) +
                                                      " bytes");
      }
      if (!names.insert(t.name).second) {
        return Status(SHOAL_ERR_INVALID_ARGUMENT, which + ": the name is used twice");
      }
      if (!collective::IsValidDtype(t.dtype)) {
        return Status(SHOAL_ERR_INVALID_ARGUMENT, which + ": unknown dtype");
      }
      std::size_t elem = collective::DtypeBytes(t.dtype);
      if (t.count > limits::kCollectiveBytesMax / elem) {
        return Status(SHOAL_ERR_INVALID_ARGUMENT, which + ": count too large");
      }
      if (t.count > 0 && t.data == nullptr) {
        return Status(SHOAL_ERR_INVALID_ARGUMENT, which + ": null data");
      }
    }
    // Hash on the caller's thread: the io thread keeps serving heartbeats meanwhile.
    auto t0 = std::chrono::steady_clock::now();
    for (const SharedTensor& t : state->tensors) {
      std::uint64_t bytes = t.count * collective::DtypeBytes(t.dtype);
      job->tensors.push_back(net::TensorReport{t.name, t.dtype, t.allow_divergence, t.count,
                                               ContentHash(t.data, bytes)});
      job->regions.push_back(collective::TensorRegion{static_cast<std::uint8_t*>(t.data), bytes});
    }
    double hash_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::shared_ptr<comm::OpRequest> op;
    Status s = rt_->StartSync(job, deadline, &op);
    if (!s.ok()) return s;
    s = rt_->Wait(op, Deadline::Never());
    if (!s.ok()) return s;
    state->revision = job->elected_revision;
    if (info != nullptr) {
      *info = SyncInfo{};
      info->revision = job->elected_revision;
      info->tensors_received = job->tensors_received;
      info->tx_bytes = job->sent_bytes;
      for (const auto& [peer, bytes] : job->received) {
        info->rx_bytes += bytes;
        info->rx_from.emplace_back(peer, bytes);
      }
      info->hash_seconds = hash_seconds;
      info->transfer_seconds = job->transfer_seconds;
    }
    return Status::Ok();
  }

  Status Leave() override { return rt_->Leave(DeadlineFor(-1)); }

  PeerId peer_id() const override { return rt_->peer_id(); }
  std::uint64_t epoch() const override { return rt_->snapshot().epoch; }
  std::uint32_t world_size() const override {
    return static_cast<std::uint32_t>(rt_->snapshot().members.size());
  }
  std::uint32_t rank() const override { return rt_->snapshot().rank; }
  std::vector<PeerId> members() const override { return rt_->snapshot().members; }
  bool is_member() const override { return rt_->snapshot().member; }

 private:
  Deadline DeadlineFor(std::int64_t timeout_ms) const {
    return Deadline::After(timeout_ms < 0 ? default_timeout_ms_ : timeout_ms);
  }

  std::shared_ptr<comm::PeerRuntime> rt_;
  std::int64_t default_timeout_ms_;
};

}  // namespace

Status Communicator::Create(const Options& options, std::unique_ptr<Communicator>* out) {
  if (out == nullptr) return Status(SHOAL_ERR_INVALID_ARGUMENT, "out is null");
  std::shared_ptr<comm::PeerRuntime> rt;
  Status s = comm::PeerRuntime::Create(options, &rt);
  if (!s.ok()) return s;
  *out = std::make_unique<CommunicatorImpl>(std::move(rt), options);
  return Status::Ok();
}

}  // namespace shoal
