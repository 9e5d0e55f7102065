/*
 * moemesh ACL emulator: the symbols of ascend/cann/acl/include/acl_subset.h implemented on
 * the CPU with the semantics of the real runtime that matter to callers (cann.md §7):
 *   - aclInit once (100002 on repeat), device/context bound per OS thread (107002 without one);
 *   - device memory: 64-B aligned, capacity round32(size)+32 charged against an HBM size
 *     (MOEMESH_EMU_HBM, bytes with optional K/M/G suffix, default 32G; MOEMESH_EMU_DEVICES,
 *     default 8), poison-filled with 0xFF (a NaN in every float dtype), 207001 when exhausted,
 *     207002 on a double or foreign free;
 *   - streams execute nothing when work is enqueued: copies, memsets and kernels run in FIFO
 *     order at aclrtSynchronizeStream / aclrtSynchronizeEvent, so a caller that skips the sync
 *     reads poison or stale data; aclrtStreamWaitEvent orders streams;
 *   - memcpy kinds checked against pointer provenance; async copies need 64-B aligned
 *     addresses (107008) and page-locked host memory from aclrtMallocHost (rejected with
 *     100000: on the device this is undefined behaviour); async H2H is 207000;
 *   - aclnn two-phase calls: phase 1 validates and returns a workspace size (non-zero for
 *     GroupedMatmulV5) and a single-shot executor; phase 2 checks the workspace and consumes
 *     the executor, a second launch is 161002;
 *   - aclGetRecentErrMsg returns and clears a per-thread message.
 * Everything is guarded by one mutex; kernels run single-threaded when a stream drains.
 * Ops: GroupedMatmulV5, SwiGlu and Cast here; Matmul, RmsNorm and MoeGatingTopKSoftmax in
 * dense_ops.inc.c; Mul, Embedding, the integer casts and GroupedMatmulV5's A16W8 mode in
 * quant_ops.inc.c. This file includes both (one translation unit, shared static helpers).
 */
#include "../../acl/include/acl_subset.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))
#define MAGIC_CTX 0x43545821u
#define MAGIC_STREAM 0x53545221u
#define MAGIC_EVENT 0x45564e21u
#define MAGIC_TENSOR 0x54454e21u
#define MAGIC_TLIST 0x544c5321u
#define MAGIC_IARR 0x49415221u
#define MAGIC_EXEC 0x45584521u
#define MAXDIM 8

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int inited;
static int ndev = 8;
static size_t hbm = (size_t)32 << 30;

/* ---------- errors ---------- */
static __thread char errmsg[1024];
static __thread char errret[1024];
static __thread int haserr;

static int fail(int code, const char *fmt, ...) {
    va_list ap;
    int n = snprintf(errmsg, sizeof errmsg, "EMU%d: ", code);
    va_start(ap, fmt);
    vsnprintf(errmsg + n, sizeof errmsg - n, fmt, ap);
    va_end(ap);
    haserr = 1;
    return code;
}

EXPORT const char *aclGetRecentErrMsg(void) {
    if (!haserr) return NULL;
    memcpy(errret, errmsg, sizeof errret);
    haserr = 0;
    errmsg[0] = 0;
    return errret;
}

/* ---------- devices, contexts ---------- */
struct stream;
struct ctx {
    unsigned magic;
    int dev;
    int isdefault;
    struct stream *defstream;
};
struct device {
    size_t used;
    struct ctx *defctx;
    int refs;
};
static struct device devs[64];
static __thread struct ctx *cur;

static size_t parse_size(const char *s, size_t def) {
    if (!s || !*s) return def;
    char *end;
    double v = strtod(s, &end);
    if (end == s || v <= 0) return def;
    switch (*end) {
    case 'k': case 'K': v *= 1024.0; break;
    case 'm': case 'M': v *= 1024.0 * 1024; break;
    case 'g': case 'G': v *= 1024.0 * 1024 * 1024; break;
    }
    return (size_t)v;
}

EXPORT aclError aclInit(const char *configPath) {
    (void)configPath;
    pthread_mutex_lock(&mu);
    if (inited) {
        pthread_mutex_unlock(&mu);
        return fail(ACL_ERROR_REPEAT_INITIALIZE, "aclInit: repeated initialization");
    }
    hbm = parse_size(getenv("MOEMESH_EMU_HBM"), (size_t)32 << 30);
    const char *d = getenv("MOEMESH_EMU_DEVICES");
    if (d && atoi(d) > 0 && atoi(d) <= 64) ndev = atoi(d);
    inited = 1;
    pthread_mutex_unlock(&mu);
    return ACL_SUCCESS;
}

EXPORT aclError aclFinalize(void) {
    pthread_mutex_lock(&mu);
    if (!inited) {
        pthread_mutex_unlock(&mu);
        return fail(ACL_ERROR_REPEAT_FINALIZE, "aclFinalize: not initialized or already finalized");
    }
    inited = 0;
    pthread_mutex_unlock(&mu);
    return ACL_SUCCESS;
}

#define LOCK_INIT(name)                                                              \
    pthread_mutex_lock(&mu);                                                         \
    if (!inited) {                                                                   \
        pthread_mutex_unlock(&mu);                                                   \
        return fail(ACL_ERROR_UNINITIALIZE, "%s: aclInit has not been called", name); \
    }
#define LOCK_CTX(name)                                                                      \
    LOCK_INIT(name)                                                                         \
    if (!cur) {                                                                             \
        pthread_mutex_unlock(&mu);                                                          \
        return fail(ACL_ERROR_RT_CONTEXT_NULL, "%s: no current context on this thread", name); \
    }
#define RET(x)                       \
    do {                             \
        int r__ = (x);               \
        pthread_mutex_unlock(&mu);   \
        return r__;                  \
    } while (0)

EXPORT aclError aclrtGetDeviceCount(uint32_t *count) {
    LOCK_INIT("aclrtGetDeviceCount");
    if (!count) RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtGetDeviceCount: count is NULL"));
    *count = (uint32_t)ndev;
    RET(ACL_SUCCESS);
}

static struct ctx *new_ctx(int dev, int isdef) {
    struct ctx *c = calloc(1, sizeof *c);
    c->magic = MAGIC_CTX;
    c->dev = dev;
    c->isdefault = isdef;
    return c;
}

EXPORT aclError aclrtSetDevice(int32_t id) {
    LOCK_INIT("aclrtSetDevice");
    if (id < 0 || id >= ndev) RET(fail(ACL_ERROR_RT_INVALID_DEVICEID, "aclrtSetDevice: device %d of %d", id, ndev));
    if (!devs[id].defctx) devs[id].defctx = new_ctx(id, 1);
    devs[id].refs++;
    cur = devs[id].defctx;
    RET(ACL_SUCCESS);
}

EXPORT aclError aclrtResetDevice(int32_t id) {
    LOCK_INIT("aclrtResetDevice");
    if (id < 0 || id >= ndev || devs[id].refs == 0)
        RET(fail(ACL_ERROR_RT_INVALID_DEVICEID, "aclrtResetDevice: device %d is not set", id));
    if (--devs[id].refs == 0 && cur == devs[id].defctx) cur = NULL;
    RET(ACL_SUCCESS);
}

EXPORT aclError aclrtCreateContext(aclrtContext *out, int32_t id) {
    LOCK_INIT("aclrtCreateContext");
    if (!out) RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtCreateContext: context is NULL"));
    if (id < 0 || id >= ndev) RET(fail(ACL_ERROR_RT_INVALID_DEVICEID, "aclrtCreateContext: device %d of %d", id, ndev));
    struct ctx *c = new_ctx(id, 0);
    *out = c;
    cur = c;
    RET(ACL_SUCCESS);
}

static int drain_all(struct stream *s);
static void free_stream(struct stream *s);

EXPORT aclError aclrtDestroyContext(aclrtContext h) {
    LOCK_INIT("aclrtDestroyContext");
    struct ctx *c = h;
    if (!c || c->magic != MAGIC_CTX || c->isdefault)
        RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtDestroyContext: not a context made by aclrtCreateContext"));
    if (c->defstream) {
        drain_all(c->defstream);
        free_stream(c->defstream);
    }
    c->magic = 0;
    if (cur == c) cur = NULL;
    free(c);
    RET(ACL_SUCCESS);
}

EXPORT aclError aclrtSetCurrentContext(aclrtContext h) {
    LOCK_INIT("aclrtSetCurrentContext");
    struct ctx *c = h;
    if (!c || c->magic != MAGIC_CTX) RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtSetCurrentContext: invalid context"));
    cur = c;
    RET(ACL_SUCCESS);
}

/* ---------- memory ---------- */
enum { K_DEV = 1, K_HOST = 2 };
struct alloc {
    char *base;
    size_t size, cap;
    int dev, kind;
    struct alloc *next;
};
static struct alloc *allocs;
static uint64_t nlive[3];

static struct alloc *find(const void *p) {
    for (struct alloc *a = allocs; a; a = a->next)
        if ((const char *)p >= a->base && (const char *)p < a->base + a->cap) return a;
    return NULL;
}

static size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

EXPORT aclError aclrtMalloc(void **p, size_t size, aclrtMemMallocPolicy policy) {
    LOCK_CTX("aclrtMalloc");
    if (!p) RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtMalloc: devPtr is NULL"));
    if (size == 0) RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtMalloc: size is 0"));
    if ((int)policy < 0 || (int)policy > 5) RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtMalloc: policy %d", (int)policy));
    if (size > hbm) RET(fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "aclrtMalloc: %zu bytes: out of memory (%zu of %zu bytes free on device %d)", size, hbm - devs[cur->dev].used, hbm, cur->dev));
    size_t cap = round_up(size, 32) + 32;
    struct device *d = &devs[cur->dev];
    if (cap > hbm - d->used)
        RET(fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "aclrtMalloc: %zu bytes: out of memory (%zu of %zu bytes free on device %d)", size, hbm - d->used, hbm, cur->dev));
    char *b = aligned_alloc(64, round_up(cap, 64));
    if (!b) RET(fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "aclrtMalloc: %zu bytes: host allocation for the emulated HBM failed", size));
    memset(b, 0xFF, cap);
    struct alloc *a = calloc(1, sizeof *a);
    *a = (struct alloc){b, size, cap, cur->dev, K_DEV, allocs};
    allocs = a;
    d->used += cap;
    nlive[K_DEV]++;
    *p = b;
    RET(ACL_SUCCESS);
}

static int free_kind(void *p, int kind, const char *name) {
    struct alloc **pp = &allocs;
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->base == p) break;
    if (!*pp || (*pp)->kind != kind)
        return fail(ACL_ERROR_RT_MEMORY_FREE, "%s: %p is not a live %s allocation (double or foreign free)", name, p,
                    kind == K_DEV ? "device" : "host");
    struct alloc *a = *pp;
    *pp = a->next;
    if (kind == K_DEV) devs[a->dev].used -= a->cap;
    nlive[kind]--;
    memset(a->base, 0xEE, a->cap);
    free(a->base);
    free(a);
    return ACL_SUCCESS;
}

EXPORT aclError aclrtFree(void *p) {
    LOCK_INIT("aclrtFree");
    if (!p) RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtFree: devPtr is NULL"));
    RET(free_kind(p, K_DEV, "aclrtFree"));
}

EXPORT aclError aclrtMallocHost(void **p, size_t size) {
    LOCK_CTX("aclrtMallocHost");
    if (!p || size == 0) RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtMallocHost: hostPtr NULL or size 0"));
    size_t cap = round_up(size, 64);
    char *b = aligned_alloc(64, cap);
    if (!b) RET(fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "aclrtMallocHost: %zu bytes", size));
    memset(b, 0xFF, cap);
    struct alloc *a = calloc(1, sizeof *a);
    *a = (struct alloc){b, size, cap, cur->dev, K_HOST, allocs};
    allocs = a;
    nlive[K_HOST]++;
    *p = b;
    RET(ACL_SUCCESS);
}

EXPORT aclError aclrtFreeHost(void *p) {
    LOCK_INIT("aclrtFreeHost");
    if (!p) RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtFreeHost: hostPtr is NULL"));
    RET(free_kind(p, K_HOST, "aclrtFreeHost"));
}

EXPORT aclError aclrtGetMemInfo(aclrtMemAttr attr, size_t *freeb, size_t *total) {
    LOCK_CTX("aclrtGetMemInfo");
    if (!freeb || !total) RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtGetMemInfo: NULL output"));
    if (attr != ACL_HBM_MEM && attr != ACL_HBM_MEM_HUGE && attr != ACL_HBM_MEM_NORMAL)
        RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtGetMemInfo: only HBM attributes are emulated (got %d)", (int)attr));
    *total = hbm;
    *freeb = hbm - devs[cur->dev].used;
    RET(ACL_SUCCESS);
}

/* checks a device range [p, p+n) lies in one live device allocation */
static int dev_range(const void *p, size_t n, const char *name, const char *what) {
    struct alloc *a = find(p);
    if (!a || a->kind != K_DEV)
        return fail(ACL_ERROR_INVALID_PARAM, "%s: %s %p is not device memory", name, what, p);
    if (n > (size_t)(a->base + a->cap - (const char *)p))
        return fail(ACL_ERROR_INVALID_PARAM, "%s: %s range of %zu bytes runs past its allocation", name, what, n);
    return 0;
}

/* memcpy kind validation; *kind is resolved for DEFAULT. */
static int check_copy(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind *kind, const char *name) {
    if (!dst || !src) return fail(ACL_ERROR_INVALID_PARAM, "%s: NULL address", name);
    if (count > destMax) return fail(ACL_ERROR_INVALID_PARAM, "%s: count %zu > destMax %zu", name, count, destMax);
    struct alloc *ad = find(dst), *as = find(src);
    int ddev = ad && ad->kind == K_DEV, sdev = as && as->kind == K_DEV;
    aclrtMemcpyKind k = *kind;
    if (k == ACL_MEMCPY_DEFAULT)
        k = sdev ? (ddev ? ACL_MEMCPY_DEVICE_TO_DEVICE : ACL_MEMCPY_DEVICE_TO_HOST)
                 : (ddev ? ACL_MEMCPY_HOST_TO_DEVICE : ACL_MEMCPY_HOST_TO_HOST);
    if ((int)k < 0 || (int)k > 3) return fail(ACL_ERROR_INVALID_PARAM, "%s: memcpy kind %d", name, (int)*kind);
    int wantd = k == ACL_MEMCPY_HOST_TO_DEVICE || k == ACL_MEMCPY_DEVICE_TO_DEVICE;
    int wants = k == ACL_MEMCPY_DEVICE_TO_HOST || k == ACL_MEMCPY_DEVICE_TO_DEVICE;
    if (wantd != ddev || wants != sdev)
        return fail(ACL_ERROR_INVALID_PARAM, "%s: kind %d but dst is %s memory and src is %s memory", name, (int)k,
                    ddev ? "device" : "host", sdev ? "device" : "host");
    if (ddev && dev_range(dst, count, name, "dst")) return ACL_ERROR_INVALID_PARAM;
    if (sdev && dev_range(src, count, name, "src")) return ACL_ERROR_INVALID_PARAM;
    *kind = k;
    return 0;
}

EXPORT aclError aclrtMemcpy(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind) {
    LOCK_CTX("aclrtMemcpy");
    int rc = check_copy(dst, destMax, src, count, &kind, "aclrtMemcpy");
    if (rc) RET(rc);
    memmove(dst, src, count); /* synchronous: not ordered after queued stream work */
    RET(ACL_SUCCESS);
}

EXPORT aclError aclrtMemset(void *p, size_t maxCount, int32_t value, size_t count) {
    LOCK_CTX("aclrtMemset");
    if (count > maxCount) RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtMemset: count %zu > maxCount %zu", count, maxCount));
    if (dev_range(p, count, "aclrtMemset", "devPtr")) RET(ACL_ERROR_INVALID_PARAM);
    memset(p, value, count);
    RET(ACL_SUCCESS);
}

/* ---------- streams, events, tasks ---------- */
struct aclOpExecutor;
enum { T_COPY, T_MEMSET, T_KERNEL, T_RECORD, T_WAIT };
struct task {
    int type;
    uint64_t seq;
    void *dst;
    const void *src;
    size_t n;
    int value;
    struct aclOpExecutor *ex;
    struct stream *target;
    uint64_t tseq;
    struct task *next;
};
struct stream {
    unsigned magic;
    struct ctx *ctx;
    struct task *head, *tail;
    uint64_t seq, done;
    int err;
    char errtext[512];
};
struct event {
    unsigned magic;
    struct stream *s;
    uint64_t seq;
};

static int run_kernel(struct aclOpExecutor *ex, char *err, size_t errn);
static void free_exec(struct aclOpExecutor *ex);
static void kernel_done(struct aclOpExecutor *ex);

static void run_task(struct stream *s, struct task *t);
static void drain_until(struct stream *s, uint64_t seq) {
    while (s->head && s->head->seq <= seq) {
        struct task *t = s->head;
        s->head = t->next;
        if (!s->head) s->tail = NULL;
        run_task(s, t);
        s->done = t->seq;
        free(t);
    }
}
static int drain_all(struct stream *s) {
    drain_until(s, UINT64_MAX);
    return s->err;
}

static void stream_fail(struct stream *s, int code, const char *msg) {
    if (!s->err) {
        s->err = code;
        snprintf(s->errtext, sizeof s->errtext, "%s", msg);
    }
}

static void run_task(struct stream *s, struct task *t) {
    switch (t->type) {
    case T_COPY: {
        struct alloc *a = find(t->dst), *b = find(t->src);
        if (!a || !b) {
            stream_fail(s, ACL_ERROR_RT_INTERNAL_ERROR, "async copy: memory was freed before the stream ran the copy");
            return;
        }
        memmove(t->dst, t->src, t->n);
        return;
    }
    case T_MEMSET:
        if (!find(t->dst)) {
            stream_fail(s, ACL_ERROR_RT_INTERNAL_ERROR, "async memset: memory was freed before the stream ran it");
            return;
        }
        memset(t->dst, t->value, t->n);
        return;
    case T_KERNEL: {
        char err[512] = "";
        int rc = run_kernel(t->ex, err, sizeof err);
        if (rc) stream_fail(s, rc, err);
        kernel_done(t->ex);
        return;
    }
    case T_RECORD:
        return;
    case T_WAIT:
        drain_until(t->target, t->tseq);
        return;
    }
}

static struct task *enqueue(struct stream *s, int type) {
    struct task *t = calloc(1, sizeof *t);
    t->type = type;
    t->seq = ++s->seq;
    if (s->tail) s->tail->next = t; else s->head = t;
    s->tail = t;
    return t;
}

static void free_stream(struct stream *s) {
    s->magic = 0;
    free(s);
}

/* resolves a stream handle (NULL: the current context's default stream). */
static int get_stream(aclrtStream h, struct stream **out, const char *name) {
    struct stream *s = h;
    if (!s) {
        if (!cur->defstream) {
            s = calloc(1, sizeof *s);
            s->magic = MAGIC_STREAM;
            s->ctx = cur;
            cur->defstream = s;
        }
        s = cur->defstream;
    }
    if (s->magic != MAGIC_STREAM) return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: invalid stream", name);
    if (s->ctx != cur) return fail(ACL_ERROR_RT_STREAM_CONTEXT, "%s: stream belongs to another context", name);
    *out = s;
    return 0;
}

EXPORT aclError aclrtCreateStream(aclrtStream *out) {
    LOCK_CTX("aclrtCreateStream");
    if (!out) RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtCreateStream: stream is NULL"));
    struct stream *s = calloc(1, sizeof *s);
    s->magic = MAGIC_STREAM;
    s->ctx = cur;
    *out = s;
    RET(ACL_SUCCESS);
}

EXPORT aclError aclrtDestroyStream(aclrtStream h) {
    LOCK_CTX("aclrtDestroyStream");
    struct stream *s;
    if (!h) RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtDestroyStream: stream is NULL"));
    if (get_stream(h, &s, "aclrtDestroyStream")) RET(ACL_ERROR_RT_PARAM_INVALID);
    drain_all(s);
    free_stream(s);
    RET(ACL_SUCCESS);
}

EXPORT aclError aclrtSynchronizeStream(aclrtStream h) {
    LOCK_CTX("aclrtSynchronizeStream");
    struct stream *s;
    int rc = get_stream(h, &s, "aclrtSynchronizeStream");
    if (rc) RET(rc);
    if (drain_all(s)) {
        rc = fail(s->err, "aclrtSynchronizeStream: %s", s->errtext);
        s->err = 0;
        RET(rc);
    }
    RET(ACL_SUCCESS);
}

EXPORT aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind,
                                 aclrtStream h) {
    LOCK_CTX("aclrtMemcpyAsync");
    struct stream *s;
    int rc = get_stream(h, &s, "aclrtMemcpyAsync");
    if (rc) RET(rc);
    rc = check_copy(dst, destMax, src, count, &kind, "aclrtMemcpyAsync");
    if (rc) RET(rc);
    if (kind == ACL_MEMCPY_HOST_TO_HOST)
        RET(fail(ACL_ERROR_RT_FEATURE_NOT_SUPPORT, "aclrtMemcpyAsync: host-to-host copies are not supported asynchronously"));
    if (((uintptr_t)dst | (uintptr_t)src) % 64)
        RET(fail(ACL_ERROR_RT_ADDR_UNALIGNED, "aclrtMemcpyAsync: dst %p / src %p not 64-byte aligned", dst, src));
    const void *host = kind == ACL_MEMCPY_HOST_TO_DEVICE ? src : kind == ACL_MEMCPY_DEVICE_TO_HOST ? dst : NULL;
    if (host) {
        struct alloc *a = find(host);
        if (!a || a->kind != K_HOST)
            RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtMemcpyAsync: host address %p is not page-locked memory from aclrtMallocHost", host));
        if (count > (size_t)(a->base + a->cap - (const char *)host))
            RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtMemcpyAsync: host range runs past its aclrtMallocHost buffer"));
    }
    if (count == 0) RET(ACL_SUCCESS);
    struct task *t = enqueue(s, T_COPY);
    t->dst = dst;
    t->src = src;
    t->n = count;
    RET(ACL_SUCCESS);
}

EXPORT aclError aclrtMemsetAsync(void *p, size_t maxCount, int32_t value, size_t count, aclrtStream h) {
    LOCK_CTX("aclrtMemsetAsync");
    struct stream *s;
    int rc = get_stream(h, &s, "aclrtMemsetAsync");
    if (rc) RET(rc);
    if (count > maxCount) RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtMemsetAsync: count %zu > maxCount %zu", count, maxCount));
    if (dev_range(p, count, "aclrtMemsetAsync", "devPtr")) RET(ACL_ERROR_INVALID_PARAM);
    struct task *t = enqueue(s, T_MEMSET);
    t->dst = p;
    t->value = value;
    t->n = count;
    RET(ACL_SUCCESS);
}

EXPORT aclError aclrtCreateEvent(aclrtEvent *out) {
    LOCK_CTX("aclrtCreateEvent");
    if (!out) RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtCreateEvent: event is NULL"));
    struct event *e = calloc(1, sizeof *e);
    e->magic = MAGIC_EVENT;
    *out = e;
    RET(ACL_SUCCESS);
}

EXPORT aclError aclrtRecordEvent(aclrtEvent h, aclrtStream sh) {
    LOCK_CTX("aclrtRecordEvent");
    struct event *e = h;
    struct stream *s;
    if (!e || e->magic != MAGIC_EVENT) RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtRecordEvent: invalid event"));
    int rc = get_stream(sh, &s, "aclrtRecordEvent");
    if (rc) RET(rc);
    e->s = s;
    e->seq = enqueue(s, T_RECORD)->seq;
    RET(ACL_SUCCESS);
}

EXPORT aclError aclrtStreamWaitEvent(aclrtStream sh, aclrtEvent h) {
    LOCK_CTX("aclrtStreamWaitEvent");
    struct event *e = h;
    struct stream *s;
    if (!e || e->magic != MAGIC_EVENT) RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtStreamWaitEvent: invalid event"));
    int rc = get_stream(sh, &s, "aclrtStreamWaitEvent");
    if (rc) RET(rc);
    if (!e->s || e->s->magic != MAGIC_STREAM) RET(ACL_SUCCESS); /* never recorded: nothing to wait for */
    struct task *t = enqueue(s, T_WAIT);
    t->target = e->s;
    t->tseq = e->seq;
    RET(ACL_SUCCESS);
}

EXPORT aclError aclrtSynchronizeEvent(aclrtEvent h) {
    LOCK_CTX("aclrtSynchronizeEvent");
    struct event *e = h;
    if (!e || e->magic != MAGIC_EVENT) RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtSynchronizeEvent: invalid event"));
    if (e->s && e->s->magic == MAGIC_STREAM) drain_until(e->s, e->seq);
    RET(ACL_SUCCESS);
}

EXPORT aclError aclrtDestroyEvent(aclrtEvent h) {
    LOCK_INIT("aclrtDestroyEvent");
    struct event *e = h;
    if (!e || e->magic != MAGIC_EVENT) RET(fail(ACL_ERROR_INVALID_PARAM, "aclrtDestroyEvent: invalid event"));
    e->magic = 0;
    free(e);
    RET(ACL_SUCCESS);
}

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
#include "dense_ops.inc.c"
#include "quant_ops.inc.c"

static int run_kernel(struct aclOpExecutor *e, char *err, size_t errn) {
    switch (e->op) {
    case OP_GMM: return gmm_run(e, err, errn);
    case OP_SWIGLU: return swiglu_run(e, err, errn);
    case OP_CAST: return cast_run(e, err, errn);
    case OP_MATMUL: return matmul_run(e, err, errn);
    case OP_RMSNORM: return rmsnorm_run(e, err, errn);
    case OP_GATING: return gating_run(e, err, errn);
    case OP_MUL: return mul_run(e, err, errn);
    case OP_EMBEDDING: return embedding_run(e, err, errn);
    }
    snprintf(err, errn, "unknown kernel");
    return ACL_ERROR_RT_INTERNAL_ERROR;
}

/* ---------- emulator-only introspection (not part of ACL) ---------- */
EXPORT void moemeshEmuStats(uint64_t *devAllocs, uint64_t *hostAllocs, uint64_t *executors, uint64_t *metaObjects) {
    pthread_mutex_lock(&mu);
    *devAllocs = nlive[K_DEV];
    *hostAllocs = nlive[K_HOST];
    *executors = nexec;
    *metaObjects = nmeta;
    pthread_mutex_unlock(&mu);
}
