/* pool2d.c: pooling and relu kernels for float32 and float64 (the loops live in pool2d_impl.h). */
#define T float
#define FC_DT f32
#include "pool2d_impl.h"
#undef T
#undef FC_DT

#define T double
#define FC_DT f64
#include "pool2d_impl.h"
