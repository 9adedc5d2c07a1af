// Unit tests of the emulator's pure parts: the topology statements and the shaper's timing, caps,
// cuts, loss, jitter and reordering (driven with made-up times, no devices).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "tools/netem/emulator.h"
#include "tools/netem/forwarder.h"
#include "tools/netem/gso.h"
#include "tools/netem/shaper.h"
#include "tools/netem/topology.h"

namespace shoal::netem {
namespace {

constexpr std::int64_t kMs = 1'000'000;  // ns

Topology Parse(const std::vector<std::string>& lines) {
  Topology t;
  std::string error;
  EXPECT_TRUE(ParseTopology(lines, &t, &error)) << error;
  return t;
}

std::string ParseError(const std::vector<std::string>& lines) {
  Topology t;
  std::string error;
  EXPECT_FALSE(ParseTopology(lines, &t, &error));
  return error;
}

TEST(Topology, DefaultsThenOverrides) {
  const Topology t = Parse({"link * * delay 50ms", "host * rate 200mbit", "hosts 4",
                            "host h3 rate 20mbit", "link 0 2 delay 80ms loss 1% one-way",
                            "# a comment", "", "host 1 egress 10mbit ingress unlimited"});
  ASSERT_EQ(t.hosts, 4);
  EXPECT_EQ(t.Link(0, 1).delay_us, 50'000);
  EXPECT_EQ(t.Link(0, 2).delay_us, 80'000);
  EXPECT_EQ(t.Link(2, 0).delay_us, 50'000);  // one-way
  EXPECT_DOUBLE_EQ(t.Link(0, 2).loss, 0.01);
  EXPECT_EQ(t.host[0].egress_bps, 200'000'000);
  EXPECT_EQ(t.host[3].egress_bps, 20'000'000);
  EXPECT_EQ(t.host[3].ingress_bps, 20'000'000);
  EXPECT_EQ(t.host[1].egress_bps, 10'000'000);
  EXPECT_EQ(t.host[1].ingress_bps, 0);
}

TEST(Topology, TextRoundTrip) {
  const Topology t =
      Parse({"hosts 3", "mtu 9000", "seed 42", "link * * delay 1.5ms jitter 250us",
             "link 1 2 loss 0.3% reorder 0.01 reorder-gap 2ms", "host 2 rate 1.5gbit queue 30ms"});
  Topology back;
  std::string error;
  ASSERT_TRUE(ParseTopology(SplitLines(TopologyText(t)), &back, &error)) << error;
  EXPECT_EQ(back, t);
}

TEST(Topology, ErrorsNameTheProblem) {
  EXPECT_NE(ParseError({"link * * delay 5ms"}).find("number of hosts"), std::string::npos);
  EXPECT_NE(ParseError({"hosts 2", "hosts 3"}).find("twice"), std::string::npos);
  EXPECT_NE(ParseError({"hosts 65"}).find("1..64"), std::string::npos);
  EXPECT_NE(ParseError({"hosts 2", "link 0 2 delay 1ms"}).find("statement 2"), std::string::npos);
  EXPECT_NE(ParseError({"hosts 2", "link 0 0 delay 1ms"}).find("itself"), std::string::npos);
  EXPECT_NE(ParseError({"hosts 2", "link 0 1 delay 5"}).find("delay"), std::string::npos);
  EXPECT_NE(ParseError({"hosts 2", "link 0 1 delay 11s"}).find("delay"), std::string::npos);
  EXPECT_NE(ParseError({"hosts 2", "host 0 rate 10mbps"}).find("bad rate"), std::string::npos);
  EXPECT_NE(ParseError({"hosts 2", "link 0 1 loss 120%"}).find("loss"), std::string::npos);
  EXPECT_NE(ParseError({"hosts 2", "link 0 1 colour red"}).find("unknown key"), std::string::npos);
  EXPECT_NE(ParseError({"hosts 2", "host 0 rate"}).find("needs a value"), std::string::npos);
  EXPECT_NE(ParseError({"hosts 2", "mtu 100"}).find("mtu"), std::string::npos);
}

TEST(Topology, LiveStatementsRefuseGlobals) {
  Topology t = Parse({"hosts 2"});
  std::string error;
  EXPECT_FALSE(ApplyStatement("hosts 3", &t, &error));
  EXPECT_TRUE(ApplyStatement("link 0 1 delay 7ms", &t, &error)) << error;
  EXPECT_EQ(t.Link(1, 0).delay_us, 7000);
}

TEST(Topology, Values) {
  std::int64_t v = 0;
  double p = 0;
  EXPECT_TRUE(ParseRateBps("1.5mbit/s", &v));
  EXPECT_EQ(v, 1'500'000);
  EXPECT_TRUE(ParseRateBps("0", &v));
  EXPECT_EQ(v, 0);
  EXPECT_FALSE(ParseRateBps("1bit", &v));  // below kRateMinBps
  EXPECT_FALSE(ParseRateBps("200", &v));   // a rate needs its unit
  EXPECT_TRUE(ParseDurationUs("250us", kDelayMaxUs, &v));
  EXPECT_EQ(v, 250);
  EXPECT_FALSE(ParseDurationUs("-1ms", kDelayMaxUs, &v));
  EXPECT_TRUE(ParseProbability("0.5%", &p));
  EXPECT_DOUBLE_EQ(p, 0.005);
  EXPECT_EQ(HostOfAddress(HostAddress(5), 6), 5);
  EXPECT_EQ(HostOfAddress(HostAddress(6), 6), -1);
  EXPECT_EQ(HostAddressText(0), "10.77.0.1");
  EXPECT_TRUE(ValidEmulatorName("selftest-123"));
  EXPECT_FALSE(ValidEmulatorName("../x"));
  EXPECT_FALSE(ValidEmulatorName(""));
}

TEST(Topology, AutomaticQueueIsTheLongestRoundTrip) {
  const Topology t =
      Parse({"hosts 3", "link * * delay 5ms", "link 0 2 delay 40ms one-way", "host 1 queue 7ms"});
  EXPECT_EQ(QueueLimitUs(t, 0), 45'000);  // 0 -> 2 -> 0
  EXPECT_EQ(QueueLimitUs(t, 1), 7'000);
  EXPECT_EQ(QueueLimitUs(Parse({"hosts 2"}), 0), 20'000);  // the floor
}

TEST(Shaper, DelayOnlyKeepsOrderAndTime) {
  Shaper s(Parse({"hosts 2", "link * * delay 50ms"}));
  for (int i = 0; i < 100; i++) {
    std::int64_t at = 0;
    ASSERT_EQ(s.Egress(i * 1000, 0, 1, 1500, &at), Verdict::kForward);
    EXPECT_EQ(at, i * 1000 + 50 * kMs);
    std::int64_t deliver = 0;
    ASSERT_EQ(s.Ingress(at, 1, 1500, &deliver), Verdict::kForward);
    EXPECT_EQ(deliver, at);  // uncapped ingress: no wait
  }
  EXPECT_EQ(s.link_counters(0, 1).packets, 100u);
}

TEST(Shaper, EgressCapSerializesAndDropsPastTheQueue) {
  // 12 Mbit/s: a 1500-byte packet takes 1 ms; queue 10 ms.
  Shaper s(Parse({"hosts 2", "host 0 egress 12mbit queue 10ms"}));
  std::int64_t at = 0;
  int forwarded = 0;
  for (int i = 0; i < 20; i++) {  // a burst at t = 0
    if (s.Egress(0, 0, 1, 1500, &at) == Verdict::kForward) {
      forwarded++;
      EXPECT_EQ(at, forwarded * kMs);
    }
  }
  EXPECT_EQ(forwarded, 11);  // the 11th waits exactly 10 ms; the 12th would wait 11
  EXPECT_EQ(s.host_counters(0).dropped_egress_queue, 9u);
  // The other direction is not capped.
  ASSERT_EQ(s.Egress(0, 1, 0, 1500, &at), Verdict::kForward);
  EXPECT_EQ(at, 0);
}

TEST(Shaper, IngressCapSerializesArrivalsFromAllLinks) {
  Shaper s(Parse({"hosts 3", "host 2 ingress 12mbit"}));
  std::int64_t d1 = 0;
  std::int64_t d2 = 0;
  ASSERT_EQ(s.Ingress(0, 2, 1500, &d1), Verdict::kForward);
  ASSERT_EQ(s.Ingress(0, 2, 1500, &d2), Verdict::kForward);
  EXPECT_EQ(d1, 1 * kMs);
  EXPECT_EQ(d2, 2 * kMs);
}

TEST(Shaper, CutDropsOneDirectionOnly) {
  Shaper s(Parse({"hosts 2"}));
  s.SetCut(0, 1, true);
  std::int64_t at = 0;
  EXPECT_EQ(s.Egress(0, 0, 1, 100, &at), Verdict::kDropCut);
  EXPECT_EQ(s.Egress(0, 1, 0, 100, &at), Verdict::kForward);
  s.SetCut(0, 1, false);
  EXPECT_EQ(s.Egress(0, 0, 1, 100, &at), Verdict::kForward);
  EXPECT_EQ(s.link_counters(0, 1).dropped_cut, 1u);
}

TEST(Shaper, LossRateAndReproducibility) {
  auto run = [] {
    Shaper s(Parse({"hosts 2", "seed 3", "link 0 1 loss 10%"}));
    std::int64_t at = 0;
    std::vector<bool> kept;
    for (int i = 0; i < 20000; i++)
      kept.push_back(s.Egress(i, 0, 1, 100, &at) == Verdict::kForward);
    return kept;
  };
  const std::vector<bool> a = run();
  EXPECT_EQ(a, run());
  const long lost = std::count(a.begin(), a.end(), false);
  EXPECT_NEAR(static_cast<double>(lost) / 20000, 0.1, 0.01);
}

TEST(Shaper, JitterStaysInBoundsAndKeepsOrder) {
  Shaper s(Parse({"hosts 2", "link * * delay 10ms jitter 5ms"}));
  std::int64_t previous = 0;
  for (int i = 0; i < 5000; i++) {
    std::int64_t at = 0;
    const std::int64_t now = i * 100'000;  // every 0.1 ms
    ASSERT_EQ(s.Egress(now, 0, 1, 100, &at), Verdict::kForward);
    EXPECT_GE(at, previous);
    EXPECT_GE(at, now + 5 * kMs);
    // Order keeping can push a packet past delay + jitter only up to the previous packet's time.
    EXPECT_LE(at, std::max(now + 15 * kMs, previous));
    previous = at;
  }
}

TEST(Shaper, ReorderedPacketsAreOvertaken) {
  Shaper s(Parse({"hosts 2", "seed 11", "link * * delay 10ms reorder 5% reorder-gap 2ms"}));
  int overtaken = 0;
  std::uint64_t reported = 0;
  std::int64_t latest = 0;
  for (int i = 0; i < 2000; i++) {
    std::int64_t at = 0;
    bool reordered = false;
    ASSERT_EQ(s.Egress(i * 100'000, 0, 1, 100, &at, &reordered), Verdict::kForward);
    if (at < latest) overtaken++;
    if (reordered) reported++;
    latest = std::max(latest, at);
  }
  EXPECT_GT(overtaken, 0);
  EXPECT_GT(s.link_counters(0, 1).reordered, 50u);
  EXPECT_EQ(reported, s.link_counters(0, 1).reordered);
}

// A TSO read as a TUN device with IFF_VNET_HDR hands it over: virtio_net_hdr (partial checksum,
// GSO TCPv4, gso_size 1448), IPv4 (id 0x1234, DF), TCP with 12 bytes of options, `payload` bytes.
std::vector<std::uint8_t> GsoRead(std::uint32_t payload, std::uint8_t tcp_flags,
                                  std::uint8_t gso_type = 1) {
  const std::uint32_t ip_bytes = 20 + 32 + payload;
  std::vector<std::uint8_t> r(kVnetHdrBytes + ip_bytes);
  r[0] = 1;  // VIRTIO_NET_HDR_F_NEEDS_CSUM
  r[1] = gso_type;
  const std::uint16_t vnet[4] = {52, 1448, 20, 16};  // hdr_len, gso_size, csum_start, csum_offset
  std::memcpy(r.data() + 2, vnet, sizeof(vnet));
  std::uint8_t* ip = r.data() + kVnetHdrBytes;
  ip[0] = 0x45;
  ip[2] = static_cast<std::uint8_t>(ip_bytes >> 8);
  ip[3] = static_cast<std::uint8_t>(ip_bytes);
  ip[4] = 0x12;
  ip[5] = 0x34;
  ip[6] = 0x40;  // DF
  ip[8] = 64;
  ip[9] = 6;
  const std::uint8_t addrs[8] = {10, 77, 0, 1, 10, 77, 0, 2};
  std::memcpy(ip + 12, addrs, 8);
  std::uint8_t* tcp = ip + 20;
  tcp[0] = 0x9c;  // ports 40000 -> 5201
  tcp[1] = 0x40;
  tcp[2] = 0x14;
  tcp[3] = 0x51;
  const std::uint8_t seq[4] = {0xff, 0xff, 0xfa, 0x00};  // wraps inside the packet
  std::memcpy(tcp + 4, seq, 4);
  tcp[12] = 8 << 4;  // 32 bytes of header
  tcp[13] = tcp_flags;
  tcp[14] = 0xff;
  for (std::uint32_t i = 0; i < payload; i++) ip[52 + i] = static_cast<std::uint8_t>(i * 7 + 3);
  return r;
}

TEST(Gso, SegmentsAreCompleteTcpPackets) {
  constexpr std::uint8_t kAck = 0x10, kPsh = 0x08, kFin = 0x01, kCwr = 0x80;
  const std::vector<std::uint8_t> read = GsoRead(3000, kAck | kPsh | kFin | kCwr);
  OffloadedPacket p;
  ASSERT_TRUE(ParseOffloaded(read, &p));
  EXPECT_TRUE(p.gso);
  EXPECT_EQ(p.segments, 3u);  // 1448 + 1448 + 104
  EXPECT_EQ(p.header_bytes, 52u);
  const std::uint32_t ip_bytes = static_cast<std::uint32_t>(read.size() - kVnetHdrBytes);
  EXPECT_EQ(SegmentIpBytes(p, 0, ip_bytes), 1500u);
  EXPECT_EQ(SegmentIpBytes(p, 2, ip_bytes), 156u);
  std::vector<std::uint8_t> payload;
  for (std::uint32_t i = 0; i < p.segments; i++) {
    std::vector<std::uint8_t> out(kVnetHdrBytes + SegmentIpBytes(p, i, ip_bytes));
    ASSERT_EQ(WriteSegment(read, p, i, out.data()), out.size());
    for (std::uint32_t b = 0; b < kVnetHdrBytes; b++) EXPECT_EQ(out[b], 0) << "no offload left";
    const std::span<const std::uint8_t> ip(out.data() + kVnetHdrBytes, out.size() - kVnetHdrBytes);
    EXPECT_TRUE(IpHeaderChecksumOk(ip)) << i;
    EXPECT_TRUE(TcpChecksumOk(ip)) << i;
    EXPECT_EQ((ip[2] << 8) | ip[3], static_cast<int>(ip.size()));
    EXPECT_EQ((ip[4] << 8) | ip[5], 0x1234 + static_cast<int>(i));
    const std::uint32_t seq = (std::uint32_t{ip[24]} << 24) | (std::uint32_t{ip[25]} << 16) |
                              (std::uint32_t{ip[26]} << 8) | ip[27];
    EXPECT_EQ(seq, 0xfffffa00u + i * 1448u);  // modulo 2^32
    const std::uint8_t flags = ip[33];
    EXPECT_EQ((flags & kCwr) != 0, i == 0);
    EXPECT_EQ((flags & (kFin | kPsh)) != 0, i == 2);
    EXPECT_TRUE(flags & kAck);
    payload.insert(payload.end(), ip.begin() + 52, ip.end());
  }
  ASSERT_EQ(payload.size(), 3000u);
  for (std::uint32_t i = 0; i < 3000; i++) {
    ASSERT_EQ(payload[i], static_cast<std::uint8_t>(i * 7 + 3)) << i;
  }
  // A flipped payload bit is seen by the checksum the tests rely on.
  std::vector<std::uint8_t> out(kVnetHdrBytes + 1500);
  WriteSegment(read, p, 0, out.data());
  out[kVnetHdrBytes + 700] ^= 1;
  EXPECT_FALSE(TcpChecksumOk({out.data() + kVnetHdrBytes, 1500}));
}

TEST(Gso, ParseRefusesWhatTheEmulatorDoesNotEnable) {
  OffloadedPacket p;
  std::vector<std::uint8_t> plain = GsoRead(100, 0x10, /*gso_type=*/0);
  ASSERT_TRUE(ParseOffloaded(plain, &p));  // no GSO: one packet, itself
  EXPECT_FALSE(p.gso);
  EXPECT_EQ(p.segments, 1u);
  EXPECT_FALSE(ParseOffloaded(GsoRead(3000, 0x10, /*UDP*/ 3), &p));
  EXPECT_FALSE(ParseOffloaded(GsoRead(3000, 0x10, /*TCPv6*/ 4), &p));
  std::vector<std::uint8_t> bad = GsoRead(3000, 0x10);
  bad[kVnetHdrBytes + 3] ^= 1;  // total length disagrees with the read
  EXPECT_FALSE(ParseOffloaded(bad, &p));
  bad = GsoRead(3000, 0x10);
  bad[kVnetHdrBytes + 9] = 17;  // not TCP
  EXPECT_FALSE(ParseOffloaded(bad, &p));
  bad = GsoRead(3000, 0x10);
  std::memset(bad.data() + 4, 0, 2);  // gso_size 0
  EXPECT_FALSE(ParseOffloaded(bad, &p));
  EXPECT_FALSE(ParseOffloaded(std::span<const std::uint8_t>(bad.data(), 20), &p));
}

TEST(Lateness, Quantiles) {
  Lateness l;
  for (int i = 0; i < 99; i++) l.Add(3'000);  // 3 us: bucket [2, 4)
  l.Add(5'000'000);                           // 5 ms
  EXPECT_EQ(l.count, 100u);
  EXPECT_DOUBLE_EQ(l.QuantileUs(0.5), 4);
  EXPECT_EQ(l.max_ns, 5'000'000);
}

TEST(Emulator, StartReportsAnUnusableBinary) {
  Emulator::Options options;
  options.name = "unit-no-binary";
  options.netem_bin = "/nonexistent/shoal-netem";
  options.topology = Parse({"hosts 2"});
  std::unique_ptr<Emulator> emu;
  std::string error;
  EXPECT_FALSE(Emulator::Start(options, &emu, &error));
  EXPECT_EQ(emu, nullptr);
  EXPECT_NE(error.find("exited without reporting"), std::string::npos) << error;
  options.name = "Not/A/Name";
  EXPECT_FALSE(Emulator::Start(options, &emu, &error));
  EXPECT_NE(error.find("bad emulator name"), std::string::npos) << error;
}

}  // namespace
}  // namespace shoal::netem
