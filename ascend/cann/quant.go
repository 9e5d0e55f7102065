//go:build cann

package cann

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/ascend/cann/acl"
)

// Quantised weights (I8, MXFP4). A buffer keeps the ascend.QuantLayout storage on the
// device: the values at offset 0 and the scales at scaleOff (the values' end rounded up to
// quantAlign, so every tensor starts aligned); Write, WriteF32, ReadF32 and Bytes speak the
// layout's byte offsets, which are mapped onto the two regions.
//
// GroupedMatmul dequantises each quantised weight into f32 scratch on the device with
// documented aclnn ops, then runs the f32 aclnnGroupedMatmulV5 as for bf16 weights:
//
//	I8:    aclnnCast INT8 → FLOAT, then aclnnMul by the FLOAT scales viewed [N, 1]
//	MXFP4: aclnnCast UINT8 → INT32 of the packed bytes, aclnnEmbedding into a [256, 2]
//	       table of (low, high) nibble values; the E8M0 bytes likewise into a [256, 1] table
//	       of 2^(e−127); aclnnMul of the values [N·K/32, 32] by the scales [N·K/32, 1]
//
// Each step is exact or one float32 rounding (q·s), so the weights the matmul sees are
// bit-identical to ReadF32's (ascend.DequantI8Row, DequantMXFP4Row). GroupedMatmulV5's own
// antiquant modes would be faster and lighter but take f16/bf16 activations only, and no
// documented GroupedMatmul mode takes MXFP4 weights with f16/bf16 activations (docs/cann.md).

// quantAlign is the alignment of the scales on the device.
const quantAlign = 512

// SupportsDType implements ascend.SupportsDType: the cann backend runs I8 and MXFP4
// weights.
func (c *card) SupportsDType(dt ascend.DType) bool {
	return dt.Quantized() || dt.Size() != 0
}

// allocQuant is Alloc for I8 and MXFP4; the caller holds mu.
func (c *card) allocQuant(dt ascend.DType, shape []int) (ascend.Buffer, error) {
	ql, err := ascend.CheckQuantShape(dt, shape)
	if err != nil {
		return nil, fmt.Errorf("cann card %d: Alloc: %w", c.id, err)
	}
	bytes := ql.Bytes()
	scaleOff := (ql.Values + quantAlign - 1) &^ (quantAlign - 1)
	dev := scaleOff + ql.Scales
	if dev > maxBytes {
		return nil, fmt.Errorf("%w: cann card %d: Alloc %v%v is more than %d bytes", ascend.ErrOutOfMemory, c.id, dt, shape, int64(maxBytes))
	}
	b := &buffer{card: c, dt: dt, shape: []int{ql.N, ql.K}, n: ql.N * ql.K, ql: ql, scaleOff: scaleOff}
	return c.place(b, dev, bytes)
}

// storeRaw writes data at byte offset off of the storage layout, split at the values/scales
// boundary (worker only).
func (c *card) storeRaw(b *buffer, off int64, data []byte) error {
	if v := min(int64(len(data)), max(b.ql.Values-off, 0)); v > 0 {
		if err := c.h2d(b, int(off), data[:v]); err != nil {
			return err
		}
		off, data = off+v, data[v:]
	}
	if len(data) == 0 {
		return nil
	}
	return c.h2d(b, int(b.scaleOff+off-b.ql.Values), data)
}

// writeQuant is Write for a quantised buffer: off and len(data) are bytes of the storage.
// The caller holds mu.
func (c *card) writeQuant(b *buffer, off int, data []byte) error {
	size := b.ql.Bytes()
	if off < 0 || int64(len(data)) > size || int64(off) > size-int64(len(data)) {
		return fmt.Errorf("%w: Write: %d bytes at byte %d into %v%v (%d bytes: %d of values, then %d of scales)",
			ascend.ErrShape, len(data), off, b.dt, b.shape, size, b.ql.Values, b.ql.Scales)
	}
	if len(data) == 0 {
		return nil
	}
	return c.do(func() error { return c.storeRaw(b, int64(off), data) })
}

// writeQuantF32 is WriteF32 for a quantised buffer: whole rows, quantised on the host with
// the contract's rules and written as values and scales. The values are checked first, so
// a refused call changes nothing. The caller holds mu.
func (c *card) writeQuantF32(b *buffer, off int, src []float32) error {
	if err := span("WriteF32", b, off, len(src)); err != nil {
		return err
	}
	k := b.ql.K
	if k == 0 || len(src) == 0 {
		return nil
	}
	r0, rows := off/k, len(src)/k
	vpr, spr := b.ql.Values/int64(b.ql.N), b.ql.Scales/int64(b.ql.N) // bytes a row
	vals, scales := make([]byte, int64(rows)*vpr), make([]byte, int64(rows)*spr)
	if err := ascend.QuantizeRows(b.dt, b.ql, off, src, vals, scales); err != nil {
		return err
	}
	return c.do(func() error {
		if err := c.storeRaw(b, b.ql.RowValues(r0), vals); err != nil {
			return err
		}
		return c.storeRaw(b, b.ql.RowScales(r0), scales)
	})
}

// readQuant is ReadF32 for a quantised buffer: the first len(dst) values, dequantised on
// the host. The caller holds mu and has checked len(dst).
func (c *card) readQuant(b *buffer, dst []float32) error {
	k := b.ql.K
	if len(dst) == 0 || k == 0 {
		return c.do(func() error { return c.stream.Synchronize() })
	}
	raw := make([]byte, b.scaleOff+b.ql.Scales)
	err := c.do(func() error {
		st, err := c.d2h(b, len(raw))
		copy(raw, st)
		return err
	})
	if err != nil {
		return err
	}
	vals, scales := raw[:b.ql.Values], raw[b.scaleOff:]
	row := make([]float32, k)
	for r := 0; r*k < len(dst); r++ {
		if b.dt == ascend.I8 {
			ascend.DequantI8Row(row, vals[r*k:(r+1)*k], ascend.I8Scale(scales, r))
		} else if err := ascend.DequantMXFP4Row(row, vals[r*k/2:(r+1)*k/2],
			scales[r*k/ascend.MXBlock:(r+1)*k/ascend.MXBlock]); err != nil {
			return err
		}
		copy(dst[r*k:], row)
	}
	return nil
}

// dequant queues w ([n, k], I8 or MXFP4) → dst as f32 [n, k] (worker only). Its
// intermediates go back to the cache as soon as the steps are queued, so the next weight's
// dequantisation reuses them (safe in stream order: the card has one stream) and a call's
// transient memory is its f32 weights plus one weight's intermediates.
func (c *card) dequant(w *buffer, dst acl.Ptr, n, k int) error {
	t := &temps{c: c}
	defer t.release()
	nk := int64(n) * int64(k)
	if w.dt == ascend.I8 {
		q, err := t.alloc(nk * 4)
		if err != nil {
			return err
		}
		if err := c.castRaw(t, w.ptr, acl.Int8, q, acl.Float, []int64{int64(n), int64(k)}); err != nil {
			return err
		}
		return c.mul(t, q, []int64{int64(n), int64(k)}, w.ptr.Add(int(w.scaleOff)), []int64{int64(n), 1}, dst)
	}
	tab, err := c.mxTables()
	if err != nil {
		return err
	}
	nv, ns := nk/2, nk/ascend.MXBlock
	idx, err := t.alloc(nv * 4)
	if err != nil {
		return err
	}
	vals, err := t.alloc(nk * 4)
	if err != nil {
		return err
	}
	if err := c.castRaw(t, w.ptr, acl.UInt8, idx, acl.Int32, []int64{nv}); err != nil {
		return err
	}
	if err := c.embed(t, tab.ptr, 2, idx, nv, vals); err != nil {
		return err
	}
	sidx, err := t.alloc(ns * 4)
	if err != nil {
		return err
	}
	sval, err := t.alloc(ns * 4)
	if err != nil {
		return err
	}
	if err := c.castRaw(t, w.ptr.Add(int(w.scaleOff)), acl.UInt8, sidx, acl.Int32, []int64{ns}); err != nil {
		return err
	}
	if err := c.embed(t, tab.ptr.Add(mxPairBytes), 1, sidx, ns, sval); err != nil {
		return err
	}
	return c.mul(t, vals, []int64{ns, ascend.MXBlock}, sval, []int64{ns, 1}, dst)
}

// mxPairBytes is the size of the E2M1 pair table; the E8M0 table follows it.
const mxPairBytes = 256 * 2 * 4

// mxTables returns the MXFP4 decode tables on the device, uploading them on first use
// (worker only): for every byte b, [E2M1(b&15), E2M1(b>>4)]; then for every E8M0 code e,
// 2^(e−127) (NaN for 0xFF). They live until Close.
func (c *card) mxTables() (*buffer, error) {
	if c.mxTab != nil {
		return c.mxTab, nil
	}
	raw := make([]byte, mxPairBytes+256*4)
	for b := range 256 {
		binary.LittleEndian.PutUint32(raw[8*b:], math.Float32bits(ascend.E2M1Values[b&15]))
		binary.LittleEndian.PutUint32(raw[8*b+4:], math.Float32bits(ascend.E2M1Values[b>>4]))
		binary.LittleEndian.PutUint32(raw[mxPairBytes+4*b:], math.Float32bits(ascend.E8M0Value(byte(b))))
	}
	p, bs, err := c.devAlloc(int64(len(raw)))
	if err != nil {
		return nil, err
	}
	tab := &buffer{card: c, dt: ascend.F32, shape: []int{len(raw) / 4}, n: len(raw) / 4, ptr: p, block: bs}
	if err := c.h2d(tab, 0, raw); err != nil {
		c.devRelease(p, bs)
		return nil, err
	}
	c.mxTab = tab
	return tab, nil
}

// castRaw queues a contiguous src (dims, dtype from) → dst (dtype to) with aclnnCast.
func (c *card) castRaw(t *temps, src acl.Ptr, from acl.DataType, dst acl.Ptr, to acl.DataType, dims []int64) error {
	st, err := acl.CreateTensor(dims, acl.Contiguous(dims), 0, from, acl.FormatND, nil, src)
	if err != nil {
		return err
	}
	defer st.Destroy()
	ot, err := acl.CreateTensor(dims, acl.Contiguous(dims), 0, to, acl.FormatND, nil, dst)
	if err != nil {
		return err
	}
	defer ot.Destroy()
	ws, ex, err := acl.CastWorkspaceSize(st, to, ot)
	if err != nil {
		return err
	}
	return t.launch(ws, ex, acl.Cast)
}

// mul queues out = a · b (f32, contiguous, b broadcast to a's dims) with aclnnMul.
func (c *card) mul(t *temps, a acl.Ptr, adims []int64, b acl.Ptr, bdims []int64, out acl.Ptr) error {
	at, err := acl.CreateTensor(adims, acl.Contiguous(adims), 0, acl.Float, acl.FormatND, nil, a)
	if err != nil {
		return err
	}
	defer at.Destroy()
	bt, err := acl.CreateTensor(bdims, acl.Contiguous(bdims), 0, acl.Float, acl.FormatND, nil, b)
	if err != nil {
		return err
	}
	defer bt.Destroy()
	ot, err := acl.CreateTensor(adims, acl.Contiguous(adims), 0, acl.Float, acl.FormatND, nil, out)
	if err != nil {
		return err
	}
	defer ot.Destroy()
	ws, ex, err := acl.MulWorkspaceSize(at, bt, ot)
	if err != nil {
		return err
	}
	return t.launch(ws, ex, acl.Mul)
}

// embed queues out [n, d] = table [256, d][idx] (f32 table, INT32 indices [n]) with
// aclnnEmbedding.
func (c *card) embed(t *temps, table acl.Ptr, d int64, idx acl.Ptr, n int64, out acl.Ptr) error {
	tdims, idims, odims := []int64{256, d}, []int64{n}, []int64{n, d}
	tt, err := acl.CreateTensor(tdims, acl.Contiguous(tdims), 0, acl.Float, acl.FormatND, nil, table)
	if err != nil {
		return err
	}
	defer tt.Destroy()
	it, err := acl.CreateTensor(idims, acl.Contiguous(idims), 0, acl.Int32, acl.FormatND, nil, idx)
	if err != nil {
		return err
	}
	defer it.Destroy()
	ot, err := acl.CreateTensor(odims, acl.Contiguous(odims), 0, acl.Float, acl.FormatND, nil, out)
	if err != nil {
		return err
	}
	defer ot.Destroy()
	ws, ex, err := acl.EmbeddingWorkspaceSize(tt, it, ot)
	if err != nil {
		return err
	}
	return t.launch(ws, ex, acl.Embedding)
}
