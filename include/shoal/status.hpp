// shoal::Status: the result of every C++ API call that can fail for reasons outside the program
// (a peer died, a deadline passed, input was malformed). Programmer errors are assertions.
//
// A Status is a code from shoal/types.h, the peer it names (0 if none) and a message for humans.
// Value type; thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "shoal/types.h"

namespace shoal {

using PeerId = std::uint64_t;  // a peer's id; 0 means "no peer"

class [[nodiscard]] Status {
 public:
  Status() = default;  // ok
  Status(shoal_status code, std::string message, PeerId peer = 0)
      : code_(code), peer_(peer), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == SHOAL_OK; }
  shoal_status code() const { return code_; }
  // For errors caused by a peer (lost, left, timed out): that peer's id, else 0.
  PeerId peer() const { return peer_; }
  const std::string& message() const { return message_; }

  // "peer lost (peer 1f2e...): connection reset" style text.
  std::string ToString() const;

  // Marks a status as deliberately unchecked.
  void IgnoreError() const {}

 private:
  shoal_status code_ = SHOAL_OK;
  PeerId peer_ = 0;
  std::string message_;
};

}  // namespace shoal
