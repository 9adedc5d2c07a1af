// Every limit of shoal in one place. Anything read from the wire is checked against these before
// any allocation or loop. Units are last in the names.
#pragma once

#include <cstddef>
#include <cstdint>

namespace shoal::limits {

// Control plane.
inline constexpr std::uint32_t kControlPayloadBytesMax = 1u << 20;  // one control message
// SyncReport and SyncPlan list every tensor of a shared state, so they may be larger; the codec
// allows this size for those two types only.
inline constexpr std::uint32_t kSyncPayloadBytesMax = 8u << 20;
inline constexpr std::uint32_t kHostBytesMax = 255;                 // a host name or address
inline constexpr std::uint32_t kDetailBytesMax = 1024;              // human text in a message
inline constexpr std::uint32_t kMembersMax = 1024;                  // members of one epoch
inline constexpr std::uint32_t kPendingMax = 1024;                  // pending peers at once
inline constexpr std::uint32_t kConnectionsMax = 4096;              // coordinator connections
// A peer's ops in flight and the tags it uses in one epoch: bounded so that its rejoin report
// (Hello.rejoin) fits one control message.
inline constexpr std::uint32_t kOpsInFlightMax = 4096;
inline constexpr std::uint32_t kTagsPerEpochMax = 4096;

// Shared state.
inline constexpr std::uint32_t kSharedTensorsMax = 8192;      // tensors of one shared state
inline constexpr std::uint32_t kTensorNameBytesMax = 255;     // a tensor's name
inline constexpr std::uint32_t kSyncPiecesMax = 100000;       // sends + receives of one member's plan
inline constexpr std::uint32_t kOpenSyncsMax = 4;             // syncs awaiting reports in one epoch

// Data plane.
inline constexpr std::uint32_t kStreamsPerLinkMax = 64;
// The send buffer a data stream asks for (SO_SNDBUF, net/framed_connection.h): one stream must
// hold a bandwidth-delay product (1 Gbit/s x 100 ms = 12.5 MB) to fill a long fat link, and the
// kernel's autotuning stops at net.ipv4.tcp_wmem's maximum (4 MiB by default).
inline constexpr std::size_t kDataSendBufferBytes = 16u << 20;
inline constexpr std::uint32_t kSegmentBytesMin = 4096;
inline constexpr std::uint32_t kSegmentBytesMax = 64u << 20;
inline constexpr std::uint32_t kSegmentHeaderBytes = 24;  // tag, seq, unit, desc
inline constexpr std::uint32_t kDataFramePayloadBytesMax = kSegmentBytesMax + kSegmentHeaderBytes;
inline constexpr std::uint64_t kCollectiveBytesMax = std::uint64_t{1} << 40;  // one collective, 1 TiB

// A member entry is id (8) + port (2) + host length (2) + host; the whole list must fit one message.
inline constexpr std::uint32_t kMemberEntryBytesMax = 8 + 2 + 2 + kHostBytesMax;
static_assert(kMembersMax * kMemberEntryBytesMax + 64 <= kControlPayloadBytesMax,
              "an epoch proposal with the most members must fit one control message");
static_assert(kDetailBytesMax + 64 <= kControlPayloadBytesMax);
// A rejoin report: members (8 each), tags (16 each), ops (33 each) and the fixed fields.
static_assert(kHostBytesMax + 2 * kMembersMax * 8 + kTagsPerEpochMax * 16 + kOpsInFlightMax * 33 +
                      128 <= kControlPayloadBytesMax,
              "the largest rejoin report must fit one Hello");
static_assert(kSegmentBytesMin <= kSegmentBytesMax);
static_assert(kDataFramePayloadBytesMax >= kSegmentBytesMax + kSegmentHeaderBytes,
              "a full-size segment and its header fit one data frame");
static_assert(kPendingMax + kMembersMax <= kConnectionsMax);
// A tensor report is name (2 + name) + dtype (1) + flags (1) + count (8) + hash (8); a plan piece
// is peer (8) + tensor (4) + offset (8) + bytes (8); an expected hash is tensor (4) + hash (8).
inline constexpr std::uint32_t kTensorReportBytesMax = 2 + kTensorNameBytesMax + 1 + 1 + 8 + 8;
inline constexpr std::uint32_t kPieceBytes = 28;
static_assert(kSharedTensorsMax * kTensorReportBytesMax + 64 <= kSyncPayloadBytesMax,
              "a report of the largest shared state must fit one SyncReport");
static_assert(kSyncPiecesMax * kPieceBytes + kSharedTensorsMax * 12 + kDetailBytesMax + 64 <=
                  kSyncPayloadBytesMax,
              "the largest plan must fit one SyncPlan");
static_assert(kControlPayloadBytesMax <= kSyncPayloadBytesMax);

}  // namespace shoal::limits
