/*
 * Quantised-weight support of the emulator: aclnnMul, aclnnEmbedding, the integer casts of
 * aclnnCast, and aclnnGroupedMatmulV5's A16W8 antiquant mode. Included by emu.c (one
 * translation unit: the ops use its static tensor, executor and launch helpers); not
 * compiled on its own. docs/cann.md lists the sources each rule comes from.
 *
 * Emulated subsets, each refused with 161002 in phase 1 when exceeded:
 *   - Mul: self, other and out of one float dtype (the real op also promotes mixed dtypes);
 *     numpy broadcasting; out has the broadcast shape. The product is computed in double
 *     (exact for two floats) and rounded once, i.e. a correctly rounded multiply.
 *   - Embedding: weight 2-D [V, D] of a float dtype, indices INT32/INT64 of any rank, out
 *     = indices' dims + [D] in weight's dtype. An index outside [0, V) is an AI core
 *     exception at execution (the device gathers out of bounds; the emulator stops).
 *   - Cast from INT8/UINT8/INT32 to FLOAT/FLOAT16/BF16/INT32 (exact or one rounding);
 *     float to integer is not emulated.
 *   - GroupedMatmulV5 A16W8 (ops-transformer gmm/grouped_matmul/docs/aclnnGroupedMatmulV5):
 *     x and out FLOAT16 or BF16, weight INT8 (ND), antiquantScale in x's dtype, per channel:
 *     [N] per tensor for a list of 2-D weights, [E, N] for one 3-D weight; antiquantOffset
 *     optional with the scale's shapes; groupType 0, groupListType 0/1, actType 0; bias,
 *     scale, offset and perTokenScale NULL. y = x·((w + offset)·scale), summed in double and
 *     rounded once to out's dtype (where the device rounds the dequantised weight is not
 *     documented). INT4 weights (A16W4) are not emulated.
 */

/* element idx (storage index relative to offset) of any emulated numeric dtype, as double */
static double loadd(const struct aclTensor *t, int64_t idx) {
    const char *p = t->data + (t->offset + idx) * dtsize(t->dt);
    switch (t->dt) {
    case ACL_INT8: return (double)*(const int8_t *)p;
    case ACL_UINT8: return (double)*(const uint8_t *)p;
    case ACL_INT32: { int32_t v; memcpy(&v, p, 4); return (double)v; }
    case ACL_INT64: { int64_t v; memcpy(&v, p, 8); return (double)v; }
    default: return (double)loadf(t, idx);
    }
}

/* stores v (an integer value, or a float for float dtypes) into element idx */
static void stored(const struct aclTensor *t, int64_t idx, double v) {
    char *p = t->data + (t->offset + idx) * dtsize(t->dt);
    switch (t->dt) {
    case ACL_INT32: { int32_t i = (int32_t)v; memcpy(p, &i, 4); return; }
    case ACL_INT64: { int64_t i = (int64_t)v; memcpy(p, &i, 8); return; }
    default: storef(t, idx, (float)v); return;
    }
}

/* ---------- Mul ---------- */
EXPORT aclnnStatus aclnnMulGetWorkspaceSize(const aclTensor *self, const aclTensor *other, aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor) {
    const char *name = "aclnnMulGetWorkspaceSize";
    if (!self || !other || !out || !workspaceSize || !executor) return fail(ACLNN_ERR_PARAM_NULLPTR, "%s: NULL argument", name);
    if (!tensor_ok(self) || !tensor_ok(other) || !tensor_ok(out)) return fail(ACLNN_ERR_PARAM_INVALID, "%s: not a tensor", name);
    if (!is_float(self->dt) || other->dt != self->dt || out->dt != self->dt)
        return fail(ACLNN_ERR_PARAM_INVALID, "%s: self, other and out must share a float dtype (got %d, %d, %d; mixed dtypes are not emulated)", name, self->dt, other->dt, out->dt);
    if (self->fmt != ACL_FORMAT_ND || other->fmt != ACL_FORMAT_ND || out->fmt != ACL_FORMAT_ND) return fail(ACLNN_ERR_PARAM_INVALID, "%s: only ND is emulated", name);
    int nd = self->ndim > other->ndim ? self->ndim : other->ndim;
    if (out->ndim != nd) return fail(ACLNN_ERR_PARAM_INVALID, "%s: out has %d dims, the broadcast shape %d", name, out->ndim, nd);
    for (int i = 0; i < nd; i++) {
        int si = i - (nd - self->ndim), oi = i - (nd - other->ndim);
        int64_t a = si >= 0 ? self->dims[si] : 1, b = oi >= 0 ? other->dims[oi] : 1;
        if (a != b && a != 1 && b != 1) return fail(ACLNN_ERR_PARAM_INVALID, "%s: dim %d: %lld and %lld do not broadcast", name, i, (long long)a, (long long)b);
        if (out->dims[i] != (a > b ? a : b)) return fail(ACLNN_ERR_PARAM_INVALID, "%s: out dim %d is %lld, the broadcast shape has %lld", name, i, (long long)out->dims[i], (long long)(a > b ? a : b));
    }
    pthread_mutex_lock(&mu);
    struct aclOpExecutor *e = new_exec(OP_MUL, 0);
    pthread_mutex_unlock(&mu);
    e->a = *self;
    e->b = *other;
    e->c = *out;
    *workspaceSize = 0;
    *executor = e;
    return ACLNN_SUCCESS;
}

EXPORT aclnnStatus aclnnMul(void *workspace, uint64_t workspaceSize, aclOpExecutor *executor, aclrtStream stream) {
    return launch(workspace, workspaceSize, executor, stream, OP_MUL, "aclnnMul");
}

/* storage index in t of out's linear index li under broadcasting (t right-aligned to out) */
static int64_t bcast_index(const struct aclTensor *t, const struct aclTensor *out, int64_t li) {
    int64_t idx = 0;
    for (int i = out->ndim - 1; i >= 0; i--) {
        int64_t c = li % out->dims[i];
        li /= out->dims[i];
        int ti = i - (out->ndim - t->ndim);
        if (ti >= 0 && t->dims[ti] != 1) idx += c * t->strides[ti];
    }
    return idx;
}

static int mul_run(struct aclOpExecutor *e, char *err, size_t errn) {
    if (!tensor_mem_ok(&e->a) || !tensor_mem_ok(&e->b) || !tensor_mem_ok(&e->c)) { snprintf(err, errn, "aclnnMul: tensors not in live device memory"); return ACL_ERROR_RT_AICORE_EXCEPTION; }
    int64_t n = numel(&e->c);
    for (int64_t li = 0; li < n; li++) {
        double v = (double)loadf(&e->a, bcast_index(&e->a, &e->c, li)) * (double)loadf(&e->b, bcast_index(&e->b, &e->c, li));
        storef(&e->c, view_index(&e->c, li), (float)v);
    }
    return 0;
}

/* ---------- Embedding ---------- */
EXPORT aclnnStatus aclnnEmbeddingGetWorkspaceSize(const aclTensor *weight, const aclTensor *indices, const aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor) {
    const char *name = "aclnnEmbeddingGetWorkspaceSize";
    if (!weight || !indices || !out || !workspaceSize || !executor) return fail(ACLNN_ERR_PARAM_NULLPTR, "%s: NULL argument", name);
    if (!tensor_ok(weight) || !tensor_ok(indices) || !tensor_ok(out)) return fail(ACLNN_ERR_PARAM_INVALID, "%s: not a tensor", name);
    if (!is_float(weight->dt) || out->dt != weight->dt) return fail(ACLNN_ERR_PARAM_INVALID, "%s: weight must be a float dtype (others are not emulated) and out its dtype", name);
    if (indices->dt != ACL_INT32 && indices->dt != ACL_INT64) return fail(ACLNN_ERR_PARAM_INVALID, "%s: indices must be INT32 or INT64 (got %d)", name, indices->dt);
    if (weight->fmt != ACL_FORMAT_ND || indices->fmt != ACL_FORMAT_ND || out->fmt != ACL_FORMAT_ND) return fail(ACLNN_ERR_PARAM_INVALID, "%s: only ND is emulated", name);
    if (weight->ndim != 2) return fail(ACLNN_ERR_PARAM_INVALID, "%s: weight must be 2-D [V, D]", name);
    if (indices->ndim + 1 > MAXDIM || out->ndim != indices->ndim + 1) return fail(ACLNN_ERR_PARAM_INVALID, "%s: out must have one dim more than indices", name);
    for (int i = 0; i < indices->ndim; i++)
        if (out->dims[i] != indices->dims[i]) return fail(ACLNN_ERR_PARAM_INVALID, "%s: out dim %d is %lld, indices have %lld", name, i, (long long)out->dims[i], (long long)indices->dims[i]);
    if (out->dims[indices->ndim] != weight->dims[1]) return fail(ACLNN_ERR_PARAM_INVALID, "%s: out's last dim %lld, weight rows of %lld", name, (long long)out->dims[indices->ndim], (long long)weight->dims[1]);
    pthread_mutex_lock(&mu);
    struct aclOpExecutor *e = new_exec(OP_EMBEDDING, 0);
    pthread_mutex_unlock(&mu);
    e->a = *weight;
    e->b = *indices;
    e->c = *out;
    *workspaceSize = 0;
    *executor = e;
    return ACLNN_SUCCESS;
}

EXPORT aclnnStatus aclnnEmbedding(void *workspace, uint64_t workspaceSize, aclOpExecutor *executor, aclrtStream stream) {
    return launch(workspace, workspaceSize, executor, stream, OP_EMBEDDING, "aclnnEmbedding");
}

static int embedding_run(struct aclOpExecutor *e, char *err, size_t errn) {
    const struct aclTensor *w = &e->a, *ix = &e->b, *y = &e->c;
    if (!tensor_mem_ok(w) || !tensor_mem_ok(ix) || !tensor_mem_ok(y)) { snprintf(err, errn, "aclnnEmbedding: tensors not in live device memory"); return ACL_ERROR_RT_AICORE_EXCEPTION; }
    int64_t n = numel(ix), V = w->dims[0], D = w->dims[1];
    for (int64_t i = 0; i < n; i++) {
        int64_t v = (int64_t)loadd(ix, view_index(ix, i));
        if (v < 0 || v >= V) { snprintf(err, errn, "aclnnEmbedding: index %lld at %lld is outside the %lld weight rows", (long long)v, (long long)i, (long long)V); return ACL_ERROR_RT_AICORE_EXCEPTION; }
        for (int64_t d = 0; d < D; d++)
            storef(y, view_index(y, i * D + d), loadf(w, v * w->strides[0] + d * w->strides[1]));
    }
    return 0;
}

/* ---------- GroupedMatmulV5 A16W8 ---------- */
/* Validates the antiquant lists of an A16W8 call and stores the per-group [N] views of
   scale (and offset) in e (the caller frees e if this fails). w3d: weight is one [E, K, N] tensor (scale [E, N]); else E
   tensors of [K, N] (scales [N] each). Returns 0 or the failed status. */
static int gmm_antiquant(struct aclOpExecutor *e, const aclTensorList *scale, const aclTensorList *offset, int w3d, int E,
                         int64_t N, aclDataType xdt, const char *name) {
    const aclTensorList *lists[2] = {scale, offset};
    for (int li = 0; li < 2; li++) {
        const aclTensorList *l = lists[li];
        const char *what = li ? "antiquantOffset" : "antiquantScale";
        if (!l) {
            if (li == 0) return fail(ACLNN_ERR_PARAM_NULLPTR, "%s: INT8 weights need antiquantScale (A16W8)", name);
            continue;
        }
        if (l->magic != MAGIC_TLIST) return fail(ACLNN_ERR_PARAM_INVALID, "%s: %s is not a tensor list", name, what);
        if ((int)l->n != (w3d ? 1 : E)) return fail(ACLNN_ERR_PARAM_INVALID, "%s: %s has %llu tensors, weight %d", name, what, (unsigned long long)l->n, w3d ? 1 : E);
        struct aclTensor *v = calloc((size_t)E, sizeof *v);
        if (li) e->ao = v; /* owned by e from here: free_exec frees it on any failure */
        else e->as = v;
        for (int g = 0; g < E; g++) {
            const struct aclTensor *S = l->t[w3d ? 0 : g];
            if (!tensor_ok(S)) return fail(ACLNN_ERR_PARAM_NULLPTR, "%s: %s[%d] is NULL", name, what, g);
            if (S->dt != xdt) return fail(ACLNN_ERR_PARAM_INVALID, "%s: %s dtype %d, x dtype %d: A16W8 takes them in x's dtype", name, what, S->dt, xdt);
            if (S->fmt != ACL_FORMAT_ND) return fail(ACLNN_ERR_PARAM_INVALID, "%s: %s must be ND", name, what);
            int ok = w3d ? S->ndim == 2 && S->dims[0] == E && S->dims[1] == N : S->ndim == 1 && S->dims[0] == N;
            if (!ok) return fail(ACLNN_ERR_PARAM_INVALID, "%s: %s[%d] must be %s (per channel: A16W8 has no per-group mode)", name, what, g, w3d ? "[E, N]" : "[N]");
            v[g] = *S;
            if (w3d) {
                v[g].ndim = 1;
                v[g].offset += g * S->strides[0];
                v[g].dims[0] = S->dims[1];
                v[g].strides[0] = S->strides[1];
            }
        }
    }
    return 0;
}
