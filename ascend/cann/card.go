//go:build cann

package cann

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/ascend/cann/acl"
)

func init() {
	ascend.Register("cann", func() ascend.Backend { return Backend{} })
}

// Backend opens Ascend devices as cards. The zero value is what the "cann" registration
// returns.
type Backend struct{}

// Name returns "cann".
func (Backend) Name() string { return "cann" }

var (
	initOnce sync.Once
	initErr  error
)

// aclInit runs aclInit once per process. ACL is never finalised: aclInit after
// aclFinalize is not supported by the runtime, and cards come and go.
func aclInit() error {
	initOnce.Do(func() {
		done := make(chan struct{})
		go func() { // on a thread of its own, so its error message is read where it was set
			defer close(done)
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			initErr = acl.Init("")
			var e *acl.Error
			if errors.As(initErr, &e) && e.Code == acl.ErrRepeatInitialize {
				initErr = nil
			}
		}()
		<-done
	})
	return initErr
}

// OpenCard opens device id with its own context, stream and worker thread. budget caps the
// bytes of live buffers; 0 is unlimited (the device's HBM still applies).
func (Backend) OpenCard(id int, budget int64) (ascend.Card, error) {
	if id < 0 || budget < 0 {
		return nil, fmt.Errorf("%w: cann card %d budget %d", ascend.ErrInvalid, id, budget)
	}
	if err := aclInit(); err != nil {
		return nil, fmt.Errorf("cann card %d: %w", id, err)
	}
	c := &card{id: id, budget: budget, live: map[*buffer]struct{}{}, cache: map[int64][]acl.Ptr{},
		work: make(chan func())}
	ready := make(chan error)
	go c.worker(ready)
	if err := <-ready; err != nil {
		return nil, fmt.Errorf("%w: cann card %d: %w", ascend.ErrInvalid, id, err)
	}
	return c, nil
}

// card implements ascend.Card. mu serialises users and guards the Go-side state; every ACL
// call runs on the worker goroutine (c.do), which is locked to one OS thread holding the
// card's context.
type card struct {
	id     int
	budget int64

	mu     sync.Mutex
	closed bool
	used   int64
	live   map[*buffer]struct{}

	work chan func()

	// Owned by the worker.
	ctx      acl.Context
	stream   acl.Stream
	cache    map[int64][]acl.Ptr // free device blocks by size
	stage    acl.Ptr             // pinned staging buffer
	stageCap int
	glHost   acl.Ptr // pinned group-list buffer, reusable once glEvent completed
	glCap    int
	glEvent  acl.Event
	mxTab    *buffer // MXFP4 decode tables (quant.go), made on first use
}

type buffer struct {
	card  *card
	dt    ascend.DType
	shape []int
	n     int
	block int64 // device block size (0: no device memory)
	ptr   acl.Ptr
	freed bool

	// Quantised buffers (quant.go): the storage layout, and where the scales start on the
	// device (the values' end rounded up, so the scale tensors are aligned).
	ql       ascend.QuantLayout
	scaleOff int64
}

func (b *buffer) DType() ascend.DType { return b.dt }
func (b *buffer) Shape() []int        { return slices.Clone(b.shape) }

func (b *buffer) Bytes() int64 {
	if b.dt.Quantized() {
		return b.ql.Bytes()
	}
	return int64(b.n) * int64(b.dt.Size())
}

func (b *buffer) rows() (r, c int, ok bool) {
	if len(b.shape) != 2 {
		return 0, 0, false
	}
	return b.shape[0], b.shape[1], true
}

func (c *card) worker(ready chan<- error) {
	runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
	err := func() error {
		if err := acl.SetDevice(c.id); err != nil {
			return err
		}
		ctx, err := acl.CreateContext(c.id)
		if err != nil {
			_ = acl.ResetDevice(c.id)
			return err
		}
		c.ctx = ctx
		if c.stream, err = acl.CreateStream(); err != nil {
			_ = ctx.Destroy()
			_ = acl.ResetDevice(c.id)
			return err
		}
		if c.glEvent, err = acl.CreateEvent(); err != nil {
			_ = c.stream.Destroy()
			_ = ctx.Destroy()
			_ = acl.ResetDevice(c.id)
			return err
		}
		return nil
	}()
	ready <- err
	if err != nil {
		return
	}
	for f := range c.work {
		f()
	}
}

// do runs f on the worker thread and waits for it.
func (c *card) do(f func() error) error {
	var err error
	done := make(chan struct{})
	c.work <- func() { err = f(); close(done) }
	<-done
	return err
}

func (c *card) ID() int { return c.id }

func (c *card) enter(op string) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return fmt.Errorf("cann card %d: %s: %w", c.id, op, ascend.ErrClosed)
	}
	return nil
}

func (c *card) lookup(op, name string, b ascend.Buffer) (*buffer, error) {
	bb, ok := b.(*buffer)
	if ok && bb != nil && bb.card == c && !bb.freed {
		return bb, nil
	}
	switch {
	case b == nil || (ok && bb == nil):
		return nil, fmt.Errorf("%w: cann card %d: %s: %s is nil", ascend.ErrInvalid, c.id, op, name)
	case !ok:
		return nil, fmt.Errorf("%w: cann card %d: %s: %s is a %T", ascend.ErrForeignBuffer, c.id, op, name, b)
	case bb.card != c:
		return nil, fmt.Errorf("%w: cann card %d: %s: %s is from card %d", ascend.ErrForeignBuffer, c.id, op, name, bb.card.id)
	}
	return nil, fmt.Errorf("%w: cann card %d: %s: %s was freed", ascend.ErrInvalid, c.id, op, name)
}

// blockSize is the cache's size class of a request: 512-byte steps up to 1 MiB, then
// 1 MiB steps.
func blockSize(n int64) int64 {
	if n <= 1<<20 {
		return (n + 511) &^ 511
	}
	return (n + 1<<20 - 1) &^ (1<<20 - 1)
}

const maxBytes = 1 << 46

// devAlloc returns a device block of at least n bytes (worker only). On device OOM it syncs
// the stream, releases the cache and retries once.
func (c *card) devAlloc(n int64) (acl.Ptr, int64, error) {
	bs := blockSize(n)
	if free := c.cache[bs]; len(free) > 0 {
		p := free[len(free)-1]
		c.cache[bs] = free[:len(free)-1]
		return p, bs, nil
	}
	p, err := acl.Malloc(int(bs), acl.HugeFirst)
	var e *acl.Error
	if errors.As(err, &e) && e.IsOutOfMemory() {
		if err := c.releaseCache(); err != nil {
			return acl.Ptr{}, 0, err
		}
		p, err = acl.Malloc(int(bs), acl.HugeFirst)
	}
	if err != nil {
		if errors.As(err, &e) && e.IsOutOfMemory() {
			return acl.Ptr{}, 0, fmt.Errorf("%w: %w", ascend.ErrOutOfMemory, err)
		}
		return acl.Ptr{}, 0, err
	}
	return p, bs, nil
}

// devRelease returns a block to the cache. Reuse is safe in stream order: the card has one
// stream, so later work on the block runs after earlier work finished.
func (c *card) devRelease(p acl.Ptr, bs int64) {
	if bs > 0 {
		c.cache[bs] = append(c.cache[bs], p)
	}
}

// releaseCache syncs the stream and frees every cached block.
func (c *card) releaseCache() error {
	err := c.stream.Synchronize()
	for bs, ps := range c.cache {
		for _, p := range ps {
			err = errors.Join(err, acl.Free(p))
		}
		delete(c.cache, bs)
	}
	return err
}

func (c *card) Alloc(dt ascend.DType, shape ...int) (ascend.Buffer, error) {
	if err := c.enter("Alloc"); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	if dt.Quantized() {
		// Held in their quantised layout and dequantised on the device per GroupedMatmul
		// (quant.go): aclnnGroupedMatmulV5's own A16W8 mode needs f16/bf16 activations,
		// which the f32 contract cannot take (docs/cann.md §4).
		return c.allocQuant(dt, shape)
	}
	if dt.Size() == 0 {
		return nil, fmt.Errorf("%w: cann card %d: Alloc %v", ascend.ErrDType, c.id, dt)
	}
	if len(shape) == 0 || slices.ContainsFunc(shape, func(d int) bool { return d < 0 }) {
		return nil, fmt.Errorf("%w: cann card %d: Alloc %v%v", ascend.ErrShape, c.id, dt, shape)
	}
	n := 0
	if !slices.Contains(shape, 0) {
		n = 1
		for _, d := range shape {
			if n > maxBytes/dt.Size()/d {
				return nil, fmt.Errorf("%w: cann card %d: Alloc %v%v is more than %d bytes", ascend.ErrOutOfMemory, c.id, dt, shape, int64(maxBytes))
			}
			n *= d
		}
	}
	bytes := int64(n) * int64(dt.Size())
	return c.place(&buffer{card: c, dt: dt, shape: slices.Clone(shape), n: n}, bytes, bytes)
}

// place gives b dev bytes of zeroed device memory and charges charged bytes (its storage
// layout's size) to the budget; the caller holds mu.
func (c *card) place(b *buffer, dev, charged int64) (ascend.Buffer, error) {
	if c.budget > 0 && charged > c.budget-c.used {
		return nil, fmt.Errorf("%w: cann card %d: Alloc %v%v needs %d bytes, %d of %d in use",
			ascend.ErrOutOfMemory, c.id, b.dt, b.shape, charged, c.used, c.budget)
	}
	if dev > 0 {
		err := c.do(func() error {
			p, bs, err := c.devAlloc(dev)
			if err != nil {
				return err
			}
			// Zero-fill in stream order (the contract's Alloc is zeroed; ACL memory is not).
			if err := acl.MemsetAsync(p, int(bs), 0, int(dev), c.stream); err != nil {
				c.devRelease(p, bs)
				return err
			}
			b.ptr, b.block = p, bs
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("cann card %d: Alloc %v%v: %w", c.id, b.dt, b.shape, err)
		}
	}
	c.used += charged
	c.live[b] = struct{}{}
	return b, nil
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

// release drops a buffer; the caller holds mu.
func (c *card) release(b *buffer) {
	if b.block > 0 {
		_ = c.do(func() error { c.devRelease(b.ptr, b.block); return nil })
	}
	c.used -= b.Bytes()
	delete(c.live, b)
	b.freed, b.ptr, b.block = true, acl.Ptr{}, 0
}

func span(op string, b *buffer, off, n int) error {
	if off < 0 || n > b.n || off > b.n-n {
		return fmt.Errorf("%w: %s: %d elements at offset %d into %v%v", ascend.ErrShape, op, n, off, b.dt, b.shape)
	}
	return nil
}

// staging returns n bytes of pinned host memory (worker only; grown on demand). Callers
// sync the stream before returning, so it is free again.
func (c *card) staging(n int) (acl.Ptr, error) {
	if n <= c.stageCap {
		return c.stage, nil
	}
	if !c.stage.IsNil() {
		if err := acl.FreeHost(c.stage); err != nil {
			return acl.Ptr{}, err
		}
		c.stage, c.stageCap = acl.Ptr{}, 0
	}
	sz := max(n, 64<<10)
	p, err := acl.MallocHost(sz)
	if err != nil {
		return acl.Ptr{}, err
	}
	c.stage, c.stageCap = p, sz
	return p, nil
}

// h2d copies data to byte offset off of b (worker only). The async copy needs a 64-byte
// aligned device address, so an unaligned head is read back and rewritten.
func (c *card) h2d(b *buffer, off int, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	a0 := off &^ 63
	total := off + len(data) - a0
	st, err := c.staging(total)
	if err != nil {
		return err
	}
	dst := b.ptr.Add(a0)
	room := int(b.block) - a0
	if a0 != off {
		if err := acl.MemcpyAsync(st, c.stageCap, dst, off-a0, acl.DeviceToHost, c.stream); err != nil {
			return err
		}
		if err := c.stream.Synchronize(); err != nil {
			return err
		}
	}
	copy(acl.HostSlice(st, total)[off-a0:], data)
	if err := acl.MemcpyAsync(dst, room, st, total, acl.HostToDevice, c.stream); err != nil {
		return err
	}
	return c.stream.Synchronize()
}

// d2h copies n bytes from the start of b into the staging buffer and returns it (worker
// only); the stream is synced, so all earlier work is visible.
func (c *card) d2h(b *buffer, n int) ([]byte, error) {
	if n == 0 {
		return nil, c.stream.Synchronize()
	}
	st, err := c.staging(n)
	if err != nil {
		return nil, err
	}
	if err := acl.MemcpyAsync(st, c.stageCap, b.ptr, n, acl.DeviceToHost, c.stream); err != nil {
		return nil, err
	}
	if err := c.stream.Synchronize(); err != nil {
		return nil, err
	}
	return acl.HostSlice(st, n), nil
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
		return c.wrap("Write", c.writeQuant(bb, off, data))
	}
	size := bb.dt.Size()
	if len(data)%size != 0 {
		return fmt.Errorf("%w: Write: %d bytes are not whole %v elements", ascend.ErrShape, len(data), bb.dt)
	}
	if err := span("Write", bb, off, len(data)/size); err != nil {
		return err
	}
	return c.wrap("Write", c.do(func() error { return c.h2d(bb, off*size, data) }))
}

// encode converts src to raw little-endian bytes of dt.
func encode(dt ascend.DType, src []float32) []byte {
	out := make([]byte, len(src)*dt.Size())
	for i, v := range src {
		switch dt {
		case ascend.F32:
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		case ascend.BF16:
			binary.LittleEndian.PutUint16(out[2*i:], ascend.F32ToBF16(v))
		case ascend.F16:
			binary.LittleEndian.PutUint16(out[2*i:], ascend.F32ToF16(v))
		}
	}
	return out
}

// decode converts raw bytes of dt into dst.
func decode(dt ascend.DType, raw []byte, dst []float32) {
	for i := range dst {
		switch dt {
		case ascend.F32:
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		case ascend.BF16:
			dst[i] = ascend.BF16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
		case ascend.F16:
			dst[i] = ascend.F16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	}
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
	if bb.dt.Quantized() {
		return c.wrap("WriteF32", c.writeQuantF32(bb, off, src))
	}
	if err := span("WriteF32", bb, off, len(src)); err != nil {
		return err
	}
	raw := encode(bb.dt, src)
	return c.wrap("WriteF32", c.do(func() error { return c.h2d(bb, off*bb.dt.Size(), raw) }))
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
	if bb.dt.Quantized() {
		return c.wrap("ReadF32", c.readQuant(bb, dst))
	}
	return c.wrap("ReadF32", c.do(func() error {
		raw, err := c.d2h(bb, len(dst)*bb.dt.Size())
		if err == nil {
			decode(bb.dt, raw, dst)
		}
		return err
	}))
}

func (c *card) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("cann card %d: %s: %w", c.id, op, err)
}

func (c *card) MemInfo() ascend.MemInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ascend.MemInfo{Used: c.used, Total: c.budget}
}

// DeviceMemInfo is aclrtGetMemInfo(ACL_HBM_MEM) of the card's device: what the whole
// device has free (every process and card on it, the allocator's cache included).
func (c *card) DeviceMemInfo() (free, total int64, err error) {
	if err := c.enter("DeviceMemInfo"); err != nil {
		return 0, 0, err
	}
	defer c.mu.Unlock()
	err = c.do(func() error {
		var err error
		free, total, err = acl.MemInfo()
		return err
	})
	return free, total, err
}

// Close syncs the stream, frees every buffer, the cache and the staging memory, destroys
// the event, stream and context, resets the device and ends the worker.
func (c *card) Close() error {
	if err := c.enter("Close"); err != nil {
		return err
	}
	defer c.mu.Unlock()
	for b := range c.live {
		c.release(b)
	}
	err := c.do(func() error {
		if c.mxTab != nil {
			c.devRelease(c.mxTab.ptr, c.mxTab.block)
			c.mxTab = nil
		}
		err := c.releaseCache()
		if !c.stage.IsNil() {
			err = errors.Join(err, acl.FreeHost(c.stage))
		}
		if !c.glHost.IsNil() {
			err = errors.Join(err, acl.FreeHost(c.glHost))
		}
		err = errors.Join(err, c.glEvent.Destroy(), c.stream.Destroy(), c.ctx.Destroy(), acl.ResetDevice(c.id))
		return err
	})
	close(c.work)
	c.closed = true
	return c.wrap("Close", err)
}
