package nn

import (
	"math"
	"testing"
)

func mustSampler(t *testing.T, cfg SamplerConfig) *Sampler {
	t.Helper()
	s, err := NewSampler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestGreedyIsArgmax(t *testing.T) {
	r := newRand(30)
	nan := float32(math.NaN())
	cases := [][]float32{
		{1, 3, 2},
		{5, 5, 1},        // tie: lowest id
		{-1, 2, 7, 7, 7}, // tie later: lowest id among them
		{nan, 0.5, 0.25}, // NaN never wins
		randVec(r, 1000), // random
		{float32(math.Inf(-1)), -1e30},
	}
	want := []int32{1, 0, 2, 1, -1, 1}
	for i, l := range cases {
		w := want[i]
		if w == -1 { // reference argmax for the random row
			best := 0
			for j := range l {
				if l[j] > l[best] {
					best = j
				}
			}
			w = int32(best)
		}
		if got := Argmax(l); got != w {
			t.Fatalf("case %d: Argmax = %d, want %d", i, got, w)
		}
		greedy := mustSampler(t, SamplerConfig{})
		topk1 := mustSampler(t, SamplerConfig{Temperature: 1, TopK: 1, Seed: 7})
		if g, k := greedy.Sample(l), topk1.Sample(l); g != w || k != w {
			t.Fatalf("case %d: greedy %d, top-k 1 %d, want %d", i, g, k, w)
		}
	}
}

func TestSamplerSeedReproducible(t *testing.T) {
	r := newRand(31)
	logits := randVec(r, 500)
	for i := range logits {
		logits[i] *= 4
	}
	draw := func(seed uint64) []int32 {
		s := mustSampler(t, SamplerConfig{Temperature: 0.8, TopK: 50, TopP: 0.9, Seed: seed})
		var ids []int32
		for range 200 {
			ids = append(ids, s.Sample(logits))
		}
		return ids
	}
	a, b, c := draw(42), draw(42), draw(43)
	same := true
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("draw %d: %d vs %d with the same seed", i, a[i], b[i])
		}
		same = same && a[i] == c[i]
	}
	if same {
		t.Fatal("seeds 42 and 43 gave identical sequences")
	}
}

// counts draws n tokens.
func counts(t *testing.T, cfg SamplerConfig, logits []float32, n int) []int {
	s := mustSampler(t, cfg)
	c := make([]int, len(logits))
	for range n {
		c[s.Sample(logits)]++
	}
	return c
}

// Top-p keeps the smallest most-likely prefix reaching p: with probabilities 0.5, 0.3,
// 0.15, 0.05 and p = 0.7 that is {0, 1}, drawn in ratio 5:3.
func TestTopPMass(t *testing.T) {
	probs := []float64{0.15, 0.5, 0.05, 0.3} // ids deliberately not in probability order
	logits := make([]float32, len(probs))
	for i, p := range probs {
		logits[i] = float32(math.Log(p))
	}
	const n = 20000
	c := counts(t, SamplerConfig{Temperature: 1, TopP: 0.7, Seed: 1}, logits, n)
	if c[0] != 0 || c[2] != 0 {
		t.Fatalf("tokens outside the nucleus drawn: %v", c)
	}
	// 0.625 expected for id 1; 4.5σ of a binomial over 20000 draws is about 0.015.
	if f := float64(c[1]) / n; math.Abs(f-0.625) > 0.015 {
		t.Fatalf("id 1 drawn %.4f of the time, want 0.625 (%v)", f, c)
	}
	// p = 0.85 reaches into the third token (mass before it 0.8 < 0.85).
	c = counts(t, SamplerConfig{Temperature: 1, TopP: 0.85, Seed: 2}, logits, n)
	if c[2] != 0 || c[0] == 0 {
		t.Fatalf("p 0.85 nucleus wrong: %v", c)
	}
	// No top-p: every token appears in proportion.
	c = counts(t, SamplerConfig{Temperature: 1, Seed: 3}, logits, n)
	for i, p := range probs {
		if f := float64(c[i]) / n; math.Abs(f-p) > 0.015 {
			t.Fatalf("id %d drawn %.4f, want %.2f", i, f, p)
		}
	}
}

func TestTopKAndTemperature(t *testing.T) {
	logits := []float32{1, 4, 2, 4, 3}
	const n = 20000
	// Top-2 under a tie keeps ids 1 and 3 (equal logits), evenly.
	c := counts(t, SamplerConfig{Temperature: 1, TopK: 2, Seed: 4}, logits, n)
	if c[0]+c[2]+c[4] != 0 || math.Abs(float64(c[1])/n-0.5) > 0.015 {
		t.Fatalf("top-2 counts %v", c)
	}
	// Top-3 is ids 1 and 3 (logit 4) and id 4 (logit 3).
	c = counts(t, SamplerConfig{Temperature: 0.5, TopK: 3, Seed: 5}, logits, n)
	if c[0]+c[2] != 0 {
		t.Fatalf("top-3 drew outside {1,3,4}: %v", c)
	}
	// Temperature 0.5 doubles logit gaps: p(4)/p(1) = exp(-2).
	z := 2 + math.Exp(-2)
	if f := float64(c[4]) / n; math.Abs(f-math.Exp(-2)/z) > 0.015 {
		t.Fatalf("id 4 drawn %.4f, want %.4f", f, math.Exp(-2)/z)
	}
}

// The whole-vocabulary path (no top-k, no top-p) never draws −∞ or NaN and scales by
// temperature: at 0.5, probabilities 0.25 and 0.75 become 1:9.
func TestSampleWholeVocabulary(t *testing.T) {
	inf := float32(math.Inf(-1))
	logits := []float32{inf, float32(math.NaN()), float32(math.Log(0.25)), float32(math.Log(0.75))}
	const n = 20000
	c := counts(t, SamplerConfig{Temperature: 0.5, Seed: 6}, logits, n)
	if c[0]+c[1] != 0 || math.Abs(float64(c[2])/n-0.1) > 0.01 {
		t.Fatalf("counts %v, want 0, 0, ~2000, ~18000", c)
	}
	if got := mustSampler(t, SamplerConfig{Temperature: 1}).Sample([]float32{inf, inf, inf}); got != 0 {
		t.Fatalf("all −∞ gave %d, want 0", got)
	}
}

func TestSamplerRejects(t *testing.T) {
	for _, cfg := range []SamplerConfig{{TopK: -1}, {TopP: -0.5}, {TopP: float32(math.NaN())}} {
		if _, err := NewSampler(cfg); err == nil {
			t.Errorf("NewSampler(%+v) accepted", cfg)
		}
	}
	if got := mustSampler(t, SamplerConfig{Temperature: 1}).Sample(nil); got != -1 {
		t.Fatalf("empty logits gave %d", got)
	}
}

func TestLogSoftmax(t *testing.T) {
	r := newRand(32)
	x := randVec(r, 1000)
	for i := range x {
		x[i] = x[i]*30 + 100 // large offset: needs the max subtraction
	}
	out := make([]float32, len(x))
	LogSoftmax(out, x)
	var z float64
	for _, v := range x {
		z += math.Exp(float64(v) - 100)
	}
	want := make([]float64, len(x))
	for i, v := range x {
		want[i] = float64(v) - 100 - math.Log(z)
	}
	closeVec(t, "logsoftmax", out, want, tolF32)
	var mass float64
	for _, v := range out {
		mass += math.Exp(float64(v))
	}
	if math.Abs(mass-1) > 1e-5 {
		t.Fatalf("exp(log-softmax) sums to %g", mass)
	}
}
