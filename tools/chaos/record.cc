#include "tools/chaos/record.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>

namespace shoal::chaos {

RecordWriter::~RecordWriter() {
  if (fd_ >= 0) ::close(fd_);
}

bool RecordWriter::Open(const std::string& path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  return fd_ >= 0;
}

bool RecordWriter::Write(std::string line) {
  if (fd_ < 0) return false;
  line.push_back('\n');
  std::size_t done = 0;
  // A regular file takes the whole line in one write; the loop only covers EINTR.
  while (done < line.size()) {
    const ssize_t n = ::write(fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

std::string_view RecordLine::Get(std::string_view key) const {
  for (const auto& [k, v] : fields)
    if (k == key) return v;
  return {};
}

bool RecordLine::Has(std::string_view key) const {
  for (const auto& kv : fields)
    if (kv.first == key) return true;
  return false;
}

std::uint64_t RecordLine::U64(std::string_view key) const {
  std::string v(Get(key));
  return v.empty() ? 0 : std::strtoull(v.c_str(), nullptr, 10);
}

std::int64_t RecordLine::I64(std::string_view key) const {
  std::string v(Get(key));
  return v.empty() ? 0 : std::strtoll(v.c_str(), nullptr, 10);
}

std::uint64_t RecordLine::Hex(std::string_view key) const {
  std::string v(Get(key));
  return v.empty() ? 0 : std::strtoull(v.c_str(), nullptr, 16);
}

std::vector<std::uint64_t> RecordLine::HexList(std::string_view key) const {
  std::vector<std::uint64_t> out;
  std::string_view v = Get(key);
  while (!v.empty()) {
    const std::size_t comma = v.find(',');
    std::string item(v.substr(0, comma));
    if (!item.empty()) out.push_back(std::strtoull(item.c_str(), nullptr, 16));
    if (comma == std::string_view::npos) break;
    v.remove_prefix(comma + 1);
  }
  return out;
}

bool ParseRecordLine(std::string_view line, RecordLine* out) {
  out->word.clear();
  out->fields.clear();
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == ' ') i++;
    std::size_t j = i;
    while (j < line.size() && line[j] != ' ') j++;
    if (j == i) break;
    std::string_view token = line.substr(i, j - i);
    if (out->word.empty()) {
      out->word = std::string(token);
    } else {
      const std::size_t eq = token.find('=');
      if (eq != std::string_view::npos) {
        out->fields.emplace_back(std::string(token.substr(0, eq)),
                                 std::string(token.substr(eq + 1)));
      }
    }
    i = j;
  }
  return !out->word.empty();
}

std::string HexId(std::uint64_t id) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, id);
  return buf;
}

void RecordTail::Poll(std::vector<std::string>* lines) {
  std::FILE* f = std::fopen(path_.c_str(), "rb");
  if (f == nullptr) return;  // not created yet
  if (std::fseek(f, static_cast<long>(offset_), SEEK_SET) == 0) {
    char buf[65536];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
      offset_ += n;
      for (std::size_t k = 0; k < n; k++) {
        if (buf[k] == '\n') {
          lines->push_back(std::move(partial_));
          partial_.clear();
        } else {
          partial_.push_back(buf[k]);
        }
      }
    }
  }
  std::fclose(f);
}

}  // namespace shoal::chaos
