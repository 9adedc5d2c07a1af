// Local mode of shoal-bench: every run on 127.0.0.1, started and stopped by shoal-bench itself.
//
// For each n, each size (and, interleaved, the peers' run.sh for that (n, size)), each K: a fresh
// shoal-coord (port 0, reported through --port-file in a temp dir, --streams-per-link K) and n
// fresh workers (this executable re-executed with --worker). A run has one deadline
// (--timeout-s); after it, or on the first worker that fails, or on Ctrl-C, everything of the run
// is stopped and reaped. Result lines go to stdout (and --out); progress and failure logs to
// stderr; the tables come last.
//
// Not thread-safe; runs in the main thread of a process that starts no other threads.
#pragma once

#include "tools/bench/config.h"

namespace shoal::bench {

// Returns the process exit code: 0 all runs passed, 1 a run or a check failed, 2 the set-up
// failed, 128+signal when interrupted.
int RunLocal(const LocalConfig& config);

}  // namespace shoal::bench
