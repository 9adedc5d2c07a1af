// Completion: a one-shot result that the io thread sets and user threads wait for with a deadline.
//
// Thread-safe. Set() takes effect once; later calls are ignored.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "shoal/common/clock.h"
#include "shoal/status.hpp"

namespace shoal::comm {

class Completion {
 public:
  void Set(Status status) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (done_) return;
      done_ = true;
      status_ = std::move(status);
    }
    cv_.notify_all();
  }
  // True if set by `deadline`; then *status holds the result.
  bool WaitUntil(Deadline deadline, Status* status) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_until(lock, deadline.time_point(), [this] { return done_; })) return false;
    *status = status_;
    return true;
  }
  bool done() const {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;   // guarded by mu_
  Status status_;       // guarded by mu_
};

}  // namespace shoal::comm
