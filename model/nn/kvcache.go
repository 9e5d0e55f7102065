package nn

import (
	"fmt"
	"slices"
	"sync"
)

// KVView is a read-only view of Rows cached rows of Width values each. Rows live in
// Blocks: every block but the last holds BlockRows rows, and BlockRows == 0 means a single
// contiguous block. This is the shape a paged cache will hand out, so Attend need not
// change when pages replace the contiguous KVCache below.
type KVView struct {
	Width     int
	Rows      int
	BlockRows int
	Blocks    [][]float32
}

// ContiguousView views data as rows × width.
func ContiguousView(data []float32, rows, width int) KVView {
	return KVView{Width: width, Rows: rows, Blocks: [][]float32{data[:rows*width]}}
}

// Row returns row i (no copy).
func (v KVView) Row(i int) []float32 {
	if v.BlockRows == 0 {
		return v.Blocks[0][i*v.Width : (i+1)*v.Width]
	}
	o := (i % v.BlockRows) * v.Width
	return v.Blocks[i/v.BlockRows][o : o+v.Width]
}

// check validates that the view holds Rows rows of Width values.
func (v KVView) check(name string) error {
	if v.Width <= 0 || v.Rows < 0 || v.BlockRows < 0 {
		return fmt.Errorf("%w: %s view width %d, rows %d, block rows %d", ErrShape, name, v.Width, v.Rows, v.BlockRows)
	}
	if v.Rows == 0 {
		return nil
	}
	per := v.BlockRows
	if per == 0 {
		per = v.Rows
		if len(v.Blocks) != 1 {
			return fmt.Errorf("%w: %s view has %d blocks and no block size", ErrShape, name, len(v.Blocks))
		}
	}
	need := (v.Rows + per - 1) / per
	if len(v.Blocks) < need {
		return fmt.Errorf("%w: %s view has %d blocks for %d rows of %d", ErrShape, name, len(v.Blocks), v.Rows, per)
	}
	for b := range need {
		rows := min(per, v.Rows-b*per)
		if len(v.Blocks[b]) < rows*v.Width {
			return fmt.Errorf("%w: %s view block %d has %d values, want %d", ErrShape, name, b, len(v.Blocks[b]), rows*v.Width)
		}
	}
	return nil
}

// DefaultBlockRows is the rows per KV block: small enough that a short sequence wastes
// little, large enough that block lookups stay cheap next to the attention math.
const DefaultBlockRows = 16

// KVPool is KV-cache memory shared by many sequences under one budget. A cache reserves
// its worst case (capacity rows) when it is made, so appends never fail for want of
// memory mid-generation, but takes blocks of BlockRows rows only as it fills them: memory
// in use follows tokens held, and blocks return to the pool (for any other sequence) the
// moment a sequence is reset or closed. The pool is safe for concurrent use.
type KVPool struct {
	budget    int64 // bytes; 0: unlimited
	blockRows int

	mu       sync.Mutex
	reserved int64
	inUse    int64
	free     map[int][][]float32 // idle blocks by length
	idle     int64               // bytes held in free
}

// KVStats is a pool's state for metrics.
type KVStats struct {
	Budget   int64 // bytes, 0: unlimited
	Reserved int64 // bytes promised to live caches
	InUse    int64 // bytes of blocks holding rows
}

// NewKVPool makes a pool of budget bytes (0: unlimited) handing out blocks of blockRows
// rows (0: DefaultBlockRows).
func NewKVPool(budget int64, blockRows int) (*KVPool, error) {
	if budget < 0 || blockRows < 0 {
		return nil, fmt.Errorf("%w: kv pool of %d bytes, %d rows per block", ErrInvalid, budget, blockRows)
	}
	if blockRows == 0 {
		blockRows = DefaultBlockRows
	}
	return &KVPool{budget: budget, blockRows: blockRows, free: map[int][][]float32{}}, nil
}

// BlockRows is the rows per block.
func (p *KVPool) BlockRows() int { return p.blockRows }

// Stats returns the pool's budget, reservations and memory in use.
func (p *KVPool) Stats() KVStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return KVStats{Budget: p.budget, Reserved: p.reserved, InUse: p.inUse}
}

// CacheBytes is what a cache of layers × capacity rows of kWidth+vWidth values reserves:
// whole blocks, as they are handed out.
func (p *KVPool) CacheBytes(layers, capacity, kWidth, vWidth int) int64 {
	blocks := int64((capacity + p.blockRows - 1) / p.blockRows)
	return int64(layers) * blocks * int64(p.blockRows) * int64(kWidth+vWidth) * 4
}

func (p *KVPool) reserve(n int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.budget > 0 && p.reserved+n > p.budget {
		return fmt.Errorf("%w: kv pool has %d of %d bytes reserved, a sequence needs %d more", ErrCacheFull, p.reserved, p.budget, n)
	}
	p.reserved += n
	return nil
}

func (p *KVPool) release(n int64) {
	p.mu.Lock()
	p.reserved -= n
	p.mu.Unlock()
}

// get hands out a block of n values (contents undefined: rows are written before read).
func (p *KVPool) get(n int) []float32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inUse += int64(n) * 4
	if l := p.free[n]; len(l) > 0 {
		b := l[len(l)-1]
		p.free[n] = l[:len(l)-1]
		p.idle -= int64(n) * 4
		return b
	}
	return make([]float32, n)
}

// put takes blocks back. Idle blocks are kept for reuse only up to the budget's unreserved
// part, so an unlimited or shrinking pool does not hoard memory.
func (p *KVPool) put(blocks [][]float32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range blocks {
		n := int64(len(b)) * 4
		p.inUse -= n
		if p.budget > 0 && p.idle+p.inUse+n <= p.budget {
			p.free[len(b)] = append(p.free[len(b)], b)
			p.idle += n
		}
	}
}

// KVCache is the K and V rows of one sequence, one LayerKV per layer, in blocks from a
// KVPool.
type KVCache struct {
	layers   []LayerKV
	pool     *KVPool
	reserved int64
}

// NewKVCache makes a cache of layers layers, each holding up to capacity rows of kWidth
// key values and vWidth value values, in a private pool without a budget. vWidth may be
// 0 where keys double as values (DeepSeek-V4's shared K=V head). Memory grows with use,
// not with capacity, because capacity is typically the model's full context.
func NewKVCache(layers, capacity, kWidth, vWidth int) (*KVCache, error) {
	return NewKVCacheIn(nil, layers, capacity, kWidth, vWidth)
}

// NewKVCacheIn is NewKVCache drawing on pool (nil: a private unlimited pool). It reserves
// the cache's worst case in the pool and fails with an error wrapping ErrCacheFull when
// the pool's budget cannot cover it. Close gives the memory back.
func NewKVCacheIn(pool *KVPool, layers, capacity, kWidth, vWidth int) (*KVCache, error) {
	if layers <= 0 || capacity <= 0 || kWidth <= 0 || vWidth < 0 {
		return nil, fmt.Errorf("%w: kv cache of %d layers, capacity %d, widths %d/%d", ErrInvalid, layers, capacity, kWidth, vWidth)
	}
	if pool == nil {
		pool, _ = NewKVPool(0, 0)
	}
	c := &KVCache{layers: make([]LayerKV, layers), pool: pool, reserved: pool.CacheBytes(layers, capacity, kWidth, vWidth)}
	if err := pool.reserve(c.reserved); err != nil {
		return nil, err
	}
	for i := range c.layers {
		c.layers[i] = LayerKV{layer: i, kw: kWidth, vw: vWidth, capacity: capacity, pool: pool}
	}
	return c, nil
}

// Layers is the number of layers.
func (c *KVCache) Layers() int { return len(c.layers) }

// Layer returns layer i's rows; it panics if i is out of range.
func (c *KVCache) Layer(i int) *LayerKV { return &c.layers[i] }

// Reset empties every layer and returns its blocks to the pool; the reservation stays.
func (c *KVCache) Reset() {
	for i := range c.layers {
		c.layers[i].reset()
	}
}

// Close empties the cache and ends its reservation. It is safe to call twice; a closed
// cache must not be appended to.
func (c *KVCache) Close() {
	c.Reset()
	if c.reserved != 0 {
		c.pool.release(c.reserved)
		c.reserved = 0
	}
}

// LayerKV is one layer's append-only K and V rows. Views returned by Keys and Values stay
// valid after later appends (blocks never move and rows are never rewritten) but do not
// see them; they are invalidated by Reset.
type LayerKV struct {
	layer    int
	kw, vw   int
	capacity int
	n        int
	pool     *KVPool
	k, v     [][]float32 // blocks of pool.blockRows rows
}

// Append adds n rows: k holds n·kWidth values, v n·vWidth. Past the capacity it returns
// an error wrapping ErrCacheFull and appends nothing.
func (l *LayerKV) Append(k, v []float32, n int) error {
	if n < 0 || len(k) != n*l.kw || len(v) != n*l.vw {
		return fmt.Errorf("%w: layer %d append of %d rows: %d key values (want %d), %d value values (want %d)",
			ErrShape, l.layer, n, len(k), n*l.kw, len(v), n*l.vw)
	}
	if n > l.capacity-l.n {
		return fmt.Errorf("%w: layer %d holds %d of %d rows, cannot append %d", ErrCacheFull, l.layer, l.n, l.capacity, n)
	}
	br := l.pool.blockRows
	for r := 0; r < n; {
		at := (l.n + r) % br
		if at == 0 {
			l.k = append(l.k, l.pool.get(br*l.kw))
			if l.vw > 0 {
				l.v = append(l.v, l.pool.get(br*l.vw))
			}
		}
		rows := min(br-at, n-r)
		copy(l.k[len(l.k)-1][at*l.kw:], k[r*l.kw:(r+rows)*l.kw])
		if l.vw > 0 {
			copy(l.v[len(l.v)-1][at*l.vw:], v[r*l.vw:(r+rows)*l.vw])
		}
		r += rows
	}
	l.n += n
	return nil
}

func (l *LayerKV) reset() {
	l.pool.put(l.k)
	l.pool.put(l.v)
	l.k, l.v, l.n = l.k[:0], l.v[:0], 0
}

// Len is the number of rows held.
func (l *LayerKV) Len() int { return l.n }

// Cap is the row capacity.
func (l *LayerKV) Cap() int { return l.capacity }

// Keys views the key rows.
func (l *LayerKV) Keys() KVView {
	return KVView{Width: l.kw, Rows: l.n, BlockRows: l.pool.blockRows, Blocks: slices.Clip(l.k)}
}

// Values views the value rows; with vWidth 0 it is the keys (a shared K=V head).
func (l *LayerKV) Values() KVView {
	if l.vw == 0 {
		return l.Keys()
	}
	return KVView{Width: l.vw, Rows: l.n, BlockRows: l.pool.blockRows, Blocks: slices.Clip(l.v)}
}
