/* Included by emu.c (one translation unit): aclnn meta objects (tensors, scalars, lists),
 * element access and conversions, and executors. */

/* ---------- aclnn meta objects ---------- */
struct aclTensor {
    unsigned magic;
    int ndim, sndim;
    int64_t dims[MAXDIM], strides[MAXDIM], sdims[MAXDIM], offset;
    aclDataType dt;
    aclFormat fmt;
    char *data;
};
struct aclTensorList {
    unsigned magic;
    uint64_t n;
    struct aclTensor **t;
};
struct aclIntArray {
    unsigned magic;
    uint64_t n;
    int64_t *v;
};
static uint64_t nmeta;

static int dtsize(aclDataType dt) {
    switch (dt) {
    case ACL_FLOAT: case ACL_INT32: case ACL_UINT32: return 4;
    case ACL_FLOAT16: case ACL_BF16: case ACL_INT16: case ACL_UINT16: return 2;
    case ACL_INT8: case ACL_UINT8: case ACL_BOOL: return 1;
    case ACL_INT64: case ACL_UINT64: case ACL_DOUBLE: return 8;
    default: return 0;
    }
}

EXPORT aclTensor *aclCreateTensor(const int64_t *viewDims, uint64_t nd, aclDataType dt, const int64_t *stride,
                                  int64_t offset, aclFormat format, const int64_t *storageDims, uint64_t snd,
                                  void *data) {
    if (nd > MAXDIM || snd > MAXDIM || (nd && (!viewDims || !stride)) || (snd && !storageDims) || offset < 0 ||
        dtsize(dt) == 0) {
        fail(ACLNN_ERR_PARAM_INVALID, "aclCreateTensor: bad dims/strides/offset/dtype");
        return NULL;
    }
    int64_t storage = 1, last = offset;
    int empty = 0;
    for (uint64_t i = 0; i < snd; i++) {
        if (storageDims[i] < 0) { fail(ACLNN_ERR_PARAM_INVALID, "aclCreateTensor: negative storage dim"); return NULL; }
        storage *= storageDims[i];
    }
    for (uint64_t i = 0; i < nd; i++) {
        if (viewDims[i] < 0 || stride[i] < 0) { fail(ACLNN_ERR_PARAM_INVALID, "aclCreateTensor: negative view dim or stride"); return NULL; }
        if (viewDims[i] == 0) empty = 1;
        else last += (viewDims[i] - 1) * stride[i];
    }
    if (!empty && last >= storage) {
        fail(ACLNN_ERR_PARAM_INVALID, "aclCreateTensor: view (last element %lld) exceeds storage of %lld elements",
             (long long)last, (long long)storage);
        return NULL;
    }
    struct aclTensor *t = calloc(1, sizeof *t);
    t->magic = MAGIC_TENSOR;
    t->ndim = (int)nd;
    t->sndim = (int)snd;
    for (uint64_t i = 0; i < nd; i++) t->dims[i] = viewDims[i], t->strides[i] = stride[i];
    for (uint64_t i = 0; i < snd; i++) t->sdims[i] = storageDims[i];
    t->offset = offset;
    t->dt = dt;
    t->fmt = format;
    t->data = data;
    __atomic_add_fetch(&nmeta, 1, __ATOMIC_SEQ_CST);
    return t;
}

EXPORT aclnnStatus aclDestroyTensor(const aclTensor *t) {
    if (!t) return ACLNN_SUCCESS;
    if (t->magic != MAGIC_TENSOR) return fail(ACLNN_ERR_PARAM_INVALID, "aclDestroyTensor: not a tensor");
    ((struct aclTensor *)t)->magic = 0;
    free((void *)t);
    __atomic_sub_fetch(&nmeta, 1, __ATOMIC_SEQ_CST);
    return ACLNN_SUCCESS;
}

/* A tensor list owns its tensors: aclDestroyTensorList destroys them too. */
EXPORT aclTensorList *aclCreateTensorList(const aclTensor *const *v, uint64_t n) {
    if (n && !v) { fail(ACLNN_ERR_PARAM_NULLPTR, "aclCreateTensorList: value is NULL"); return NULL; }
    struct aclTensorList *l = calloc(1, sizeof *l);
    l->magic = MAGIC_TLIST;
    l->n = n;
    l->t = calloc(n ? n : 1, sizeof *l->t);
    for (uint64_t i = 0; i < n; i++) l->t[i] = (struct aclTensor *)v[i];
    __atomic_add_fetch(&nmeta, 1, __ATOMIC_SEQ_CST);
    return l;
}

EXPORT aclnnStatus aclDestroyTensorList(const aclTensorList *l) {
    if (!l) return ACLNN_SUCCESS;
    if (l->magic != MAGIC_TLIST) return fail(ACLNN_ERR_PARAM_INVALID, "aclDestroyTensorList: not a tensor list");
    for (uint64_t i = 0; i < l->n; i++) aclDestroyTensor(l->t[i]);
    ((struct aclTensorList *)l)->magic = 0;
    free(l->t);
    free((void *)l);
    __atomic_sub_fetch(&nmeta, 1, __ATOMIC_SEQ_CST);
    return ACLNN_SUCCESS;
}

EXPORT aclIntArray *aclCreateIntArray(const int64_t *v, uint64_t n) {
    if (n && !v) { fail(ACLNN_ERR_PARAM_NULLPTR, "aclCreateIntArray: value is NULL"); return NULL; }
    struct aclIntArray *a = calloc(1, sizeof *a);
    a->magic = MAGIC_IARR;
    a->n = n;
    a->v = calloc(n ? n : 1, sizeof *a->v);
    if (n) memcpy(a->v, v, n * sizeof *v);
    __atomic_add_fetch(&nmeta, 1, __ATOMIC_SEQ_CST);
    return a;
}

EXPORT aclnnStatus aclDestroyIntArray(const aclIntArray *a) {
    if (!a) return ACLNN_SUCCESS;
    if (a->magic != MAGIC_IARR) return fail(ACLNN_ERR_PARAM_INVALID, "aclDestroyIntArray: not an int array");
    ((struct aclIntArray *)a)->magic = 0;
    free(a->v);
    free((void *)a);
    __atomic_sub_fetch(&nmeta, 1, __ATOMIC_SEQ_CST);
    return ACLNN_SUCCESS;
}

/* ---------- element access and conversions ---------- */
static float bf16_to_f32(uint16_t h) {
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}
static uint16_t f32_to_bf16(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    if ((b & 0x7fffffff) > 0x7f800000) return (uint16_t)(b >> 16) | 0x40;
    return (uint16_t)((b + 0x7fff + ((b >> 16) & 1)) >> 16);
}
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, b;
    if (exp == 0x1f) b = sign | 0x7f800000 | mant << 13;
    else if (exp == 0) {
        float f = (float)mant * (1.0f / 16777216.0f);
        return sign ? -f : f;
    } else b = sign | (exp + 112) << 23 | mant << 13;
    float f;
    memcpy(&f, &b, 4);
    return f;
}
static uint16_t f32_to_f16(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    uint16_t sign = (b >> 16) & 0x8000;
    int exp = (int)((b >> 23) & 0xff) - 127;
    uint32_t mant = b & 0x7fffff;
    if (exp == 128) return sign | (mant ? 0x7e00 : 0x7c00);
    if (exp > 15) return sign | 0x7c00;
    if (exp >= -14) {
        uint32_t v = (uint32_t)(exp + 15) << 10 | mant >> 13, rest = mant & 0x1fff;
        if (rest > 0x1000 || (rest == 0x1000 && (v & 1))) v++;
        return sign | (uint16_t)v;
    }
    if (exp >= -25) {
        uint32_t m = mant | 0x800000, shift = (uint32_t)(-exp - 1), v = m >> shift, rest = m & ((1u << shift) - 1),
                 half = 1u << (shift - 1);
        if (rest > half || (rest == half && (v & 1))) v++;
        return sign | (uint16_t)v;
    }
    return sign;
}

static int is_float(aclDataType dt) { return dt == ACL_FLOAT || dt == ACL_FLOAT16 || dt == ACL_BF16; }

static float loadf(const struct aclTensor *t, int64_t idx) {
    const char *p = t->data + (t->offset + idx) * dtsize(t->dt);
    switch (t->dt) {
    case ACL_FLOAT: { float f; memcpy(&f, p, 4); return f; }
    case ACL_FLOAT16: { uint16_t h; memcpy(&h, p, 2); return f16_to_f32(h); }
    case ACL_BF16: { uint16_t h; memcpy(&h, p, 2); return bf16_to_f32(h); }
    default: return NAN;
    }
}
static void storef(const struct aclTensor *t, int64_t idx, float v) {
    char *p = t->data + (t->offset + idx) * dtsize(t->dt);
    switch (t->dt) {
    case ACL_FLOAT: memcpy(p, &v, 4); break;
    case ACL_FLOAT16: { uint16_t h = f32_to_f16(v); memcpy(p, &h, 2); break; }
    case ACL_BF16: { uint16_t h = f32_to_bf16(v); memcpy(p, &h, 2); break; }
    default: break;
    }
}
static int64_t numel(const struct aclTensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->dims[i];
    return n;
}
/* storage index (relative to offset) of the element with linear row-major view index li */
static int64_t view_index(const struct aclTensor *t, int64_t li) {
    int64_t idx = 0;
    for (int i = t->ndim - 1; i >= 0; i--) {
        int64_t d = t->dims[i];
        idx += (li % d) * t->strides[i];
        li /= d;
    }
    return idx;
}
/* checks the whole view lies in live device memory (at launch and at execution) */
static int tensor_mem_ok(const struct aclTensor *t) {
    if (numel(t) == 0) return 1;
    int64_t last = t->offset;
    for (int i = 0; i < t->ndim; i++) last += (t->dims[i] - 1) * t->strides[i];
    struct alloc *a = find(t->data);
    return a && a->kind == K_DEV && (size_t)((last + 1) * dtsize(t->dt)) <= (size_t)(a->base + a->cap - t->data);
}

/* ---------- executors ---------- */
enum { OP_GMM = 1, OP_SWIGLU, OP_CAST, OP_MATMUL, OP_RMSNORM, OP_GATING, OP_MUL, OP_EMBEDDING };
struct aclOpExecutor {
    unsigned magic;
    int op;
    uint64_t ws;
    struct aclOpExecutor *next;
    /* GMM */
    struct aclTensor x, out, gl, *w;
    struct aclTensor *as, *ao; /* A16W8: per-group [N] antiquant scale and offset (NULL: none) */
    int nw, has_gl;
    int64_t glType;
    /* SwiGlu / Cast (a, b); Matmul (a·b → c); RmsNorm (a, gamma b → c, rstd d);
       MoeGatingTopKSoftmax (a → b, idx c, rowIdx d, finished f) */
    struct aclTensor a, b, c, d, f;
    int64_t dim, k;
    int has_f;
    double eps;
    /* reuse */
    int repeatable, pending, destroyed, launched;
};
static struct aclOpExecutor *live_execs;
static uint64_t nexec;

static struct aclOpExecutor *new_exec(int op, uint64_t ws) {
    struct aclOpExecutor *e = calloc(1, sizeof *e);
    e->magic = MAGIC_EXEC;
    e->op = op;
    e->ws = ws;
    e->next = live_execs;
    live_execs = e;
    nexec++;
    return e;
}
static void free_exec(struct aclOpExecutor *e) {
    e->magic = 0;
    free(e->w);
    free(e->as);
    free(e->ao);
    free(e);
    nexec--;
}
/* removes e from the live set; 0 if it was not live (consumed, destroyed or never made). */
static int take_exec(struct aclOpExecutor *e, int op) {
    for (struct aclOpExecutor **pp = &live_execs; *pp; pp = &(*pp)->next)
        if (*pp == e) {
            if (e->op != op) return 0;
            *pp = e->next;
            return 1;
        }
    return 0;
}

static int tensor_ok(const aclTensor *t) { return t && t->magic == MAGIC_TENSOR; }

/* common phase-2 checks; takes the executor out of the live set and queues it */
static int launch(void *ws, uint64_t wsSize, aclOpExecutor *ex, aclrtStream h, int op, const char *name) {
    LOCK_CTX(name);
    struct stream *s;
    if (!ex) RET(fail(ACLNN_ERR_PARAM_NULLPTR, "%s: executor is NULL", name));
    int live = 0;
    for (struct aclOpExecutor *e = live_execs; e; e = e->next) live |= e == ex;
    if (!live || ex->op != op)
        RET(fail(ACLNN_ERR_PARAM_INVALID, "%s: executor %p is not live: an executor runs once unless made repeatable "
                                          "(aclSetAclOpExecutorRepeatable), and is gone after it ran", name, (void *)ex));
    if (wsSize < ex->ws) RET(fail(ACLNN_ERR_PARAM_INVALID, "%s: workspace of %llu bytes, phase 1 asked for %llu", name,
                                  (unsigned long long)wsSize, (unsigned long long)ex->ws));
    if (ex->ws > 0) {
        struct alloc *a = find(ws);
        if (!ws || !a || a->kind != K_DEV || (size_t)(a->base + a->cap - (char *)ws) < ex->ws)
            RET(fail(ACLNN_ERR_PARAM_INVALID, "%s: workspace %p is not %llu bytes of device memory", name, ws,
                     (unsigned long long)ex->ws));
    }
    int rc = get_stream(h, &s, name);
    if (rc) RET(fail(ACLNN_ERR_RUNTIME_ERROR, "%s: bad stream", name));
    ex->launched = 1;
    if (ex->repeatable) ex->pending++;
    else take_exec(ex, op);
    enqueue(s, T_KERNEL)->ex = ex;
    RET(ACLNN_SUCCESS);
}

/* after a launch ran: single-shot executors are freed, repeatable ones when destroyed and idle */
static void kernel_done(struct aclOpExecutor *ex) {
    if (!ex->repeatable || (--ex->pending == 0 && ex->destroyed)) free_exec(ex);
}

static int is_live(const struct aclOpExecutor *ex) {
    for (struct aclOpExecutor *e = live_execs; e; e = e->next)
        if (e == ex) return 1;
    return 0;
}

EXPORT aclnnStatus aclSetAclOpExecutorRepeatable(aclOpExecutor *ex) {
    pthread_mutex_lock(&mu);
    int rc = ACLNN_SUCCESS;
    if (!ex) rc = fail(ACLNN_ERR_PARAM_NULLPTR, "aclSetAclOpExecutorRepeatable: executor is NULL");
    else if (!is_live(ex) || ex->launched)
        rc = fail(ACLNN_ERR_PARAM_INVALID, "aclSetAclOpExecutorRepeatable: executor %p is not a fresh phase-1 executor", (void *)ex);
    else ex->repeatable = 1;
    pthread_mutex_unlock(&mu);
    return rc;
}

EXPORT aclnnStatus aclDestroyAclOpExecutor(aclOpExecutor *ex) {
    pthread_mutex_lock(&mu);
    int rc = ACLNN_SUCCESS;
    if (!ex) rc = fail(ACLNN_ERR_PARAM_NULLPTR, "aclDestroyAclOpExecutor: executor is NULL");
    else if (!is_live(ex)) rc = fail(ACLNN_ERR_PARAM_INVALID, "aclDestroyAclOpExecutor: executor %p is not live", (void *)ex);
    else {
        take_exec(ex, ex->op);
        if (ex->pending > 0) ex->destroyed = 1; /* freed when its last queued launch has run */
        else free_exec(ex);
    }
    pthread_mutex_unlock(&mu);
    return rc;
}
