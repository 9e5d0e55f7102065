package nn

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// AttnConfig describes one attention layer's shapes.
type AttnConfig struct {
	Heads   int // query heads
	KVHeads int // key/value heads; Heads must be a multiple (GQA: head h uses h/(Heads/KVHeads))
	QKDim   int // query/key head dim (MLA: qk_nope + qk_rope = 192)
	VDim    int // value head dim (MLA: v_head_dim = 128)
	// Scale multiplies q·k: 1/sqrt(QKDim) usually, attention_multiplier for Granite,
	// SoftmaxScaleYaRN for DeepSeek.
	Scale float32
	// Window > 0 limits a query at position p to keys at positions (p−Window, p] (HF's
	// sliding_window: Window keys including itself). 0 is full causal attention.
	Window int
	// Sinks, when non-nil, holds one logit per head that joins the softmax denominator but
	// has no value (DeepSeek-V4's attn_sink).
	Sinks []float32
}

func (c *AttnConfig) validate() error {
	if c.Heads <= 0 || c.KVHeads <= 0 || c.Heads%c.KVHeads != 0 || c.QKDim <= 0 || c.VDim <= 0 || c.Window < 0 {
		return fmt.Errorf("%w: attention heads %d, kv heads %d, qk dim %d, v dim %d, window %d",
			ErrInvalid, c.Heads, c.KVHeads, c.QKDim, c.VDim, c.Window)
	}
	if c.Sinks != nil && len(c.Sinks) != c.Heads {
		return fmt.Errorf("%w: %d attention sinks for %d heads", ErrShape, len(c.Sinks), c.Heads)
	}
	return nil
}

// serialAttnFlops is the work below which Attend does not start goroutines: a goroutine
// costs about a microsecond, which is more than a short head's few thousand flops.
const serialAttnFlops = 1 << 16

// Attend computes causal softmax attention for one sequence: T new queries q [T,
// Heads·QKDim] at positions [start, start+T) against keys k [≥ start+T, KVHeads·QKDim] and
// values v [≥ start+T, KVHeads·VDim] holding positions from 0; out is [T, Heads·VDim].
// Rows of k and v past start+T are ignored.
//
// Per (query, head) in a fixed order: s_j = float32(Scale · (q·k_j)) for visible j, with
// the dot summed in four interleaved f32 partial sums (element i into sum i mod 4, a tail
// past the last multiple of 4 into sum 0, folded (s0+s1)+(s2+s3)); m = max s_j (and the
// sink); p_j = exp(s_j−m) in f64 rounded to f32; Z = Σ p_j in f32 in increasing j (+
// exp(sink−m)); out = Σ_j float32(p_j/Z)·v_j in f32, in increasing j. Work is split over
// (query, kv head, run of query heads) tasks between goroutines that Attend starts and
// waits for before returning; each (query, head) is computed whole by one goroutine, so
// the result does not depend on how many run.
func Attend(out, q []float32, k, v KVView, start int, cfg AttnConfig) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	qw, ow := cfg.Heads*cfg.QKDim, cfg.Heads*cfg.VDim
	if len(q)%qw != 0 || start < 0 {
		return fmt.Errorf("%w: attend: %d query values are not rows of %d heads × %d (start %d)", ErrShape, len(q), cfg.Heads, cfg.QKDim, start)
	}
	T := len(q) / qw
	if len(out) != T*ow {
		return fmt.Errorf("%w: attend: out has %d values, want %d queries × %d heads × %d", ErrShape, len(out), T, cfg.Heads, cfg.VDim)
	}
	if err := k.check("key"); err != nil {
		return fmt.Errorf("attend: %w", err)
	}
	if err := v.check("value"); err != nil {
		return fmt.Errorf("attend: %w", err)
	}
	if k.Width != cfg.KVHeads*cfg.QKDim || v.Width != cfg.KVHeads*cfg.VDim {
		return fmt.Errorf("%w: attend: key rows of %d and value rows of %d, want %d and %d for %d kv heads",
			ErrShape, k.Width, v.Width, cfg.KVHeads*cfg.QKDim, cfg.KVHeads*cfg.VDim, cfg.KVHeads)
	}
	if k.Rows < start+T || v.Rows < start+T {
		return fmt.Errorf("%w: attend: %d queries from position %d need %d cached rows, have %d keys and %d values",
			ErrShape, T, start, start+T, k.Rows, v.Rows)
	}
	if T == 0 {
		return nil
	}
	group := cfg.Heads / cfg.KVHeads
	workers := runtime.GOMAXPROCS(0)
	// A task is one query, one kv head and a run of that kv head's query heads: the heads
	// sharing a kv head read each K/V row once between them, which matters because rows of
	// a [rows, kvHeads·dim] cache are strided (a 4 KiB stride at 8×128 made per-head passes
	// ten times slower). Splitting the run keeps both cores busy when there are fewer
	// (query, kv head) pairs than workers (decode with MQA or few kv heads).
	split := min(group, max(1, (workers+T*cfg.KVHeads-1)/(T*cfg.KVHeads)))
	per := (group + split - 1) / split
	split = (group + per - 1) / per
	a := attn{out: out, q: q, k: k, v: v, start: start, cfg: &cfg, group: group, per: per, split: split}
	tasks := T * cfg.KVHeads * split
	flops := int64(T) * int64(cfg.Heads) * int64(start+T) * int64(cfg.QKDim+cfg.VDim)
	workers = min(workers, tasks)
	scratch := per * (start + T)
	if flops < serialAttnFlops || workers <= 1 {
		scores := make([]float32, scratch)
		for i := range tasks {
			a.task(i, scores)
		}
		return nil
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	work := func() {
		scores := make([]float32, scratch)
		for {
			i := int(next.Add(1) - 1)
			if i >= tasks {
				return
			}
			a.task(i, scores)
		}
	}
	for range workers - 1 {
		wg.Go(work)
	}
	work() // the caller works too
	wg.Wait()
	return nil
}

// attn is one Attend call after validation.
type attn struct {
	out, q     []float32
	k, v       KVView
	start      int
	cfg        *AttnConfig
	group      int // query heads per kv head
	per, split int // a task covers per heads of a group; a group is split into split tasks
}

// task computes query t, kv head kh and query heads [h0, h1) of that kv head's group.
// scores has room for per·(visible keys). The arithmetic of each (query, head) is the
// documented order whatever the task shape, so results never depend on the split.
func (a *attn) task(i int, scores []float32) {
	c := a.cfg
	t, rest := i/(c.KVHeads*a.split), i%(c.KVHeads*a.split)
	kh, part := rest/a.split, rest%a.split
	h0 := kh*a.group + part*a.per
	h1 := min(h0+a.per, (kh+1)*a.group)
	pos := a.start + t
	lo := 0
	if c.Window > 0 {
		lo = max(0, pos-c.Window+1)
	}
	n := pos + 1 - lo
	nh := h1 - h0
	qs := a.q[(t*c.Heads+h0)*c.QKDim : (t*c.Heads+h1)*c.QKDim]
	// Keys go eight at a time (dot8); a short last group repeats its last key and drops
	// the duplicates, which cannot change the kept scores.
	var ks [8][]float32
	var ds [8]float32
	for j0 := 0; j0 < n; j0 += len(ks) {
		for r := range ks {
			ks[r] = a.k.Row(lo + min(j0+r, n-1))[kh*c.QKDim : (kh+1)*c.QKDim]
		}
		kept := min(len(ks), n-j0)
		for g := range nh {
			dot8(&ds, qs[g*c.QKDim:(g+1)*c.QKDim], &ks)
			sg := scores[g*n+j0 : g*n+j0+kept]
			for r := range sg {
				sg[r] = float32(c.Scale * ds[r])
			}
		}
	}
	for g := range nh {
		h := h0 + g
		sc := scores[g*n : (g+1)*n]
		m := float32(math.Inf(-1))
		for _, s := range sc {
			m = max(m, s)
		}
		var sink float32
		hasSink := c.Sinks != nil
		if hasSink {
			sink = c.Sinks[h]
			m = max(m, sink)
		}
		var z float32
		for j, s := range sc {
			e := float32(math.Exp(float64(s - m)))
			sc[j] = e
			z += e
		}
		if hasSink {
			z += float32(math.Exp(float64(sink - m)))
		}
		for j := range sc {
			sc[j] /= z
		}
	}
	os := a.out[(t*c.Heads+h0)*c.VDim : (t*c.Heads+h1)*c.VDim]
	clear(os)
	// Values go four at a time (axpyRows4 adds them in key order), the rest one by one.
	j := 0
	var vs [4][]float32
	var ps [4]float32
	for ; j+len(vs) <= n; j += len(vs) {
		for r := range vs {
			vs[r] = a.v.Row(lo + j + r)[kh*c.VDim : (kh+1)*c.VDim]
		}
		for g := range nh {
			copy(ps[:], scores[g*n+j:])
			axpyRows4(os[g*c.VDim:(g+1)*c.VDim], &ps, &vs)
		}
	}
	for ; j < n; j++ {
		vr := a.v.Row(lo + j)[kh*c.VDim : (kh+1)*c.VDim]
		for g := range nh {
			axpy(os[g*c.VDim:(g+1)*c.VDim], scores[g*n+j], vr)
		}
	}
}
