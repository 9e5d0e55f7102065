package deepseek4_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"testing"

	"github.com/moemesh/moemesh/ascend"
	_ "github.com/moemesh/moemesh/ascend/cpu"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/deepseek4"
	"github.com/moemesh/moemesh/model/nn"
	"github.com/moemesh/moemesh/model/quant"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/model/synth"
)

type fixture struct {
	m       *deepseek4.Model
	cfg     *deepseek4.Config
	experts model.Experts
}

func cpuCard(t testing.TB, i int) ascend.Card {
	t.Helper()
	be, err := ascend.Open("cpu")
	if err != nil {
		t.Fatal(err)
	}
	c, err := be.OpenCard(i, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// newFixture writes the tiny V4 checkpoint and loads it with in-process experts.
func newFixture(t testing.TB) *fixture {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "v4")
	if _, err := synth.Write(dir, synth.Options{Arch: synth.ArchDeepseekV4, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	cfg, err := deepseek4.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	m, err := deepseek4.LoadModel(ck, cfg.Config, cpuCard(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	ex, err := model.LoadLocal(ck, cfg.Config, cpuCard(t, 1), cfg.MoELayers())
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{m: m, cfg: m.V4(), experts: ex}
}

func prompt(n, vocab, salt int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32((i*7919 + salt*104729 + 13) % vocab)
	}
	return out
}

// run feeds toks to a fresh sequence in the given chunks and returns the logits after
// each chunk.
func (f *fixture) run(t *testing.T, toks []int32, chunks []int) [][]float32 {
	t.Helper()
	s, err := f.m.NewSequence(len(toks))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out [][]float32
	off := 0
	for _, c := range chunks {
		lg := make([]float32, f.cfg.Vocab)
		if err := f.m.Forward(context.Background(), []*deepseek4.Sequence{s}, [][]int32{toks[off : off+c]}, f.experts, [][]float32{lg}); err != nil {
			t.Fatal(err)
		}
		out = append(out, lg)
		off += c
	}
	return out
}

func ones(n int) []int {
	c := make([]int, n)
	for i := range c {
		c[i] = 1
	}
	return c
}

func TestDecodeEqualsPrefill(t *testing.T) {
	f := newFixture(t)
	const n = 21 // past the 8-token window, 5 CSA windows, 2 HCA windows
	toks := prompt(n, f.cfg.Vocab, 1)
	prefill := f.run(t, toks, []int{n})[0]
	steps := f.run(t, toks, ones(n))
	chunked := f.run(t, toks, []int{6, 9, 6})
	for _, got := range [][]float32{steps[n-1], chunked[2]} {
		for i := range prefill {
			if got[i] != prefill[i] {
				t.Fatalf("logit %d: %v, prefill %v", i, got[i], prefill[i])
			}
		}
	}
	// Each step's logits are those of prefilling the prefix (checks every position).
	for _, p := range []int{1, 4, 8, 9, 16} {
		pre := f.run(t, toks[:p], []int{p})[0]
		for i := range pre {
			if steps[p-1][i] != pre[i] {
				t.Fatalf("prefix %d logit %d: step %v, prefill %v", p, i, steps[p-1][i], pre[i])
			}
		}
	}
	spread := 0.0
	for _, v := range prefill {
		spread = max(spread, math.Abs(float64(v)))
		if math.IsNaN(float64(v)) {
			t.Fatal("NaN logit")
		}
	}
	if spread == 0 {
		t.Fatal("all-zero logits")
	}
}

func TestBatchIndependence(t *testing.T) {
	f := newFixture(t)
	a, b := prompt(13, f.cfg.Vocab, 2), prompt(5, f.cfg.Vocab, 3)
	alone := [][]float32{f.run(t, a, []int{13})[0], f.run(t, b, []int{5})[0]}
	sa, _ := f.m.NewSequence(32)
	sb, _ := f.m.NewSequence(32)
	defer sa.Close()
	defer sb.Close()
	lg := [][]float32{make([]float32, f.cfg.Vocab), make([]float32, f.cfg.Vocab)}
	if err := f.m.Forward(context.Background(), []*deepseek4.Sequence{sa, sb}, [][]int32{a, b}, f.experts, lg); err != nil {
		t.Fatal(err)
	}
	for s := range 2 {
		for i := range lg[s] {
			if lg[s][i] != alone[s][i] {
				t.Fatalf("sequence %d logit %d: batched %v, alone %v", s, i, lg[s][i], alone[s][i])
			}
		}
	}
	// Invalid input changes nothing and fails clearly.
	if err := f.m.Forward(context.Background(), []*deepseek4.Sequence{sa}, [][]int32{{int32(f.cfg.Vocab)}}, f.experts, lg[:1]); err == nil {
		t.Error("out-of-vocab token accepted")
	}
	if sa.Len() != 13 {
		t.Errorf("failed step changed the length to %d", sa.Len())
	}
}

// The reference below is a prefill-style transcription of model.py Attention.forward for
// one layer and a whole prompt at once: window rows by position, compressed rows from
// the prefill pooling (Pool), the indexer's causal mask (t+1)/ratio, the sink softmax
// written out, then the grouped wo_a. The model runs the same layer token by token from
// its caches; they must agree.

func linApply(l deepseek4.Lin, x []float32) []float32 {
	rows := len(x) / l.In
	y := make([]float32, rows*l.Out)
	for r := range rows {
		for o := range l.Out {
			s := 0.0
			for i := range l.In {
				s += float64(l.W[o*l.In+i]) * float64(x[r*l.In+i])
			}
			y[r*l.Out+o] = float32(s)
		}
	}
	return y
}

func naiveAttention(t *testing.T, cfg *deepseek4.Config, li int, w deepseek4.TestLayer, x []float32) []float32 {
	H, D, rd, nh := cfg.Hidden, cfg.HeadDim, cfg.RopeDim, cfg.Heads
	T := len(x) / H
	eps := float32(cfg.RMSEps)
	rope, err := nn.NewRope(cfg.RopeConfig(li))
	if err != nil {
		t.Fatal(err)
	}
	qr := linApply(w.Wqa, x)
	nn.RMSNorm(qr, qr, w.QNorm, eps, T)
	q := linApply(w.Wqb, qr)
	nn.RMSNormHeads(q, q, nil, eps, T, nh, D)
	rope.Apply(q, nh, D, rd, 0, nil)
	kv := linApply(w.Wkv, x)
	nn.RMSNorm(kv, kv, w.KVNorm, eps, T)
	rope.Apply(kv, 1, D, rd, 0, nil)
	for tok := range T {
		if err := quant.SimFP8(kv[tok*D:tok*D+D-rd], 64); err != nil {
			t.Fatal(err)
		}
	}
	ratio := w.Ratio
	compress := func(c *deepseek4.TestComp, d int, rotate bool) [][]float32 {
		rows, err := deepseek4.Pool(linApply(c.WKV, x), linApply(c.WGate, x), c.Ape, ratio, d, ratio == 4)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range rows {
			nn.RMSNorm(r, r, c.Norm, eps, 1)
			rope.Apply(r, 1, d, rd, i*ratio, nil)
			if rotate {
				_ = quant.Hadamard(r)
				_ = quant.SimFP4(r, 32)
			} else {
				_ = quant.SimFP8(r[:d-rd], 64)
			}
		}
		return rows
	}
	var crows, irows [][]float32
	var iq, iw []float32
	ih, id := cfg.IndexHeads, cfg.IndexHeadDim
	if ratio > 0 {
		crows = compress(w.Comp, D, false)
	}
	if w.IComp != nil {
		irows = compress(w.IComp, id, true)
		iq = linApply(w.IdxWqb, qr)
		rope.Apply(iq, ih, id, rd, 0, nil)
		for h := range T * ih {
			_ = quant.Hadamard(iq[h*id : (h+1)*id])
		}
		_ = quant.SimFP4(iq, 32)
		iw = linApply(w.IdxWproj, x)
		for i := range iw {
			iw[i] = float32(float64(iw[i]) / math.Sqrt(float64(id)) / math.Sqrt(float64(ih)))
		}
	}
	scale := 1 / math.Sqrt(float64(D))
	o := make([]float32, T*nh*D)
	for tok := range T {
		var keys [][]float32
		for p := max(0, tok-cfg.Window+1); p <= tok; p++ {
			keys = append(keys, kv[p*D:(p+1)*D])
		}
		if ratio > 0 {
			visible := (tok + 1) / ratio
			if w.IComp == nil {
				keys = append(keys, crows[:visible]...)
			} else {
				// Index scores Σ_h w_h ReLU(q_h·k), top index_topk, ties to the lower row.
				type sc struct {
					row int
					s   float64
				}
				var cand []sc
				for r := range visible {
					s := 0.0
					for h := range ih {
						dot := 0.0
						for c := range id {
							dot += float64(iq[(tok*ih+h)*id+c]) * float64(irows[r][c])
						}
						s += float64(iw[tok*ih+h]) * max(dot, 0)
					}
					cand = append(cand, sc{r, s})
				}
				sort.SliceStable(cand, func(a, b int) bool { return cand[a].s > cand[b].s })
				for _, c := range cand[:min(len(cand), cfg.IndexTopK)] {
					keys = append(keys, crows[c.row])
				}
			}
		}
		for h := range nh {
			qh := q[(tok*nh+h)*D : (tok*nh+h+1)*D]
			s := make([]float64, len(keys))
			mx := math.Inf(-1)
			for k, key := range keys {
				for c := range D {
					s[k] += float64(qh[c]) * float64(key[c])
				}
				s[k] = float64(float32(s[k] * scale))
				mx = max(mx, s[k])
			}
			den := math.Exp(float64(w.Sink[h]) - mx)
			for k := range s {
				s[k] = math.Exp(s[k] - mx)
				den += s[k]
			}
			for c := range D {
				acc := 0.0
				for k, key := range keys {
					acc += float64(float32(s[k]/den)) * float64(key[c])
				}
				o[(tok*nh+h)*D+c] = float32(acc)
			}
		}
	}
	rope.ApplyInverse(o, nh, D, rd, 0, nil)
	G, R := cfg.OGroups, cfg.OLoraRank
	gw := nh * D / G
	mid := make([]float32, T*G*R)
	for tok := range T {
		for g := range G {
			// wo_a viewed [G, R, gw]: group g's rows g·R … g·R+R−1.
			part := deepseek4.Lin{W: w.Woa.W[g*R*gw : (g+1)*R*gw], Out: R, In: gw}
			copy(mid[(tok*G+g)*R:], linApply(part, o[tok*nh*D+g*gw:tok*nh*D+(g+1)*gw]))
		}
	}
	return linApply(w.Wob, mid)
}

func TestAttentionAgainstNaiveLayer(t *testing.T) {
	f := newFixture(t)
	cfg := f.cfg
	const T = 22
	r := rand.New(rand.NewPCG(7, 8))
	x := make([]float32, T*cfg.Hidden)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	kinds := map[string]bool{}
	for li := range cfg.Layers {
		kinds[cfg.Kind(li)] = true
		want := naiveAttention(t, cfg, li, f.m.LayerForTest(li), x)
		for _, chunks := range [][]int{nil, ones(T), {5, 3, 14}} {
			s, err := f.m.NewSequence(T)
			if err != nil {
				t.Fatal(err)
			}
			got, err := f.m.AttentionForTest(li, s, x, chunks)
			s.Close()
			if err != nil {
				t.Fatal(err)
			}
			worst, norm := 0.0, 0.0
			for i := range want {
				worst = max(worst, math.Abs(float64(got[i]-want[i])))
				norm = max(norm, math.Abs(float64(want[i])))
			}
			if chunks == nil {
				t.Logf("layer %d (%s): max |diff| %.3g, max |out| %.3g", li, cfg.Kind(li), worst, norm)
			}
			if norm == 0 || worst > 1e-5*max(norm, 1) {
				t.Errorf("layer %d (%s) chunks %v: max |diff| %.3g over max |out| %.3g", li, cfg.Kind(li), chunks, worst, norm)
			}
		}
	}
	if len(kinds) != 3 {
		t.Fatalf("tiny checkpoint covers kinds %v, want all three", kinds)
	}
}

func TestSequencePoolAndLifecycle(t *testing.T) {
	f := newFixture(t)
	k, v := f.m.KVWidths()
	pool, err := nn.NewKVPool(0, 16)
	if err != nil {
		t.Fatal(err)
	}
	one := pool.CacheBytes(f.cfg.Layers, 32, k, v)
	pool, _ = nn.NewKVPool(one+one/2, 16)
	s1, err := f.m.NewSequenceIn(pool, 32)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.NewSequenceIn(pool, 32); !errors.Is(err, nn.ErrCacheFull) {
		t.Fatalf("second sequence over budget: %v", err)
	}
	toks := prompt(10, f.cfg.Vocab, 4)
	want := f.run(t, toks, []int{10})[0]
	lg := [][]float32{make([]float32, f.cfg.Vocab)}
	step := func() {
		t.Helper()
		if err := f.m.Forward(context.Background(), []*deepseek4.Sequence{s1}, [][]int32{toks}, f.experts, lg); err != nil {
			t.Fatal(err)
		}
	}
	step()
	s1.Reset() // a reset sequence gives the same logits as a fresh one
	step()
	for i := range want {
		if lg[0][i] != want[i] {
			t.Fatalf("after Reset logit %d = %v, fresh %v", i, lg[0][i], want[i])
		}
	}
	s1.Close()
	if _, err := f.m.NewSequenceIn(pool, 32); err != nil {
		t.Fatalf("Close did not release the reservation: %v", err)
	}
	if err := f.m.Forward(context.Background(), []*deepseek4.Sequence{s1}, [][]int32{toks[:1]}, f.experts, lg); err == nil {
		t.Fatal("closed sequence stepped")
	}
}
