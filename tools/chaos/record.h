// The record a chaos peer writes and its driver reads: one line per event, appended with one
// write(2) per line (O_APPEND), so a reader that tails the file sees whole lines or nothing of a
// line, even when the writer is SIGKILLed.
//
// A line is a word and space-separated key=value fields (values have no spaces; peer ids and hashes
// in 16 hex digits, times in ms of CLOCK_MONOTONIC, the same clock in every process here):
//   HELLO  peer=<id> rev= t=..                     the communicator exists (after Create); the
//                                                  revision the peer starts from
//   CREATE status=<code> t0=.. t1=..               a Create that failed (retried)
//   UT     status= lost= epoch= n= t0= t1=         an update_topology call
//   OP     kind=sync|ar tag=<n|sync> seq= epoch= members=<id>,<id>,.. status= lost=
//          rev= hash= state= rx= t0= t1=           one collective (hash: of the all-reduce result;
//                                                  state: of the shared state after a sync)
//   STEP   epoch= rev= state= t0= t1=              a step completed: the state's new revision and
//                                                  hash; t0 is its attempt's update_topology start
//   LEAVE  status= t=                              the peer left (SIGTERM)
//
// Thread safety: RecordWriter is not thread-safe (one owner); the parser is stateless.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace shoal::chaos {

// Appends lines to a record file.
class RecordWriter {
 public:
  RecordWriter() = default;
  ~RecordWriter();
  RecordWriter(const RecordWriter&) = delete;
  RecordWriter& operator=(const RecordWriter&) = delete;

  // Creates or truncates `path`. False if it cannot be opened.
  bool Open(const std::string& path);
  // Writes `line` and a newline in one write(2). False on error.
  bool Write(std::string line);

 private:
  int fd_ = -1;
};

// One parsed line.
struct RecordLine {
  std::string word;
  std::vector<std::pair<std::string, std::string>> fields;

  // The field's text, or empty if absent.
  std::string_view Get(std::string_view key) const;
  bool Has(std::string_view key) const;
  // Decimal and hex (16 digits) numbers; 0 if absent or malformed.
  std::uint64_t U64(std::string_view key) const;
  std::int64_t I64(std::string_view key) const;
  std::uint64_t Hex(std::string_view key) const;
  // A comma-separated list of hex ids.
  std::vector<std::uint64_t> HexList(std::string_view key) const;
};

// Splits one line (without its newline). False if it has no word.
bool ParseRecordLine(std::string_view line, RecordLine* out);

std::string HexId(std::uint64_t id);

// Reads a record file incrementally: each Poll returns the whole lines appended since the last.
class RecordTail {
 public:
  explicit RecordTail(std::string path) : path_(std::move(path)) {}
  // Appends to *lines the complete lines written since the previous call.
  void Poll(std::vector<std::string>* lines);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::uint64_t offset_ = 0;
  std::string partial_;  // bytes of a line whose newline has not arrived yet
};

}  // namespace shoal::chaos
