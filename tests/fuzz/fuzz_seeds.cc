// shoal_fuzz_seeds OUT_DIR: writes the seed corpus of every fuzz target into OUT_DIR/<target>/,
// made from real encoded messages (net::Encode) and, for the targets that read a script, from
// scripts of real protocol runs. scripts/fuzz.sh runs it before fuzzing; nothing it writes is
// committed (only minimized crash inputs are, under tests/fuzz/regressions/).
#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "coordinator_script.h"
#include "fuzz_support.h"
#include "sync_planner_input.h"
#include "transfer_input.h"
#include "wire_rules.h"

namespace shoal::fuzz {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

class SeedDir {
 public:
  SeedDir(const fs::path& root, const std::string& target) : dir_(root / target) {
    fs::create_directories(dir_);
  }
  void Write(const Bytes& bytes) {
    char name[32];
    std::snprintf(name, sizeof name, "seed-%04d", next_++);
    std::ofstream(dir_ / name, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()),
               static_cast<std::streamsize>(bytes.size()));
  }
  int written() const { return next_; }

 private:
  fs::path dir_;
  int next_ = 0;
};

Bytes Encoded(const net::Message& m) {
  Bytes b;
  net::Encode(m, &b);
  return b;
}

// What a member of epoch `epoch` reports when it reconnects to a restarted coordinator: op
// (1, 2) finished without a verdict, tag 1 used three times, a committed shared-state revision.
net::Rejoin RejoinReport(std::uint64_t epoch, std::vector<PeerId> members) {
  net::Rejoin j;
  j.epoch = epoch;
  j.committed = true;
  j.members = std::move(members);
  j.next_seq = {net::TagSeq{1, 3}};
  j.ops = {net::RejoinOp{1, 2, net::RejoinOpState::kDone, 0, 0}};
  j.has_revision = true;
  j.revision = 4;
  j.state_digest = 0xD16E57;
  j.last_epoch = epoch;
  j.last_ring = j.members;
  j.seen_epoch = epoch;
  return j;
}

// One or more messages of every type, the largest lists included, as a peer or the coordinator
// sends them.
std::vector<net::Message> SampleMessages() {
  std::vector<net::Message> v;
  v.push_back(net::Hello{0x1111, "127.0.0.1", 40001, std::nullopt});
  v.push_back(net::Hello{0x2222, std::string(limits::kHostBytesMax, 'h'), 65535, std::nullopt});
  v.push_back(net::Hello{0x3333, "10.0.0.3", 40003, RejoinReport(5, {0x1111, 0x2222, 0x3333})});
  v.push_back(net::Welcome{0x1111, 250, 3000});
  v.push_back(net::Reject{SHOAL_ERR_REJECTED, "a live connection has this peer id"});
  v.push_back(net::Heartbeat{});
  v.push_back(net::UpdateTopology{3});
  v.push_back(net::TopologyUnchanged{3});
  net::EpochPropose propose{4, 2, 2u << 20, {}};
  for (PeerId id : {0x1111, 0x2222, 0x3333}) {
    propose.members.push_back(net::Member{id, "10.0.0." + std::to_string(id % 250), 40000});
  }
  v.push_back(propose);
  net::EpochPropose largest{5, limits::kStreamsPerLinkMax, limits::kSegmentBytesMin, {}};
  for (PeerId id = 1; id <= limits::kMembersMax; id++) largest.members.push_back({id, "", 1});
  v.push_back(largest);
  v.push_back(net::EpochReady{4, true, 0, SHOAL_OK});
  v.push_back(net::EpochReady{4, false, 0x2222, SHOAL_ERR_TIMEOUT});
  v.push_back(net::EpochCommit{4});
  v.push_back(net::OpResult{4, 7, 0});
  v.push_back(net::OpCommit{4, 7, 0});
  v.push_back(net::EpochFault{4, 0x3333, SHOAL_ERR_PEER_LOST, 7, 1, "data stream closed"});
  v.push_back(net::EpochAbort{4, SHOAL_ERR_PEER_LOST, 0x3333});
  v.push_back(net::Leave{});
  v.push_back(net::Removed{SHOAL_ERR_TIMEOUT, "late to update_topology"});
  v.push_back(net::Error{SHOAL_ERR_EPOCH_CHANGED, "UpdateTopology for epoch 2 which is over"});
  v.push_back(net::DataHello{4, 0x1111, 0x2222, 1, 2, net::StreamKind::kRing});
  v.push_back(net::DataHello{4, 0x1111, 0x3333, 0, 1, net::StreamKind::kTransfer});
  net::SyncReport report{4, 0, 9, {}};
  report.tensors = {{"w0", SHOAL_F32, false, 256, 0xAAAA},
                    {"step", SHOAL_I64, true, 1, 0xBBBB},
                    {"emb", SHOAL_BF16, false, limits::kCollectiveBytesMax / 2, 0xCCCC}};
  v.push_back(report);
  net::SyncPlan plan{4, 0, SHOAL_OK, "", 9, {{0, 0xAAAA}}, {}, {}};
  plan.recvs.push_back(net::TransferPiece{0x2222, 0, 0, 512});
  plan.recvs.push_back(net::TransferPiece{0x3333, 0, 512, 512});
  plan.sends.push_back(net::TransferPiece{0x3333, 1, 0, 8});
  v.push_back(plan);
  v.push_back(
      net::SyncPlan{4, 1, SHOAL_ERR_REVISION, "revision 12 is ahead of the group", 0, {}, {}, {}});
  return v;
}

// codec_header_fuzz: each message's header with the control limit, and a DataSegment head.
void HeaderSeeds(SeedDir& dir, const std::vector<net::Message>& messages) {
  for (const net::Message& m : messages) {
    Bytes frame = Encoded(m);
    Bytes seed(frame.begin(), frame.begin() + net::kHeaderBytes);
    Output limit;
    limit.U32(limits::kSyncPayloadBytesMax);
    seed.insert(seed.end(), limit.bytes().begin(), limit.bytes().end());
    dir.Write(seed);
  }
  Bytes head(net::kHeaderBytes + net::kSegmentHeaderBytes);
  net::EncodeSegmentHead(net::SegmentHeader{7, 3, 12, 0xC0FFEE}, 4096, head.data());
  Output seed;
  seed.Raw(Bytes(head.begin(), head.begin() + net::kHeaderBytes));
  seed.U32(net::kSegmentHeaderBytes + 4096);
  seed.Raw(Bytes(head.begin() + net::kHeaderBytes, head.end()));
  dir.Write(seed.bytes());
}

// codec_payload_fuzz: the type's index in kPayloadTypes, then the payload.
void PayloadSeeds(SeedDir& dir, const std::vector<net::Message>& messages) {
  for (const net::Message& m : messages) {
    Bytes frame = Encoded(m);
    std::uint8_t index = 0;
    while (kPayloadTypes[index] != net::TypeOf(m)) index++;
    Bytes seed{index};
    seed.insert(seed.end(), frame.begin() + net::kHeaderBytes, frame.end());
    dir.Write(seed);
  }
}

// codec_frame_fuzz: every frame alone, then a control connection's first frames in a row, then
// a data stream (DataHello and two DataSegments).
void FrameSeeds(SeedDir& dir, const std::vector<net::Message>& messages) {
  for (const net::Message& m : messages) dir.Write(Encoded(m));
  Bytes stream;
  for (const net::Message& m :
       {net::Message(net::Hello{0x1111, "127.0.0.1", 40001, std::nullopt}),
        net::Message(net::Heartbeat{}), net::Message(net::EpochReady{1, true, 0, SHOAL_OK}),
        net::Message(net::UpdateTopology{1})}) {
    Bytes f = Encoded(m);
    stream.insert(stream.end(), f.begin(), f.end());
  }
  dir.Write(stream);
  Bytes data = Encoded(net::DataHello{2, 0x1111, 0x2222, 0, 1, net::StreamKind::kRing});
  for (std::uint32_t unit = 0; unit < 2; unit++) {
    Bytes head(net::kHeaderBytes + net::kSegmentHeaderBytes);
    net::EncodeSegmentHead(net::SegmentHeader{7, 0, unit, 0x1234}, 16, head.data());
    data.insert(data.end(), head.begin(), head.end());
    data.insert(data.end(), 16, static_cast<std::uint8_t>(unit));
  }
  dir.Write(data);
}

// ---- coordinator_fuzz: scripts of protocol runs (coordinator_script.h) -------------------------

class Script {
 public:
  Script(std::uint8_t max_members, std::uint8_t flags) {
    out_.U8(max_members - 1);  // read back as 1 + x % 5
    out_.U8(3);                // max_pending 4
    out_.U8(2);                // max_open_ops 3
    out_.U8(flags);
  }
  Script& Connect(int n) {
    for (int i = 0; i < n; i++) Op(coordinator_script::kConnect, 0);
    return *this;
  }
  Script& Frame(std::uint8_t slot, const net::Message& m) {
    Op(coordinator_script::kRawFrame, slot);
    out_.Bytes(Encoded(m));
    return *this;
  }
  Script& Hellos(int n) {  // slot i says Hello as peer i + 1
    for (int i = 0; i < n; i++) {
      const auto id = static_cast<PeerId>(i + 1);
      Frame(static_cast<std::uint8_t>(i),
            net::Hello{id, "127.0.0.1", static_cast<std::uint16_t>(40000 + i), std::nullopt});
    }
    return *this;
  }
  // Every open peer's next honest message; `choice` picks what a member does (coordinator_fuzz.cc
  // Honest): 0 an op's result, 1 a sync report (5: after training), 2 a sync's result,
  // 3 update_topology.
  Script& All(std::uint8_t choice, int times = 1) {
    for (int i = 0; i < times; i++) {
      Op(coordinator_script::kHonestAll, 0);
      out_.U8(choice);
    }
    return *this;
  }
  Script& Tick(std::uint8_t ms) {
    Op(coordinator_script::kTick, 0);
    out_.U8(ms);
    return *this;
  }
  Script& Disconnect(std::uint8_t slot) {
    Op(coordinator_script::kDisconnect, slot);
    return *this;
  }
  // A group of n formed and committed: the first Hello starts epoch 1 alone, the others join at
  // its first barrier.
  Script& Group(int n) { return Connect(n).Hellos(n).All(0).All(3).All(0).All(0); }
  const Bytes& bytes() const { return out_.bytes(); }

 private:
  void Op(std::uint8_t op, std::uint8_t slot) {
    out_.U8(op);
    out_.U8(slot);
  }
  Output out_;
};

void CoordinatorSeeds(SeedDir& dir, const std::vector<net::Message>&) {
  dir.Write(Script(4, 0).Group(3).All(0, 4).Tick(5).All(0).bytes());
  dir.Write(Script(4, 0).Group(3).All(1).All(2).All(0).All(5).All(2).All(3).All(0).bytes());
  dir.Write(Script(4, 0)
                .Group(3)
                .Frame(1, net::EpochFault{2, 0, SHOAL_ERR_TIMEOUT, 1, 0, "deadline"})
                .All(3)
                .All(0, 2)
                .Frame(2, net::Leave{})
                .Tick(90)
                .bytes());
  dir.Write(Script(4, 0).Group(3).Frame(0, net::UpdateTopology{2}).Tick(85).Tick(10).bytes());
  dir.Write(Script(4, 0).Group(2).Disconnect(0).Tick(30).All(0).bytes());
  // A coordinator restart: the members of epoch 5 reconnect with their reports.
  const std::vector<PeerId> ring = {1, 2, 3};
  Script restart(4, 1);
  restart.Connect(3);
  for (std::uint8_t i = 0; i < 3; i++) {
    restart.Frame(i, net::Hello{ring[i], "127.0.0.1", 40000, RejoinReport(5, ring)});
  }
  dir.Write(restart.All(3).All(0, 3).Tick(50).bytes());
  Script late(4, 0);  // a member the group went on without reconnects with its report
  late.Group(2).Connect(1).Frame(2, net::Hello{3, "127.0.0.1", 40002, RejoinReport(1, ring)});
  dir.Write(late.All(3).All(0, 2).bytes());
  dir.Write(Script(2, 0)
                .Connect(2)
                .Frame(0, net::Welcome{1, 10, 100})
                .Frame(1, net::Hello{0, "", 0, std::nullopt})
                .bytes());
}

// ---- sync_planner_fuzz: member reports (sync_planner_input.h) ----------------------------------

net::SyncReport StateReport(std::uint64_t revision) {
  net::SyncReport r{sync_planner_input::kEpoch, sync_planner_input::kSeq, revision, {}};
  r.tensors = {{"w", SHOAL_F32, false, 256, 1},
               {"b", SHOAL_U8, true, 3, 2},
               {"emb", SHOAL_BF16, false, 1024, 3}};
  return r;
}

// n members: the first sends `report` off the wire, the others copy it with these changes.
struct Copy {
  std::int8_t revision = 0;
  std::uint8_t flips = 0;
  std::uint8_t shape = 0;
};
Bytes PlannerCase(std::uint8_t last, bool has_last, std::uint8_t piece_pick,
                  std::uint8_t pieces_pick, const net::SyncReport& report,
                  const std::vector<Copy>& copies) {
  Output out;
  out.U8(static_cast<std::uint8_t>(copies.size()));  // members: read back as 1 + x % 8
  out.U8(has_last ? 1 : 0);
  out.U8(last);
  out.U8(piece_pick);
  out.U8(pieces_pick);
  out.U8(0);  // member 0: a report off the wire
  out.Bytes(Encoded(report));
  for (const Copy& c : copies) {
    out.U8(1);  // a copy of member 0
    out.U8(static_cast<std::uint8_t>(c.revision));
    out.U8(c.flips);
    out.U8(c.shape);
  }
  return out.bytes();
}

void SyncPlannerSeeds(SeedDir& dir, const std::vector<net::Message>&) {
  const net::SyncReport r5 = StateReport(5);
  // Indices into kPieceBytesMin (1: 1 byte, 3: 64 bytes, 5: 8 MiB) and kPiecesMax (1: 1, 7: all).
  dir.Write(PlannerCase(4, true, 5, 7, r5, {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}}));
  dir.Write(PlannerCase(4, true, 3, 7, r5, {{0, 1, 0}, {0, 4, 0}, {-5, 7, 0}}));
  dir.Write(PlannerCase(4, true, 1, 7, r5, {{-5, 7, 0}, {-5, 7, 0}, {0, 0, 0}, {0, 2, 0}}));
  dir.Write(PlannerCase(4, true, 3, 7, r5, {{0, 0, 2}, {2, 0, 0}, {0, 1, 3}}));
  dir.Write(PlannerCase(4, false, 1, 1, r5, {{-5, 7, 0}, {-4, 1, 0}, {0, 0, 0}}));
  dir.Write(PlannerCase(0, false, 1, 3, r5, {{-5, 7, 0}, {0, 0, 1}}));
}

// ---- transfer_fuzz: plans and the frames of correct senders (transfer_input.h) -----------------

struct TransferPlan {
  std::uint8_t k;
  std::vector<std::uint8_t> sizes;
  std::uint8_t segment_bytes;
  bool wrong_hash;
  std::vector<std::vector<std::array<std::uint8_t, 3>>> senders;  // pieces: tensor, gap, length
};

Bytes TransferCase(const TransferPlan& p, const std::vector<std::array<std::uint8_t, 5>>& edits) {
  Output out;
  out.U8(p.k - 1);
  out.U8(static_cast<std::uint8_t>(p.senders.size() - 1));
  out.U8(static_cast<std::uint8_t>(p.sizes.size() - 1));
  for (std::uint8_t s : p.sizes) out.U8(s);
  out.U8(p.segment_bytes - 1);
  out.U8(p.wrong_hash ? 1 : 0);
  for (const auto& pieces : p.senders) {
    out.U8(static_cast<std::uint8_t>(pieces.size() - 1));
    for (const auto& [tensor, gap, length] : pieces) {
      out.U8(tensor);
      out.U8(gap);
      out.U8(length - 1);  // read back as 1 + x % what is left
    }
  }
  out.U8(0x5E);
  for (const auto& [kind, stream, pos_lo, pos_hi, value] : edits) {
    out.U8(kind);
    out.U8(stream);
    out.U8(pos_lo);
    out.U8(pos_hi);
    out.U8(value);
  }
  return out.bytes();
}

void TransferSeeds(SeedDir& dir, const std::vector<net::Message>&) {
  // Two senders feed two tensors, K = 2, frames of 16 bytes.
  const TransferPlan two{
      2, {100, 40}, 16, false, {{{0, 0, 60}, {1, 0, 20}}, {{0, 0, 40}, {1, 0, 20}}}};
  dir.Write(TransferCase(two, {}));
  dir.Write(TransferCase(two, {{3, 1, 0, 0, 0x77}}));   // garbage after the last frame
  dir.Write(TransferCase(two, {{0, 0, 40, 0, 0x01}}));  // a flipped payload byte
  dir.Write(TransferCase(two, {{0, 2, 14, 0, 0x80}}));  // a flipped length byte
  dir.Write(TransferCase(two, {{1, 3, 30, 0, 0}}));     // a stream cut short
  TransferPlan wrong = two;
  wrong.wrong_hash = true;
  dir.Write(TransferCase(wrong, {}));
  // One sender, three streams, one-byte frames, a tensor received in three pieces with gaps.
  dir.Write(
      TransferCase({3, {30, 0, 9}, 1, false, {{{0, 2, 5}, {0, 1, 5}, {2, 0, 9}, {0, 3, 4}}}}, {}));
}

}  // namespace
}  // namespace shoal::fuzz

int main(int argc, char** argv) {
  using namespace shoal::fuzz;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 64;
  }
  const std::filesystem::path out = argv[1];
  const std::vector<shoal::net::Message> messages = SampleMessages();
  std::vector<std::pair<std::string, void (*)(SeedDir&, const std::vector<shoal::net::Message>&)>>
      writers = {{"codec_header_fuzz", HeaderSeeds},      {"codec_payload_fuzz", PayloadSeeds},
                 {"codec_frame_fuzz", FrameSeeds},        {"coordinator_fuzz", CoordinatorSeeds},
                 {"sync_planner_fuzz", SyncPlannerSeeds}, {"transfer_fuzz", TransferSeeds}};
  for (const auto& [target, write] : writers) {
    SeedDir dir(out, target);
    write(dir, messages);
    std::printf("%s: %d seeds\n", target.c_str(), dir.written());
  }
  return 0;
}
