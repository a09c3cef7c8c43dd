// SIGTERM (what Slurm and mpirun send before preemption) and SIGINT as requests that `train` (after
// each step) and `serve` (rank 0's scheduler loop) poll, never as an asynchronous handler. With a
// handler that only set a flag, 7 of 195 SIGTERM runs here interrupted the compute thread somewhere
// that then corrupted the malloc heap (docs/reliability.md). Blocked in every thread from before
// MPI_Init, a signal stays pending until it is taken: no code is interrupted, whatever MPI, oneDNN or
// the kernel do with signal frames.
#pragma once

namespace tensorpar::cli {

// Blocks SIGTERM and SIGINT in the calling thread; threads it creates afterwards (MPI's, OpenMP's)
// inherit the mask. main calls it before MPI_Init.
void block_stop_signals();

// Unblocks them in the calling thread: commands other than train and serve are ended by SIGTERM/SIGINT
// at once (their inherited actions apply).
void unblock_stop_signals();

// The stop signal pending or already taken (SIGTERM or SIGINT), 0 if none; takes it without waiting.
// After the first one it restores both to their default action and unblocks them, so a second
// signal ends the process at once, as a user pressing ^C twice expects. Main thread only.
int take_stop_signal();

}  // namespace tensorpar::cli
