// Under LeakSanitizer (scripts/sanitize.sh address), the leak check runs where the process calls
// check_leaks_before_mpi_finalize() instead of at exit. Just before MPI_Finalize, Open MPI's
// allocations are still reachable, so they are not leak candidates, and its plugins are still loaded,
// so the few blocks it does leak have stacks that scripts/lsan.supp can name. The check at exit cost
// ~1.2 s per process, more than half of each tensorpar start in the ASan CLI tests; this one ~0.5 s.
// Leaks of ours are unreachable blocks either way and still fail the run. A no-op in other builds.
#pragma once

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TENSORPAR_LSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TENSORPAR_LSAN 1
#endif

#ifdef TENSORPAR_LSAN
#include <sanitizer/lsan_interface.h>
#endif

namespace tensorpar {

inline void check_leaks_before_mpi_finalize() {
#ifdef TENSORPAR_LSAN
  __lsan_do_leak_check();  // reports and exits non-zero on a leak; later checks (at exit) are skipped
#endif
}

}  // namespace tensorpar
