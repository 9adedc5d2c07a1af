#include "tools/netem/topology.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string>

namespace shoal::netem {
namespace {

constexpr std::int64_t kAutoQueueMinUs = 20'000;

std::vector<std::string_view> Words(std::string_view line) {
  std::vector<std::string_view> words;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i]))) i++;
    std::size_t j = i;
    while (j < line.size() && !std::isspace(static_cast<unsigned char>(line[j]))) j++;
    if (j > i) words.push_back(line.substr(i, j - i));
    i = j;
  }
  return words;
}

std::string_view StripComment(std::string_view line) {
  const std::size_t hash = line.find('#');
  return hash == std::string_view::npos ? line : line.substr(0, hash);
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// A non-negative decimal number (digits, optional fraction) followed by a unit suffix.
bool SplitNumber(std::string_view text, double* number, std::string* unit) {
  std::size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) {
    i++;
  }
  if (i == 0) return false;
  const std::string digits(text.substr(0, i));
  char* end = nullptr;
  const double v = std::strtod(digits.c_str(), &end);
  if (end != digits.c_str() + digits.size() || !std::isfinite(v) || v < 0) return false;
  *number = v;
  *unit = Lower(text.substr(i));
  return true;
}

bool ParseInt(std::string_view text, std::int64_t min, std::int64_t max, std::int64_t* value) {
  std::int64_t v = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size() || v < min || v > max) return false;
  *value = v;
  return true;
}

// Selected hosts of a selector: all of them for -1, else the one.
std::vector<int> Selected(int ref, int hosts) {
  std::vector<int> out;
  if (ref >= 0) {
    out.push_back(ref);
  } else {
    for (int h = 0; h < hosts; h++) out.push_back(h);
  }
  return out;
}

// One parsed key-value pair of a host or link statement.
struct Setting {
  std::string key;
  std::int64_t integer;  // rates in bit/s, durations in us
  double real;           // probabilities
};

// Key-value pairs after the selectors; `flags` are words without a value ("one-way").
struct Pairs {
  std::vector<std::pair<std::string, std::string_view>> kv;
  bool one_way = false;
};

bool ParsePairs(const std::vector<std::string_view>& words, std::size_t first, Pairs* pairs,
                std::string* error) {
  for (std::size_t i = first; i < words.size(); i++) {
    const std::string key = Lower(words[i]);
    if (key == "one-way") {
      pairs->one_way = true;
      continue;
    }
    if (i + 1 >= words.size()) {
      *error = "'" + key + "' needs a value";
      return false;
    }
    pairs->kv.emplace_back(key, words[i + 1]);
    i++;
  }
  return true;
}

bool ApplyHost(const std::vector<std::string_view>& words, Topology* t, std::string* error) {
  int ref = 0;
  if (words.size() < 2 || !ParseHostRef(words[1], t->hosts, true, &ref)) {
    *error = "host: expected a host index, hI or *, got '" +
             std::string(words.size() < 2 ? "" : words[1]) +
             "' (hosts: " + std::to_string(t->hosts) + ")";
    return false;
  }
  Pairs pairs;
  if (!ParsePairs(words, 2, &pairs, error)) return false;
  if (pairs.one_way) {
    *error = "host: one-way applies to links";
    return false;
  }
  if (pairs.kv.empty()) {
    *error = "host: nothing to set (rate, egress, ingress, queue)";
    return false;
  }
  // Validated first, then applied to every selected host in the order written.
  std::vector<Setting> settings;
  for (const auto& [key, value] : pairs.kv) {
    Setting s{key, 0, 0};
    if (key == "rate" || key == "egress" || key == "ingress") {
      if (!ParseRateBps(value, &s.integer)) {
        *error = key + ": bad rate '" + std::string(value) +
                 "' (e.g. 200mbit, 1gbit, 0 for unlimited; between 8kbit and 100gbit)";
        return false;
      }
    } else if (key == "queue") {
      if (!ParseDurationUs(value, kQueueMaxUs, &s.integer)) {
        *error = "queue: bad duration '" + std::string(value) + "' (e.g. 100ms, 0 for automatic)";
        return false;
      }
    } else {
      *error = "host: unknown key '" + key + "' (rate, egress, ingress, queue)";
      return false;
    }
    settings.push_back(s);
  }
  for (int h : Selected(ref, t->hosts)) {
    HostParams& p = t->host[static_cast<std::size_t>(h)];
    for (const Setting& s : settings) {
      if (s.key == "rate" || s.key == "egress") p.egress_bps = s.integer;
      if (s.key == "rate" || s.key == "ingress") p.ingress_bps = s.integer;
      if (s.key == "queue") p.queue_us = s.integer;
    }
  }
  return true;
}

bool ApplyLink(const std::vector<std::string_view>& words, Topology* t, std::string* error) {
  int a = 0;
  int b = 0;
  if (words.size() < 3 || !ParseHostRef(words[1], t->hosts, true, &a) ||
      !ParseHostRef(words[2], t->hosts, true, &b)) {
    *error = "link: expected two hosts (index, hI or *; hosts: " + std::to_string(t->hosts) + ")";
    return false;
  }
  if (a >= 0 && a == b) {
    *error = "link: a host has no link to itself";
    return false;
  }
  Pairs pairs;
  if (!ParsePairs(words, 3, &pairs, error)) return false;
  if (pairs.kv.empty()) {
    *error = "link: nothing to set (delay, jitter, loss, reorder, reorder-gap)";
    return false;
  }
  std::vector<Setting> settings;
  for (const auto& [key, value] : pairs.kv) {
    Setting s{key, 0, 0};
    bool ok = true;
    if (key == "delay" || key == "jitter" || key == "reorder-gap") {
      ok = ParseDurationUs(value, kDelayMaxUs, &s.integer);
    } else if (key == "loss" || key == "reorder") {
      ok = ParseProbability(value, &s.real);
    } else {
      *error = "link: unknown key '" + key + "' (delay, jitter, loss, reorder, reorder-gap)";
      return false;
    }
    if (!ok) {
      *error = key + ": bad value '" + std::string(value) +
               "' (durations like 50ms up to 10s; probabilities like 1% or 0.01)";
      return false;
    }
    settings.push_back(s);
  }
  auto apply = [&](int from, int to) {
    LinkParams& p = t->Link(from, to);
    for (const Setting& s : settings) {
      if (s.key == "delay") p.delay_us = s.integer;
      if (s.key == "jitter") p.jitter_us = s.integer;
      if (s.key == "reorder-gap") p.reorder_gap_us = s.integer;
      if (s.key == "loss") p.loss = s.real;
      if (s.key == "reorder") p.reorder = s.real;
    }
  };
  for (int from : Selected(a, t->hosts)) {
    for (int to : Selected(b, t->hosts)) {
      if (from == to) continue;
      apply(from, to);
      if (!pairs.one_way) apply(to, from);
    }
  }
  return true;
}

}  // namespace

bool ParseDurationUs(std::string_view text, std::int64_t max_us, std::int64_t* us) {
  double v = 0;
  std::string unit;
  if (!SplitNumber(text, &v, &unit)) return false;
  double scale = 0;
  if (unit == "us") {
    scale = 1;
  } else if (unit == "ms") {
    scale = 1e3;
  } else if (unit == "s") {
    scale = 1e6;
  } else if (unit.empty() && v == 0) {
    scale = 1;
  } else {
    return false;
  }
  const double r = std::round(v * scale);
  if (r > static_cast<double>(max_us)) return false;
  *us = static_cast<std::int64_t>(r);
  return true;
}

bool ParseRateBps(std::string_view text, std::int64_t* bps) {
  if (Lower(text) == "unlimited") {
    *bps = 0;
    return true;
  }
  double v = 0;
  std::string unit;
  if (!SplitNumber(text, &v, &unit)) return false;
  if (unit.size() > 2 && unit.substr(unit.size() - 2) == "/s") unit.resize(unit.size() - 2);
  double scale = 0;
  if (unit == "bit") {
    scale = 1;
  } else if (unit == "kbit") {
    scale = 1e3;
  } else if (unit == "mbit") {
    scale = 1e6;
  } else if (unit == "gbit") {
    scale = 1e9;
  } else if (unit.empty() && v == 0) {
    scale = 1;
  } else {
    return false;  // bytes per second (tc's "mbps") are refused rather than guessed
  }
  const double r = std::round(v * scale);
  if (r != 0 && (r < static_cast<double>(kRateMinBps) || r > static_cast<double>(kRateMaxBps))) {
    return false;
  }
  *bps = static_cast<std::int64_t>(r);
  return true;
}

bool ParseProbability(std::string_view text, double* p) {
  double v = 0;
  std::string unit;
  if (!SplitNumber(text, &v, &unit)) return false;
  if (unit == "%") {
    v /= 100;
  } else if (!unit.empty()) {
    return false;
  }
  if (v > 1) return false;
  *p = v;
  return true;
}

bool ParseHostRef(std::string_view text, int hosts, bool allow_all, int* host) {
  if (text == "*") {
    if (!allow_all) return false;
    *host = -1;
    return true;
  }
  if (!text.empty() && (text[0] == 'h' || text[0] == 'H')) text.remove_prefix(1);
  std::int64_t v = 0;
  if (!ParseInt(text, 0, hosts - 1, &v)) return false;
  *host = static_cast<int>(v);
  return true;
}

bool ValidEmulatorName(std::string_view name) {
  if (name.empty() || name.size() > static_cast<std::size_t>(kNameBytesMax)) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

bool ApplyStatement(std::string_view line, Topology* topology, std::string* error) {
  const std::vector<std::string_view> words = Words(StripComment(line));
  if (words.empty()) {
    *error = "empty statement";
    return false;
  }
  const std::string keyword = Lower(words[0]);
  if (keyword == "host") return ApplyHost(words, topology, error);
  if (keyword == "link") return ApplyLink(words, topology, error);
  if (keyword == "hosts" || keyword == "mtu" || keyword == "seed") {
    *error = "'" + keyword + "' cannot change while the emulator runs";
  } else {
    *error = "unknown statement '" + keyword + "' (host, link)";
  }
  return false;
}

bool ParseTopology(const std::vector<std::string>& lines, Topology* topology, std::string* error) {
  Topology t;
  // Pass 1: the global statements, so that `hosts` may stand anywhere.
  for (std::size_t i = 0; i < lines.size(); i++) {
    const std::string where = "statement " + std::to_string(i + 1) + " '" + lines[i] + "': ";
    if (lines[i].size() > static_cast<std::size_t>(kStatementBytesMax)) {
      *error = "statement " + std::to_string(i + 1) + " is longer than " +
               std::to_string(kStatementBytesMax) + " bytes";
      return false;
    }
    const std::vector<std::string_view> words = Words(StripComment(lines[i]));
    if (words.empty()) continue;
    const std::string keyword = Lower(words[0]);
    std::int64_t v = 0;
    if (keyword == "hosts") {
      if (words.size() != 2 || !ParseInt(words[1], 1, kHostsMax, &v)) {
        *error = where + "expected 'hosts N' with N in 1.." + std::to_string(kHostsMax);
        return false;
      }
      if (t.hosts != 0 && t.hosts != v) {
        *error = where + "hosts given twice (" + std::to_string(t.hosts) + " and " +
                 std::to_string(v) + ")";
        return false;
      }
      t.hosts = static_cast<int>(v);
    } else if (keyword == "mtu") {
      if (words.size() != 2 || !ParseInt(words[1], kMtuMin, kMtuMax, &v)) {
        *error = where + "expected 'mtu N' with N in " + std::to_string(kMtuMin) + ".." +
                 std::to_string(kMtuMax);
        return false;
      }
      t.mtu = static_cast<int>(v);
    } else if (keyword == "seed") {
      if (words.size() != 2 || !ParseInt(words[1], 0, INT64_MAX, &v)) {
        *error = where + "expected 'seed N' with N >= 0";
        return false;
      }
      t.seed = static_cast<std::uint64_t>(v);
    }
  }
  if (t.hosts == 0) {
    *error = "the number of hosts is not given (--hosts N or a 'hosts N' statement)";
    return false;
  }
  t.host.assign(static_cast<std::size_t>(t.hosts), HostParams{});
  t.link.assign(static_cast<std::size_t>(t.hosts * t.hosts), LinkParams{});
  // Pass 2: hosts and links, in order.
  for (std::size_t i = 0; i < lines.size(); i++) {
    const std::vector<std::string_view> words = Words(StripComment(lines[i]));
    if (words.empty()) continue;
    const std::string keyword = Lower(words[0]);
    if (keyword == "hosts" || keyword == "mtu" || keyword == "seed") continue;
    std::string e;
    if (!ApplyStatement(lines[i], &t, &e)) {
      *error = "statement " + std::to_string(i + 1) + " '" + lines[i] + "': " + e;
      return false;
    }
  }
  *topology = std::move(t);
  return true;
}

std::string FormatDurationUs(std::int64_t us) {
  if (us == 0) return "0";
  if (us % 1'000'000 == 0) return std::to_string(us / 1'000'000) + "s";
  if (us % 1000 == 0) return std::to_string(us / 1000) + "ms";
  return std::to_string(us) + "us";
}

std::string FormatRateBps(std::int64_t bps) {
  if (bps == 0) return "unlimited";
  if (bps % 1'000'000'000 == 0) return std::to_string(bps / 1'000'000'000) + "gbit";
  if (bps % 1'000'000 == 0) return std::to_string(bps / 1'000'000) + "mbit";
  if (bps % 1000 == 0) return std::to_string(bps / 1000) + "kbit";
  return std::to_string(bps) + "bit";
}

namespace {

std::string FormatProbability(double p) {
  // The fewest digits that parse back to the same double.
  char buf[40];
  for (int digits = 1; digits <= 17; digits++) {
    std::snprintf(buf, sizeof(buf), "%.*g", digits, p);
    if (std::strtod(buf, nullptr) == p) break;
  }
  return buf;
}

}  // namespace

std::string TopologyText(const Topology& t) {
  std::string out = "hosts " + std::to_string(t.hosts) + "\nmtu " + std::to_string(t.mtu) +
                    "\nseed " + std::to_string(t.seed) + "\n";
  for (int h = 0; h < t.hosts; h++) {
    const HostParams& p = t.host[static_cast<std::size_t>(h)];
    out += "host " + std::to_string(h) + " egress " + FormatRateBps(p.egress_bps) + " ingress " +
           FormatRateBps(p.ingress_bps) + " queue " + FormatDurationUs(p.queue_us) + "\n";
  }
  for (int a = 0; a < t.hosts; a++) {
    for (int b = 0; b < t.hosts; b++) {
      if (a == b) continue;
      const LinkParams& p = t.Link(a, b);
      out += "link " + std::to_string(a) + " " + std::to_string(b) + " delay " +
             FormatDurationUs(p.delay_us) + " jitter " + FormatDurationUs(p.jitter_us) + " loss " +
             FormatProbability(p.loss) + " reorder " + FormatProbability(p.reorder) +
             " reorder-gap " + FormatDurationUs(p.reorder_gap_us) + " one-way\n";
    }
  }
  return out;
}

std::vector<std::string> SplitLines(std::string_view text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string line(text.substr(start, end - start));
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    start = end + 1;
  }
  return lines;
}

std::int64_t QueueLimitUs(const Topology& t, int host) {
  const HostParams& p = t.host[static_cast<std::size_t>(host)];
  if (p.queue_us > 0) return p.queue_us;
  std::int64_t rtt_max_us = 0;
  for (int other = 0; other < t.hosts; other++) {
    if (other == host) continue;
    const LinkParams& out = t.Link(host, other);
    const LinkParams& back = t.Link(other, host);
    rtt_max_us =
        std::max(rtt_max_us, out.delay_us + out.jitter_us + back.delay_us + back.jitter_us);
  }
  return std::max(rtt_max_us, kAutoQueueMinUs);
}

std::uint32_t HostAddress(int host) { return kSubnet | static_cast<std::uint32_t>(host + 1); }

std::string HostAddressText(int host) {
  const std::uint32_t a = HostAddress(host);
  return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 255) + "." +
         std::to_string((a >> 8) & 255) + "." + std::to_string(a & 255);
}

int HostOfAddress(std::uint32_t address, int hosts) {
  if ((address & 0xffffff00u) != kSubnet) return -1;
  const int index = static_cast<int>(address & 255u) - 1;
  return index >= 0 && index < hosts ? index : -1;
}

}  // namespace shoal::netem
