/* The C interface argoctl._pathcore exports to argoctl._echo (a capsule):
 * a compiled UDP channel feeds a bound PathState without going through
 * Python. Bump the version when the struct changes. */
#ifndef ARGOCTL_PATHCORE_H
#define ARGOCTL_PATHCORE_H

#include <stdint.h>

#define PATHCORE_CAPSULE "argoctl._pathcore._C_API"
#define PATHCORE_API_VERSION 1

typedef struct {
    int version;
    /* One probe result (CLOCK_MONOTONIC ns; lost: a timeout or a failed send):
     * 1 when it changed the path's reachability state, 0 when not, -1 when
     * `core` is not an initialised PathState (nothing done, no exception). */
    int (*feed)(PyObject *core, uint64_t seq, int64_t sent_ns, int64_t at_ns, int lost);
    /* whether `o` is an initialised PathState */
    int (*is_path_state)(PyObject *o);
} pathcore_api;

#endif
