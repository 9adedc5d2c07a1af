// Fuzz target: whole frames as a connection reads them (DecodeHeader, then DecodePayload or
// DecodeSegmentHeader), and DecodeFrame (net/codec.h).
//
// Input: a byte stream, read as a control connection's reader reads it: a 12-byte header checked
// with the control limit (kSyncPayloadBytesMax), then its payload; the stream ends at the first
// frame that does not decode or is cut short (the connection would be closed there).
//
// Properties:
// - Every frame that decodes is the one encoding of its message: Encode gives back exactly the
//   frame's bytes (for a DataSegment: EncodeSegmentHead gives back its 36-byte head), and the
//   message keeps the wire format's rules (BrokenRule).
// - DecodeFrame on one frame's bytes agrees with the reader: it accepts exactly the frames whose
//   header and payload decode, and gives the same message.
// - DecodeFrame on the whole input accepts it exactly when the input is one control frame that
//   decodes, nothing more (a frame length that differs from its header's is an error).
// - Allocation per frame within the bounds of wire_rules.h, as for codec_payload_fuzz.
#include <cstring>

#include "fuzz_support.h"
#include "wire_rules.h"

namespace shoal::fuzz {
namespace {

std::vector<std::uint8_t> Encoded(const net::Message& m) {
  std::vector<std::uint8_t> bytes;
  net::Encode(m, &bytes);
  return bytes;
}

// Decodes one frame of `frame_bytes` whose header `h` was accepted; true if it decoded.
bool CheckOneFrame(const net::FrameHeader& h, const std::uint8_t* frame, std::size_t frame_bytes) {
  const std::uint8_t* payload = frame + net::kHeaderBytes;
  net::Message direct;
  Status whole = net::DecodeFrame(frame, frame_bytes, &direct);
  if (h.type == net::MsgType::kDataSegment) {
    FUZZ_REQUIRE(!whole.ok(), "DecodeFrame accepted a DataSegment as a message");
    net::SegmentHeader seg = net::DecodeSegmentHeader(payload);
    std::uint8_t head[net::kHeaderBytes + net::kSegmentHeaderBytes];
    net::EncodeSegmentHead(seg, h.payload_bytes - net::kSegmentHeaderBytes, head);
    FUZZ_REQUIRE(std::memcmp(head, frame, sizeof head) == 0, "DataSegment head re-encodes apart");
    return true;
  }
  net::Message m;
  const Status s = DecodeWithinBounds(h.type, payload, h.payload_bytes, &m);
  FUZZ_REQUIRE(whole.ok() == s.ok(), "DecodeFrame and the reader disagree on one frame: " +
                                         whole.ToString() + " / " + s.ToString());
  if (!s.ok()) return false;
  const std::string broken = BrokenRule(m);
  FUZZ_REQUIRE(broken.empty(), "decoded against the rules: " + broken);
  const std::vector<std::uint8_t> again = Encoded(m);
  FUZZ_REQUIRE(again.size() == frame_bytes && std::memcmp(again.data(), frame, frame_bytes) == 0,
               std::string(net::MsgTypeName(h.type)) + " frame has a second encoding");
  FUZZ_REQUIRE(Encoded(direct) == again, "DecodeFrame decoded another message");
  return true;
}

}  // namespace
}  // namespace shoal::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace shoal;
  std::size_t pos = 0;
  std::size_t frames = 0;
  bool first_is_whole_message = false;
  while (size - pos >= net::kHeaderBytes) {
    net::FrameHeader h;
    if (!net::DecodeHeader(data + pos, limits::kSyncPayloadBytesMax, &h).ok()) break;
    if (size - pos - net::kHeaderBytes < h.payload_bytes) break;  // cut short
    const std::size_t frame_bytes = net::kHeaderBytes + h.payload_bytes;
    const bool decoded = fuzz::CheckOneFrame(h, data + pos, frame_bytes);
    if (frames == 0) {
      first_is_whole_message =
          decoded && h.type != net::MsgType::kDataSegment && frame_bytes == size;
    }
    frames++;
    if (!decoded) break;
    pos += frame_bytes;
  }
  net::Message m;
  const bool whole = net::DecodeFrame(data, size, &m).ok();
  FUZZ_REQUIRE(whole == first_is_whole_message,
               "DecodeFrame on the whole input disagrees with reading it frame by frame");
  return 0;
}
