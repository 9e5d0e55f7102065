package nn

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
)

// RopeStyle is how a head's rope slice is split into rotated pairs.
type RopeStyle uint8

const (
	// RopeHalf rotates pairs (x_i, x_{i+d/2}) — HF rotate_half (Llama, Mixtral, Qwen, OLMoE,
	// Granite) — on the first ropeDim dims of each head (all of it unless partial rotary).
	RopeHalf RopeStyle = iota + 1
	// RopeInterleaved rotates adjacent pairs (x_{2i}, x_{2i+1}) — DeepSeek's complex view
	// — on the last ropeDim dims of each head, where DeepSeek keeps q_pe/k_pe. HF's
	// rope_interleave port de-interleaves first and rotates halves; that permutes q and k
	// alike, so scores are the same, but we keep the official (unpermuted) layout.
	RopeInterleaved
)

// ScalingKind selects a rope_scaling type.
type ScalingKind uint8

const (
	ScalingNone   ScalingKind = iota // plain theta^(-2i/d)
	ScalingLinear                    // inv_freq / factor (position interpolation)
	ScalingYaRN                      // YaRN ramp between interpolation and extrapolation
)

// RopeScaling is config.json's rope_scaling (or rope_parameters).
type RopeScaling struct {
	Kind   ScalingKind
	Factor float64
	// OriginalMaxPosition is original_max_position_embeddings (YaRN only).
	OriginalMaxPosition int
	// BetaFast and BetaSlow default to 32 and 1 when zero, as in HF.
	BetaFast, BetaSlow float64
	// Mscale and MscaleAllDim are DeepSeek's keys; zero means absent.
	Mscale, MscaleAllDim float64
	// AttentionFactor overrides the cos/sin multiplier when non-zero (HF attention_factor).
	AttentionFactor float64
}

// RopeConfig builds a Rope.
type RopeConfig struct {
	// Dim is the number of rotated dims per head (head_dim, or qk_rope_head_dim for
	// DeepSeek); even.
	Dim     int
	Theta   float64
	Scaling RopeScaling
	Style   RopeStyle
}

// Rope applies rotary position embeddings. It precomputes cos/sin for positions up to
// the largest one seen so far and grows the tables on demand. It is safe for concurrent
// use: tables are immutable once published, and growth is serialised by a mutex.
type Rope struct {
	dim     int
	style   RopeStyle
	invFreq []float32
	mscale  float32 // multiplies cos and sin (YaRN attention factor)

	grow sync.Mutex
	tab  atomic.Pointer[ropeTable]
}

// ropeTable holds cos and sin of pos·invFreq[i]·mscale at [pos·dim/2 + i].
type ropeTable struct {
	n        int
	cos, sin []float32
}

// NewRope validates cfg and computes the inverse frequencies.
func NewRope(cfg RopeConfig) (*Rope, error) {
	if cfg.Dim <= 0 || cfg.Dim%2 != 0 {
		return nil, fmt.Errorf("%w: rope dim %d is not positive and even", ErrInvalid, cfg.Dim)
	}
	if !(cfg.Theta > 1) {
		return nil, fmt.Errorf("%w: rope theta %g must be > 1", ErrInvalid, cfg.Theta)
	}
	if cfg.Style != RopeHalf && cfg.Style != RopeInterleaved {
		return nil, fmt.Errorf("%w: rope style %d", ErrInvalid, cfg.Style)
	}
	inv, ms, err := invFreq(cfg)
	if err != nil {
		return nil, err
	}
	r := &Rope{dim: cfg.Dim, style: cfg.Style, invFreq: inv, mscale: float32(ms)}
	r.tab.Store(&ropeTable{})
	return r, nil
}

// YaRNMscale is HF/DeepSeek's yarn_get_mscale: 0.1·m·ln(factor) + 1, or 1 when factor <= 1.
func YaRNMscale(factor, m float64) float64 {
	if factor <= 1 {
		return 1
	}
	return 0.1*m*math.Log(factor) + 1
}

// SoftmaxScaleYaRN is DeepSeek's attention scale with YaRN: qkHeadDim^-0.5 ·
// YaRNMscale(factor, mscaleAllDim)². DeepSeek-V3 (192, 40, 1.0) gives ≈ 0.13523. With
// mscaleAllDim zero (absent) it is plain qkHeadDim^-0.5, as HF skips the correction then.
func SoftmaxScaleYaRN(qkHeadDim int, factor, mscaleAllDim float64) float32 {
	s := 1 / math.Sqrt(float64(qkHeadDim))
	if mscaleAllDim != 0 {
		m := YaRNMscale(factor, mscaleAllDim)
		s *= m * m
	}
	return float32(s)
}

// invFreq returns inv_freq (HF's _compute_*_parameters) and the cos/sin multiplier. It
// is computed in f64 and rounded once to f32, within a few ulp of HF's all-f32 version.
func invFreq(cfg RopeConfig) ([]float32, float64, error) {
	d, half := cfg.Dim, cfg.Dim/2
	base := make([]float64, half)
	for i := range base {
		base[i] = 1 / math.Pow(cfg.Theta, float64(2*i)/float64(d))
	}
	sc := cfg.Scaling
	mscale := 1.0
	switch sc.Kind {
	case ScalingNone:
	case ScalingLinear:
		if !(sc.Factor > 0) {
			return nil, 0, fmt.Errorf("%w: linear rope factor %g", ErrInvalid, sc.Factor)
		}
		for i := range base {
			base[i] /= sc.Factor
		}
	case ScalingYaRN:
		if !(sc.Factor > 0) || sc.OriginalMaxPosition <= 0 {
			return nil, 0, fmt.Errorf("%w: yarn factor %g, original_max_position_embeddings %d",
				ErrInvalid, sc.Factor, sc.OriginalMaxPosition)
		}
		fast, slow := sc.BetaFast, sc.BetaSlow
		if fast == 0 {
			fast = 32
		}
		if slow == 0 {
			slow = 1
		}
		// corr(n) is the dim index whose wavelength makes n rotations over the original
		// context; below low frequencies extrapolate, above high they interpolate.
		corr := func(n float64) float64 {
			return float64(d) * math.Log(float64(sc.OriginalMaxPosition)/(2*math.Pi*n)) / (2 * math.Log(cfg.Theta))
		}
		low := max(math.Floor(corr(fast)), 0)
		high := min(math.Ceil(corr(slow)), float64(d-1))
		if low == high {
			high += 0.001
		}
		for i := range base {
			ramp := min(max((float64(i)-low)/(high-low), 0), 1)
			base[i] = base[i]/sc.Factor*ramp + base[i]*(1-ramp)
		}
		switch {
		case sc.AttentionFactor != 0:
			mscale = sc.AttentionFactor
		case sc.Mscale != 0 && sc.MscaleAllDim != 0:
			mscale = YaRNMscale(sc.Factor, sc.Mscale) / YaRNMscale(sc.Factor, sc.MscaleAllDim)
		default:
			mscale = YaRNMscale(sc.Factor, 1)
		}
	default:
		return nil, 0, fmt.Errorf("%w: rope scaling kind %d", ErrInvalid, sc.Kind)
	}
	if sc.Kind != ScalingYaRN && sc.AttentionFactor != 0 {
		mscale = sc.AttentionFactor
	}
	out := make([]float32, half)
	for i, v := range base {
		out[i] = float32(v)
	}
	return out, mscale, nil
}

// Dim is the number of rotated dims per head.
func (r *Rope) Dim() int { return r.dim }

// InvFreq returns a copy of the inverse frequencies (Dim/2 values).
func (r *Rope) InvFreq() []float32 { return append([]float32(nil), r.invFreq...) }

// AttentionFactor is the multiplier on cos and sin (1 unless YaRN).
func (r *Rope) AttentionFactor() float32 { return r.mscale }

// table returns tables covering positions [0, n).
func (r *Rope) table(n int) *ropeTable {
	if t := r.tab.Load(); t.n >= n {
		return t
	}
	r.grow.Lock()
	defer r.grow.Unlock()
	old := r.tab.Load()
	if old.n >= n {
		return old
	}
	// Doubling keeps growth amortised during decode; 256 avoids tiny first tables.
	size := max(n, 2*old.n, 256)
	half := r.dim / 2
	t := &ropeTable{n: size, cos: make([]float32, size*half), sin: make([]float32, size*half)}
	copy(t.cos, old.cos)
	copy(t.sin, old.sin)
	for p := old.n; p < size; p++ {
		for i, f := range r.invFreq {
			// HF forms the angle as an f32 product (position_ids.float() @ inv_freq); at long
			// positions its rounding is visible, so we round the same way before cos/sin.
			a := float64(float32(p) * f)
			t.cos[p*half+i] = float32(math.Cos(a) * float64(r.mscale))
			t.sin[p*half+i] = float32(math.Sin(a) * float64(r.mscale))
		}
	}
	r.tab.Store(t)
	return t
}

// Apply rotates x [T, heads·headDim] in place. Token t is at position offset+t, or at
// offset+positions[t] when positions is non-nil (len T). ropeDim must equal Dim: the
// first ropeDim dims of each head rotate for RopeHalf, the last ropeDim for
// RopeInterleaved. Products are rounded to f32 before they are added (no fused
// multiply-add), as torch computes q·cos + rotate_half(q)·sin. It panics on
// inconsistent shapes or a negative position (caller bugs).
func (r *Rope) Apply(x []float32, heads, headDim, ropeDim, offset int, positions []int32) {
	r.apply(x, heads, headDim, ropeDim, offset, positions, 1)
}

// ApplyInverse rotates by −position: DeepSeek-V4 de-rotates the rope slice of its
// attention output this way. Arguments are as for Apply.
func (r *Rope) ApplyInverse(x []float32, heads, headDim, ropeDim, offset int, positions []int32) {
	r.apply(x, heads, headDim, ropeDim, offset, positions, -1)
}

func (r *Rope) apply(x []float32, heads, headDim, ropeDim, offset int, positions []int32, sign float32) {
	if ropeDim != r.dim || heads <= 0 || headDim < ropeDim || len(x)%(heads*headDim) != 0 {
		panic(fmt.Sprintf("nn.Rope.Apply: %d values as heads %d × headDim %d with ropeDim %d (rope built for %d)",
			len(x), heads, headDim, ropeDim, r.dim))
	}
	T := len(x) / (heads * headDim)
	if positions != nil && len(positions) != T {
		panic(fmt.Sprintf("nn.Rope.Apply: %d positions for %d tokens", len(positions), T))
	}
	pos := func(t int) int {
		if positions != nil {
			return offset + int(positions[t])
		}
		return offset + t
	}
	maxPos := -1
	for t := range T {
		p := pos(t)
		if p < 0 {
			panic(fmt.Sprintf("nn.Rope.Apply: token %d at negative position %d", t, p))
		}
		maxPos = max(maxPos, p)
	}
	if T == 0 {
		return
	}
	tab := r.table(maxPos + 1)
	half := r.dim / 2
	for t := range T {
		p := pos(t)
		cs, sn := tab.cos[p*half:(p+1)*half], tab.sin[p*half:(p+1)*half]
		for h := range heads {
			head := x[(t*heads+h)*headDim : (t*heads+h+1)*headDim]
			if r.style == RopeHalf {
				lo, hi := head[:half], head[half:r.dim]
				for i := range half {
					c, s := cs[i], sign*sn[i]
					a, b := lo[i], hi[i]
					lo[i] = float32(a*c) - float32(b*s)
					hi[i] = float32(b*c) + float32(a*s)
				}
				continue
			}
			sl := head[headDim-r.dim:]
			for i := range half {
				c, s := cs[i], sign*sn[i]
				a, b := sl[2*i], sl[2*i+1]
				sl[2*i] = float32(a*c) - float32(b*s)
				sl[2*i+1] = float32(b*c) + float32(a*s)
			}
		}
	}
}
