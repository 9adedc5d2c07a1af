// Status: the result of every operation that can fail for reasons outside the program (a peer died,
// a deadline passed, the input was malformed). Programmer errors are assertions, not statuses.
//
// A Status is a code from include/shoal/types.h, the peer it names (0 if none) and a message for
// humans. It is a value type; thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "shoal/types.h"

namespace shoal {

using PeerId = std::uint64_t;  // 0 means "no peer"

class [[nodiscard]] Status {
 public:
  Status() = default;  // ok
  Status(shoal_status code, std::string message, PeerId peer = 0)
      : code_(code), peer_(peer), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == SHOAL_OK; }
  shoal_status code() const { return code_; }
  PeerId peer() const { return peer_; }
  const std::string& message() const { return message_; }

  // "peer lost (peer 0x1f...): connection reset" style text for logs and errors.
  std::string ToString() const;

  void IgnoreError() const {}

 private:
  shoal_status code_ = SHOAL_OK;
  PeerId peer_ = 0;
  std::string message_;
};

}  // namespace shoal
