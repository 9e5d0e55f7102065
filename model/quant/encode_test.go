package quant

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

func TestEncodeRoundTripsEveryCode(t *testing.T) {
	for c := range 256 {
		b := byte(c)
		if b&0x7f == 0x7f {
			continue // NaN
		}
		if got := EncodeFP8E4M3(FP8E4M3(b)); got != b {
			t.Errorf("fp8 code %#02x → %v → %#02x", b, FP8E4M3(b), got)
		}
	}
	for c := range byte(16) {
		if got := EncodeE2M1(E2M1(c)); got != c {
			t.Errorf("e2m1 code %d → %v → %d", c, E2M1(c), got)
		}
	}
}

// bruteNearest is the reference: the decoded value of the code nearest to x, ties to the
// code with an even magnitude, searched over every code.
func bruteNearest(x float64, codes int, dec func(byte) float64) float64 {
	best, bestD, bestC := 0.0, math.Inf(1), 0
	for c := range codes {
		v := dec(byte(c))
		if v != v || v < 0 || math.Signbit(v) {
			continue
		}
		d := math.Abs(math.Abs(x) - v)
		if d < bestD || (d == bestD && c%2 == 0 && bestC%2 == 1) {
			best, bestD, bestC = v, d, c
		}
	}
	return math.Copysign(best, x)
}

func TestEncodeIsNearest(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		x := (r.Float64()*2 - 1) * math.Exp2(float64(r.IntN(24)-14))
		if got, want := float64(FP8E4M3(EncodeFP8E4M3(float32(x)))), bruteNearest(float64(float32(x)), 0x7f, refFP8); got != want {
			t.Fatalf("fp8 %v → %v, nearest %v", x, got, want)
		}
		y := (r.Float64()*2 - 1) * 7
		if got, want := float64(E2M1(EncodeE2M1(float32(y)))), bruteNearest(float64(float32(y)), 8, refE2M1); got != want {
			t.Fatalf("e2m1 %v → %v, nearest %v", y, got, want)
		}
	}
}

func TestEncodeHandValues(t *testing.T) {
	for _, c := range []struct {
		x    float32
		want byte
	}{
		{1.0625, 0x38}, // halfway 1 (0x38) and 1.125 (0x39): even code
		{1.1875, 0x3a}, // halfway 1.125 and 1.25 (0x3a): even code
		{1.07, 0x39}, {1000, 0x7e}, {-1000, 0xfe}, {448, 0x7e}, {464, 0x7e},
		{0.0009765625, 0x00}, // half the smallest subnormal: ties to 0
		{0.0014, 0x01}, {float32(math.Copysign(0, -1)), 0x80},
	} {
		if got := EncodeFP8E4M3(c.x); got != c.want {
			t.Errorf("EncodeFP8E4M3(%v) = %#02x, want %#02x", c.x, got, c.want)
		}
	}
	for _, c := range []struct {
		x    float32
		want byte
	}{
		{0.25, 0}, {0.75, 2}, {1.25, 2}, {1.75, 4}, {2.5, 4}, {3.5, 6}, {5, 6}, {5.1, 7}, {9, 7},
		{-0.75, 10}, {-9, 15},
	} {
		if got := EncodeE2M1(c.x); got != c.want {
			t.Errorf("EncodeE2M1(%v) = %d, want %d", c.x, got, c.want)
		}
	}
}

func TestPow2CeilAndE8M0(t *testing.T) {
	for _, c := range []struct{ x, want float64 }{{1, 1}, {1.01, 2}, {0.5, 0.5}, {0.3, 0.5}, {3, 4}, {1e-4 / 448, math.Exp2(-22)}} {
		if got := Pow2Ceil(c.x); got != c.want {
			t.Errorf("Pow2Ceil(%v) = %v, want %v", c.x, got, c.want)
		}
	}
	for _, e := range []int{-127, -1, 0, 5, 127} {
		b, err := EncodeE8M0(math.Exp2(float64(e)))
		if err != nil || float64(E8M0(b)) != math.Exp2(float64(e)) {
			t.Errorf("E8M0 2^%d: code %d (%v), err %v", e, b, E8M0(b), err)
		}
	}
	for _, bad := range []float64{3, 0, math.Exp2(128), math.Exp2(-128)} {
		if _, err := EncodeE8M0(bad); !errors.Is(err, ErrShape) {
			t.Errorf("EncodeE8M0(%v) err %v", bad, err)
		}
	}
}

func TestQuantFP8RoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, sz := range [][2]int{{1, 1}, {130, 200}, {128, 128}, {5, 300}} {
		rows, cols := sz[0], sz[1]
		w := make([]float32, rows*cols)
		for i := range w {
			w[i] = float32(r.NormFloat64() * 0.05)
		}
		q, s, err := QuantFP8(w, rows, cols)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]float32, len(w))
		if err := DequantFP8(q, rows, cols, s, out); err != nil {
			t.Fatal(err)
		}
		for i, v := range w {
			// e4m3 keeps 3 mantissa bits: relative error ≤ 2^-4 for normal values; the
			// block scale puts the block max at most 2× below 448, so tiny values may be
			// subnormal: bound by the subnormal step of the block's scale too.
			sc := float64(E8M0(s[(i/cols/Block)*((cols+Block-1)/Block)+(i%cols)/Block]))
			if d := math.Abs(float64(out[i] - v)); d > math.Abs(float64(v))/16+sc*math.Exp2(-10) {
				t.Fatalf("[%d,%d] %d: %v → %v", rows, cols, i, v, out[i])
			}
		}
		// Values already on the grid come back exactly.
		q2, s2, _ := QuantFP8(out, rows, cols)
		out2 := make([]float32, len(w))
		_ = DequantFP8(q2, rows, cols, s2, out2)
		for i := range out {
			if out[i] != out2[i] {
				t.Fatalf("re-quantising %v gave %v", out[i], out2[i])
			}
		}
	}
	if _, _, err := QuantFP8(make([]float32, 3), 2, 2); !errors.Is(err, ErrShape) {
		t.Errorf("bad shape: %v", err)
	}
}

func TestQuantMXFP4RoundTrip(t *testing.T) {
	// A row whose block max is 6·2^-3 takes scale 2^-3, and grid values come back exactly.
	grid := []float32{0, 0.5, 1, 1.5, 2, 3, 4, 6}
	w := make([]float32, 64)
	for i := range w {
		w[i] = grid[i%8] / 8
		if i%3 == 0 {
			w[i] = -w[i]
		}
	}
	packed, scale, err := QuantMXFP4(w, 1, 64)
	if err != nil {
		t.Fatal(err)
	}
	if scale[0] != 127-3 || scale[1] != 127-3 {
		t.Fatalf("scales %v, want 124", scale)
	}
	// value 0 (negated: −0, code 8) in the low nibble of byte 0, value 1 (0.5/8 → code
	// 1) in the high nibble.
	if packed[0] != 8|1<<4 {
		t.Fatalf("byte 0 = %#02x, want 0x18", packed[0])
	}
	out := make([]float32, 64)
	if err := DequantMXFP4(packed, 1, 64, scale, out); err != nil {
		t.Fatal(err)
	}
	for i := range w {
		if out[i] != w[i] && !(w[i] == 0 && out[i] == 0) {
			t.Fatalf("%d: %v → %v", i, w[i], out[i])
		}
	}
	if _, _, err := QuantMXFP4(make([]float32, 40), 1, 40); !errors.Is(err, ErrShape) {
		t.Errorf("cols 40: %v", err)
	}
}

func TestSimFP8AndFP4(t *testing.T) {
	// Block max 448 → scale 1: values round onto the e4m3 grid.
	x := []float32{448, 1.0625, 1.07, -3.3}
	if err := SimFP8(x, 4); err != nil {
		t.Fatal(err)
	}
	if want := []float32{448, 1, 1.125, -3.25}; !equal(x, want) {
		t.Errorf("SimFP8 = %v, want %v", x, want)
	}
	// Block max 12 → amax/6 = 2 → scale 2: 12 → 6·2, 5 → 2.5 → code 4 (2) → 4, 1.4 → .7 → .5 → 1.
	y := []float32{12, 5, 1.4, -7}
	if err := SimFP4(y, 4); err != nil {
		t.Fatal(err)
	}
	if want := []float32{12, 4, 1, -8}; !equal(y, want) {
		t.Errorf("SimFP4 = %v, want %v", y, want)
	}
	zero := make([]float32, 32)
	if err := SimFP4(zero, 32); err != nil || !equal(zero, make([]float32, 32)) {
		t.Errorf("zeros: %v %v", zero, err)
	}
	if err := SimFP8(make([]float32, 5), 4); !errors.Is(err, ErrShape) {
		t.Errorf("ragged: %v", err)
	}
}

func equal(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestHadamardAgainstMatrix(t *testing.T) {
	const n = 16
	// Sylvester's H by its closed form: H[i][j] = (−1)^popcount(i&j).
	r := rand.New(rand.NewPCG(5, 6))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	orig := append([]float32(nil), x...)
	if err := Hadamard(x); err != nil {
		t.Fatal(err)
	}
	for j := range n {
		s := 0.0
		for i := range n {
			sign := 1.0
			if popcount(i&j)%2 == 1 {
				sign = -1
			}
			s += float64(orig[i]) * sign
		}
		if want := s / 4; math.Abs(float64(x[j])-want) > 1e-5 {
			t.Fatalf("H[%d] = %v, want %v", j, x[j], want)
		}
	}
	_ = Hadamard(x) // self-inverse
	for i := range x {
		if math.Abs(float64(x[i]-orig[i])) > 1e-5 {
			t.Fatalf("H·H·x [%d] = %v, want %v", i, x[i], orig[i])
		}
	}
	if err := Hadamard(make([]float32, 12)); !errors.Is(err, ErrShape) {
		t.Errorf("length 12: %v", err)
	}
}

func popcount(v int) int {
	n := 0
	for ; v != 0; v &= v - 1 {
		n++
	}
	return n
}
