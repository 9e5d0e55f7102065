package ascendtest

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moemesh/moemesh/ascend"
)

// Tolerances of GroupedMatmul on random inputs, as a fraction of Σ_k |x_k·w_k| (the scale
// of the rounding error of any summation order). The reference uses the weights as the
// backend stored them, so the f32 bound only has to cover accumulation order. bf16 and f16
// are looser so that a backend may round x to the weight dtype, as aclnnGroupedMatmul does
// (x and weight share a dtype there): one rounding of x is 2⁻⁹ (bf16) or 2⁻¹² (f16)
// relative, plus accumulation. Exact-input tests catch any bug these would let through.
const (
	TolF32  = 1e-5
	TolF16  = 1e-3
	TolBF16 = 8e-3
)

// TolSwiGLU is SwiGLU's relative tolerance to the float64 result: a float32 evaluation
// (exp, add, divide, multiply) is a few ulps (ulp = 1.2e-7).
const TolSwiGLU = 2e-6

// RunAll runs the whole suite on b as subtests.
func RunAll(t *testing.T, b ascend.Backend) {
	t.Run("Registered", func(t *testing.T) { testRegistered(t, b) })
	t.Run("Memory", func(t *testing.T) { testMemory(t, b) })
	t.Run("Buffers", func(t *testing.T) { testBuffers(t, b) })
	t.Run("Conversions", func(t *testing.T) { testConversions(t, b) })
	t.Run("GroupedMatmulExact", func(t *testing.T) { testGMMExact(t, b) })
	t.Run("GroupedMatmulRandom", func(t *testing.T) { testGMMRandom(t, b) })
	t.Run("GroupedMatmulRowIndependence", func(t *testing.T) { testGMMRows(t, b) })
	t.Run("QuantizedWeights", func(t *testing.T) { testQuant(t, b) })
	t.Run("SwiGLU", func(t *testing.T) { testSwiGLU(t, b) })
	t.Run("ScatterAdd", func(t *testing.T) { testScatterAdd(t, b) })
	t.Run("BadArguments", func(t *testing.T) { testBadArguments(t, b) })
	t.Run("Close", func(t *testing.T) { testClose(t, b) })
}

// dtypes are the weight dtypes every backend supports.
var dtypes = []ascend.DType{ascend.F32, ascend.BF16, ascend.F16}

func tolFor(dt ascend.DType) float64 {
	switch dt {
	case ascend.BF16:
		return TolBF16
	case ascend.F16:
		return TolF16
	}
	return TolF32
}

// openCard opens a card that the test closes at cleanup (tests that close it themselves
// make that second Close fail with ErrClosed, which is fine).
func openCard(t *testing.T, b ascend.Backend, id int, budget int64) ascend.Card {
	t.Helper()
	c, err := b.OpenCard(id, budget)
	if err != nil {
		t.Fatalf("OpenCard(%d, %d): %v", id, budget, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// upload allocates a buffer and stores vals in it (converted to dt by the backend).
func upload(t *testing.T, c ascend.Card, dt ascend.DType, vals []float32, shape ...int) ascend.Buffer {
	t.Helper()
	b, err := c.Alloc(dt, shape...)
	if err != nil {
		t.Fatalf("Alloc(%v, %v): %v", dt, shape, err)
	}
	if len(vals) > 0 {
		if err := c.WriteF32(b, 0, vals); err != nil {
			t.Fatalf("WriteF32 into %v%v: %v", dt, shape, err)
		}
	}
	return b
}

// download reads a whole buffer as f32.
func download(t *testing.T, c ascend.Card, b ascend.Buffer) []float32 {
	t.Helper()
	out := make([]float32, ascend.Elements(b.Shape()))
	if err := c.ReadF32(b, out); err != nil {
		t.Fatalf("ReadF32: %v", err)
	}
	return out
}

// call runs fn and turns a panic into a test error, so one bad path does not hide the rest.
func call(t *testing.T, name string, fn func() error) (err error) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Errorf("%s panicked: %v", name, p)
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return fn()
}

// wantErr checks that fn fails with an error wrapping target (or one of targets).
func wantErr(t *testing.T, name string, fn func() error, targets ...error) {
	t.Helper()
	err := call(t, name, fn)
	if err == nil {
		t.Errorf("%s: no error, want %v", name, targets)
		return
	}
	for _, target := range targets {
		if errors.Is(err, target) {
			return
		}
	}
	t.Errorf("%s: error %q does not wrap %v", name, err, targets)
}

// mustOK fails the test if fn returns an error or panics.
func mustOK(t *testing.T, name string, fn func() error) {
	t.Helper()
	if err := call(t, name, fn); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x5eed)) }

// uniform returns n values uniform in [-s, s).
func uniform(rng *rand.Rand, n int, s float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = (rng.Float32()*2 - 1) * s
	}
	return v
}

// grid returns n values k/den with |k| ≤ den: few significant bits, so exact in bf16 and
// f16 and with exact float32 products and sums (see testGMMExact).
func grid(rng *rand.Rand, n, den int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.IntN(2*den+1)-den) / float32(den)
	}
	return v
}

func fill(n int, v float32) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = v
	}
	return s
}

// sameBits reports whether a and b have the same bits, treating all NaNs as equal.
func sameBits(a, b float32) bool {
	if a != a && b != b {
		return true
	}
	return math.Float32bits(a) == math.Float32bits(b)
}

func testRegistered(t *testing.T, b ascend.Backend) {
	if b.Name() == "" {
		t.Fatal("backend has an empty name")
	}
	got, err := ascend.Open(b.Name())
	if err != nil {
		t.Fatalf("backend %q is not registered: %v", b.Name(), err)
	}
	if got.Name() != b.Name() {
		t.Errorf("ascend.Open(%q) returned backend %q", b.Name(), got.Name())
	}
}
