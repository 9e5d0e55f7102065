package deepseek4

import (
	"fmt"
	"math"
)

// mHC, the manifold-constrained hyper-connections that replace V4's residual h + f(h):
// the residual is hc parallel streams X [hc, D] (the embedding copied hc times), and each
// sublayer (attention, MoE) reads a learned mix of them and writes back through another
// (model.py Block.hc_pre / hc_post, kernel.py hc_split_sinkhorn). Per token:
//
//	x̂ = X flattened (hc·D), m = (fn · x̂) · rsqrt(mean(x̂²) + rms_norm_eps)   (mix values)
//	pre, post, comb = SplitSinkhorn(m, scale, base)
//	u = Σ_j pre_j X_j         → attn_norm/ffn_norm → sublayer → f
//	X'_j = post_j · f + Σ_i comb[i, j] · X_i
//
// Sums run in index order in float64; results are rounded to float32 once.

// Mix holds one token's split mix values.
type Mix struct {
	Pre, Post []float32 // [hc]
	Comb      []float32 // [hc, hc] row-major: Comb[i*hc+j] feeds stream i into stream j
}

// SplitSinkhorn is kernel.py hc_split_sinkhorn for one token: mixes has (2+hc)·hc values,
// scale 3 (pre, post, comb), base (2+hc)·hc.
//
//	pre  = sigmoid(m[:hc]·scale0 + base[:hc]) + eps
//	post = 2·sigmoid(m[hc:2hc]·scale1 + base[hc:2hc])
//	comb = row-softmax(m[2hc:]·scale2 + base[2hc:]) + eps, then divide each column by
//	       (its sum + eps), then iters−1 times: rows by (sum + eps), columns by (sum + eps).
//
// So comb ends on a column normalisation: each column sums to ~1 (each output stream is
// a convex mix of the inputs), rows only approximately.
func SplitSinkhorn(mixes, scale, base []float32, hc, iters int, eps float64) (Mix, error) {
	mw := (2 + hc) * hc
	if hc < 1 || iters < 1 || len(mixes) != mw || len(base) != mw || len(scale) != 3 {
		return Mix{}, fmt.Errorf("%w: hc split: hc %d, iters %d, %d mixes, %d base, %d scale (want %d, %d, 3)",
			ErrShape, hc, iters, len(mixes), len(base), len(scale), mw, mw)
	}
	sig := func(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
	m := Mix{Pre: make([]float32, hc), Post: make([]float32, hc), Comb: make([]float32, hc*hc)}
	for j := range hc {
		m.Pre[j] = float32(sig(float64(mixes[j])*float64(scale[0])+float64(base[j])) + eps)
		m.Post[j] = float32(2 * sig(float64(mixes[hc+j])*float64(scale[1])+float64(base[hc+j])))
	}
	c := make([]float64, hc*hc)
	for i := range hc {
		row := c[i*hc : (i+1)*hc]
		mx := math.Inf(-1)
		for j := range row {
			row[j] = float64(mixes[2*hc+i*hc+j])*float64(scale[2]) + float64(base[2*hc+i*hc+j])
			mx = max(mx, row[j])
		}
		sum := 0.0
		for j := range row {
			row[j] = math.Exp(row[j] - mx)
			sum += row[j]
		}
		for j := range row {
			row[j] = row[j]/sum + eps
		}
	}
	normCols := func() {
		for j := range hc {
			sum := 0.0
			for i := range hc {
				sum += c[i*hc+j]
			}
			for i := range hc {
				c[i*hc+j] /= sum + eps
			}
		}
	}
	normCols()
	for range iters - 1 {
		for i := range hc {
			row := c[i*hc : (i+1)*hc]
			sum := 0.0
			for _, v := range row {
				sum += v
			}
			for j := range row {
				row[j] /= sum + eps
			}
		}
		normCols()
	}
	for i, v := range c {
		m.Comb[i] = float32(v)
	}
	return m, nil
}

// HC is one sublayer's (or the head's) mixing parameters: hc_attn_* / hc_ffn_* of a layer
// (Fn [(2+hc)·hc, hc·D], Base [(2+hc)·hc], Scale [3]) or hc_head_* (Fn [hc, hc·D],
// Base [hc], Scale [1]).
type HC struct {
	Fn, Base, Scale []float32
	Mult, Iters     int     // hc_mult, hc_sinkhorn_iters
	NormEps, Eps    float64 // rms_norm_eps (for the rsqrt of x̂), hc_eps
}

// mixValues returns (fn · x̂) · rsqrt(mean(x̂²) + NormEps) for the rows of fn.
func (h HC) mixValues(x []float32, rows int) ([]float32, error) {
	if len(x) == 0 || len(x)%h.Mult != 0 || len(h.Fn) != rows*len(x) {
		return nil, fmt.Errorf("%w: hc mix: %d stream values, fn has %d values for %d rows", ErrShape, len(x), len(h.Fn), rows)
	}
	ss := 0.0
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	r := 1 / math.Sqrt(ss/float64(len(x))+h.NormEps)
	out := make([]float32, rows)
	for k := range rows {
		dot := 0.0
		for i, w := range h.Fn[k*len(x) : (k+1)*len(x)] {
			dot += float64(w) * float64(x[i])
		}
		out[k] = float32(dot * r)
	}
	return out, nil
}

// collapse returns u = Σ_j w_j X_j for streams X [hc, D].
func collapse(x []float32, w []float32) []float32 {
	d := len(x) / len(w)
	u := make([]float32, d)
	for c := range d {
		s := 0.0
		for j, wj := range w {
			s += float64(wj) * float64(x[j*d+c])
		}
		u[c] = float32(s)
	}
	return u
}

// Pre is Block.hc_pre for one token: from the streams x [hc, D] it returns the sublayer
// input u [D] (before attn_norm/ffn_norm) and the mix whose Post and Comb Post needs.
func (h HC) Pre(x []float32) ([]float32, Mix, error) {
	mw := (2 + h.Mult) * h.Mult
	mixes, err := h.mixValues(x, mw)
	if err != nil {
		return nil, Mix{}, err
	}
	m, err := SplitSinkhorn(mixes, h.Scale, h.Base, h.Mult, h.Iters, h.Eps)
	if err != nil {
		return nil, Mix{}, err
	}
	return collapse(x, m.Pre), m, nil
}

// Post is Block.hc_post: the new streams X'_j = post_j · f + Σ_i comb[i, j] · X_i, for
// the sublayer output f [D] and the streams x [hc, D] the sublayer read.
func Post(f, x []float32, m Mix) ([]float32, error) {
	hc, d := len(m.Post), len(f)
	if hc == 0 || len(x) != hc*d || len(m.Comb) != hc*hc {
		return nil, fmt.Errorf("%w: hc post: f %d, streams %d, post %d, comb %d", ErrShape, d, len(x), hc, len(m.Comb))
	}
	out := make([]float32, hc*d)
	for j := range hc {
		for c := range d {
			s := float64(m.Post[j]) * float64(f[c])
			for i := range hc {
				s += float64(m.Comb[i*hc+j]) * float64(x[i*d+c])
			}
			out[j*d+c] = float32(s)
		}
	}
	return out, nil
}

// Head is ParallelHead.hc_head: the final collapse of the streams before norm and head,
// u = Σ_j pre_j X_j with pre = sigmoid(m · scale + base) + eps (no post, no Sinkhorn).
func (h HC) Head(x []float32) ([]float32, error) {
	mixes, err := h.mixValues(x, h.Mult)
	if err != nil {
		return nil, err
	}
	if len(h.Base) != h.Mult || len(h.Scale) != 1 {
		return nil, fmt.Errorf("%w: hc head: base %d, scale %d (want %d, 1)", ErrShape, len(h.Base), len(h.Scale), h.Mult)
	}
	pre := make([]float32, h.Mult)
	for j, v := range mixes {
		pre[j] = float32(1/(1+math.Exp(-(float64(v)*float64(h.Scale[0])+float64(h.Base[j])))) + h.Eps)
	}
	return collapse(x, pre), nil
}
