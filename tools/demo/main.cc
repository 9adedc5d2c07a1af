// shoal-swarm: the main demo. A coordinator and a swarm of peers on 127.0.0.1 train step after step
// while the driver injects churn: it SIGKILLs one peer in the middle of the run, then SIGKILLs the
// coordinator and starts a new one on the same port (the peers rebuild the group in it), later
// starts a new peer that joins at a step boundary, and finally stops everyone (they leave cleanly). Each step is
// update_topology, a sync of the shared model (a joiner receives it there, from several members at
// once), an all-reduce of the step's gradient, and the same update of the model on every member.
// Every peer narrates what it sees; at the end the driver checks the promises from the peers'
// records: every result exact, every collective bit-identical on all its members, every failure
// reported with the same status and lost peer by all survivors, every failure followed by a
// successful retry, the model bit-identical on every member at every revision, and the joiner
// given the whole model. Exit 0 only if all hold.
//
//   shoal-swarm                      4 peers, 16 MiB all-reduces, kill at 3 s, coordinator kill at
//                                    4.5 s, join at 6 s, stop at 10 s
//   shoal-swarm --peers 6 --mib 64 --kill-at 2 --join-at 5 --stop-at 12
#include <fmt/format.h>
#include <xxhash.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "shoal/common/clock.h"
#include "shoal/shoal.hpp"
#include "tools/common/pattern.h"
#include "tools/common/process.h"

namespace {

using shoal::tools::Supervisor;
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_stop{false};
void OnStopSignal(int) { g_stop = true; }

struct PeerArgs {
  int coord_port = 0;
  std::string name;
  std::string record_path;
  std::size_t count = 0;
  bool joiner = false;  // starts with an empty model (revision 0) and must receive it
};

// One peer: update_topology, all-reduce, check, narrate, until SIGTERM; then leave.
int RunPeer(const PeerArgs& a) {
  std::signal(SIGTERM, OnStopSignal);
  std::signal(SIGINT, OnStopSignal);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  shoal::Options opt;
  opt.coordinator_port = static_cast<std::uint16_t>(a.coord_port);
  opt.timeout_ms = 15000;
  opt.log_level = "error";
  std::unique_ptr<shoal::Communicator> comm;
  shoal::Status s = shoal::Communicator::Create(opt, &comm);
  if (!s.ok()) {
    std::printf("%-7s cannot join: %s\n", a.name.c_str(), s.ToString().c_str());
    return 1;
  }
  std::ofstream record(a.record_path);
  record << "ID " << fmt::format("{:016x}", comm->peer_id()) << "\n" << std::flush;
  std::printf("%-7s connected as peer %016llx, waiting to be admitted\n", a.name.c_str(),
              static_cast<unsigned long long>(comm->peer_id()));
  std::vector<float> buf(a.count);
  // The shared model: the founders start from the same initial weights at revision 1; a joiner
  // starts from zeros at revision 0 and receives the group's model at its first sync.
  std::vector<float> model(a.count, 0.0f);
  shoal::SharedState state;
  state.revision = a.joiner ? 0 : 1;
  if (!a.joiner) {
    for (std::size_t i = 0; i < model.size(); i++) model[i] = static_cast<float>(i % 1000) * 1e-3f;
  }
  state.tensors.push_back({"model", SHOAL_F32, model.size(), model.data()});
  std::uint64_t last_epoch = 0;
  int k = 0, step = 0;
  while (!g_stop) {
    s = comm->UpdateTopology();
    if (!s.ok()) {
      std::printf("%-7s update_topology: %s\n", a.name.c_str(), s.ToString().c_str());
      if (s.code() == SHOAL_ERR_TIMEOUT) continue;
      return 1;
    }
    if (comm->epoch() != last_epoch) {
      std::printf("%-7s epoch %llu: rank %u of %u\n", a.name.c_str(),
                  static_cast<unsigned long long>(comm->epoch()), comm->rank(), comm->world_size());
      last_epoch = comm->epoch();
      k = 0;
    }
    shoal::SyncInfo info;
    auto ts = Clock::now();
    s = comm->SyncSharedState(&state, &info);
    double sync_ms = std::chrono::duration<double, std::milli>(Clock::now() - ts).count();
    if (!s.ok()) {
      std::printf("%-7s step %3d  model sync failed after %.1f ms: %s\n", a.name.c_str(), step,
                  sync_ms, s.ToString().c_str());
      continue;  // the next update_topology re-forms the group; the sync is retried
    }
    if (info.rx_bytes > 0) {
      std::printf("%-7s step %3d  received %.1f MiB of the model (revision %llu) from %zu peers in "
                  "%.1f ms\n", a.name.c_str(), step, info.rx_bytes / 1048576.0,
                  static_cast<unsigned long long>(state.revision), info.rx_from.size(), sync_ms);
      record << fmt::format("SYNCED {} {}\n", state.revision, info.rx_bytes) << std::flush;
    }
    std::uint32_t n = comm->world_size();
    shoal::tools::FillPattern(buf.data(), buf.size(), static_cast<int>(comm->rank()));
    auto t0 = Clock::now();
    s = comm->AllReduce(buf.data(), buf.data(), buf.size(), SHOAL_F32, SHOAL_SUM);
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    std::string check = "-";
    std::uint64_t hash = 0;
    if (s.ok()) {
      check = shoal::tools::CheckSum(buf.data(), buf.size(), static_cast<int>(n)).bad_count == 0
                  ? "ok"
                  : "WRONG";
      hash = XXH3_64bits(buf.data(), buf.size() * sizeof(float));
      std::printf("%-7s step %3d  all-reduce of %zu MiB among %u: ok in %6.1f ms, result %s\n",
                  a.name.c_str(), step, buf.size() * 4 >> 20, n, ms, check.c_str());
    } else {
      std::printf("%-7s step %3d  all-reduce failed after %.1f ms: %s\n",
                  a.name.c_str(), step, ms, s.ToString().c_str());
    }
    record << fmt::format("RESULT {} {} {} {} {:016x} {:016x} {} {}\n", last_epoch, k, n,
                          static_cast<int>(s.code()), s.peer(), hash, check,
                          shoal::MonotonicNowMs())
           << std::flush;
    k++;
    if (s.ok()) {
      // The optimizer step: the same bits in, the same float operations, the same bits out.
      for (std::size_t i = 0; i < model.size(); i++) model[i] -= 1e-6f * buf[i];
      state.revision++;
      record << fmt::format("MODEL {} {:016x}\n", state.revision,
                            XXH3_64bits(model.data(), model.size() * sizeof(float)))
             << std::flush;
      step++;
    }
  }
  s = comm->Leave();
  std::printf("%-7s left the group after %d steps (%s)\n", a.name.c_str(), step,
              s.ok() ? "cleanly" : s.ToString().c_str());
  return 0;
}

struct Result {
  std::uint64_t epoch;
  int k;
  unsigned n;
  int status;
  std::string lost, hash, check;
  long long t_ms;
};

// Reads the peers' records and checks the promises. Prints a summary (with the times from the
// SIGKILL at `killed_ms` to each survivor's error and next success); true if all hold.
// `killed` is the index of the SIGKILLed peer's record (-1 if none): the one collective it may have
// completed without living to record it is not held against the others.
// `model_bytes` is the size of the shared model; with `expect_joiner`, some peer must have received
// all of it in one sync.
bool Verify(const std::vector<std::string>& records, int killed, shoal::TimeMs killed_ms,
            shoal::TimeMs coord_restart_ms, std::uint64_t model_bytes, bool expect_joiner) {
  std::vector<long long> to_error_ms, to_success_ms, restart_to_success_ms;
  std::pair<std::uint64_t, int> killed_next{0, -1};  // the op after the killed peer's last record
  std::map<std::pair<std::uint64_t, int>, std::set<std::string>> hashes, failures;
  std::map<std::pair<std::uint64_t, int>, unsigned> reporters, members;
  std::map<std::uint64_t, std::set<std::string>> models;  // revision -> model hashes seen
  std::uint64_t synced_bytes = 0;                         // the most any peer received in a sync
  int ok = 0, failed = 0, wrong = 0;
  for (std::size_t p = 0; p < records.size(); p++) {
    std::ifstream in(records[p]);
    std::string word;
    long long error_ms = -1, success_ms = -1;  // this peer, after the kill
    long long restart_success_ms = -1;         // this peer, after the coordinator's restart
    bool member_before_restart = false;        // (joiners after the restart do not count)
    while (in >> word) {
      if (word == "ID") {
        in >> word;
        continue;
      }
      if (word == "MODEL") {
        std::uint64_t revision;
        std::string hash;
        in >> revision >> hash;
        models[revision].insert(hash);
        continue;
      }
      if (word == "SYNCED") {
        std::uint64_t revision, bytes;
        in >> revision >> bytes;
        synced_bytes = std::max(synced_bytes, bytes);
        continue;
      }
      Result r;
      in >> r.epoch >> r.k >> r.n >> r.status >> r.lost >> r.hash >> r.check >> r.t_ms;
      auto key = std::make_pair(r.epoch, r.k);
      if (static_cast<int>(p) == killed) killed_next = {r.epoch, r.k + 1};
      if (r.status == SHOAL_OK) {
        ok++;
        if (r.check != "ok") wrong++;
        hashes[key].insert(r.hash);
        reporters[key]++;
        members[key] = r.n;
        if (error_ms >= 0 && success_ms < 0) success_ms = r.t_ms - killed_ms;
        if (coord_restart_ms > 0 && r.t_ms < coord_restart_ms) member_before_restart = true;
        if (member_before_restart && r.t_ms >= coord_restart_ms && restart_success_ms < 0) {
          restart_success_ms = r.t_ms - coord_restart_ms;
        }
      } else {
        failed++;
        failures[key].insert(std::to_string(r.status) + "/" + r.lost);
        if (killed_ms > 0 && r.t_ms >= killed_ms && error_ms < 0) error_ms = r.t_ms - killed_ms;
      }
    }
    if (error_ms >= 0) to_error_ms.push_back(error_ms);
    if (success_ms >= 0) to_success_ms.push_back(success_ms);
    if (restart_success_ms >= 0) restart_to_success_ms.push_back(restart_success_ms);
  }
  int diverged = 0, partial = 0, disagreed = 0;
  for (auto& [key, set] : hashes) {
    if (set.size() != 1) diverged++;
    bool excused = key == killed_next && reporters[key] + 1 == members[key];
    if (reporters[key] != members[key] && !excused) partial++;
  }
  for (auto& [key, set] : failures) {
    if (set.size() != 1) disagreed++;
    if (hashes.count(key)) disagreed++;  // one member succeeded where another failed
  }
  std::printf("\nswarm summary: %d successful all-reduce results, %d failed (retried), %d wrong, "
              "%d collectives with differing bits, %d with a missing member, %d failures on which "
              "survivors disagreed\n",
              ok, failed, wrong, diverged, partial, disagreed);
  auto list = [](const std::vector<long long>& v) {
    std::string out;
    for (long long x : v) out += (out.empty() ? "" : ", ") + std::to_string(x) + " ms";
    return out.empty() ? std::string("none") : out;
  };
  if (killed_ms > 0) {
    std::printf("after the SIGKILL: survivors' error at %s; their next successful all-reduce at %s\n",
                list(to_error_ms).c_str(), list(to_success_ms).c_str());
  }
  if (coord_restart_ms > 0) {
    std::printf("after the coordinator's SIGKILL and restart: the members' next successful "
                "all-reduce at %s after the new coordinator started\n",
                list(restart_to_success_ms).c_str());
  }
  int model_diverged = 0;
  for (auto& [revision, set] : models) model_diverged += set.size() != 1;
  std::printf("shared model: %zu revisions, %d with differing bits across members; the most one "
              "peer received in a sync: %.1f MiB (the whole model is %.1f MiB)\n",
              models.size(), model_diverged, synced_bytes / 1048576.0,
              model_bytes / 1048576.0);
  bool joiner_fed = !expect_joiner || synced_bytes == model_bytes;
  return ok > 0 && wrong == 0 && diverged == 0 && partial == 0 && disagreed == 0 &&
         model_diverged == 0 && !models.empty() && joiner_fed;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"shoal-swarm: a local swarm of peers with churn (see the file header)"};
  int peers = 4;
  double mib = 16, kill_at_s = 3, coord_kill_at_s = 4.5, join_at_s = 6, stop_at_s = 10;
  std::string coord_bin;
  bool peer_mode = false;
  PeerArgs pa;
  app.add_option("--peers", peers, "peers at the start")->check(CLI::Range(2, 16));
  app.add_option("--mib", mib, "all-reduce size in MiB (f32)")->check(CLI::Range(0.001, 1024.0));
  app.add_option("--kill-at", kill_at_s, "seconds until one peer is SIGKILLed (0: never)");
  app.add_option("--coord-kill-at", coord_kill_at_s,
                 "seconds until the coordinator is SIGKILLed and restarted 300 ms later on the "
                 "same port (0: never)");
  app.add_option("--join-at", join_at_s, "seconds until a new peer is started (0: never)");
  app.add_option("--stop-at", stop_at_s, "seconds until everyone is stopped");
  app.add_option("--coord-bin", coord_bin, "path of shoal-coord (default: next to this program)");
  app.add_flag("--peer", peer_mode)->group("");  // internal: run as one peer
  app.add_option("--coord-port", pa.coord_port)->group("");
  app.add_option("--name", pa.name)->group("");
  app.add_option("--record", pa.record_path)->group("");
  app.add_option("--count", pa.count)->group("");
  app.add_flag("--joiner", pa.joiner)->group("");
  CLI11_PARSE(app, argc, argv);
  if (peer_mode) return RunPeer(pa);

  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::string self = shoal::tools::SelfExecutablePath();
  if (coord_bin.empty()) coord_bin = (std::filesystem::path(self).parent_path() / "../coord/shoal-coord").lexically_normal().string();
  if (!shoal::tools::IsExecutableFile(coord_bin)) {
    std::fprintf(stderr, "shoal-coord not found at %s (use --coord-bin)\n", coord_bin.c_str());
    return 2;
  }
  Supervisor sup;
  shoal::tools::TempDir dir;
  std::string error;
  if (!dir.Create("shoal-swarm-", &error)) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 2;
  }
  auto start = Clock::now();
  auto at = [&](double s) { return start + std::chrono::milliseconds(static_cast<long>(s * 1000)); };
  std::string port_file = dir.path() + "/coord.port";
  pid_t coord_pid;
  if (!sup.Spawn({"coordinator", {coord_bin, "--port", "0", "--port-file", port_file, "--log-level", "warn", "--startup-hold-ms", "0"}, "", dir.path() + "/coord.log"}, &coord_pid, &error)) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 2;
  }
  int port = 0;
  while (port == 0) {
    std::ifstream in(port_file);
    if (in >> port) break;
    if (!sup.Running(coord_pid) || Clock::now() > start + std::chrono::seconds(10) ||
        !sup.SleepUntil(Clock::now() + std::chrono::milliseconds(20))) {
      std::fprintf(stderr, "shoal-coord did not start:\n%s\n", shoal::tools::TailOfFile(dir.path() + "/coord.log", 10).c_str());
      return 2;
    }
  }
  std::printf("driver  coordinator listening on 127.0.0.1:%d; starting %d peers, %.0f MiB f32 all-reduces\n", port, peers, mib);
  std::size_t count = static_cast<std::size_t>(mib * 1048576 / 4);
  std::vector<pid_t> pids;
  std::vector<std::string> records;
  auto start_peer = [&](const std::string& name, bool joiner) {
    std::string record = dir.path() + "/" + name + ".record";
    pid_t pid;
    std::vector<std::string> argv = {self, "--peer", "--coord-port", std::to_string(port), "--name", name, "--record", record, "--count", std::to_string(count)};
    if (joiner) argv.push_back("--joiner");
    if (!sup.Spawn({name, argv, "", ""}, &pid, &error)) {
      std::fprintf(stderr, "%s\n", error.c_str());
      return false;
    }
    pids.push_back(pid);
    records.push_back(record);
    return true;
  };
  for (int i = 0; i < peers; i++) {
    if (!start_peer("peer" + std::to_string(i), false)) return 2;
  }
  bool killed = kill_at_s <= 0, joined = join_at_s <= 0;
  bool coord_killed = coord_kill_at_s <= 0, coord_restarted = coord_killed;
  shoal::TimeMs killed_ms = 0, coord_restart_ms = 0;
  while (Clock::now() < at(stop_at_s)) {
    if (!coord_killed && Clock::now() >= at(coord_kill_at_s)) {
      std::printf("driver  >>> SIGKILL the coordinator (pid %d); a new one starts on port %d in "
                  "300 ms, as a supervisor would start it\n", coord_pid, port);
      ::kill(coord_pid, SIGKILL);
      coord_killed = true;
    }
    if (!coord_restarted && Clock::now() >= at(coord_kill_at_s + 0.3)) {
      // The peers rebuild the group in the new coordinator from what they report.
      if (!sup.Spawn({"coordinator", {coord_bin, "--port", std::to_string(port), "--log-level", "warn"}, "", dir.path() + "/coord2.log"}, &coord_pid, &error)) {
        std::fprintf(stderr, "%s\n", error.c_str());
        return 2;
      }
      coord_restart_ms = shoal::MonotonicNowMs();
      coord_restarted = true;
    }
    if (!killed && Clock::now() >= at(kill_at_s)) {
      std::printf("driver  >>> SIGKILL peer1 (pid %d) in the middle of the run\n", pids[1]);
      ::kill(pids[1], SIGKILL);
      killed_ms = shoal::MonotonicNowMs();
      killed = true;
    }
    if (!joined && Clock::now() >= at(join_at_s)) {
      std::printf("driver  >>> starting peer%d: it joins at the next step boundary\n", peers);
      if (!start_peer("peer" + std::to_string(peers), true)) return 2;
      joined = true;
    }
    double next = stop_at_s;
    if (!killed) next = std::min(next, kill_at_s);
    if (!coord_killed) next = std::min(next, coord_kill_at_s);
    if (!coord_restarted) next = std::min(next, coord_kill_at_s + 0.3);
    if (!joined) next = std::min(next, join_at_s);
    Supervisor::Event ev = sup.Wait(at(next));
    if (ev == Supervisor::Event::kInterrupted) break;
  }
  std::printf("driver  >>> stopping the swarm (SIGTERM: every peer leaves cleanly)\n");
  for (pid_t pid : pids) {
    if (sup.Running(pid)) ::kill(pid, SIGTERM);
  }
  for (pid_t pid : pids) sup.Stop(pid, std::chrono::milliseconds(20000));  // waits; SIGKILL late
  sup.StopAll(std::chrono::milliseconds(5000));                              // the coordinator
  bool good = Verify(records, killed_ms > 0 ? 1 : -1, killed_ms, coord_restart_ms,
                     count * sizeof(float), join_at_s > 0 && join_at_s < stop_at_s);
  std::printf("%s\n", good ? "PASS: every result exact and bit-identical on all members; every "
                             "failure agreed by all survivors; the model identical everywhere and "
                             "the joiner given all of it"
                           : "FAIL: see the summary above");
  return good ? 0 : 1;
}
