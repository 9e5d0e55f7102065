package ascendtest

import (
	"math"
	"testing"

	"github.com/moemesh/moemesh/ascend"
)

func testSwiGLU(t *testing.T, b ascend.Backend) {
	c := openCard(t, b, 0, 0)
	swiglu := func(x []float32, m, n int, limit float32) []float32 {
		t.Helper()
		xb := upload(t, c, ascend.F32, x, m, 2*n)
		ob := upload(t, c, ascend.F32, fill(m*n, sentinel), m, n)
		mustOK(t, "SwiGLU", func() error { return c.SwiGLU(ob, xb, limit) })
		return download(t, c, ob)
	}

	// The worked value: silu(1)·2 = 2/(1+e⁻¹) = 1.4621171…
	if got := swiglu([]float32{1, 2}, 1, 1, 0); math.Abs(float64(got[0])-1.462117) > 1e-6 {
		t.Errorf("silu(1)·2 = %.7f, want 1.462117", got[0])
	}
	// Clamped: gate = min(10, 7) = 7, up = clamp(-20) = -7; a gate below -limit is kept.
	got := swiglu([]float32{10, -20, -20, 20}, 1, 2, 7)
	want := []float64{refSilu(7) * -7, refSilu(-20) * 7}
	for i := range want {
		if math.Abs(float64(got[i])-want[i]) > TolSwiGLU*math.Abs(want[i]) {
			t.Errorf("clamped SwiGLU[%d] = %.9g, want %.9g", i, got[i], want[i])
		}
	}

	rng := newRand(5)
	for _, tc := range []struct {
		m, n  int
		limit float32
	}{{7, 45, 0}, {7, 45, 3}, {3, 1, 0}, {40, 700, 0}, {2, 9, -1}} {
		x := uniform(rng, tc.m*2*tc.n, 8)
		got := swiglu(x, tc.m, tc.n, tc.limit)
		want := refSwiGLU(x, tc.m, tc.n, tc.limit)
		bad := 0
		for i := range want {
			if math.Abs(float64(got[i])-want[i]) > TolSwiGLU*math.Abs(want[i])+1e-30 && bad < 5 {
				bad++
				t.Errorf("SwiGLU M%d N%d limit %g: out[%d][%d] = %.9g, want %.9g",
					tc.m, tc.n, tc.limit, i/tc.n, i%tc.n, got[i], want[i])
			}
		}
	}
}

func testScatterAdd(t *testing.T, b ascend.Backend) {
	c := openCard(t, b, 0, 0)
	scatter := func(out, x []float32, r, p, n int, src, dst []int32, w []float32) []float32 {
		t.Helper()
		ob := upload(t, c, ascend.F32, out, r, n)
		xb := upload(t, c, ascend.F32, x, p, n)
		mustOK(t, "ScatterAdd", func() error { return c.ScatterAdd(ob, xb, src, dst, w) })
		return download(t, c, ob)
	}

	// Order matters in float32: in order, 1e8+4 rounds back to 1e8 twice and the result is
	// 0; adding the 4s first would give 8.
	got := scatter([]float32{0}, []float32{1e8, 4, -1e8}, 1, 3, 1,
		[]int32{0, 1, 1, 2}, []int32{0, 0, 0, 0}, []float32{1, 1, 1, 1})
	if got[0] != 0 {
		t.Errorf("1e8 + 4 + 4 - 1e8 in order = %g, want 0", got[0])
	}
	// Weights scale rows, and rows not named by dst are untouched.
	got = scatter([]float32{1, 1, 5, 5}, []float32{3, -1}, 2, 1, 2,
		[]int32{0, 0}, []int32{0, 0}, []float32{2, 0.5})
	if got[0] != 1+6+1.5 || got[1] != 1-2-0.5 || got[2] != 5 || got[3] != 5 {
		t.Errorf("weighted ScatterAdd gave %v, want [8.5 -1.5 5 5]", got)
	}

	rng := newRand(6)
	for _, tc := range []struct{ r, p, n, pairs int }{{5, 9, 37, 23}, {3, 4, 1000, 40}, {2, 2, 3, 0}} {
		out := uniform(rng, tc.r*tc.n, 4)
		x := uniform(rng, tc.p*tc.n, 4)
		src, dst := make([]int32, tc.pairs), make([]int32, tc.pairs)
		for i := range src {
			src[i], dst[i] = int32(rng.IntN(tc.p)), int32(rng.IntN(tc.r))
		}
		w := uniform(rng, tc.pairs, 2)
		got := scatter(out, x, tc.r, tc.p, tc.n, src, dst, w)
		refScatterAdd(out, x, tc.n, src, dst, w)
		for i := range out {
			if !sameBits(got[i], out[i]) {
				t.Errorf("ScatterAdd R%d P%d N%d pairs %d: out[%d][%d] = %g, want %g (bit-exact)",
					tc.r, tc.p, tc.n, tc.pairs, i/tc.n, i%tc.n, got[i], out[i])
				break
			}
		}
	}
}

// testBadArguments: every bad call is an error wrapping the named sentinel, never a panic,
// and leaves the output untouched.
func testBadArguments(t *testing.T, b ascend.Backend) {
	c := openCard(t, b, 0, 0)
	other := openCard(t, b, 1, 0)
	const m, k, n = 4, 8, 3
	x := upload(t, c, ascend.F32, fill(m*k, 1), m, k)
	out := upload(t, c, ascend.F32, fill(m*n, sentinel), m, n)
	w := upload(t, c, ascend.BF16, fill(n*k, 1), n, k)
	wf16 := upload(t, c, ascend.F16, fill(n*k, 1), n, k)
	wShort := upload(t, c, ascend.F32, nil, n, k-1)
	w3d := upload(t, c, ascend.F32, nil, 1, n, k)
	x1d := upload(t, c, ascend.F32, nil, m*k)
	xBF := upload(t, c, ascend.BF16, nil, m, k)
	outF16 := upload(t, c, ascend.F16, nil, m, n)
	outWide := upload(t, c, ascend.F32, nil, m, n+1)
	outTall := upload(t, c, ascend.F32, nil, m+1, n)
	sq := upload(t, c, ascend.F32, nil, m, k) // out shaped like x, for aliasing
	wSq := upload(t, c, ascend.F32, nil, k, k)
	sq2 := upload(t, c, ascend.F32, nil, k, k)
	foreign := upload(t, other, ascend.BF16, nil, n, k)
	freed := upload(t, c, ascend.BF16, nil, n, k)
	mustOK(t, "Free", func() error { return c.Free(freed) })

	gmm := func(o, xx ascend.Buffer, ws []ascend.Buffer, counts ...int64) func() error {
		return func() error { return c.GroupedMatmul(o, xx, ws, counts) }
	}
	W := func(bs ...ascend.Buffer) []ascend.Buffer { return bs }
	cases := []struct {
		name   string
		fn     func() error
		target error
	}{
		{"GMM out f16", gmm(outF16, x, W(w), 4), ascend.ErrDType},
		{"GMM x bf16", gmm(out, xBF, W(w), 4), ascend.ErrDType},
		{"GMM weight K mismatch", gmm(out, x, W(w, wShort), 2, 2), ascend.ErrShape},
		{"GMM weight 3-D", gmm(out, x, W(w3d), 4), ascend.ErrShape},
		{"GMM x 1-D", gmm(out, x1d, W(w), 4), ascend.ErrShape},
		{"GMM out N mismatch", gmm(outWide, x, W(w), 4), ascend.ErrShape},
		{"GMM out M mismatch", gmm(outTall, x, W(w), 4), ascend.ErrShape},
		{"GMM counts/weights length", gmm(out, x, W(w, wf16), 4), ascend.ErrShape},
		{"GMM negative count", gmm(out, x, W(w, wf16), 2, -1), ascend.ErrShape},
		{"GMM counts past M", gmm(out, x, W(w, wf16), 3, 2), ascend.ErrShape},
		{"GMM huge count", gmm(out, x, W(w, wf16), 1, math.MaxInt64), ascend.ErrShape},
		{"GMM nil weight", gmm(out, x, W(w, nil), 2, 2), ascend.ErrInvalid},
		{"GMM nil out", gmm(nil, x, W(w), 4), ascend.ErrInvalid},
		{"GMM freed weight", gmm(out, x, W(w, freed), 2, 2), ascend.ErrInvalid},
		{"GMM foreign weight", gmm(out, x, W(w, foreign), 2, 2), ascend.ErrForeignBuffer},
		{"GMM fake buffer", gmm(out, x, W(fakeBuffer{}), 4), ascend.ErrForeignBuffer},
		{"GMM out is x", gmm(sq, sq, W(wSq), 4), ascend.ErrInvalid},
		{"GMM out is a weight", gmm(wSq, sq2, W(wSq), k), ascend.ErrInvalid},

		{"SwiGLU x not [M, 2N]", func() error { return c.SwiGLU(out, x, 0) }, ascend.ErrShape},
		{"SwiGLU rows mismatch", func() error { return c.SwiGLU(outTall, upload(t, c, ascend.F32, nil, m, 2*n), 0) }, ascend.ErrShape},
		{"SwiGLU x bf16", func() error { return c.SwiGLU(out, upload(t, c, ascend.BF16, nil, m, 2*n), 0) }, ascend.ErrDType},
		{"SwiGLU NaN limit", func() error { return c.SwiGLU(out, upload(t, c, ascend.F32, nil, m, 2*n), float32(math.NaN())) }, ascend.ErrInvalid},
		{"SwiGLU x 1-D", func() error { return c.SwiGLU(out, x1d, 0) }, ascend.ErrShape},

		{"ScatterAdd src past P", scatter(c, out, 4, 0), ascend.ErrShape},
		{"ScatterAdd src negative", scatter(c, out, -1, 0), ascend.ErrShape},
		{"ScatterAdd dst past R", scatter(c, out, 0, 4), ascend.ErrShape},
		{"ScatterAdd dst negative", scatter(c, out, 0, -1), ascend.ErrShape},
		{"ScatterAdd lengths", func() error {
			return c.ScatterAdd(out, upload(t, c, ascend.F32, nil, 4, n), []int32{0, 1}, []int32{0}, []float32{1, 1})
		}, ascend.ErrShape},
		{"ScatterAdd width mismatch", func() error {
			return c.ScatterAdd(out, x, []int32{0}, []int32{0}, []float32{1})
		}, ascend.ErrShape},
		{"ScatterAdd out f16", func() error {
			return c.ScatterAdd(outF16, upload(t, c, ascend.F32, nil, 4, n), []int32{0}, []int32{0}, []float32{1})
		}, ascend.ErrDType},
		{"ScatterAdd out is x", func() error { return c.ScatterAdd(out, out, []int32{0}, []int32{1}, []float32{1}) }, ascend.ErrInvalid},

		{"Alloc dtype 0", func() error { _, err := c.Alloc(0, 2); return err }, ascend.ErrDType},
		{"Alloc dtype 99", func() error { _, err := c.Alloc(99, 2); return err }, ascend.ErrDType},
		{"Alloc negative dim", func() error { _, err := c.Alloc(ascend.F32, 2, -1); return err }, ascend.ErrShape},
		{"Alloc no dims", func() error { _, err := c.Alloc(ascend.F32); return err }, ascend.ErrShape},
		{"Write negative offset", func() error { return c.Write(x, -1, make([]byte, 4)) }, ascend.ErrShape},
		{"Write past end", func() error { return c.Write(x, m*k-1, make([]byte, 8)) }, ascend.ErrShape},
		{"Write partial element", func() error { return c.Write(w, 0, make([]byte, 3)) }, ascend.ErrShape},
		{"Write foreign", func() error { return c.Write(foreign, 0, make([]byte, 2)) }, ascend.ErrForeignBuffer},
		{"WriteF32 past end", func() error { return c.WriteF32(w, n*k, []float32{1}) }, ascend.ErrShape},
		{"WriteF32 freed", func() error { return c.WriteF32(freed, 0, []float32{1}) }, ascend.ErrInvalid},
		{"ReadF32 past end", func() error { return c.ReadF32(w, make([]float32, n*k+1)) }, ascend.ErrShape},
		{"ReadF32 nil", func() error { return c.ReadF32(nil, nil) }, ascend.ErrInvalid},
	}
	for _, tc := range cases {
		wantErr(t, tc.name, tc.fn, tc.target)
	}
	// A shape whose byte count overflows int: out of memory or a shape error, whichever the
	// backend sees first; either way no panic.
	wantErr(t, "Alloc overflowing shape", func() error {
		_, err := c.Alloc(ascend.F32, math.MaxInt/2, 4)
		return err
	}, ascend.ErrShape, ascend.ErrOutOfMemory)

	for i, v := range download(t, c, out) {
		if v != sentinel {
			t.Fatalf("failed calls wrote out[%d] = %g", i, v)
		}
	}
}

// scatter returns a one-pair ScatterAdd into out ([4, n]) from a fresh x ([4, n]).
func scatter(c ascend.Card, out ascend.Buffer, src, dst int32) func() error {
	return func() error {
		x, err := c.Alloc(ascend.F32, 4, out.Shape()[1])
		if err != nil {
			return err
		}
		return c.ScatterAdd(out, x, []int32{src}, []int32{dst}, []float32{1})
	}
}
