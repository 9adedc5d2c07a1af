#include "tools/bench/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <optional>

#include "tools/bench/config.h"

namespace shoal::bench {
namespace {

bool IsFailed(const std::map<std::string, std::string>& f) {
  auto status = f.find("status");
  auto check = f.find("check");
  return (status != f.end() && status->second == "FAILED") ||
         (check != f.end() && check->second == "FAILED");
}

std::string Get(const std::map<std::string, std::string>& f, const std::string& key) {
  auto it = f.find(key);
  return it == f.end() ? std::string() : it->second;
}

std::optional<double> GetNumber(const std::map<std::string, std::string>& f,
                                const std::string& key) {
  const std::string s = Get(f, key);
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size()) return std::nullopt;
  return v;
}

// The lines print bandwidths with 3 decimals, which leaves a WAN's 0.025 GB/s two digits: busbw is
// derived again from the time it came from (6 decimals) where the line has it.
std::optional<double> BusBandwidthFromTime(const std::map<std::string, std::string>& f,
                                           const std::string& field) {
  const char* time_key = field == "busbw_GBps"         ? "mean_s"
                         : field == "batch_busbw_GBps" ? "batch_s"
                                                       : nullptr;
  if (time_key == nullptr) return std::nullopt;
  const std::optional<double> t = GetNumber(f, time_key);
  const std::optional<double> n = GetNumber(f, "n");
  std::uint64_t bytes = 0;
  if (!t || *t <= 0 || !n || *n < 1 || !ParseBytes(Get(f, "bytes"), &bytes)) return std::nullopt;
  return static_cast<double>(bytes) / *t * BusBandwidthFactor(static_cast<int>(*n)) / 1e9;
}

// Three decimals, four below 0.1 GB/s (WAN rates: 200 Mbit/s is 0.025).
std::string FormatBandwidth(double v) {
  return v >= 0.1 || v == 0 ? fmt::format("{:.3f}", v) : fmt::format("{:.4f}", v);
}

}  // namespace

std::map<std::string, std::string> ParseFields(std::string_view line) {
  std::map<std::string, std::string> f;
  for (const std::string& token : SplitList(line)) {
    const std::size_t eq = token.find('=');
    if (eq == std::string::npos || eq == 0) continue;
    f[token.substr(0, eq)] = token.substr(eq + 1);
  }
  return f;
}

std::string Report::ColumnOf(const std::map<std::string, std::string>& f) {
  const std::string lib = Get(f, "lib");
  const std::string algo = Get(f, "algo");
  if (lib == "shoal") return "shoal:K" + Get(f, "K");
  std::string column = lib;
  if (lib == "mpi") column = Get(f, "btl") == "vader" ? "mpi(shm)" : "mpi(tcp)";
  if (!algo.empty() && algo != "default") column += ":" + algo;
  return column;
}

bool Report::IsShoalColumn(const std::string& column) { return column.rfind("shoal:", 0) == 0; }

bool Report::Add(std::string_view line) {
  if (line.rfind("lib=", 0) != 0) return false;
  std::map<std::string, std::string> f = ParseFields(line);
  long long n = 0;
  std::uint64_t bytes = 0;
  if (!ParseInt(Get(f, "n"), 0, 1 << 20, &n) || !ParseBytes(Get(f, "bytes"), &bytes)) return false;
  const RowKey row{static_cast<int>(n), bytes};
  const std::string column = ColumnOf(f);
  if (std::find(rows_.begin(), rows_.end(), row) == rows_.end()) rows_.push_back(row);
  if (std::find(columns_.begin(), columns_.end(), column) == columns_.end()) {
    // Shoal's columns first, then the peers in the order they appeared.
    if (IsShoalColumn(column)) {
      auto first_peer = std::find_if(columns_.begin(), columns_.end(),
                                     [](const std::string& c) { return !IsShoalColumn(c); });
      columns_.insert(first_peer, column);
    } else {
      columns_.push_back(column);
    }
  }
  if (IsFailed(f)) failed_count_++;
  cells_[{row, column}] = std::move(f);
  return true;
}

std::optional<Report::Cell> Report::Find(const RowKey& row, const std::string& column,
                                         const std::string& field) const {
  auto it = cells_.find({row, column});
  if (it == cells_.end()) return std::nullopt;
  if (IsFailed(it->second)) return Cell{0, true};
  std::optional<double> v = BusBandwidthFromTime(it->second, field);
  if (!v) v = GetNumber(it->second, field);
  if (!v) return std::nullopt;
  return Cell{*v, false};
}

std::string Report::SummaryTable(const std::string& field, const std::string& title) const {
  if (rows_.empty()) return {};
  std::string out = fmt::format("\n# {}\n| n | size |", title);
  for (const std::string& c : columns_) out += " " + c + " |";
  out += "\n|---|---|";
  for (std::size_t i = 0; i < columns_.size(); i++) out += "---|";
  out += "\n";
  for (const RowKey& row : rows_) {
    out += fmt::format("| {} | {} |", row.first, SizeLabel(row.second));
    for (const std::string& c : columns_) {
      const std::optional<Cell> cell = Find(row, c, field);
      out += !cell ? " - |" : cell->failed ? " FAIL |" : " " + FormatBandwidth(cell->value) + " |";
    }
    out += "\n";
  }
  return out;
}

std::string Report::PercentTable(const std::string& field, const std::string& of_field,
                                 const std::string& title) const {
  bool any = false;
  for (const auto& [key, fields] : cells_) {
    const std::optional<double> of = GetNumber(fields, of_field);
    any = any || (of && *of > 0);
  }
  if (!any) return {};
  std::string out = fmt::format("\n# {}\n| n | size |", title);
  for (const std::string& c : columns_) out += " " + c + " |";
  out += "\n|---|---|";
  for (std::size_t i = 0; i < columns_.size(); i++) out += "---|";
  out += "\n";
  for (const RowKey& row : rows_) {
    out += fmt::format("| {} | {} |", row.first, SizeLabel(row.second));
    for (const std::string& c : columns_) {
      const std::optional<Cell> cell = Find(row, c, field);
      auto it = cells_.find({row, c});
      const double of = it == cells_.end() ? 0 : GetNumber(it->second, of_field).value_or(0);
      if (!cell) {
        out += " - |";
      } else if (cell->failed) {
        out += " FAIL |";
      } else if (of <= 0) {
        out += " - |";
      } else {
        out += fmt::format(" {:.1f}% |", 100 * cell->value / of);
      }
    }
    out += "\n";
  }
  return out;
}

std::string Report::ComparisonTables(const std::string& field, const std::string& what) const {
  std::vector<std::string> shoal_columns;
  std::vector<std::string> peer_columns;
  for (const std::string& c : columns_)
    (IsShoalColumn(c) ? shoal_columns : peer_columns).push_back(c);
  if (shoal_columns.empty() || peer_columns.empty()) return {};
  std::string out;
  for (const std::string& sc : shoal_columns) {
    out += fmt::format("\n# {} vs peers: {} (x = shoal/peer, above 1 means shoal is faster)\n", sc,
                       what);
    out += "| n | size | " + sc + " |";
    for (const std::string& pc : peer_columns) out += " " + pc + " | x |";
    out += " best peer | shoal/best |\n|---|---|---|";
    for (std::size_t i = 0; i < peer_columns.size(); i++) out += "---|---|";
    out += "---|---|\n";
    for (const RowKey& row : rows_) {
      const std::optional<Cell> shoal_cell = Find(row, sc, field);
      const bool shoal_ok = shoal_cell && !shoal_cell->failed;
      const double shoal_value = shoal_ok ? shoal_cell->value : 0;
      out += fmt::format("| {} | {} | {} |", row.first, SizeLabel(row.second),
                         !shoal_cell ? "-"
                         : shoal_ok  ? FormatBandwidth(shoal_value)
                                     : "FAIL");
      std::string best_column;
      double best_value = 0;
      for (const std::string& pc : peer_columns) {
        const std::optional<Cell> cell = Find(row, pc, field);
        if (!cell || cell->failed) {
          out += fmt::format(" {} | - |", !cell ? "-" : "FAIL");
          continue;
        }
        const double v = cell->value;
        out += fmt::format(" {} | {} |", FormatBandwidth(v),
                           shoal_ok && v > 0 ? fmt::format("{:.2f}", shoal_value / v) : "-");
        if (pc.rfind("mpi(shm)", 0) != 0 && v > best_value) {
          best_value = v;
          best_column = pc;
        }
      }
      if (best_column.empty()) {
        out += " - | - |\n";
      } else {
        out += fmt::format(" {} {} | {} |\n", best_column, FormatBandwidth(best_value),
                           shoal_ok ? fmt::format("{:.2f}", shoal_value / best_value) : "-");
      }
    }
  }
  return out;
}

}  // namespace shoal::bench
