package nn

import (
	"cmp"
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

func float32frombits(b uint32) float32 { return math.Float32frombits(b) }

// SamplerConfig sets a Sampler's decoding rule, applied in HF's warper order:
// temperature, then top-k, then top-p.
type SamplerConfig struct {
	// Temperature <= 0 is greedy decoding (argmax, lowest id on ties).
	Temperature float32
	// TopK > 0 keeps the K most likely tokens; 1 is greedy.
	TopK int
	// TopP in (0, 1) keeps the smallest most-likely prefix whose mass reaches TopP; 0 or
	// >= 1 disables it.
	TopP float32
	// Seed fixes the random stream: equal seeds and logits give equal tokens.
	Seed uint64
}

// Sampler draws tokens from logits. It holds a PCG stream and scratch space, so it is for
// one sequence and one goroutine at a time.
type Sampler struct {
	cfg  SamplerConfig
	rng  *rand.Rand
	cand []cand
	w    []float64 // sampleAll's weights
}

// cand is one candidate token with its logit (after temperature) and weight.
type cand struct {
	id    int32
	logit float32
	p     float64
}

// better orders candidates by logit descending, then id ascending: the stable tie-break.
func better(a, b cand) int {
	if c := cmp.Compare(b.logit, a.logit); c != 0 {
		return c
	}
	return cmp.Compare(a.id, b.id)
}

// NewSampler makes a sampler; it fails on a negative TopK or a NaN or negative TopP.
func NewSampler(cfg SamplerConfig) (*Sampler, error) {
	if cfg.TopK < 0 || !(cfg.TopP >= 0) || math.IsNaN(float64(cfg.Temperature)) {
		return nil, fmt.Errorf("%w: sampler temperature %g, top-k %d, top-p %g", ErrInvalid, cfg.Temperature, cfg.TopK, cfg.TopP)
	}
	// The second PCG word is a fixed odd constant so one seed picks one stream.
	return &Sampler{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x9e3779b97f4a7c15))}, nil
}

// Sample returns a token id for logits (one vocabulary row). NaN logits count as −∞; it
// returns -1 for empty logits.
func (s *Sampler) Sample(logits []float32) int32 {
	if len(logits) == 0 {
		return -1
	}
	if s.cfg.Temperature <= 0 || s.cfg.TopK == 1 {
		return Argmax(logits)
	}
	t := s.cfg.Temperature // divided, not multiplied by 1/t, to round as HF does
	if k, p := s.cfg.TopK, s.cfg.TopP; (k == 0 || k >= len(logits)) && !(p > 0 && p < 1) {
		return s.sampleAll(logits, t)
	}
	c := s.cand[:0]
	if k := s.cfg.TopK; k > 0 && k < len(logits) {
		// Keep the k best in a min-heap (worst at the root): O(V log k) instead of a sort.
		h := candHeap(c)
		for i, l := range logits {
			x := cand{id: int32(i), logit: clean(l) / t}
			if len(h) < k {
				heap.Push(&h, x)
			} else if better(x, h[0]) < 0 {
				h[0] = x
				heap.Fix(&h, 0)
			}
		}
		c = h
	} else {
		for i, l := range logits {
			c = append(c, cand{id: int32(i), logit: clean(l) / t})
		}
	}
	slices.SortFunc(c, better)
	s.cand = c
	// Softmax over the candidates in f64; c[0] holds the max.
	var z float64
	for i := range c {
		c[i].p = math.Exp(float64(c[i].logit - c[0].logit))
		z += c[i].p
	}
	if !(z > 0) || math.IsInf(float64(c[0].logit), -1) {
		return c[0].id // every logit −∞ (or NaN): fall back to the lowest id among them
	}
	keep := len(c)
	if p := float64(s.cfg.TopP); p > 0 && p < 1 {
		// Token i stays iff the mass before it is below p, so the first always stays.
		var cum float64
		for i := range c {
			if cum >= p*z {
				keep = i
				break
			}
			cum += c[i].p
		}
	}
	var total float64
	for _, x := range c[:keep] {
		total += x.p
	}
	u := s.rng.Float64() * total
	for _, x := range c[:keep] {
		u -= x.p
		if u < 0 {
			return x.id
		}
	}
	return c[keep-1].id // u landed on total through rounding
}

// sampleAll draws from the whole vocabulary. Without top-k or top-p no order is needed,
// so it walks ids in index order instead of sorting: sorting the vocabulary every token
// was a sixth of a loaded router's CPU.
func (s *Sampler) sampleAll(logits []float32, t float32) int32 {
	best := Argmax(logits)
	m := clean(logits[best]) / t
	if math.IsInf(float64(m), -1) {
		return best // every logit −∞ (or NaN)
	}
	w := slices.Grow(s.w[:0], len(logits))[:len(logits)]
	s.w = w
	var z float64
	for i, l := range logits {
		w[i] = math.Exp(float64(clean(l)/t - m))
		z += w[i]
	}
	u := s.rng.Float64() * z
	for i, x := range w {
		u -= x
		if u < 0 {
			return int32(i)
		}
	}
	return best // u landed on z through rounding
}

// clean maps NaN to −∞ so it never wins and never poisons a sum.
func clean(x float32) float32 {
	if x != x {
		return float32(math.Inf(-1))
	}
	return x
}

// candHeap is a min-heap under better: the root is the worst kept candidate.
type candHeap []cand

func (h candHeap) Len() int           { return len(h) }
func (h candHeap) Less(i, j int) bool { return better(h[i], h[j]) > 0 }
func (h candHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *candHeap) Push(x any)        { *h = append(*h, x.(cand)) }
func (h *candHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Argmax is the index of the largest logit, the lowest index on ties; NaN never wins
// unless every value is NaN (then 0). It returns -1 for empty logits.
func Argmax(logits []float32) int32 {
	if len(logits) == 0 {
		return -1
	}
	best := 0
	bv := clean(logits[0])
	for i, v := range logits[1:] {
		if v > bv {
			best, bv = i+1, v
		}
	}
	return int32(best)
}

// LogSoftmax writes log(softmax(logits)) to out (may alias logits): m = max, Z = Σ
// exp(x−m) summed in f64 in increasing index, out = x − m − log Z rounded to f32.
func LogSoftmax(out, logits []float32) {
	if len(out) != len(logits) {
		panic(fmt.Sprintf("nn.LogSoftmax: out has %d values, logits %d", len(out), len(logits)))
	}
	if len(logits) == 0 {
		return
	}
	m := math.Inf(-1)
	for _, v := range logits {
		m = max(m, float64(v))
	}
	var z float64
	for _, v := range logits {
		z += math.Exp(float64(v) - m)
	}
	lz := m + math.Log(z)
	for i, v := range logits {
		out[i] = float32(float64(v) - lz)
	}
}
