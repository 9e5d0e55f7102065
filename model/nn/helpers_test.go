package nn

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Tolerance for f32 results against float64 references: relative 1e-5 of the reference
// vector's largest magnitude (an element-wise relative bound is meaningless near zero).
const tolF32 = 1e-5

// randVec returns n values from a fixed stream, uniform in [-1, 1).
func randVec(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(2*r.Float64() - 1)
	}
	return v
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 1)) }

// closeVec fails t unless got matches want within tol relative to max|want| (floored at 1
// so tiny vectors are compared absolutely).
func closeVec(t *testing.T, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	scale := 0.0
	for _, w := range want {
		scale = max(scale, math.Abs(w))
	}
	scale = max(scale, 1e-30)
	for i := range got {
		if d := math.Abs(float64(got[i]) - want[i]); !(d <= tol*scale) {
			t.Fatalf("%s[%d] = %.9g, want %.9g (|diff| %.3g > %.3g)", what, i, got[i], want[i], d, tol*scale)
		}
	}
}

func to64(x []float32) []float64 {
	o := make([]float64, len(x))
	for i, v := range x {
		o[i] = float64(v)
	}
	return o
}

func equalBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}
