/* pool2d_scalar.c: pooling and relu kernels, the portable build (baseline instruction set); the loops are in pool2d_impl.h. */
#define FC_ISA scalar

#define T float
#define FC_DT f32
#include "pool2d_impl.h"
#undef T
#undef FC_DT

#define T double
#define FC_DT f64
#include "pool2d_impl.h"
