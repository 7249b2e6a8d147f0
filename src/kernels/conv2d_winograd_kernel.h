/* conv2d_winograd_kernel.h: the arithmetic of Winograd F(2x2, 3x3)'s kernel transform, shared by
 * the NCHW (conv2d_winograd.h) and channels-last (conv2d_nhwc_winograd.h) passes. Each stages a
 * chunk of kernels' taps in its own panel order first (one kernel per lane, MR or NR lanes), so
 * this is one long vector loop over the staged kernels. */
#ifndef FC_CONV2D_WINOGRAD_KERNEL_H
#define FC_CONV2D_WINOGRAD_KERNEL_H

#include "fc_template.h"

/* U = G g G^T, G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1], of n staged kernels: tap t of
 * kernel j at stage[t * ss + j], U_e of kernel j to u[e * us + j]. Returns nonzero if a result
 * is Inf or NaN. */
static inline int FC_LOCAL(winograd_kernel_from_stage)(const T *stage, fc_index ss, fc_index n,
                                                       T *restrict u, fc_index us) {
    int bad = 0;
    FC_PRAGMA(GCC ivdep)
    for (fc_index j = 0; j < n; j++) {
        T g[9], t[4][3], z = 0; /* z: NaN once a result is Inf or NaN */
        for (int tap = 0; tap < 9; tap++) g[tap] = stage[tap * ss + j];
        for (int q = 0; q < 3; q++) {
            t[0][q] = g[q];
            t[1][q] = (T)0.5 * (g[q] + g[3 + q] + g[6 + q]);
            t[2][q] = (T)0.5 * (g[q] - g[3 + q] + g[6 + q]);
            t[3][q] = g[6 + q];
        }
        for (int r = 0; r < 4; r++) {
            const T a = t[r][0], b = t[r][1], d = t[r][2];
            const T v1 = (T)0.5 * (a + b + d), v2 = (T)0.5 * (a - b + d);
            u[(4 * r) * us + j] = a;
            u[(4 * r + 1) * us + j] = v1;
            u[(4 * r + 2) * us + j] = v2;
            u[(4 * r + 3) * us + j] = d;
            z += (a - a) + (v1 - v1) + (v2 - v2) + (d - d);
        }
        bad |= z != z;
    }
    return bad;
}

#endif
