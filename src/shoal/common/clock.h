// Time for shoal: a monotonic millisecond clock and deadlines.
//
// Logic that must be testable without real time (the coordinator, the peer session) never calls
// these: it is handed `now_ms` by its I/O shell. Only the shells and the user-facing API read the
// clock. Thread-safe (stateless).
#pragma once

#include <chrono>
#include <cstdint>
#include <limits>

namespace shoal {

using TimeMs = std::int64_t;  // milliseconds on the monotonic clock

inline TimeMs MonotonicNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A point in monotonic time after which a wait gives up. Never() is a deadline that does not pass
// (used only internally; every user-facing wait has a finite one).
class Deadline {
 public:
  static Deadline After(TimeMs timeout_ms) { return Deadline(MonotonicNowMs() + timeout_ms); }
  static Deadline At(TimeMs at_ms) { return Deadline(at_ms); }
  static Deadline Never() { return Deadline(std::numeric_limits<TimeMs>::max()); }

  TimeMs at_ms() const { return at_ms_; }
  bool passed(TimeMs now_ms) const { return now_ms >= at_ms_; }
  bool passed() const { return passed(MonotonicNowMs()); }
  TimeMs remaining_ms() const {
    TimeMs r = at_ms_ - MonotonicNowMs();
    return r < 0 ? 0 : r;
  }
  std::chrono::steady_clock::time_point time_point() const {
    if (at_ms_ == std::numeric_limits<TimeMs>::max()) return std::chrono::steady_clock::time_point::max();
    return std::chrono::steady_clock::time_point(std::chrono::milliseconds(at_ms_));
  }
  Deadline Extended(TimeMs extra_ms) const {
    if (at_ms_ > std::numeric_limits<TimeMs>::max() - extra_ms) return Never();
    return Deadline(at_ms_ + extra_ms);
  }

 private:
  explicit Deadline(TimeMs at_ms) : at_ms_(at_ms) {}
  TimeMs at_ms_;
};

}  // namespace shoal
