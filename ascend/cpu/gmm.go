package cpu

import (
	"fmt"

	"github.com/moemesh/moemesh/ascend"
)

// Blocking of GroupedMatmul. A tile is one group's rows × panel output columns; tiles are
// the unit of parallel work. Inside a tile, rows go 4 at a time (kern4x2 over column pairs)
// and the leftover rows one at a time (kern1x4 over column quads, which is also the T=1
// GEMV path: it is memory-bound, so it streams 4 weight rows over all of K per call).
//
// For 4-row blocks, kChunk bounds the k range of one kernel call so that the 4 x rows
// (4·kChunk·4 B = 8 KiB) stay in L1 while the tile's column pairs stream past them; a
// panel of weights (panel·K values, 256 KiB of f32 at K = 2048) stays in the 512 KiB L2
// across row blocks. Neither constant affects results: lanes continue across chunks in
// the same order.
const (
	panel  = 32  // output columns per tile; a multiple of 2 and 4
	kChunk = 512 // a multiple of lanes
	// serialFlops is the work below which waking helpers costs more than it saves.
	serialFlops = 1 << 18
)

// gmmTile names one tile: group rows [row, row+rows) and columns [n0, n0+panel).
type gmmTile struct {
	w         wmat
	row, rows int
	n0        int
}

// gmm is one GroupedMatmul call after validation.
type gmm struct {
	out  []float32
	x    []float32
	n, k int
}

func (c *card) GroupedMatmul(out, x ascend.Buffer, weights []ascend.Buffer, counts []int64) error {
	const op = "GroupedMatmul"
	if err := c.enter(op); err != nil {
		return err
	}
	defer c.mu.Unlock()
	ob, xb, err := c.f32Pair(op, out, x)
	if err != nil {
		return err
	}
	m, k, ok := xb.rows()
	om, n, ok2 := ob.rows()
	if !ok || !ok2 || om != m {
		return fmt.Errorf("%w: %s: out %v and x %v are not [M, N] and [M, K]", ascend.ErrShape, op, ob.shape, xb.shape)
	}
	if len(weights) != len(counts) {
		return fmt.Errorf("%w: %s: %d weights for %d counts", ascend.ErrShape, op, len(weights), len(counts))
	}
	// c.tasks keeps its capacity between calls but not the weights: a freed buffer's
	// memory must be collectable.
	c.tasks = c.tasks[:0]
	defer func() { clear(c.tasks) }()
	row := 0
	for g, wb := range weights {
		b, err := c.lookupAt(op, "weights", g, wb)
		if err != nil {
			return err
		}
		if b == ob {
			return fmt.Errorf("%w: %s: out is also weights[%d]", ascend.ErrInvalid, op, g)
		}
		// The dtype is known valid (Alloc checked it); the kernels take all three.
		if wn, wk, ok := b.rows(); !ok || wn != n || wk != k {
			return fmt.Errorf("%w: %s: weights[%d] is %v, want [%d %d] for out %v and x %v",
				ascend.ErrShape, op, g, b.shape, n, k, ob.shape, xb.shape)
		}
		cnt := counts[g]
		if cnt < 0 || cnt > int64(m-row) {
			return fmt.Errorf("%w: %s: counts[%d] = %d with %d of %d rows left", ascend.ErrShape, op, g, cnt, m-row, m)
		}
		w := wmat{dt: b.dt, f32: b.f32, u16: b.u16, k: k}
		for n0 := 0; cnt > 0 && n0 < n; n0 += panel {
			c.tasks = append(c.tasks, gmmTile{w: w, row: row, rows: int(cnt), n0: n0})
		}
		row += int(cnt)
	}
	g := &gmm{out: ob.f32, x: xb.f32, n: n, k: k}
	tasks := c.tasks
	work := int64(2) * int64(row) * int64(n) * int64(k)
	c.pool.parallel(len(tasks), work < serialFlops, func(i int) { g.tile(&tasks[i]) })
	return nil
}

// tile computes one tile. The accumulators live on the stack: 4 rows × panel columns × 8
// lanes is 4 KiB.
func (g *gmm) tile(t *gmmTile) {
	var acc [4 * panel * lanes]float32
	nc := min(panel, g.n-t.n0)
	end := t.row + t.rows
	r := t.row
	for ; r+4 <= end; r += 4 {
		g.block4(&acc, &t.w, r, t.n0, nc)
	}
	for ; r < end; r++ {
		g.block1(&acc, &t.w, r, t.n0, nc)
	}
}

// block4 computes rows r..r+3, columns n0..n0+nc-1. A pair whose second column is past
// the panel repeats the first column, and the duplicate is dropped: cheaper than a
// separate edge kernel, and it cannot change the kept result.
func (g *gmm) block4(acc *[4 * panel * lanes]float32, w *wmat, r, n0, nc int) {
	k, k8 := g.k, g.k&^(lanes-1)
	pairs := (nc + 1) / 2
	a := acc[:pairs*len(block4x2{})]
	clear(a)
	var xs [4][]float32
	for i := range xs {
		xs[i] = g.x[(r+i)*k : (r+i+1)*k]
	}
	for k0 := 0; k0 < k8; k0 += kChunk {
		kn := min(kChunk, k8-k0)
		for p := range pairs {
			c0 := n0 + 2*p
			c1 := min(c0+1, n0+nc-1)
			kern4x2((*block4x2)(a[p*len(block4x2{}):]), &xs, w, c0, c1, k0, kn)
		}
	}
	for i, x := range xs {
		o := g.out[(r+i)*g.n+n0 : (r+i)*g.n+n0+nc]
		for c := range o {
			o[c] = finish(lane(a, (c/2)*len(block4x2{})+(i*2+c%2)*lanes), x, w, n0+c, k8)
		}
	}
}

// block1 computes row r, columns n0..n0+nc-1, padding the last quad like block4 pads pairs.
// It needs no k chunks: one x row (8 KiB at K = 2048) stays in L1 by itself.
func (g *gmm) block1(acc *[4 * panel * lanes]float32, w *wmat, r, n0, nc int) {
	k, k8 := g.k, g.k&^(lanes-1)
	quads := (nc + 3) / 4
	a := acc[:quads*len(block1x4{})]
	clear(a)
	x := g.x[r*k : (r+1)*k]
	for q := range quads {
		var cs [4]int
		for j := range cs {
			cs[j] = min(n0+4*q+j, n0+nc-1)
		}
		kern1x4((*block1x4)(a[q*len(block1x4{}):]), x, w, &cs, 0, k8)
	}
	// block1x4 is [col][lane] and quads are contiguous, so column c's lanes start at c·8.
	o := g.out[r*g.n+n0 : r*g.n+n0+nc]
	for c := range o {
		o[c] = finish(lane(a, c*lanes), x, w, n0+c, k8)
	}
}
