package nn

import "fmt"

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

// KVCache is the K and V rows of one sequence, one LayerKV per layer. It is a plain
// contiguous cache with a row capacity; a paged cache is a later job and will expose the
// same LayerKV methods.
type KVCache struct {
	layers []LayerKV
}

// NewKVCache makes a cache of layers layers, each holding up to capacity rows of kWidth
// key values and vWidth value values. vWidth may be 0 where keys double as values
// (DeepSeek-V4's shared K=V head). Memory grows with use, not with capacity, because
// capacity is typically the model's full context.
func NewKVCache(layers, capacity, kWidth, vWidth int) (*KVCache, error) {
	if layers <= 0 || capacity <= 0 || kWidth <= 0 || vWidth < 0 {
		return nil, fmt.Errorf("%w: kv cache of %d layers, capacity %d, widths %d/%d", ErrInvalid, layers, capacity, kWidth, vWidth)
	}
	c := &KVCache{layers: make([]LayerKV, layers)}
	for i := range c.layers {
		c.layers[i] = LayerKV{layer: i, kw: kWidth, vw: vWidth, capacity: capacity}
	}
	return c, nil
}

// Layers is the number of layers.
func (c *KVCache) Layers() int { return len(c.layers) }

// Layer returns layer i's rows; it panics if i is out of range.
func (c *KVCache) Layer(i int) *LayerKV { return &c.layers[i] }

// Reset empties every layer, keeping allocated memory for the next sequence.
func (c *KVCache) Reset() {
	for i := range c.layers {
		c.layers[i].n = 0
		c.layers[i].k = c.layers[i].k[:0]
		c.layers[i].v = c.layers[i].v[:0]
	}
}

// LayerKV is one layer's append-only K and V rows. Views returned by Keys and Values stay
// valid after later appends (rows are never rewritten) but do not see them; they are
// invalidated by Reset.
type LayerKV struct {
	layer    int
	kw, vw   int
	capacity int
	n        int
	k, v     []float32
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
	l.k = appendCapped(l.k, k, l.capacity*l.kw)
	l.v = appendCapped(l.v, v, l.capacity*l.vw)
	l.n += n
	return nil
}

// appendCapped appends like append but never allocates past limit values, so a cache
// near its capacity does not overshoot it by Go's growth factor.
func appendCapped(dst, src []float32, limit int) []float32 {
	if len(dst)+len(src) <= cap(dst) {
		return append(dst, src...)
	}
	c := min(max(2*cap(dst), len(dst)+len(src)), limit)
	nd := make([]float32, len(dst), c)
	copy(nd, dst)
	return append(nd, src...)
}

// Len is the number of rows held.
func (l *LayerKV) Len() int { return l.n }

// Cap is the row capacity.
func (l *LayerKV) Cap() int { return l.capacity }

// Keys views the key rows.
func (l *LayerKV) Keys() KVView { return KVView{Width: l.kw, Rows: l.n, Blocks: [][]float32{l.k}} }

// Values views the value rows; with vWidth 0 it is the keys (a shared K=V head).
func (l *LayerKV) Values() KVView {
	if l.vw == 0 {
		return l.Keys()
	}
	return KVView{Width: l.vw, Rows: l.n, Blocks: [][]float32{l.v}}
}
