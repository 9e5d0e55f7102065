package cpu

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"

	"github.com/moemesh/moemesh/ascend"
)

func init() {
	ascend.Register("cpu", func() ascend.Backend { return Backend{} })
}

// Backend opens emulated cards whose memory is Go memory and whose ops run on the CPU. The
// zero value is what the "cpu" registration returns.
type Backend struct {
	// Threads is how many goroutines each card's ops use (the caller plus Threads-1
	// helpers); 0 means runtime.GOMAXPROCS(0) at OpenCard. Results do not depend on it.
	Threads int
}

// Name returns "cpu".
func (Backend) Name() string { return "cpu" }

// OpenCard opens an emulated card. budget caps the bytes of live buffers; 0 is unlimited.
func (b Backend) OpenCard(id int, budget int64) (ascend.Card, error) {
	if id < 0 {
		return nil, fmt.Errorf("%w: cpu card id %d", ascend.ErrInvalid, id)
	}
	if budget < 0 {
		return nil, fmt.Errorf("%w: cpu card %d budget %d bytes", ascend.ErrInvalid, id, budget)
	}
	threads := b.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	c := &card{id: id, budget: budget, live: map[*buffer]struct{}{}, pool: newPool(threads)}
	c.mm.panels = make(chan *[]float32, threads)
	// Bound once: a closure or method value made per call would be an allocation per op,
	// since the pool keeps the task function in its job.
	c.gmmTask, c.swigluTask, c.scatterTask = c.mm.task, c.swiglu.task, c.scatter.task
	// A card dropped without Close must not leak its helpers; the pool does not point back
	// at the card, so the card can become unreachable while helpers wait.
	runtime.AddCleanup(c, func(p *pool) { p.stop() }, c.pool)
	return c, nil
}

// card implements ascend.Card. mu guards all state and is held for the whole of each op:
// the contract allows one user at a time, and the lock makes a second one wait instead of
// racing (ops run to completion before returning, so Read never has to wait for them).
type card struct {
	id     int
	budget int64

	mu     sync.Mutex
	used   int64
	live   map[*buffer]struct{}
	closed bool
	pool   *pool
	tasks  []gmmTile // scratch reused by GroupedMatmul
	xpack  []float32 // scratch reused by GroupedMatmul: x packed for the wide kernels

	// An op's arguments for its parallel tasks, set for the length of one call (the card
	// runs one op at a time), then cleared so that freed buffers can be collected. The
	// tasks only read them. The *Task funcs are their bound task methods.
	mm          gmm
	swiglu      swigluArgs
	scatter     scatterArgs
	gmmTask     func(int)
	swigluTask  func(int)
	scatterTask func(int)
}

// buffer implements ascend.Buffer. f32 dtype data lives in f32, bf16 and f16 in u16 (raw
// bits), i8 and mxfp4 in raw (the ascend.QuantLayout storage, values then scales, as Write
// takes it; ql says where the scales start). freed is guarded by card.mu.
type buffer struct {
	card  *card
	dt    ascend.DType
	shape []int
	n     int
	f32   []float32
	u16   []uint16
	raw   []byte
	ql    ascend.QuantLayout
	freed bool
}

func (b *buffer) DType() ascend.DType { return b.dt }

// Shape returns a copy, so callers cannot reshape a live buffer.
func (b *buffer) Shape() []int { return slices.Clone(b.shape) }

func (b *buffer) Bytes() int64 {
	if b.dt.Quantized() {
		return b.ql.Bytes()
	}
	return int64(b.n) * int64(b.dt.Size())
}

// SupportsDType implements ascend.SupportsDType: the cpu backend runs I8 and MXFP4 weights.
func (c *card) SupportsDType(dt ascend.DType) bool {
	return dt.Quantized() || dt.Size() != 0
}

// rows returns the buffer's shape as a matrix; ok is false unless it is 2-D.
func (b *buffer) rows() (r, c int, ok bool) {
	if len(b.shape) != 2 {
		return 0, 0, false
	}
	return b.shape[0], b.shape[1], true
}

func (c *card) ID() int { return c.id }

// maxBytes is the largest buffer Alloc attempts: Go cannot allocate more than 2⁴⁸ bytes
// on amd64 and panics if asked, and on 32-bit platforms a slice is limited by int.
const maxBytes = min(1<<47, math.MaxInt)

func (c *card) Alloc(dt ascend.DType, shape ...int) (ascend.Buffer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("cpu card %d: Alloc: %w", c.id, ascend.ErrClosed)
	}
	if dt.Quantized() {
		return c.allocQuant(dt, shape)
	}
	if dt.Size() == 0 {
		return nil, fmt.Errorf("%w: cpu card %d: Alloc %v", ascend.ErrDType, c.id, dt)
	}
	if len(shape) == 0 {
		return nil, fmt.Errorf("%w: cpu card %d: Alloc %v with no dimensions", ascend.ErrShape, c.id, dt)
	}
	// Zero-sized dimensions are allowed (an empty batch); negative ones are not.
	if slices.ContainsFunc(shape, func(d int) bool { return d < 0 }) {
		return nil, fmt.Errorf("%w: cpu card %d: Alloc %v%v", ascend.ErrShape, c.id, dt, shape)
	}
	n := 0
	if !slices.Contains(shape, 0) {
		n = 1
		for _, d := range shape {
			if n > maxBytes/dt.Size()/d {
				return nil, fmt.Errorf("%w: cpu card %d: Alloc %v%v is more than %d bytes",
					ascend.ErrOutOfMemory, c.id, dt, shape, maxBytes)
			}
			n *= d
		}
	}
	bytes := int64(n) * int64(dt.Size())
	if c.budget > 0 && bytes > c.budget-c.used {
		return nil, fmt.Errorf("%w: cpu card %d: Alloc %v%v needs %d bytes, %d of %d bytes in use",
			ascend.ErrOutOfMemory, c.id, dt, shape, bytes, c.used, c.budget)
	}
	b := &buffer{card: c, dt: dt, shape: slices.Clone(shape), n: n}
	if dt == ascend.F32 {
		b.f32 = make([]float32, n)
	} else {
		b.u16 = make([]uint16, n)
	}
	c.used += bytes
	c.live[b] = struct{}{}
	return b, nil
}

// lookup resolves an ascend.Buffer to one of this card's live buffers. The caller holds mu.
func (c *card) lookup(op, name string, b ascend.Buffer) (*buffer, error) {
	return c.lookupAt(op, name, -1, b)
}

// lookupAt is lookup for element i of a list argument (i < 0: not a list); the name is
// only formatted on error, since ops look up every weight on every call.
func (c *card) lookupAt(op, name string, i int, b ascend.Buffer) (*buffer, error) {
	bb, ok := b.(*buffer)
	if ok && bb != nil && bb.card == c && !bb.freed {
		return bb, nil
	}
	if i >= 0 {
		name = fmt.Sprintf("%s[%d]", name, i)
	}
	switch {
	case b == nil || (ok && bb == nil):
		return nil, fmt.Errorf("%w: cpu card %d: %s: %s is nil", ascend.ErrInvalid, c.id, op, name)
	case !ok:
		return nil, fmt.Errorf("%w: cpu card %d: %s: %s is a %T", ascend.ErrForeignBuffer, c.id, op, name, b)
	case bb.card != c:
		return nil, fmt.Errorf("%w: cpu card %d: %s: %s is from card %d", ascend.ErrForeignBuffer, c.id, op, name, bb.card.id)
	}
	return nil, fmt.Errorf("%w: cpu card %d: %s: %s was freed", ascend.ErrInvalid, c.id, op, name)
}

// enter locks the card for an op; it fails if the card is closed.
func (c *card) enter(op string) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return fmt.Errorf("cpu card %d: %s: %w", c.id, op, ascend.ErrClosed)
	}
	return nil
}

func (c *card) Free(b ascend.Buffer) error {
	if err := c.enter("Free"); err != nil {
		return err
	}
	defer c.mu.Unlock()
	bb, err := c.lookup("Free", "buffer", b)
	if err != nil {
		return err
	}
	c.release(bb)
	return nil
}

// release drops a buffer's memory; the caller holds mu.
func (c *card) release(b *buffer) {
	c.used -= b.Bytes()
	delete(c.live, b)
	b.freed, b.f32, b.u16, b.raw = true, nil, nil, nil
}

// span checks that elements [off, off+n) lie inside b.
func span(op string, b *buffer, off, n int) error {
	if off < 0 || n > b.n || off > b.n-n {
		return fmt.Errorf("%w: %s: %d elements at offset %d into %v%v", ascend.ErrShape, op, n, off, b.dt, b.shape)
	}
	return nil
}

func (c *card) Write(b ascend.Buffer, off int, data []byte) error {
	if err := c.enter("Write"); err != nil {
		return err
	}
	defer c.mu.Unlock()
	bb, err := c.lookup("Write", "buffer", b)
	if err != nil {
		return err
	}
	if bb.dt.Quantized() {
		return writeQuant(bb, off, data)
	}
	size := bb.dt.Size()
	if len(data)%size != 0 {
		return fmt.Errorf("%w: Write: %d bytes are not whole %v elements", ascend.ErrShape, len(data), bb.dt)
	}
	n := len(data) / size
	if err := span("Write", bb, off, n); err != nil {
		return err
	}
	if bb.dt == ascend.F32 {
		dst := bb.f32[off : off+n]
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		}
		return nil
	}
	dst := bb.u16[off : off+n]
	for i := range dst {
		dst[i] = binary.LittleEndian.Uint16(data[2*i:])
	}
	return nil
}

func (c *card) WriteF32(b ascend.Buffer, off int, src []float32) error {
	if err := c.enter("WriteF32"); err != nil {
		return err
	}
	defer c.mu.Unlock()
	bb, err := c.lookup("WriteF32", "buffer", b)
	if err != nil {
		return err
	}
	if err := span("WriteF32", bb, off, len(src)); err != nil {
		return err
	}
	if bb.dt.Quantized() {
		return writeQuantF32(bb, off, src)
	}
	switch bb.dt {
	case ascend.F32:
		copy(bb.f32[off:], src)
	case ascend.BF16:
		ascend.F32sToBF16s(bb.u16[off:], src)
	case ascend.F16:
		ascend.F32sToF16s(bb.u16[off:], src)
	}
	return nil
}

func (c *card) ReadF32(b ascend.Buffer, dst []float32) error {
	if err := c.enter("ReadF32"); err != nil {
		return err
	}
	defer c.mu.Unlock()
	bb, err := c.lookup("ReadF32", "buffer", b)
	if err != nil {
		return err
	}
	if err := span("ReadF32", bb, 0, len(dst)); err != nil {
		return err
	}
	switch bb.dt {
	case ascend.F32:
		copy(dst, bb.f32)
	case ascend.BF16:
		ascend.BF16sToF32s(dst, bb.u16)
	case ascend.F16:
		ascend.F16sToF32s(dst, bb.u16)
	default:
		readQuant(bb, dst)
	}
	return nil
}

func (c *card) MemInfo() ascend.MemInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ascend.MemInfo{Used: c.used, Total: c.budget}
}

// Close frees every buffer and stops the helpers. Later calls, Close included, fail with
// ErrClosed.
func (c *card) Close() error {
	if err := c.enter("Close"); err != nil {
		return err
	}
	defer c.mu.Unlock()
	for b := range c.live {
		c.release(b)
	}
	c.closed = true
	c.tasks, c.xpack = nil, nil
	for len(c.mm.panels) > 0 {
		<-c.mm.panels
	}
	c.pool.stop()
	return nil
}
