// shoal-chaos: a coordinator and a changing set of peers train over an emulated internet while
// the driver injects faults (peer kills and joins, link cuts, throttling, loss, lag, SIGSTOP past
// the deadlines, coordinator restarts) and checks every step that the members agree and every
// result is exact (driver.h, checker.h; docs/chaos.md). Needs root and /dev/net/tun (exit 77
// without them).
//
//   shoal-chaos --seconds 60 --seed 1          the suite's short run (ctest chaos_short)
//   shoal-chaos --seconds 1800                 a soak with a random seed (printed for replay)
//   shoal-chaos --kinds kill,stop --peers 4    only some fault kinds
#include <CLI/CLI.hpp>
#include <filesystem>
#include <sstream>

#include "tools/chaos/driver.h"
#include "tools/chaos/peer.h"
#include "tools/common/process.h"
#include "tools/netem/emulator.h"

namespace {

// Sanitizer builds run several times slower: smaller tensors and a wider hang margin by default,
// so the short run stays about as long and checks the same things.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

std::vector<std::string> SplitCommas(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  shoal::chaos::DriverConfig d;
  if (kSanitized) {
    d.large_count = 8192;
    d.state_count = 1024;
    d.hang_margin_ms = 20000;
    d.call_slack_ms = 10000;
  }
  std::string kinds;
  std::string kinds_help = "fault kinds to inject, comma-separated (default all):";
  for (const std::string& k : shoal::chaos::FaultKinds()) kinds_help += " " + k;

  CLI::App app{
      "shoal-chaos: faults against a training loop over an emulated internet, with "
      "checks at every step (docs/chaos.md)"};
  app.add_option("--seconds", d.seconds, "length of the run")
      ->check(CLI::Range(1.0, 86400.0))
      ->capture_default_str();
  app.add_option("--seed", d.seed, "seed of the fault schedule (0: a random one, printed)");
  app.add_option("--peers", d.peers, "peers at the start")
      ->check(CLI::Range(1, 32))
      ->capture_default_str();
  app.add_option("--min-peers", d.min_peers, "no kill or stop below this many live peers")
      ->check(CLI::Range(1, 32))
      ->capture_default_str();
  app.add_option("--max-peers", d.max_peers,
                 "no join above this many (also the emulator's hosts "
                 "minus one)")
      ->check(CLI::Range(1, 32))
      ->capture_default_str();
  app.add_option("--fault-min-s", d.fault_min_s, "shortest time between two faults")
      ->capture_default_str();
  app.add_option("--fault-max-s", d.fault_max_s, "longest time between two faults")
      ->capture_default_str();
  app.add_option("--kinds", kinds, kinds_help);
  app.add_option("--timeout-ms", d.timeout_ms, "the peers' call deadline")->capture_default_str();
  app.add_option("--grace-ms", d.grace_ms, "the peers' verdict grace")->capture_default_str();
  app.add_option("--heartbeat-timeout-ms", d.heartbeat_timeout_ms, "the coordinator's")
      ->capture_default_str();
  app.add_option("--barrier-timeout-ms", d.barrier_timeout_ms, "the coordinator's")
      ->capture_default_str();
  app.add_option("--segment-bytes", d.segment_bytes,
                 "the coordinator's pipelining unit (small: the multi-segment path)")
      ->check(CLI::Range(4096, 64 << 20))
      ->capture_default_str();
  app.add_option("--hang-margin-ms", d.hang_margin_ms,
                 "a peer silent for deadline + grace + this is hung")
      ->capture_default_str();
  app.add_option("--call-slack-ms", d.call_slack_ms,
                 "a call that lasts longer than deadline + grace + this overran its deadline")
      ->capture_default_str();
  app.add_option("--large", d.large_count, "elements of the large f32 all-reduce")
      ->check(CLI::Range(1, 1 << 26))
      ->capture_default_str();
  app.add_option("--state", d.state_count, "elements of the shared state's tensors")
      ->check(CLI::Range(1, 1 << 26))
      ->capture_default_str();
  app.add_option("--delay", d.delay, "one-way delay of each link, drawn per pair in this range")
      ->capture_default_str();
  app.add_option("--rate", d.rate, "every host's rate cap")->capture_default_str();
  app.add_option("--dir", d.dir,
                 "keep records and logs here (default: a temporary directory, "
                 "removed after a PASS)");
  app.add_flag("--keep", d.keep, "keep the temporary directory");
  app.add_flag("--quiet", d.quiet, "print only the summary");
  app.add_flag("!--no-stacks", d.stacks, "no gdb backtrace of a hung peer");
  app.add_flag("--strict", d.strict,
               "documented exceptions (an op a paused or cut-off member saw fail while the others "
               "committed it, a sync refusal, a lineage reset) fail the run too");
  app.add_option("--sabotage", d.sabotage,
                 "self-check of the checks, a comma-separated list: the first peer breaks each "
                 "promise once after 5 steps (result: a wrong result bit, state: a diverging "
                 "state, hang: 60 s without a call); the run must FAIL and count each")
      ->check([](const std::string& list) -> std::string {
        for (const std::string& k : SplitCommas(list)) {
          if (k != "result" && k != "state" && k != "hang") return "unknown sabotage '" + k + "'";
        }
        return "";
      });
  app.add_option("--coord-bin", d.coord_bin, "shoal-coord (default: next to this program)");
  app.add_option("--netem-bin", d.netem_bin, "shoal-netem (default: next to this program)");

  // Internal: one peer (the driver starts these inside the emulated hosts).
  bool peer_mode = false;
  shoal::chaos::PeerConfig p;
  app.add_flag("--peer", peer_mode)->group("");
  app.add_option("--coord-host", p.coord_host)->group("");
  app.add_option("--coord-port", p.coord_port)->group("");
  app.add_option("--data-host", p.data_host)->group("");
  app.add_option("--record", p.record_path)->group("");
  app.add_flag("--joiner", p.joiner)->group("");
  app.add_option("--log-level", p.log_level)->group("");
  CLI11_PARSE(app, argc, argv);

  if (peer_mode) {
    p.timeout_ms = d.timeout_ms;
    p.grace_ms = d.grace_ms;
    p.large_count = d.large_count;
    p.state_count = d.state_count;
    p.sabotage = d.sabotage;
    return shoal::chaos::RunPeer(p);
  }
  if (d.min_peers > d.max_peers || d.peers > d.max_peers || d.fault_min_s <= 0 ||
      d.fault_max_s < d.fault_min_s) {
    std::fprintf(stderr,
                 "need min-peers <= peers <= max-peers and 0 < fault-min-s <= "
                 "fault-max-s\n");
    return 64;
  }
  d.kinds = SplitCommas(kinds);
  d.self = shoal::tools::SelfExecutablePath();
  const std::filesystem::path dir = std::filesystem::path(d.self).parent_path();
  if (d.coord_bin.empty()) {
    for (const auto& c : {dir / "shoal-coord", dir / "../coord/shoal-coord"}) {
      if (shoal::tools::IsExecutableFile(c.string())) {
        d.coord_bin = c.lexically_normal().string();
        break;
      }
    }
  }
  if (!shoal::tools::IsExecutableFile(d.coord_bin)) {
    std::fprintf(stderr, "shoal-coord not found (use --coord-bin)\n");
    return 2;
  }
  if (d.netem_bin.empty()) d.netem_bin = shoal::netem::DefaultNetemBinary();
  return shoal::chaos::RunDriver(d);
}
