package deepseek4

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol*math.Max(1, math.Abs(b)) }

// Columns end normalised (the last step); rows converge more slowly, and with logits
// this spread 20 iterations leave them within a few percent of 1.

// refSinkhorn is kernel.py's comb normalisation on a matrix, written as whole-matrix
// steps (softmax of each row, then column and row divisions).
func refSinkhorn(l [][]float64, iters int, eps float64) [][]float64 {
	n := len(l)
	c := make([][]float64, n)
	for i := range l {
		c[i] = make([]float64, n)
		s := 0.0
		for j := range l[i] {
			c[i][j] = math.Exp(l[i][j])
			s += c[i][j]
		}
		for j := range c[i] {
			c[i][j] = c[i][j]/s + eps
		}
	}
	cols := func() {
		for j := range n {
			s := 0.0
			for i := range n {
				s += c[i][j]
			}
			for i := range n {
				c[i][j] /= s + eps
			}
		}
	}
	rows := func() {
		for i := range n {
			s := 0.0
			for _, v := range c[i] {
				s += v
			}
			for j := range c[i] {
				c[i][j] /= s + eps
			}
		}
	}
	cols()
	for range iters - 1 {
		rows()
		cols()
	}
	return c
}

func TestSinkhornHandValues(t *testing.T) {
	// hc 2, comb logits [[ln 3, 0], [0, 0]], eps 0: row softmax [[.75 .25] [.5 .5]], then
	// columns → [[.6 .3333] [.4 .6667]]; a second iteration (rows, columns) →
	// [[.631579 .363636] [.368421 .636364]].
	mixes := []float32{0, 0, 0, 0, float32(math.Log(3)), 0, 0, 0}
	base := make([]float32, 8)
	scale := []float32{1, 1, 1}
	for iters, want := range map[int][]float64{1: {0.6, 1.0 / 3, 0.4, 2.0 / 3}, 2: {0.631578947, 0.363636364, 0.368421053, 0.636363636}} {
		m, err := SplitSinkhorn(mixes, scale, base, 2, iters, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range want {
			if !near(float64(m.Comb[i]), w, 1e-6) {
				t.Errorf("iters %d: comb[%d] = %v, want %v", iters, i, m.Comb[i], w)
			}
		}
		// pre = sigmoid(0)+0 = 0.5, post = 2·sigmoid(0) = 1.
		if m.Pre[0] != 0.5 || m.Pre[1] != 0.5 || m.Post[0] != 1 || m.Post[1] != 1 {
			t.Errorf("pre %v post %v", m.Pre, m.Post)
		}
	}
	// pre = sigmoid(m·s0 + b) + eps; post = 2·sigmoid(m·s1 + b).
	m, _ := SplitSinkhorn([]float32{1, -2, 0.5, 3, 0, 0, 0, 0}, []float32{2, 0.5, 1}, []float32{0.5, 0, -1, 0, 0, 0, 0, 0}, 2, 1, 1e-6)
	for i, w := range []float64{1/(1+math.Exp(-2.5)) + 1e-6, 1/(1+math.Exp(4)) + 1e-6} {
		if !near(float64(m.Pre[i]), w, 1e-6) {
			t.Errorf("pre[%d] = %v, want %v", i, m.Pre[i], w)
		}
	}
	for i, w := range []float64{2 / (1 + math.Exp(0.75)), 2 / (1 + math.Exp(-1.5))} {
		if !near(float64(m.Post[i]), w, 1e-6) {
			t.Errorf("post[%d] = %v, want %v", i, m.Post[i], w)
		}
	}
}

func TestSinkhornMatchesReferenceAndIsDoublyStochastic(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const hc = 4
	for trial := range 50 {
		mixes, base := make([]float32, 24), make([]float32, 24)
		for i := range mixes {
			mixes[i] = float32(rng.NormFloat64() * 2)
			base[i] = float32(rng.NormFloat64())
		}
		scale := []float32{float32(rng.Float64()), float32(rng.Float64()), float32(rng.Float64() * 3)}
		m, err := SplitSinkhorn(mixes, scale, base, hc, 20, 1e-6)
		if err != nil {
			t.Fatal(err)
		}
		l := make([][]float64, hc)
		for i := range hc {
			l[i] = make([]float64, hc)
			for j := range hc {
				l[i][j] = float64(mixes[8+i*hc+j])*float64(scale[2]) + float64(base[8+i*hc+j])
			}
		}
		ref := refSinkhorn(l, 20, 1e-6)
		for i := range hc {
			rs, cs := 0.0, 0.0
			for j := range hc {
				if !near(float64(m.Comb[i*hc+j]), ref[i][j], 1e-5) {
					t.Fatalf("trial %d: comb[%d,%d] = %v, reference %v", trial, i, j, m.Comb[i*hc+j], ref[i][j])
				}
				rs += float64(m.Comb[i*hc+j])
				cs += float64(m.Comb[j*hc+i])
			}
			if math.Abs(cs-1) > 1e-5 || math.Abs(rs-1) > 0.1 {
				t.Fatalf("trial %d: row %d sums to %v, column to %v", trial, i, rs, cs)
			}
		}
	}
	if _, err := SplitSinkhorn(make([]float32, 23), make([]float32, 3), make([]float32, 24), 4, 20, 0); !errors.Is(err, ErrShape) {
		t.Errorf("short mixes: %v", err)
	}
}

// refHC runs hc_pre, a sublayer f(u) = 2u + 1, hc_post and hc_head on one token with
// plain matrix products, for streams x [hc][d].
func refHC(x [][]float64, fn [][]float64, scale, base []float64, hfn [][]float64, hscale, hbase []float64, normEps, eps float64, iters int) (pre []float64, out [][]float64, head []float64) {
	hc, d := len(x), len(x[0])
	var flat []float64
	for _, s := range x {
		flat = append(flat, s...)
	}
	ms := 0.0
	for _, v := range flat {
		ms += v * v
	}
	rs := 1 / math.Sqrt(ms/float64(len(flat))+normEps)
	mix := make([]float64, len(fn))
	for k, row := range fn {
		for i, w := range row {
			mix[k] += w * flat[i]
		}
		mix[k] *= rs
	}
	sig := func(v float64) float64 { return 1 / (1 + math.Exp(-v)) }
	pre, post := make([]float64, hc), make([]float64, hc)
	for j := range hc {
		pre[j] = sig(mix[j]*scale[0]+base[j]) + eps
		post[j] = 2 * sig(mix[hc+j]*scale[1]+base[hc+j])
	}
	l := make([][]float64, hc)
	for i := range hc {
		l[i] = make([]float64, hc)
		for j := range hc {
			l[i][j] = mix[2*hc+i*hc+j]*scale[2] + base[2*hc+i*hc+j]
		}
	}
	comb := refSinkhorn(l, iters, eps)
	u := make([]float64, d)
	for j := range hc {
		for c := range d {
			u[c] += pre[j] * x[j][c]
		}
	}
	out = make([][]float64, hc)
	for j := range hc {
		out[j] = make([]float64, d)
		for c := range d {
			out[j][c] = post[j] * (2*u[c] + 1)
			for i := range hc {
				out[j][c] += comb[i][j] * x[i][c]
			}
		}
	}
	var f2 []float64
	for _, s := range out {
		f2 = append(f2, s...)
	}
	ms = 0
	for _, v := range f2 {
		ms += v * v
	}
	rs = 1 / math.Sqrt(ms/float64(len(f2))+normEps)
	head = make([]float64, d)
	for j, row := range hfn {
		m := 0.0
		for i, w := range row {
			m += w * f2[i]
		}
		p := sig(m*rs*hscale[0]+hbase[j]) + eps
		for c := range d {
			head[c] += p * out[j][c]
		}
	}
	return u, out, head
}

func TestHCPrePostHeadMatchReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const hc, d = 4, 6
	f32 := func(v []float64) []float32 {
		o := make([]float32, len(v))
		for i, x := range v {
			o[i] = float32(x)
		}
		return o
	}
	randv := func(n int, s float64) []float64 {
		o := make([]float64, n)
		for i := range o {
			o[i] = float64(float32(rng.NormFloat64() * s)) // exactly representable in f32
		}
		return o
	}
	rows := func(v []float64, n int) [][]float64 {
		o := make([][]float64, len(v)/n)
		for i := range o {
			o[i] = v[i*n : (i+1)*n]
		}
		return o
	}
	flat, fn, base, scale := randv(hc*d, 1), randv(24*hc*d, 0.3), randv(24, 0.5), randv(3, 1)
	hfn, hbase, hscale := randv(hc*hc*d, 0.3), randv(hc, 0.5), randv(1, 1)
	wantU, wantOut, wantHead := refHC(rows(flat, d), rows(fn, hc*d), scale, base, rows(hfn, hc*d), hscale, hbase, 1e-6, 1e-6, 20)

	h := HC{Fn: f32(fn), Base: f32(base), Scale: f32(scale), Mult: hc, Iters: 20, NormEps: 1e-6, Eps: 1e-6}
	u, mix, err := h.Pre(f32(flat))
	if err != nil {
		t.Fatal(err)
	}
	f := make([]float32, d)
	for c := range d {
		if !near(float64(u[c]), wantU[c], 1e-5) {
			t.Errorf("u[%d] = %v, reference %v", c, u[c], wantU[c])
		}
		f[c] = 2*u[c] + 1
	}
	streams, err := Post(f, f32(flat), mix)
	if err != nil {
		t.Fatal(err)
	}
	for j := range hc {
		for c := range d {
			if !near(float64(streams[j*d+c]), wantOut[j][c], 1e-5) {
				t.Errorf("X'[%d][%d] = %v, reference %v", j, c, streams[j*d+c], wantOut[j][c])
			}
		}
	}
	head, err := HC{Fn: f32(hfn), Base: f32(hbase), Scale: f32(hscale), Mult: hc, NormEps: 1e-6, Eps: 1e-6}.Head(streams)
	if err != nil {
		t.Fatal(err)
	}
	for c := range d {
		if !near(float64(head[c]), wantHead[c], 1e-5) {
			t.Errorf("head[%d] = %v, reference %v", c, head[c], wantHead[c])
		}
	}
}

func TestPostHandValues(t *testing.T) {
	// X'0 = 1·1 + 0.6·2 + 0.4·3 = 3.4; X'1 = 0.5·1 + 0.4·2 + 0.6·3 = 3.1.
	out, err := Post([]float32{1}, []float32{2, 3}, Mix{Post: []float32{1, 0.5}, Comb: []float32{0.6, 0.4, 0.4, 0.6}})
	if err != nil {
		t.Fatal(err)
	}
	if !near(float64(out[0]), 3.4, 1e-6) || !near(float64(out[1]), 3.1, 1e-6) {
		t.Errorf("Post = %v, want [3.4 3.1]", out)
	}
	if _, err := Post([]float32{1}, []float32{2}, Mix{Post: []float32{1, 0.5}, Comb: make([]float32, 4)}); !errors.Is(err, ErrShape) {
		t.Errorf("short streams: %v", err)
	}
	if _, _, err := (HC{Fn: make([]float32, 5), Mult: 2}).Pre(make([]float32, 4)); !errors.Is(err, ErrShape) {
		t.Errorf("short fn: %v", err)
	}
}
