package safetensors

import (
	"fmt"
	"strings"
)

// Quantised weights (models.md §5.2–5.4) are stored as low-precision values plus a scale
// tensor beside them; the real weight is value · scale of the value's block:
//   - DeepSeek-V3/R1/K2 FP8: "x.weight" F8_E4M3 [R, C] + "x.weight_scale_inv" F32
//     [ceil(R/128), ceil(C/128)] (despite the name, a multiplier).
//   - DeepSeek-V4 FP8: "x.weight" F8_E4M3 + "x.scale" F8_E8M0, 128×128 blocks.
//   - DeepSeek-V4 FP4 experts: "x.weight" I8/U8 [R, C/2] holding two e2m1 values per byte
//     (low nibble first) + "x.scale" F8_E8M0 [R, C/32].
//   - compressed-tensors int8/fp8: "x.weight" + "x.weight_scale" [R, 1] or [1].
// The block size per axis is inferred from the two shapes: 1 (scale dim = weight dim),
// 128 or 32 (scale dim = ceil(weight dim / b)), or the whole axis (scale dim 1).

// quantDTypes may carry a scale; wider types are never treated as quantised.
var quantDTypes = map[DType]bool{F8E4M3: true, F8E5M2: true, F8E4M3FNUZ: true, F8E5M2FNUZ: true,
	F4: true, I8: true, U8: true}

// ScaleOf returns the scale tensor of quantised weight name, if it has one.
func (c *Checkpoint) ScaleOf(name string) (TensorInfo, bool) {
	t, ok := c.Info(name)
	if !ok || !quantDTypes[t.DType] {
		return TensorInfo{}, false
	}
	cands := []string{name + "_scale_inv", name + "_scale"}
	if base, ok := strings.CutSuffix(name, ".weight"); ok {
		cands = append(cands, base+".scale")
	}
	for _, s := range cands {
		if st, ok := c.Info(s); ok {
			return st, true
		}
	}
	return TensorInfo{}, false
}

// F32 returns tensor name as float32 values, row-major: floats and integers by value
// (I64 token tables included), and a quantised weight with a scale tensor beside it
// dequantised (see ScaleOf). A packed FP4 weight of shape [R, C/2] yields R·C values.
func (c *Checkpoint) F32(name string) ([]float32, error) {
	f, t, err := c.lookup(name)
	if err != nil {
		return nil, err
	}
	return c.decode(f, t, 0, t.Numel())
}

// RowsF32 is Rows decoded as F32 does: only the requested rows (and the scale tensor) are
// read, and each value gets the scale of its block, so one expert of a fused FP8 tensor
// dequantises without touching the others.
func (c *Checkpoint) RowsF32(name string, index, rowStart, rowEnd int) ([]float32, error) {
	f, t, err := c.lookup(name)
	if err != nil {
		return nil, err
	}
	start, count, err := rowSpan(t, index, rowStart, rowEnd)
	if err != nil {
		return nil, err
	}
	return c.decode(f, t, start, count)
}

// decode converts elements [start, start+count) of t, dequantising when t has a scale.
func (c *Checkpoint) decode(f *File, t TensorInfo, start, count int64) ([]float32, error) {
	bits := int64(t.DType.Bits())
	raw, err := f.bytes(t.Offset+start*bits/8, count*bits/8)
	if err != nil {
		return nil, err
	}
	st, ok := c.ScaleOf(t.Name)
	if !ok {
		vals, err := DecodeF32(t.DType, raw)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		return vals, nil
	}
	sraw, err := c.Raw(st.Name)
	if err != nil {
		return nil, err
	}
	return dequant(t, raw, start, st, sraw)
}

// Dequant returns the real values of quantised weight w (its raw bytes wdata) given its
// scale tensor (raw bytes sdata), for callers that read bytes themselves; the layouts are
// those described above.
func Dequant(w TensorInfo, wdata []byte, scale TensorInfo, sdata []byte) ([]float32, error) {
	size, err := byteSize(w.DType, w.Shape)
	if err != nil || int64(len(wdata)) != size {
		return nil, fmt.Errorf("%w: weight %q: %d bytes for %s %v", ErrInvalid, w.Name, len(wdata), w.DType, w.Shape)
	}
	if size, err := byteSize(scale.DType, scale.Shape); err != nil || int64(len(sdata)) != size {
		return nil, fmt.Errorf("%w: scale %q: %d bytes for %s %v", ErrInvalid, scale.Name, len(sdata), scale.DType, scale.Shape)
	}
	return dequant(w, wdata, 0, scale, sdata)
}

// dequant decodes raw, elements [start, ...) of weight w, and applies scale.
func dequant(w TensorInfo, raw []byte, start int64, scale TensorInfo, sraw []byte) ([]float32, error) {
	fail := func(why string) error {
		return fmt.Errorf("%w: weight %q %s %v with scale %q %s %v: %s",
			ErrUnsupported, w.Name, w.DType, w.Shape, scale.Name, scale.DType, scale.Shape, why)
	}
	// I8/U8 with an e8m0 scale is DeepSeek-V4's packed MXFP4: two e2m1 codes per byte.
	packed := (w.DType == I8 || w.DType == U8) && scale.DType == F8E8M0
	dt, per := w.DType, int64(1)
	logical := append([]int64(nil), w.Shape...)
	if packed {
		if len(logical) == 0 {
			return nil, fail("a packed FP4 weight needs at least one dimension")
		}
		dt, per = F4, 2
		logical[len(logical)-1] *= 2
	}
	vals, err := DecodeF32(dt, raw)
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", w.Name, err)
	}
	svals, err := DecodeF32(scale.DType, sraw)
	if err != nil {
		return nil, fmt.Errorf("scale %q: %w", scale.Name, err)
	}
	if len(vals) == 0 {
		return vals, nil
	}
	if len(svals) == 1 { // one scale for the whole tensor
		for i := range vals {
			vals[i] *= svals[0]
		}
		return vals, nil
	}
	r := len(logical)
	if r < 2 || len(scale.Shape) != r {
		return nil, fail("scale rank must match a weight of rank ≥ 2")
	}
	for i := 0; i < r-2; i++ {
		if scale.Shape[i] != logical[i] {
			return nil, fail("leading dimensions differ")
		}
	}
	R, C := logical[r-2], logical[r-1]
	SR, SC := scale.Shape[r-2], scale.Shape[r-1]
	br, okR := blockFor(R, SR)
	bc, okC := blockFor(C, SC)
	if !okR || !okC {
		return nil, fail("scale does not tile the weight in blocks of 1, 32 or 128 or whole axes")
	}
	// Walk (slice b, row, col) from the first logical element on.
	first := start * per
	col := first % C
	row := (first / C) % R
	b := first / C / R
	for i := range vals {
		vals[i] *= svals[(b*SR+row/br)*SC+col/bc]
		if col++; col == C {
			col = 0
			if row++; row == R {
				row, b = 0, b+1
			}
		}
	}
	return vals, nil
}

// blockFor returns the block length along an axis of n elements carrying s scales.
func blockFor(n, s int64) (int64, bool) {
	switch {
	case s == n:
		return 1, true
	case s == (n+127)/128:
		return 128, true
	case s == (n+31)/32:
		return 32, true
	case s == 1:
		return max(n, 1), true
	}
	return 0, false
}
