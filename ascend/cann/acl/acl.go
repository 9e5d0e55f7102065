//go:build cann

package acl

/*
#cgo CFLAGS: -I${SRCDIR}/include
#cgo cann_real CFLAGS: -DMOEMESH_CANN_REAL
#cgo cann_real LDFLAGS: -lascendcl -lnnopbase -lopapi
#cgo !cann_real LDFLAGS: -L${SRCDIR}/../emu/lib -lmoemesh_aclemu -Wl,-rpath,${SRCDIR}/../emu/lib -Wl,-rpath,$ORIGIN -lm
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// Status codes (acl_base.h, rt error codes and aclnn return codes of CANN 8.0).
const (
	Success              = int(C.ACL_SUCCESS)
	ErrInvalidParam      = 100000
	ErrUninitialize      = 100001
	ErrRepeatInitialize  = 100002
	ErrRepeatFinalize    = 100037
	ErrRTParamInvalid    = 107000
	ErrRTInvalidDeviceID = 107001
	ErrRTContextNull     = 107002
	ErrRTStreamContext   = 107003
	ErrRTAddrUnaligned   = 107008
	ErrRTFeatureNotSupp  = 207000
	ErrRTMemoryAlloc     = 207001
	ErrRTMemoryFree      = 207002
	ErrRTAICoreException = 507015
	ErrNNParamNullptr    = 161001
	ErrNNParamInvalid    = 161002
	ErrNNRuntime         = 361001
	ErrNNTiling          = 561002
)

// Error is a failed ACL or aclnn call.
type Error struct {
	Op   string
	Code int
	Msg  string // aclGetRecentErrMsg right after the call ("" if none)
}

func (e *Error) Error() string {
	if e.Msg == "" {
		return fmt.Sprintf("acl: %s: status %d", e.Op, e.Code)
	}
	return fmt.Sprintf("acl: %s: status %d: %s", e.Op, e.Code, e.Msg)
}

// IsOutOfMemory reports whether a device allocation failed for lack of memory.
func (e *Error) IsOutOfMemory() bool { return e.Code == ErrRTMemoryAlloc || e.Code == 200000 }

// call runs f on a locked thread and turns a non-zero status into an *Error with the
// thread's recent error message.
func call(op string, f func() C.int) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	rc := f()
	if rc == 0 {
		return nil
	}
	return &Error{Op: op, Code: int(rc), Msg: recent()}
}

func recent() string {
	m := C.aclGetRecentErrMsg()
	if m == nil {
		return ""
	}
	return C.GoString(m)
}

// RecentErrMsg returns and clears the calling thread's last error message.
func RecentErrMsg() string {
	return recent()
}

// Init initialises ACL (config "" passes NULL).
func Init(config string) error {
	return call("aclInit", func() C.int {
		if config == "" {
			return C.int(C.aclInit(nil))
		}
		cs := C.CString(config)
		defer C.free(unsafe.Pointer(cs))
		return C.int(C.aclInit(cs))
	})
}

// Finalize tears ACL down.
func Finalize() error { return call("aclFinalize", func() C.int { return C.int(C.aclFinalize()) }) }

// SetDevice binds device id (and its default context) to the calling thread.
func SetDevice(id int) error {
	return call("aclrtSetDevice", func() C.int { return C.int(C.aclrtSetDevice(C.int32_t(id))) })
}

// ResetDevice releases the calling thread's hold on device id.
func ResetDevice(id int) error {
	return call("aclrtResetDevice", func() C.int { return C.int(C.aclrtResetDevice(C.int32_t(id))) })
}

// DeviceCount is the number of visible devices.
func DeviceCount() (int, error) {
	var n C.uint32_t
	err := call("aclrtGetDeviceCount", func() C.int { return C.int(C.aclrtGetDeviceCount(&n)) })
	return int(n), err
}

// Context is an aclrtContext.
type Context struct{ p C.aclrtContext }

// CreateContext creates a context on device id and makes it current on the calling thread.
func CreateContext(id int) (Context, error) {
	var c Context
	err := call("aclrtCreateContext", func() C.int { return C.int(C.aclrtCreateContext(&c.p, C.int32_t(id))) })
	return c, err
}

// Destroy destroys the context.
func (c Context) Destroy() error {
	return call("aclrtDestroyContext", func() C.int { return C.int(C.aclrtDestroyContext(c.p)) })
}

// SetCurrent makes c the calling thread's context.
func (c Context) SetCurrent() error {
	return call("aclrtSetCurrentContext", func() C.int { return C.int(C.aclrtSetCurrentContext(c.p)) })
}

// Stream is an aclrtStream; the zero Stream is the context's default stream.
type Stream struct{ p C.aclrtStream }

// CreateStream creates a stream in the current context.
func CreateStream() (Stream, error) {
	var s Stream
	err := call("aclrtCreateStream", func() C.int { return C.int(C.aclrtCreateStream(&s.p)) })
	return s, err
}

// Destroy destroys the stream (synchronise it first).
func (s Stream) Destroy() error {
	return call("aclrtDestroyStream", func() C.int { return C.int(C.aclrtDestroyStream(s.p)) })
}

// Synchronize waits for all work queued on s; errors of that work surface here.
func (s Stream) Synchronize() error {
	return call("aclrtSynchronizeStream", func() C.int { return C.int(C.aclrtSynchronizeStream(s.p)) })
}

// Event is an aclrtEvent.
type Event struct{ p C.aclrtEvent }

// CreateEvent creates an event.
func CreateEvent() (Event, error) {
	var e Event
	err := call("aclrtCreateEvent", func() C.int { return C.int(C.aclrtCreateEvent(&e.p)) })
	return e, err
}

// Record records e at the current end of s.
func (e Event) Record(s Stream) error {
	return call("aclrtRecordEvent", func() C.int { return C.int(C.aclrtRecordEvent(e.p, s.p)) })
}

// Wait makes s wait for the last record of e before running later work.
func (s Stream) Wait(e Event) error {
	return call("aclrtStreamWaitEvent", func() C.int { return C.int(C.aclrtStreamWaitEvent(s.p, e.p)) })
}

// Synchronize waits until the work before e's last record is done.
func (e Event) Synchronize() error {
	return call("aclrtSynchronizeEvent", func() C.int { return C.int(C.aclrtSynchronizeEvent(e.p)) })
}

// Destroy destroys the event.
func (e Event) Destroy() error {
	return call("aclrtDestroyEvent", func() C.int { return C.int(C.aclrtDestroyEvent(e.p)) })
}

// Ptr is an address outside the Go heap (device memory or aclrtMallocHost memory), or, from
// GoBytes, Go memory for synchronous copies only.
type Ptr struct{ p unsafe.Pointer }

// IsNil reports whether p is the null address.
func (p Ptr) IsNil() bool { return p.p == nil }

// Add returns p+off bytes.
func (p Ptr) Add(off int) Ptr { return Ptr{unsafe.Add(p.p, off)} }

// Aligned reports whether p is a multiple of n bytes.
func (p Ptr) Aligned(n int) bool { return uintptr(p.p)%uintptr(n) == 0 }

// GoBytes points at b's first byte. Only for synchronous calls: ACL must not keep Go
// pointers past a call (an async copy from Go memory is what the runtime rejects).
func GoBytes(b []byte) Ptr {
	if len(b) == 0 {
		return Ptr{}
	}
	return Ptr{unsafe.Pointer(&b[0])}
}

// HostSlice views n bytes of aclrtMallocHost memory at p as a slice.
func HostSlice(p Ptr, n int) []byte {
	if p.p == nil || n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(p.p), n)
}

// MallocPolicy is aclrtMemMallocPolicy.
type MallocPolicy int

const (
	HugeFirst  MallocPolicy = C.ACL_MEM_MALLOC_HUGE_FIRST
	NormalOnly MallocPolicy = C.ACL_MEM_MALLOC_NORMAL_ONLY
)

// Malloc allocates size bytes of device memory in the current context.
func Malloc(size int, policy MallocPolicy) (Ptr, error) {
	var p unsafe.Pointer
	err := call("aclrtMalloc", func() C.int {
		return C.int(C.aclrtMalloc(&p, C.size_t(size), C.aclrtMemMallocPolicy(policy)))
	})
	return Ptr{p}, err
}

// Free frees device memory.
func Free(p Ptr) error { return call("aclrtFree", func() C.int { return C.int(C.aclrtFree(p.p)) }) }

// MallocHost allocates page-locked host memory (needed by async copies).
func MallocHost(size int) (Ptr, error) {
	var p unsafe.Pointer
	err := call("aclrtMallocHost", func() C.int { return C.int(C.aclrtMallocHost(&p, C.size_t(size))) })
	return Ptr{p}, err
}

// FreeHost frees MallocHost memory.
func FreeHost(p Ptr) error {
	return call("aclrtFreeHost", func() C.int { return C.int(C.aclrtFreeHost(p.p)) })
}

// MemcpyKind is aclrtMemcpyKind.
type MemcpyKind int

const (
	HostToHost     MemcpyKind = C.ACL_MEMCPY_HOST_TO_HOST
	HostToDevice   MemcpyKind = C.ACL_MEMCPY_HOST_TO_DEVICE
	DeviceToHost   MemcpyKind = C.ACL_MEMCPY_DEVICE_TO_HOST
	DeviceToDevice MemcpyKind = C.ACL_MEMCPY_DEVICE_TO_DEVICE
	DefaultKind    MemcpyKind = C.ACL_MEMCPY_DEFAULT
)

// Memcpy copies synchronously (not ordered after work queued on streams).
func Memcpy(dst Ptr, destMax int, src Ptr, count int, kind MemcpyKind) error {
	return call("aclrtMemcpy", func() C.int {
		return C.int(C.aclrtMemcpy(dst.p, C.size_t(destMax), src.p, C.size_t(count), C.aclrtMemcpyKind(kind)))
	})
}

// MemcpyAsync queues a copy on s; the host side must be MallocHost memory and both
// addresses 64-byte aligned.
func MemcpyAsync(dst Ptr, destMax int, src Ptr, count int, kind MemcpyKind, s Stream) error {
	return call("aclrtMemcpyAsync", func() C.int {
		return C.int(C.aclrtMemcpyAsync(dst.p, C.size_t(destMax), src.p, C.size_t(count), C.aclrtMemcpyKind(kind), s.p))
	})
}

// MemsetAsync queues a byte fill of device memory on s.
func MemsetAsync(p Ptr, maxCount int, value byte, count int, s Stream) error {
	return call("aclrtMemsetAsync", func() C.int {
		return C.int(C.aclrtMemsetAsync(p.p, C.size_t(maxCount), C.int32_t(value), C.size_t(count), s.p))
	})
}

// MemInfo is aclrtGetMemInfo(ACL_HBM_MEM) for the current context's device.
func MemInfo() (free, total int64, err error) {
	var f, t C.size_t
	err = call("aclrtGetMemInfo", func() C.int { return C.int(C.aclrtGetMemInfo(C.ACL_HBM_MEM, &f, &t)) })
	return int64(f), int64(t), err
}

// DataType is aclDataType.
type DataType int

const (
	Float   DataType = C.ACL_FLOAT
	Float16 DataType = C.ACL_FLOAT16
	BF16    DataType = C.ACL_BF16
	Int32   DataType = C.ACL_INT32
	Int64   DataType = C.ACL_INT64
)

// Format is aclFormat.
type Format int

const (
	FormatND        Format = C.ACL_FORMAT_ND
	FormatFractalNZ Format = C.ACL_FORMAT_FRACTAL_NZ
)

// Tensor is an aclTensor: a view (dims, strides, offset in elements) over device storage.
type Tensor struct{ p *C.aclTensor }

func i64p(s []int64) *C.int64_t {
	if len(s) == 0 {
		return nil
	}
	return (*C.int64_t)(unsafe.Pointer(&s[0]))
}

// CreateTensor wraps aclCreateTensor; storage nil means the view's dims.
func CreateTensor(dims, strides []int64, offset int64, dt DataType, format Format, storage []int64, data Ptr) (Tensor, error) {
	if storage == nil {
		storage = dims
	}
	var t Tensor
	err := call("aclCreateTensor", func() C.int {
		t.p = C.aclCreateTensor(i64p(dims), C.uint64_t(len(dims)), C.aclDataType(dt), i64p(strides), C.int64_t(offset),
			C.aclFormat(format), i64p(storage), C.uint64_t(len(storage)), data.p)
		if t.p == nil {
			return ErrNNParamInvalid
		}
		return 0
	})
	return t, err
}

// Contiguous returns the row-major strides of dims.
func Contiguous(dims []int64) []int64 {
	s := make([]int64, len(dims))
	acc := int64(1)
	for i := len(dims) - 1; i >= 0; i-- {
		s[i] = acc
		acc *= dims[i]
	}
	return s
}

// IsNil reports whether t is the absent (NULL) tensor.
func (t Tensor) IsNil() bool { return t.p == nil }

// Destroy destroys a tensor that is not owned by a TensorList.
func (t Tensor) Destroy() error {
	return call("aclDestroyTensor", func() C.int { return C.int(C.aclDestroyTensor(t.p)) })
}

// TensorList is an aclTensorList; it owns its tensors (Destroy destroys them).
type TensorList struct{ p *C.aclTensorList }

// CreateTensorList wraps aclCreateTensorList.
func CreateTensorList(ts ...Tensor) (TensorList, error) {
	ps := make([]*C.aclTensor, len(ts))
	for i, t := range ts {
		ps[i] = t.p
	}
	var l TensorList
	err := call("aclCreateTensorList", func() C.int {
		var pp **C.aclTensor
		if len(ps) > 0 {
			pp = &ps[0]
		}
		l.p = C.aclCreateTensorList(pp, C.uint64_t(len(ps)))
		if l.p == nil {
			return ErrNNParamInvalid
		}
		return 0
	})
	return l, err
}

// Destroy destroys the list and its tensors.
func (l TensorList) Destroy() error {
	return call("aclDestroyTensorList", func() C.int { return C.int(C.aclDestroyTensorList(l.p)) })
}

// IntArray is an aclIntArray (a host array, copied at creation).
type IntArray struct{ p *C.aclIntArray }

// CreateIntArray wraps aclCreateIntArray.
func CreateIntArray(v []int64) (IntArray, error) {
	var a IntArray
	err := call("aclCreateIntArray", func() C.int {
		a.p = C.aclCreateIntArray(i64p(v), C.uint64_t(len(v)))
		if a.p == nil {
			return ErrNNParamInvalid
		}
		return 0
	})
	return a, err
}

// Destroy destroys the array.
func (a IntArray) Destroy() error {
	return call("aclDestroyIntArray", func() C.int { return C.int(C.aclDestroyIntArray(a.p)) })
}

// Executor is an aclOpExecutor from phase 1 of an aclnn call; single-shot.
type Executor struct{ p *C.aclOpExecutor }

// SetRepeatable marks a fresh executor reusable (aclSetAclOpExecutorRepeatable): phase 2
// may then run it many times, until Destroy.
func (ex Executor) SetRepeatable() error {
	return call("aclSetAclOpExecutorRepeatable", func() C.int { return C.int(C.aclSetAclOpExecutorRepeatable(ex.p)) })
}

// Destroy frees an executor (aclDestroyAclOpExecutor); needed for repeatable executors.
func (ex Executor) Destroy() error {
	return call("aclDestroyAclOpExecutor", func() C.int { return C.int(C.aclDestroyAclOpExecutor(ex.p)) })
}

// GroupedMatmulV5WorkspaceSize is phase 1 of aclnnGroupedMatmulV5 without bias,
// quantisation or fused activation (those arguments are NULL): x and out are one-tensor
// lists, weight has one [K, N] tensor per group, groupList an INT64 device tensor (nil
// Tensor: none).
func GroupedMatmulV5WorkspaceSize(x, weight TensorList, groupList Tensor, splitItem, groupType, groupListType, actType int64,
	out TensorList) (uint64, Executor, error) {
	var ws C.uint64_t
	var ex Executor
	err := call("aclnnGroupedMatmulV5GetWorkspaceSize", func() C.int {
		return C.int(C.aclnnGroupedMatmulV5GetWorkspaceSize(x.p, weight.p, nil, nil, nil, nil, nil, nil, groupList.p,
			nil, nil, nil, C.int64_t(splitItem), C.int64_t(groupType), C.int64_t(groupListType), C.int64_t(actType), nil,
			out.p, nil, nil, &ws, &ex.p))
	})
	return uint64(ws), ex, err
}

// GroupedMatmulV5 is phase 2: it queues the matmul on s.
func GroupedMatmulV5(workspace Ptr, size uint64, ex Executor, s Stream) error {
	return call("aclnnGroupedMatmulV5", func() C.int {
		return C.int(C.aclnnGroupedMatmulV5(workspace.p, C.uint64_t(size), ex.p, s.p))
	})
}

// SwiGluWorkspaceSize is phase 1 of aclnnSwiGlu (out = silu(A)·B, A the first half of x
// along dim).
func SwiGluWorkspaceSize(x Tensor, dim int64, out Tensor) (uint64, Executor, error) {
	var ws C.uint64_t
	var ex Executor
	err := call("aclnnSwiGluGetWorkspaceSize", func() C.int {
		return C.int(C.aclnnSwiGluGetWorkspaceSize(x.p, C.int64_t(dim), out.p, &ws, &ex.p))
	})
	return uint64(ws), ex, err
}

// SwiGlu is phase 2 of aclnnSwiGlu.
func SwiGlu(workspace Ptr, size uint64, ex Executor, s Stream) error {
	return call("aclnnSwiGlu", func() C.int { return C.int(C.aclnnSwiGlu(workspace.p, C.uint64_t(size), ex.p, s.p)) })
}

// CastWorkspaceSize is phase 1 of aclnnCast.
func CastWorkspaceSize(x Tensor, dt DataType, out Tensor) (uint64, Executor, error) {
	var ws C.uint64_t
	var ex Executor
	err := call("aclnnCastGetWorkspaceSize", func() C.int {
		return C.int(C.aclnnCastGetWorkspaceSize(x.p, C.aclDataType(dt), out.p, &ws, &ex.p))
	})
	return uint64(ws), ex, err
}

// Cast is phase 2 of aclnnCast.
func Cast(workspace Ptr, size uint64, ex Executor, s Stream) error {
	return call("aclnnCast", func() C.int { return C.int(C.aclnnCast(workspace.p, C.uint64_t(size), ex.p, s.p)) })
}
