/*
 * Dense-path and gating ops of the emulator: aclnnMatmul, aclnnRmsNorm and
 * aclnnMoeGatingTopKSoftmax. Included by emu.c (one translation unit: the ops use its static
 * tensor, executor and launch helpers); not compiled on its own.
 *
 * Emulated subsets, each refused with the documented status in phase 1 when exceeded:
 *   - Matmul: 2-D self [M, K] and mat2 [K, N] (any strides: a transposed weight view is the
 *     normal case), out [M, N], one float dtype for all three; cubeMathType 0..3, where 2
 *     (USE_FP16) rounds f32 inputs to f16 and 1/3 (HF32) to 10 mantissa bits before the
 *     product, as the cube unit would. Workspace 4 KiB, so callers exercise allocation.
 *   - RmsNorm: gamma's dims are x's trailing dims; y has x's shape and dtype, gamma x's dtype
 *     or FLOAT, rstd FLOAT with gamma's dims set to 1. Sums in double, rstd rounded to f32.
 *   - MoeGatingTopKSoftmax: x [N, E]; softmax in double (NaN counts as -inf; a row whose
 *     maximum is infinite shares the mass among the entries equal to it), top k of the
 *     probabilities with ties to the lower expert id, no renormalisation. finished rows get
 *     expert id E (the vLLM kernel's convention for inactive rows). Workspace N*E*4 bytes.
 */

static void i32_store(const struct aclTensor *t, int64_t li, int32_t v) {
    int32_t *p = (int32_t *)(void *)t->data;
    p[t->offset + view_index(t, li)] = v;
}

static int bool_load(const struct aclTensor *t, int64_t li) {
    const uint8_t *p = (const uint8_t *)t->data;
    return p[t->offset + view_index(t, li)] != 0;
}

static int same_dims(const struct aclTensor *a, const struct aclTensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->dims[i] != b->dims[i]) return 0;
    return 1;
}

/* rounds a float's mantissa to bits bits (round to nearest even); NaN and Inf pass. */
static float round_mantissa(float f, int bits) {
    uint32_t b;
    memcpy(&b, &f, 4);
    if ((b & 0x7f800000) == 0x7f800000) return f;
    int drop = 23 - bits;
    uint32_t half = 1u << (drop - 1), mask = (1u << drop) - 1, rest = b & mask;
    b &= ~mask;
    if (rest > half || (rest == half && (b >> drop & 1))) b += 1u << drop;
    memcpy(&f, &b, 4);
    return f;
}

/* ---------- Matmul ---------- */
EXPORT aclnnStatus aclnnMatmulGetWorkspaceSize(const aclTensor *self, const aclTensor *mat2, aclTensor *out,
                                               int8_t cubeMathType, uint64_t *workspaceSize, aclOpExecutor **executor) {
    const char *name = "aclnnMatmulGetWorkspaceSize";
    if (!self || !mat2 || !out || !workspaceSize || !executor) return fail(ACLNN_ERR_PARAM_NULLPTR, "%s: self, mat2, out, workspaceSize and executor are required", name);
    if (!tensor_ok(self) || !tensor_ok(mat2) || !tensor_ok(out)) return fail(ACLNN_ERR_PARAM_INVALID, "%s: not a tensor", name);
    if (!is_float(self->dt) || mat2->dt != self->dt || out->dt != self->dt)
        return fail(ACLNN_ERR_PARAM_INVALID, "%s: self, mat2 and out must share a float dtype (self %d, mat2 %d, out %d)", name, self->dt, mat2->dt, out->dt);
    if (self->fmt != ACL_FORMAT_ND || mat2->fmt != ACL_FORMAT_ND || out->fmt != ACL_FORMAT_ND) return fail(ACLNN_ERR_PARAM_INVALID, "%s: only ACL_FORMAT_ND is emulated", name);
    if (self->ndim != 2 || mat2->ndim != 2 || out->ndim != 2) return fail(ACLNN_ERR_PARAM_INVALID, "%s: only 2-D operands are emulated (self %d-D, mat2 %d-D, out %d-D)", name, self->ndim, mat2->ndim, out->ndim);
    if (cubeMathType < 0 || cubeMathType > 3) return fail(ACLNN_ERR_PARAM_INVALID, "%s: cubeMathType %d (0..3)", name, (int)cubeMathType);
    int64_t M = self->dims[0], K = self->dims[1], N = mat2->dims[1];
    if (mat2->dims[0] != K) return fail(ACLNN_ERR_PARAM_INVALID, "%s: self is [%lld, %lld] but mat2 is [%lld, %lld]", name, (long long)M, (long long)K, (long long)mat2->dims[0], (long long)N);
    if (out->dims[0] != M || out->dims[1] != N) return fail(ACLNN_ERR_PARAM_INVALID, "%s: out is [%lld, %lld], want [%lld, %lld]", name, (long long)out->dims[0], (long long)out->dims[1], (long long)M, (long long)N);
    pthread_mutex_lock(&mu);
    struct aclOpExecutor *e = new_exec(OP_MATMUL, 4096);
    pthread_mutex_unlock(&mu);
    e->a = *self;
    e->b = *mat2;
    e->c = *out;
    e->k = cubeMathType;
    *workspaceSize = e->ws;
    *executor = e;
    return ACLNN_SUCCESS;
}

EXPORT aclnnStatus aclnnMatmul(void *workspace, uint64_t workspaceSize, aclOpExecutor *executor, aclrtStream stream) {
    return launch(workspace, workspaceSize, executor, stream, OP_MATMUL, "aclnnMatmul");
}

static float cube_in(float v, aclDataType dt, int64_t mode) {
    if (dt != ACL_FLOAT) return v;
    if (mode == 2) return f16_to_f32(f32_to_f16(v));
    if (mode == 1 || mode == 3) return round_mantissa(v, 10);
    return v;
}

static int matmul_run(struct aclOpExecutor *e, char *err, size_t errn) {
    const struct aclTensor *A = &e->a, *B = &e->b, *C = &e->c;
    if (!tensor_mem_ok(A) || !tensor_mem_ok(B) || !tensor_mem_ok(C)) { snprintf(err, errn, "aclnnMatmul: tensors not in live device memory at execution"); return ACL_ERROR_RT_AICORE_EXCEPTION; }
    int64_t M = A->dims[0], K = A->dims[1], N = B->dims[1];
    for (int64_t r = 0; r < M; r++)
        for (int64_t n = 0; n < N; n++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++)
                acc += (double)cube_in(loadf(A, r * A->strides[0] + k * A->strides[1]), A->dt, e->k) *
                       (double)cube_in(loadf(B, k * B->strides[0] + n * B->strides[1]), B->dt, e->k);
            storef(C, r * C->strides[0] + n * C->strides[1], (float)acc);
        }
    return 0;
}

/* ---------- RmsNorm ---------- */
EXPORT aclnnStatus aclnnRmsNormGetWorkspaceSize(const aclTensor *x, const aclTensor *gamma, double epsilon,
                                                const aclTensor *yOut, const aclTensor *rstdOut, uint64_t *workspaceSize,
                                                aclOpExecutor **executor) {
    const char *name = "aclnnRmsNormGetWorkspaceSize";
    if (!x || !gamma || !yOut || !rstdOut || !workspaceSize || !executor) return fail(ACLNN_ERR_PARAM_NULLPTR, "%s: x, gamma, yOut, rstdOut, workspaceSize and executor are required", name);
    if (!tensor_ok(x) || !tensor_ok(gamma) || !tensor_ok(yOut) || !tensor_ok(rstdOut)) return fail(ACLNN_ERR_PARAM_INVALID, "%s: not a tensor", name);
    if (!is_float(x->dt) || yOut->dt != x->dt || (gamma->dt != x->dt && gamma->dt != ACL_FLOAT))
        return fail(ACLNN_ERR_PARAM_INVALID, "%s: x and yOut must share a float dtype and gamma be it or FLOAT (x %d, gamma %d, y %d)", name, x->dt, gamma->dt, yOut->dt);
    if (rstdOut->dt != ACL_FLOAT) return fail(ACLNN_ERR_PARAM_INVALID, "%s: rstdOut must be FLOAT (got %d)", name, rstdOut->dt);
    if (x->fmt != ACL_FORMAT_ND || gamma->fmt != ACL_FORMAT_ND || yOut->fmt != ACL_FORMAT_ND || rstdOut->fmt != ACL_FORMAT_ND) return fail(ACLNN_ERR_PARAM_INVALID, "%s: only ACL_FORMAT_ND is emulated", name);
    if (epsilon != epsilon || epsilon < 0 || isinf(epsilon)) return fail(ACLNN_ERR_PARAM_INVALID, "%s: epsilon %g", name, epsilon);
    if (x->ndim < 1 || gamma->ndim < 1 || gamma->ndim > x->ndim) return fail(ACLNN_ERR_PARAM_INVALID, "%s: gamma is %d-D for %d-D x", name, gamma->ndim, x->ndim);
    int lead = x->ndim - gamma->ndim;
    for (int i = 0; i < gamma->ndim; i++)
        if (gamma->dims[i] != x->dims[lead + i]) return fail(ACLNN_ERR_PARAM_INVALID, "%s: gamma dim %d is %lld, x's trailing dim is %lld", name, i, (long long)gamma->dims[i], (long long)x->dims[lead + i]);
    if (!same_dims(x, yOut)) return fail(ACLNN_ERR_PARAM_INVALID, "%s: yOut's shape differs from x's", name);
    if (rstdOut->ndim != x->ndim) return fail(ACLNN_ERR_PARAM_INVALID, "%s: rstdOut is %d-D for %d-D x", name, rstdOut->ndim, x->ndim);
    for (int i = 0; i < x->ndim; i++)
        if (rstdOut->dims[i] != (i < lead ? x->dims[i] : 1)) return fail(ACLNN_ERR_PARAM_INVALID, "%s: rstdOut dim %d is %lld, want %lld (x's leading dims, 1 for gamma's)", name, i, (long long)rstdOut->dims[i], (long long)(i < lead ? x->dims[i] : 1));
    pthread_mutex_lock(&mu);
    struct aclOpExecutor *e = new_exec(OP_RMSNORM, 0);
    pthread_mutex_unlock(&mu);
    e->a = *x;
    e->b = *gamma;
    e->c = *yOut;
    e->d = *rstdOut;
    e->eps = epsilon;
    *workspaceSize = e->ws;
    *executor = e;
    return ACLNN_SUCCESS;
}

EXPORT aclnnStatus aclnnRmsNorm(void *workspace, uint64_t workspaceSize, aclOpExecutor *executor, aclrtStream stream) {
    return launch(workspace, workspaceSize, executor, stream, OP_RMSNORM, "aclnnRmsNorm");
}

static int rmsnorm_run(struct aclOpExecutor *e, char *err, size_t errn) {
    const struct aclTensor *x = &e->a, *g = &e->b, *y = &e->c, *rs = &e->d;
    if (!tensor_mem_ok(x) || !tensor_mem_ok(g) || !tensor_mem_ok(y) || !tensor_mem_ok(rs)) { snprintf(err, errn, "aclnnRmsNorm: tensors not in live device memory at execution"); return ACL_ERROR_RT_AICORE_EXCEPTION; }
    int64_t h = numel(g), rows = h ? numel(x) / h : 0;
    for (int64_t r = 0; r < rows; r++) {
        double ss = 0;
        for (int64_t j = 0; j < h; j++) {
            double v = loadf(x, view_index(x, r * h + j));
            ss += v * v;
        }
        float rstd = (float)(1.0 / sqrt(ss / (double)h + e->eps));
        storef(rs, view_index(rs, r), rstd);
        for (int64_t j = 0; j < h; j++)
            storef(y, view_index(y, r * h + j),
                   (float)((double)loadf(x, view_index(x, r * h + j)) * rstd * (double)loadf(g, view_index(g, j))));
    }
    return 0;
}

/* ---------- MoeGatingTopKSoftmax ---------- */
EXPORT aclnnStatus aclnnMoeGatingTopKSoftmaxGetWorkspaceSize(const aclTensor *x, const aclTensor *finishedOptional,
                                                             int64_t k, const aclTensor *yOut,
                                                             const aclTensor *expertIdxOut, const aclTensor *rowIdxOut,
                                                             uint64_t *workspaceSize, aclOpExecutor **executor) {
    const char *name = "aclnnMoeGatingTopKSoftmaxGetWorkspaceSize";
    if (!x || !yOut || !expertIdxOut || !rowIdxOut || !workspaceSize || !executor) return fail(ACLNN_ERR_PARAM_NULLPTR, "%s: x, yOut, expertIdxOut, rowIdxOut, workspaceSize and executor are required", name);
    if (!tensor_ok(x) || !tensor_ok(yOut) || !tensor_ok(expertIdxOut) || !tensor_ok(rowIdxOut) || (finishedOptional && !tensor_ok(finishedOptional)))
        return fail(ACLNN_ERR_PARAM_INVALID, "%s: not a tensor", name);
    if (!is_float(x->dt) || yOut->dt != x->dt) return fail(ACLNN_ERR_PARAM_INVALID, "%s: x and yOut must share a float dtype (x %d, y %d)", name, x->dt, yOut->dt);
    if (expertIdxOut->dt != ACL_INT32 || rowIdxOut->dt != ACL_INT32) return fail(ACLNN_ERR_PARAM_INVALID, "%s: expertIdxOut and rowIdxOut must be INT32", name);
    if (x->fmt != ACL_FORMAT_ND || yOut->fmt != ACL_FORMAT_ND || expertIdxOut->fmt != ACL_FORMAT_ND || rowIdxOut->fmt != ACL_FORMAT_ND) return fail(ACLNN_ERR_PARAM_INVALID, "%s: only ACL_FORMAT_ND is emulated", name);
    if (x->ndim != 2) return fail(ACLNN_ERR_PARAM_INVALID, "%s: only 2-D x [rows, experts] is emulated (got %d-D)", name, x->ndim);
    int64_t N = x->dims[0], E = x->dims[1];
    if (E < 1 || E > 1024) return fail(ACLNN_ERR_PARAM_INVALID, "%s: %lld experts (1..1024)", name, (long long)E);
    if (k < 1 || k > E) return fail(ACLNN_ERR_PARAM_INVALID, "%s: k %lld of %lld experts", name, (long long)k, (long long)E);
    const struct aclTensor *outs[3] = {yOut, expertIdxOut, rowIdxOut};
    for (int i = 0; i < 3; i++)
        if (outs[i]->ndim != 2 || outs[i]->dims[0] != N || outs[i]->dims[1] != k)
            return fail(ACLNN_ERR_PARAM_INVALID, "%s: output %d must be [%lld, %lld]", name, i, (long long)N, (long long)k);
    if (finishedOptional && (finishedOptional->dt != ACL_BOOL || finishedOptional->ndim != 1 || finishedOptional->dims[0] != N))
        return fail(ACLNN_ERR_PARAM_INVALID, "%s: finished must be BOOL [%lld]", name, (long long)N);
    pthread_mutex_lock(&mu);
    struct aclOpExecutor *e = new_exec(OP_GATING, (uint64_t)(N * E * 4));
    pthread_mutex_unlock(&mu);
    e->a = *x;
    e->b = *yOut;
    e->c = *expertIdxOut;
    e->d = *rowIdxOut;
    if (finishedOptional) e->f = *finishedOptional, e->has_f = 1;
    e->k = k;
    *workspaceSize = e->ws;
    *executor = e;
    return ACLNN_SUCCESS;
}

EXPORT aclnnStatus aclnnMoeGatingTopKSoftmax(void *workspace, uint64_t workspaceSize, aclOpExecutor *executor, aclrtStream stream) {
    return launch(workspace, workspaceSize, executor, stream, OP_GATING, "aclnnMoeGatingTopKSoftmax");
}

static int gating_run(struct aclOpExecutor *e, char *err, size_t errn) {
    const struct aclTensor *x = &e->a, *y = &e->b, *idx = &e->c, *row = &e->d;
    if (!tensor_mem_ok(x) || !tensor_mem_ok(y) || !tensor_mem_ok(idx) || !tensor_mem_ok(row) || (e->has_f && !tensor_mem_ok(&e->f))) {
        snprintf(err, errn, "aclnnMoeGatingTopKSoftmax: tensors not in live device memory at execution");
        return ACL_ERROR_RT_AICORE_EXCEPTION;
    }
    int64_t N = x->dims[0], E = x->dims[1], K = e->k;
    double *p = malloc((size_t)E * sizeof *p);
    char *taken = malloc((size_t)E);
    for (int64_t i = 0; i < N; i++) {
        double m = -INFINITY;
        for (int64_t j = 0; j < E; j++) {
            double v = loadf(x, view_index(x, i * E + j));
            p[j] = v != v ? -INFINITY : v;
            if (p[j] > m) m = p[j];
        }
        if (isinf(m)) { /* the limit: the maxima share the mass (all -inf: uniform) */
            int64_t n = 0;
            for (int64_t j = 0; j < E; j++) n += p[j] == m;
            for (int64_t j = 0; j < E; j++) p[j] = p[j] == m ? 1.0 / (double)n : 0;
        } else {
            double sum = 0;
            for (int64_t j = 0; j < E; j++) sum += p[j] = exp(p[j] - m);
            for (int64_t j = 0; j < E; j++) p[j] /= sum;
        }
        int fin = e->has_f && bool_load(&e->f, i);
        memset(taken, 0, (size_t)E);
        for (int64_t s = 0; s < K; s++) {
            int64_t best = -1;
            for (int64_t j = 0; j < E; j++)
                if (!taken[j] && (best < 0 || p[j] > p[best])) best = j;
            taken[best] = 1;
            storef(y, view_index(y, i * K + s), (float)p[best]);
            i32_store(idx, i * K + s, fin ? (int32_t)E : (int32_t)best);
            i32_store(row, i * K + s, (int32_t)(s * N + i));
        }
    }
    free(p);
    free(taken);
    return 0;
}
