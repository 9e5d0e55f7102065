/* Included by emu.c (one translation unit): GroupedMatmulV5 (with A16W8 antiquant), SwiGlu
 * and Cast. */

/* ---------- GroupedMatmulV5 ---------- */
/* defined in quant_ops.inc.c */
static double loadd(const struct aclTensor *t, int64_t idx);
static void stored(const struct aclTensor *t, int64_t idx, double v);
static int gmm_antiquant(struct aclOpExecutor *e, const aclTensorList *scale, const aclTensorList *offset, int w3d, int E,
                         int64_t N, aclDataType xdt, const char *name);
EXPORT aclnnStatus aclnnGroupedMatmulV5GetWorkspaceSize(
    const aclTensorList *x, const aclTensorList *weight, const aclTensorList *biasOptional,
    const aclTensorList *scaleOptional, const aclTensorList *offsetOptional,
    const aclTensorList *antiquantScaleOptional, const aclTensorList *antiquantOffsetOptional,
    const aclTensorList *perTokenScaleOptional, const aclTensor *groupListOptional,
    const aclTensorList *activationInputOptional, const aclTensorList *activationQuantScaleOptional,
    const aclTensorList *activationQuantOffsetOptional, int64_t splitItem, int64_t groupType, int64_t groupListType,
    int64_t actType, aclIntArray *tuningConfigOptional, aclTensorList *out,
    aclTensorList *activationFeatureOutOptional, aclTensorList *dynQuantScaleOutOptional, uint64_t *workspaceSize,
    aclOpExecutor **executor) {
    const char *name = "aclnnGroupedMatmulV5GetWorkspaceSize";
    (void)tuningConfigOptional;
    if (!x || !weight || !out || !workspaceSize || !executor) return fail(ACLNN_ERR_PARAM_NULLPTR, "%s: x, weight, out, workspaceSize and executor are required", name);
    if (x->magic != MAGIC_TLIST || weight->magic != MAGIC_TLIST || out->magic != MAGIC_TLIST) return fail(ACLNN_ERR_PARAM_INVALID, "%s: not a tensor list", name);
    if (biasOptional || scaleOptional || offsetOptional || perTokenScaleOptional || activationInputOptional ||
        activationQuantScaleOptional || activationQuantOffsetOptional || activationFeatureOutOptional || dynQuantScaleOutOptional)
        return fail(ACLNN_ERR_PARAM_INVALID, "%s: bias, full quantisation and activation inputs are not emulated (pass NULL)", name);
    if (groupType != 0) return fail(ACLNN_ERR_PARAM_INVALID, "%s: groupType %lld: only 0 (split M) is emulated", name, (long long)groupType);
    if (splitItem != 2 && splitItem != 3) return fail(ACLNN_ERR_PARAM_INVALID, "%s: splitItem %lld: only single-tensor output (2, 3) is emulated", name, (long long)splitItem);
    if (actType != 0) return fail(ACLNN_ERR_PARAM_INVALID, "%s: actType %lld: only 0 (none) is emulated", name, (long long)actType);
    if (groupListType < 0 || groupListType > 2) return fail(ACLNN_ERR_PARAM_INVALID, "%s: groupListType %lld", name, (long long)groupListType);
    if (x->n != 1 || out->n != 1) return fail(ACLNN_ERR_PARAM_INVALID, "%s: x and out must each be one tensor with splitItem 2/3", name);
    const struct aclTensor *X = x->t[0], *Y = out->t[0];
    if (!tensor_ok(X) || !tensor_ok(Y)) return fail(ACLNN_ERR_PARAM_NULLPTR, "%s: x or out tensor is NULL", name);
    int E = (int)weight->n;
    int w3d = E == 1 && tensor_ok(weight->t[0]) && weight->t[0]->ndim == 3;
    if (w3d) E = (int)weight->t[0]->dims[0];
    if (E < 1 || E > 1024) return fail(ACLNN_ERR_PARAM_INVALID, "%s: %d groups (1..1024)", name, E);
    if (X->ndim != 2 || Y->ndim != 2) return fail(ACLNN_ERR_INNER_TILING_ERROR, "%s: x and out must be 2-D", name);
    aclDataType dt = X->dt;
    if (!is_float(dt) || Y->dt != dt) return fail(ACLNN_ERR_PARAM_INVALID, "%s: x and out must share a float dtype (x %d, out %d)", name, X->dt, Y->dt);
    /* A16W8 (quant_ops.inc.c): INT8 weights with a per-channel antiquantScale. */
    int a16w8 = tensor_ok(weight->t[0]) && weight->t[0]->dt == ACL_INT8;
    if (!a16w8 && (antiquantScaleOptional || antiquantOffsetOptional))
        return fail(ACLNN_ERR_PARAM_INVALID, "%s: antiquantScale/antiquantOffset need INT8 weights (A16W8; A16W4 is not emulated)", name);
    if (a16w8 && dt == ACL_FLOAT)
        return fail(ACLNN_ERR_PARAM_INVALID, "%s: A16W8 takes x and out in FLOAT16 or BFLOAT16, not FLOAT", name);
    if (a16w8 && groupListType == 2)
        return fail(ACLNN_ERR_PARAM_INVALID, "%s: A16W8 takes groupListType 0 or 1", name);
    if (X->fmt != ACL_FORMAT_ND || Y->fmt != ACL_FORMAT_ND) return fail(ACLNN_ERR_PARAM_INVALID, "%s: only ACL_FORMAT_ND is emulated", name);
    if (X->strides[1] != 1 && X->dims[1] > 1) return fail(ACLNN_ERR_PARAM_INVALID, "%s: x may not be transposed", name);
    int64_t M = X->dims[0], K = X->dims[1], N = Y->dims[1];
    if (Y->dims[0] != M) return fail(ACLNN_ERR_INNER_TILING_ERROR, "%s: out has %lld rows, x %lld", name, (long long)Y->dims[0], (long long)M);
    if (N >= 65536 || K >= 65536) return fail(ACLNN_ERR_INNER_TILING_ERROR, "%s: last dim must be < 65536", name);
    struct aclOpExecutor *e;
    struct aclTensor *ws = calloc((size_t)E, sizeof *ws);
    for (int g = 0; g < E; g++) {
        const struct aclTensor *W = w3d ? weight->t[0] : weight->t[g];
        if (!tensor_ok(W)) { free(ws); return fail(ACLNN_ERR_PARAM_NULLPTR, "%s: weight[%d] is NULL", name, g); }
        if (W->dt != (a16w8 ? ACL_INT8 : dt)) { free(ws); return fail(ACLNN_ERR_PARAM_INVALID, "%s: weight[%d] dtype %d, x dtype %d: they must match (or all be INT8 for A16W8)", name, g, W->dt, dt); }
        if (W->fmt != ACL_FORMAT_ND) { free(ws); return fail(ACLNN_ERR_PARAM_INVALID, "%s: weight[%d] format %d: only ND is emulated", name, g, W->fmt); }
        struct aclTensor v = *W;
        if (w3d) { /* slice group g of [E, K, N] */
            v.ndim = 2;
            v.offset += g * W->strides[0];
            v.dims[0] = W->dims[1], v.dims[1] = W->dims[2];
            v.strides[0] = W->strides[1], v.strides[1] = W->strides[2];
        } else if (W->ndim != 2) { free(ws); return fail(ACLNN_ERR_INNER_TILING_ERROR, "%s: weight[%d] must be 2-D [K, N]", name, g); }
        if (v.dims[0] != K || v.dims[1] != N) { free(ws); return fail(ACLNN_ERR_INNER_TILING_ERROR, "%s: weight[%d] is [%lld, %lld], want [K=%lld, N=%lld]", name, g, (long long)v.dims[0], (long long)v.dims[1], (long long)K, (long long)N); }
        ws[g] = v;
    }
    if (E > 1 && !groupListOptional) { free(ws); return fail(ACLNN_ERR_PARAM_NULLPTR, "%s: groupList is required with %d groups", name, E); }
    if (groupListOptional) {
        const struct aclTensor *G = groupListOptional;
        int ok = tensor_ok(G) && G->dt == ACL_INT64 &&
                 (groupListType == 2 ? (G->ndim == 2 && G->dims[0] == E && G->dims[1] == 2) : (G->ndim == 1 && G->dims[0] == E));
        if (!ok) { free(ws); return fail(ACLNN_ERR_PARAM_INVALID, "%s: groupList must be INT64 [%d] (or [%d, 2] for type 2)", name, E, E); }
    }
    pthread_mutex_lock(&mu);
    e = new_exec(OP_GMM, 16384);
    pthread_mutex_unlock(&mu);
    e->x = *X;
    e->out = *Y;
    e->w = ws;
    e->nw = E;
    if (a16w8) {
        int rc = gmm_antiquant(e, antiquantScaleOptional, antiquantOffsetOptional, w3d, E, N, dt, name);
        if (rc) {
            pthread_mutex_lock(&mu);
            take_exec(e, OP_GMM);
            free_exec(e);
            pthread_mutex_unlock(&mu);
            return rc;
        }
    }
    if (groupListOptional) e->gl = *groupListOptional, e->has_gl = 1;
    e->glType = groupListType;
    *workspaceSize = e->ws;
    *executor = e;
    return ACLNN_SUCCESS;
}

EXPORT aclnnStatus aclnnGroupedMatmulV5(void *workspace, uint64_t workspaceSize, aclOpExecutor *executor, aclrtStream stream) {
    return launch(workspace, workspaceSize, executor, stream, OP_GMM, "aclnnGroupedMatmulV5");
}

static int gmm_run(struct aclOpExecutor *e, char *err, size_t errn) {
    int64_t M = e->x.dims[0], K = e->x.dims[1], N = e->out.dims[1];
    int E = e->nw;
    if (!tensor_mem_ok(&e->x) || !tensor_mem_ok(&e->out) || (e->has_gl && !tensor_mem_ok(&e->gl))) {
        snprintf(err, errn, "aclnnGroupedMatmulV5: x, out or groupList not in live device memory at execution");
        return ACL_ERROR_RT_AICORE_EXCEPTION;
    }
    int64_t *start = calloc((size_t)E, sizeof *start), *cnt = calloc((size_t)E, sizeof *cnt);
    int64_t row = 0;
    int rc = 0;
    for (int g = 0; g < E && !rc; g++) {
        int64_t v, gi = g;
        if (!e->has_gl) v = M;
        else {
            int64_t *gp = (int64_t *)(e->gl.data) + e->gl.offset;
            if (e->glType == 2) {
                gi = gp[view_index(&e->gl, 2 * g)];
                v = gp[view_index(&e->gl, 2 * g + 1)];
                if (gi < 0 || gi >= E) { snprintf(err, errn, "aclnnGroupedMatmulV5: groupList pair %d names group %lld of %d", g, (long long)gi, E); rc = ACL_ERROR_RT_AICORE_EXCEPTION; break; }
            } else {
                v = gp[view_index(&e->gl, g)];
                if (e->glType == 0) {
                    if (v < row) { snprintf(err, errn, "aclnnGroupedMatmulV5: cumulative groupList decreases at %d (%lld < %lld)", g, (long long)v, (long long)row); rc = ACL_ERROR_RT_AICORE_EXCEPTION; break; }
                    v -= row;
                }
            }
        }
        if (v < 0 || v > M - row) { snprintf(err, errn, "aclnnGroupedMatmulV5: groupList covers more than M=%lld rows or is negative at group %d", (long long)M, g); rc = ACL_ERROR_RT_AICORE_EXCEPTION; break; }
        start[g] = row, cnt[g] = v; /* type 2: rows [row, row+v) use weight gi */
        for (int64_t r = row; r < row + v; r++) {
            const struct aclTensor *W = &e->w[gi];
            const struct aclTensor *S = e->as ? &e->as[gi] : NULL, *O = e->ao ? &e->ao[gi] : NULL;
            if (!tensor_mem_ok(W) || (S && !tensor_mem_ok(S)) || (O && !tensor_mem_ok(O))) { snprintf(err, errn, "aclnnGroupedMatmulV5: weight %lld or its antiquant parameters not in live device memory", (long long)gi); rc = ACL_ERROR_RT_AICORE_EXCEPTION; break; }
            for (int64_t n = 0; n < N; n++) {
                double acc = 0, sc = S ? loadf(S, n * S->strides[0]) : 1, of = O ? loadf(O, n * O->strides[0]) : 0;
                for (int64_t k = 0; k < K; k++) {
                    double w = loadd(W, k * W->strides[0] + n * W->strides[1]);
                    if (S) w = (w + of) * sc;
                    acc += (double)loadf(&e->x, r * e->x.strides[0] + k * e->x.strides[1]) * w;
                }
                storef(&e->out, r * e->out.strides[0] + n * e->out.strides[1], (float)acc);
            }
        }
        row += v;
    }
    free(start);
    free(cnt);
    return rc; /* rows past the group sum are left unwritten */
}

/* ---------- SwiGlu ---------- */
EXPORT aclnnStatus aclnnSwiGluGetWorkspaceSize(const aclTensor *x, int64_t dim, const aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor) {
    const char *name = "aclnnSwiGluGetWorkspaceSize";
    if (!x || !out || !workspaceSize || !executor) return fail(ACLNN_ERR_PARAM_NULLPTR, "%s: NULL argument", name);
    if (!tensor_ok(x) || !tensor_ok(out)) return fail(ACLNN_ERR_PARAM_INVALID, "%s: not a tensor", name);
    if (!is_float(x->dt) || out->dt != x->dt) return fail(ACLNN_ERR_PARAM_INVALID, "%s: x and out must share a float dtype", name);
    if (x->fmt != ACL_FORMAT_ND || out->fmt != ACL_FORMAT_ND) return fail(ACLNN_ERR_PARAM_INVALID, "%s: only ND is emulated", name);
    if (x->ndim < 1 || x->ndim != out->ndim) return fail(ACLNN_ERR_PARAM_INVALID, "%s: x and out ranks differ", name);
    int64_t d = dim < 0 ? dim + x->ndim : dim;
    if (d < 0 || d >= x->ndim) return fail(ACLNN_ERR_PARAM_INVALID, "%s: dim %lld out of range", name, (long long)dim);
    if (x->dims[d] % 2) return fail(ACLNN_ERR_PARAM_INVALID, "%s: x dim %lld is odd", name, (long long)x->dims[d]);
    for (int i = 0; i < x->ndim; i++)
        if (out->dims[i] != (i == d ? x->dims[i] / 2 : x->dims[i])) return fail(ACLNN_ERR_PARAM_INVALID, "%s: out shape does not halve x along dim", name);
    pthread_mutex_lock(&mu);
    struct aclOpExecutor *e = new_exec(OP_SWIGLU, 0);
    pthread_mutex_unlock(&mu);
    e->a = *x;
    e->b = *out;
    e->dim = d;
    *workspaceSize = 0;
    *executor = e;
    return ACLNN_SUCCESS;
}

EXPORT aclnnStatus aclnnSwiGlu(void *workspace, uint64_t workspaceSize, aclOpExecutor *executor, aclrtStream stream) {
    return launch(workspace, workspaceSize, executor, stream, OP_SWIGLU, "aclnnSwiGlu");
}

static int swiglu_run(struct aclOpExecutor *e, char *err, size_t errn) {
    const struct aclTensor *x = &e->a, *y = &e->b;
    if (!tensor_mem_ok(x) || !tensor_mem_ok(y)) { snprintf(err, errn, "aclnnSwiGlu: tensors not in live device memory"); return ACL_ERROR_RT_AICORE_EXCEPTION; }
    int64_t n = numel(y), half = y->dims[e->dim];
    int64_t inner = 1;
    for (int i = (int)e->dim + 1; i < y->ndim; i++) inner *= y->dims[i];
    for (int64_t li = 0; li < n; li++) {
        /* coordinates of li in y; the same in x for A, +half along dim for B */
        int64_t outer = li / (half * inner), j = (li / inner) % half, in = li % inner;
        int64_t xa = (outer * 2 * half + j) * inner + in, xb = xa + half * inner;
        double a = loadf(x, view_index(x, xa)), b = loadf(x, view_index(x, xb));
        double s = isinf(a) && a < 0 ? -0.0 : a / (1 + exp(-a));
        storef(y, view_index(y, li), (float)(s * b));
    }
    return 0;
}

/* ---------- Cast ---------- */
EXPORT aclnnStatus aclnnCastGetWorkspaceSize(const aclTensor *self, const aclDataType dtype, aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor) {
    const char *name = "aclnnCastGetWorkspaceSize";
    if (!self || !out || !workspaceSize || !executor) return fail(ACLNN_ERR_PARAM_NULLPTR, "%s: NULL argument", name);
    if (!tensor_ok(self) || !tensor_ok(out)) return fail(ACLNN_ERR_PARAM_INVALID, "%s: not a tensor", name);
    int from_int = self->dt == ACL_INT8 || self->dt == ACL_UINT8 || self->dt == ACL_INT32;
    if (!(is_float(self->dt) || from_int) || !(is_float(dtype) || (from_int && dtype == ACL_INT32)) || out->dt != dtype)
        return fail(ACLNN_ERR_PARAM_INVALID, "%s: emulated casts are float16/bfloat16/float32 to each other and int8/uint8/int32 to those or int32 (got %d to %d); out dtype must be dtype", name, self->dt, dtype);
    if (self->ndim != out->ndim) return fail(ACLNN_ERR_PARAM_INVALID, "%s: shapes differ", name);
    for (int i = 0; i < self->ndim; i++)
        if (self->dims[i] != out->dims[i]) return fail(ACLNN_ERR_PARAM_INVALID, "%s: shapes differ", name);
    pthread_mutex_lock(&mu);
    struct aclOpExecutor *e = new_exec(OP_CAST, 0);
    pthread_mutex_unlock(&mu);
    e->a = *self;
    e->b = *out;
    *workspaceSize = 0;
    *executor = e;
    return ACLNN_SUCCESS;
}

EXPORT aclnnStatus aclnnCast(void *workspace, uint64_t workspaceSize, aclOpExecutor *executor, aclrtStream stream) {
    return launch(workspace, workspaceSize, executor, stream, OP_CAST, "aclnnCast");
}

static int cast_run(struct aclOpExecutor *e, char *err, size_t errn) {
    if (!tensor_mem_ok(&e->a) || !tensor_mem_ok(&e->b)) { snprintf(err, errn, "aclnnCast: tensors not in live device memory"); return ACL_ERROR_RT_AICORE_EXCEPTION; }
    int64_t n = numel(&e->a);
    for (int64_t li = 0; li < n; li++) stored(&e->b, view_index(&e->b, li), loadd(&e->a, view_index(&e->a, li)));
    return 0;
}

/* The dense-path and gating ops live in their own file but in this translation unit, so
   they share the static tensor, executor and launch helpers above. */
