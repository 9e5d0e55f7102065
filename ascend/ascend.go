package ascend

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// DType is the element type of a Buffer.
type DType uint8

// Element types. The zero value is invalid so that a missing dtype is caught. I8 and MXFP4
// are quantised weight types (quant.go): a buffer of them is an [N, K] matrix whose storage
// is the packed values followed by their scales, and only GroupedMatmul takes them (as
// weights).
const (
	F32 DType = iota + 1
	BF16
	F16
	I8
	MXFP4
)

// Size is the number of bytes of one element of a plain (unquantised) dtype. It is 0 for
// I8 and MXFP4, whose elements carry a share of a scale: StorageBytes gives the size of
// their buffers. Code that sizes data by Size therefore refuses them instead of
// mis-sizing them.
func (d DType) Size() int {
	switch d {
	case F32:
		return 4
	case BF16, F16:
		return 2
	}
	return 0
}

func (d DType) String() string {
	switch d {
	case F32:
		return "f32"
	case BF16:
		return "bf16"
	case F16:
		return "f16"
	case I8:
		return "i8"
	case MXFP4:
		return "mxfp4"
	}
	return fmt.Sprintf("dtype(%d)", uint8(d))
}

// ParseDType accepts the names String gives ("f32", "bf16", "f16", "i8", "mxfp4").
func ParseDType(s string) (DType, error) {
	switch strings.ToLower(s) {
	case "f32", "float32":
		return F32, nil
	case "bf16", "bfloat16":
		return BF16, nil
	case "f16", "float16":
		return F16, nil
	case "i8", "int8", "w8a16":
		return I8, nil
	case "mxfp4":
		return MXFP4, nil
	}
	return 0, fmt.Errorf("%w: %q (want f32, bf16, f16, i8 or mxfp4)", ErrDType, s)
}

// Errors every backend returns, wrapped with detail.
var (
	ErrOutOfMemory    = errors.New("ascend: card out of memory")
	ErrShape          = errors.New("ascend: shape mismatch")
	ErrDType          = errors.New("ascend: unsupported dtype")
	ErrClosed         = errors.New("ascend: card closed")
	ErrForeignBuffer  = errors.New("ascend: buffer belongs to another card or backend")
	ErrUnknownBackend = errors.New("ascend: unknown backend")
	ErrInvalid        = errors.New("ascend: invalid argument")
)

// Backend opens cards of one kind of device.
type Backend interface {
	// Name is the registered name ("cpu", "cann").
	Name() string
	// OpenCard opens card id. budget caps the bytes its buffers may hold; 0 means the
	// device's own memory (for the cpu backend: unlimited).
	OpenCard(id int, budget int64) (Card, error)
}

// MemInfo is a card's memory accounting in bytes.
type MemInfo struct {
	Used  int64
	Total int64 // 0: unlimited
}

// Buffer is device memory holding a dense row-major tensor.
type Buffer interface {
	DType() DType
	Shape() []int
	// Bytes is the size of the tensor data: elements × dtype size, or for I8 and MXFP4
	// the whole storage, values and scales (StorageBytes).
	Bytes() int64
}

// Card is one unit of placement: an accelerator (or an emulated one) with its own memory
// budget. A Card is safe for use by one goroutine at a time; the daemon gives each card one
// worker goroutine, which is what ACL's per-thread contexts need too.
//
// Ops are enqueued in order and may run asynchronously; Read waits for all earlier work.
type Card interface {
	ID() int
	// Alloc reserves a zero-filled buffer; past the budget it returns an error wrapping
	// ErrOutOfMemory and the card's state is unchanged. I8 and MXFP4 buffers must be 2-D
	// (CheckQuantShape); a card that does not support a dtype (Supports) returns ErrDType.
	Alloc(dt DType, shape ...int) (Buffer, error)
	// Free releases b; freeing twice or a foreign buffer is an error.
	Free(b Buffer) error
	// Write copies raw little-endian bytes of b's dtype into b starting at element offset off.
	// For I8 and MXFP4, off and len(data) count bytes of the storage layout (QuantLayout:
	// values, then scales), so a loader writes a checkpoint's two tensors as they are.
	Write(b Buffer, off int, data []byte) error
	// WriteF32 converts src to b's dtype (round to nearest even) and stores it at element
	// offset off. For I8 and MXFP4, off and len(src) must cover whole rows; each row is
	// quantised (QuantizeI8Row, QuantizeMXFP4Row) and non-finite values are refused.
	WriteF32(b Buffer, off int, src []float32) error
	// ReadF32 waits for earlier ops and converts b's first len(dst) elements to f32
	// (dequantised, for I8 and MXFP4).
	ReadF32(b Buffer, dst []float32) error
	MemInfo() MemInfo
	Close() error
	Ops
}

// Ops are the expert operations. Activations are f32; weights may be f32, bf16 or f16 (and,
// on cards that support them, I8 and MXFP4, in GroupedMatmul only) and are accumulated in
// f32. Every op is deterministic, and a row's result depends only on
// that row's inputs (never on the other rows, the row count or the grouping); this is what
// lets a mesh reproduce an in-process result bit for bit.
type Ops interface {
	// GroupedMatmul: x is [M, K] f32; weights[g] is [N, K] (a Linear's [out, in]); out is
	// [M, N] f32. Group g covers the next counts[g] rows of x: out[r] = x[r] · weights[g]ᵀ.
	// Rows past sum(counts) are left unwritten (as aclnnGroupedMatmul does).
	GroupedMatmul(out, x Buffer, weights []Buffer, counts []int64) error
	// SwiGLU: x is [M, 2N] (gate | up), out [M, N]: out = silu(gate) * up. With limit > 0
	// it is DeepSeek-V4's clamped form: gate = min(gate, limit), up = clamp(up, -limit, limit).
	SwiGLU(out, x Buffer, limit float32) error
	// ScatterAdd: for i in order, out[dst[i]] += w[i] * x[src[i]] (rows of width N).
	// out is [R, N] f32, x is [P, N] f32.
	ScatterAdd(out, x Buffer, src, dst []int32, w []float32) error
}

var (
	registryMu sync.Mutex
	registry   = map[string]func() Backend{}
)

// Register makes a backend available to Open. It is called from init of backend packages;
// registering a name twice is a programming error and panics.
func Register(name string, f func() Backend) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("ascend: backend registered twice: " + name)
	}
	registry[name] = f
}

// Open returns the backend registered under name.
func Open(name string) (Backend, error) {
	registryMu.Lock()
	defer registryMu.Unlock()
	f, ok := registry[name]
	if !ok {
		names := make([]string, 0, len(registry))
		for n := range registry {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("%w: %q (built in: %s)", ErrUnknownBackend, name, strings.Join(names, ", "))
	}
	return f(), nil
}

// Elements is the number of elements of a shape.
func Elements(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}
