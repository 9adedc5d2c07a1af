// Fuzz target: DecodePayload (net/codec.h) for every message type.
//
// Input: one byte that picks the type (kPayloadTypes, modulo its size), then the payload.
//
// Properties, for every type:
// - Allocation: the decode allocates no single block larger than LargestAllocationMax(type,
//   payload bytes) and no more than TotalAllocationMax in all (wire_rules.h): a count from the
//   wire sizes nothing before it was checked against its maximum and the bytes left.
// - A rejection is SHOAL_ERR_PROTOCOL with a message.
// - An accepted payload holds a message of that type that keeps every rule of the wire format's
//   tables (BrokenRule), and it has exactly one encoding: Encode gives the frame header for that
//   type and length followed by the very same payload bytes; DecodeFrame of that frame accepts it.
// - A payload is consumed exactly: the same payload one byte shorter, or with one byte more, is
//   rejected.
// - DataSegment is not a message: DecodePayload rejects it whatever the bytes.
#include <cstring>

#include "fuzz_support.h"
#include "wire_rules.h"

namespace shoal::fuzz {
namespace {

constexpr std::size_t kTypeCount = sizeof kPayloadTypes / sizeof kPayloadTypes[0];

std::string Name(net::MsgType t) { return net::MsgTypeName(t); }

void CheckEncoding(net::MsgType type, const std::vector<std::uint8_t>& payload,
                   const net::Message& m) {
  FUZZ_REQUIRE(net::TypeOf(m) == type, "decoded " + Name(net::TypeOf(m)) + " as " + Name(type));
  const std::string broken = BrokenRule(m);
  FUZZ_REQUIRE(broken.empty(), Name(type) + " decoded against the rules: " + broken);

  std::vector<std::uint8_t> frame;
  net::Encode(m, &frame);
  FUZZ_REQUIRE(frame.size() == net::kHeaderBytes + payload.size(),
               Name(type) + " re-encodes to another length");
  Input head(frame.data(), net::kHeaderBytes);
  FUZZ_REQUIRE(head.U32() == net::kMagic && head.U16() == net::kProtocolVersion &&
                   head.U16() == static_cast<std::uint16_t>(type) && head.U32() == payload.size(),
               Name(type) + ": Encode wrote a header that does not describe the payload");
  FUZZ_REQUIRE(std::equal(payload.begin(), payload.end(), frame.begin() + net::kHeaderBytes),
               Name(type) + " has a second encoding");

  net::Message again;
  Status s = net::DecodeFrame(frame.data(), frame.size(), &again);
  FUZZ_REQUIRE(s.ok(), Name(type) + ": DecodeFrame refuses what Encode wrote: " + s.ToString());
  FUZZ_REQUIRE(net::TypeOf(again) == type, "DecodeFrame changed the type");
}

void CheckExactLength(net::MsgType type, const std::vector<std::uint8_t>& payload) {
  net::Message m;
  if (!payload.empty()) {
    FUZZ_REQUIRE(!net::DecodePayload(type, payload.data(), payload.size() - 1, &m).ok(),
                 Name(type) + ": a truncated payload was accepted");
  }
  std::vector<std::uint8_t> longer = payload;
  longer.push_back(0);
  FUZZ_REQUIRE(!net::DecodePayload(type, longer.data(), longer.size(), &m).ok(),
               Name(type) + ": a payload with a trailing byte was accepted");
}

}  // namespace
}  // namespace shoal::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace shoal;
  using namespace shoal::fuzz;
  Input in(data, size);
  const net::MsgType type = kPayloadTypes[in.U8() % kTypeCount];
  const std::vector<std::uint8_t> payload = in.Rest();

  net::Message m;
  const Status s = DecodeWithinBounds(type, payload.data(), payload.size(), &m);
  if (s.ok()) {
    CheckEncoding(type, payload, m);
    CheckExactLength(type, payload);
  } else {
    FUZZ_REQUIRE(s.code() == SHOAL_ERR_PROTOCOL && !s.message().empty(), s.ToString());
  }

  net::Message unused;
  FUZZ_REQUIRE(
      !net::DecodePayload(net::MsgType::kDataSegment, payload.data(), payload.size(), &unused).ok(),
      "DecodePayload accepted a DataSegment");
  return 0;
}
