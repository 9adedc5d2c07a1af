#include "tools/bench/config.h"

#include <charconv>
#include <cmath>

namespace shoal::bench {

IterCounts ResolveIterCounts(std::uint64_t bytes, std::optional<int> iters,
                             std::optional<int> warmup, std::optional<int> batch) {
  IterCounts auto_counts;
  if (bytes <= (1u << 20)) {
    auto_counts = {50, 5, 0};
  } else if (bytes <= (16u << 20)) {
    auto_counts = {20, 3, 0};
  } else if (bytes <= (64u << 20)) {
    auto_counts = {10, 2, 0};
  } else {
    auto_counts = {5, 1, 0};
  }
  IterCounts c;
  c.iters = iters.value_or(auto_counts.iters);
  c.warmup = warmup.value_or(auto_counts.warmup);
  c.batch = batch.value_or(c.iters);
  return c;
}

bool ParseBytes(std::string_view text, std::uint64_t* bytes) {
  std::size_t i = 0;
  while (i < text.size() && ((text[i] >= '0' && text[i] <= '9') || text[i] == '.')) i++;
  if (i == 0) return false;
  const std::string number(text.substr(0, i));
  const std::string_view suffix = text.substr(i);
  double multiplier = 0;
  if (suffix.empty() || suffix == "B") {
    multiplier = 1;
  } else if (suffix == "K" || suffix == "k" || suffix == "KiB") {
    multiplier = 1024.0;
  } else if (suffix == "M" || suffix == "MiB") {
    multiplier = 1024.0 * 1024;
  } else if (suffix == "G" || suffix == "GiB") {
    multiplier = 1024.0 * 1024 * 1024;
  } else {
    return false;
  }
  char* end = nullptr;
  const double v = std::strtod(number.c_str(), &end);
  if (end != number.c_str() + number.size()) return false;
  const double total = v * multiplier;
  if (!(total >= 0) || total > 4.6e18 || total != std::floor(total)) return false;
  *bytes = static_cast<std::uint64_t>(total);
  return true;
}

std::vector<std::string> SplitList(std::string_view text) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : text) {
    if (ch == ' ' || ch == '\t' || ch == ',' || ch == '\n') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

bool ParseInt(std::string_view text, long long min, long long max, long long* value) {
  long long v = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size()) return false;
  if (v < min || v > max) return false;
  *value = v;
  return true;
}

bool ParseAutoInt(std::string_view text, std::optional<int>* value) {
  if (text == "auto") {
    value->reset();
    return true;
  }
  long long v = 0;
  if (!ParseInt(text, 0, 1000000000, &v)) return false;
  *value = static_cast<int>(v);
  return true;
}

bool ParseHostPort(std::string_view text, std::string* host, std::uint16_t* port) {
  std::string_view h;
  std::string_view p;
  if (!text.empty() && text.front() == '[') {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return false;
    h = text.substr(1, close - 1);
    p = text.substr(close + 2);
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return false;
    h = text.substr(0, colon);
    p = text.substr(colon + 1);
  }
  long long v = 0;
  if (h.empty() || !ParseInt(p, 1, 65535, &v)) return false;
  *host = std::string(h);
  *port = static_cast<std::uint16_t>(v);
  return true;
}

bool ParseCheckMode(std::string_view text, CheckMode* mode) {
  if (text == "every") {
    *mode = CheckMode::kEvery;
  } else if (text == "last") {
    *mode = CheckMode::kLast;
  } else if (text == "none") {
    *mode = CheckMode::kNone;
  } else {
    return false;
  }
  return true;
}

const char* CheckModeName(CheckMode mode) {
  switch (mode) {
    case CheckMode::kEvery:
      return "every";
    case CheckMode::kLast:
      return "last";
    case CheckMode::kNone:
      return "none";
  }
  return "?";
}

std::string SizeLabel(std::uint64_t bytes) {
  constexpr std::uint64_t kKiB = 1024;
  if (bytes >= kKiB * kKiB * kKiB && bytes % (kKiB * kKiB * kKiB) == 0)
    return std::to_string(bytes / (kKiB * kKiB * kKiB)) + "G";
  if (bytes >= kKiB * kKiB && bytes % (kKiB * kKiB) == 0)
    return std::to_string(bytes / (kKiB * kKiB)) + "M";
  if (bytes >= kKiB && bytes % kKiB == 0) return std::to_string(bytes / kKiB) + "K";
  return std::to_string(bytes) + "B";
}

}  // namespace shoal::bench
