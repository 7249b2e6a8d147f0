/* fc_each_dtype.h: instantiate the template named by FC_TEMPLATE (a quoted file name) for
 * float32 and then float64, in the including kernel file. */
#define FC_DT f32
#include FC_TEMPLATE
#undef FC_DT
#define FC_DT f64
#include FC_TEMPLATE
#undef FC_DT
