#include "shoal/comm/peer_runtime.h"

#include <spdlog/spdlog.h>

#include <random>
#include <utility>

#include "shoal/collective/reduce.h"
#include "shoal/common/hex.h"
#include "shoal/common/limits.h"
#include "shoal/net/auth.h"

namespace shoal::comm {
namespace {

constexpr std::size_t kControlWriteQueueBytesMax = 64u << 20;
constexpr std::size_t kHeldStreamsMax = 256;          // early data streams for future epochs
constexpr TimeMs kDataHelloTimeoutMs = 5000;          // an accepted stream must introduce itself

// "host:port" or "[v6 address]:port".
bool ParseHostPort(const std::string& s, std::pair<std::string, std::uint16_t>* out) {
  std::size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) return false;
  std::string host = s.substr(0, colon);
  if (host.front() == '[') {
    if (host.back() != ']' || host.size() < 3) return false;
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    return false;  // a bare v6 address: the port would be ambiguous
  }
  std::uint32_t port = 0;
  for (char c : s.substr(colon + 1)) {
    if (c < '0' || c > '9' || port > 65535) return false;
    port = port * 10 + static_cast<std::uint32_t>(c - '0');
  }
  if (port == 0 || port > 65535 || host.size() > limits::kHostBytesMax) return false;
  *out = {host, static_cast<std::uint16_t>(port)};
  return true;
}

PeerId RandomPeerId() {
  std::random_device rd;
  std::uint64_t id = 0;
  while (id == 0) id = (std::uint64_t{rd()} << 32) ^ rd();
  return id;
}

// Runs `fn` on the io thread and waits for its Status, at most until `deadline`.
template <typename Fn>
Status RunOnIo(asio::io_context& io, Deadline deadline, Fn fn) {
  auto done = std::make_shared<Completion>();
  asio::post(io, [done, fn = std::move(fn)]() mutable { done->Set(fn()); });
  Status s;
  if (!done->WaitUntil(deadline, &s)) return Status(SHOAL_ERR_TIMEOUT, "io thread did not answer");
  return s;
}

}  // namespace

PeerRuntime::PeerRuntime(const Options& options)
    : options_(options),
      peer_id_(options.peer_id != 0 ? options.peer_id : RandomPeerId()),
      acceptor_(io_),
      heartbeat_timer_(io_),
      reconnect_timer_(io_) {}

PeerRuntime::~PeerRuntime() { Close(); }

Status PeerRuntime::Create(const Options& options, std::shared_ptr<PeerRuntime>* out) {
  if (options.timeout_ms <= 0 || options.verdict_grace_ms < 0 || options.setup_timeout_ms <= 0) {
    return Status(SHOAL_ERR_INVALID_ARGUMENT, "timeouts must be positive");
  }
  std::vector<std::pair<std::string, std::uint16_t>> coordinators = {
      {options.coordinator_host, options.coordinator_port}};
  for (const std::string& a : options.coordinator_standbys) {
    std::pair<std::string, std::uint16_t> hp;
    if (!ParseHostPort(a, &hp)) {
      return Status(SHOAL_ERR_INVALID_ARGUMENT,
                    "coordinator_standbys: '" + a + "' is not host:port (or [v6]:port)");
    }
    coordinators.push_back(hp);
  }
  if (options.reconnect_window_ms < 0 || options.reconnect_backoff_max_ms <= 0) {
    return Status(SHOAL_ERR_INVALID_ARGUMENT,
                  "reconnect_window_ms must be >= 0 and reconnect_backoff_max_ms > 0");
  }
  if (options.data_host.size() > limits::kHostBytesMax) {
    return Status(SHOAL_ERR_INVALID_ARGUMENT, "data_host is too long");
  }
  auto level = spdlog::level::from_str(options.log_level);
  if (level == spdlog::level::off && options.log_level != "off") {
    return Status(SHOAL_ERR_INVALID_ARGUMENT, "unknown log level '" + options.log_level + "'");
  }
  spdlog::set_level(level);
  std::shared_ptr<PeerRuntime> rt(new PeerRuntime(options));
  rt->coordinators_ = std::move(coordinators);
  if (options.tls) {
    if (Status s = net::TlsContext::Create(&rt->tls_); !s.ok()) return s;
  }
  Status s = rt->Start(Deadline::After(options.timeout_ms));
  if (!s.ok()) {
    rt->Close();
    return s;
  }
  *out = std::move(rt);
  return Status::Ok();
}

Status PeerRuntime::Start(Deadline deadline) {
  // The data listener first: the coordinator may propose an epoch right after Hello.
  asio::error_code ec;
  std::string bind_host = options_.data_bind_host.empty() ? options_.data_host
                                                          : options_.data_bind_host;
  auto bind_addr = asio::ip::make_address(bind_host, ec);
  if (ec) return Status(SHOAL_ERR_INVALID_ARGUMENT, "data bind address '" + bind_host + "': " + ec.message());
  asio::ip::tcp::endpoint ep(bind_addr, options_.data_port);
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Status(SHOAL_ERR_IO, "data listener on " + bind_host + ": " + ec.message());
  data_port_ = acceptor_.local_endpoint().port();

  // The control connection, blocking with the deadline (nothing else runs yet).
  asio::ip::tcp::socket socket(io_);
  asio::ip::tcp::resolver resolver(io_);
  auto endpoints = resolver.resolve(options_.coordinator_host,
                                    std::to_string(options_.coordinator_port), ec);
  if (ec) {
    return Status(SHOAL_ERR_COORDINATOR_LOST, "cannot resolve coordinator " +
                                                  options_.coordinator_host + ": " + ec.message());
  }
  bool connected = false;
  asio::error_code connect_ec;
  asio::async_connect(socket, endpoints, [&](const asio::error_code& e, const auto&) {
    connected = true;
    connect_ec = e;
  });
  io_.restart();
  io_.run_until(deadline.time_point());
  if (!connected) {
    return Status(SHOAL_ERR_TIMEOUT, "connecting to the coordinator at " +
                                         options_.coordinator_host + ":" +
                                         std::to_string(options_.coordinator_port) + " timed out");
  }
  if (connect_ec) {
    return Status(SHOAL_ERR_COORDINATOR_LOST,
                  "cannot connect to the coordinator at " + options_.coordinator_host + ":" +
                      std::to_string(options_.coordinator_port) + ": " + connect_ec.message());
  }
  io_.restart();

  control_ = std::make_shared<net::FramedConnection>(ControlStream(std::move(socket)),
                                                     limits::kSyncPayloadBytesMax,
                                                     kControlWriteQueueBytesMax);
  welcome_ = std::make_shared<Completion>();
  work_.emplace(asio::make_work_guard(io_));
  // Handlers capture `this` only: Close() joins the io thread before the runtime is destroyed, and
  // handlers still queued then are destroyed with io_ without running. (Capturing a shared_ptr
  // to the runtime in a handler that never runs would keep it alive forever.)
  asio::post(io_, [this] {
    OpenControl();
    AcceptNext();
    HeartbeatTick();
  });
  thread_ = std::thread([this] { io_.run(); });

  Status s;
  if (!welcome_->WaitUntil(deadline, &s)) {
    return Status(SHOAL_ERR_TIMEOUT, "the coordinator did not welcome this peer in time");
  }
  return s;
}

void PeerRuntime::Close() {
  std::call_once(close_once_, [this] {
    if (thread_.joinable()) {
      // Leave politely if still connected, then stop the io thread.
      Leave(Deadline::After(1000)).IgnoreError();
      asio::post(io_, [this] {
        asio::error_code ec;
        acceptor_.close(ec);
        heartbeat_timer_.cancel();
        reconnect_timer_.cancel();
        if (control_) control_->Close();
        TearDownEpoch(Status(SHOAL_ERR_CLOSED, "the communicator is closed"));
        setup_.reset();
        held_.clear();
        work_.reset();
        io_.stop();
      });
      thread_.join();
    }
  });
}

PeerRuntime::Snapshot PeerRuntime::snapshot() const {
  std::lock_guard<std::mutex> lock(snapshot_mu_);
  return snapshot_;
}

void PeerRuntime::PublishSnapshot() {
  Snapshot s;
  if (phase_ == Phase::kMember && epoch_.committed) {
    s.epoch = epoch_.number;
    s.rank = epoch_.rank;
    s.member = true;
    for (const auto& m : epoch_.members) s.members.push_back(m.peer_id);
  }
  std::lock_guard<std::mutex> lock(snapshot_mu_);
  snapshot_ = std::move(s);
}

Status PeerRuntime::RoomForOp(std::uint64_t tag) const {
  if (epoch_.ops.size() + epoch_.failed_locally.size() >= limits::kOpsInFlightMax) {
    return Status(SHOAL_ERR_INVALID_ARGUMENT,
                  fmt::format("more than {} collectives in flight", limits::kOpsInFlightMax));
  }
  if (epoch_.next_seq.count(tag) == 0 && epoch_.next_seq.size() >= limits::kTagsPerEpochMax) {
    return Status(SHOAL_ERR_INVALID_ARGUMENT,
                  fmt::format("more than {} distinct tags in one epoch; call update_topology",
                              limits::kTagsPerEpochMax));
  }
  return Status::Ok();
}

void PeerRuntime::Send(const net::Message& m) {
  // Until the coordinator has proved the group secret, only AuthHello goes out (heartbeats and
  // reports wait: the coordinator would refuse them before the proof).
  if (awaiting_challenge_ && !std::holds_alternative<net::AuthHello>(m)) return;
  if (control_ && !control_->closed()) control_->Send(m);
}

// ---------------------------------------------------------------- user calls

Status PeerRuntime::UpdateTopology(Deadline deadline) {
  auto waiter = std::make_shared<Completion>();
  Status posted = RunOnIo(io_, deadline, [this, waiter]() -> Status {
    switch (phase_) {
      case Phase::kClosed:
        return closed_reason_;
      case Phase::kConnecting:
        return Status(SHOAL_ERR_INTERNAL, "update_topology before the peer connected");
      case Phase::kPending:
      case Phase::kSettingUp:
        update_waiters_.push_back(waiter);
        return Status::Ok();
      case Phase::kMember:
        if (epoch_.number != epoch_seen_by_user_ && !epoch_.broken) {
          epoch_seen_by_user_ = epoch_.number;  // admitted before this call: a step boundary
          waiter->Set(Status::Ok());
          return Status::Ok();
        }
        update_waiters_.push_back(waiter);
        if (!epoch_.barrier_sent) {
          epoch_.barrier_sent = true;
          Send(net::UpdateTopology{epoch_.number});
        }
        return Status::Ok();
    }
    return Status(SHOAL_ERR_INTERNAL, "unknown phase");
  });
  if (!posted.ok()) return posted;
  Status s;
  if (!waiter->WaitUntil(deadline, &s)) {
    return Status(SHOAL_ERR_TIMEOUT, "update_topology: the other members did not all arrive in time");
  }
  return s;
}

Status PeerRuntime::StartAllReduce(const collective::RingAllReduceParams& params,
                                   std::uint64_t tag, Deadline deadline,
                                   std::shared_ptr<OpRequest>* out) {
  auto op = std::make_shared<OpRequest>();
  op->deadline = deadline;
  Status s = RunOnIo(io_, deadline, [this, op, params, tag]() -> Status {
    if (phase_ == Phase::kClosed) return closed_reason_;
    if (phase_ != Phase::kMember || !epoch_.committed) {
      return Status(SHOAL_ERR_NOT_MEMBER,
                    "this peer is not a member of a committed epoch; call update_topology");
    }
    if (epoch_.broken) return epoch_.abort_reason;
    if (Status room = RoomForOp(tag); !room.ok()) return room;
    op->epoch = epoch_.number;
    op->key = collective::OpKey{tag, epoch_.next_seq[tag]++};
    collective::RingAllReduceParams p = params;
    p.n = static_cast<std::uint32_t>(epoch_.members.size());
    p.rank = epoch_.rank;
    p.streams = epoch_.streams;
    p.segment_bytes_max = epoch_.segment_bytes;
    auto ring = std::make_unique<collective::RingAllReduce>(p);
    if (p.n == 1) {  // the constructor did the local copy; nobody to agree with
      op->completion.Set(Status::Ok());
      return Status::Ok();
    }
    epoch_.ops[op->key] = op;
    epoch_.engine->AddOp(op->key, std::move(ring));
    return Status::Ok();
  });
  if (!s.ok()) return s;
  *out = std::move(op);
  return Status::Ok();
}

Status PeerRuntime::StartSync(std::shared_ptr<SyncJob> job, Deadline deadline,
                              std::shared_ptr<OpRequest>* out) {
  auto op = std::make_shared<OpRequest>();
  op->deadline = deadline;
  op->sync = std::move(job);
  Status s = RunOnIo(io_, deadline, [this, op]() -> Status {
    if (phase_ == Phase::kClosed) return closed_reason_;
    if (phase_ != Phase::kMember || !epoch_.committed) {
      return Status(SHOAL_ERR_NOT_MEMBER,
                    "this peer is not a member of a committed epoch; call update_topology");
    }
    if (epoch_.broken) return epoch_.abort_reason;
    if (epoch_.sync && !epoch_.sync->completion.done()) {
      return Status(SHOAL_ERR_INVALID_ARGUMENT,
                    "another shared-state sync is running on this peer; syncs run one at a time");
    }
    if (Status room = RoomForOp(net::kSharedStateTag); !room.ok()) return room;
    op->epoch = epoch_.number;
    op->key = collective::OpKey{net::kSharedStateTag, epoch_.next_seq[net::kSharedStateTag]++};
    epoch_.ops[op->key] = op;
    epoch_.sync = op;
    Send(net::SyncReport{epoch_.number, op->key.seq, op->sync->revision, op->sync->tensors});
    return Status::Ok();
  });
  if (!s.ok()) return s;
  *out = std::move(op);
  return Status::Ok();
}

Status PeerRuntime::Wait(const std::shared_ptr<OpRequest>& op, Deadline wait_deadline) {
  Status s;
  bool early = wait_deadline.at_ms() < op->deadline.at_ms();
  if (op->completion.WaitUntil(early ? wait_deadline : op->deadline, &s)) return s;
  if (early) return Status(SHOAL_ERR_TIMEOUT, "not done yet");
  // The op's deadline passed: report it and wait for the agreed verdict.
  asio::post(io_, [this, op] { OnOpDeadline(op); });
  Deadline grace = op->deadline.Extended(options_.verdict_grace_ms);
  if (op->completion.WaitUntil(grace, &s)) return s;
  asio::post(io_, [this, op] {
    ForceFail(op, Status(SHOAL_ERR_COORDINATOR_LOST,
                         "no verdict from the coordinator within the grace period"));
  });
  // ForceFail runs promptly on the io thread; this bounded wait only guards a dead io thread.
  if (op->completion.WaitUntil(Deadline::After(options_.verdict_grace_ms + 1000), &s)) return s;
  return Status(SHOAL_ERR_INTERNAL, "io thread unresponsive");
}

Status PeerRuntime::Leave(Deadline deadline) {
  auto gone = std::make_shared<Completion>();
  Status s = RunOnIo(io_, deadline, [this, gone]() -> Status {
    if (phase_ == Phase::kClosed) {
      gone->Set(Status::Ok());
      return Status::Ok();
    }
    Send(net::Leave{});
    closed_reason_ = Status(SHOAL_ERR_CLOSED, "this peer left the group");
    phase_ = Phase::kClosed;
    TearDownEpoch(closed_reason_);
    setup_.reset();
    CompleteUpdates(closed_reason_);
    PublishSnapshot();
    // The coordinator closes the connection after Leave; give the frame a moment to go out.
    auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(200));
    timer->async_wait([this, timer, gone](const asio::error_code&) {
      if (control_) control_->Close();
      gone->Set(Status::Ok());
    });
    return Status::Ok();
  });
  if (!s.ok()) return s;
  Status g;
  gone->WaitUntil(deadline, &g);
  return Status::Ok();
}

// ---------------------------------------------------------------- control messages

void PeerRuntime::OnControlMessage(net::Message&& m) {
  last_received_ms_ = MonotonicNowMs();
  // Removed{COORDINATOR_LOST} and then the close, nothing between: given up (see OnControlLost).
  given_up_ = std::holds_alternative<net::Removed>(m) &&
              std::get<net::Removed>(m).code == SHOAL_ERR_COORDINATOR_LOST;
  // One dispatch: the Handle overloads take what a coordinator may send; the template overload in
  // the header is the one reject path for everything else.
  std::visit([this](const auto& msg) { Handle(msg); }, m);
}

void PeerRuntime::Unexpected(const net::Message& m) {
  OnControlLost(Status(SHOAL_ERR_PROTOCOL, std::string("the coordinator sent ") +
                                               net::MsgTypeName(net::TypeOf(m)) +
                                               ", which it never should"),
                /*fatal=*/true);
}

void PeerRuntime::OpenControl() {
  last_received_ms_ = MonotonicNowMs();
  control_->Start([this](net::Message&& m) { OnControlMessage(std::move(m)); },
                  [this](const Status& why) { OnControlLost(why); });
  awaiting_welcome_ = true;
  if (options_.secret.empty()) return SendHello();
  // Group secret: AuthHello first; Hello follows once the coordinator proved the secret.
  if (Status s = net::RandomNonce(&client_nonce_); !s.ok()) return OnControlLost(s, /*fatal=*/true);
  awaiting_challenge_ = true;
  Send(net::AuthHello{client_nonce_});
}

net::Stream PeerRuntime::ControlStream(asio::ip::tcp::socket socket) const {
  net::Stream stream(std::move(socket));
  if (tls_) stream.UseTls(tls_);  // FramedConnection runs the handshake
  return stream;
}

void PeerRuntime::SendHello() {
  net::Hello hello{peer_id_, options_.data_host, data_port_, std::nullopt};
  if (reconnecting_) hello.rejoin = MakeRejoin();
  Send(hello);
}

void PeerRuntime::Handle(const net::AuthChallenge& m) {
  if (!awaiting_challenge_) return Unexpected(m);
  awaiting_challenge_ = false;
  const net::ChannelBinding& binding = control_->channel_binding();
  if (!net::MacEqual(m.proof, net::ServerProof(options_.secret, client_nonce_, m.nonce, binding))) {
    return Refused(Status(SHOAL_ERR_AUTH,
                          "the coordinator does not hold the group secret (wrong secret on one "
                          "side, or not the coordinator of this group)"));
  }
  Send(net::AuthProof{net::ClientProof(options_.secret, client_nonce_, m.nonce, binding)});
  SendHello();
}

void PeerRuntime::OnControlLost(const Status& why, bool fatal) {
  if (phase_ == Phase::kClosed) return;
  if (control_) control_->Close();
  awaiting_welcome_ = false;
  awaiting_challenge_ = false;
  TimeMs now = MonotonicNowMs();
  // A peer that was never welcomed has nothing to keep: Create reports the failure.
  if (!fatal && options_.reconnect_window_ms > 0 && phase_ != Phase::kConnecting) {
    if (!reconnecting_) {
      reconnecting_ = true;
      lost_ms_ = now;
      lost_index_ = coordinator_index_;
      // A coordinator that gives its peers up has no majority of the group (choice 16 of
      // coord/coordinator.cc): the group, if any, is at another address, so try the next one
      // first. Coming straight back here would only be given up again.
      if (given_up_ && coordinators_.size() > 1) {
        lost_ms_ = now - FailoverMs();
      }
      reconnect_deadline_ms_ = now + options_.reconnect_window_ms;
      reconnect_attempts_ = 0;
      spdlog::warn("peer {}: coordinator connection lost: {}; reconnecting for up to {} ms",
                   Hex64(peer_id_), why.ToString(), options_.reconnect_window_ms);
    } else {
      spdlog::debug("peer {}: reconnect attempt failed: {}", Hex64(peer_id_), why.ToString());
    }
    if (now < reconnect_deadline_ms_) {
      ScheduleReconnect();
      return;
    }
  }
  // Before the first Welcome, a protocol error (e.g. TLS on one side only) keeps its code: it is
  // not a coordinator that went away.
  bool keep_code =
      !reconnecting_ && phase_ == Phase::kConnecting && why.code() == SHOAL_ERR_PROTOCOL;
  Status reason(keep_code ? why.code() : SHOAL_ERR_COORDINATOR_LOST,
                reconnecting_ ? fmt::format("no coordinator for {} ms (last error: {})",
                                            now - lost_ms_, why.message())
                              : why.message());
  reconnecting_ = false;
  reconnect_timer_.cancel();
  spdlog::warn("peer {}: coordinator lost: {}", Hex64(peer_id_), reason.message());
  closed_reason_ = reason;
  phase_ = Phase::kClosed;
  TearDownEpoch(reason);
  setup_.reset();
  CompleteUpdates(reason);
  if (welcome_) welcome_->Set(reason);
  PublishSnapshot();
}

void PeerRuntime::Handle(const net::Welcome& m) {
  if (!awaiting_welcome_ || m.peer_id != peer_id_) {
    Unexpected(m);
    return;
  }
  awaiting_welcome_ = false;
  if (phase_ == Phase::kConnecting) phase_ = Phase::kPending;
  if (m.heartbeat_interval_ms > 0) heartbeat_interval_ms_ = m.heartbeat_interval_ms;
  if (m.heartbeat_timeout_ms > 0) heartbeat_timeout_ms_ = m.heartbeat_timeout_ms;
  if (reconnecting_) {
    reconnecting_ = false;
    spdlog::warn("peer {}: reconnected to the coordinator after {} ms", Hex64(peer_id_),
                 MonotonicNowMs() - lost_ms_);
  } else {
    spdlog::info("peer {}: welcomed by the coordinator", Hex64(peer_id_));
  }
  welcome_->Set(Status::Ok());
}

void PeerRuntime::Handle(const net::Reject& m) {
  Refused(Status(m.code == SHOAL_OK ? SHOAL_ERR_REJECTED : m.code,
                 "the coordinator refused this peer: " + m.reason));
}

void PeerRuntime::Refused(const Status& s) {
  if (reconnecting_) {  // e.g. the old connection is still open there: try again
    OnControlLost(s);
    return;
  }
  welcome_->Set(s);
  OnControlLost(s, /*fatal=*/true);
  closed_reason_ = s;
}

void PeerRuntime::ScheduleReconnect() {
  // Exponential backoff from 25 ms, capped, with jitter so that a group does not reconnect in
  // lockstep.
  static thread_local std::minstd_rand jitter(std::random_device{}());
  std::int64_t base = std::min<std::int64_t>(options_.reconnect_backoff_max_ms,
                                             std::int64_t{25} << std::min(reconnect_attempts_, 16u));
  reconnect_attempts_++;
  std::int64_t delay = base / 2 + static_cast<std::int64_t>(jitter() % (base / 2 + 1));
  reconnect_timer_.expires_after(std::chrono::milliseconds(delay));
  reconnect_timer_.async_wait([this](const asio::error_code& ec) {
    if (!ec) TryReconnect();
  });
}

TimeMs PeerRuntime::FailoverMs() const {
  return std::max<TimeMs>(1, heartbeat_timeout_ms_ + heartbeat_interval_ms_);
}

void PeerRuntime::TryReconnect() {
  if (phase_ == Phase::kClosed || !reconnecting_) return;
  // Stay with the coordinator that was lost (a supervisor may be restarting it) until the one it
  // left must have dropped this peer (heartbeat timeout + one interval), then move along the list.
  std::size_t moves = static_cast<std::size_t>((MonotonicNowMs() - lost_ms_) / FailoverMs());
  std::size_t index = (lost_index_ + moves) % coordinators_.size();
  if (index != coordinator_index_) {
    spdlog::warn("peer {}: trying coordinator {}:{}", Hex64(peer_id_), coordinators_[index].first,
                 coordinators_[index].second);
  }
  coordinator_index_ = index;
  const auto& [host, port] = coordinators_[index];
  auto socket = std::make_shared<asio::ip::tcp::socket>(io_);
  auto resolver = std::make_shared<asio::ip::tcp::resolver>(io_);
  // One attempt may take at most this long (a coordinator host that drops packets).
  auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(std::max<
      std::int64_t>(1, std::min<std::int64_t>(2000, reconnect_deadline_ms_ - MonotonicNowMs()))));
  timer->async_wait([socket](const asio::error_code& ec) {
    asio::error_code ignored;
    if (!ec) socket->close(ignored);
  });
  resolver->async_resolve(
      host, std::to_string(port),
      [this, socket, resolver, timer](const asio::error_code& ec,
                                      asio::ip::tcp::resolver::results_type results) {
        if (phase_ == Phase::kClosed || !reconnecting_) return;
        if (ec) {
          timer->cancel();
          return OnControlLost(Status(SHOAL_ERR_COORDINATOR_LOST, "resolve: " + ec.message()));
        }
        asio::async_connect(*socket, results, [this, socket, timer](const asio::error_code& ec,
                                                                    const auto&) {
          timer->cancel();
          if (phase_ == Phase::kClosed || !reconnecting_) return;
          if (ec) {
            return OnControlLost(Status(SHOAL_ERR_COORDINATOR_LOST, "connect: " + ec.message()));
          }
          control_ = std::make_shared<net::FramedConnection>(
              ControlStream(std::move(*socket)), limits::kSyncPayloadBytesMax,
              kControlWriteQueueBytesMax);
          OpenControl();
        });
      });
}

// What this peer knew when it lost the coordinator (docs/protocol.md, "Coordinator restart").
net::Rejoin PeerRuntime::MakeRejoin() const {
  net::Rejoin j;
  if (phase_ == Phase::kMember || phase_ == Phase::kSettingUp) {
    j.epoch = epoch_.number;
    j.committed = phase_ == Phase::kMember && epoch_.committed;
    for (const net::Member& m : epoch_.members) j.members.push_back(m.peer_id);
    j.broken = epoch_.broken;
    if (epoch_.broken) {
      j.abort_code = epoch_.abort_reason.code();
      j.abort_lost = epoch_.abort_reason.peer();
    }
    if (epoch_.fault) {
      j.fault_sent = true;
      j.fault_code = epoch_.fault->first;
      j.fault_suspect = epoch_.fault->second;
    }
    j.in_barrier = epoch_.barrier_sent;
    for (const auto& [tag, next] : epoch_.next_seq) j.next_seq.push_back(net::TagSeq{tag, next});
    for (const auto& [key, op] : epoch_.ops) {
      net::RejoinOp r{key.tag, key.seq, net::RejoinOpState::kRunning, 0, 0};
      if (op->locally_done) {
        r.state = net::RejoinOpState::kDone;
        if (op->sync) {
          r.revision = op->sync->elected_revision;
          r.digest = op->sync->digest_after;
        }
      }
      j.ops.push_back(r);
    }
    for (const collective::OpKey& key : epoch_.failed_locally) {
      j.ops.push_back(net::RejoinOp{key.tag, key.seq, net::RejoinOpState::kFailed, 0, 0});
    }
  }
  j.last_epoch = last_epoch_;
  j.last_ring = last_ring_;
  j.seen_epoch = std::max(epoch_.number, last_epoch_);
  j.has_revision = held_revision_.has_value();
  j.revision = held_revision_.value_or(0);
  j.state_digest = held_digest_;
  return j;
}

void PeerRuntime::Handle(const net::TopologyUnchanged& m) {
  if (phase_ != Phase::kMember || m.epoch != epoch_.number) return;  // stale
  epoch_.barrier_sent = false;
  CompleteUpdates(Status::Ok());
}

void PeerRuntime::Handle(const net::EpochPropose& m) {
  if (phase_ == Phase::kConnecting || phase_ == Phase::kClosed) return;
  if (m.epoch <= epoch_.number && epoch_.number != 0) {
    Unexpected(m);  // epochs only move forward
    return;
  }
  std::uint32_t rank = 0;
  bool found = false;
  for (std::uint32_t i = 0; i < m.members.size(); i++) {
    if (m.members[i].peer_id == peer_id_) {
      rank = i;
      found = true;
    }
  }
  if (!found) {
    Unexpected(m);
    return;
  }
  TearDownEpoch(Status(SHOAL_ERR_EPOCH_CHANGED, "a new epoch was proposed"));
  setup_.reset();
  std::uint32_t n = static_cast<std::uint32_t>(m.members.size());
  Epoch e;
  e.number = m.epoch;
  e.members = m.members;
  e.rank = rank;
  e.prev = m.members[(rank + n - 1) % n].peer_id;
  e.next = m.members[(rank + 1) % n].peer_id;
  e.streams = m.streams_per_link;
  e.segment_bytes = m.segment_bytes;
  epoch_ = std::move(e);
  phase_ = Phase::kSettingUp;
  PublishSnapshot();
  spdlog::debug("peer {}: epoch {} proposed, rank {} of {}", Hex64(peer_id_), m.epoch, rank, n);

  setup_.emplace();
  setup_->epoch = m.epoch;
  if (n == 1) {
    setup_->reported = true;
    Send(net::EpochReady{m.epoch, true, 0, SHOAL_OK});
    return;
  }
  setup_->out.resize(epoch_.streams);
  setup_->in.resize(epoch_.streams);
  setup_->timer = std::make_unique<asio::steady_timer>(
      io_, std::chrono::milliseconds(options_.setup_timeout_ms));
  std::uint64_t epoch = m.epoch;
  setup_->timer->async_wait([this, epoch](const asio::error_code& ec) {
    if (ec || !setup_ || setup_->epoch != epoch || setup_->reported) return;
    if (setup_->in_ready < setup_->in.size()) {
      FailSetup(epoch_.prev, SHOAL_ERR_TIMEOUT, "data streams from the previous neighbour did not arrive");
    } else {
      FailSetup(epoch_.next, SHOAL_ERR_TIMEOUT, "could not open data streams to the next neighbour");
    }
  });
  // Streams that arrived before the proposal.
  auto held = held_.find(m.epoch);
  if (held != held_.end()) {
    auto streams = std::move(held->second);
    held_.erase(held_.begin(), std::next(held));
    for (auto& [index, stream] : streams) PlaceIncoming(std::move(stream), index);
  } else {
    held_.erase(held_.begin(), held_.lower_bound(m.epoch));
  }
  for (std::uint16_t k = 0; k < epoch_.streams; k++) {
    ConnectOut(m.epoch, k, m.members[(rank + 1) % n]);
  }
}

void PeerRuntime::Handle(const net::EpochCommit& m) {
  if (phase_ != Phase::kSettingUp || !setup_ || m.epoch != setup_->epoch) return;
  std::uint32_t n = static_cast<std::uint32_t>(epoch_.members.size());
  if (n > 1) {
    if (setup_->out_ready != setup_->out.size() || setup_->in_ready != setup_->in.size()) {
      OnControlLost(Status(SHOAL_ERR_PROTOCOL, "epoch committed before this peer was ready"),
                    /*fatal=*/true);
      return;
    }
    std::vector<net::Stream> out, in;
    for (auto& s : setup_->out) out.push_back(std::move(*s));
    for (auto& s : setup_->in) in.push_back(std::move(*s));
    std::uint64_t epoch = m.epoch;
    collective::RingEngine::Callbacks cb;
    cb.on_op_done = [this, epoch](collective::OpKey key) { OnOpDone(epoch, key); };
    cb.on_fault = [this, epoch](const Status& why) { OnEngineFault(epoch, why); };
    epoch_.engine = std::make_shared<collective::RingEngine>(
        std::move(out), std::move(in), epoch_.prev, epoch_.next, epoch_.segment_bytes, cb);
    epoch_.engine->Start();
  }
  setup_.reset();
  epoch_.committed = true;
  phase_ = Phase::kMember;
  last_epoch_ = epoch_.number;
  last_ring_.clear();
  for (const net::Member& m : epoch_.members) last_ring_.push_back(m.peer_id);
  PublishSnapshot();
  spdlog::info("peer {}: member of epoch {} (rank {} of {})", Hex64(peer_id_), epoch_.number,
               epoch_.rank, n);
  if (!update_waiters_.empty()) epoch_seen_by_user_ = epoch_.number;
  CompleteUpdates(Status::Ok());
}

void PeerRuntime::Handle(const net::OpCommit& m) {
  if (m.epoch != epoch_.number) return;
  auto it = epoch_.ops.find(collective::OpKey{m.tag, m.seq});
  if (it == epoch_.ops.end()) return;  // already failed locally (force-failed)
  if (!it->second->locally_done) {
    OnControlLost(Status(SHOAL_ERR_PROTOCOL, "commit of an op this peer had not finished"),
                  /*fatal=*/true);
    return;
  }
  if (it->second->sync) {
    held_revision_ = it->second->sync->elected_revision;
    held_digest_ = it->second->sync->digest_after;
  }
  it->second->completion.Set(Status::Ok());
  epoch_.ops.erase(it);
}

void PeerRuntime::Handle(const net::EpochAbort& m) {
  if (m.epoch != epoch_.number || !epoch_.committed || epoch_.broken) return;
  epoch_.broken = true;
  epoch_.fault_sent = true;
  epoch_.abort_reason = Status(m.code,
                               fmt::format("epoch {} aborted; retry after update_topology", m.epoch),
                               m.lost_peer);
  spdlog::info("peer {}: {}", Hex64(peer_id_), epoch_.abort_reason.ToString());
  StopDataPlane(epoch_.abort_reason);
  FailOps(epoch_.abort_reason);
}

void PeerRuntime::Handle(const net::Removed& m) {
  spdlog::warn("peer {}: removed from the group: {}", Hex64(peer_id_), m.reason);
  Status reason(SHOAL_ERR_NOT_MEMBER, "removed from the group: " + m.reason);
  TearDownEpoch(reason);
  setup_.reset();
  epoch_.committed = false;
  if (phase_ != Phase::kClosed) phase_ = Phase::kPending;
  PublishSnapshot();
}

void PeerRuntime::Handle(const net::Error& m) {
  spdlog::warn("peer {}: coordinator reports an error: {} ({})", Hex64(peer_id_), m.reason,
               shoal_strerror(m.code));
  if (m.code == SHOAL_ERR_PROTOCOL) {
    epoch_.barrier_sent = false;
    CompleteUpdates(Status(m.code, m.reason));
  }
}

// ---------------------------------------------------------------- epochs and ops

void PeerRuntime::TearDownEpoch(const Status& reason) {
  Status why = epoch_.broken ? epoch_.abort_reason : reason;
  StopDataPlane(why);
  if (epoch_.engine) {
    epoch_.engine->Shutdown();
    epoch_.engine.reset();
  }
  for (auto* links : {&epoch_.links_out, &epoch_.links_in}) {
    for (auto& [peer, link] : *links) {
      for (auto& socket : link.streams) {
        asio::error_code ignored;
        if (socket) socket->close(ignored);
      }
    }
    links->clear();
  }
  FailOps(why);
}

void PeerRuntime::StopDataPlane(const Status& why) {
  if (epoch_.engine) epoch_.engine->Stop(why);
  if (epoch_.sync && epoch_.sync->sync->transfer) epoch_.sync->sync->transfer->Stop(why);
}

void PeerRuntime::FailOps(const Status& reason) {
  auto ops = std::move(epoch_.ops);
  epoch_.ops.clear();
  for (auto& [key, op] : ops) {
    // A rejoin report must not read these as committed here (started, and no longer listed).
    epoch_.failed_locally.insert(key);
    op->completion.Set(reason);
  }
}

void PeerRuntime::CompleteUpdates(const Status& status) {
  auto waiters = std::move(update_waiters_);
  update_waiters_.clear();
  for (auto& w : waiters) w->Set(status);
}

void PeerRuntime::SendFault(PeerId suspect, shoal_status code, const std::string& detail,
                            collective::OpKey op) {
  if (epoch_.fault_sent || epoch_.broken || !epoch_.committed) return;
  epoch_.fault_sent = true;
  epoch_.fault = std::make_pair(code, suspect);
  net::EpochFault f;
  f.epoch = epoch_.number;
  f.suspect = suspect;
  f.code = code;
  f.tag = op.tag;
  f.seq = op.seq;
  f.detail = detail.substr(0, limits::kDetailBytesMax);
  Send(f);
}

void PeerRuntime::OnEngineFault(std::uint64_t epoch, const Status& why) {
  if (epoch != epoch_.number || epoch_.broken || epoch_.fault_sent) return;
  spdlog::info("peer {}: data plane fault in epoch {}: {}", Hex64(peer_id_), epoch, why.ToString());
  SendFault(why.peer(), why.code(), why.message());
}

void PeerRuntime::OnOpDone(std::uint64_t epoch, collective::OpKey key) {
  if (epoch != epoch_.number) return;
  auto it = epoch_.ops.find(key);
  if (it == epoch_.ops.end()) return;
  it->second->locally_done = true;
  Send(net::OpResult{epoch, key.tag, key.seq});
}

void PeerRuntime::OnOpDeadline(std::shared_ptr<OpRequest> op) {
  if (op->completion.done() || op->epoch != epoch_.number) return;
  PeerId suspect = 0;  // a finished op waits on whoever has not reported: the coordinator knows
  if (!op->locally_done) {
    if (op->sync) {
      if (op->sync->transfer) suspect = op->sync->transfer->Suspect();
    } else if (epoch_.engine) {
      suspect = epoch_.engine->SuspectFor(op->key);
    }
  }
  std::string detail =
      op->sync ? fmt::format("shared-state sync {} passed its deadline", op->key.seq)
               : fmt::format("collective tag {} seq {} passed its deadline", op->key.tag,
                             op->key.seq);
  SendFault(suspect, SHOAL_ERR_TIMEOUT, detail, op->key);
  // Stop touching user buffers now: the op cannot succeed any more on this peer.
  if (!op->locally_done) StopDataPlane(Status(SHOAL_ERR_TIMEOUT, detail, suspect));
}

void PeerRuntime::ForceFail(std::shared_ptr<OpRequest> op, const Status& status) {
  if (op->completion.done()) return;
  if (op->epoch == epoch_.number) StopDataPlane(status);
  op->completion.Set(status);
  if (op->epoch == epoch_.number && epoch_.ops.erase(op->key) != 0) {
    epoch_.failed_locally.insert(op->key);
  }
}

void PeerRuntime::HeartbeatTick() {
  if (phase_ == Phase::kClosed) return;
  TimeMs now = MonotonicNowMs();
  bool connected = control_ && !control_->closed();
  if (connected && now - last_received_ms_ > heartbeat_timeout_ms_) {
    OnControlLost(Status(SHOAL_ERR_COORDINATOR_LOST,
                         fmt::format("nothing from the coordinator for {} ms", now - last_received_ms_)));
  }
  if (phase_ == Phase::kClosed) return;
  Send(net::Heartbeat{});
  heartbeat_timer_.expires_after(std::chrono::milliseconds(heartbeat_interval_ms_));
  heartbeat_timer_.async_wait([this](const asio::error_code& ec) {
    if (!ec) HeartbeatTick();
  });
}

// ---------------------------------------------------------------- data streams

void PeerRuntime::AcceptNext() {
  acceptor_.async_accept([this](const asio::error_code& ec, asio::ip::tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) {
      net::TuneDataSocket(socket);
      ReadDataHello(std::make_shared<net::Stream>(std::move(socket)));
    }
    AcceptNext();
  });
}

// The accepting side of a data stream: TLS (when the group uses it), the group-secret handshake
// (when it has a secret), then the DataHello; all within kDataHelloTimeoutMs.
void PeerRuntime::ReadDataHello(std::shared_ptr<net::Stream> socket) {
  auto timer = std::make_shared<asio::steady_timer>(io_);
  timer->expires_after(std::chrono::milliseconds(kDataHelloTimeoutMs));
  timer->async_wait([socket](const asio::error_code& ec) {
    if (!ec) {
      asio::error_code ignored;
      socket->close(ignored);
    }
  });
  auto refuse = [this, socket, timer](const std::string& why) {
    timer->cancel();
    spdlog::warn("peer {}: refused a data connection from {}: {}", Hex64(peer_id_),
                 net::RemoteName(socket->lowest_layer()), why);
    asio::error_code ignored;
    socket->close(ignored);
  };
  // Plain or TLS is told by the first byte: a TLS ClientHello starts with a handshake record,
  // never with a shoal frame's magic.
  net::AsyncDetectTls(socket->lowest_layer(), [this, socket, timer,
                                                refuse](const asio::error_code& ec, bool tls) {
    if (ec) return refuse(ec.message());
    if (tls != (tls_ != nullptr)) {
      return refuse(tls ? "it speaks TLS, but this group does not use TLS"
                        : "it does not speak TLS, but this group uses TLS");
    }
    if (!tls) return AuthenticateIn(socket, timer, refuse);
    socket->UseTls(tls_);
    socket->AsyncHandshake(net::Stream::Role::kServer, [this, socket, timer,
                                                        refuse](const asio::error_code& ec) {
      if (ec) return refuse(net::TlsErrorText(ec));
      AuthenticateIn(socket, timer, refuse);
    });
  });
}

void PeerRuntime::AuthenticateIn(std::shared_ptr<net::Stream> socket,
                                 std::shared_ptr<asio::steady_timer> timer,
                                 std::function<void(const std::string&)> refuse) {
  auto read_hello = [this, socket, timer, refuse] {
    ReadHandshakeFrame(socket, [this, socket, timer, refuse](const Status& s, net::Message&& m) {
      if (!s.ok()) return refuse(s.message());
      auto* hello = std::get_if<net::DataHello>(&m);
      if (hello == nullptr) return refuse("expected DataHello");
      timer->cancel();
      OnDataHello(*hello, std::move(*socket));
    });
  };
  if (options_.secret.empty()) return read_hello();
  // Group secret: AuthHello, our AuthChallenge, their AuthProof, then the DataHello; the proofs
  // are bound to the TLS session, if any.
  auto binding = std::make_shared<net::ChannelBinding>();
  if (Status b = socket->GetChannelBinding(binding.get()); !b.ok()) return refuse(b.message());
  ReadHandshakeFrame(socket, [this, socket, refuse, read_hello, binding](const Status& s,
                                                                          net::Message&& m) {
    if (!s.ok()) return refuse(s.message());
    auto* hello = std::get_if<net::AuthHello>(&m);
    if (hello == nullptr) return refuse("it did not authenticate (this group has a secret)");
    net::Nonce server{};
    if (Status r = net::RandomNonce(&server); !r.ok()) return refuse(r.message());
    net::Nonce client = hello->nonce;
    WriteFrames(socket,
                {net::AuthChallenge{server,
                                    net::ServerProof(options_.secret, client, server, *binding)}},
                [this, socket, refuse, read_hello, client, server,
                 binding](const std::string& error) {
      if (!error.empty()) return refuse(error);
      ReadHandshakeFrame(socket, [this, refuse, read_hello, client, server,
                                  binding](const Status& s, net::Message&& m) {
        if (!s.ok()) return refuse(s.message());
        auto* proof = std::get_if<net::AuthProof>(&m);
        if (proof == nullptr ||
            !net::MacEqual(proof->proof,
                           net::ClientProof(options_.secret, client, server, *binding))) {
          return refuse("wrong group secret");
        }
        read_hello();
      });
    });
  });
}

void PeerRuntime::OnDataHello(const net::DataHello& hello, net::Stream socket) {
  asio::error_code ignored;
  if (hello.to != peer_id_ || phase_ == Phase::kClosed) {
    socket.close(ignored);
    return;
  }
  if (hello.kind == net::StreamKind::kTransfer) {
    OnTransferStream(hello, std::move(socket));
    return;
  }
  std::uint64_t current = setup_ ? setup_->epoch : epoch_.number;
  if (setup_ && hello.epoch == setup_->epoch) {
    if (hello.from != epoch_.prev || hello.stream_count != setup_->in.size()) {
      spdlog::warn("peer {}: refused a data stream from {} for epoch {}: not my previous neighbour "
                   "or wrong stream count", Hex64(peer_id_), Hex64(hello.from), hello.epoch);
      socket.close(ignored);
      return;
    }
    PlaceIncoming(std::move(socket), hello.stream_index);
    return;
  }
  if (hello.epoch > current) {
    std::size_t held = 0;
    for (auto& [e, v] : held_) held += v.size();
    if (held >= kHeldStreamsMax) {
      socket.close(ignored);
      return;
    }
    held_[hello.epoch].emplace_back(hello.stream_index, std::move(socket));
    return;
  }
  socket.close(ignored);  // an old epoch's stream
}

void PeerRuntime::PlaceIncoming(net::Stream socket, std::uint16_t index) {
  if (!setup_ || index >= setup_->in.size() || setup_->in[index].has_value()) {
    asio::error_code ignored;
    socket.close(ignored);
    return;
  }
  setup_->in[index].emplace(std::move(socket));
  setup_->in_ready++;
  CheckSetupDone();
}

void PeerRuntime::ConnectOut(std::uint64_t epoch, std::uint16_t index, const net::Member& to) {
  auto socket = std::make_shared<net::Stream>(io_);
  net::DataHello hello{epoch, peer_id_, to.peer_id, index,
                       static_cast<std::uint16_t>(epoch_.streams), net::StreamKind::kRing};
  PeerId next = to.peer_id;
  DialDataStream(to, hello, socket, [this, socket, epoch, index, next](const std::string& error) {
    if (!setup_ || setup_->epoch != epoch) return;
    if (!error.empty()) {
      FailSetup(next, SHOAL_ERR_PEER_LOST, "next neighbour: " + error);
      return;
    }
    setup_->out[index].emplace(std::move(*socket));
    setup_->out_ready++;
    CheckSetupDone();
  });
}

void PeerRuntime::DialDataStream(const net::Member& to, const net::DataHello& hello,
                                 std::shared_ptr<net::Stream> socket,
                                 std::function<void(const std::string& error)> done) {
  auto resolver = std::make_shared<asio::ip::tcp::resolver>(io_);
  resolver->async_resolve(
      to.host, std::to_string(to.port),
      [this, socket, resolver, hello, done](const asio::error_code& ec,
                                            asio::ip::tcp::resolver::results_type results) {
        if (ec) return done("cannot resolve: " + ec.message());
        asio::async_connect(socket->lowest_layer(), results, [this, socket, hello, done](
                                                  const asio::error_code& ec, const auto&) {
          if (ec) return done("cannot connect: " + ec.message());
          net::TuneDataSocket(socket->lowest_layer());
          if (!tls_) {
            if (options_.secret.empty()) return WriteFrames(socket, {hello}, done);
            return AuthenticateOut(socket, hello, done);
          }
          // TLS first, within the DataHello deadline of the other side.
          socket->UseTls(tls_);
          auto timer = std::make_shared<asio::steady_timer>(io_);
          timer->expires_after(std::chrono::milliseconds(kDataHelloTimeoutMs));
          timer->async_wait([socket](const asio::error_code& ec) {
            asio::error_code ignored;
            if (!ec) socket->close(ignored);
          });
          socket->AsyncHandshake(net::Stream::Role::kClient, [this, socket, hello, done,
                                                              timer](const asio::error_code& ec) {
            timer->cancel();
            if (ec) return done(net::TlsErrorText(ec));
            if (options_.secret.empty()) return WriteFrames(socket, {hello}, done);
            AuthenticateOut(socket, hello, done);
          });
        });
      });
}

// The connecting side of the group-secret handshake on a data stream, then its DataHello.
void PeerRuntime::AuthenticateOut(std::shared_ptr<net::Stream> socket,
                                  const net::DataHello& hello,
                                  std::function<void(const std::string& error)> done) {
  net::Nonce client{};
  if (Status s = net::RandomNonce(&client); !s.ok()) return done(s.message());
  auto binding = std::make_shared<net::ChannelBinding>();  // the proofs' tie to the TLS session
  if (Status s = socket->GetChannelBinding(binding.get()); !s.ok()) return done(s.message());
  // The answer must come within the DataHello deadline of the other side.
  auto timer = std::make_shared<asio::steady_timer>(io_);
  timer->expires_after(std::chrono::milliseconds(kDataHelloTimeoutMs));
  timer->async_wait([socket](const asio::error_code& ec) {
    asio::error_code ignored;
    if (!ec) socket->close(ignored);
  });
  WriteFrames(socket, {net::AuthHello{client}}, [this, socket, hello, done, client, timer,
                                                  binding](const std::string& error) {
    if (!error.empty()) return done(error);
    ReadHandshakeFrame(socket, [this, socket, hello, done, client, timer,
                                binding](const Status& s, net::Message&& m) {
      timer->cancel();
      if (!s.ok()) return done("during authentication: " + s.message());
      auto* challenge = std::get_if<net::AuthChallenge>(&m);
      if (challenge == nullptr) return done("expected AuthChallenge");
      if (!net::MacEqual(challenge->proof,
                         net::ServerProof(options_.secret, client, challenge->nonce, *binding))) {
        return done("it does not hold the group secret");
      }
      WriteFrames(socket,
                  {net::AuthProof{
                       net::ClientProof(options_.secret, client, challenge->nonce, *binding)},
                   hello},
                  done);
    });
  });
}

void PeerRuntime::WriteFrames(std::shared_ptr<net::Stream> socket,
                              const std::vector<net::Message>& messages,
                              std::function<void(const std::string& error)> done) {
  auto bytes = std::make_shared<std::vector<std::uint8_t>>();
  for (const net::Message& m : messages) net::Encode(m, bytes.get());
  asio::async_write(*socket, asio::buffer(*bytes),
                    [socket, bytes, done](const asio::error_code& ec, std::size_t) {
                      done(ec ? "cannot write: " + ec.message() : "");
                    });
}

// Reads one frame of a data stream's handshake (AuthHello, AuthChallenge, AuthProof or DataHello:
// 64 payload bytes at most).
void PeerRuntime::ReadHandshakeFrame(std::shared_ptr<net::Stream> socket,
                                     std::function<void(const Status&, net::Message&&)> done) {
  struct Frame {
    std::uint8_t head[net::kHeaderBytes];
    net::FrameHeader header;
    std::vector<std::uint8_t> payload;
  };
  auto f = std::make_shared<Frame>();
  asio::async_read(*socket, asio::buffer(f->head), [socket, f, done](const asio::error_code& ec,
                                                                     std::size_t) {
    if (ec) return done(Status(SHOAL_ERR_PEER_LOST, ec.message()), net::Message{});
    Status s = net::DecodeHeader(f->head, 64, &f->header);
    if (s.ok() && f->header.type == net::MsgType::kDataSegment) {
      s = Status(SHOAL_ERR_PROTOCOL, "a data segment before the handshake");
    }
    if (!s.ok()) return done(s, net::Message{});
    f->payload.resize(f->header.payload_bytes);
    asio::async_read(*socket, asio::buffer(f->payload), [socket, f, done](
                                                            const asio::error_code& ec,
                                                            std::size_t) {
      if (ec) return done(Status(SHOAL_ERR_PEER_LOST, ec.message()), net::Message{});
      net::Message m;
      Status s = net::DecodePayload(f->header.type, f->payload.data(), f->payload.size(), &m);
      done(s, std::move(m));
    });
  });
}

void PeerRuntime::CheckSetupDone() {
  if (!setup_ || setup_->reported) return;
  if (setup_->out_ready == setup_->out.size() && setup_->in_ready == setup_->in.size()) {
    setup_->reported = true;
    if (setup_->timer) setup_->timer->cancel();
    Send(net::EpochReady{setup_->epoch, true, 0, SHOAL_OK});
  }
}

void PeerRuntime::FailSetup(PeerId suspect, shoal_status code, const std::string& why) {
  if (!setup_ || setup_->reported) return;
  setup_->reported = true;
  spdlog::warn("peer {}: setup of epoch {} failed: {}", Hex64(peer_id_), setup_->epoch, why);
  Send(net::EpochReady{setup_->epoch, false, suspect, code});
}

}  // namespace shoal::comm
