//go:build cann

package cann

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/ascend/cann/acl"
)

// Dense is what a cann card offers beyond ascend.Ops, for a router's dense path and gating
// on the card: aclnnMatmul, aclnnRmsNorm and aclnnMoeGatingTopKSoftmax. Every card the
// "cann" backend opens implements it (assert ascend.Card to Dense). ascend.Ops has no such
// ops yet, so the model's forward pass does not call these: it runs its Linears through
// GroupedMatmul and its norms, attention and gating on the host (see docs/cann.md).
type Dense interface {
	// Matmul: out [M, N] = x [M, K] · wᵀ for w [N, K] (a Linear's [out, in]), all three of
	// one dtype, in the dtype's own precision (cubeMathType KEEP_DTYPE).
	Matmul(out, x, w ascend.Buffer) error
	// RMSNorm: out [M, H] = x / sqrt(mean(x²) + eps) · gamma per row, for gamma [H] of x's
	// dtype or f32 and out of x's dtype.
	RMSNorm(out, x, gamma ascend.Buffer, eps float32) error
	// GatingTopKSoftmax routes the rows of logits [T, E]: the k experts of highest softmax
	// probability per row, best first (ties to the lower id), into experts [T·k] and their
	// probabilities (not renormalised) into weights [T·k].
	GatingTopKSoftmax(logits ascend.Buffer, k int, experts []int32, weights []float32) error
}

var _ Dense = (*card)(nil)

func (c *card) Matmul(out, x, w ascend.Buffer) error {
	const op = "Matmul"
	if err := c.enter(op); err != nil {
		return err
	}
	defer c.mu.Unlock()
	ob, err := c.lookup(op, "out", out)
	if err != nil {
		return err
	}
	xb, err := c.lookup(op, "x", x)
	if err != nil {
		return err
	}
	wb, err := c.lookup(op, "w", w)
	if err != nil {
		return err
	}
	if xb.dt != ob.dt || wb.dt != ob.dt || ob.dt.Quantized() {
		return fmt.Errorf("%w: %s: out %v, x %v and w %v must share a float dtype", ascend.ErrDType, op, ob.dt, xb.dt, wb.dt)
	}
	if ob == xb || ob == wb {
		return fmt.Errorf("%w: %s: out is also an input", ascend.ErrInvalid, op)
	}
	m, k, ok1 := xb.rows()
	n, wk, ok2 := wb.rows()
	om, on, ok3 := ob.rows()
	if !ok1 || !ok2 || !ok3 || wk != k || om != m || on != n {
		return fmt.Errorf("%w: %s: out %v, x %v and w %v are not [M, N], [M, K] and [N, K]", ascend.ErrShape, op, ob.shape, xb.shape, wb.shape)
	}
	if m*n == 0 {
		return nil
	}
	return c.wrap(op, c.do(func() error {
		t := &temps{c: c}
		defer t.release()
		xt, err := tensor2D(xb, m, k)
		if err != nil {
			return err
		}
		defer xt.Destroy()
		// w as a [K, N] view over its [N, K] storage: the transpose is free.
		wt, err := acl.CreateTensor([]int64{int64(k), int64(n)}, []int64{1, int64(k)}, 0, aclType(wb.dt), acl.FormatND,
			[]int64{int64(n), int64(k)}, wb.ptr)
		if err != nil {
			return err
		}
		defer wt.Destroy()
		ot, err := tensor2D(ob, m, n)
		if err != nil {
			return err
		}
		defer ot.Destroy()
		ws, ex, err := acl.MatmulWorkspaceSize(xt, wt, ot, acl.KeepDType)
		if err != nil {
			return err
		}
		return t.launch(ws, ex, acl.Matmul)
	}))
}

func (c *card) RMSNorm(out, x, gamma ascend.Buffer, eps float32) error {
	const op = "RMSNorm"
	if err := c.enter(op); err != nil {
		return err
	}
	defer c.mu.Unlock()
	ob, err := c.lookup(op, "out", out)
	if err != nil {
		return err
	}
	xb, err := c.lookup(op, "x", x)
	if err != nil {
		return err
	}
	gb, err := c.lookup(op, "gamma", gamma)
	if err != nil {
		return err
	}
	if ob.dt != xb.dt || (gb.dt != xb.dt && gb.dt != ascend.F32) || xb.dt.Quantized() {
		return fmt.Errorf("%w: %s: out %v, x %v, gamma %v", ascend.ErrDType, op, ob.dt, xb.dt, gb.dt)
	}
	m, h, ok := xb.rows()
	om, oh, ok2 := ob.rows()
	if !ok || !ok2 || om != m || oh != h || len(gb.shape) != 1 || gb.shape[0] != h {
		return fmt.Errorf("%w: %s: out %v, x %v and gamma %v are not [M, H], [M, H] and [H]", ascend.ErrShape, op, ob.shape, xb.shape, gb.shape)
	}
	if !(eps >= 0) || math.IsInf(float64(eps), 0) {
		return fmt.Errorf("%w: %s: eps %v", ascend.ErrInvalid, op, eps)
	}
	if m*h == 0 {
		return nil
	}
	return c.wrap(op, c.do(func() error {
		t := &temps{c: c}
		defer t.release()
		rstd, err := t.alloc(int64(m) * 4)
		if err != nil {
			return err
		}
		xt, err := tensor2D(xb, m, h)
		if err != nil {
			return err
		}
		defer xt.Destroy()
		gt, err := acl.CreateTensor([]int64{int64(h)}, []int64{1}, 0, aclType(gb.dt), acl.FormatND, nil, gb.ptr)
		if err != nil {
			return err
		}
		defer gt.Destroy()
		ot, err := tensor2D(ob, m, h)
		if err != nil {
			return err
		}
		defer ot.Destroy()
		rdims := []int64{int64(m), 1}
		rt, err := acl.CreateTensor(rdims, acl.Contiguous(rdims), 0, acl.Float, acl.FormatND, nil, rstd)
		if err != nil {
			return err
		}
		defer rt.Destroy()
		ws, ex, err := acl.RmsNormWorkspaceSize(xt, gt, float64(eps), ot, rt)
		if err != nil {
			return err
		}
		return t.launch(ws, ex, acl.RmsNorm)
	}))
}

func (c *card) GatingTopKSoftmax(logits ascend.Buffer, k int, experts []int32, weights []float32) error {
	const op = "GatingTopKSoftmax"
	if err := c.enter(op); err != nil {
		return err
	}
	defer c.mu.Unlock()
	lb, err := c.lookup(op, "logits", logits)
	if err != nil {
		return err
	}
	if lb.dt.Quantized() {
		return fmt.Errorf("%w: %s: logits are %v, want a float dtype", ascend.ErrDType, op, lb.dt)
	}
	rows, e, ok := lb.rows()
	if !ok || e == 0 {
		return fmt.Errorf("%w: %s: logits %v are not [T, E]", ascend.ErrShape, op, lb.shape)
	}
	if k < 1 || k > e {
		return fmt.Errorf("%w: %s: top-%d of %d experts", ascend.ErrInvalid, op, k, e)
	}
	if len(experts) != rows*k || len(weights) != rows*k {
		return fmt.Errorf("%w: %s: %d expert and %d weight slots for %d rows × top-%d", ascend.ErrShape, op, len(experts), len(weights), rows, k)
	}
	if rows == 0 {
		return nil
	}
	return c.wrap(op, c.do(func() error {
		t := &temps{c: c}
		defer t.release()
		n := int64(rows * k)
		yp, err := t.alloc(n * int64(lb.dt.Size()))
		if err != nil {
			return err
		}
		ip, err := t.alloc(n * 4)
		if err != nil {
			return err
		}
		rp, err := t.alloc(n * 4)
		if err != nil {
			return err
		}
		xt, err := tensor2D(lb, rows, e)
		if err != nil {
			return err
		}
		defer xt.Destroy()
		dims := []int64{int64(rows), int64(k)}
		var outs [3]acl.Tensor
		for i, o := range []struct {
			dt acl.DataType
			p  acl.Ptr
		}{{aclType(lb.dt), yp}, {acl.Int32, ip}, {acl.Int32, rp}} {
			if outs[i], err = acl.CreateTensor(dims, acl.Contiguous(dims), 0, o.dt, acl.FormatND, nil, o.p); err != nil {
				return err
			}
			defer outs[i].Destroy()
		}
		ws, ex, err := acl.MoeGatingTopKSoftmaxWorkspaceSize(xt, acl.Tensor{}, int64(k), outs[0], outs[1], outs[2])
		if err != nil {
			return err
		}
		if err := t.launch(ws, ex, acl.MoeGatingTopKSoftmax); err != nil {
			return err
		}
		raw, err := c.d2hPtr(ip, int(n)*4)
		if err != nil {
			return err
		}
		for i := range experts {
			experts[i] = int32(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		if raw, err = c.d2hPtr(yp, int(n)*lb.dt.Size()); err != nil {
			return err
		}
		decode(lb.dt, raw, weights)
		return nil
	}))
}

// d2hPtr copies n bytes of device memory at p into the staging buffer and returns it
// (worker only), after a stream sync: the op that wrote p has run.
func (c *card) d2hPtr(p acl.Ptr, n int) ([]byte, error) {
	st, err := c.staging(n)
	if err != nil {
		return nil, err
	}
	if err := acl.MemcpyAsync(st, c.stageCap, p, n, acl.DeviceToHost, c.stream); err != nil {
		return nil, err
	}
	if err := c.stream.Synchronize(); err != nil {
		return nil, err
	}
	return acl.HostSlice(st, n), nil
}
