package nn

import (
	"errors"
	"math"
	"runtime"
	"slices"
	"testing"
	"time"
)

// refAttend is naive float64 attention: head h reads kv head h/(heads/kvHeads).
func refAttend(q, k, v []float32, start int, c AttnConfig) []float64 {
	T := len(q) / (c.Heads * c.QKDim)
	out := make([]float64, T*c.Heads*c.VDim)
	g := c.Heads / c.KVHeads
	for t := range T {
		pos := start + t
		for h := range c.Heads {
			kh := h / g
			var js []int
			for j := 0; j <= pos; j++ {
				if c.Window == 0 || pos-j < c.Window {
					js = append(js, j)
				}
			}
			s := make([]float64, len(js))
			m := math.Inf(-1)
			for n, j := range js {
				var d float64
				for i := range c.QKDim {
					d += float64(q[(t*c.Heads+h)*c.QKDim+i]) * float64(k[(j*c.KVHeads+kh)*c.QKDim+i])
				}
				s[n] = d * float64(c.Scale)
				m = math.Max(m, s[n])
			}
			z := 0.0
			if c.Sinks != nil {
				m = math.Max(m, float64(c.Sinks[h]))
				z = math.Exp(float64(c.Sinks[h]) - m)
			}
			for n := range s {
				s[n] = math.Exp(s[n] - m)
				z += s[n]
			}
			for n, j := range js {
				for i := range c.VDim {
					out[(t*c.Heads+h)*c.VDim+i] += s[n] / z * float64(v[(j*c.KVHeads+kh)*c.VDim+i])
				}
			}
		}
	}
	return out
}

type attnCase struct {
	name     string
	cfg      AttnConfig
	start, T int
}

func attnCases() []attnCase {
	return []attnCase{
		{"mha-decode", AttnConfig{Heads: 4, KVHeads: 4, QKDim: 16, VDim: 16}, 9, 1},
		{"gqa-prefill", AttnConfig{Heads: 8, KVHeads: 2, QKDim: 32, VDim: 32}, 0, 7},
		{"gqa-chunk", AttnConfig{Heads: 8, KVHeads: 2, QKDim: 32, VDim: 32}, 5, 4},
		{"mqa", AttnConfig{Heads: 6, KVHeads: 1, QKDim: 8, VDim: 8}, 3, 3},
		{"mla-dims", AttnConfig{Heads: 4, KVHeads: 4, QKDim: 192, VDim: 128}, 6, 2},
		{"window", AttnConfig{Heads: 4, KVHeads: 2, QKDim: 16, VDim: 16, Window: 3}, 8, 4},
		{"sinks", AttnConfig{Heads: 3, KVHeads: 1, QKDim: 16, VDim: 8, Sinks: []float32{0.5, -2, 3}}, 4, 2},
		{"uneven-head-split", AttnConfig{Heads: 5, KVHeads: 1, QKDim: 64, VDim: 64, Window: 200}, 300, 1},
		{"big-parallel", AttnConfig{Heads: 16, KVHeads: 4, QKDim: 64, VDim: 64}, 300, 3},
	}
}

func attnInputs(c attnCase, seed uint64) (q, k, v []float32) {
	r := newRand(seed)
	n := c.start + c.T
	q = randVec(r, c.T*c.cfg.Heads*c.cfg.QKDim)
	k = randVec(r, n*c.cfg.KVHeads*c.cfg.QKDim)
	v = randVec(r, n*c.cfg.KVHeads*c.cfg.VDim)
	// Larger logits make the softmax peaked, which exercises the max subtraction.
	for i := range q {
		q[i] *= 3
	}
	return q, k, v
}

func attend(t testing.TB, q, k, v []float32, start int, cfg AttnConfig) []float32 {
	t.Helper()
	T := len(q) / (cfg.Heads * cfg.QKDim)
	out := make([]float32, T*cfg.Heads*cfg.VDim)
	n := len(k) / (cfg.KVHeads * cfg.QKDim)
	err := Attend(out, q, ContiguousView(k, n, cfg.KVHeads*cfg.QKDim), ContiguousView(v, n, cfg.KVHeads*cfg.VDim), start, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAttendAgainstReference(t *testing.T) {
	for i, c := range attnCases() {
		c.cfg.Scale = float32(1 / math.Sqrt(float64(c.cfg.QKDim)))
		q, k, v := attnInputs(c, uint64(i))
		got := attend(t, q, k, v, c.start, c.cfg)
		closeVec(t, c.name, got, refAttend(q, k, v, c.start, c.cfg), tolF32)
	}
}

// A query never sees later positions: changing K/V rows after a query's position leaves
// its output bit-identical, while changing an earlier row does not.
func TestAttendCausal(t *testing.T) {
	cfg := AttnConfig{Heads: 4, KVHeads: 2, QKDim: 16, VDim: 16, Scale: 0.25}
	start, T := 3, 5
	c := attnCase{cfg: cfg, start: start, T: T}
	q, k, v := attnInputs(c, 11)
	base := attend(t, q, k, v, start, cfg)
	ow := cfg.Heads * cfg.VDim
	for tk := range T {
		k2, v2 := slices.Clone(k), slices.Clone(v)
		for j := start + tk + 1; j < start+T; j++ {
			for i := range cfg.KVHeads * cfg.QKDim {
				k2[j*cfg.KVHeads*cfg.QKDim+i] += 5
			}
			for i := range cfg.KVHeads * cfg.VDim {
				v2[j*cfg.KVHeads*cfg.VDim+i] -= 7
			}
		}
		got := attend(t, q, k2, v2, start, cfg)
		if !equalBits(got[tk*ow:(tk+1)*ow], base[tk*ow:(tk+1)*ow]) {
			t.Fatalf("query %d changed when later rows changed", tk)
		}
		// Sanity: the perturbation is visible to the last query, so the test can fail.
		if tk < T-1 && equalBits(got[(T-1)*ow:], base[(T-1)*ow:]) {
			t.Fatalf("perturbing rows after query %d did not reach the last query", tk)
		}
	}
}

// GQA: attending with KVHeads=2 equals attending with the kv heads replicated so that
// head h gets kv head h/(Heads/KVHeads) — bit for bit, since the arithmetic is the same.
func TestAttendGQAMapping(t *testing.T) {
	cfg := AttnConfig{Heads: 6, KVHeads: 2, QKDim: 8, VDim: 4, Scale: 0.3}
	c := attnCase{cfg: cfg, start: 4, T: 2}
	q, k, v := attnInputs(c, 12)
	got := attend(t, q, k, v, c.start, cfg)
	n := c.start + c.T
	expand := func(x []float32, d int) []float32 {
		var o []float32
		for j := range n {
			for h := range cfg.Heads {
				kh := h / (cfg.Heads / cfg.KVHeads)
				o = append(o, x[(j*cfg.KVHeads+kh)*d:(j*cfg.KVHeads+kh+1)*d]...)
			}
		}
		return o
	}
	full := cfg
	full.KVHeads = cfg.Heads
	want := attend(t, q, expand(k, cfg.QKDim), expand(v, cfg.VDim), c.start, full)
	if !equalBits(got, want) {
		t.Fatal("GQA differs from replicated kv heads")
	}
	// The other plausible mapping (h mod KVHeads) gives a different answer.
	wrong := func(x []float32, d int) []float32 {
		var o []float32
		for j := range n {
			for h := range cfg.Heads {
				o = append(o, x[(j*cfg.KVHeads+h%cfg.KVHeads)*d:(j*cfg.KVHeads+h%cfg.KVHeads+1)*d]...)
			}
		}
		return o
	}
	if equalBits(got, attend(t, q, wrong(k, cfg.QKDim), wrong(v, cfg.VDim), c.start, full)) {
		t.Fatal("h mod kv mapping gives the same result; the test cannot tell them apart")
	}
}

func TestAttendWindow(t *testing.T) {
	cfg := AttnConfig{Heads: 4, KVHeads: 2, QKDim: 16, VDim: 16, Scale: 0.25}
	c := attnCase{cfg: cfg, start: 6, T: 3}
	q, k, v := attnInputs(c, 13)
	full := attend(t, q, k, v, c.start, cfg)
	for _, w := range []int{c.start + c.T, c.start + c.T + 100} {
		wc := cfg
		wc.Window = w
		if !equalBits(attend(t, q, k, v, c.start, wc), full) {
			t.Fatalf("window %d >= length differs from full attention", w)
		}
	}
	// Window 1: a query sees only its own row, so the output is that row's value.
	wc := cfg
	wc.Window = 1
	got := attend(t, q, k, v, c.start, wc)
	for tk := range c.T {
		for h := range cfg.Heads {
			kh := h / 2
			row := v[((c.start+tk)*cfg.KVHeads+kh)*cfg.VDim : ((c.start+tk)*cfg.KVHeads+kh+1)*cfg.VDim]
			if !equalBits(got[(tk*cfg.Heads+h)*cfg.VDim:(tk*cfg.Heads+h+1)*cfg.VDim], row) {
				t.Fatalf("window 1, query %d head %d is not its own value row", tk, h)
			}
		}
	}
	// A shorter window really drops rows.
	wc.Window = 4
	if equalBits(attend(t, q, k, v, c.start, wc), full) {
		t.Fatal("window 4 equals full attention over 9 rows")
	}
}

// Results do not depend on GOMAXPROCS, and a paged view gives the same bits as a
// contiguous one.
func TestAttendDeterministicAndPaged(t *testing.T) {
	c := attnCases()[len(attnCases())-1]
	c.cfg.Scale = 0.125
	q, k, v := attnInputs(c, 14)
	want := attend(t, q, k, v, c.start, c.cfg)
	prev := runtime.GOMAXPROCS(1)
	one := attend(t, q, k, v, c.start, c.cfg)
	runtime.GOMAXPROCS(max(prev, 4))
	many := attend(t, q, k, v, c.start, c.cfg)
	runtime.GOMAXPROCS(prev)
	if !equalBits(one, want) || !equalBits(many, want) {
		t.Fatal("result depends on GOMAXPROCS")
	}
	page := func(x []float32, width, per int) KVView {
		rows := len(x) / width
		view := KVView{Width: width, Rows: rows, BlockRows: per}
		for r := 0; r < rows; r += per {
			view.Blocks = append(view.Blocks, slices.Clone(x[r*width:min(rows, r+per)*width]))
		}
		return view
	}
	out := make([]float32, len(want))
	kw, vw := c.cfg.KVHeads*c.cfg.QKDim, c.cfg.KVHeads*c.cfg.VDim
	if err := Attend(out, q, page(k, kw, 16), page(v, vw, 16), c.start, c.cfg); err != nil {
		t.Fatal(err)
	}
	if !equalBits(out, want) {
		t.Fatal("paged view differs from contiguous")
	}
}

func TestAttendErrors(t *testing.T) {
	cfg := AttnConfig{Heads: 4, KVHeads: 2, QKDim: 8, VDim: 8, Scale: 1}
	q := make([]float32, 2*32)
	out := make([]float32, 2*32)
	kv := make([]float32, 3*16)
	view := ContiguousView(kv, 3, 16)
	for name, f := range map[string]func() error{
		"short cache": func() error { return Attend(out, q, view, view, 2, cfg) },
		"bad out":     func() error { return Attend(out[:5], q, view, view, 1, cfg) },
		"bad width":   func() error { return Attend(out, q, ContiguousView(kv, 6, 8), view, 1, cfg) },
		"bad block": func() error {
			return Attend(out, q, KVView{Width: 16, Rows: 3, BlockRows: 2, Blocks: [][]float32{kv[:32]}}, view, 1, cfg)
		},
	} {
		if err := f(); !errors.Is(err, ErrShape) {
			t.Errorf("%s: err = %v, want ErrShape", name, err)
		}
	}
	bad := cfg
	bad.KVHeads = 3
	if err := Attend(out, q, view, view, 1, bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("heads not a multiple of kv heads: err = %v", err)
	}
}

func TestKVCache(t *testing.T) {
	c, err := NewKVCache(2, 5, 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	l := c.Layer(1)
	k := []float32{1, 2, 3, 4, 5, 6, 7, 8}
	v := []float32{9, 10, 11, 12}
	if err := l.Append(k, v, 2); err != nil {
		t.Fatal(err)
	}
	before := l.Keys()
	if err := l.Append(k[:4], v[:2], 1); err != nil {
		t.Fatal(err)
	}
	if l.Len() != 3 || c.Layer(0).Len() != 0 {
		t.Fatalf("lens %d, %d", l.Len(), c.Layer(0).Len())
	}
	if !slices.Equal(l.Keys().Row(2), []float32{1, 2, 3, 4}) || !slices.Equal(l.Values().Row(1), []float32{11, 12}) {
		t.Fatalf("rows %v %v", l.Keys().Row(2), l.Values().Row(1))
	}
	if before.Rows != 2 || !slices.Equal(before.Row(1), []float32{5, 6, 7, 8}) {
		t.Fatal("an earlier view changed after append")
	}
	err = l.Append(append(k, k...)[:12], append(v, v[:2]...), 3)
	if !errors.Is(err, ErrCacheFull) || l.Len() != 3 {
		t.Fatalf("append past capacity: err %v, len %d", err, l.Len())
	}
	if err := l.Append(k[:3], v[:2], 1); !errors.Is(err, ErrShape) {
		t.Fatalf("short key row: err %v", err)
	}
	if err := l.Append(k, v, 2); err != nil || l.Len() != 5 || l.Cap() != 5 {
		t.Fatalf("fill to capacity: err %v len %d", err, l.Len())
	}
	c.Reset()
	if l.Len() != 0 || l.Keys().Rows != 0 {
		t.Fatal("reset left rows")
	}
	// vWidth 0: values are the keys (a shared K=V head).
	s, err := NewKVCache(1, 4, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Layer(0).Append([]float32{1, 2, 3}, nil, 1); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Layer(0).Values().Row(0), []float32{1, 2, 3}) {
		t.Fatal("shared K=V values are not the keys")
	}
	if _, err := NewKVCache(1, 0, 3, 3); !errors.Is(err, ErrInvalid) {
		t.Fatalf("zero capacity: err %v", err)
	}
}

// The cache and Attend together: decode step by step equals one prefill.
func TestAttendWithCacheDecodeEqualsPrefill(t *testing.T) {
	cfg := AttnConfig{Heads: 4, KVHeads: 2, QKDim: 8, VDim: 8, Scale: 0.35}
	c := attnCase{cfg: cfg, start: 0, T: 6}
	q, k, v := attnInputs(c, 15)
	prefill := attend(t, q, k, v, 0, cfg)
	cache, err := NewKVCache(1, 6, 16, 16)
	if err != nil {
		t.Fatal(err)
	}
	l := cache.Layer(0)
	qw, ow := cfg.Heads*cfg.QKDim, cfg.Heads*cfg.VDim
	for tk := range c.T {
		if err := l.Append(k[tk*16:(tk+1)*16], v[tk*16:(tk+1)*16], 1); err != nil {
			t.Fatal(err)
		}
		out := make([]float32, ow)
		if err := Attend(out, q[tk*qw:(tk+1)*qw], l.Keys(), l.Values(), tk, cfg); err != nil {
			t.Fatal(err)
		}
		if !equalBits(out, prefill[tk*ow:(tk+1)*ow]) {
			t.Fatalf("decode step %d differs from prefill", tk)
		}
	}
}

func benchAttend(b *testing.B, cfg AttnConfig, cacheLen int) {
	r := newRand(99)
	q := randVec(r, cfg.Heads*cfg.QKDim)
	k := ContiguousView(randVec(r, cacheLen*cfg.KVHeads*cfg.QKDim), cacheLen, cfg.KVHeads*cfg.QKDim)
	v := ContiguousView(randVec(r, cacheLen*cfg.KVHeads*cfg.VDim), cacheLen, cfg.KVHeads*cfg.VDim)
	out := make([]float32, cfg.Heads*cfg.VDim)
	b.ReportAllocs()
	for b.Loop() {
		if err := Attend(out, q, k, v, cacheLen-1, cfg); err != nil {
			b.Fatal(err)
		}
	}
	flops := float64(cfg.Heads) * float64(cacheLen) * float64(cfg.QKDim+cfg.VDim) * 2
	b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// Decode (T=1) against a 2k cache, with the Go kernels and with the AVX ones (the same
// bits; kernels=go is the speed before attend_amd64.s). -cpu 1,2 adds the worker count.
func BenchmarkAttendDecode2k(b *testing.B) {
	shapes := []struct {
		name string
		cfg  AttnConfig
	}{
		{"qwen3-32h-4kv-128", AttnConfig{Heads: 32, KVHeads: 4, QKDim: 128, VDim: 128, Scale: 0.088}},
		{"mla-16h-192-128", AttnConfig{Heads: 16, KVHeads: 16, QKDim: 192, VDim: 128, Scale: 0.072}},
		{"mixtral-32h-8kv-128", AttnConfig{Heads: 32, KVHeads: 8, QKDim: 128, VDim: 128, Scale: 0.088}},
	}
	saved := useAttnAsm
	defer func() { useAttnAsm = saved }()
	for _, sh := range shapes {
		for _, asm := range []bool{false, true} {
			if asm && !saved {
				continue
			}
			name := sh.name + "/kernels=go"
			if asm {
				name = sh.name + "/kernels=avx"
			}
			b.Run(name, func(b *testing.B) {
				useAttnAsm = asm
				benchAttend(b, sh.cfg, 2048)
			})
		}
	}
}

// Attend owns its goroutines: after it returns, the goroutine count settles back to where
// it was (polled briefly, since an exiting goroutine is counted until it is descheduled).
func TestAttendNoGoroutineLeak(t *testing.T) {
	c := attnCases()[len(attnCases())-1]
	c.cfg.Scale = 0.125
	q, k, v := attnInputs(c, 16)
	before := runtime.NumGoroutine()
	for range 20 {
		attend(t, q, k, v, c.start, c.cfg)
	}
	for range 100 {
		if runtime.NumGoroutine() <= before {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%d goroutines after Attend, %d before", runtime.NumGoroutine(), before)
}
