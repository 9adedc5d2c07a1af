// Fuzz target: DecodeHeader, DecodeSegmentHeader and EncodeSegmentHead (net/codec.h).
//
// Input: a 12-byte frame header, the reader's payload limit (u32; the control readers' 8 MiB when
// the input ends before it) and a 24-byte segment header (zeros where the input ends).
//
// Properties:
// - DecodeHeader accepts exactly the headers docs/wire-format.md "Frames" accepts: right magic and
//   version, a known type, payload_bytes within the reader's limit and the type's own cap, and a
//   DataSegment at least as long as its segment header. It reports what the header says, and a
//   rejection is SHOAL_ERR_PROTOCOL with a message.
// - So a reader never sizes a buffer above its limit or the type's cap from a header it accepted.
// - A DataSegment head has exactly one encoding: EncodeSegmentHead of the decoded segment header
//   gives back the 36 input bytes; and DecodeSegmentHeader inverts EncodeSegmentHead.
#include <algorithm>
#include <cstring>

#include "fuzz_support.h"
#include "wire_rules.h"

namespace shoal::fuzz {
namespace {

using net::MsgType;

bool KnownType(std::uint16_t t) {
  if (t == static_cast<std::uint16_t>(MsgType::kDataSegment)) return true;
  for (MsgType known : kPayloadTypes) {
    if (t == static_cast<std::uint16_t>(known)) return true;
  }
  return false;
}

// The type's own cap on payload_bytes (wire-format.md, "Frames", step 4); none for DataSegment.
std::uint32_t TypeCap(std::uint16_t t) {
  if (t == 33) return ~std::uint32_t{0};
  if (t == 17 || t == 18) return limits::kSyncPayloadBytesMax;
  return limits::kControlPayloadBytesMax;
}

void CheckHeader(const std::uint8_t* head, std::uint32_t limit) {
  Input in(head, net::kHeaderBytes);
  const std::uint32_t magic = in.U32();
  const std::uint16_t version = in.U16();
  const std::uint16_t type = in.U16();
  const std::uint32_t len = in.U32();
  const bool want = magic == net::kMagic && version == net::kProtocolVersion && KnownType(type) &&
                    len <= std::min(limit, TypeCap(type)) &&
                    (type != 33 || len >= limits::kSegmentHeaderBytes);

  net::FrameHeader h;
  h.type = MsgType::kHello;  // not what any accepted header below says by accident
  h.payload_bytes = 0xDEADBEEF;
  Status s = net::DecodeHeader(head, limit, &h);
  FUZZ_REQUIRE(s.ok() == want, "DecodeHeader " + std::string(s.ok() ? "accepted" : "rejected") +
                                   " type " + std::to_string(type) + " of " + std::to_string(len) +
                                   " bytes with limit " + std::to_string(limit));
  if (!s.ok()) {
    FUZZ_REQUIRE(s.code() == SHOAL_ERR_PROTOCOL && !s.message().empty(), s.ToString());
    return;
  }
  FUZZ_REQUIRE(static_cast<std::uint16_t>(h.type) == type, "decoded type differs");
  FUZZ_REQUIRE(h.payload_bytes == len, "decoded payload length differs");
  FUZZ_REQUIRE(h.payload_bytes <= limit && h.payload_bytes <= TypeCap(type),
               "accepted a payload above the reader's limit or the type's cap");
}

void CheckSegmentHead(const std::uint8_t* head, std::uint32_t limit) {
  net::FrameHeader h;
  if (!net::DecodeHeader(head, limit, &h).ok() || h.type != MsgType::kDataSegment) return;
  const net::SegmentHeader seg = net::DecodeSegmentHeader(head + net::kHeaderBytes);
  std::uint8_t again[net::kHeaderBytes + net::kSegmentHeaderBytes];
  net::EncodeSegmentHead(
      seg, h.payload_bytes - static_cast<std::uint32_t>(net::kSegmentHeaderBytes), again);
  FUZZ_REQUIRE(std::memcmp(again, head, sizeof again) == 0,
               "a DataSegment head does not re-encode to its own bytes");
}

// DecodeSegmentHeader(EncodeSegmentHead(x)) == x, and the head is a frame header that decodes.
void CheckSegmentRoundTrip(const net::SegmentHeader& seg, std::uint32_t segment_bytes) {
  std::uint8_t head[net::kHeaderBytes + net::kSegmentHeaderBytes];
  net::EncodeSegmentHead(seg, segment_bytes, head);
  const net::SegmentHeader back = net::DecodeSegmentHeader(head + net::kHeaderBytes);
  FUZZ_REQUIRE(
      back.tag == seg.tag && back.seq == seg.seq && back.unit == seg.unit && back.desc == seg.desc,
      "segment header does not survive encode and decode");
  net::FrameHeader h;
  const std::uint32_t payload =
      static_cast<std::uint32_t>(net::kSegmentHeaderBytes) + segment_bytes;
  if (payload < segment_bytes) return;  // the u32 length wrapped: no such frame can be sent
  FUZZ_REQUIRE(net::DecodeHeader(head, payload, &h).ok() && h.type == MsgType::kDataSegment &&
                   h.payload_bytes == payload,
               "an encoded segment head is not accepted with its own length as the limit");
}

}  // namespace
}  // namespace shoal::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace shoal;
  std::uint8_t head[net::kHeaderBytes + net::kSegmentHeaderBytes] = {};
  std::memcpy(head, data, std::min(size, net::kHeaderBytes));
  fuzz::Input in(data, size);
  in.Skip(net::kHeaderBytes);
  const std::uint32_t limit = in.left() >= 4 ? in.U32() : limits::kSyncPayloadBytesMax;
  for (std::size_t i = 0; i < net::kSegmentHeaderBytes; i++) {
    head[net::kHeaderBytes + i] = in.U8();
  }
  fuzz::CheckHeader(head, limit);
  fuzz::CheckSegmentHead(head, limit);
  fuzz::Input seg_in(head + net::kHeaderBytes, net::kSegmentHeaderBytes);
  net::SegmentHeader seg;
  seg.tag = seg_in.U64();
  seg.seq = seg_in.U64();
  seg.unit = seg_in.U32();
  seg.desc = seg_in.U32();
  fuzz::CheckSegmentRoundTrip(seg, limit);
  return 0;
}
