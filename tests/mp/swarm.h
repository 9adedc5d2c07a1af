// A shoal group of real processes for the multi-process tests (tests/mp): one shoal-coord on
// 127.0.0.1 with an OS-chosen port, and peer processes of a given binary (shoal_test_peer,
// shoal_sync_peer, ...) that print one "WORD key=value ..." line per event on stdout.
//
//   Line / ParseLines   the event lines of a peer's stdout (library log lines are skipped).
//   Swarm               starts the coordinator in its constructor and peers on demand; waits on
//                       their output with a deadline; every process is killed and reaped by its
//                       ChildProcess destructor, also when an assertion fails.
//
// Waits poll the peers' output files with a short bounded pause between reads (the peers print as
// they go); none of them sleeps to synchronise.
//
// Thread safety: none; a Swarm belongs to one test thread. Header-only. Needs SHOAL_COORD_BIN.
#pragma once

#include <algorithm>
#include <fstream>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "mp/test_util.h"

namespace shoal::mp {

// One output line "WORD key=value ... [msg="free text"]" of a test peer. A msg="..." field is
// last on its line and keeps its spaces (quotes removed); other values have none.
struct Line {
  std::string raw;   // the whole line
  std::string word;
  std::map<std::string, std::string> kv;
  std::string get(const std::string& k) const {
    auto it = kv.find(k);
    return it == kv.end() ? "" : it->second;
  }
  // The value as a number; -1 when the line has no such key.
  long long num(const std::string& k) const {
    std::string v = get(k);
    return v.empty() ? -1 : std::stoll(v, nullptr, 0);
  }
  bool has(const std::string& k) const { return kv.count(k) != 0; }
};

// The event lines of `text`: those whose first word is one the test peers print.
inline std::vector<Line> ParseLines(const std::string& text) {
  static const std::set<std::string> kWords = {"READY", "MEMBER", "START", "RESULT", "LEFT",
                                               "DONE",  "ERROR",  "SYNCSTART", "SYNC",
                                               "ARSTART", "ALLREDUCE"};
  std::vector<Line> out;
  std::istringstream in(text);
  std::string raw;
  while (std::getline(in, raw)) {
    std::istringstream words(raw);
    Line l;
    if (!(words >> l.word)) continue;
    if (kWords.count(l.word) == 0) continue;  // log lines
    l.raw = raw;
    std::string w;
    while (words >> w) {
      if (w.rfind("msg=\"", 0) == 0) {  // the rest of the line
        std::string rest = raw.substr(raw.find(" msg=\"") + 6);
        if (!rest.empty() && rest.back() == '"') rest.pop_back();
        l.kv["msg"] = rest;
        break;
      }
      auto eq = w.find('=');
      if (eq != std::string::npos) l.kv[w.substr(0, eq)] = w.substr(eq + 1);
    }
    out.push_back(std::move(l));
  }
  return out;
}

inline bool Exited0(int status) {
  return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

class Swarm {
 public:
  // Starts the coordinator (extra_coord_args are appended to its command line). Peers are started
  // from `peer_bin`.
  explicit Swarm(std::string peer_bin, std::vector<std::string> extra_coord_args = {})
      : peer_bin_(std::move(peer_bin)), coord_args_(std::move(extra_coord_args)) {
    // Tests form their groups at once unless they ask for shoal-coord's startup hold.
    if (std::find(coord_args_.begin(), coord_args_.end(), "--startup-hold-ms") ==
        coord_args_.end()) {
      coord_args_.insert(coord_args_.end(), {"--startup-hold-ms", "0"});
    }
    StartCoordinator(0);
  }

  // Starts another coordinator (a standby) with `args`; returns its port. It lives as long as the
  // swarm; its stderr goes to standby<k>.err.
  std::uint16_t StartStandby(std::vector<std::string> args) {
    int k = static_cast<int>(standbys_.size());
    standbys_.push_back(std::make_unique<ChildProcess>());
    std::string port_file = dir_.path() + "/standby" + std::to_string(k) + ".port";
    std::vector<std::string> argv = {SHOAL_COORD_BIN, "--host", "127.0.0.1", "--port", "0",
                                     "--port-file", port_file, "--log-level", "info"};
    argv.insert(argv.end(), args.begin(), args.end());
    Status s = standbys_.back()->Spawn(argv, dir_.path() + "/standby.out",
                                       dir_.path() + "/standby" + std::to_string(k) + ".err");
    EXPECT_TRUE(s.ok()) << s.ToString();
    std::uint16_t port = 0;
    s = ReadPortFile(port_file, Deadline::After(10000), standbys_.back().get(), &port);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return port;
  }

  // SIGKILLs the coordinator and waits until it is gone.
  void KillCoordinator() {
    auto st = coord_->Signal(SIGKILL, Deadline::After(10000));
    EXPECT_TRUE(st.has_value()) << "shoal-coord did not die of SIGKILL";
  }
  // Starts a new coordinator on the same port (as a supervisor would); `extra` replaces the
  // arguments given to the constructor when not empty.
  void RestartCoordinator(std::vector<std::string> extra = {}) {
    if (!extra.empty()) coord_args_ = std::move(extra);
    StartCoordinator(port_);
  }

  // Starts a peer with "--coord-port P --log-level info" and `args`; returns its index.
  int StartPeer(std::vector<std::string> args) {
    int i = static_cast<int>(peers_.size());
    std::vector<std::string> argv = {peer_bin_, "--coord-port", std::to_string(port_),
                                     "--log-level", "info"};
    argv.insert(argv.end(), args.begin(), args.end());
    peers_.push_back(std::make_unique<ChildProcess>());
    Status s = peers_.back()->Spawn(argv, OutPath(i), ErrPath(i));
    EXPECT_TRUE(s.ok()) << s.ToString();
    return i;
  }

  std::string OutPath(int i) const { return dir_.path() + "/peer" + std::to_string(i) + ".out"; }
  std::string ErrPath(int i) const { return dir_.path() + "/peer" + std::to_string(i) + ".err"; }
  // Peer i's whole stdout so far (event lines and library log lines).
  std::string Output(int i) const { return ReadWholeFile(OutPath(i)); }
  std::vector<Line> Lines(int i) const { return ParseLines(Output(i)); }
  ChildProcess& peer(int i) { return *peers_[i]; }
  int peers() const { return static_cast<int>(peers_.size()); }
  std::uint16_t port() const { return port_; }

  // Waits until `pred(lines of peer i)` holds, reading the output file again every pause_ms.
  // Returns false at the deadline or when the peer has exited without it holding.
  template <typename Pred>
  bool WaitFor(int i, Pred pred, TimeMs timeout_ms, TimeMs pause_ms = 20) {
    return WaitForOutput(i, [&](const std::string& out) { return pred(ParseLines(out)); },
                         timeout_ms, pause_ms);
  }

  // Like WaitFor, on peer i's raw stdout (for library log lines).
  template <typename Pred>
  bool WaitForOutput(int i, Pred pred, TimeMs timeout_ms, TimeMs pause_ms = 20) {
    Deadline d = Deadline::After(timeout_ms);
    while (!pred(Output(i))) {
      if (d.passed() || !peers_[i]->Running()) return pred(Output(i));
      PollOne(-1, 0, Deadline::After(pause_ms));  // a short bounded pause between reads
    }
    return true;
  }

  // Waits until every peer has printed a line that satisfies `pred`.
  template <typename Pred>
  bool WaitAllForLine(Pred pred, TimeMs timeout_ms) {
    for (int i = 0; i < peers(); i++) {
      bool seen = WaitFor(i, [&](const std::vector<Line>& ls) {
        for (const Line& l : ls) if (pred(l)) return true;
        return false;
      }, timeout_ms);
      if (!seen) return false;
    }
    return true;
  }

  // The id peer i printed in its READY line ("" before that).
  std::string IdOf(int i) const {
    for (const Line& l : Lines(i)) if (l.word == "READY") return l.get("peer");
    return "";
  }

  // Waits for peer i to exit; returns its wait status or -1.
  int WaitExit(int i, TimeMs timeout_ms) {
    auto st = peers_[i]->WaitExit(Deadline::After(timeout_ms));
    return st ? *st : -1;
  }

  std::string Diagnostics() const {
    std::string s;
    for (int i = 0; i < peers(); i++) {
      std::string out = Output(i);
      s += "--- peer " + std::to_string(i) + " stdout (tail)\n" +
           (out.size() > 4000 ? out.substr(out.size() - 4000) : out);
      s += "--- peer " + std::to_string(i) + " stderr (tail)\n";
      std::string err = ReadWholeFile(ErrPath(i));
      s += err.size() > 3000 ? err.substr(err.size() - 3000) : err;
    }
    for (int k = 0; k < coord_starts_; k++) {
      std::string c = ReadWholeFile(CoordErrPath(k));
      s += "--- coordinator " + std::to_string(k) + " stderr (tail)\n" +
           (c.size() > 3000 ? c.substr(c.size() - 3000) : c);
    }
    for (std::size_t k = 0; k < standbys_.size(); k++) {
      std::string c = ReadWholeFile(dir_.path() + "/standby" + std::to_string(k) + ".err");
      s += "--- standby " + std::to_string(k) + " stderr (tail)\n" +
           (c.size() > 3000 ? c.substr(c.size() - 3000) : c);
    }
    return s;
  }

 private:
  std::string CoordErrPath(int k) const {
    return dir_.path() + "/coord" + (k == 0 ? std::string() : std::to_string(k)) + ".err";
  }

  void StartCoordinator(std::uint16_t port) {
    int k = coord_starts_++;
    coord_ = std::make_unique<ChildProcess>();
    std::string port_file = dir_.path() + "/coord" + std::to_string(k) + ".port";
    std::vector<std::string> argv = {SHOAL_COORD_BIN, "--host", "127.0.0.1",
                                     "--port", std::to_string(port), "--port-file", port_file,
                                     "--log-level", "info"};
    argv.insert(argv.end(), coord_args_.begin(), coord_args_.end());
    Status s = coord_->Spawn(argv, dir_.path() + "/coord.out", CoordErrPath(k));
    EXPECT_TRUE(s.ok()) << s.ToString();
    std::uint16_t bound = 0;
    s = ReadPortFile(port_file, Deadline::After(10000), coord_.get(), &bound);
    EXPECT_TRUE(s.ok()) << s.ToString();
    if (port == 0) port_ = bound;
    EXPECT_EQ(bound, port_);
  }

  TempDir dir_;
  std::string peer_bin_;
  std::vector<std::string> coord_args_;
  int coord_starts_ = 0;
  std::unique_ptr<ChildProcess> coord_;
  std::vector<std::unique_ptr<ChildProcess>> standbys_;
  std::uint16_t port_ = 0;
  std::vector<std::unique_ptr<ChildProcess>> peers_;
};

// A group-secret file in the test's temporary directory (a trailing newline, which shoal-coord
// strips), for shoal-coord --secret-file.
inline std::string WriteSecretFile(const TempDir& dir, const std::string& secret) {
  std::string path = dir.path() + "/secret";
  std::ofstream(path) << secret << "\n";
  return path;
}

// The ERROR line peer i prints when its Create fails (empty if it exits without one).
inline Line CreateError(Swarm& swarm, int i, TimeMs exit_ms) {
  EXPECT_NE(swarm.WaitExit(i, exit_ms), -1) << "peer " << i << " did not exit";
  for (const Line& l : swarm.Lines(i)) {
    if (l.word == "ERROR") return l;
  }
  return Line{};
}

}  // namespace shoal::mp
