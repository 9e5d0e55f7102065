package safetensors

import (
	"errors"
	"math"
	"testing"
)

func pow2(e int) float32 { return float32(math.Ldexp(1, e)) }

// TestMinifloats checks each 8-bit float format against values worked out by hand from
// its definition (models.md §5.1 for e4m3fn and e8m0).
func TestMinifloats(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	for _, c := range []struct {
		name string
		conv func(byte) float32
		in   byte
		want float32
	}{
		// e4m3fn: bias 7, S.EEEE.MMM
		{"e4m3 one", F8E4M3ToF32, 0x38, 1},     // e=7, m=0
		{"e4m3 max", F8E4M3ToF32, 0x7e, 448},   // e=15, m=6: 1.75·2^8
		{"e4m3 -max", F8E4M3ToF32, 0xfe, -448}, //
		{"e4m3 nan", F8E4M3ToF32, 0x7f, nan},   // e=15, m=7
		{"e4m3 -nan", F8E4M3ToF32, 0xff, nan},  //
		{"e4m3 min subnormal", F8E4M3ToF32, 0x01, pow2(-9)},
		{"e4m3 max subnormal", F8E4M3ToF32, 0x07, 7 * pow2(-9)},
		{"e4m3 min normal", F8E4M3ToF32, 0x08, pow2(-6)},
		{"e4m3 1.125", F8E4M3ToF32, 0x39, 1.125},
		{"e4m3 -2", F8E4M3ToF32, 0xc0, -2},
		{"e4m3 e15 m0", F8E4M3ToF32, 0x78, 256}, // still finite in the fn variant
		// e5m2: bias 15, IEEE-like
		{"e5m2 one", F8E5M2ToF32, 0x3c, 1},
		{"e5m2 max", F8E5M2ToF32, 0x7b, 57344}, // 1.75·2^15
		{"e5m2 inf", F8E5M2ToF32, 0x7c, inf},
		{"e5m2 -inf", F8E5M2ToF32, 0xfc, -inf},
		{"e5m2 nan", F8E5M2ToF32, 0x7d, nan},
		{"e5m2 min subnormal", F8E5M2ToF32, 0x01, pow2(-16)},
		// fnuz: bias 8 / 16, 0x80 is the only NaN
		{"e4m3fnuz one", F8E4M3FNUZToF32, 0x40, 1},
		{"e4m3fnuz max", F8E4M3FNUZToF32, 0x7f, 240},
		{"e4m3fnuz nan", F8E4M3FNUZToF32, 0x80, nan},
		{"e4m3fnuz min subnormal", F8E4M3FNUZToF32, 0x01, pow2(-10)},
		{"e5m2fnuz one", F8E5M2FNUZToF32, 0x40, 1},
		{"e5m2fnuz max", F8E5M2FNUZToF32, 0x7f, 57344},
		{"e5m2fnuz nan", F8E5M2FNUZToF32, 0x80, nan},
		{"e5m2fnuz min subnormal", F8E5M2FNUZToF32, 0x01, pow2(-17)},
		// e8m0: 2^(e−127)
		{"e8m0 one", F8E8M0ToF32, 127, 1},
		{"e8m0 two", F8E8M0ToF32, 128, 2},
		{"e8m0 min", F8E8M0ToF32, 0, pow2(-127)},
		{"e8m0 max", F8E8M0ToF32, 254, pow2(127)},
		{"e8m0 nan", F8E8M0ToF32, 255, nan},
	} {
		got := c.conv(c.in)
		if math.IsNaN(float64(c.want)) {
			if !math.IsNaN(float64(got)) {
				t.Errorf("%s: 0x%02x → %v, want NaN", c.name, c.in, got)
			}
			continue
		}
		if got != c.want {
			t.Errorf("%s: 0x%02x → %v, want %v", c.name, c.in, got, c.want)
		}
	}
}

// TestMinifloatsMonotonic: over the non-negative finite codes each format is strictly
// increasing, and negative codes mirror them; this catches an off-by-one exponent or
// a subnormal boundary error at any code, not only the hand-picked ones.
func TestMinifloatsMonotonic(t *testing.T) {
	for name, c := range map[string]struct {
		conv   func(byte) float32
		mirror bool
	}{
		"e4m3": {F8E4M3ToF32, true}, "e5m2": {F8E5M2ToF32, true},
		"e4m3fnuz": {F8E4M3FNUZToF32, true}, "e5m2fnuz": {F8E5M2FNUZToF32, true},
		"e8m0": {F8E8M0ToF32, false},
	} {
		prev := float32(math.Inf(-1))
		for b := 0; b < 0x80 || (!c.mirror && b < 0xff); b++ {
			v := c.conv(byte(b))
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				continue
			}
			if !(v > prev) {
				t.Errorf("%s: 0x%02x → %v, not above 0x%02x → %v", name, b, v, b-1, prev)
			}
			prev = v
			if c.mirror && b != 0 {
				if n := c.conv(byte(b) | 0x80); n != -v {
					t.Errorf("%s: 0x%02x → %v, want %v", name, b|0x80, n, -v)
				}
			}
		}
	}
}

func TestF16BF16F4(t *testing.T) {
	for _, c := range []struct {
		in   uint16
		want float32
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, pow2(-24)}, {0x03ff, 1023 * pow2(-24)},
		{0x0400, pow2(-14)}, {0x3555, 0.333251953125}, {0x7c00, float32(math.Inf(1))}, {0xfc00, float32(math.Inf(-1))},
	} {
		if got := F16ToF32(c.in); got != c.want {
			t.Errorf("F16 0x%04x → %v, want %v", c.in, got, c.want)
		}
	}
	if v := F16ToF32(0x7e00); !math.IsNaN(float64(v)) {
		t.Errorf("F16 0x7e00 → %v, want NaN", v)
	}
	if v := F16ToF32(0x8000); v != 0 || !math.Signbit(float64(v)) {
		t.Errorf("F16 0x8000 → %v, want -0", v)
	}
	for in, want := range map[uint16]float32{0x3f80: 1, 0xc000: -2, 0x4049: 3.140625, 0x7f80: float32(math.Inf(1))} {
		if got := BF16ToF32(in); got != want {
			t.Errorf("BF16 0x%04x → %v, want %v", in, got, want)
		}
	}
	want := []float32{0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6}
	for n, w := range want {
		if got := F4E2M1ToF32(byte(n)); got != w {
			t.Errorf("F4 %d → %v, want %v", n, got, w)
		}
	}
}

func TestDecodeF32(t *testing.T) {
	for _, c := range []struct {
		dt   DType
		in   []byte
		want []float32
	}{
		{F32, []byte{0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0}, []float32{1, -2}},
		{F64, []byte{0, 0, 0, 0, 0, 0, 0xf0, 0x3f}, []float32{1}},
		{BF16, []byte{0x80, 0x3f}, []float32{1}},
		{F16, []byte{0x00, 0x3c}, []float32{1}},
		{F8E4M3, []byte{0x38, 0x7e}, []float32{1, 448}},
		{F4, []byte{0x21, 0xf7}, []float32{0.5, 1, 6, -6}}, // low nibble first
		{BOOL, []byte{0, 1, 7}, []float32{0, 1, 1}},
		{U8, []byte{255}, []float32{255}},
		{I8, []byte{0xff, 0x80}, []float32{-1, -128}},
		{I16, []byte{0xfe, 0xff}, []float32{-2}},
		{U16, []byte{0xfe, 0xff}, []float32{65534}},
		{I32, []byte{0xfd, 0xff, 0xff, 0xff}, []float32{-3}},
		{U32, []byte{7, 0, 0, 0}, []float32{7}},
		{I64, []byte{0xfc, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 5, 0, 0, 0, 0, 0, 0, 0}, []float32{-4, 5}},
		{U64, []byte{9, 0, 0, 0, 0, 0, 0, 0}, []float32{9}},
	} {
		got, err := DecodeF32(c.dt, c.in)
		if err != nil {
			t.Errorf("%s: %v", c.dt, err)
			continue
		}
		if len(got) != len(c.want) {
			t.Errorf("%s: %v, want %v", c.dt, got, c.want)
			continue
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%s: %v, want %v", c.dt, got, c.want)
				break
			}
		}
	}
	for _, c := range []struct {
		dt   DType
		in   []byte
		want error
	}{
		{C64, make([]byte, 8), ErrUnsupported},
		{F6E2M3, make([]byte, 3), ErrUnsupported},
		{F32, make([]byte, 3), ErrInvalid},
		{"F7", nil, ErrInvalid},
	} {
		if _, err := DecodeF32(c.dt, c.in); !errors.Is(err, c.want) {
			t.Errorf("DecodeF32(%s, %d bytes) = %v, want %v", c.dt, len(c.in), err, c.want)
		}
	}
}

func TestBits(t *testing.T) {
	want := map[DType]int{BOOL: 8, F4: 4, F6E2M3: 6, F6E3M2: 6, U8: 8, I8: 8, F8E5M2: 8, F8E4M3: 8, F8E8M0: 8,
		F8E4M3FNUZ: 8, F8E5M2FNUZ: 8, I16: 16, U16: 16, F16: 16, BF16: 16, I32: 32, U32: 32, F32: 32,
		C64: 64, F64: 64, I64: 64, U64: 64}
	if len(DTypes()) != len(want) {
		t.Fatalf("%d dtypes, want %d", len(DTypes()), len(want))
	}
	for _, d := range DTypes() {
		if d.Bits() != want[d] || !d.Valid() {
			t.Errorf("%s: bits %d valid %v, want %d", d, d.Bits(), d.Valid(), want[d])
		}
	}
	if DType("F8").Valid() || DType("f32").Bits() != 0 {
		t.Error("unknown dtypes must be invalid")
	}
}
