// Result lines (`key=value ...`, shoal's and the peers') and the summary tables built from them.
//
// A Report collects lines in arrival order and prints markdown tables whose rows are (n, size) and
// whose columns are "lib:algo" (shoal: "shoal:K<streams>"; Open MPI: "mpi(tcp)" or "mpi(shm)", with
// ":algo" unless the algo is "default"), like the peers' run.sh. Not thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::bench {

// The key=value fields of one line; tokens without '=' are ignored.
std::map<std::string, std::string> ParseFields(std::string_view line);

class Report {
 public:
  // Adds a result line (lines not starting with "lib=" are ignored). False if ignored.
  bool Add(std::string_view line);

  // Rows (n, size) x columns (every lib:algo seen): the value of `field` ("busbw_GBps" or
  // "batch_busbw_GBps"); "FAIL" for a failed run, "-" where nothing was measured.
  std::string SummaryTable(const std::string& field, const std::string& title) const;

  // Like SummaryTable, with each value as a percentage of the same line's `of_field` (under
  // --netem: busbw as % of cap_GBps, the per-host rate cap). Empty if no line has `of_field`.
  std::string PercentTable(const std::string& field, const std::string& of_field,
                           const std::string& title) const;

  // For each shoal column: shoal's `field` next to each peer's, the ratio shoal/peer, the best
  // peer (mpi(shm) excluded: it is not a network result) and shoal/best. Empty without peers.
  std::string ComparisonTables(const std::string& field, const std::string& what) const;

  // Number of lines that report a failure (status=FAILED or check=FAILED).
  int failed_count() const { return failed_count_; }

 private:
  struct Cell {
    double value = 0;
    bool failed = false;
  };
  using RowKey = std::pair<int, std::uint64_t>;  // (n, bytes)

  static std::string ColumnOf(const std::map<std::string, std::string>& f);
  static bool IsShoalColumn(const std::string& column);
  // The cell's value of `field`; nullopt if nothing usable was measured there.
  std::optional<Cell> Find(const RowKey& row, const std::string& column,
                           const std::string& field) const;

  std::vector<RowKey> rows_;
  std::vector<std::string> columns_;
  // (row, column) -> the line's fields; the last line wins if a cell was measured twice.
  std::map<std::pair<RowKey, std::string>, std::map<std::string, std::string>> cells_;
  int failed_count_ = 0;
};

}  // namespace shoal::bench
