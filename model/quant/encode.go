package quant

import (
	"fmt"
	"math"
	"sort"
)

// Encoders: the inverse of the decoders, rounding to the nearest representable value
// with ties to the even code (torch's .to(float8_e4m3fn) / float4_e2m1fn_x2 casts, IEEE
// round-to-nearest-even). They serve two callers: writing checkpoints (model/synth) and
// the reference forward pass's quantisation-aware roundings (act_quant, fp4_act_quant in
// V4 kernel.py), which quantise an activation and immediately dequantise it.
//
// Both encoders search the sorted table of positive decoded values, so they agree with
// the decoders by construction: Decode(Encode(x)) is the code value nearest to x.

// fp8Pos are the decoded values of codes 0x00..0x7E (ascending; 0x7F is NaN).
var fp8Pos = func() []float64 {
	out := make([]float64, 0x7f)
	for i := range out {
		out[i] = float64(fp8Value(byte(i)))
	}
	return out
}()

// e2m1Pos are the decoded values of codes 0..7 (ascending).
var e2m1Pos = []float64{0, 0.5, 1, 1.5, 2, 3, 4, 6}

// nearest returns the index of the value of table nearest to a ≥ 0, ties to the even
// index (the code with a zero mantissa LSB), saturating at the last entry.
func nearest(table []float64, a float64) int {
	i := sort.SearchFloat64s(table, a) // first entry ≥ a
	switch {
	case i == 0:
		return 0
	case i == len(table):
		return len(table) - 1
	}
	lo, hi := a-table[i-1], table[i]-a
	switch {
	case lo < hi:
		return i - 1
	case hi < lo:
		return i
	case (i-1)%2 == 0:
		return i - 1
	}
	return i
}

// EncodeFP8E4M3 rounds x to the nearest float8 e4m3fn code (ties to even). Magnitudes
// beyond 448 saturate to ±448 (the format has no infinity; callers scale first); NaN
// encodes as 0x7F.
func EncodeFP8E4M3(x float32) byte {
	if x != x {
		return 0x7f
	}
	var sign byte
	a := float64(x)
	if math.Signbit(a) {
		sign, a = 0x80, -a
	}
	return sign | byte(nearest(fp8Pos, a))
}

// EncodeE2M1 rounds x to the nearest float4 e2m1 code (ties to even), saturating at ±6;
// NaN encodes as 0. The code is in the low 4 bits.
func EncodeE2M1(x float32) byte {
	if x != x {
		return 0
	}
	var sign byte
	a := float64(x)
	if math.Signbit(a) {
		sign, a = 8, -a
	}
	return sign | byte(nearest(e2m1Pos, a))
}

// Pow2Ceil is the smallest power of two ≥ x > 0 (kernel.py fast_round_scale, the ue8m0
// rounding of a scale), computed exactly from the float's exponent.
func Pow2Ceil(x float64) float64 {
	frac, exp := math.Frexp(x) // x = frac·2^exp, frac in [0.5, 1)
	if frac == 0.5 {
		return math.Ldexp(1, exp-1)
	}
	return math.Ldexp(1, exp)
}

// EncodeE8M0 is the ue8m0 code of a power of two 2^e, e in [−127, 127].
func EncodeE8M0(pow2 float64) (byte, error) {
	frac, exp := math.Frexp(pow2)
	e := exp - 1 + 127
	if frac != 0.5 || e < 0 || e > 254 {
		return 0, fmt.Errorf("%w: E8M0 scale %v is not a power of two in [2^-127, 2^127]", ErrShape, pow2)
	}
	return byte(e), nil
}

// blockScale is the ue8m0 scale of a block with the given absolute maximum: the power of
// two at or above amax/max, amax floored at floor (kernel.py act_quant clamps at 1e-4,
// fp4_act_quant at 6·2^−126, so an all-zero block keeps a finite scale).
func blockScale(amax, maxCode, floor float64) float64 {
	return Pow2Ceil(max(amax, floor) / maxCode)
}

// FP8Max and FP4Max are the largest finite magnitudes of e4m3fn and e2m1.
const (
	FP8Max = 448.0
	FP4Max = 6.0
)

// QuantFP8 quantises a weight [rows, cols] to F8_E4M3 bytes with ue8m0 scales over
// 128×128 blocks ([ceil(rows/128), ceil(cols/128)], edge blocks partial): the layout
// DequantFP8 reads. Each block's scale is the power of two at or above amax/448, so no
// value saturates.
func QuantFP8(w []float32, rows, cols int) (q, scale []byte, err error) {
	if rows < 0 || cols < 0 || len(w) != rows*cols {
		return nil, nil, fmt.Errorf("%w: FP8 quantise [%d, %d] from %d values", ErrShape, rows, cols, len(w))
	}
	sr, sc := (rows+Block-1)/Block, (cols+Block-1)/Block
	q, scale = make([]byte, rows*cols), make([]byte, sr*sc)
	for br := range sr {
		for bc := range sc {
			r0, r1, c0, c1 := br*Block, min((br+1)*Block, rows), bc*Block, min((bc+1)*Block, cols)
			amax := 0.0
			for r := r0; r < r1; r++ {
				for _, v := range w[r*cols+c0 : r*cols+c1] {
					amax = max(amax, math.Abs(float64(v)))
				}
			}
			s := blockScale(amax, FP8Max, 1e-4)
			code, err := EncodeE8M0(s)
			if err != nil {
				return nil, nil, err
			}
			scale[br*sc+bc] = code
			for r := r0; r < r1; r++ {
				for c := c0; c < c1; c++ {
					q[r*cols+c] = EncodeFP8E4M3(float32(float64(w[r*cols+c]) / s))
				}
			}
		}
	}
	return q, scale, nil
}

// QuantMXFP4 quantises a weight [rows, cols] (cols a multiple of 32) to packed E2M1 (value
// 2j in the low nibble of byte j) with one ue8m0 scale per 32 values of a row: the layout
// DequantMXFP4 reads. Each block's scale is the power of two at or above amax/6.
func QuantMXFP4(w []float32, rows, cols int) (packed, scale []byte, err error) {
	if rows < 0 || cols < 0 || cols%MXBlock != 0 || len(w) != rows*cols {
		return nil, nil, fmt.Errorf("%w: MXFP4 quantise [%d, %d] from %d values (columns must be a multiple of %d)",
			ErrShape, rows, cols, len(w), MXBlock)
	}
	packed, scale = make([]byte, rows*cols/2), make([]byte, rows*cols/MXBlock)
	for b := range scale {
		blk := w[b*MXBlock : (b+1)*MXBlock]
		amax := 0.0
		for _, v := range blk {
			amax = max(amax, math.Abs(float64(v)))
		}
		s := blockScale(amax, FP4Max, FP4Max*math.Ldexp(1, -126))
		code, err := EncodeE8M0(s)
		if err != nil {
			return nil, nil, err
		}
		scale[b] = code
		out := packed[b*MXBlock/2 : (b+1)*MXBlock/2]
		for j := range out {
			lo := EncodeE2M1(float32(float64(blk[2*j]) / s))
			hi := EncodeE2M1(float32(float64(blk[2*j+1]) / s))
			out[j] = lo | hi<<4
		}
	}
	return packed, scale, nil
}

// SimFP8 is kernel.py act_quant(x, block, "ue8m0", inplace=True) over consecutive blocks
// of x: each block is quantised to e4m3fn with its power-of-two scale (amax/448 rounded
// up, amax floored at 1e-4) and dequantised in place. len(x) must be a multiple of block.
//
// The pure-torch rewrite of kernel.py in the copy we read clamps but does not round
// (x/s·s); the tilelang kernel it stands in for casts to float8, which is what this does.
func SimFP8(x []float32, block int) error {
	return simulate(x, block, FP8Max, 1e-4, func(v float32) float32 { return fp8Table[EncodeFP8E4M3(v)] })
}

// SimFP4 is kernel.py fp4_act_quant(x, block, inplace=True): as SimFP8 with e2m1 codes
// (amax/6 rounded up to a power of two, amax floored at 6·2^−126).
func SimFP4(x []float32, block int) error {
	return simulate(x, block, FP4Max, FP4Max*math.Ldexp(1, -126), func(v float32) float32 { return e2m1Table[EncodeE2M1(v)] })
}

func simulate(x []float32, block int, maxCode, floor float64, round func(float32) float32) error {
	if block < 1 || len(x)%block != 0 {
		return fmt.Errorf("%w: %d values in blocks of %d", ErrShape, len(x), block)
	}
	for b := 0; b < len(x); b += block {
		blk := x[b : b+block]
		amax := 0.0
		for _, v := range blk {
			amax = max(amax, math.Abs(float64(v)))
		}
		s := blockScale(amax, maxCode, floor)
		for i, v := range blk {
			blk[i] = float32(float64(round(float32(float64(v)/s))) * s)
		}
	}
	return nil
}

// Hadamard is rotate_activation for one vector: the normalised Walsh–Hadamard transform
// x·H/√n with H Sylvester's matrix ([[H, H], [H, −H]]), len(x) a power of two. It is its
// own inverse.
func Hadamard(x []float32) error {
	n := len(x)
	if n == 0 || n&(n-1) != 0 {
		return fmt.Errorf("%w: Hadamard transform of %d values (want a power of two)", ErrShape, n)
	}
	v := make([]float64, n)
	for i, f := range x {
		v[i] = float64(f)
	}
	for h := 1; h < n; h *= 2 {
		for i := 0; i < n; i += 2 * h {
			for j := i; j < i+h; j++ {
				a, b := v[j], v[j+h]
				v[j], v[j+h] = a+b, a-b
			}
		}
	}
	s := 1 / math.Sqrt(float64(n))
	for i := range x {
		x[i] = float32(v[i] * s)
	}
	return nil
}
