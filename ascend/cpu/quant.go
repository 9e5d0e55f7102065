package cpu

import (
	"fmt"
	"math"

	"github.com/moemesh/moemesh/ascend"
)

// Quantised buffers (I8, MXFP4) keep the ascend.QuantLayout storage as it is in raw, so
// Write is a copy and the kernels read the packed values where they sit.

// allocQuant is Alloc for I8 and MXFP4; the caller holds mu.
func (c *card) allocQuant(dt ascend.DType, shape []int) (ascend.Buffer, error) {
	ql, err := ascend.CheckQuantShape(dt, shape)
	if err != nil {
		return nil, fmt.Errorf("cpu card %d: Alloc: %w", c.id, err)
	}
	bytes := ql.Bytes()
	// The element count must fit an int too (it bounds ReadF32), which on 32-bit platforms
	// is tighter than the byte count for MXFP4.
	if bytes > maxBytes || int64(ql.N)*int64(ql.K) > math.MaxInt {
		return nil, fmt.Errorf("%w: cpu card %d: Alloc %v%v is more than %d bytes",
			ascend.ErrOutOfMemory, c.id, dt, shape, int64(maxBytes))
	}
	if c.budget > 0 && bytes > c.budget-c.used {
		return nil, fmt.Errorf("%w: cpu card %d: Alloc %v%v needs %d bytes, %d of %d bytes in use",
			ascend.ErrOutOfMemory, c.id, dt, shape, bytes, c.used, c.budget)
	}
	b := &buffer{card: c, dt: dt, shape: []int{ql.N, ql.K}, n: ql.N * ql.K, raw: make([]byte, bytes), ql: ql}
	c.used += bytes
	c.live[b] = struct{}{}
	return b, nil
}

// writeQuant is Write for a quantised buffer: off and len(data) are bytes of the storage.
func writeQuant(b *buffer, off int, data []byte) error {
	if off < 0 || len(data) > len(b.raw) || off > len(b.raw)-len(data) {
		return fmt.Errorf("%w: Write: %d bytes at byte %d into %v%v (%d bytes: %d of values, then %d of scales)",
			ascend.ErrShape, len(data), off, b.dt, b.shape, len(b.raw), b.ql.Values, b.ql.Scales)
	}
	copy(b.raw[off:], data)
	return nil
}

// writeQuantF32 is WriteF32 for a quantised buffer: whole rows, quantised in place
// (ascend.QuantizeRows checks everything first, so a refused call changes nothing).
func writeQuantF32(b *buffer, off int, src []float32) error {
	k := b.ql.K
	if k == 0 || len(src) == 0 {
		return nil
	}
	r0, r1 := off/k, (off+len(src)+k-1)/k
	if off%k != 0 || len(src)%k != 0 {
		r1 = r0 // QuantizeRows refuses it with the whole-rows error
	}
	vals := b.raw[b.ql.RowValues(r0):b.ql.RowValues(r1)]
	scales := b.raw[b.ql.RowScales(r0):b.ql.RowScales(r1)]
	return ascend.QuantizeRows(b.dt, b.ql, off, src, vals, scales)
}

// readQuant is ReadF32 for a quantised buffer: the first len(dst) values, dequantised.
func readQuant(b *buffer, dst []float32) {
	k := b.ql.K
	if k == 0 {
		return
	}
	row := make([]float32, k)
	vals, scales := b.raw[:b.ql.Values], b.raw[b.ql.Values:]
	for r := 0; r*k < len(dst); r++ {
		if b.dt == ascend.I8 {
			ascend.DequantI8Row(row, vals[r*k:(r+1)*k], ascend.I8Scale(scales, r))
		} else {
			// Lengths follow from the layout, so this cannot fail.
			_ = ascend.DequantMXFP4Row(row, vals[r*k/2:(r+1)*k/2], scales[r*k/ascend.MXBlock:(r+1)*k/ascend.MXBlock])
		}
		copy(dst[r*k:], row)
	}
}
