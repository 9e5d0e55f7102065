package cpu

import (
	"fmt"

	"github.com/moemesh/moemesh/ascend"
)

// Blocking of GroupedMatmul. A tile is one group's rows × panel output columns; tiles are
// the unit of parallel work. Inside a tile, rows go 4 at a time (kern4x2 over column pairs)
// and the leftover rows one at a time (kern1x4 over column quads, which is also the T=1
// GEMV path: it is memory-bound, so it streams 4 weight rows over all of K per call). With
// the wide (AVX-512) kernels, rows go 8 at a time (kern8x4), then 4 (kern4x4), both over
// column quads and reading x packed in row pairs (packPairs), and leftover rows use kern1x8;
// 8 rows per weight load halve the weight traffic from L2 per flop.
//
// For 4- and 8-row blocks, kChunk bounds the k range of one kernel call so that the 4 x rows
// (4·kChunk·4 B = 8 KiB, 16 KiB for 8) stay in L1 while the tile's column pairs stream past them; a
// panel of weights (panel·K values, 256 KiB of f32 at K = 2048) stays in the 512 KiB L2
// across row blocks; for long rows (K = 7168) panelFor narrows the tile so that it still
// does. Neither affects results: lanes continue across chunks in the same order, and a
// column's sum never depends on the tile it is in.
const (
	panel    = 32 // most output columns per tile; a multiple of 2, 4 and 8
	minPanel = 8
	// panelBytes is the weight panel a tile keeps in L2, with room left for x and out.
	panelBytes = 320 << 10
	kChunk     = 512 // a multiple of lanes
	// serialFlops is the work below which waking helpers costs more than it saves.
	serialFlops = 1 << 18
)

// panelFor is the tile width for weights of dtype dt and rows of k values: the widest of
// 32, 16, 8 whose panel fits panelBytes (8 if none does). MXFP4 and I8 panels are sized as
// f32 and bytes: MXFP4 tiles of several rows are decoded to f32 first (tileMX).
func panelFor(dt ascend.DType, k int) int {
	size := dt.Size()
	switch dt {
	case ascend.MXFP4:
		size = 4
	case ascend.I8:
		size = 1
	}
	p := panel
	for p > minPanel && p*k*size > panelBytes {
		p /= 2
	}
	return p
}

// tileAcc holds a tile's accumulators: up to 8 rows × panel columns × 8 lanes (8 KiB), on
// the stack.
type tileAcc = [8 * panel * lanes]float32

// gmmTile names one tile: group rows [row, row+rows) and columns [n0, n0+cols).
type gmmTile struct {
	w         wmat
	row, rows int
	n0, cols  int
}

// gmm is one GroupedMatmul call after validation. xp holds x's 4-row blocks packed in
// pairs (packPairs) for groups that use the wide kernels. The card keeps one, refilled by
// each call: allocated per call, it and the task closure over it were the op's garbage.
type gmm struct {
	out    []float32
	x      []float32
	xp     []float32
	tasks  []gmmTile
	n, k   int
	panels chan *[]float32 // the card's, for tileMX; kept across calls
}

// task computes tile i; the card binds it once (card.gmmTask).
func (g *gmm) task(i int) { g.tile(&g.tasks[i]) }

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
	mm := &c.mm
	defer func() {
		clear(c.tasks)
		*mm = gmm{panels: mm.panels}
	}()
	mm.out, mm.x, mm.xp, mm.n, mm.k = ob.f32, xb.f32, nil, n, k
	row := 0
	for g, wb := range weights {
		b, err := c.lookupAt(op, "weights", g, wb)
		if err != nil {
			return err
		}
		if b == ob {
			return fmt.Errorf("%w: %s: out is also weights[%d]", ascend.ErrInvalid, op, g)
		}
		// The dtype is known valid (Alloc checked it); the kernels take all five.
		if wn, wk, ok := b.rows(); !ok || wn != n || wk != k {
			return fmt.Errorf("%w: %s: weights[%d] is %v, want [%d %d] for out %v and x %v",
				ascend.ErrShape, op, g, b.shape, n, k, ob.shape, xb.shape)
		}
		cnt := counts[g]
		if cnt < 0 || cnt > int64(m-row) {
			return fmt.Errorf("%w: %s: counts[%d] = %d with %d of %d rows left", ascend.ErrShape, op, g, cnt, m-row, m)
		}
		w := wmat{dt: b.dt, f32: b.f32, u16: b.u16, k: k}
		if b.dt.Quantized() {
			w.q, w.sc = b.raw[:b.ql.Values], b.raw[b.ql.Values:]
		}
		if wideFor(b.dt) && cnt >= 4 {
			if mm.xp == nil {
				// Scratch kept by the card: packing is a copy of x, cheap next to the
				// matmul, but allocating it each call would not be.
				if cap(c.xpack) < m*k {
					c.xpack = make([]float32, m*k)
				}
				mm.xp = c.xpack[:m*k]
			}
			packPairs(mm.xp, mm.x, k, row, int(cnt))
		}
		p := panelFor(b.dt, k)
		for n0 := 0; cnt > 0 && n0 < n; n0 += p {
			c.tasks = append(c.tasks, gmmTile{w: w, row: row, rows: int(cnt), n0: n0, cols: min(p, n-n0)})
		}
		row += int(cnt)
	}
	mm.tasks = c.tasks
	work := int64(2) * int64(row) * int64(n) * int64(k)
	c.pool.parallel(len(mm.tasks), work < serialFlops, c.gmmTask)
	return nil
}

// tile computes one tile. The accumulators live on the stack: 4 rows × panel columns × 8
// lanes is 4 KiB, 8 KiB for 8 rows.
func (g *gmm) tile(t *gmmTile) {
	if t.w.dt == ascend.MXFP4 && t.rows >= mxPanelRows {
		g.tileMX(t)
		return
	}
	// Go zeroes a declared array, so tiles that cannot use 8-row blocks (every tile of a
	// decode step) take the smaller one.
	if t.rows >= 8 && wideFor(t.w.dt) {
		var acc tileAcc
		g.rowsOf(t, acc[:])
		return
	}
	var acc [4 * panel * lanes]float32
	g.rowsOf(t, acc[:])
}

// rowsOf computes tile t's rows in blocks of 8 (wide kernels), 4 and 1; acc is scratch for
// the largest block.
func (g *gmm) rowsOf(t *gmmTile, acc []float32) {
	nc := t.cols
	end := t.row + t.rows
	r := t.row
	if wideFor(t.w.dt) {
		for ; r+8 <= end; r += 8 {
			g.block8w(acc, &t.w, r, t.n0, nc)
		}
	}
	for ; r+4 <= end; r += 4 {
		g.block4(acc, &t.w, r, t.n0, nc)
	}
	for ; r < end; r++ {
		g.block1(acc, &t.w, r, t.n0, nc)
	}
}

// block4 computes rows r..r+3, columns n0..n0+nc-1. A pair whose second column is past
// the panel repeats the first column, and the duplicate is dropped: cheaper than a
// separate edge kernel, and it cannot change the kept result.
func (g *gmm) block4(acc []float32, w *wmat, r, n0, nc int) {
	if wideFor(w.dt) {
		g.block4w(acc, w, r, n0, nc)
		return
	}
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
func (g *gmm) block1(acc []float32, w *wmat, r, n0, nc int) {
	if wideFor(w.dt) {
		g.block1w(acc, w, r, n0, nc)
		return
	}
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

// block4w is block4 with the wide kernels: column quads instead of pairs, padded the same
// way.
func (g *gmm) block4w(acc []float32, w *wmat, r, n0, nc int) {
	k, k8 := g.k, g.k&^(lanes-1)
	quads := (nc + 3) / 4
	a := acc[:quads*len(block4x4{})]
	clear(a)
	var xs [4][]float32
	for i := range xs {
		xs[i] = g.x[(r+i)*k : (r+i+1)*k]
	}
	xps := [2][]float32{g.xp[r*k : (r+2)*k], g.xp[(r+2)*k : (r+4)*k]}
	for k0 := 0; k0 < k8; k0 += kChunk {
		kn := min(kChunk, k8-k0)
		for q := range quads {
			var cs [4]int
			for j := range cs {
				cs[j] = min(n0+4*q+j, n0+nc-1)
			}
			kern4x4((*block4x4)(a[q*len(block4x4{}):]), &xs, &xps, w, &cs, k0, kn)
		}
	}
	for i, x := range xs {
		o := g.out[(r+i)*g.n+n0 : (r+i)*g.n+n0+nc]
		for c := range o {
			o[c] = finish(lane(a, (c/4)*len(block4x4{})+at4x4(i, c%4)), x, w, n0+c, k8)
		}
	}
}

// block1w is block1 with the wide kernel: column octets, padded the same way. block1x8 is
// [col][lane] like block1x4, so column c's lanes start at c·8 here too.
func (g *gmm) block1w(acc []float32, w *wmat, r, n0, nc int) {
	k, k8 := g.k, g.k&^(lanes-1)
	octs := (nc + 7) / 8
	a := acc[:octs*len(block1x8{})]
	clear(a)
	x := g.x[r*k : (r+1)*k]
	for q := range octs {
		var cs [8]int
		for j := range cs {
			cs[j] = min(n0+8*q+j, n0+nc-1)
		}
		kern1x8((*block1x8)(a[q*len(block1x8{}):]), x, w, &cs, 0, k8)
	}
	o := g.out[r*g.n+n0 : r*g.n+n0+nc]
	for c := range o {
		o[c] = finish(lane(a, c*lanes), x, w, n0+c, k8)
	}
}

// block8w is block4w for 8 rows: twice the rows per weight load, which halves the weight
// traffic from L2 per flop.
func (g *gmm) block8w(acc []float32, w *wmat, r, n0, nc int) {
	k, k8 := g.k, g.k&^(lanes-1)
	quads := (nc + 3) / 4
	a := acc[:quads*len(block8x4{})]
	clear(a)
	var xs [8][]float32
	for i := range xs {
		xs[i] = g.x[(r+i)*k : (r+i+1)*k]
	}
	var xps [4][]float32
	for p := range xps {
		xps[p] = g.xp[(r+2*p)*k : (r+2*p+2)*k]
	}
	for k0 := 0; k0 < k8; k0 += kChunk {
		kn := min(kChunk, k8-k0)
		for q := range quads {
			var cs [4]int
			for j := range cs {
				cs[j] = min(n0+4*q+j, n0+nc-1)
			}
			kern8x4((*block8x4)(a[q*len(block8x4{}):]), &xs, &xps, w, &cs, k0, kn)
		}
	}
	for i, x := range xs {
		o := g.out[(r+i)*g.n+n0 : (r+i)*g.n+n0+nc]
		for c := range o {
			o[c] = finish(lane(a, (c/4)*len(block8x4{})+at4x4(i, c%4)), x, w, n0+c, k8)
		}
	}
}

// mxPanelRows is the fewest rows of an MXFP4 tile that decode its panel to f32 first
// (tileMX); smaller tiles decode in registers row by row (kern1x4/kern1x8). Decoding a
// panel costs about as much as 3 in-register rows, so at 2–3 rows the panel made the FFN
// 2.6× slower than bf16 (BenchmarkExpertFFN, 16 pairs over 8 experts).
const mxPanelRows = 4

// tileMX computes an MXFP4 tile of several rows: its panel of weight rows is decoded to f32
// once (exactly, see kernel.go) and the tile runs as an f32 tile over it, so each weight is
// decoded once per tile instead of once per row block. Tiles of fewer than mxPanelRows rows skip
// this: kern1x4 and kern1x8 decode in registers. The f32 tile sees the panel's rows as 0..cols-1, so
// its output slice starts at column n0.
func (g *gmm) tileMX(t *gmmTile) {
	k := g.k
	var pp *[]float32
	select {
	case pp = <-g.panels:
	default:
		pp = new([]float32)
	}
	if cap(*pp) < t.cols*k {
		*pp = make([]float32, t.cols*k)
	}
	buf := (*pp)[:t.cols*k]
	for j := range t.cols {
		decodeMX(buf[j*k:(j+1)*k], &t.w, t.n0+j, 0)
	}
	gd := *g
	gd.out = g.out[t.n0:]
	td := gmmTile{w: wmat{dt: ascend.F32, f32: buf, k: k}, row: t.row, rows: t.rows, n0: 0, cols: t.cols}
	gd.tile(&td)
	select {
	case g.panels <- pp:
	default: // more tiles ran at once than the card has threads: let it go
	}
}
