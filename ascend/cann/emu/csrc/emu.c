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

#include "tensor.inc.c"

#include "moe_ops.inc.c"
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
