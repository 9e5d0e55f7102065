package quant

import (
	"errors"
	"math"
	"testing"
)

// Reference decoders written from the format definitions, independently of the tables.
func refFP8(b byte) float64 {
	sign := 1.0
	if b&0x80 != 0 {
		sign = -1
	}
	e, m := int(b>>3)&15, int(b)&7
	if e == 15 && m == 7 {
		return math.NaN()
	}
	if e == 0 {
		return sign * float64(m) * math.Pow(2, -9) // m/8 · 2^-6
	}
	return sign * (8 + float64(m)) * math.Pow(2, float64(e-10)) // (1+m/8)·2^(e−7)
}

func refE2M1(n byte) float64 {
	mag := []float64{0, 0.5, 1, 1.5, 2, 3, 4, 6}[n&7]
	if n&8 != 0 {
		return -mag
	}
	return mag
}

func TestFP8E4M3HandValues(t *testing.T) {
	for _, c := range []struct {
		code byte
		want float64
	}{
		{0x00, 0}, {0x01, 0.001953125}, {0x07, 0.013671875}, {0x08, 0.015625},
		{0x38, 1}, {0x3c, 1.5}, {0x40, 2}, {0x7d, 416}, {0x7e, 448},
		{0xb8, -1}, {0xfe, -448}, {0x81, -0.001953125},
	} {
		if got := FP8E4M3(c.code); float64(got) != c.want {
			t.Errorf("FP8E4M3(%#02x) = %v, want %v", c.code, got, c.want)
		}
	}
	if z := FP8E4M3(0x80); z != 0 || !math.Signbit(float64(z)) {
		t.Errorf("FP8E4M3(0x80) = %v, want -0", z)
	}
	for _, nan := range []byte{0x7f, 0xff} {
		if v := FP8E4M3(nan); !math.IsNaN(float64(v)) {
			t.Errorf("FP8E4M3(%#02x) = %v, want NaN", nan, v)
		}
	}
	for i := range 256 {
		got, want := float64(FP8E4M3(byte(i))), refFP8(byte(i))
		if got != want && !(math.IsNaN(got) && math.IsNaN(want)) {
			t.Errorf("FP8E4M3(%#02x) = %v, reference %v", i, got, want)
		}
		if math.IsInf(got, 0) {
			t.Errorf("FP8E4M3(%#02x) is infinite; e4m3fn has no infinity", i)
		}
	}
}

func TestE8M0HandValues(t *testing.T) {
	for _, c := range []struct {
		code byte
		want float64
	}{
		{127, 1}, {128, 2}, {126, 0.5}, {120, 1.0 / 128}, {254, math.Pow(2, 127)},
		{0, math.Pow(2, -127)}, {1, math.Pow(2, -126)},
	} {
		if got := E8M0(c.code); float64(got) != c.want {
			t.Errorf("E8M0(%d) = %v, want %v", c.code, got, c.want)
		}
	}
	if v := E8M0(0xff); !math.IsNaN(float64(v)) {
		t.Errorf("E8M0(0xff) = %v, want NaN", v)
	}
}

func TestE2M1AllCodes(t *testing.T) {
	want := []float64{0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6}
	for n := range byte(16) {
		if got := E2M1(n); float64(got) != want[n] || float64(got) != refE2M1(n) {
			t.Errorf("E2M1(%d) = %v, want %v", n, got, want[n])
		}
		if got := E2M1(n | 0xf0); got != E2M1(n) {
			t.Errorf("E2M1 must ignore the high nibble: %v vs %v", got, E2M1(n))
		}
	}
	if !math.Signbit(float64(E2M1(8))) {
		t.Error("E2M1(8) must be -0")
	}
}

func TestDequantFP8Blocks(t *testing.T) {
	// 130×129: a full 128×128 block plus partial edge blocks in both directions.
	const rows, cols = 130, 129
	w := make([]byte, rows*cols)
	for i := range w {
		w[i] = byte(i*7+3) &^ 0x80 // positive codes; a NaN code appears (0x7f) and must stay NaN
	}
	w[0] = 0x38                         // 1.0 in block (0,0)
	w[129*cols+128] = 0x40              // 2.0 in block (1,1)
	w[5*cols+128] = 0xc4                // −3.0 in block (0,1)
	scale := []byte{128, 126, 127, 125} // 2, 0.5 / 1, 0.25
	out := make([]float32, rows*cols)
	if err := DequantFP8(w, rows, cols, scale, out); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		r, c int
		want float32
	}{{0, 0, 2}, {129, 128, 0.5}, {5, 128, -1.5}} {
		if got := out[c.r*cols+c.c]; got != c.want {
			t.Errorf("W[%d,%d] = %v, want %v", c.r, c.c, got, c.want)
		}
	}
	sv := []float64{2, 0.5, 1, 0.25}
	for r := range rows {
		for c := range cols {
			want := refFP8(w[r*cols+c]) * sv[(r/128)*2+c/128]
			got := float64(out[r*cols+c])
			if got != want && !(math.IsNaN(got) && math.IsNaN(want)) {
				t.Fatalf("W[%d,%d] = %v, reference %v", r, c, got, want)
			}
		}
	}
}

func TestDequantMXFP4(t *testing.T) {
	// One row of 64 values: two scale blocks.
	w := make([]byte, 32)
	w[0] = 0x21               // low nibble first: 0.5, then 1.0
	w[1] = 0xf9               // −0.5, −6
	w[16] = 0x7f              // second block: −6, 6
	scale := []byte{128, 125} // ×2, ×0.25
	out := make([]float32, 64)
	if err := DequantMXFP4(w, 1, 64, scale, out); err != nil {
		t.Fatal(err)
	}
	want := map[int]float32{0: 1, 1: 2, 2: -1, 3: -12, 32: -1.5, 33: 1.5, 4: 0, 63: 0}
	for i, v := range want {
		if out[i] != v {
			t.Errorf("W[0,%d] = %v, want %v", i, out[i], v)
		}
	}
	// Every byte, against the reference, on a 2×64 weight with distinct scales.
	w2 := make([]byte, 64)
	for i := range w2 {
		w2[i] = byte(i*37 + 11)
	}
	s2 := []byte{127, 130, 100, 0xff}
	o2 := make([]float32, 128)
	if err := DequantMXFP4(w2, 2, 64, s2, o2); err != nil {
		t.Fatal(err)
	}
	for r := range 2 {
		for c := range 64 {
			b := w2[r*32+c/2]
			nib := b & 0xf
			if c%2 == 1 {
				nib = b >> 4
			}
			sc := math.NaN()
			if s := s2[r*2+c/32]; s != 0xff {
				sc = math.Pow(2, float64(int(s)-127))
			}
			want := refE2M1(nib) * sc
			got := float64(o2[r*64+c])
			if got != want && !(math.IsNaN(got) && math.IsNaN(want)) {
				t.Fatalf("W[%d,%d] = %v, reference %v", r, c, got, want)
			}
		}
	}
}

func TestShapeErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
	}{
		{"fp8 short weight", DequantFP8(make([]byte, 3), 2, 2, make([]byte, 1), make([]float32, 4))},
		{"fp8 short scale", DequantFP8(make([]byte, 129), 1, 129, make([]byte, 1), make([]float32, 129))},
		{"fp8 short out", DequantFP8(make([]byte, 4), 2, 2, make([]byte, 1), make([]float32, 3))},
		{"fp8 negative", DequantFP8(nil, -1, 2, nil, nil)},
		{"fp4 odd cols", DequantMXFP4(make([]byte, 8), 1, 16, make([]byte, 1), make([]float32, 16))},
		{"fp4 short weight", DequantMXFP4(make([]byte, 15), 1, 32, make([]byte, 1), make([]float32, 32))},
		{"fp4 short scale", DequantMXFP4(make([]byte, 32), 1, 64, make([]byte, 1), make([]float32, 64))},
		{"fp4 short out", DequantMXFP4(make([]byte, 16), 1, 32, make([]byte, 1), make([]float32, 31))},
	} {
		if !errors.Is(c.err, ErrShape) {
			t.Errorf("%s: err = %v, want ErrShape", c.name, c.err)
		}
	}
	if err := DequantFP8(nil, 0, 0, nil, nil); err != nil {
		t.Errorf("empty weight: %v", err)
	}
}
