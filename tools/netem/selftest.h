// `shoal-netem selftest`: a short end-to-end check of the emulator on this machine, run by the test
// suite (ctest netem_selftest) and useful to users before trusting their figures. It brings up 3
// hosts with a one-way delay D and checks:
//   - a program started with `exec` runs in its host's namespace;
//   - TCP connect time and ping-pong round trip are at least 2D (a hard property: the forwarder
//     never releases a packet early) and not far above it (a generous bound: the machine is
//     shared);
//   - `cut` stops traffic on that link only, `heal` restores it;
//   - a 20 Mbit/s cap bounds a bulk transfer (and an uncapped one is faster);
//   - loss 20% drops some UDP datagrams, exactly as many as the forwarder counts;
//   - after `down` nothing is left: forwarder, namespaces, state, the program in the host;
//   - after SIGKILL of the forwarder its TUN devices are gone, and `cleanup` removes the rest.
// Prints one line per check and "selftest: N passed, M failed". Exit 0 if all passed, 77 (ctest's
// skip code) without root or /dev/net/tun, 1 otherwise. Cleans up on failure too: the emulator is
// stopped by its owner's destructor, or by its parent-death signal if the self-test dies.
//
// Thread safety: runs in the main thread of its own process.
#pragma once

namespace shoal::netem {

struct SelfTestOptions {
  int delay_ms = 20;
  bool verbose = false;
};

constexpr int kSelfTestSkipped = 77;

int RunSelfTest(const SelfTestOptions& options);

}  // namespace shoal::netem
