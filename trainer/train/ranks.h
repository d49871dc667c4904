// gradwatch-train --nproc N: a data-parallel job of N ranks on this host, started by the
// trainer itself the way torchrun would. No torch here.
//
// The parent starts N copies of this program (/proc/self/exe, the same arguments) with
// torchrun's variables set: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
// MASTER_ADDR=127.0.0.1 and MASTER_PORT, a port that was free a moment before (bound to
// 127.0.0.1:0 and released). Each rank dies with the parent (PR_SET_PDEATHSIG). The parent
// forwards SIGTERM and SIGINT to every rank (they stop together at a step boundary); when a
// rank fails (a non-zero exit or a signal) it stops the others: SIGTERM, then SIGKILL for any
// still there after `grace` (a rank blocked in a collective cannot reach a step boundary).
#pragma once

#include <chrono>

namespace gradwatch::train {

// Runs the job and returns the parent's exit code: 0 when every rank exited 0; else the
// first failure's (a rank's exit code, 128 + the signal that killed it, or 128 + the signal
// the parent was stopped with). One line on stderr per rank started and per rank that failed.
int RunRanks(int nproc, char** argv, std::chrono::milliseconds grace);

}  // namespace gradwatch::train
