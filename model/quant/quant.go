package quant

import (
	"errors"
	"fmt"
	"math"
)

// ErrShape: the byte slices do not match the dimensions given.
var ErrShape = errors.New("quant: shape mismatch")

// Block is the FP8 weight block edge of DeepSeek-V3/V4 (quantization_config
// weight_block_size [128, 128]).
const Block = 128

// MXBlock is the number of values sharing one E8M0 scale in MXFP4 (OCP MX spec; V4
// kernel.py fp4_block_size).
const MXBlock = 32

// fp8Table and e2m1Table are the decoded values of every code, built once from the
// format definitions below so that decoding a row is a table lookup per element.
var (
	fp8Table  [256]float32
	e8m0Table [256]float32
	e2m1Table = [16]float32{0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6}
)

func init() {
	e2m1Table[8] = float32(math.Copysign(0, -1)) // a Go constant −0 is +0
	for i := range 256 {
		fp8Table[i] = fp8Value(byte(i))
		e8m0Table[i] = e8m0Value(byte(i))
	}
}

// fp8Value is the definition of float8 e4m3fn: sign, 4 exponent bits (bias 7), 3 mantissa
// bits; exponent 0 is subnormal (m/8 · 2^−6); S.1111.111 is NaN and there is no infinity,
// so the largest finite value is 0x7E = 1.75 · 2^8 = 448.
func fp8Value(b byte) float32 {
	if b&0x7f == 0x7f {
		return float32(math.NaN())
	}
	e, m := int(b>>3&0xf), float64(b&7)
	var v float64
	if e == 0 {
		v = m / 8 * math.Exp2(-6)
	} else {
		v = (1 + m/8) * math.Exp2(float64(e-7))
	}
	if b&0x80 != 0 {
		v = -v
	}
	return float32(v)
}

// e8m0Value is the definition of the unsigned exponent-only scale: 2^(e−127), 0xFF NaN.
// 0x00 is 2^−127, a float32 subnormal (kept exactly).
func e8m0Value(b byte) float32 {
	if b == 0xff {
		return float32(math.NaN())
	}
	return float32(math.Exp2(float64(int(b) - 127)))
}

// FP8E4M3 decodes one float8 e4m3fn code.
func FP8E4M3(b byte) float32 { return fp8Table[b] }

// E8M0 decodes one ue8m0 scale code.
func E8M0(b byte) float32 { return e8m0Table[b] }

// E2M1 decodes the low 4 bits of code as float4 e2m1: sign bit 3, codes 0..7 are
// 0, 0.5, 1, 1.5, 2, 3, 4, 6. Every code is a number (no NaN, no infinity).
func E2M1(code byte) float32 { return e2m1Table[code&0xf] }

// DequantFP8 writes the real values of an FP8 weight [rows, cols] (w, one byte per value,
// row-major) with E8M0 block scales [ceil(rows/128), ceil(cols/128)] (scale, row-major)
// into out (rows·cols values): W[r,c] = fp8(w[r,c]) · 2^(s[r/128, c/128] − 127).
// Edge blocks are partial (the scale grid rounds up).
func DequantFP8(w []byte, rows, cols int, scale []byte, out []float32) error {
	if err := checkFP8(len(w), rows, cols, len(scale), len(out)); err != nil {
		return err
	}
	sc := (cols + Block - 1) / Block
	for r := range rows {
		srow := scale[(r/Block)*sc : (r/Block+1)*sc]
		wrow, orow := w[r*cols:(r+1)*cols], out[r*cols:(r+1)*cols]
		for c, b := range wrow {
			orow[c] = fp8Table[b] * e8m0Table[srow[c/Block]]
		}
	}
	return nil
}

func checkFP8(nw, rows, cols, ns, nout int) error {
	if rows < 0 || cols < 0 {
		return fmt.Errorf("%w: FP8 weight [%d, %d]", ErrShape, rows, cols)
	}
	sr, sc := (rows+Block-1)/Block, (cols+Block-1)/Block
	switch {
	case nw != rows*cols:
		return fmt.Errorf("%w: FP8 weight [%d, %d] needs %d bytes, got %d", ErrShape, rows, cols, rows*cols, nw)
	case ns != sr*sc:
		return fmt.Errorf("%w: FP8 weight [%d, %d] needs a [%d, %d] scale (%d bytes), got %d",
			ErrShape, rows, cols, sr, sc, sr*sc, ns)
	case nout != rows*cols:
		return fmt.Errorf("%w: FP8 weight [%d, %d] needs %d output values, got %d", ErrShape, rows, cols, rows*cols, nout)
	}
	return nil
}

// DequantMXFP4 writes the real values of an MXFP4 weight of logical shape [rows, cols]
// into out (rows·cols values). w is [rows, cols/2] bytes, value 2j in the low nibble of
// byte j and value 2j+1 in the high nibble (torch float4_e2m1fn_x2 and the OCP MX
// layout); scale is E8M0 [rows, cols/32]: W[r,c] = e2m1(nibble) · 2^(s[r, c/32] − 127).
// cols must be a multiple of 32, as in every V4 expert (H and moe_intermediate_size).
func DequantMXFP4(w []byte, rows, cols int, scale []byte, out []float32) error {
	if rows < 0 || cols < 0 || cols%MXBlock != 0 {
		return fmt.Errorf("%w: MXFP4 weight [%d, %d]: columns must be a multiple of %d", ErrShape, rows, cols, MXBlock)
	}
	switch {
	case len(w) != rows*cols/2:
		return fmt.Errorf("%w: MXFP4 weight [%d, %d] needs %d packed bytes, got %d", ErrShape, rows, cols, rows*cols/2, len(w))
	case len(scale) != rows*cols/MXBlock:
		return fmt.Errorf("%w: MXFP4 weight [%d, %d] needs a [%d, %d] scale, got %d bytes",
			ErrShape, rows, cols, rows, cols/MXBlock, len(scale))
	case len(out) != rows*cols:
		return fmt.Errorf("%w: MXFP4 weight [%d, %d] needs %d output values, got %d", ErrShape, rows, cols, rows*cols, len(out))
	}
	for r := range rows {
		MXFP4Row(w[r*cols/2:(r+1)*cols/2], scale[r*cols/MXBlock:(r+1)*cols/MXBlock], out[r*cols:(r+1)*cols])
	}
	return nil
}

// MXFP4Row decodes one row: len(out) = 2·len(w) = 32·len(scale); the caller checks the
// lengths (DequantMXFP4 does). It is the unit an expert kernel dequantises at a time.
func MXFP4Row(w, scale []byte, out []float32) {
	for k, s := range scale {
		f := e8m0Table[s]
		blk := w[k*MXBlock/2 : (k+1)*MXBlock/2]
		o := out[k*MXBlock : (k+1)*MXBlock]
		for j, b := range blk {
			o[2*j] = e2m1Table[b&0xf] * f
			o[2*j+1] = e2m1Table[b>>4] * f
		}
	}
}
