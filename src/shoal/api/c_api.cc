// The C99 API (include/shoal/shoal.h): thin wrappers over the C++ API. No exception crosses it:
// allocation failures become SHOAL_ERR_INTERNAL, everything else is a Status already.
#include <cstring>
#include <exception>
#include <memory>
#include <string>

#include "shoal/shoal.h"
#include "shoal/shoal.hpp"

struct shoal_comm {
  std::unique_ptr<shoal::Communicator> comm;
};

struct shoal_request {
  std::unique_ptr<shoal::Request> request;
  std::uint64_t epoch = 0;
};

namespace {

shoal_status Fill(const shoal::Status& s, std::uint64_t epoch, shoal_op_info* info) {
  if (info != nullptr) {
    info->status = s.code();
    info->lost_peer = s.peer();
    info->epoch = epoch;
    std::string text = s.ok() ? "ok" : s.ToString();
    std::size_t n = text.size() < sizeof(info->message) - 1 ? text.size() : sizeof(info->message) - 1;
    std::memcpy(info->message, text.data(), n);
    info->message[n] = '\0';
  }
  return s.code();
}

template <typename Fn>
shoal_status Guard(Fn fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return SHOAL_ERR_INTERNAL;
  } catch (...) {
    return SHOAL_ERR_INTERNAL;
  }
}

}  // namespace

extern "C" {

void shoal_options_init(shoal_options* o) {
  if (o == nullptr) return;
  o->coordinator_host = "127.0.0.1";
  o->coordinator_port = 48150;
  o->data_host = "127.0.0.1";
  o->data_bind_host = nullptr;
  o->data_port = 0;
  o->peer_id = 0;
  o->timeout_ms = 30000;
  o->verdict_grace_ms = 2000;
  o->setup_timeout_ms = 10000;
  o->log_level = "warn";
  o->reconnect_window_ms = 60000;
  o->reconnect_backoff_max_ms = 500;
  o->secret = nullptr;
  o->coordinator_standbys = nullptr;
  o->tls = 0;
}

shoal_status shoal_comm_create(const shoal_options* o, shoal_comm** out) {
  if (o == nullptr || out == nullptr) return SHOAL_ERR_INVALID_ARGUMENT;
  *out = nullptr;
  return Guard([&] {
    shoal::Options opt;
    if (o->coordinator_host != nullptr) opt.coordinator_host = o->coordinator_host;
    opt.coordinator_port = o->coordinator_port;
    if (o->data_host != nullptr) opt.data_host = o->data_host;
    if (o->data_bind_host != nullptr) opt.data_bind_host = o->data_bind_host;
    opt.data_port = o->data_port;
    opt.peer_id = o->peer_id;
    opt.timeout_ms = o->timeout_ms;
    opt.verdict_grace_ms = o->verdict_grace_ms;
    opt.setup_timeout_ms = o->setup_timeout_ms;
    opt.reconnect_window_ms = o->reconnect_window_ms;
    opt.reconnect_backoff_max_ms = o->reconnect_backoff_max_ms;
    if (o->secret != nullptr) opt.secret = o->secret;
    opt.tls = o->tls != 0;
    if (o->coordinator_standbys != nullptr) {
      std::string list = o->coordinator_standbys;
      for (std::size_t start = 0; start <= list.size();) {
        std::size_t comma = list.find(',', start);
        if (comma == std::string::npos) comma = list.size();
        if (comma > start) opt.coordinator_standbys.push_back(list.substr(start, comma - start));
        start = comma + 1;
      }
    }
    if (o->log_level != nullptr) opt.log_level = o->log_level;
    auto c = std::make_unique<shoal_comm>();
    shoal::Status s = shoal::Communicator::Create(opt, &c->comm);
    if (!s.ok()) return s.code();
    *out = c.release();
    return SHOAL_OK;
  });
}

void shoal_comm_destroy(shoal_comm* comm) { delete comm; }

shoal_status shoal_update_topology(shoal_comm* comm, int64_t timeout_ms) {
  if (comm == nullptr) return SHOAL_ERR_INVALID_ARGUMENT;
  return Guard([&] { return comm->comm->UpdateTopology(timeout_ms).code(); });
}

shoal_status shoal_all_reduce(shoal_comm* comm, const void* send, void* recv, uint64_t count,
                              shoal_dtype dtype, shoal_reduce_op op, uint64_t tag,
                              int64_t timeout_ms, shoal_op_info* info) {
  if (comm == nullptr) return Fill(shoal::Status(SHOAL_ERR_INVALID_ARGUMENT, "comm is null"), 0, info);
  return Guard([&] {
    std::uint64_t epoch = comm->comm->epoch();
    shoal::CollectiveOptions co;
    co.tag = tag;
    co.timeout_ms = timeout_ms;
    return Fill(comm->comm->AllReduce(send, recv, count, dtype, op, co), epoch, info);
  });
}

shoal_status shoal_all_reduce_async(shoal_comm* comm, const void* send, void* recv,
                                    uint64_t count, shoal_dtype dtype, shoal_reduce_op op,
                                    uint64_t tag, int64_t timeout_ms, shoal_request** out) {
  if (comm == nullptr || out == nullptr) return SHOAL_ERR_INVALID_ARGUMENT;
  *out = nullptr;
  return Guard([&] {
    auto r = std::make_unique<shoal_request>();
    r->epoch = comm->comm->epoch();
    shoal::CollectiveOptions co;
    co.tag = tag;
    co.timeout_ms = timeout_ms;
    shoal::Status s = comm->comm->AllReduceAsync(send, recv, count, dtype, op, co, &r->request);
    if (!s.ok()) return s.code();
    *out = r.release();
    return SHOAL_OK;
  });
}

shoal_status shoal_sync_shared_state(shoal_comm* comm, shoal_shared_state* state,
                                     int64_t timeout_ms, shoal_op_info* op_info,
                                     shoal_sync_info* sync_info) {
  if (comm == nullptr || state == nullptr || (state->tensor_count > 0 && state->tensors == nullptr)) {
    return Fill(shoal::Status(SHOAL_ERR_INVALID_ARGUMENT, "comm, state or tensors is null"), 0,
                op_info);
  }
  return Guard([&] {
    std::uint64_t epoch = comm->comm->epoch();
    shoal::SharedState cpp;
    cpp.revision = state->revision;
    cpp.tensors.reserve(state->tensor_count);
    for (std::uint32_t i = 0; i < state->tensor_count; i++) {
      const shoal_tensor& t = state->tensors[i];
      if (t.name == nullptr) {
        return Fill(shoal::Status(SHOAL_ERR_INVALID_ARGUMENT,
                                  "tensor " + std::to_string(i) + " has no name"),
                    epoch, op_info);
      }
      // Bounded read: a name longer than the limit is refused without reading past it.
      std::size_t len = strnlen(t.name, 256);
      cpp.tensors.push_back(shoal::SharedTensor{std::string(t.name, len), t.dtype, t.count, t.data,
                                                t.allow_divergence != 0});
    }
    shoal::SyncInfo info;
    shoal::Status s = comm->comm->SyncSharedState(&cpp, &info, timeout_ms);
    if (s.ok()) {
      state->revision = cpp.revision;
      if (sync_info != nullptr) {
        std::memset(sync_info, 0, sizeof *sync_info);
        sync_info->revision = info.revision;
        sync_info->rx_bytes = info.rx_bytes;
        sync_info->tx_bytes = info.tx_bytes;
        sync_info->tensors_received = info.tensors_received;
        for (const auto& [peer, bytes] : info.rx_from) {
          if (sync_info->sender_count == SHOAL_SYNC_SENDERS_MAX) break;
          sync_info->sender_ids[sync_info->sender_count] = peer;
          sync_info->sender_bytes[sync_info->sender_count] = bytes;
          sync_info->sender_count++;
        }
        sync_info->hash_seconds = info.hash_seconds;
        sync_info->transfer_seconds = info.transfer_seconds;
      }
    }
    return Fill(s, epoch, op_info);
  });
}

shoal_status shoal_request_wait(shoal_request* request, int64_t timeout_ms, shoal_op_info* info) {
  if (request == nullptr) return Fill(shoal::Status(SHOAL_ERR_INVALID_ARGUMENT, "request is null"), 0, info);
  return Guard([&] { return Fill(request->request->Wait(timeout_ms), request->epoch, info); });
}

void shoal_request_free(shoal_request* request) { delete request; }

shoal_status shoal_leave(shoal_comm* comm) {
  if (comm == nullptr) return SHOAL_ERR_INVALID_ARGUMENT;
  return Guard([&] { return comm->comm->Leave().code(); });
}

uint64_t shoal_peer_id(const shoal_comm* comm) { return comm ? comm->comm->peer_id() : 0; }
uint64_t shoal_epoch(const shoal_comm* comm) { return comm ? comm->comm->epoch() : 0; }
uint32_t shoal_world_size(const shoal_comm* comm) { return comm ? comm->comm->world_size() : 0; }
uint32_t shoal_rank(const shoal_comm* comm) { return comm ? comm->comm->rank() : 0; }
int shoal_is_member(const shoal_comm* comm) { return comm && comm->comm->is_member() ? 1 : 0; }

uint32_t shoal_members(const shoal_comm* comm, uint64_t* out, uint32_t capacity) {
  if (comm == nullptr) return 0;
  std::vector<shoal::PeerId> m = comm->comm->members();
  for (uint32_t i = 0; i < capacity && i < m.size() && out != nullptr; i++) out[i] = m[i];
  return static_cast<uint32_t>(m.size());
}

}  // extern "C"
