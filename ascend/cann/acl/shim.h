// Selects the declarations: the toolkit's headers with MOEMESH_CANN_REAL (tag cann_real),
// else our own subset (tag cann, emulator).
#ifdef MOEMESH_CANN_REAL
#include <acl/acl.h>
#include <aclnn/acl_meta.h>
#include <aclnnop/aclnn_grouped_matmul_v5.h>
#include <aclnnop/aclnn_swi_glu.h>
#include <aclnnop/aclnn_cast.h>
#include <aclnnop/aclnn_matmul.h>
#include <aclnnop/aclnn_rms_norm.h>
#include <aclnnop/aclnn_moe_gating_top_k_softmax.h>
#include <aclnnop/aclnn_mul.h>
#include <aclnnop/aclnn_embedding.h>
#else
#include "acl_subset.h"
#endif
