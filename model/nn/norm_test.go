package nn

import (
	"math"
	"slices"
	"testing"
)

func refRMSNorm(x, w []float32, eps float64, rows int) []float64 {
	n := len(x) / rows
	out := make([]float64, len(x))
	for r := range rows {
		var ss float64
		for _, v := range x[r*n : (r+1)*n] {
			ss += float64(v) * float64(v)
		}
		s := 1 / math.Sqrt(ss/float64(n)+eps)
		for i := range n {
			y := float64(x[r*n+i]) * s
			if w != nil {
				y *= float64(w[i])
			}
			out[r*n+i] = y
		}
	}
	return out
}

func TestRMSNorm(t *testing.T) {
	r := newRand(1)
	for _, n := range []int{1, 7, 64, 2048} {
		rows := 3
		x := randVec(r, rows*n)
		w := randVec(r, n)
		out := make([]float32, len(x))
		RMSNorm(out, x, w, 1e-6, rows)
		closeVec(t, "weighted", out, refRMSNorm(x, w, 1e-6, rows), tolF32)
		RMSNormUnweighted(out, x, 1e-5, rows)
		closeVec(t, "unweighted", out, refRMSNorm(x, nil, 1e-5, rows), tolF32)
		// In place gives the same bits as out-of-place.
		want := slices.Clone(out)
		in := slices.Clone(x)
		RMSNormUnweighted(in, in, 1e-5, rows)
		if !equalBits(in, want) {
			t.Fatalf("n=%d: in-place result differs", n)
		}
	}
}

func TestRMSNormEpsDominates(t *testing.T) {
	// An all-zero row must stay zero (no NaN from 0/0) and eps must enter under the root.
	x := []float32{0, 0, 0, 0, 1e-4, 1e-4, 1e-4, 1e-4}
	out := make([]float32, len(x))
	RMSNorm(out, x, nil, 1e-6, 2)
	closeVec(t, "tiny", out, refRMSNorm(x, nil, 1e-6, 2), tolF32)
}

func TestRMSNormHeads(t *testing.T) {
	r := newRand(2)
	rows, heads, hd := 2, 4, 16
	x := randVec(r, rows*heads*hd)
	w := randVec(r, hd)
	out := make([]float32, len(x))
	RMSNormHeads(out, x, w, 1e-6, rows, heads, hd)
	// Reference: each head normalised on its own with the shared per-head weight.
	want := make([]float64, 0, len(x))
	for h := range rows * heads {
		want = append(want, refRMSNorm(x[h*hd:(h+1)*hd], w, 1e-6, 1)...)
	}
	closeVec(t, "heads", out, want, tolF32)
	// A full-vector norm (OLMoE) differs from per-head (Qwen3): the test would catch a mix-up.
	full := make([]float32, len(x))
	RMSNorm(full, x, nil, 1e-6, rows)
	RMSNormHeads(out, x, nil, 1e-6, rows, heads, hd)
	if equalBits(full, out) {
		t.Fatal("per-head and full-vector norms agree on random data")
	}
}

func TestRMSNormPanicsOnBadShape(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for a weight of the wrong width")
		}
	}()
	RMSNorm(make([]float32, 8), make([]float32, 8), make([]float32, 3), 1e-6, 2)
}

func TestClampBiasScale(t *testing.T) {
	x := []float32{-9, -1, 0, 2, 8, float32(math.NaN())}
	Clamp(x, 3)
	want := []float32{-3, -1, 0, 2, 3}
	if !slices.Equal(x[:5], want) || !math.IsNaN(float64(x[5])) {
		t.Fatalf("Clamp = %v", x)
	}
	y := []float32{1, 2}
	Clamp(y, 0) // null clip_qkv
	if !slices.Equal(y, []float32{1, 2}) {
		t.Fatalf("Clamp(0) changed %v", y)
	}
	b := []float32{1, 2, 3, 4, 5, 6}
	AddBias(b, []float32{10, 20, 30})
	if !slices.Equal(b, []float32{11, 22, 33, 14, 25, 36}) {
		t.Fatalf("AddBias = %v", b)
	}
	Scale(b, 0.5)
	if b[0] != 5.5 || b[5] != 18 {
		t.Fatalf("Scale = %v", b)
	}
}
