package cpu

import (
	"fmt"

	"github.com/moemesh/moemesh/ascend"
)

// elemTask is how many elements one parallel task of an element-wise op covers: enough to
// dwarf the cost of handing it to a helper.
const elemTask = 1 << 14

// SwiGLU computes out[r][j] = silu(g)·u with g = x[r][j], u = x[r][N+j]; with limit > 0,
// g = min(g, limit) and u = clamp(u, -limit, limit) first (in float32; NaN stays NaN).
// The value is float32(g / (1 + exp(-g)) * u) evaluated in float64 from the float32 g and u:
// one rounding at the end, so it is the correctly rounded result up to float64 error, and
// every row is independent of the others. silu(-Inf) is taken as its limit, -0.
func (c *card) SwiGLU(out, x ascend.Buffer, limit float32) error {
	const op = "SwiGLU"
	if err := c.enter(op); err != nil {
		return err
	}
	defer c.mu.Unlock()
	ob, xb, err := c.f32Pair(op, out, x)
	if err != nil {
		return err
	}
	m, n, ok := ob.rows()
	xm, x2n, ok2 := xb.rows()
	if !ok || !ok2 || xm != m || x2n != 2*n {
		return fmt.Errorf("%w: %s: out %v and x %v are not [M, N] and [M, 2N]", ascend.ErrShape, op, ob.shape, xb.shape)
	}
	if limit != limit {
		return fmt.Errorf("%w: %s: limit is NaN", ascend.ErrInvalid, op)
	}
	rowsPerTask := max(1, elemTask/max(n, 1))
	tasks := (m + rowsPerTask - 1) / rowsPerTask
	c.swiglu = swigluArgs{out: ob.f32, x: xb.f32, m: m, n: n, rowsPerTask: rowsPerTask, limit: limit}
	defer func() { c.swiglu = swigluArgs{} }()
	c.pool.parallel(tasks, false, c.swigluTask)
	return nil
}

// swigluArgs is a SwiGLU call's arguments, kept by the card (card.swiglu).
type swigluArgs struct {
	out, x            []float32
	m, n, rowsPerTask int
	limit             float32
}

// task computes rows [t·rowsPerTask, (t+1)·rowsPerTask).
func (a *swigluArgs) task(t int) {
	out, x, n, limit := a.out, a.x, a.n, a.limit
	for r := t * a.rowsPerTask; r < min(a.m, (t+1)*a.rowsPerTask); r++ {
		ascend.SwiGLURow(out[r*n:(r+1)*n], x[r*2*n:r*2*n+n], x[r*2*n+n:(r+1)*2*n], limit)
	}
}

// ScatterAdd does out[dst[i]] += float32(w[i]·x[src[i]]) for i in order, element by element
// in float32 (the product rounded, then added; no fused multiply-add). Work is split across
// column ranges, which keeps each element's additions in i order.
func (c *card) ScatterAdd(out, x ascend.Buffer, src, dst []int32, w []float32) error {
	const op = "ScatterAdd"
	if err := c.enter(op); err != nil {
		return err
	}
	defer c.mu.Unlock()
	ob, xb, err := c.f32Pair(op, out, x)
	if err != nil {
		return err
	}
	r, n, ok := ob.rows()
	p, xn, ok2 := xb.rows()
	if !ok || !ok2 || xn != n {
		return fmt.Errorf("%w: %s: out %v and x %v are not [R, N] and [P, N]", ascend.ErrShape, op, ob.shape, xb.shape)
	}
	if err := ascend.CheckScatterAdd(op, src, dst, w, p, r); err != nil {
		return err
	}
	const colsPerTask = 256
	cols := max(colsPerTask, elemTask/max(len(src), 1))
	tasks := (n + cols - 1) / cols
	c.scatter = scatterArgs{out: ob.f32, x: xb.f32, src: src, dst: dst, w: w, n: n, cols: cols}
	defer func() { c.scatter = scatterArgs{} }()
	c.pool.parallel(tasks, len(src)*n < elemTask, c.scatterTask)
	return nil
}

// scatterArgs is a ScatterAdd call's arguments, kept by the card (card.scatter).
type scatterArgs struct {
	out, x   []float32
	src, dst []int32
	w        []float32
	n, cols  int
}

// task adds columns [t·cols, (t+1)·cols) of every pair.
func (a *scatterArgs) task(t int) {
	out, x, dst, w, n := a.out, a.x, a.dst, a.w, a.n
	j0, j1 := t*a.cols, min(n, (t+1)*a.cols)
	for i, s := range a.src {
		o := out[int(dst[i])*n+j0 : int(dst[i])*n+j1]
		xs := x[int(s)*n+j0 : int(s)*n+j1]
		wi := w[i]
		for j := range o {
			o[j] += float32(wi * xs[j])
		}
	}
}

// f32Pair looks up an op's f32 output and input buffers, which may not be the same buffer.
func (c *card) f32Pair(op string, out, x ascend.Buffer) (ob, xb *buffer, err error) {
	if ob, err = c.lookup(op, "out", out); err != nil {
		return nil, nil, err
	}
	if xb, err = c.lookup(op, "x", x); err != nil {
		return nil, nil, err
	}
	if ob.dt != ascend.F32 || xb.dt != ascend.F32 {
		return nil, nil, fmt.Errorf("%w: %s: out is %v and x is %v, want f32", ascend.ErrDType, op, ob.dt, xb.dt)
	}
	if ob == xb {
		return nil, nil, fmt.Errorf("%w: %s: out and x are the same buffer", ascend.ErrInvalid, op)
	}
	return ob, xb, nil
}
