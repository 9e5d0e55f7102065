package ascendtest

import (
	"fmt"
	"math"
	"testing"

	"github.com/moemesh/moemesh/ascend"
)

// sentinel pre-fills outputs, to see which elements an op wrote.
const sentinel = -7777.25

// gmmCase is one GroupedMatmul shape. The shapes cover K below, at and past typical lane
// widths and k blocks (K % 8 ≠ 0 included), N past typical column tiles with a ragged
// edge, row counts that are and are not multiples of typical row blocks, empty groups and
// rows past sum(counts).
type gmmCase struct {
	m, k, n int
	counts  []int
}

var gmmCases = []gmmCase{
	{m: 13, k: 37, n: 11, counts: []int{3, 0, 5, 2, 0}},
	{m: 4, k: 7, n: 3, counts: []int{4}},
	{m: 5, k: 8, n: 1, counts: []int{5}},
	{m: 6, k: 64, n: 33, counts: []int{2, 4}},
	{m: 40, k: 1100, n: 70, counts: []int{0, 17, 9, 1, 4}},
	{m: 3, k: 16, n: 5, counts: []int{0, 0}},
}

// runGMM uploads x and the weights, runs GroupedMatmul into a sentinel-filled out and
// returns out and the weights as stored (read back, so rounding is the backend's).
func runGMM(t *testing.T, c ascend.Card, dt ascend.DType, tc gmmCase, x []float32, ws [][]float32) (out []float32, stored [][]float32) {
	t.Helper()
	xb := upload(t, c, ascend.F32, x, tc.m, tc.k)
	ob := upload(t, c, ascend.F32, fill(tc.m*tc.n, sentinel), tc.m, tc.n)
	bufs := make([]ascend.Buffer, len(ws))
	counts := make([]int64, len(ws))
	for g, w := range ws {
		bufs[g] = upload(t, c, dt, w, tc.n, tc.k)
		stored = append(stored, download(t, c, bufs[g]))
		counts[g] = int64(tc.counts[g])
	}
	mustOK(t, "GroupedMatmul", func() error { return c.GroupedMatmul(ob, xb, bufs, counts) })
	out = download(t, c, ob)
	for _, b := range append(bufs, xb, ob) {
		mustOK(t, "Free", func() error { return c.Free(b) })
	}
	return out, stored
}

// checkGMM compares out with the reference: covered rows within tol·scale, the rest
// untouched.
func checkGMM(t *testing.T, name string, tc gmmCase, out []float32, want, scale []float64, tol float64) {
	t.Helper()
	bad := 0
	for i, g := range out {
		w := want[i]
		var ok bool
		if math.IsNaN(w) {
			ok = g == sentinel
		} else {
			ok = math.Abs(float64(g)-w) <= tol*scale[i]
		}
		if !ok && bad < 5 {
			bad++
			if math.IsNaN(w) {
				t.Errorf("%s: out[%d][%d] = %g past sum(counts), want it untouched (%g)", name, i/tc.n, i%tc.n, g, sentinel)
			} else {
				t.Errorf("%s: out[%d][%d] = %.9g, want %.9g ± %.3g", name, i/tc.n, i%tc.n, g, w, tol*scale[i])
			}
		}
	}
}

// testGMMExact uses grid values (x = i/32, w = j/128, |x|, |w| ≤ 1): products are
// multiples of 2⁻¹², partial sums stay below K ≤ 1100 < 2¹¹, so every partial sum fits in
// float32's 24 bits and any summation order gives the exact float64 result. Tolerance 0
// catches any wrong index, lost term or lost row, for every weight dtype.
func testGMMExact(t *testing.T, b ascend.Backend) {
	c := openCard(t, b, 0, 0)
	rng := newRand(2)
	for _, dt := range dtypes {
		for _, tc := range gmmCases {
			name := fmt.Sprintf("%v/M%d_K%d_N%d_counts%v", dt, tc.m, tc.k, tc.n, tc.counts)
			x := grid(rng, tc.m*tc.k, 32)
			ws := make([][]float32, len(tc.counts))
			for g := range ws {
				ws[g] = grid(rng, tc.n*tc.k, 128)
			}
			out, stored := runGMM(t, c, dt, tc, x, ws)
			for g := range ws {
				for i, v := range stored[g] {
					if v != ws[g][i] {
						t.Fatalf("%s: grid weight %g stored as %g", name, ws[g][i], v)
					}
				}
			}
			want, scale := refGMM(x, tc.m, tc.k, ws, tc.n, tc.counts)
			checkGMM(t, name, tc, out, want, scale, 0)
		}
	}
}

// testGMMRandom uses uniform values and the per-dtype tolerances.
func testGMMRandom(t *testing.T, b ascend.Backend) {
	c := openCard(t, b, 0, 0)
	rng := newRand(3)
	for _, dt := range dtypes {
		for _, tc := range gmmCases {
			name := fmt.Sprintf("%v/M%d_K%d_N%d_counts%v", dt, tc.m, tc.k, tc.n, tc.counts)
			x := uniform(rng, tc.m*tc.k, 1)
			ws := make([][]float32, len(tc.counts))
			for g := range ws {
				ws[g] = uniform(rng, tc.n*tc.k, 1)
			}
			out, stored := runGMM(t, c, dt, tc, x, ws)
			want, scale := refGMM(x, tc.m, tc.k, stored, tc.n, tc.counts)
			checkGMM(t, name, tc, out, want, scale, tolFor(dt))
		}
	}
}

// testGMMRows computes the same rows in different batches and compares bits: alone, in
// batches of other sizes, at other positions, in groups at other list positions, next to
// empty groups and unused rows, and twice in a row.
func testGMMRows(t *testing.T, b ascend.Backend) {
	const k, n = 605, 45 // k past a 512 block with a ragged tail; n past a 32 column tile
	c := openCard(t, b, 0, 0)
	rng := newRand(4)
	for _, dt := range []ascend.DType{ascend.F32, ascend.BF16} {
		ws := make([]ascend.Buffer, 3)
		for g := range ws {
			ws[g] = upload(t, c, dt, uniform(rng, n*k, 1), n, k)
		}
		const rows = 23
		x := uniform(rng, rows*k, 2)
		groupOf := func(r int) int { // batch A: rows 0-7 → W0, 8-17 → W1, 18-22 → W2
			switch {
			case r < 8:
				return 0
			case r < 18:
				return 1
			}
			return 2
		}
		// run computes the rows order[i] of x (one per batch position) and returns each
		// covered position's output row.
		run := func(order []int, wsel []int, counts []int64) [][]float32 {
			m := len(order)
			xs := make([]float32, m*k)
			for i, r := range order {
				copy(xs[i*k:(i+1)*k], x[r*k:(r+1)*k])
			}
			xb := upload(t, c, ascend.F32, xs, m, k)
			ob := upload(t, c, ascend.F32, nil, m, n)
			bufs := make([]ascend.Buffer, len(wsel))
			for i, g := range wsel {
				bufs[i] = ws[g]
			}
			mustOK(t, "GroupedMatmul", func() error { return c.GroupedMatmul(ob, xb, bufs, counts) })
			flat := download(t, c, ob)
			var covered int64
			for _, cnt := range counts {
				covered += cnt
			}
			res := make([][]float32, covered)
			for i := range res {
				res[i] = flat[i*n : (i+1)*n]
			}
			for _, bb := range []ascend.Buffer{xb, ob} {
				mustOK(t, "Free", func() error { return c.Free(bb) })
			}
			return res
		}
		seq := make([]int, rows)
		for i := range seq {
			seq[i] = i
		}
		a := run(seq, []int{0, 1, 2}, []int64{8, 10, 5})
		// compare checks that position i of got, which holds row order[i], matches batch A.
		compare := func(what string, order []int, got [][]float32) {
			t.Helper()
			for i, row := range got {
				r := order[i]
				for j := range row {
					if !sameBits(row[j], a[r][j]) {
						t.Errorf("%v: row %d col %d is %g %s, %g in the first batch", dt, r, j, row[j], what, a[r][j])
						return
					}
				}
			}
		}
		compare("when repeated", seq, run(seq, []int{0, 1, 2}, []int64{8, 10, 5}))
		for _, r := range []int{0, 3, 9, 17, 22} {
			compare("alone", []int{r}, run([]int{r}, []int{groupOf(r)}, []int64{1}))
		}
		// Reordered: W2's rows reversed first, then an empty group, W0's, W1's; two unused
		// rows at the end.
		var order []int
		for r := 22; r >= 18; r-- {
			order = append(order, r)
		}
		order = append(order, seq[:18]...)
		order = append(order, 0, 1)
		compare("reordered", order, run(order, []int{2, 1, 0, 1}, []int64{5, 0, 8, 10}))
		// Each row five times in one group (a full row block and a leftover row).
		for _, r := range []int{5, 12} {
			five := []int{r, r, r, r, r}
			compare("in a block of copies", five, run(five, []int{groupOf(r)}, []int64{5}))
		}
		for _, w := range ws {
			mustOK(t, "Free", func() error { return c.Free(w) })
		}
	}
}
