// PeerRuntime, shared-state syncs: the plan from the coordinator, the checks on it, the transfer
// links (K streams per receiver, opened on first use and kept for the epoch) and the Transfer that
// runs on them. Everything here runs on the io thread; see peer_runtime.h. The user-thread side
// (StartSync) is in peer_runtime.cc with the other calls.
#include "shoal/comm/peer_runtime.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>
#include <tuple>
#include <utility>

#include "shoal/common/hash.h"
#include "shoal/common/hex.h"

namespace shoal::comm {

void PeerRuntime::Handle(const net::SyncPlan& m) {
  if (phase_ != Phase::kMember || !epoch_.committed || m.epoch != epoch_.number || epoch_.broken) {
    return;  // stale: that epoch is over here
  }
  auto it = epoch_.ops.find(collective::OpKey{net::kSharedStateTag, m.seq});
  if (it == epoch_.ops.end()) return;  // failed here already (deadline)
  std::shared_ptr<OpRequest> op = it->second;
  SyncJob& job = *op->sync;
  if (job.transfer) {
    OnControlLost(Status(SHOAL_ERR_PROTOCOL, "a second plan for one shared-state sync"),
                  /*fatal=*/true);
    return;
  }
  if (m.code != SHOAL_OK) {  // refused: the coordinator decided, nobody waits for this peer
    spdlog::warn("peer {}: shared-state sync {} refused: {}", Hex64(peer_id_), m.seq, m.reason);
    epoch_.ops.erase(it);
    epoch_.failed_locally.insert(op->key);  // not committed here, whatever the others do
    op->completion.Set(Status(m.code, m.reason));
    return;
  }
  if (Status valid = CheckPlan(m, job); !valid.ok()) {
    OnControlLost(valid, /*fatal=*/true);
    return;
  }
  job.plan_ms = MonotonicNowMs();
  job.elected_revision = m.revision;
  job.digest_after = StateDigest(job, m);
  job.tensors_received = static_cast<std::uint32_t>(m.expect.size());
  std::uint64_t rx_bytes = 0, tx_bytes = 0;
  for (const net::TransferPiece& x : m.recvs) rx_bytes += x.bytes;
  for (const net::TransferPiece& x : m.sends) tx_bytes += x.bytes;
  spdlog::info("peer {}: shared-state sync {} planned: revision {}, receiving {} bytes of {} "
               "tensors, sending {} bytes", Hex64(peer_id_), m.seq, m.revision, rx_bytes,
               m.expect.size(), tx_bytes);
  collective::Transfer::Params p;
  p.tag = net::kSharedStateTag;
  p.seq = m.seq;
  p.segment_bytes_max = epoch_.segment_bytes;
  p.tensors = job.regions;
  for (const net::TransferPiece& x : m.sends) {
    p.sends[x.peer].push_back(collective::Piece{x.tensor, x.offset, x.bytes});
  }
  for (const net::TransferPiece& x : m.recvs) {
    p.recvs[x.peer].push_back(collective::Piece{x.tensor, x.offset, x.bytes});
  }
  for (const net::ExpectedHash& e : m.expect) p.expected_hashes[e.tensor] = e.hash;
  for (const auto& [peer, pieces] : p.sends) job.out_waiting.insert(peer);
  for (const auto& [peer, pieces] : p.recvs) job.in_waiting.insert(peer);
  std::uint64_t epoch = epoch_.number;
  collective::OpKey key = op->key;
  std::weak_ptr<OpRequest> weak = op;  // the transfer's callbacks must not keep the op alive
  collective::Transfer::Callbacks cb;
  cb.on_done = [this, epoch, weak] { OnTransferDone(epoch, weak.lock()); };
  cb.on_fault = [this, epoch, key](const Status& why) {
    if (epoch != epoch_.number || epoch_.broken || epoch_.fault_sent) return;
    spdlog::info("peer {}: shared-state transfer fault in epoch {}: {}", Hex64(peer_id_), epoch,
                 why.ToString());
    SendFault(why.peer(), why.code(), why.message(), key);
  };
  job.transfer = std::make_shared<collective::Transfer>(std::move(p), std::move(cb));
  job.transfer->Start();
  for (PeerId to : job.out_waiting) {
    if (epoch_.links_out.find(to) == epoch_.links_out.end()) OpenTransferLink(to);
  }
  HandLinks();
}

// The digest of this peer's state once `plan` is carried out: xxHash3 of the hashes of the tensors
// that may not diverge, in order, the received ones replaced by the hashes the plan expects.
std::uint64_t PeerRuntime::StateDigest(const SyncJob& job, const net::SyncPlan& plan) {
  std::vector<std::uint64_t> hashes;
  for (const net::TensorReport& t : job.tensors) hashes.push_back(t.hash);
  for (const net::ExpectedHash& e : plan.expect) hashes.at(e.tensor) = e.hash;
  // Tensors that may diverge differ between holders by design: they are not part of the digest.
  std::vector<std::uint64_t> kept;
  for (std::size_t t = 0; t < hashes.size(); ++t) {
    if (!job.tensors[t].allow_divergence) kept.push_back(hashes[t]);
  }
  return ContentHash(kept.data(), kept.size() * sizeof(std::uint64_t));
}

// The plan comes from the coordinator, but it decides what this peer reads into user memory, so
// every piece is checked against this peer's own tensors first.
Status PeerRuntime::CheckPlan(const net::SyncPlan& plan, const SyncJob& job) const {
  auto bad = [&](const std::string& why) {
    return Status(SHOAL_ERR_PROTOCOL, "the coordinator sent an unusable sync plan: " + why);
  };
  std::set<PeerId> others;
  for (const net::Member& m : epoch_.members) {
    if (m.peer_id != peer_id_) others.insert(m.peer_id);
  }
  std::set<std::uint32_t> expected;
  for (const net::ExpectedHash& e : plan.expect) {
    if (e.tensor >= job.regions.size() || !expected.insert(e.tensor).second) {
      return bad("expected hash for tensor " + std::to_string(e.tensor));
    }
  }
  auto in_bounds = [&](const net::TransferPiece& x) {
    if (others.count(x.peer) == 0 || x.tensor >= job.regions.size()) return false;
    std::uint64_t size = job.regions[x.tensor].bytes;
    return x.offset <= size && x.bytes <= size - x.offset;
  };
  for (const net::TransferPiece& x : plan.sends) {
    if (!in_bounds(x)) return bad("a piece to send lies outside this peer's tensors");
  }
  std::vector<std::tuple<std::uint32_t, std::uint64_t, std::uint64_t>> received;
  for (const net::TransferPiece& x : plan.recvs) {
    if (!in_bounds(x)) return bad("a piece to receive lies outside this peer's tensors");
    if (expected.count(x.tensor) == 0) return bad("a received tensor has no expected hash");
    received.emplace_back(x.tensor, x.offset, x.bytes);
  }
  std::sort(received.begin(), received.end());
  for (std::size_t i = 1; i < received.size(); ++i) {
    auto [t0, o0, b0] = received[i - 1];
    auto [t1, o1, b1] = received[i];
    if (t0 == t1 && o1 < o0 + b0) return bad("received pieces overlap");
  }
  return Status::Ok();
}

void PeerRuntime::OnTransferDone(std::uint64_t epoch, std::shared_ptr<OpRequest> op) {
  if (!op || epoch != epoch_.number || op->completion.done() || epoch_.broken) return;
  SyncJob& job = *op->sync;
  job.received = job.transfer->received_bytes();
  job.sent_bytes = job.transfer->sent_bytes();
  job.transfer_seconds = static_cast<double>(MonotonicNowMs() - job.plan_ms) / 1000.0;
  op->locally_done = true;
  Send(net::OpResult{epoch, op->key.tag, op->key.seq});
}

// Gives the transfer in flight every link it waits for that is complete now.
void PeerRuntime::HandLinks() {
  if (!epoch_.sync || epoch_.sync->completion.done()) return;
  SyncJob& job = *epoch_.sync->sync;
  if (!job.transfer || job.transfer->stopped()) return;
  // Hands over every waiting peer whose link is complete; `add` is AddOutgoing or AddIncoming.
  auto hand = [&job](std::set<PeerId>& waiting, std::map<PeerId, Link>& links, auto add) {
    for (auto it = waiting.begin(); it != waiting.end();) {
      auto link = links.find(*it);
      if (link == links.end() || !link->second.complete()) {
        ++it;
        continue;
      }
      PeerId peer = *it;
      it = waiting.erase(it);
      ((*job.transfer).*add)(peer, link->second.streams);
    }
  };
  hand(job.out_waiting, epoch_.links_out, &collective::Transfer::AddOutgoing);
  hand(job.in_waiting, epoch_.links_in, &collective::Transfer::AddIncoming);
}

// Opens the K streams of a transfer link to `to`; they stay open for the rest of the epoch.
void PeerRuntime::OpenTransferLink(PeerId to) {
  const net::Member* member = nullptr;
  for (const net::Member& m : epoch_.members) {
    if (m.peer_id == to) member = &m;
  }
  if (member == nullptr) return;  // CheckPlan admits members only
  Link& link = epoch_.links_out[to];
  std::uint64_t epoch = epoch_.number;
  auto k_count = static_cast<std::uint16_t>(epoch_.streams);
  for (std::uint16_t k = 0; k < k_count; k++) {
    auto socket = std::make_shared<net::Stream>(io_);
    link.streams.push_back(socket);
    net::DataHello hello{epoch, peer_id_, to, k, k_count, net::StreamKind::kTransfer};
    DialDataStream(*member, hello, socket, [this, epoch, to](const std::string& error) {
      if (epoch != epoch_.number || epoch_.broken) return;
      auto link = epoch_.links_out.find(to);
      if (link == epoch_.links_out.end()) return;
      if (!error.empty()) {
        collective::OpKey key = epoch_.sync ? epoch_.sync->key : collective::OpKey{};
        std::string why = "cannot open a transfer link to " + Hex64(to) + ": " + error;
        SendFault(to, SHOAL_ERR_PEER_LOST, why, key);
        StopDataPlane(Status(SHOAL_ERR_PEER_LOST, why, to));
        return;
      }
      link->second.ready++;
      HandLinks();
    });
  }
}

void PeerRuntime::OnTransferStream(const net::DataHello& hello, net::Stream socket) {
  asio::error_code ignored;
  bool from_member = false;
  for (const net::Member& m : epoch_.members) from_member |= m.peer_id == hello.from;
  if (phase_ != Phase::kMember || !epoch_.committed || epoch_.broken ||
      hello.epoch != epoch_.number || !from_member || hello.from == peer_id_ ||
      hello.stream_count != epoch_.streams) {
    spdlog::warn("peer {}: refused a transfer stream from {} for epoch {} (current epoch {})",
                 Hex64(peer_id_), Hex64(hello.from), hello.epoch, epoch_.number);
    socket.close(ignored);
    return;
  }
  Link& link = epoch_.links_in[hello.from];
  if (link.streams.empty()) link.streams.resize(hello.stream_count);
  if (link.streams[hello.stream_index]) {
    spdlog::warn("peer {}: refused a second transfer stream {} from {}", Hex64(peer_id_),
                 hello.stream_index, Hex64(hello.from));
    socket.close(ignored);
    return;
  }
  link.streams[hello.stream_index] = std::make_shared<net::Stream>(std::move(socket));
  link.ready++;
  HandLinks();
}

}  // namespace shoal::comm
