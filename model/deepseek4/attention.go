package deepseek4

import (
	"fmt"
	"math"
	"sort"
)

// SinkSoftmax is the softmax of one head's attention scores with the head's learned sink
// logit in the denominator only (kernel.py sparse_attn; "attn_sink" [heads], F32):
//
//	m = max_k s_k,   w_k = exp(s_k − m) / (Σ_j exp(s_j − m) + exp(sink − m))
//
// The sink acts as an extra key whose value is zero: the weights sum to less than 1 and
// the output shrinks toward 0 when nothing scores above the sink. Masked keys are −Inf
// (or NaN, treated alike) and get weight 0. When every key is masked all weights are 0
// (the reference would divide 0 by +Inf there, too).
func SinkSoftmax(scores []float32, sink float32, out []float32) {
	m := math.Inf(-1)
	for _, s := range scores {
		if v := float64(s); v > m { // NaN compares false: never the maximum
			m = v
		}
	}
	if math.IsInf(m, -1) {
		clear(out[:len(scores)])
		return
	}
	sum := 0.0
	e := make([]float64, len(scores))
	for k, s := range scores {
		if v := float64(s); v == v {
			e[k] = math.Exp(v - m)
		}
		sum += e[k]
	}
	den := sum + math.Exp(float64(sink)-m)
	for k := range scores {
		out[k] = float32(e[k] / den)
	}
}

// SparseAttend is kernel.py sparse_attn for one query token: q [heads, d] attends to the
// rows of kv [n, d] listed in idx (−1 = no key), the same rows serving as keys and values
// (V4's single shared K=V head), with softmax scale and per-head sink. out is [heads, d].
func SparseAttend(q, kv []float32, d int, sink []float32, idx []int32, scale float32, out []float32) error {
	heads := len(sink)
	if d <= 0 || len(q) != heads*d || len(out) != heads*d || len(kv)%d != 0 {
		return fmt.Errorf("%w: sparse attention: q %d, kv %d, out %d for %d heads of %d", ErrShape, len(q), len(kv), len(out), heads, d)
	}
	n := len(kv) / d
	for _, i := range idx {
		if i < -1 || int(i) >= n {
			return fmt.Errorf("%w: sparse attention index %d of %d rows", ErrShape, i, n)
		}
	}
	scores, w := make([]float32, len(idx)), make([]float32, len(idx))
	for h := range heads {
		qh := q[h*d : (h+1)*d]
		for k, i := range idx {
			if i < 0 {
				scores[k] = float32(math.Inf(-1))
				continue
			}
			dot := 0.0
			for c, v := range kv[int(i)*d : int(i+1)*d] {
				dot += float64(qh[c]) * float64(v)
			}
			scores[k] = float32(dot * float64(scale))
		}
		SinkSoftmax(scores, sink[h], w)
		oh := out[h*d : (h+1)*d]
		for c := range oh {
			s := 0.0
			for k, i := range idx {
				if i >= 0 {
					s += float64(w[k]) * float64(kv[int(i)*d+c])
				}
			}
			oh[c] = float32(s)
		}
	}
	return nil
}

// WindowRows lists the raw-window rows query position pos may see: the last window
// positions up to and including pos (model.py get_window_topk_idxs, as positions; the
// reference stores them in a ring of window rows, row = position mod window).
func WindowRows(pos, window int) []int32 {
	first := max(0, pos-window+1)
	out := make([]int32, 0, pos-first+1)
	for p := first; p <= pos; p++ {
		out = append(out, int32(p))
	}
	return out
}

// Pool is the compressor's gated pooling (model.py Compressor.forward, prefill path)
// before its RMSNorm and RoPE: kv and score are the token rows of wkv(x) and wgate(x)
// [T, coff·d], ape the learned position bias [ratio, coff·d]; it returns one row [d] per
// whole window of ratio tokens (T/ratio rows; a partial last window waits in the decode
// state and is not pooled).
//
// Without overlap (coff 1, HCA layers): row w = Σ_k softmax_k(score[wr+k] + ape[k]) ⊙
// kv[wr+k], the softmax taken per dimension over the ratio tokens of the window.
//
// With overlap (coff 2, ratio 4, CSA layers) the row of window w pools 2·ratio entries
// per dimension: the first d dims of the previous window's tokens and the last d dims of
// its own (model.py overlap_transform), so consecutive rows share 4 tokens; window 0 has
// no predecessor (its entries are absent: kv 0, score −Inf).
func Pool(kv, score, ape []float32, ratio, d int, overlap bool) ([][]float32, error) {
	coff := 1
	if overlap {
		coff = 2
	}
	w := coff * d
	if ratio < 1 || d < 1 || len(kv) != len(score) || len(kv)%w != 0 || len(ape) != ratio*w {
		return nil, fmt.Errorf("%w: compressor pool: kv %d, score %d, ape %d for ratio %d and %d dims per token",
			ErrShape, len(kv), len(score), len(ape), ratio, w)
	}
	windows := len(kv) / w / ratio
	rows := make([][]float32, windows)
	vals, wts := make([]float64, 0, 2*ratio), make([]float64, 0, 2*ratio)
	for win := range windows {
		row := make([]float32, d)
		for c := range d {
			vals, wts = vals[:0], wts[:0]
			if overlap && win > 0 {
				for k := range ratio { // previous window, first half of the dims
					t := (win-1)*ratio + k
					vals = append(vals, float64(kv[t*w+c]))
					wts = append(wts, float64(score[t*w+c])+float64(ape[k*w+c]))
				}
			}
			off := (coff - 1) * d // own window: the second half when overlapping
			for k := range ratio {
				t := win*ratio + k
				vals = append(vals, float64(kv[t*w+off+c]))
				wts = append(wts, float64(score[t*w+off+c])+float64(ape[k*w+off+c]))
			}
			mx := math.Inf(-1)
			for _, s := range wts {
				mx = max(mx, s)
			}
			sum, acc := 0.0, 0.0
			for i, s := range wts {
				e := math.Exp(s - mx)
				sum += e
				acc += e * vals[i]
			}
			row[c] = float32(acc / sum)
		}
		rows[win] = row
	}
	return rows, nil
}

// IndexerTopK is the lightning indexer's selection for one query (model.py
// Indexer.forward after its projections): with index queries q [heads, dim], compressed
// index keys k [n, dim] and per-head weights w [heads] (weights_proj(x) ·
// index_head_dim^−0.5 · heads^−0.5), each visible row t scores Σ_h w_h · ReLU(q_h · k_t);
// it returns the indices of the min(topk, visible) best rows, best first, ties to the
// lower index. visible is how many compressed rows the query may see: (pos+1)/ratio in
// prefill (the causal mask), all rows written so far in decode.
func IndexerTopK(q, k, w []float32, dim, visible, topk int) ([]int32, error) {
	heads := len(w)
	if dim < 1 || len(q) != heads*dim || len(k)%dim != 0 || visible < 0 || visible > len(k)/dim || topk < 0 {
		return nil, fmt.Errorf("%w: indexer: q %d, k %d, weights %d, dim %d, visible %d, topk %d",
			ErrShape, len(q), len(k), heads, dim, visible, topk)
	}
	score := make([]float64, visible)
	for t := range visible {
		kt := k[t*dim : (t+1)*dim]
		s := 0.0
		for h := range heads {
			dot := 0.0
			for c, v := range q[h*dim : (h+1)*dim] {
				dot += float64(v) * float64(kt[c])
			}
			s += float64(w[h]) * max(dot, 0)
		}
		if s != s {
			s = math.Inf(-1) // a NaN weight or input ranks last instead of breaking the sort
		}
		score[t] = s
	}
	idx := make([]int32, visible)
	for i := range idx {
		idx[i] = int32(i)
	}
	sort.SliceStable(idx, func(a, b int) bool { return score[idx[a]] > score[idx[b]] })
	return idx[:min(topk, visible)], nil
}
