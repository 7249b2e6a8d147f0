/* adaptive_pool2d_ukernel.h: the plane reductions of global pooling, for one dtype: the sum of a
 * plane and its first maximum with its index. Included by adaptive_pool2d_impl.h (the kernels)
 * and ukernel_table.h (the tests' table); no include guard, since a kernel file instantiates it
 * once per dtype. docs/KERNELS.md states their contracts.
 *
 * Loop structure: the plane in blocks of FC_PLANE_LANES elements, each lane a running sum (or
 * running maximum and its index) of the elements at its offset in every block, so each step is
 * one vector operation per register and the lanes never wait on each other; the remainder goes
 * to the first lanes, and the lanes are combined at the end. */
#include <math.h>
#include <stdint.h>

#include "fc_template.h"

#define FC_PLANE_LANES 16

/* Sum of x[0 .. n), n >= 0: lane u adds x[u], x[u + 16], ... in order, the lanes are added
 * pairwise (0 + 8, 4 + 12, ...: a balanced tree). */
static T FC_FN(plane_sum_ukernel_16)(fc_index n, const T *restrict x) {
    T lane[FC_PLANE_LANES] = {0};
    fc_index i = 0;
    for (; i + FC_PLANE_LANES <= n; i += FC_PLANE_LANES)
        for (int u = 0; u < FC_PLANE_LANES; u++) lane[u] += x[i + u];
    for (int u = 0; i + u < n; u++) lane[u] += x[i + u];
    for (int half = FC_PLANE_LANES / 2; half > 0; half /= 2)
        for (int u = 0; u < half; u++) lane[u] += lane[u + half];
    return lane[0];
}

/* The maximum of x[0 .. n), n >= 1, as PyTorch's scan finds it (a value replaces the running
 * maximum when it is greater or NaN, starting from -inf at index 0): the index of the first
 * maximum, or of the last NaN when there is one; *value = x[index], bits and all.
 *
 * Lane u keeps the first maximum of its own elements (strictly greater replaces); the plane's
 * first maximum is then the lowest index among the lanes holding the greatest value. NaNs are
 * only noticed in the lanes; when there is one, a scan from the end finds the last. Indices are
 * int32 in the lanes, so planes past 2^31 elements take the plain scan. */
static fc_index FC_FN(plane_argmax_ukernel_16)(fc_index n, const T *restrict x, T *value) {
    fc_index at = 0;
    if (n > (fc_index)INT32_MAX) {
        T m = -(T)INFINITY;
        for (fc_index i = 0; i < n; i++)
            if (x[i] > m || x[i] != x[i]) {
                m = x[i];
                at = i;
            }
        *value = x[at];
        return at;
    }
    T m[FC_PLANE_LANES];
    int32_t idx[FC_PLANE_LANES];
    int nan = 0;
    for (int u = 0; u < FC_PLANE_LANES; u++) {
        m[u] = -(T)INFINITY;
        idx[u] = u < n ? u : 0;
    }
    fc_index i = 0;
    for (; i + FC_PLANE_LANES <= n; i += FC_PLANE_LANES)
        for (int u = 0; u < FC_PLANE_LANES; u++) {
            const T v = x[i + u];
            const int take = v > m[u];
            m[u] = take ? v : m[u];
            idx[u] = take ? (int32_t)(i + u) : idx[u];
            nan |= v != v;
        }
    for (int u = 0; i + u < n; u++) {
        const T v = x[i + u];
        if (v > m[u]) {
            m[u] = v;
            idx[u] = (int32_t)(i + u);
        }
        nan |= v != v;
    }
    if (nan) {
        for (at = n - 1; x[at] == x[at]; at--) {}
    } else {
        at = idx[0];
        T best = m[0];
        for (int u = 1; u < FC_PLANE_LANES; u++)
            if (m[u] > best || (m[u] == best && idx[u] < at)) {
                best = m[u];
                at = idx[u];
            }
    }
    *value = x[at];
    return at;
}
