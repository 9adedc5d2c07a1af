// SHOAL_CHECK: an assertion for programmer errors that stays on in every build (NDEBUG included).
//
// Use it for invariants of shoal's own state (an illegal state transition, a broken relation
// between records); never for input from the wire or the user, which is an operating error and is
// returned as a Status. A failed check prints where and why to stderr and aborts. Thread-safe.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace shoal::internal {

[[noreturn]] inline void CheckFailed(const char* condition, const char* file, int line,
                                     const char* why) {
  std::fprintf(stderr, "%s:%d: SHOAL_CHECK(%s) failed%s%s\n", file, line, condition,
               why[0] != '\0' ? ": " : "", why);
  std::fflush(stderr);
  std::abort();
}

}  // namespace shoal::internal

#define SHOAL_CHECK(condition)        \
  ((condition) ? static_cast<void>(0) \
               : ::shoal::internal::CheckFailed(#condition, __FILE__, __LINE__, ""))

// `why` is a C string naming the broken rule.
#define SHOAL_CHECK_MSG(condition, why) \
  ((condition) ? static_cast<void>(0)   \
               : ::shoal::internal::CheckFailed(#condition, __FILE__, __LINE__, (why)))
