package synth

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"

	"github.com/moemesh/moemesh/model"
)

// Skewed routing (Options.Skew). A random gate routes about uniformly; load-aware
// placement needs a model whose experts are not equally popular. The only per-expert knob
// a checkpoint has that does not depend on the input is a selection bias (DeepSeek-V3's
// e_score_correction_bias): gate logits of zero-mean inputs are symmetric, so without a
// bias no expert can be chosen by more than half the tokens whatever the gate weights.
// The bias is fitted per layer so that the selection frequency of the expert of
// popularity rank r (1-based) is min(1, c·r^-s), with c such that the frequencies sum to
// top-k — Zipf(s), capped where an expert would have to be chosen by more than every
// token. Ranks are a per-layer permutation of the experts, so hot experts differ by layer.

const (
	maxSkew     = 8
	skewSamples = 2048 // hidden states the bias is fitted on, per layer
	skewIters   = 200
	skewTol     = 0.004 // stop once every frequency is this close to its target
	biasLimit   = 3     // sigmoid scores lie in (0, 1): ±3 already forces or forbids
)

// ZipfTargets are the selection frequencies (fraction of tokens choosing the expert) by
// popularity rank for experts experts, topK chosen per token and exponent s: min(1, c·r^-s)
// summing to topK. s = 0 gives topK/experts for all.
func ZipfTargets(experts, topK int, s float64) []float64 {
	f := make([]float64, experts)
	sum := func(c float64) float64 {
		t := 0.0
		for r := range f {
			t += math.Min(1, c*math.Pow(float64(r+1), -s))
		}
		return t
	}
	// sum is increasing in c; bisect on [0, hi] with hi large enough to saturate topK.
	lo, hi := 0.0, 1.0
	for sum(hi) < float64(topK) && hi < 1e12 {
		hi *= 2
	}
	for range 100 {
		mid := (lo + hi) / 2
		if sum(mid) < float64(topK) {
			lo = mid
		} else {
			hi = mid
		}
	}
	for r := range f {
		f[r] = math.Min(1, hi*math.Pow(float64(r+1), -s))
	}
	return f
}

// SkewRanks is the popularity order Options.Skew gives MoE layer layer: element r is the
// expert of rank r+1 (the hottest first). It depends on the seed and the layer only.
func SkewRanks(seed int64, layer, experts int) []int {
	rng := rand.New(rand.NewPCG(uint64(seed), fnv64("skew-ranks."+strconv.Itoa(layer))))
	return rng.Perm(experts)
}

// applySkew replaces the random e_score_correction_bias of every MoE layer in p with one
// fitted to Zipf(o.Skew) routing over cfg's gate (see the top of this file).
func applySkew(p *plan, cfg *model.Config, o Options, f32 bool) error {
	if o.Skew == 0 {
		return nil
	}
	spec := cfg.GateSpec()
	byName := map[string]int{}
	for i, s := range p.specs {
		byName[s.name] = i
	}
	for _, l := range cfg.MoELayers() {
		bias, _, _ := cfg.RouterTensorNames(l)
		bi, ok := byName[bias]
		gi, gok := byName[cfg.GateTensorName(l)]
		if bias == "" || !ok || !gok {
			return fmt.Errorf("%w: skew needs a gate bias tensor, %s layer %d has none", ErrOptions, cfg.Arch, l)
		}
		w := tensorF32(p.specs[gi].tensor(o.Seed, f32).Data, p.specs[gi].f32(f32))
		b, err := fitSkewBias(spec, w, cfg.Hidden, o.Skew, o.Seed, l)
		if err != nil {
			return err
		}
		p.specs[bi].values = b
	}
	return nil
}

// fitSkewBias fits the selection bias of one layer with gate weights w ([experts, hidden]):
// route fixed random hidden states, move each expert's bias by the gap between its target
// and observed frequency, with a shrinking step, until every gap is within skewTol.
func fitSkewBias(spec model.GateSpec, w []float32, hidden int, s float64, seed int64, layer int) ([]float32, error) {
	e := spec.Experts
	rng := rand.New(rand.NewPCG(uint64(seed), fnv64("skew-samples."+strconv.Itoa(layer))))
	logits := make([]float32, skewSamples*e)
	x := make([]float32, hidden)
	for t := range skewSamples {
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		for j := range e {
			var acc float32
			for i, v := range w[j*hidden : (j+1)*hidden] {
				acc += v * x[i]
			}
			logits[t*e+j] = acc
		}
	}
	target := make([]float64, e)
	for r, ex := range SkewRanks(seed, layer, e) {
		target[ex] = ZipfTargets(e, spec.TopK, s)[r]
	}
	bias := make([]float32, e)
	g := model.Gate{Spec: spec}
	var rt model.Routing
	counts := make([]float64, e)
	step := 0.5
	for range skewIters {
		g.Spec.Bias = bias
		if err := g.Route(logits, skewSamples, nil, &rt); err != nil {
			return nil, fmt.Errorf("synth: fitting the skew of layer %d: %w", layer, err)
		}
		clear(counts)
		for _, ex := range rt.Experts {
			counts[ex]++
		}
		worst, mean := 0.0, 0.0
		next := make([]float64, e)
		for j := range bias {
			gap := target[j] - counts[j]/skewSamples
			if target[j] < 1 { // a saturated expert only needs to stay chosen
				worst = math.Max(worst, math.Abs(gap))
			}
			next[j] = float64(bias[j]) + step*gap
			mean += next[j] / float64(e)
		}
		// Selection depends on bias differences only (group scores too: each is a sum of
		// two), so keep the mean at 0 rather than letting all biases drift into the clamp.
		for j := range bias {
			bias[j] = float32(min(biasLimit, max(-biasLimit, next[j]-mean)))
		}
		if worst < skewTol {
			break
		}
		step = max(0.05, step*0.98)
	}
	return slices.Clone(bias), nil
}

// tensorF32 decodes a generated tensor's little-endian bf16 or f32 bytes.
func tensorF32(b []byte, isF32 bool) []float32 {
	if isF32 {
		out := make([]float32, len(b)/4)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		return out
	}
	out := make([]float32, len(b)/2)
	for i := range out {
		out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
	}
	return out
}
