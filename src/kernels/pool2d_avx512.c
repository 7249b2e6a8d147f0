/* pool2d_avx512.c: pooling and relu kernels, built with -mavx512f ...; the loops are in pool2d_impl.h. */
#define FC_ISA avx512

#define T float
#define FC_DT f32
#include "pool2d_impl.h"
#undef T
#undef FC_DT

#define T double
#define FC_DT f64
#include "pool2d_impl.h"
