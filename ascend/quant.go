package ascend

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Quantised weights. A buffer of dtype I8 or MXFP4 is a Linear weight [N, K] (out, in)
// kept in its quantised form; its storage is the values followed by the scales, and this
// is what Write takes, Bytes counts and a card's budget is charged:
//
//	I8 (W8A16):  N·K int8 values q[n][k], row-major; then N float32 scales s[n]
//	             (little-endian): w[n][k] = q[n][k]·s[n].
//	MXFP4:       N·K/2 bytes, row n's values 2j and 2j+1 in the low and high nibble of
//	             byte n·K/2 + j (E2M1: sign, 2 exponent bits, 1 mantissa bit); then N·K/32
//	             E8M0 scale bytes, row-major [N, K/32]: w[n][k] = e2m1 · 2^(e[n][k/32]−127).
//	             K must be a multiple of 32. This is the layout of DeepSeek-V4's expert
//	             tensors (weight as float4_e2m1fn_x2 [N, K/2], scale as float8_e8m0fnu
//	             [N, K/32]) and of model/quant.
//
// The codecs here repeat model/quant's definitions (this package may import nothing from
// the module); the tests check them against model/quant on every code.

// MXBlock is the number of MXFP4 values that share one E8M0 scale.
const MXBlock = 32

// Quantized reports whether d is a quantised weight dtype (I8 or MXFP4).
func (d DType) Quantized() bool { return d == I8 || d == MXFP4 }

// QuantLayout is the storage of a quantised [N, K] buffer: Values bytes of values, then
// Scales bytes of scales.
type QuantLayout struct {
	N, K           int
	Values, Scales int64
}

// Bytes is the whole storage.
func (l QuantLayout) Bytes() int64 { return l.Values + l.Scales }

// RowValues and RowScales are the Write offsets (bytes into the storage) of row r's values
// and of its scales. Rows are contiguous in both parts, so a loader stacking two [I, H]
// checkpoint tensors into one [2I, H] buffer writes the second one's values at
// RowValues(I) and its scales at RowScales(I).
func (l QuantLayout) RowValues(r int) int64 { return int64(r) * (l.Values / max(int64(l.N), 1)) }

// RowScales: see RowValues.
func (l QuantLayout) RowScales(r int) int64 {
	return l.Values + int64(r)*(l.Scales/max(int64(l.N), 1))
}

// CheckQuantShape returns the storage layout of a dt buffer of the given shape, or an error
// wrapping ErrShape (not 2-D, a negative dimension, or for MXFP4 K not a multiple of 32) or
// ErrDType (dt is not quantised).
func CheckQuantShape(dt DType, shape []int) (QuantLayout, error) {
	if !dt.Quantized() {
		return QuantLayout{}, fmt.Errorf("%w: %v is not a quantised dtype", ErrDType, dt)
	}
	if len(shape) != 2 || shape[0] < 0 || shape[1] < 0 {
		return QuantLayout{}, fmt.Errorf("%w: %v buffer %v: want [N, K] (a weight's [out, in])", ErrShape, dt, shape)
	}
	n, k := int64(shape[0]), int64(shape[1])
	// The caller caps the size; this only has to stay clear of int64 overflow.
	if n > math.MaxInt32 || k > math.MaxInt32 {
		return QuantLayout{}, fmt.Errorf("%w: %v buffer %v is too large", ErrShape, dt, shape)
	}
	l := QuantLayout{N: shape[0], K: shape[1]}
	switch dt {
	case I8:
		l.Values, l.Scales = n*k, 4*n
	case MXFP4:
		if k%MXBlock != 0 {
			return QuantLayout{}, fmt.Errorf("%w: mxfp4 buffer %v: K = %d is not a multiple of %d", ErrShape, shape, k, MXBlock)
		}
		l.Values, l.Scales = n*k/2, n*k/MXBlock
	}
	return l, nil
}

// StorageBytes is the size of a buffer of dtype dt and the given shape: elements × Size for
// plain dtypes, QuantLayout.Bytes for quantised ones.
func StorageBytes(dt DType, shape []int) (int64, error) {
	if dt.Quantized() {
		l, err := CheckQuantShape(dt, shape)
		return l.Bytes(), err
	}
	if dt.Size() == 0 {
		return 0, fmt.Errorf("%w: %v", ErrDType, dt)
	}
	n := int64(dt.Size())
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("%w: %v%v", ErrShape, dt, shape)
		}
		if d != 0 && n > math.MaxInt64/int64(d) {
			return 0, fmt.Errorf("%w: %v%v is too large", ErrShape, dt, shape)
		}
		n *= int64(d)
	}
	return n, nil
}

// SupportsDType is implemented by cards that hold some dtype beyond f32, bf16 and f16.
type SupportsDType interface {
	SupportsDType(dt DType) bool
}

// Supports reports whether card c can hold buffers of dt (and, for quantised dtypes, use
// them as GroupedMatmul weights). f32, bf16 and f16 are supported by every card; I8 and
// MXFP4 only by cards that say so through SupportsDType. A card that does not support a
// dtype refuses it in Alloc with ErrDType.
func Supports(c Card, dt DType) bool {
	switch dt {
	case F32, BF16, F16:
		return true
	}
	s, ok := c.(SupportsDType)
	return ok && s.SupportsDType(dt)
}

// QuantizeI8Row quantises one row symmetrically: s = max|x|/127 (rounded to float32) and
// q[k] = x[k]/s rounded to nearest, ties to even, clamped to ±127; an all-zero row gets
// s = 0. len(q) must equal len(x). Non-finite values are refused (ErrInvalid): they have
// no scale.
func QuantizeI8Row(q []byte, x []float32) (scale float32, err error) {
	if len(q) != len(x) {
		return 0, fmt.Errorf("%w: i8 row of %d values into %d bytes", ErrShape, len(x), len(q))
	}
	amax := 0.0
	for k, v := range x {
		a := math.Abs(float64(v))
		if math.IsNaN(a) || math.IsInf(a, 0) {
			return 0, fmt.Errorf("%w: i8 quantisation of %v at column %d", ErrInvalid, v, k)
		}
		amax = max(amax, a)
	}
	s := float32(amax / 127)
	if s == 0 {
		clear(q)
		return 0, nil
	}
	for k, v := range x {
		r := math.RoundToEven(float64(v) / float64(s))
		q[k] = byte(int8(max(-127, min(127, r))))
	}
	return s, nil
}

// DequantI8Row writes q[k]·s into dst (len(dst) = len(q)).
func DequantI8Row(dst []float32, q []byte, s float32) {
	for k, b := range q[:len(dst)] {
		dst[k] = float32(int8(b)) * s
	}
}

// I8Scale reads scale n of an I8 buffer's scale bytes.
func I8Scale(scales []byte, n int) float32 {
	return math.Float32frombits(binary.LittleEndian.Uint32(scales[4*n:]))
}

// E2M1Values are the values of the 16 E2M1 codes (bit 3 the sign): the OCP MX FP4
// element type. Code 8 is −0.
var E2M1Values = [16]float32{0, 0.5, 1, 1.5, 2, 3, 4, 6, float32(math.Copysign(0, -1)), -0.5, -1, -1.5, -2, -3, -4, -6}

// E8M0Value is the value of an E8M0 scale code: 2^(e−127), NaN for 0xFF. 2^−127 is a float32
// subnormal and exact.
func E8M0Value(e byte) float32 {
	if e == 0xff {
		return float32(math.NaN())
	}
	return float32(math.Ldexp(1, int(e)-127))
}

// DequantMXFP4Row decodes one MXFP4 row: len(dst) = 2·len(packed) = 32·len(scales). Every
// product e2m1·2^(e−127) is exact in float32 (or overflows to ±Inf for e = 254 and
// |e2m1| ≥ 4, as the format's own range does).
func DequantMXFP4Row(dst []float32, packed, scales []byte) error {
	if len(dst) != 2*len(packed) || len(dst) != MXBlock*len(scales) {
		return fmt.Errorf("%w: mxfp4 row of %d values from %d bytes and %d scales", ErrShape, len(dst), len(packed), len(scales))
	}
	for b, e := range scales {
		f := E8M0Value(e)
		blk, o := packed[b*MXBlock/2:(b+1)*MXBlock/2], dst[b*MXBlock:(b+1)*MXBlock]
		for j, v := range blk {
			o[2*j] = E2M1Values[v&0xf] * f
			o[2*j+1] = E2M1Values[v>>4] * f
		}
	}
	return nil
}

// fp4Max is the largest E2M1 magnitude.
const fp4Max = 6.0

// QuantizeMXFP4Row quantises one row (len(x) a multiple of 32) into packed (len(x)/2 bytes)
// and scales (len(x)/32 codes) with DeepSeek-V4's rule, which model/quant.QuantMXFP4
// follows: a block's scale is the power of two at or above max|x|/6 (max|x| floored at
// 6·2⁻¹²⁶ so an all-zero block keeps a finite scale), so no value saturates; each value is
// rounded to the nearest E2M1 code, ties to the even code. (The OCP MX spec's rule,
// 2^(floor(log2 max|x|) − 2), can pick half that scale and clip the largest values.)
// Non-finite values are refused (ErrInvalid).
func QuantizeMXFP4Row(packed, scales []byte, x []float32) error {
	if len(x)%MXBlock != 0 || len(packed)*2 != len(x) || len(scales)*MXBlock != len(x) {
		return fmt.Errorf("%w: mxfp4 row of %d values into %d bytes and %d scales (want a multiple of %d values)",
			ErrShape, len(x), len(packed), len(scales), MXBlock)
	}
	for b := range scales {
		blk := x[b*MXBlock : (b+1)*MXBlock]
		amax := 0.0
		for j, v := range blk {
			a := math.Abs(float64(v))
			if math.IsNaN(a) || math.IsInf(a, 0) {
				return fmt.Errorf("%w: mxfp4 quantisation of %v at column %d", ErrInvalid, v, b*MXBlock+j)
			}
			amax = max(amax, a)
		}
		frac, exp := math.Frexp(max(amax, fp4Max*math.Ldexp(1, -126)) / fp4Max)
		if frac == 0.5 { // already a power of two: 2^(exp−1)
			exp--
		}
		// exp ≥ −125 by the floor and ≤ 127 since max float32/6 < 2^126.
		scales[b] = byte(exp + 127)
		s := math.Ldexp(1, exp)
		out := packed[b*MXBlock/2 : (b+1)*MXBlock/2]
		for j := range out {
			out[j] = encodeE2M1(float64(blk[2*j])/s) | encodeE2M1(float64(blk[2*j+1])/s)<<4
		}
	}
	return nil
}

// e2m1Pos are the magnitudes of codes 0..7, ascending.
var e2m1Pos = [8]float64{0, 0.5, 1, 1.5, 2, 3, 4, 6}

// encodeE2M1 rounds v to the nearest E2M1 code, ties to the even code, saturating at ±6.
func encodeE2M1(v float64) byte {
	var sign byte
	if math.Signbit(v) {
		sign, v = 8, -v
	}
	for i := 1; i < len(e2m1Pos); i++ {
		if v > e2m1Pos[i] {
			continue
		}
		lo, hi := v-e2m1Pos[i-1], e2m1Pos[i]-v
		if lo < hi || lo == hi && (i-1)%2 == 0 {
			return sign | byte(i-1)
		}
		return sign | byte(i)
	}
	return sign | 7
}

// QuantizeRows is WriteF32's work on a quantised buffer of layout l, for both backends: src
// must be whole rows of K values starting at element off, all finite; their rows are
// quantised (QuantizeI8Row, QuantizeMXFP4Row) into vals and scales, which hold exactly those
// rows' parts of the storage (from RowValues and RowScales of the first row). Everything is
// checked before anything is written, so a refused call changes nothing.
func QuantizeRows(dt DType, l QuantLayout, off int, src []float32, vals, scales []byte) error {
	k := l.K
	if k == 0 || len(src) == 0 {
		return nil
	}
	if off%k != 0 || len(src)%k != 0 {
		return fmt.Errorf("%w: WriteF32: %d values at element %d into %v[%d %d]: %v takes whole rows of %d",
			ErrShape, len(src), off, dt, l.N, l.K, dt, k)
	}
	rows := len(src) / k
	vpr, spr := l.Values/int64(max(l.N, 1)), l.Scales/int64(max(l.N, 1)) // bytes a row
	if int64(len(vals)) != int64(rows)*vpr || int64(len(scales)) != int64(rows)*spr {
		return fmt.Errorf("%w: WriteF32: %d rows into %d value and %d scale bytes", ErrShape, rows, len(vals), len(scales))
	}
	for i, v := range src {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%w: WriteF32: %v at element %d cannot be quantised to %v", ErrInvalid, v, off+i, dt)
		}
	}
	for r := range rows {
		x := src[r*k : (r+1)*k]
		v, sc := vals[int64(r)*vpr:int64(r+1)*vpr], scales[int64(r)*spr:int64(r+1)*spr]
		var err error
		if dt == I8 {
			var s float32
			s, err = QuantizeI8Row(v, x)
			binary.LittleEndian.PutUint32(sc, math.Float32bits(s))
		} else {
			err = QuantizeMXFP4Row(v, sc, x)
		}
		if err != nil {
			return fmt.Errorf("WriteF32: row %d: %w", off/k+r, err)
		}
	}
	return nil
}
