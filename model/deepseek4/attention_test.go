package deepseek4

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestSinkSoftmaxHandValues(t *testing.T) {
	inf := float32(math.Inf(-1))
	for _, c := range []struct {
		name   string
		scores []float32
		sink   float32
		want   []float64
	}{
		// m = ln 2: exps [0.5, 1], sink e^(0−ln 2) = 0.5, denominator 2.
		{"sink in denominator", []float32{0, float32(math.Ln2)}, 0, []float64{0.25, 0.5}},
		{"masked key", []float32{inf, 0}, float32(math.Log(3)), []float64{0, 0.25}},
		{"no sink", []float32{0, float32(math.Ln2)}, inf, []float64{1.0 / 3, 2.0 / 3}},
		{"sink dominates", []float32{0, 1}, 1000, []float64{0, 0}},
		{"all masked", []float32{inf, inf}, 0, []float64{0, 0}},
		{"NaN is masked", []float32{float32(math.NaN()), 0}, inf, []float64{0, 1}},
	} {
		out := make([]float32, len(c.scores))
		SinkSoftmax(c.scores, c.sink, out)
		for i, w := range c.want {
			if !near(float64(out[i]), w, 1e-6) {
				t.Errorf("%s: w[%d] = %v, want %v", c.name, i, out[i], w)
			}
		}
	}
}

// refCausal is ordinary causal softmax attention of query position pos over rows 0..pos
// (no sink), the same rows as keys and values.
func refCausal(q, kv []float32, d, heads, pos int, scale float64) []float64 {
	out := make([]float64, heads*d)
	for h := range heads {
		s := make([]float64, pos+1)
		mx := math.Inf(-1)
		for j := range s {
			for c := range d {
				s[j] += float64(q[h*d+c]) * float64(kv[j*d+c])
			}
			s[j] *= scale
			mx = max(mx, s[j])
		}
		sum := 0.0
		for j := range s {
			s[j] = math.Exp(s[j] - mx)
			sum += s[j]
		}
		for j := range s {
			for c := range d {
				out[h*d+c] += s[j] / sum * float64(kv[j*d+c])
			}
		}
	}
	return out
}

// A window covering every token, with sinks at −Inf, is full causal attention.
func TestWindowCoveringAllIsCausalAttention(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const d, heads, T = 8, 3, 10
	kv := make([]float32, T*d)
	q := make([]float32, heads*d)
	for i := range kv {
		kv[i] = float32(rng.NormFloat64())
	}
	sink := []float32{float32(math.Inf(-1)), float32(math.Inf(-1)), float32(math.Inf(-1))}
	for pos := range T {
		for i := range q {
			q[i] = float32(rng.NormFloat64())
		}
		idx := WindowRows(pos, 128)
		if len(idx) != pos+1 {
			t.Fatalf("window rows at %d: %v", pos, idx)
		}
		out := make([]float32, heads*d)
		if err := SparseAttend(q, kv, d, sink, idx, 0.35, out); err != nil {
			t.Fatal(err)
		}
		want := refCausal(q, kv, d, heads, pos, 0.35)
		for i := range out {
			if !near(float64(out[i]), want[i], 1e-5) {
				t.Fatalf("pos %d: o[%d] = %v, causal %v", pos, i, out[i], want[i])
			}
		}
	}
	if got := WindowRows(200, 128); len(got) != 128 || got[0] != 73 || got[127] != 200 {
		t.Errorf("window at 200: first %d last %d len %d", got[0], got[len(got)-1], len(got))
	}
	// A finite sink only shrinks the output: o_sink = o · Σexp / (Σexp + exp(sink)).
	idx := WindowRows(3, 128)
	o0, o1 := make([]float32, heads*d), make([]float32, heads*d)
	_ = SparseAttend(q, kv, d, sink, idx, 0.35, o0)
	_ = SparseAttend(q, kv, d, []float32{0, 0, 0}, idx, 0.35, o1)
	for i := range o0 {
		if math.Abs(float64(o1[i])) > math.Abs(float64(o0[i]))+1e-6 {
			t.Fatalf("sink grew o[%d]: %v → %v", i, o0[i], o1[i])
		}
	}
	if err := SparseAttend(q, kv, d, sink, []int32{T}, 1, o0); !errors.Is(err, ErrShape) {
		t.Errorf("index out of range: %v", err)
	}
}

// refPool is model.py's prefill pooling written as it is there: unflatten into windows,
// add ape, build the overlap_transform tensors (zeros / −Inf for window 0's missing
// predecessor), softmax over the window axis, weighted sum.
func refPool(kv, score, ape []float32, T, ratio, d int, overlap bool) [][]float64 {
	coff := 1
	if overlap {
		coff = 2
	}
	W, w := T/ratio, coff*d
	at := func(x []float32, win, k, c int) float64 { return float64(x[(win*ratio+k)*w+c]) }
	rows := make([][]float64, W)
	for win := range W {
		n := ratio * coff
		kvT := make([][]float64, n) // [entries][d]
		scT := make([][]float64, n)
		for e := range n {
			kvT[e], scT[e] = make([]float64, d), make([]float64, d)
			for c := range d {
				switch {
				case !overlap:
					kvT[e][c] = at(kv, win, e, c)
					scT[e][c] = at(score, win, e, c) + float64(ape[e*w+c])
				case e >= ratio: // own window, second half
					kvT[e][c] = at(kv, win, e-ratio, d+c)
					scT[e][c] = at(score, win, e-ratio, d+c) + float64(ape[(e-ratio)*w+d+c])
				case win == 0:
					kvT[e][c], scT[e][c] = 0, math.Inf(-1)
				default: // previous window, first half
					kvT[e][c] = at(kv, win-1, e, c)
					scT[e][c] = at(score, win-1, e, c) + float64(ape[e*w+c])
				}
			}
		}
		rows[win] = make([]float64, d)
		for c := range d {
			mx := math.Inf(-1)
			for e := range n {
				mx = max(mx, scT[e][c])
			}
			sum := 0.0
			for e := range n {
				sum += math.Exp(scT[e][c] - mx)
			}
			for e := range n {
				rows[win][c] += math.Exp(scT[e][c]-mx) / sum * kvT[e][c]
			}
		}
	}
	return rows
}

func TestPoolHandValues(t *testing.T) {
	// ratio 2, d 1, no overlap: window 0 = tokens 1 and 3 with scores 0 and ln 3 → weights
	// ¼, ¾ → 2.5; window 1 = 5 and 7, equal scores → 6; token 9 (partial window) waits.
	ln3 := float32(math.Log(3))
	rows, err := Pool([]float32{1, 3, 5, 7, 9}, []float32{0, ln3, 0, 0, 0}, []float32{0, 0}, 2, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || !near(float64(rows[0][0]), 2.5, 1e-6) || !near(float64(rows[1][0]), 6, 1e-6) {
		t.Errorf("rows = %v, want [[2.5] [6]]", rows)
	}
	// Overlap, ratio 2, d 1 (token rows [first half, second half]): window 0 pools only its
	// own second halves (2, 4 → 3); window 1 pools window 0's first halves (1, 3) and its
	// own second halves (6, 8): mean 4.5.
	kv := []float32{1, 2, 3, 4, 5, 6, 7, 8}
	rows, err = Pool(kv, make([]float32, 8), make([]float32, 4), 2, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	if !near(float64(rows[0][0]), 3, 1e-6) || !near(float64(rows[1][0]), 4.5, 1e-6) {
		t.Errorf("overlap rows = %v, want [[3] [4.5]]", rows)
	}
	if _, err := Pool(kv, kv[:6], make([]float32, 4), 2, 1, true); !errors.Is(err, ErrShape) {
		t.Errorf("short score: %v", err)
	}
}

func TestPoolMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, c := range []struct {
		ratio, d, T int
		overlap     bool
	}{{4, 5, 19, true}, {4, 3, 16, true}, {8, 4, 27, false}, {128, 2, 300, false}} {
		coff := 1
		if c.overlap {
			coff = 2
		}
		n := c.T * coff * c.d
		kv, sc, ape := make([]float32, n), make([]float32, n), make([]float32, c.ratio*coff*c.d)
		for i := range kv {
			kv[i], sc[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64()*2)
		}
		for i := range ape {
			ape[i] = float32(rng.NormFloat64())
		}
		got, err := Pool(kv, sc, ape, c.ratio, c.d, c.overlap)
		if err != nil {
			t.Fatal(err)
		}
		want := refPool(kv, sc, ape, c.T, c.ratio, c.d, c.overlap)
		if len(got) != len(want) {
			t.Fatalf("%+v: %d rows, reference %d", c, len(got), len(want))
		}
		for w := range want {
			for j := range want[w] {
				if !near(float64(got[w][j]), want[w][j], 1e-5) {
					t.Fatalf("%+v: row %d dim %d = %v, reference %v", c, w, j, got[w][j], want[w][j])
				}
			}
		}
	}
}

func TestIndexerTopK(t *testing.T) {
	// heads 2, dim 1: q = [1, −1], w = [1, 2]; k = [3, −2, 1, 5] scores
	// Σ w·ReLU(q·k) = [3, 4, 1, 5].
	q, w, k := []float32{1, -1}, []float32{1, 2}, []float32{3, -2, 1, 5}
	for _, c := range []struct {
		visible, topk int
		want          []int32
	}{{3, 2, []int32{1, 0}}, {4, 10, []int32{3, 1, 0, 2}}, {0, 5, []int32{}}, {4, 0, []int32{}}} {
		got, err := IndexerTopK(q, k, w, 1, c.visible, c.topk)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("visible %d top %d: %v, want %v", c.visible, c.topk, got, c.want)
		}
	}
	// Ties go to the lower index.
	if got, _ := IndexerTopK([]float32{1}, []float32{2, 2, 2}, []float32{1}, 1, 3, 2); !slices.Equal(got, []int32{0, 1}) {
		t.Errorf("ties: %v", got)
	}
	// Random: the chosen rows outscore every row left out, best first.
	rng := rand.New(rand.NewPCG(11, 12))
	const heads, dim, n = 4, 8, 40
	qr, kr, wr := make([]float32, heads*dim), make([]float32, n*dim), make([]float32, heads)
	for i := range qr {
		qr[i] = float32(rng.NormFloat64())
	}
	for i := range kr {
		kr[i] = float32(rng.NormFloat64())
	}
	for i := range wr {
		wr[i] = float32(rng.Float64())
	}
	score := func(t int) float64 {
		s := 0.0
		for h := range heads {
			dot := 0.0
			for c := range dim {
				dot += float64(qr[h*dim+c]) * float64(kr[t*dim+c])
			}
			s += float64(wr[h]) * math.Max(dot, 0)
		}
		return s
	}
	got, _ := IndexerTopK(qr, kr, wr, dim, 30, 7)
	in := map[int32]bool{}
	for i, g := range got {
		in[g] = true
		if i > 0 && score(int(got[i-1])) < score(int(g)) {
			t.Errorf("not best first at %d", i)
		}
	}
	for t2 := range 30 {
		if !in[int32(t2)] && score(t2) > score(int(got[len(got)-1])) {
			t.Errorf("row %d (%v) left out, beats %v", t2, score(t2), score(int(got[len(got)-1])))
		}
	}
	for _, g := range got {
		if g >= 30 {
			t.Errorf("row %d is beyond the visible 30", g)
		}
	}
	if _, err := IndexerTopK(q, k, w, 1, 5, 1); !errors.Is(err, ErrShape) {
		t.Errorf("visible beyond rows: %v", err)
	}
}
