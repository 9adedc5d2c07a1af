// One benchmark worker: a shoal::Communicator that joins a group, waits until it has exactly the
// expected number of members, and measures all-reduce (f32 SUM, in place) for each size.
//
// Per size, like the peers harness: `warmup` + `iters` times { fill the pattern (untimed), barrier
// (a 1-element all-reduce, untimed), one all-reduce (timed), check (untimed) }; then the batch
// phase: zero the buffer, barrier, `batch` back-to-back all-reduces timed together. Afterwards one
// untimed all-reduce with op MAX over the per-op times, the batch time and the error count makes
// each sample the maximum over ranks. Rank 0 prints the result line.
//
// Exit codes (config.h): kExitOk, kExitCheckFailed, kExitShoalError (a shoal call failed or the
// group did not form by the deadline).
//
// Thread safety: RunWorker runs in the calling thread, once per process (the Communicator it makes
// starts its own threads).
#pragma once

#include <string>
#include <vector>

#include "tools/bench/config.h"

namespace shoal::bench {

// Runs the worker in the calling process (it starts the Communicator's threads). Returns the exit
// code; the result lines that rank 0 printed are appended to *lines.
int RunWorker(const WorkerConfig& config, std::vector<std::string>* lines);

}  // namespace shoal::bench
