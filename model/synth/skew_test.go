package synth

import (
	"errors"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/safetensors"
)

func TestZipfTargets(t *testing.T) {
	for _, c := range []struct {
		name          string
		experts, topK int
		s             float64
		saturated     int // leading ranks at frequency 1
	}{
		{"uniform", 16, 4, 0, 0},
		{"top-2 of 16 fits", 16, 2, 1.2, 0},
		{"top-4 of 16 caps the hottest", 16, 4, 1.2, 1},
		{"steep", 8, 4, 3, 3},
		{"all chosen", 4, 4, 1.2, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := ZipfTargets(c.experts, c.topK, c.s)
			sum, sat := 0.0, 0
			for r, v := range f {
				sum += v
				if v > 1-1e-9 {
					sat++
				}
				if r > 0 && v > f[r-1]+1e-12 {
					t.Errorf("rank %d: %g above rank %d's %g", r+1, v, r, f[r-1])
				}
				// Below the cap, neighbouring ranks keep the Zipf ratio.
				if r > 0 && f[r-1] < 1-1e-9 {
					want := math.Pow(float64(r)/float64(r+1), c.s)
					if got := v / f[r-1]; math.Abs(got-want) > 1e-9 {
						t.Errorf("rank %d/%d ratio %g, want %g", r+1, r, got, want)
					}
				}
			}
			if math.Abs(sum-float64(c.topK)) > 1e-6 {
				t.Errorf("frequencies sum to %g, want %d", sum, c.topK)
			}
			if sat != c.saturated {
				t.Errorf("%d saturated ranks, want %d: %v", sat, c.saturated, f)
			}
		})
	}
}

// A skewed checkpoint routes random hidden states (fresh ones, not those the bias was
// fitted on) with Zipf popularity: the log-log rank-frequency slope of the unsaturated
// ranks is -s, every expert is near its target, and the hot experts differ by layer.
func TestSkewRoutesZipf(t *testing.T) {
	for _, c := range []struct {
		name    string
		o       Options
		slopeTo float64
	}{
		{"top-4 of 16 (groups turned off)", Options{Arch: "deepseek_v3", Seed: 3, Skew: 1.2}, 0.15},
		{"top-2 of 16, f32", Options{Arch: "deepseek_v3", Seed: 4, Skew: 1.2, TopK: 2, DType: "f32", Layers: 4}, 0.15},
		{"steeper", Options{Arch: "deepseek_v3", Seed: 5, Skew: 2, TopK: 2}, 0.2},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ck")
			cfg, err := Write(dir, c.o)
			if err != nil {
				t.Fatal(err)
			}
			ck, err := safetensors.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			if cfg.Groups > 1 {
				t.Errorf("skewed checkpoint routes in %d groups, want ungrouped", cfg.Groups)
			}
			var hottest []int
			for _, l := range cfg.MoELayers() {
				freq := routeFrequencies(t, ck, cfg, l, 8192)
				ranks := SkewRanks(c.o.Seed, l, cfg.Experts)
				target := ZipfTargets(cfg.Experts, cfg.TopK, c.o.Skew)
				var xs, ys []float64
				for r, e := range ranks {
					if math.Abs(freq[e]-target[r]) > 0.03 {
						t.Errorf("layer %d rank %d (expert %d): frequency %.3f, target %.3f", l, r+1, e, freq[e], target[r])
					}
					if target[r] < 0.95 {
						xs, ys = append(xs, math.Log(float64(r+1))), append(ys, math.Log(freq[e]))
					}
				}
				slope := fitSlope(xs, ys)
				t.Logf("layer %d: hottest expert %d at %.3f of tokens, slope %.3f over %d ranks", l, ranks[0], freq[ranks[0]], slope, len(xs))
				if math.Abs(slope+c.o.Skew) > c.slopeTo {
					t.Errorf("layer %d: rank-frequency slope %.3f, want %.2f ± %.2f", l, slope, -c.o.Skew, c.slopeTo)
				}
				hottest = append(hottest, ranks[0])
			}
			if len(hottest) > 2 && len(slices.Compact(slices.Sorted(slices.Values(hottest)))) == 1 {
				t.Errorf("every layer has the same hottest expert %d", hottest[0])
			}
		})
	}
}

// Without Skew, the same options give a bias that is not fitted (the random one).
func TestSkewZeroKeepsRandomBias(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ck")
	cfg, err := Write(dir, Options{Arch: "deepseek_v3", Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	ck, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	l := cfg.MoELayers()[0]
	freq := routeFrequencies(t, ck, cfg, l, 4096)
	hi := slices.Max(freq)
	if hi > 0.6 {
		t.Errorf("unskewed model: an expert is chosen by %.2f of tokens", hi)
	}
}

func TestSkewBadOptions(t *testing.T) {
	for _, o := range []Options{
		{Arch: "qwen3_moe", Skew: 1.2},
		{Arch: "mixtral", Skew: 1},
		{Arch: "deepseek_v3", Skew: -1},
		{Arch: "deepseek_v3", Skew: math.NaN()},
		{Arch: "deepseek_v3", Skew: 100},
	} {
		if _, err := Write(filepath.Join(t.TempDir(), "ck"), o); !errors.Is(err, ErrOptions) {
			t.Errorf("%s skew %g: %v, want ErrOptions", o.Arch, o.Skew, err)
		}
	}
}

// routeFrequencies routes n standard-normal hidden states through layer l's gate as the
// checkpoint stores it and returns the fraction of tokens choosing each expert.
func routeFrequencies(t *testing.T, ck *safetensors.Checkpoint, cfg *model.Config, l, n int) []float64 {
	t.Helper()
	gate, bias, _, err := cfg.GateRefs(ck, l)
	if err != nil {
		t.Fatal(err)
	}
	w, err := ck.F32(gate.Name)
	if err != nil {
		t.Fatal(err)
	}
	spec := cfg.GateSpec()
	if bias != nil {
		if spec.Bias, err = ck.F32(bias.Name); err != nil {
			t.Fatal(err)
		}
	}
	e, h := cfg.Experts, cfg.Hidden
	rng := rand.New(rand.NewPCG(99, uint64(l)))
	logits := make([]float32, n*e)
	x := make([]float64, h)
	for tk := range n {
		for i := range x {
			x[i] = rng.NormFloat64()
		}
		for j := range e {
			acc := 0.0
			for i, v := range w[j*h : (j+1)*h] {
				acc += float64(v) * x[i]
			}
			logits[tk*e+j] = float32(acc)
		}
	}
	var r model.Routing
	if err := spec.Route(logits, n, nil, &r); err != nil {
		t.Fatal(err)
	}
	freq := make([]float64, e)
	for _, ex := range r.Experts {
		freq[ex] += 1 / float64(n)
	}
	return freq
}

// fitSlope is the least-squares slope of ys over xs.
func fitSlope(xs, ys []float64) float64 {
	var mx, my float64
	for i := range xs {
		mx, my = mx+xs[i], my+ys[i]
	}
	mx, my = mx/float64(len(xs)), my/float64(len(ys))
	var num, den float64
	for i := range xs {
		num += (xs[i] - mx) * (ys[i] - my)
		den += (xs[i] - mx) * (xs[i] - mx)
	}
	return num / den
}
