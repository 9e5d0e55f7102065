package nn

import (
	"math"
	"slices"
	"sync"
	"testing"
)

func mustRope(t testing.TB, cfg RopeConfig) *Rope {
	t.Helper()
	r, err := NewRope(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Hand-computed: dim 4, theta 10000, position 1, so inv_freq = [1, 0.01] and the angles
// are 1 and 0.01 rad; x = [1, 2, 3, 4].
func TestRopeHandComputed(t *testing.T) {
	x := []float32{1, 2, 3, 4}
	half := mustRope(t, RopeConfig{Dim: 4, Theta: 10000, Style: RopeHalf})
	got := slices.Clone(x)
	half.Apply(got, 1, 4, 4, 1, nil)
	// Pairs (x0, x2) at angle 1, (x1, x3) at 0.01.
	closeVec(t, "half", got, []float64{-1.9841106485555495, 1.959900667496664, 2.4623779024123156, 4.019799668334994}, tolF32)

	inter := mustRope(t, RopeConfig{Dim: 4, Theta: 10000, Style: RopeInterleaved})
	got = slices.Clone(x)
	inter.Apply(got, 1, 4, 4, 1, nil)
	// Pairs (x0, x1) at angle 1, (x2, x3) at 0.01.
	closeVec(t, "interleaved", got, []float64{-1.1426396637476532, 1.922075596544176, 2.9598506679133294, 4.029799501669161}, tolF32)
}

// refRope rotates one head's rope slice in float64.
func refRope(head []float32, dim int, theta float64, pos int, style RopeStyle) []float64 {
	out := to64(head)
	half := dim / 2
	off := 0
	if style == RopeInterleaved {
		off = len(head) - dim
	}
	for i := range half {
		a := float64(pos) / math.Pow(theta, float64(2*i)/float64(dim))
		c, s := math.Cos(a), math.Sin(a)
		i0, i1 := off+i, off+i+half
		if style == RopeInterleaved {
			i0, i1 = off+2*i, off+2*i+1
		}
		x0, x1 := out[i0], out[i1]
		out[i0], out[i1] = x0*c-x1*s, x1*c+x0*s
	}
	return out
}

func TestRopeAgainstReference(t *testing.T) {
	r := newRand(3)
	for _, style := range []RopeStyle{RopeHalf, RopeInterleaved} {
		heads, hd, rd := 3, 24, 16 // partial: Half rotates the first 16, Interleaved the last 16
		rope := mustRope(t, RopeConfig{Dim: rd, Theta: 10000, Style: style})
		T := 4
		x := randVec(r, T*heads*hd)
		positions := []int32{0, 5, 7, 300}
		got := slices.Clone(x)
		rope.Apply(got, heads, hd, rd, 10, positions)
		var want []float64
		for tk := range T {
			for h := range heads {
				head := x[(tk*heads+h)*hd : (tk*heads+h+1)*hd]
				want = append(want, refRope(head, rd, 10000, 10+int(positions[tk]), style)...)
			}
		}
		closeVec(t, "rope", got, want, tolF32)
		// Untouched dims stay bit-identical.
		for i := range T * heads {
			lo, hi := i*hd+rd, (i+1)*hd
			if style == RopeInterleaved {
				lo, hi = i*hd, i*hd+hd-rd
			}
			if !equalBits(got[lo:hi], x[lo:hi]) {
				t.Fatalf("style %d: non-rope dims of head %d changed", style, i)
			}
		}
	}
}

// Interleaved rope equals rotate_half on the de-interleaved layout (HF's rope_interleave
// port): the two styles differ only by a fixed permutation.
func TestRopeInterleavedIsPermutedHalf(t *testing.T) {
	r := newRand(4)
	d := 8
	x := randVec(r, d)
	perm := make([]float32, d) // evens then odds
	for i := range d / 2 {
		perm[i], perm[i+d/2] = x[2*i], x[2*i+1]
	}
	inter := mustRope(t, RopeConfig{Dim: d, Theta: 500, Style: RopeInterleaved})
	half := mustRope(t, RopeConfig{Dim: d, Theta: 500, Style: RopeHalf})
	inter.Apply(x, 1, d, d, 9, nil)
	half.Apply(perm, 1, d, d, 9, nil)
	for i := range d / 2 {
		if x[2*i] != perm[i] || x[2*i+1] != perm[i+d/2] {
			t.Fatalf("pair %d: interleaved (%g, %g), permuted half (%g, %g)", i, x[2*i], x[2*i+1], perm[i], perm[i+d/2])
		}
	}
}

func TestRopeInverseAndRelative(t *testing.T) {
	r := newRand(5)
	for _, style := range []RopeStyle{RopeHalf, RopeInterleaved} {
		rope := mustRope(t, RopeConfig{Dim: 64, Theta: 10000, Style: style})
		q, k := randVec(r, 64), randVec(r, 64)
		x := slices.Clone(q)
		rope.Apply(x, 1, 64, 64, 1234, nil)
		rope.ApplyInverse(x, 1, 64, 64, 1234, nil)
		closeVec(t, "inverse", x, to64(q), tolF32)
		// q(p)·k(p') depends only on p − p'.
		score := func(p, pk int) float64 {
			a, b := slices.Clone(q), slices.Clone(k)
			rope.Apply(a, 1, 64, 64, p, nil)
			rope.Apply(b, 1, 64, 64, pk, nil)
			var s float64
			for i := range a {
				s += float64(a[i]) * float64(b[i])
			}
			return s
		}
		if s1, s2 := score(10, 3), score(110, 103); math.Abs(s1-s2) > 1e-4 {
			t.Fatalf("style %d: score at offset 7 is %g and %g", style, s1, s2)
		}
	}
}

// yarnRef is the YaRN formula of models.md §4 written out independently.
func yarnRef(d int, theta, factor float64, orig int, fast, slow float64) []float64 {
	corr := func(n float64) float64 {
		return float64(d) * math.Log(float64(orig)/(2*math.Pi*n)) / (2 * math.Log(theta))
	}
	low := math.Max(math.Floor(corr(fast)), 0)
	high := math.Min(math.Ceil(corr(slow)), float64(d-1))
	if low == high {
		high += 0.001
	}
	out := make([]float64, d/2)
	for i := range out {
		f := math.Pow(theta, -2*float64(i)/float64(d))
		ramp := math.Min(math.Max((float64(i)-low)/(high-low), 0), 1)
		out[i] = f/factor*ramp + f*(1-ramp)
	}
	return out
}

func TestYaRNDeepSeekV3(t *testing.T) {
	v3 := RopeScaling{Kind: ScalingYaRN, Factor: 40, OriginalMaxPosition: 4096, BetaFast: 32, BetaSlow: 1, Mscale: 1, MscaleAllDim: 1}
	rope := mustRope(t, RopeConfig{Dim: 64, Theta: 10000, Scaling: v3, Style: RopeInterleaved})
	got := rope.InvFreq()
	want := yarnRef(64, 10000, 40, 4096, 32, 1)
	for i := range want {
		if d := math.Abs(float64(got[i])-want[i]) / want[i]; d > 1e-6 {
			t.Fatalf("inv_freq[%d] = %g, want %g", i, got[i], want[i])
		}
	}
	// For V3 corr(32) = 10.47 and corr(1) = 22.51, so low 10, high 23: dims below 10 keep
	// theta^(-2i/d) (extrapolate) and dims from 23 are divided by the factor.
	for i := range 32 {
		base := math.Pow(10000, -2*float64(i)/64)
		switch {
		case i <= 10 && math.Abs(float64(got[i])-base)/base > 1e-6:
			t.Fatalf("dim %d should extrapolate: %g vs %g", i, got[i], base)
		case i >= 23 && math.Abs(float64(got[i])-base/40)/(base/40) > 1e-6:
			t.Fatalf("dim %d should interpolate: %g vs %g", i, got[i], base/40)
		}
	}
	if f := rope.AttentionFactor(); f != 1 {
		t.Fatalf("V3 cos/sin mscale = %g, want 1 (mscale == mscale_all_dim)", f)
	}
	if s := SoftmaxScaleYaRN(192, 40, 1); math.Abs(float64(s)-0.13523) > 5e-6 {
		t.Fatalf("V3 softmax scale = %.6f, want ≈ 0.13523", s)
	}
	// Cos/sin carry the mscale: a yarn config without DeepSeek keys uses 0.1·ln(f)+1.
	plain := mustRope(t, RopeConfig{Dim: 64, Theta: 10000, Style: RopeHalf,
		Scaling: RopeScaling{Kind: ScalingYaRN, Factor: 4, OriginalMaxPosition: 32768}})
	if f, want := plain.AttentionFactor(), 0.1*math.Log(4)+1; math.Abs(float64(f)-want) > 1e-6 {
		t.Fatalf("yarn attention factor %g, want %g", f, want)
	}
	x := []float32{1, 0, 0, 0}
	small := mustRope(t, RopeConfig{Dim: 4, Theta: 10000, Style: RopeHalf,
		Scaling: RopeScaling{Kind: ScalingYaRN, Factor: 4, OriginalMaxPosition: 64, AttentionFactor: 2}})
	small.Apply(x, 1, 4, 4, 0, nil) // position 0: cos = 1 scaled by the factor
	if x[0] != 2 {
		t.Fatalf("position 0 with attention factor 2 gives %g, want 2", x[0])
	}
}

func TestRopeLinearScaling(t *testing.T) {
	r := mustRope(t, RopeConfig{Dim: 8, Theta: 10000, Style: RopeHalf, Scaling: RopeScaling{Kind: ScalingLinear, Factor: 4}})
	for i, f := range r.InvFreq() {
		want := math.Pow(10000, -2*float64(i)/8) / 4
		if math.Abs(float64(f)-want)/want > 1e-6 {
			t.Fatalf("inv_freq[%d] = %g, want %g", i, f, want)
		}
	}
}

func TestNewRopeRejects(t *testing.T) {
	for _, cfg := range []RopeConfig{
		{Dim: 3, Theta: 10000, Style: RopeHalf},
		{Dim: 4, Theta: 0, Style: RopeHalf},
		{Dim: 4, Theta: 10000},
		{Dim: 4, Theta: 10000, Style: RopeHalf, Scaling: RopeScaling{Kind: ScalingYaRN, Factor: 4}},
		{Dim: 4, Theta: 10000, Style: RopeHalf, Scaling: RopeScaling{Kind: ScalingLinear}},
	} {
		if _, err := NewRope(cfg); err == nil {
			t.Errorf("NewRope(%+v) accepted", cfg)
		}
	}
}

// Tables grow on demand from several goroutines at once (run with -race) and the result
// matches a single-goroutine rope.
func TestRopeConcurrentGrowth(t *testing.T) {
	r := newRand(6)
	x := randVec(r, 16)
	ref := mustRope(t, RopeConfig{Dim: 16, Theta: 10000, Style: RopeHalf})
	rope := mustRope(t, RopeConfig{Dim: 16, Theta: 10000, Style: RopeHalf})
	var wg sync.WaitGroup
	res := make([][]float32, 8)
	for g := range res {
		wg.Go(func() {
			y := slices.Clone(x)
			rope.Apply(y, 1, 16, 16, 1000*(g+1), nil)
			res[g] = y
		})
	}
	wg.Wait()
	for g, y := range res {
		want := slices.Clone(x)
		ref.Apply(want, 1, 16, 16, 1000*(g+1), nil)
		if !equalBits(y, want) {
			t.Fatalf("goroutine %d differs", g)
		}
	}
}
