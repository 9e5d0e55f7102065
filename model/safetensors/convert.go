package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Scalar conversions to float32. Every finite value of these formats is exactly
// representable in float32, so the conversions are exact.

// BF16ToF32 converts a bfloat16 bit pattern: the top half of a float32.
func BF16ToF32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// F16ToF32 converts an IEEE 754 half-precision bit pattern (subnormals, ±Inf and NaN
// included).
func F16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch exp {
	case 0: // zero or subnormal: mant · 2^-24
		f := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			f = -f
		}
		return f
	case 0x1f: // Inf (mant 0) or NaN, payload kept
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// minifloat returns ±(m + 2^mbits·[e>0]) · 2^(max(e,1) − bias − mbits), the value of a
// small IEEE-like float with e exponent and m mantissa bits; the caller handles NaN/Inf.
func minifloat(neg bool, e, m, mbits, bias int) float32 {
	if e > 0 {
		m += 1 << mbits
	} else {
		e = 1 // subnormal: same scale as the smallest normal, no implicit 1
	}
	v := float32(math.Ldexp(float64(m), e-bias-mbits))
	if neg {
		return -v
	}
	return v
}

// F8E4M3ToF32 converts float8 e4m3fn (torch.float8_e4m3fn, DeepSeek FP8 weights): bias 7,
// no infinities, S.1111.111 is NaN, so the largest value is 0x7E = 1.75·2^8 = 448.
func F8E4M3ToF32(b byte) float32 {
	if b&0x7f == 0x7f {
		return float32(math.NaN())
	}
	return minifloat(b&0x80 != 0, int(b>>3&0xf), int(b&7), 3, 7)
}

// F8E5M2ToF32 converts float8 e5m2: bias 15, IEEE-like (exponent 31 is Inf or NaN).
func F8E5M2ToF32(b byte) float32 {
	e, m := int(b>>2&0x1f), int(b&3)
	if e == 0x1f {
		if m == 0 {
			return float32(math.Inf(1 - 2*int(b>>7)))
		}
		return float32(math.NaN())
	}
	return minifloat(b&0x80 != 0, e, m, 2, 15)
}

// F8E4M3FNUZToF32 converts float8 e4m3fnuz: bias 8, no infinities, no negative zero;
// 0x80 is the only NaN.
func F8E4M3FNUZToF32(b byte) float32 {
	if b == 0x80 {
		return float32(math.NaN())
	}
	return minifloat(b&0x80 != 0, int(b>>3&0xf), int(b&7), 3, 8)
}

// F8E5M2FNUZToF32 converts float8 e5m2fnuz: bias 16, no infinities, 0x80 the only NaN.
func F8E5M2FNUZToF32(b byte) float32 {
	if b == 0x80 {
		return float32(math.NaN())
	}
	return minifloat(b&0x80 != 0, int(b>>2&0x1f), int(b&3), 2, 16)
}

// F8E8M0ToF32 converts an e8m0 scale (MX formats, DeepSeek-V4 ".scale" tensors):
// 2^(b−127); 0xFF is NaN. 2^-127 (b = 0) is a float32 subnormal.
func F8E8M0ToF32(b byte) float32 {
	switch b {
	case 0xff:
		return float32(math.NaN())
	case 0:
		return math.Float32frombits(1 << 22)
	}
	return math.Float32frombits(uint32(b) << 23)
}

var e2m1 = [8]float32{0, 0.5, 1, 1.5, 2, 3, 4, 6}

// F4E2M1ToF32 converts the low 4 bits of n, a float4 e2m1 code (bit 3 is the sign).
func F4E2M1ToF32(n byte) float32 {
	v := e2m1[n&7]
	if n&8 != 0 {
		return -v
	}
	return v
}

// f8Tables hold every value of each 8-bit float type: a table lookup per element is
// several times faster than decoding bits, which matters for multi-GB FP8 checkpoints.
var f8Tables = func() map[DType]*[256]float32 {
	m := map[DType]*[256]float32{}
	for dt, conv := range map[DType]func(byte) float32{F8E4M3: F8E4M3ToF32, F8E5M2: F8E5M2ToF32,
		F8E4M3FNUZ: F8E4M3FNUZToF32, F8E5M2FNUZ: F8E5M2FNUZToF32, F8E8M0: F8E8M0ToF32} {
		t := new([256]float32)
		for i := range t {
			t[i] = conv(byte(i))
		}
		m[dt] = t
	}
	return m
}()

// decodeInto converts the elements in src (raw little-endian dt) to dst. dst must hold
// exactly the number of elements src encodes (for F4: two per byte, low nibble first).
func decodeInto(dst []float32, dt DType, src []byte) error {
	le := binary.LittleEndian
	switch dt {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(le.Uint32(src[4*i:]))
		}
	case BF16:
		for i := range dst {
			dst[i] = BF16ToF32(le.Uint16(src[2*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = F16ToF32(le.Uint16(src[2*i:]))
		}
	case F64:
		for i := range dst {
			dst[i] = float32(math.Float64frombits(le.Uint64(src[8*i:])))
		}
	case F8E4M3, F8E5M2, F8E4M3FNUZ, F8E5M2FNUZ, F8E8M0:
		lut := f8Tables[dt]
		for i := range dst {
			dst[i] = lut[src[i]]
		}
	case F4:
		for i := range dst {
			dst[i] = F4E2M1ToF32(src[i/2] >> (4 * (i & 1)))
		}
	case BOOL:
		for i := range dst {
			if src[i] != 0 {
				dst[i] = 1
			} else {
				dst[i] = 0
			}
		}
	case U8:
		for i := range dst {
			dst[i] = float32(src[i])
		}
	case I8:
		for i := range dst {
			dst[i] = float32(int8(src[i]))
		}
	case I16:
		for i := range dst {
			dst[i] = float32(int16(le.Uint16(src[2*i:])))
		}
	case U16:
		for i := range dst {
			dst[i] = float32(le.Uint16(src[2*i:]))
		}
	case I32:
		for i := range dst {
			dst[i] = float32(int32(le.Uint32(src[4*i:])))
		}
	case U32:
		for i := range dst {
			dst[i] = float32(le.Uint32(src[4*i:]))
		}
	case I64:
		for i := range dst {
			dst[i] = float32(int64(le.Uint64(src[8*i:])))
		}
	case U64:
		for i := range dst {
			dst[i] = float32(le.Uint64(src[8*i:]))
		}
	default:
		// C64 has no real value; F6 packing (4 elements in 3 bytes) has no agreed bit
		// order yet, so guessing one would silently give wrong weights.
		return fmt.Errorf("%w: cannot convert %s to float32", ErrUnsupported, dt)
	}
	return nil
}

// DecodeF32 converts raw little-endian elements of dt to float32 (integers by value,
// BOOL as 0/1, F4 two per byte low nibble first). len(src) must be a whole number of
// elements.
func DecodeF32(dt DType, src []byte) ([]float32, error) {
	bits := dt.Bits()
	if bits == 0 {
		return nil, fmt.Errorf("%w: unknown dtype %q", ErrInvalid, dt)
	}
	if (len(src)*8)%bits != 0 {
		return nil, fmt.Errorf("%w: %d bytes are not whole %s elements", ErrInvalid, len(src), dt)
	}
	dst := make([]float32, len(src)*8/bits)
	if err := decodeInto(dst, dt, src); err != nil {
		return nil, err
	}
	return dst, nil
}
