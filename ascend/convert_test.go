package ascend

import (
	"math"
	"testing"
)

func bits(f float32) uint32 { return math.Float32bits(f) }

func TestF32ToBF16(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   uint32
		want uint16
	}{
		{"zero", 0x00000000, 0x0000},
		{"negative zero", 0x80000000, 0x8000},
		{"one", 0x3f800000, 0x3f80},
		{"exact", 0xc0490000, 0xc049},
		{"below half rounds down", 0x3f807fff, 0x3f80},
		{"tie to even stays", 0x3f808000, 0x3f80},
		{"tie to even rounds up", 0x3f818000, 0x3f82},
		{"above half rounds up", 0x3f808001, 0x3f81},
		{"carry into exponent", 0x3fffffff, 0x4000},
		{"largest finite rounds to inf", 0x7f7fffff, 0x7f80},
		{"largest bf16 stays", 0x7f7f0000, 0x7f7f},
		{"inf", 0x7f800000, 0x7f80},
		{"negative inf", 0xff800000, 0xff80},
		{"quiet nan", 0x7fc00000, 0x7fc0},
		{"nan with low payload stays nan", 0x7f800001, 0x7fc0},
		{"negative nan keeps sign and payload", 0xffa12345, 0xffe1},
		{"smallest f32 subnormal to zero", 0x00000001, 0x0000},
		{"subnormal tie to even", 0x00018000, 0x0002},
		{"subnormal exact", 0x00010000, 0x0001},
	} {
		if got := F32ToBF16(math.Float32frombits(tc.in)); got != tc.want {
			t.Errorf("%s: F32ToBF16(%#08x) = %#04x, want %#04x", tc.name, tc.in, got, tc.want)
		}
	}
}

func TestF32ToF16(t *testing.T) {
	p := func(e int) float32 { return float32(math.Ldexp(1, e)) }
	for _, tc := range []struct {
		name string
		in   float32
		want uint16
	}{
		{"zero", 0, 0x0000},
		{"negative zero", float32(math.Copysign(0, -1)), 0x8000},
		{"one", 1, 0x3c00},
		{"minus two", -2, 0xc000},
		{"tie to even stays", 1 + p(-11), 0x3c00},
		{"tie to even rounds up", 1 + 3*p(-11), 0x3c02},
		{"above half", 1 + p(-11) + p(-20), 0x3c01},
		{"largest half", 65504, 0x7bff},
		{"below overflow midpoint", 65519.996, 0x7bff},
		{"overflow midpoint to inf", 65520, 0x7c00},
		{"large to inf", 1e10, 0x7c00},
		{"negative large to -inf", -1e10, 0xfc00},
		{"inf", float32(math.Inf(1)), 0x7c00},
		{"nan", float32(math.NaN()), 0x7e00},
		{"negative nan keeps sign", math.Float32frombits(0xff800001), 0xfe00},
		{"smallest normal", p(-14), 0x0400},
		{"largest subnormal", p(-14) - p(-24), 0x03ff},
		{"subnormal rounds up to smallest normal", p(-14) - p(-25), 0x0400},
		{"smallest subnormal", p(-24), 0x0001},
		{"half smallest subnormal ties to zero", p(-25), 0x0000},
		{"above half smallest subnormal", p(-25) + p(-40), 0x0001},
		{"three halves ties to even", 3 * p(-25), 0x0002},
		{"subnormal exact", 5 * p(-24), 0x0005},
		{"far below", p(-30), 0x0000},
		{"negative subnormal", -7 * p(-24), 0x8007},
	} {
		if got := F32ToF16(tc.in); got != tc.want {
			t.Errorf("%s: F32ToF16(%g) = %#04x, want %#04x", tc.name, tc.in, got, tc.want)
		}
	}
}

func TestF16ToF32(t *testing.T) {
	for _, tc := range []struct {
		in   uint16
		want float32
	}{
		{0x0000, 0}, {0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0400, float32(math.Ldexp(1, -14))},
		{0x0001, float32(math.Ldexp(1, -24))}, {0x03ff, float32(math.Ldexp(1023, -24))},
		{0x8001, -float32(math.Ldexp(1, -24))}, {0x7c00, float32(math.Inf(1))}, {0xfc00, float32(math.Inf(-1))},
		{0x3555, 1365.0 / 4096}, // (1 + 0x155/1024)·2⁻²
	} {
		if got := F16ToF32(tc.in); got != tc.want {
			t.Errorf("F16ToF32(%#04x) = %g, want %g", tc.in, got, tc.want)
		}
	}
	if got := F16ToF32(0x8000); bits(got) != 0x80000000 {
		t.Errorf("F16ToF32(0x8000) = %#08x, want -0", bits(got))
	}
	if got := F16ToF32(0x7e01); got == got {
		t.Errorf("F16ToF32(0x7e01) = %g, want NaN", got)
	}
}

// TestRoundTrips: every 16-bit pattern survives widen-then-round; NaNs stay NaN.
func TestRoundTrips(t *testing.T) {
	for h := range 1 << 16 {
		h := uint16(h)
		f := BF16ToF32(h)
		if bits(f) != uint32(h)<<16 {
			t.Fatalf("BF16ToF32(%#04x) = %#08x", h, bits(f))
		}
		back := F32ToBF16(f)
		if f != f {
			if BF16ToF32(back) == BF16ToF32(back) || back&0x8000 != h&0x8000 {
				t.Fatalf("bf16 NaN %#04x came back as %#04x", h, back)
			}
		} else if back != h {
			t.Fatalf("bf16 %#04x came back as %#04x", h, back)
		}

		f = F16ToF32(h)
		back = F32ToF16(f)
		if f != f {
			if back != h&0x8000|0x7e00 {
				t.Fatalf("f16 NaN %#04x came back as %#04x", h, back)
			}
		} else if back != h {
			t.Fatalf("f16 %#04x (%g) came back as %#04x", h, f, back)
		}
	}
}

// TestF16Monotonic: rounding is monotonic and lands on a neighbour, checked on every f32
// with a fixed stride through the bit patterns (a cheap cross-check of all branches).
func TestF16Monotonic(t *testing.T) {
	prev := float32(0)
	for b := uint32(0); b < 0x7f800000; b += 0x101 {
		f := math.Float32frombits(b)
		g := F16ToF32(F32ToF16(f))
		if g < prev {
			t.Fatalf("F32ToF16 not monotonic at %g: %g after %g", f, g, prev)
		}
		prev = g
		if math.IsInf(float64(g), 1) {
			if f < 65520 {
				t.Fatalf("%g rounded to +Inf", f)
			}
			continue
		}
		// |g - f| is at most half a step of the half grid around f.
		step := math.Max(math.Ldexp(1, -24), math.Ldexp(1, exponent(f)-10))
		if d := math.Abs(float64(g) - float64(f)); d > step/2 {
			t.Fatalf("F32ToF16(%g) = %g, off by %g > half step %g", f, g, d, step/2)
		}
	}
}

func exponent(f float32) int {
	_, e := math.Frexp(float64(f))
	return e - 1
}

func TestBulkConversions(t *testing.T) {
	src := []float32{1, -2.5, 0.1, float32(math.Inf(1))}
	u := make([]uint16, 3) // shorter than src: converts 3, like copy
	if n := F32sToBF16s(u, src); n != 3 || u[0] != 0x3f80 || u[1] != 0xc020 || u[2] != F32ToBF16(0.1) {
		t.Errorf("F32sToBF16s = %d %#04x", n, u)
	}
	back := make([]float32, 5)
	if n := BF16sToF32s(back, u); n != 3 || back[0] != 1 || back[1] != -2.5 || back[3] != 0 {
		t.Errorf("BF16sToF32s = %d %v", n, back)
	}
	h := make([]uint16, 4)
	if n := F32sToF16s(h, src); n != 4 || h[0] != 0x3c00 || h[1] != 0xc100 || h[3] != 0x7c00 {
		t.Errorf("F32sToF16s = %d %#04x", n, h)
	}
	if n := F16sToF32s(back[:2], h); n != 2 || back[0] != 1 || back[1] != -2.5 {
		t.Errorf("F16sToF32s = %d %v", n, back)
	}
}
