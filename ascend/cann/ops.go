//go:build cann

package cann

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/ascend/cann/acl"
)

// f32Pair looks up an op's f32 output and input, which may not be the same buffer.
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

func aclType(dt ascend.DType) acl.DataType {
	switch dt {
	case ascend.BF16:
		return acl.BF16
	case ascend.F16:
		return acl.Float16
	}
	return acl.Float
}

// tensor2D makes a contiguous [r, c] tensor over b.
func tensor2D(b *buffer, r, c int) (acl.Tensor, error) {
	dims := []int64{int64(r), int64(c)}
	return acl.CreateTensor(dims, acl.Contiguous(dims), 0, aclType(b.dt), acl.FormatND, nil, b.ptr)
}

// temps collects device blocks an op needs until it is queued; they go back to the cache
// afterwards (safe in stream order).
type temps struct {
	c      *card
	blocks []struct {
		p  acl.Ptr
		bs int64
	}
}

func (t *temps) alloc(n int64) (acl.Ptr, error) {
	if n == 0 {
		return acl.Ptr{}, nil
	}
	p, bs, err := t.c.devAlloc(n)
	if err != nil {
		return acl.Ptr{}, err
	}
	t.blocks = append(t.blocks, struct {
		p  acl.Ptr
		bs int64
	}{p, bs})
	return p, nil
}

func (t *temps) release() {
	for _, b := range t.blocks {
		t.c.devRelease(b.p, b.bs)
	}
}

// launch runs an aclnn op's phase 2 with a workspace of the size phase 1 asked for.
func (t *temps) launch(ws uint64, ex acl.Executor, run func(acl.Ptr, uint64, acl.Executor, acl.Stream) error) error {
	p, err := t.alloc(int64(ws))
	if err != nil {
		return err
	}
	return run(p, ws, ex, t.c.stream)
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
	ws := make([]*buffer, len(weights))
	row := 0
	for g, wb := range weights {
		b, err := c.lookup(op, fmt.Sprintf("weights[%d]", g), wb)
		if err != nil {
			return err
		}
		if b == ob {
			return fmt.Errorf("%w: %s: out is also weights[%d]", ascend.ErrInvalid, op, g)
		}
		if wn, wk, ok := b.rows(); !ok || wn != n || wk != k {
			return fmt.Errorf("%w: %s: weights[%d] is %v, want [%d %d] for out %v and x %v",
				ascend.ErrShape, op, g, b.shape, n, k, ob.shape, xb.shape)
		}
		cnt := counts[g]
		if cnt < 0 || cnt > int64(m-row) {
			return fmt.Errorf("%w: %s: counts[%d] = %d with %d of %d rows left", ascend.ErrShape, op, g, cnt, m-row, m)
		}
		row += int(cnt)
		ws[g] = b
	}
	if row == 0 || n == 0 || len(ws) == 0 {
		return nil // nothing covered: rows past the counts stay unwritten
	}
	return c.wrap(op, c.do(func() error { return c.gmm(ob, xb, ws, counts, m, k, n) }))
}

// gmm queues the grouped matmul (worker only).
func (c *card) gmm(ob, xb *buffer, ws []*buffer, counts []int64, m, k, n int) (err error) {
	t := &temps{c: c}
	defer t.release()
	var wts []acl.Tensor
	var wl, xl, ol acl.TensorList
	var gl acl.Tensor
	defer func() {
		// A list owns its tensors; tensors not yet in a list are destroyed alone.
		if wl == (acl.TensorList{}) {
			for _, w := range wts {
				_ = w.Destroy()
			}
		}
		for _, l := range []acl.TensorList{wl, xl, ol} {
			if l != (acl.TensorList{}) {
				err = errors.Join(err, l.Destroy())
			}
		}
		if !gl.IsNil() {
			err = errors.Join(err, gl.Destroy())
		}
	}()
	// Weights as [K, N] views over [N, K] storage; bf16/f16 widened to f32 first, I8 and
	// MXFP4 dequantised to f32 (quant.go).
	for _, w := range ws {
		data := w.ptr
		if w.dt != ascend.F32 && n*k > 0 {
			scratch, err := t.alloc(int64(n) * int64(k) * 4)
			if err != nil {
				return err
			}
			if w.dt.Quantized() {
				err = c.dequant(w, scratch, n, k)
			} else {
				err = c.cast(t, w, scratch, n, k)
			}
			if err != nil {
				return err
			}
			data = scratch
		}
		wt, err := acl.CreateTensor([]int64{int64(k), int64(n)}, []int64{1, int64(k)}, 0, acl.Float, acl.FormatND,
			[]int64{int64(n), int64(k)}, data)
		if err != nil {
			return err
		}
		wts = append(wts, wt)
	}
	if wl, err = acl.CreateTensorList(wts...); err != nil {
		return err
	}
	xt, err := tensor2D(xb, m, k)
	if err != nil {
		return err
	}
	if xl, err = acl.CreateTensorList(xt); err != nil {
		_ = xt.Destroy()
		return err
	}
	ot, err := tensor2D(ob, m, n)
	if err != nil {
		return err
	}
	if ol, err = acl.CreateTensorList(ot); err != nil {
		_ = ot.Destroy()
		return err
	}
	// Group list: INT64 counts (groupListType 1) uploaded through a pinned buffer that is
	// rewritten only after the event recorded behind its last copy has completed.
	glBytes := 8 * len(counts)
	if err := c.glEvent.Synchronize(); err != nil {
		return err
	}
	if glBytes > c.glCap {
		if !c.glHost.IsNil() {
			if err := acl.FreeHost(c.glHost); err != nil {
				return err
			}
			c.glHost, c.glCap = acl.Ptr{}, 0
		}
		sz := max(glBytes, 8<<10)
		p, err := acl.MallocHost(sz)
		if err != nil {
			return err
		}
		c.glHost, c.glCap = p, sz
	}
	host := acl.HostSlice(c.glHost, glBytes)
	for i, v := range counts {
		binary.LittleEndian.PutUint64(host[8*i:], uint64(v))
	}
	glDev, err := t.alloc(int64(glBytes))
	if err != nil {
		return err
	}
	if err := acl.MemcpyAsync(glDev, glBytes, c.glHost, glBytes, acl.HostToDevice, c.stream); err != nil {
		return err
	}
	if err := c.glEvent.Record(c.stream); err != nil {
		return err
	}
	if gl, err = acl.CreateTensor([]int64{int64(len(counts))}, []int64{1}, 0, acl.Int64, acl.FormatND, nil, glDev); err != nil {
		return err
	}
	wsSize, ex, err := acl.GroupedMatmulV5WorkspaceSize(xl, wl, gl, 3, 0, 1, 0, ol)
	if err != nil {
		return err
	}
	return t.launch(wsSize, ex, acl.GroupedMatmulV5)
}

// cast queues w ([n, k], bf16 or f16) → dst as f32 (worker only).
func (c *card) cast(t *temps, w *buffer, dst acl.Ptr, n, k int) error {
	src, err := tensor2D(w, n, k)
	if err != nil {
		return err
	}
	defer src.Destroy()
	dims := []int64{int64(n), int64(k)}
	out, err := acl.CreateTensor(dims, acl.Contiguous(dims), 0, acl.Float, acl.FormatND, nil, dst)
	if err != nil {
		return err
	}
	defer out.Destroy()
	ws, ex, err := acl.CastWorkspaceSize(src, acl.Float, out)
	if err != nil {
		return err
	}
	return t.launch(ws, ex, acl.Cast)
}

// SwiGLU runs aclnnSwiGlu; with limit > 0 it computes on the host (see the package doc).
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
	if m*n == 0 {
		return nil
	}
	if limit > 0 {
		return c.wrap(op, c.do(func() error {
			raw, err := c.d2h(xb, m*2*n*4)
			if err != nil {
				return err
			}
			xs := make([]float32, m*2*n)
			decode(ascend.F32, raw, xs)
			res := make([]float32, m*n)
			for r := 0; r < m; r++ {
				ascend.SwiGLURow(res[r*n:(r+1)*n], xs[r*2*n:r*2*n+n], xs[r*2*n+n:(r+1)*2*n], limit)
			}
			return c.h2d(ob, 0, encode(ascend.F32, res))
		}))
	}
	return c.wrap(op, c.do(func() error {
		t := &temps{c: c}
		defer t.release()
		xt, err := tensor2D(xb, m, 2*n)
		if err != nil {
			return err
		}
		defer xt.Destroy()
		ot, err := tensor2D(ob, m, n)
		if err != nil {
			return err
		}
		defer ot.Destroy()
		ws, ex, err := acl.SwiGluWorkspaceSize(xt, -1, ot)
		if err != nil {
			return err
		}
		return t.launch(ws, ex, acl.SwiGlu)
	}))
}

// ScatterAdd computes on the host in the contract's sequential float32 order (see the
// package doc): out and x are copied back, updated and out copied up again.
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
	if len(src) == 0 || n == 0 {
		return nil
	}
	return c.wrap(op, c.do(func() error {
		raw, err := c.d2h(ob, r*n*4)
		if err != nil {
			return err
		}
		of := make([]float32, r*n)
		decode(ascend.F32, raw, of)
		if raw, err = c.d2h(xb, p*n*4); err != nil {
			return err
		}
		xf := make([]float32, p*n)
		decode(ascend.F32, raw, xf)
		for i, s := range src {
			o := of[int(dst[i])*n : int(dst[i])*n+n]
			xs := xf[int(s)*n : int(s)*n+n]
			wi := w[i]
			for j := range o {
				o[j] += float32(wi * xs[j])
			}
		}
		return c.h2d(ob, 0, encode(ascend.F32, of))
	}))
}
