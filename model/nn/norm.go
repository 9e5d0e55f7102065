package nn

import (
	"fmt"
	"math"
)

// RMSNorm normalises each of rows rows of x (width len(x)/rows) and writes w ⊙ (x / rms)
// to out; out may alias x. w has the row width; a nil w is an unweighted norm (as in
// DeepSeek-V4's per-head query norm).
//
// The arithmetic follows Hugging Face's f32 path (`x.pow(2).mean(-1)`, `x * rsqrt(var +
// eps)`, then `weight * ...`) with one fixed order so results are reproducible:
//
//  1. ss = Σ x_i² summed in f32 in increasing i, each square rounded to f32 first;
//  2. v = ss / n in f32, then v + eps in f32;
//  3. r = 1/sqrt(v+eps) computed in f64 and rounded once to f32 (torch's f32 rsqrt is
//     within an ulp of this);
//  4. y_i = float32(x_i·r), then float32(w_i·y_i).
//
// Torch's own reduction order is vectorised and differs in the last bits; a sequential f32
// sum is the order we can state and test against. It panics on inconsistent shapes, like
// an out-of-range index: a shape error here is a bug in the caller, not a runtime
// condition.
func RMSNorm(out, x, w []float32, eps float32, rows int) {
	n := rowWidth("RMSNorm", len(x), rows)
	if len(out) != len(x) {
		panic(fmt.Sprintf("nn.RMSNorm: out has %d values, x %d", len(out), len(x)))
	}
	if w != nil && len(w) != n {
		panic(fmt.Sprintf("nn.RMSNorm: weight has %d values for rows of %d", len(w), n))
	}
	for r := range rows {
		xr := x[r*n : (r+1)*n]
		or := out[r*n : (r+1)*n]
		s := rmsScale(xr, eps)
		if w == nil {
			for i, v := range xr {
				or[i] = float32(v * s)
			}
			continue
		}
		for i, v := range xr {
			or[i] = float32(w[i] * float32(v*s))
		}
	}
}

// RMSNormUnweighted is RMSNorm without a weight (DeepSeek-V4's per-head q norm).
func RMSNormUnweighted(out, x []float32, eps float32, rows int) {
	RMSNorm(out, x, nil, eps, rows)
}

// RMSNormHeads normalises every head of x [rows, heads·headDim] separately with the
// per-head weight w [headDim] (Qwen3's q_norm/k_norm; nil for unweighted). Heads are
// contiguous within a row, so this is RMSNorm over rows·heads rows of width headDim.
func RMSNormHeads(out, x, w []float32, eps float32, rows, heads, headDim int) {
	if heads <= 0 || headDim <= 0 || rows < 0 || len(x) != rows*heads*headDim {
		panic(fmt.Sprintf("nn.RMSNormHeads: %d values for %d rows × %d heads × %d", len(x), rows, heads, headDim))
	}
	RMSNorm(out, x, w, eps, rows*heads)
}

// rmsScale is steps 1-3 of RMSNorm for one row.
func rmsScale(x []float32, eps float32) float32 {
	var ss float32
	for _, v := range x {
		ss += float32(v * v)
	}
	v := ss/float32(len(x)) + eps
	return float32(1 / math.Sqrt(float64(v)))
}

// rowWidth returns the width of rows equal rows of n values, panicking if they do not
// divide evenly.
func rowWidth(op string, n, rows int) int {
	if rows <= 0 || n%rows != 0 || n == 0 {
		panic(fmt.Sprintf("nn.%s: %d values do not form %d non-empty rows", op, n, rows))
	}
	return n / rows
}

// Clamp limits every value of x to [-limit, limit] in place (OLMoE's clip_qkv, applied
// after its q/k norm). limit <= 0 leaves x unchanged, matching a null clip_qkv. NaN stays
// NaN, as with torch.clamp.
func Clamp(x []float32, limit float32) {
	if limit <= 0 {
		return
	}
	for i, v := range x {
		if v > limit {
			x[i] = limit
		} else if v < -limit {
			x[i] = -limit
		}
	}
}

// AddBias adds b to each row of x (Qwen2-MoE's q/k/v projection bias); len(x) must be a
// multiple of len(b).
func AddBias(x, b []float32) {
	if len(b) == 0 || len(x)%len(b) != 0 {
		panic(fmt.Sprintf("nn.AddBias: %d values are not rows of %d", len(x), len(b)))
	}
	for r := 0; r < len(x); r += len(b) {
		row := x[r : r+len(b)]
		for i := range row {
			row[i] += b[i]
		}
	}
}

// Scale multiplies x by s in place (Granite's embedding and residual multipliers). HF
// divides by logits_scaling; multiplying by its reciprocal can differ in the last bit, so
// callers that want HF's bits divide instead.
func Scale(x []float32, s float32) {
	for i := range x {
		x[i] *= s
	}
}
