/* adaptive_pool2d_ukernel.h: the plane reductions of global pooling, for one dtype: the sum of a
 * plane and its first maximum with its index. Included by adaptive_pool2d_impl.h (the kernels)
 * and ukernel_table.h (the tests' table); no include guard, since a kernel file instantiates it
 * once per dtype. docs/KERNELS.md states their contracts.
 *
 * Loop structure: the plane in blocks of FC_PLANE_LANES elements, each lane a running sum (or
 * running maximum and its index) of the elements at its offset in every block, so each step is
 * one vector operation per register and the lanes never wait on each other; the lanes are
 * combined at the end, and the remainder past the last whole block joins them there. */
#include <math.h>
#include <stdint.h>

#include "fc_template.h"

#define FC_PLANE_LANES 16
/* lo, hi = the first and second halves of vector v */
#define FC_PLANE_SPLIT(v, lo, hi)                                                                  \
    (memcpy(&(lo), &(v), sizeof(lo)), memcpy(&(hi), (const char *)&(v) + sizeof(lo), sizeof(hi)))

typedef T FC_LOCAL(plane_vec) __attribute__((vector_size(FC_PLANE_LANES * sizeof(T))));
typedef T FC_LOCAL(plane_vec8) __attribute__((vector_size(8 * sizeof(T))));
typedef T FC_LOCAL(plane_vec4) __attribute__((vector_size(4 * sizeof(T))));

/* Sum of x[0 .. n), n >= 0: two 16-lane accumulators take alternate 16-element blocks (so two
 * adds are in flight: one chain of adds left large planes a fifth slower), lane u of each
 * summing its elements in order; a last odd block goes to the first; then the two are added,
 * the lanes summed as a balanced tree (u + 8, then + 4, + 2, + 1) and the remainder added in
 * order. GNU vector extensions keep the lanes in registers: plain C lanes went through the
 * stack for the tree and the remainder, which cost more than the sum itself on 7 x 7 planes. */
static T FC_FN(plane_sum_ukernel_16)(fc_index n, const T *restrict x) {
    typedef FC_LOCAL(plane_vec) vec;
    typedef FC_LOCAL(plane_vec8) vec8;
    typedef FC_LOCAL(plane_vec4) vec4;
    vec acc = {0}, acc2 = {0};
    fc_index i = 0;
    for (; i + 2 * FC_PLANE_LANES <= n; i += 2 * FC_PLANE_LANES) {
        vec v, v2;
        memcpy(&v, x + i, sizeof v);
        memcpy(&v2, x + i + FC_PLANE_LANES, sizeof v2);
        acc += v;
        acc2 += v2;
    }
    if (i + FC_PLANE_LANES <= n) {
        vec v;
        memcpy(&v, x + i, sizeof v);
        acc += v;
        i += FC_PLANE_LANES;
    }
    acc += acc2;
    vec8 lo8, hi8;
    FC_PLANE_SPLIT(acc, lo8, hi8);
    lo8 += hi8;
    vec4 lo4, hi4;
    FC_PLANE_SPLIT(lo8, lo4, hi4);
    lo4 += hi4;
    T sum = (lo4[0] + lo4[2]) + (lo4[1] + lo4[3]);
    for (; i < n; i++) sum += x[i];
    return sum;
}

/* The maximum of x[0 .. n), n >= 1, as PyTorch's scan finds it (a value replaces the running
 * maximum when it is greater or NaN, starting from -inf at index 0): the index of the first
 * maximum, or of the last NaN when there is one; *value = x[index], bits and all.
 *
 * Over the whole blocks, lane u keeps the first maximum of its own elements (strictly greater
 * replaces) and its index; the lanes are combined as a tree keeping the greater value, or the
 * lower index of equal ones, which is the blocks' first maximum; the scan then goes on over the
 * remainder. NaNs are only noticed in the lanes; when there is one, a scan from the end finds
 * the last. GNU vector extensions make each step one compare and two selects per register on
 * every ISA (plain C lanes stayed scalar: gcc did not if-convert the index update, and scalar
 * combining cost more than the blocks on 7 x 7 planes). The index lanes are as wide as T (int32
 * for float32), so float32 planes past 2^31 elements take the plain scan. */
typedef int32_t fc_plane_int_f32; /* the integer as wide as T */
typedef int64_t fc_plane_int_f64;
#define FC_PLANE_INT FC_CAT2(fc_plane_int_, FC_DT)
typedef FC_PLANE_INT FC_LOCAL(plane_mask) __attribute__((vector_size(FC_PLANE_LANES * sizeof(T))));
typedef FC_PLANE_INT FC_LOCAL(plane_mask8) __attribute__((vector_size(8 * sizeof(T))));
typedef FC_PLANE_INT FC_LOCAL(plane_mask4) __attribute__((vector_size(4 * sizeof(T))));
#undef FC_PLANE_INT

/* Of (m, idx) and (m2, idx2) lane by lane: the greater value, the lower index of equal ones. */
#define FC_PLANE_KEEP(m, idx, m2, idx2, mask_t, vec_t)                                             \
    do {                                                                                           \
        const mask_t take_ = (m2 > m) | ((m2 == m) & (idx2 < idx));                                \
        m = (vec_t)((take_ & (mask_t)m2) | (~take_ & (mask_t)m));                                  \
        idx = (take_ & idx2) | (~take_ & idx);                                                     \
    } while (0)

static fc_index FC_FN(plane_argmax_ukernel_16)(fc_index n, const T *restrict x, T *value) {
    typedef FC_LOCAL(plane_vec) vec;
    typedef FC_LOCAL(plane_vec8) vec8;
    typedef FC_LOCAL(plane_vec4) vec4;
    typedef FC_LOCAL(plane_mask) mask; /* -1 / 0 lanes, or indices */
    typedef FC_LOCAL(plane_mask8) mask8;
    typedef FC_LOCAL(plane_mask4) mask4;
    T best = -(T)INFINITY;
    fc_index at = 0, i = 0;
    if (n >= FC_PLANE_LANES && (sizeof(T) == 8 || n <= (fc_index)INT32_MAX)) {
        vec m;
        mask idx, cur, nan = {0};
        for (int u = 0; u < FC_PLANE_LANES; u++) {
            m[u] = -(T)INFINITY;
            idx[u] = cur[u] = u;
        }
        for (; i + FC_PLANE_LANES <= n; i += FC_PLANE_LANES) {
            vec v;
            memcpy(&v, x + i, sizeof v);
            const mask take = v > m;
            m = (vec)((take & (mask)v) | (~take & (mask)m));
            idx = (take & cur) | (~take & idx);
            nan |= v != v;
            cur += FC_PLANE_LANES;
        }
        vec8 m8, m8b;
        mask8 i8, i8b, n8, n8b;
        FC_PLANE_SPLIT(m, m8, m8b);
        FC_PLANE_SPLIT(idx, i8, i8b);
        FC_PLANE_SPLIT(nan, n8, n8b);
        FC_PLANE_KEEP(m8, i8, m8b, i8b, mask8, vec8);
        n8 |= n8b;
        vec4 m4, m4b;
        mask4 i4, i4b, n4, n4b;
        FC_PLANE_SPLIT(m8, m4, m4b);
        FC_PLANE_SPLIT(i8, i4, i4b);
        FC_PLANE_SPLIT(n8, n4, n4b);
        FC_PLANE_KEEP(m4, i4, m4b, i4b, mask4, vec4);
        n4 |= n4b;
        if (n4[0] | n4[1] | n4[2] | n4[3]) {
            for (at = n - 1; x[at] == x[at]; at--) {}
            *value = x[at];
            return at;
        }
        best = m4[0];
        at = i4[0];
        for (int u = 1; u < 4; u++)
            if (m4[u] > best || (m4[u] == best && i4[u] < at)) {
                best = m4[u];
                at = i4[u];
            }
    }
    for (; i < n; i++) /* the scan goes on: later elements replace only when greater, or NaN */
        if (x[i] > best || x[i] != x[i]) {
            best = x[i];
            at = i;
        }
    *value = x[at];
    return at;
}

#undef FC_PLANE_KEEP
#undef FC_PLANE_SPLIT
