// PeerRuntime: one peer of a shoal group — the peer side of docs/protocol.md.
//
// It owns an io thread (Asio) that runs everything: the control connection to the coordinator
// (Hello, heartbeats, barriers, verdicts), the data listener, the setup of each epoch's data
// streams, and the RingEngine of the committed epoch. User threads never touch that state: they
// post work to the io thread and wait on Completions with deadlines.
//
// The rule that keeps user memory safe: a collective's Completion is set only on the io thread,
// and only after the engine has stopped touching its buffers (the op finished, or the engine was
// stopped first).
//
// Thread safety: public methods are thread-safe. Lifetime: held by shared_ptr (the Communicator and
// its Requests); the destructor calls Close(), which joins the io thread.
#pragma once

#include <asio.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "shoal/collective/engine.h"
#include "shoal/collective/transfer.h"
#include "shoal/comm/completion.h"
#include "shoal/common/clock.h"
#include "shoal/status.hpp"
#include "shoal/net/framed_connection.h"
#include "shoal/net/messages.h"
#include "shoal/net/stream.h"
#include "shoal/net/tls.h"
#include "shoal/shoal.hpp"

namespace shoal::comm {

// The shared-state part of a sync op. The io thread writes the results before it sets the op's
// completion; the user thread reads them after.
struct SyncJob {
  std::uint64_t revision = 0;                   // as reported
  std::vector<net::TensorReport> tensors;       // as reported (with hashes)
  std::vector<collective::TensorRegion> regions;
  std::shared_ptr<collective::Transfer> transfer;  // io thread; once the plan arrived
  std::set<PeerId> out_waiting;  // io thread: receivers whose link is not handed to the transfer yet
  std::set<PeerId> in_waiting;   // io thread: senders likewise
  // Results.
  std::uint64_t elected_revision = 0;
  std::uint64_t digest_after = 0;  // io thread: the state digest if this sync commits
  std::uint32_t tensors_received = 0;
  std::map<PeerId, std::uint64_t> received;
  std::uint64_t sent_bytes = 0;
  TimeMs plan_ms = 0;       // io thread: when the plan arrived
  double transfer_seconds = 0;
};

// A collective in flight, shared by the io thread and the waiting user thread.
struct OpRequest {
  std::uint64_t epoch = 0;
  collective::OpKey key;
  Deadline deadline = Deadline::Never();
  Completion completion;
  bool locally_done = false;  // io thread only
  std::shared_ptr<SyncJob> sync;  // for a shared-state sync
};

class PeerRuntime {
 public:
  static Status Create(const Options& options, std::shared_ptr<PeerRuntime>* out);
  ~PeerRuntime();

  Status UpdateTopology(Deadline deadline);
  Status StartAllReduce(const collective::RingAllReduceParams& params, std::uint64_t tag,
                        Deadline deadline, std::shared_ptr<OpRequest>* out);
  // Waits for `op` until `wait_deadline`; past the op's own deadline it asks for the verdict and
  // waits at most verdict_grace_ms more. Returns SHOAL_ERR_TIMEOUT only for an early wait_deadline.
  Status Wait(const std::shared_ptr<OpRequest>& op, Deadline wait_deadline);
  // Sends this peer's report (job->tensors hashed by the caller) and returns the op to Wait on.
  Status StartSync(std::shared_ptr<SyncJob> job, Deadline deadline,
                   std::shared_ptr<OpRequest>* out);
  Status Leave(Deadline deadline);
  // Leaves if needed and stops the io thread. Idempotent.
  void Close();

  PeerId peer_id() const { return peer_id_; }
  struct Snapshot {
    std::uint64_t epoch = 0;
    std::vector<PeerId> members;
    std::uint32_t rank = 0;
    bool member = false;
  };
  Snapshot snapshot() const;

 private:
  enum class Phase { kConnecting, kPending, kSettingUp, kMember, kClosed };

  // The data streams being opened for a proposed epoch.
  struct Setup {
    Setup() {}  // user-provided: clang 14 cannot emplace a nested aggregate with initializers
    std::uint64_t epoch = 0;
    std::vector<std::optional<net::Stream>> out;
    std::vector<std::optional<net::Stream>> in;
    std::size_t out_ready = 0;
    std::size_t in_ready = 0;
    bool reported = false;
    std::unique_ptr<asio::steady_timer> timer;
  };
  // A point-to-point link of the committed epoch: K streams in one direction (transfers).
  struct Link {
    std::vector<std::shared_ptr<net::Stream>> streams;
    std::size_t ready = 0;
    bool complete() const { return !streams.empty() && ready == streams.size(); }
  };
  // The epoch this peer is in (proposed or committed).
  struct Epoch {
    std::uint64_t number = 0;
    std::vector<net::Member> members;
    std::uint32_t rank = 0;
    PeerId prev = 0;
    PeerId next = 0;
    std::uint32_t streams = 1;
    std::uint32_t segment_bytes = 1u << 20;
    bool committed = false;
    bool broken = false;
    Status abort_reason;
    bool fault_sent = false;
    std::optional<std::pair<shoal_status, PeerId>> fault;  // the fault this peer sent, if any
    bool barrier_sent = false;
    std::shared_ptr<collective::RingEngine> engine;
    std::map<std::uint64_t, std::uint64_t> next_seq;  // per tag
    std::map<collective::OpKey, std::shared_ptr<OpRequest>> ops;
    std::set<collective::OpKey> failed_locally;  // ops that ended without a verdict (ForceFail)
    std::map<PeerId, Link> links_out;  // transfer links this peer opened, by receiver
    std::map<PeerId, Link> links_in;   // transfer links opened to this peer, by sender
    std::shared_ptr<OpRequest> sync;   // the shared-state sync in flight, if any
  };

  explicit PeerRuntime(const Options& options);
  Status Start(Deadline deadline);

  // io thread only, below.
  void OnControlMessage(net::Message&& m);
  // Starts reading `control_` and says Hello (with a rejoin report when reconnecting).
  void OpenControl();
  // The control connection ended. Unless `fatal` (the coordinator broke the protocol) or the
  // reconnect window is over or disabled, the peer keeps its state and reconnects with backoff;
  // otherwise every call fails with COORDINATOR_LOST.
  void OnControlLost(const Status& why, bool fatal = false);
  void ScheduleReconnect();
  // How long a reconnect stays with one coordinator address before moving along the list: by
  // then the coordinator it left has dropped this peer (heartbeat timeout + one interval).
  TimeMs FailoverMs() const;
  void TryReconnect();
  net::Rejoin MakeRejoin() const;
  void SendHello();
  // The control connection's stream over a connected `socket`: TLS when the group uses it.
  net::Stream ControlStream(asio::ip::tcp::socket socket) const;
  // The coordinator refused this peer (Reject, or it failed to prove the group secret).
  void Refused(const Status& s);
  void Handle(const net::Welcome& m);
  void Handle(const net::Reject& m);
  void Handle(const net::TopologyUnchanged& m);
  void Handle(const net::EpochPropose& m);
  void Handle(const net::EpochCommit& m);
  void Handle(const net::OpCommit& m);
  void Handle(const net::EpochAbort& m);
  void Handle(const net::Removed& m);
  void Handle(const net::Error& m);
  void Handle(const net::SyncPlan& m);
  void Handle(const net::AuthChallenge& m);
  void Handle(const net::Heartbeat&) {}  // liveness only: OnControlMessage noted the time
  template <typename T>
  void Handle(const T& m) {  // messages only a peer sends (Hello, OpResult, DataHello, ...)
    Unexpected(net::Message(m));
  }
  void Unexpected(const net::Message& m);

  void AcceptNext();
  void ReadDataHello(std::shared_ptr<net::Stream> socket);
  void AuthenticateIn(std::shared_ptr<net::Stream> socket,
                      std::shared_ptr<asio::steady_timer> timer,
                      std::function<void(const std::string&)> refuse);
  void OnDataHello(const net::DataHello& hello, net::Stream socket);
  void PlaceIncoming(net::Stream socket, std::uint16_t index);
  void ConnectOut(std::uint64_t epoch, std::uint16_t index, const net::Member& to);
  // Resolves, connects `socket` to `to`, runs the TLS handshake (when the group uses TLS) and the
  // group-secret handshake (when it has a secret) and writes `hello`; `done("")` on success, else
  // with why.
  void DialDataStream(const net::Member& to, const net::DataHello& hello,
                      std::shared_ptr<net::Stream> socket,
                      std::function<void(const std::string& error)> done);
  // Group-secret handshake of a data stream this peer opens, then `hello` (net/auth.h).
  void AuthenticateOut(std::shared_ptr<net::Stream> socket, const net::DataHello& hello,
                       std::function<void(const std::string& error)> done);
  void WriteFrames(std::shared_ptr<net::Stream> socket,
                   const std::vector<net::Message>& messages,
                   std::function<void(const std::string& error)> done);
  void ReadHandshakeFrame(std::shared_ptr<net::Stream> socket,
                          std::function<void(const Status&, net::Message&&)> done);
  void CheckSetupDone();
  void FailSetup(PeerId suspect, shoal_status code, const std::string& why);
  void TearDownEpoch(const Status& reason);
  void FailOps(const Status& reason);
  void CompleteUpdates(const Status& status);
  // `op` names the collective the fault is about, if any (the coordinator uses it to find a
  // straggler when `suspect` is 0).
  void SendFault(PeerId suspect, shoal_status code, const std::string& detail,
                 collective::OpKey op = {});
  void OnEngineFault(std::uint64_t epoch, const Status& why);
  void OnOpDone(std::uint64_t epoch, collective::OpKey key);
  Status CheckPlan(const net::SyncPlan& plan, const SyncJob& job) const;
  static std::uint64_t StateDigest(const SyncJob& job, const net::SyncPlan& plan);
  void OnTransferDone(std::uint64_t epoch, std::shared_ptr<OpRequest> op);
  void OpenTransferLink(PeerId to);
  void HandLinks();
  void OnTransferStream(const net::DataHello& hello, net::Stream socket);
  // Stops the ring engine and the transfer in flight: no user buffer is touched after this.
  void StopDataPlane(const Status& why);
  void OnOpDeadline(std::shared_ptr<OpRequest> op);
  void ForceFail(std::shared_ptr<OpRequest> op, const Status& status);
  void HeartbeatTick();
  void PublishSnapshot();
  void Send(const net::Message& m);
  // Whether one more op with `tag` fits the limits that keep a rejoin report bounded.
  Status RoomForOp(std::uint64_t tag) const;

  const Options options_;
  std::shared_ptr<net::TlsContext> tls_;  // set when options_.tls; shared by all connections
  PeerId peer_id_ = 0;
  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::thread thread_;
  asio::ip::tcp::acceptor acceptor_;
  std::uint16_t data_port_ = 0;
  std::shared_ptr<net::FramedConnection> control_;
  asio::steady_timer heartbeat_timer_;
  TimeMs last_received_ms_ = 0;
  std::uint32_t heartbeat_interval_ms_ = 250;
  std::uint32_t heartbeat_timeout_ms_ = 3000;
  bool awaiting_welcome_ = false;  // Hello sent on the current control connection, no Welcome yet
  bool awaiting_challenge_ = false;  // AuthHello sent, AuthChallenge expected (group secret)
  net::Nonce client_nonce_{};
  // Coordinator loss: reconnecting until reconnect_deadline_ms_ (docs/protocol.md, "Coordinator
  // restart").
  bool reconnecting_ = false;
  TimeMs lost_ms_ = 0;
  TimeMs reconnect_deadline_ms_ = 0;
  std::uint32_t reconnect_attempts_ = 0;
  asio::steady_timer reconnect_timer_;
  // The latest epoch this peer was a committed member of, and its ring (Rejoin.last_epoch).
  std::uint64_t last_epoch_ = 0;
  std::vector<PeerId> last_ring_;
  // Coordinator addresses: the primary, then the standbys; reconnect attempts move along them.
  std::vector<std::pair<std::string, std::uint16_t>> coordinators_;
  std::size_t coordinator_index_ = 0;  // the one connected (or last tried)
  std::size_t lost_index_ = 0;         // the one whose loss started the reconnect
  bool given_up_ = false;  // the last control message was Removed{COORDINATOR_LOST}
  // Shared state: the revision of the last sync that committed here, and the state digest then.
  std::optional<std::uint64_t> held_revision_;
  std::uint64_t held_digest_ = 0;

  // io thread state.
  Phase phase_ = Phase::kConnecting;
  Status closed_reason_;
  Epoch epoch_;
  // The committed epoch the user last saw return from UpdateTopology. A peer admitted before its
  // user called UpdateTopology (a joiner, the first peer) returns from that call at once.
  std::uint64_t epoch_seen_by_user_ = 0;
  std::optional<Setup> setup_;
  std::map<std::uint64_t, std::vector<std::pair<std::uint16_t, net::Stream>>> held_;
  std::vector<std::shared_ptr<Completion>> update_waiters_;
  std::shared_ptr<Completion> welcome_;

  mutable std::mutex snapshot_mu_;
  Snapshot snapshot_;  // guarded by snapshot_mu_
  std::once_flag close_once_;
};

}  // namespace shoal::comm
