// The input format of coordinator_fuzz: a script of events for one Coordinator, shared by the
// target (which reads it) and the seed writer (which writes scripts of real protocol runs).
//
// A script is a config block and then a sequence of steps, each an opcode byte (modulo kCount),
// a slot byte (which connection, modulo the slots opened so far) and the opcode's own bytes:
//   config: u8 max_members (1 + x % 5), u8 max_pending (1 + x % 5), u8 max_open_ops (1 + x % 4),
//           u8 flags (bit 0: startup_hold_ms = kHoldMs, bit 1: quorum, bit 2: standby)
//   kConnect                       a new connection (a new slot; at most kSlotsMax)
//   kDisconnect                    the slot's connection closes
//   kTick          u8 ms           time passes by ms, then OnTick
//   kRawFrame      bytes           a frame off the wire: u16 length and the bytes; DecodeFrame
//                                  decides whether the coordinator sees a message or a disconnect
//                                  (the version field is set to the current one first)
//   kHello         u8 id, u8 port  Hello{id from the pool, no rejoin report}
//   kRejoinHello   u8 id, ...      Hello with a rejoin report built from the following bytes
//                                  (epoch, flags, members, ops, revision, last epoch and ring,
//                                  the highest epoch it saw)
//   kHeartbeat                     Heartbeat
//   kUpdateTopology u8 epoch-pick  UpdateTopology
//   kEpochReady    u8 epoch-pick, u8 ok, u8 suspect, u8 code
//   kOpResult      u8 epoch-pick, u8 tag, u8 seq
//   kEpochFault    u8 epoch-pick, u8 suspect, u8 code, u8 tag, u8 seq
//   kSyncReport    u8 epoch-pick, u8 seq, u8 revision, u8 schema
//   kLeave                         Leave
//   kHonest        u8 choice       the message a peer that follows the protocol would send next
//   kHonestAll     u8 choice       kHonest for every open slot, in slot order
//   kSendAny       u8 type, ...    a message of any type the coordinator never accepts
// Every message is encoded and decoded by the codec before the coordinator sees it, as the
// server does; one that does not decode closes the connection.
#pragma once

#include <cstdint>

namespace shoal::fuzz::coordinator_script {

enum Op : std::uint8_t {
  kConnect,
  kDisconnect,
  kTick,
  kRawFrame,
  kHello,
  kRejoinHello,
  kHeartbeat,
  kUpdateTopology,
  kEpochReady,
  kOpResult,
  kEpochFault,
  kSyncReport,
  kLeave,
  kHonest,
  kHonestAll,
  kSendAny,
  kCount,
};

inline constexpr std::uint32_t kSlotsMax = 10;  // connections over one script
inline constexpr std::uint32_t kIdPool = 6;     // peer ids 1..6, so ids repeat
inline constexpr std::uint32_t kHoldMs = 40;    // startup_hold_ms when flag bit 0 is set
inline constexpr std::uint32_t kConfigBytes = 4;

}  // namespace shoal::fuzz::coordinator_script
