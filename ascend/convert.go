package ascend

import "math"

// Conversions between float32 and the 16-bit storage types. They are the definition of
// rounding for the whole module (backends and model/nn use these; proto, which may import
// nothing from the module, repeats them),
// and ascendtest checks every backend against an independent float64 implementation.

// BF16ToF32 widens a bfloat16 exactly: a bf16 is the top half of an f32.
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 rounds to the nearest bf16, ties to even. Values past the largest bf16 round to
// ±Inf. A NaN stays a NaN: its sign and top payload bits are kept and the quiet bit is set,
// because plain rounding could carry a NaN with a low-only payload into ±Inf.
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	// Adding 0x7fff plus the lowest kept bit rounds half to even; a carry out of the
	// mantissa correctly bumps the exponent (and the largest finite values into Inf).
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// F16ToF32 widens an IEEE 754 binary16 exactly, including subnormals, ±Inf and NaN (the
// payload is kept in the top mantissa bits).
func F16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		// A subnormal is mant·2⁻²⁴; both factors are exact in float32.
		f := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			return -f
		}
		return f
	}
	// Rebias the exponent from 15 to 127.
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}

// F32ToF16 rounds to the nearest binary16, ties to even, producing subnormals below 2⁻¹⁴
// and ±Inf at or past 65520 (the midpoint above the largest half, 65504). A NaN becomes the
// quiet NaN 0x7e00 with the sign kept: half has too few payload bits to keep f32's.
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23)&0xff - 127
	mant := b & 0x7fffff
	switch {
	case exp == 128: // Inf or NaN
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp > 15:
		return sign | 0x7c00
	case exp >= -14: // normal half
		v := uint32(exp+15)<<10 | mant>>13
		rest := mant & 0x1fff
		// A carry out of the mantissa bumps the exponent, up to Inf: that is the rounding.
		if rest > 0x1000 || (rest == 0x1000 && v&1 == 1) {
			v++
		}
		return sign | uint16(v)
	case exp >= -25: // subnormal half (or rounds up to the smallest one)
		m := mant | 0x800000
		shift := uint32(-exp - 1) // value = m·2^(exp-23), half quantum = 2⁻²⁴
		v := m >> shift
		rest := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rest > half || (rest == half && v&1 == 1) {
			v++
		}
		return sign | uint16(v)
	}
	return sign // underflows to ±0
}

// BF16sToF32s widens min(len(dst), len(src)) values and returns that count, as copy does.
func BF16sToF32s(dst []float32, src []uint16) int {
	n := min(len(dst), len(src))
	dst, src = dst[:n], src[:n]
	for i, h := range src {
		dst[i] = math.Float32frombits(uint32(h) << 16)
	}
	return n
}

// F32sToBF16s rounds min(len(dst), len(src)) values with F32ToBF16 and returns the count.
func F32sToBF16s(dst []uint16, src []float32) int {
	n := min(len(dst), len(src))
	dst, src = dst[:n], src[:n]
	for i, f := range src {
		dst[i] = F32ToBF16(f)
	}
	return n
}

// F16sToF32s widens min(len(dst), len(src)) values with F16ToF32 and returns the count.
func F16sToF32s(dst []float32, src []uint16) int {
	n := min(len(dst), len(src))
	dst, src = dst[:n], src[:n]
	for i, h := range src {
		dst[i] = F16ToF32(h)
	}
	return n
}

// F32sToF16s rounds min(len(dst), len(src)) values with F32ToF16 and returns the count.
func F32sToF16s(dst []uint16, src []float32) int {
	n := min(len(dst), len(src))
	dst, src = dst[:n], src[:n]
	for i, f := range src {
		dst[i] = F32ToF16(f)
	}
	return n
}
