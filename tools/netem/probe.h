// Measurements between two hosts of a running emulator (`shoal-netem probe`, the self-test, the
// figures in docs/netem.md). One process plays both ends: each socket is created inside its host's
// namespace (ScopedNetns) and then used from here, so the traffic crosses the forwarder exactly as
// a program running in the hosts would, with no extra process to start or stop.
//
//   connect time  TCP connect() from `from` to `to`: SYN out, SYN-ACK back, one round trip
//   round trip    1-byte TCP ping-pong (TCP_NODELAY) over one connection: one round trip each
//   throughput    K TCP streams from `from` to `to` for T seconds; bytes received, in Mbit/s over
//                 the whole run (slow start included, like iperf3) and over its second half
//   UDP delivery  N datagrams sent at once; how many arrive (loss test)
//
// Every function takes a timeout and fails with *error (naming the step) when it passes.
// Thread safety: the functions are independent; each uses the calling thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace shoal::netem {

constexpr int kProbeStreamsMax = 64;
constexpr int kProbeSamplesMax = 10000;
constexpr int kUdpDatagramsMax = 10000;
constexpr double kProbeSecondsMax = 3600;

struct ProbeEnds {
  std::string emulator;
  int from = 0;
  int to = 1;
};

struct Throughput {
  double seconds = 0;
  std::uint64_t bytes = 0;
  double mbit_per_s = 0;
  double mbit_per_s_second_half = 0;
};

struct UdpDelivery {
  int sent = 0;
  int received = 0;
};

// Summary of samples in milliseconds: "min X median X max X".
std::string SummaryMs(std::vector<double> ms);
double MedianOf(std::vector<double> v);

bool MeasureConnectMs(const ProbeEnds& ends, int samples, std::chrono::milliseconds timeout,
                      std::vector<double>* ms, std::string* error);
bool MeasureRoundTripMs(const ProbeEnds& ends, int samples, std::chrono::milliseconds timeout,
                        std::vector<double>* ms, std::string* error);
bool MeasureThroughput(const ProbeEnds& ends, int streams, double seconds,
                       std::chrono::milliseconds connect_timeout, Throughput* result,
                       std::string* error);
// Sends `count` datagrams of 100 bytes, then waits `wait` for them.
bool MeasureUdpDelivery(const ProbeEnds& ends, int count, std::chrono::milliseconds wait,
                        UdpDelivery* result, std::string* error);

}  // namespace shoal::netem
