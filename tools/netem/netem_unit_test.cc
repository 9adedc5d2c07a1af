// Unit tests of the emulator's pure parts: the topology statements and the shaper's timing, caps,
// cuts, loss, jitter and reordering (driven with made-up times, no devices).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "tools/netem/emulator.h"
#include "tools/netem/forwarder.h"
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
  std::int64_t latest = 0;
  for (int i = 0; i < 2000; i++) {
    std::int64_t at = 0;
    ASSERT_EQ(s.Egress(i * 100'000, 0, 1, 100, &at), Verdict::kForward);
    if (at < latest) overtaken++;
    latest = std::max(latest, at);
  }
  EXPECT_GT(overtaken, 0);
  EXPECT_GT(s.link_counters(0, 1).reordered, 50u);
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
