package ascendtest

import (
	"encoding/binary"
	"fmt"
	"math"
	"testing"

	"github.com/moemesh/moemesh/ascend"
)

// Quantised weights (I8, MXFP4). A card either supports a dtype (ascend.Supports) and
// passes these checks, or refuses it in Alloc with ErrDType. The references decode with
// ascend's codecs, which ascend's own tests pin to model/quant (this package may not
// import it).
//
// The random tests use TolF32: the reference uses the weights as the card stored them
// (read back dequantised, exact for MXFP4; for I8 one rounding of q·s), and a backend may
// sum q·x and scale once (aclnn's per-channel antiquant, the cpu kernels), which adds one
// rounding of the result: two ulps on top of the f32 accumulation bound.

// quantDTypes are the quantised weight dtypes of the contract.
var quantDTypes = []ascend.DType{ascend.I8, ascend.MXFP4}

// quantCases are GroupedMatmul shapes valid for both quantised dtypes (K a multiple of 32).
var quantCases = []gmmCase{
	{m: 13, k: 64, n: 11, counts: []int{3, 0, 5, 2, 0}},
	{m: 4, k: 32, n: 3, counts: []int{4}},
	{m: 9, k: 96, n: 33, counts: []int{1, 8}},
	{m: 40, k: 1088, n: 70, counts: []int{0, 17, 9, 1, 4}},
}

func testQuant(t *testing.T, b ascend.Backend) {
	c := openCard(t, b, 0, 0)
	for _, dt := range quantDTypes {
		t.Run(dt.String(), func(t *testing.T) {
			if !ascend.Supports(c, dt) {
				wantErr(t, fmt.Sprintf("Alloc(%v) on a card without it", dt), func() error {
					_, err := c.Alloc(dt, 4, 64)
					return err
				}, ascend.ErrDType)
				return
			}
			testQuantStorage(t, c, dt)
			testQuantGMMExact(t, c, dt)
			testQuantGMMRandom(t, c, dt)
			testQuantRows(t, c, dt)
			testQuantBad(t, c, dt)
		})
	}
}

// testQuantStorage: Bytes and the budget follow QuantLayout; Write takes the raw layout
// and ReadF32 dequantises it; WriteF32 quantises with the documented rule.
func testQuantStorage(t *testing.T, c ascend.Card, dt ascend.DType) {
	const n, k = 3, 64
	l, err := ascend.CheckQuantShape(dt, []int{n, k})
	if err != nil {
		t.Fatal(err)
	}
	before := c.MemInfo().Used
	buf, err := c.Alloc(dt, n, k)
	if err != nil {
		t.Fatalf("Alloc(%v, %d, %d): %v", dt, n, k, err)
	}
	defer func() { mustOK(t, "Free", func() error { return c.Free(buf) }) }()
	if buf.Bytes() != l.Bytes() || buf.DType() != dt || buf.Shape()[0] != n || buf.Shape()[1] != k {
		t.Errorf("buffer %v%v of %d bytes, want %v[%d %d] of %d", buf.DType(), buf.Shape(), buf.Bytes(), dt, n, k, l.Bytes())
	}
	if used := c.MemInfo().Used - before; used != l.Bytes() {
		t.Errorf("Alloc charged %d bytes, want %d", used, l.Bytes())
	}
	rng := newRand(11)
	x := uniform(rng, n*k, 3)
	raw, want := quantize(t, dt, x, n, k)
	// Written in two pieces, split inside the values, as a loader streaming a file might.
	mustOK(t, "Write", func() error { return c.Write(buf, 0, raw[:7]) })
	mustOK(t, "Write", func() error { return c.Write(buf, 7, raw[7:]) })
	checkSame(t, "Write then ReadF32", download(t, c, buf), want)
	// Rows 1 and 2 replaced at the layout's row offsets, as a loader stacking gate and up
	// into one buffer writes the second tensor.
	raw2, want2 := quantize(t, dt, uniform(rng, n*k, 0.5), n, k)
	mustOK(t, "Write of row values", func() error { return c.Write(buf, int(l.RowValues(1)), raw2[l.RowValues(1):l.Values]) })
	mustOK(t, "Write of row scales", func() error { return c.Write(buf, int(l.RowScales(1)), raw2[l.RowScales(1):]) })
	got2 := download(t, c, buf)
	checkSame(t, "row 0 after stacking", got2[:k], want[:k])
	checkSame(t, "rows 1-2 after stacking", got2[k:], want2[k:])
	mustOK(t, "WriteF32", func() error { return c.WriteF32(buf, 0, make([]float32, n*k)) })
	mustOK(t, "WriteF32", func() error { return c.WriteF32(buf, k, x[k:]) }) // rows 1, 2
	got := download(t, c, buf)
	checkSame(t, "WriteF32 of row 0 (zeros)", got[:k], make([]float32, k))
	checkSame(t, "WriteF32 then ReadF32", got[k:], want[k:])
	part := make([]float32, k+5)
	mustOK(t, "ReadF32 of part", func() error { return c.ReadF32(buf, part) })
	checkSame(t, "ReadF32 of part", part, got[:k+5])
}

// quantize is the expected storage of x [n, k] in dt and its dequantised values.
func quantize(t *testing.T, dt ascend.DType, x []float32, n, k int) (raw []byte, deq []float32) {
	t.Helper()
	l, err := ascend.CheckQuantShape(dt, []int{n, k})
	if err != nil {
		t.Fatal(err)
	}
	raw, deq = make([]byte, l.Bytes()), make([]float32, n*k)
	vals, scales := raw[:l.Values], raw[l.Values:]
	for r := range n {
		row, d := x[r*k:(r+1)*k], deq[r*k:(r+1)*k]
		if dt == ascend.I8 {
			s, err := ascend.QuantizeI8Row(vals[r*k:(r+1)*k], row)
			if err != nil {
				t.Fatal(err)
			}
			binary.LittleEndian.PutUint32(scales[4*r:], math.Float32bits(s))
			ascend.DequantI8Row(d, vals[r*k:(r+1)*k], s)
			continue
		}
		p, s := vals[r*k/2:(r+1)*k/2], scales[r*k/ascend.MXBlock:(r+1)*k/ascend.MXBlock]
		if err := ascend.QuantizeMXFP4Row(p, s, row); err != nil {
			t.Fatal(err)
		}
		if err := ascend.DequantMXFP4Row(d, p, s); err != nil {
			t.Fatal(err)
		}
	}
	return raw, deq
}

func checkSame(t *testing.T, name string, got, want []float32) {
	t.Helper()
	for i := range want {
		if !sameBits(got[i], want[i]) {
			t.Errorf("%s: value %d is %g, want %g", name, i, got[i], want[i])
			return
		}
	}
}

// quantGrid returns weights [n, k] that dt stores exactly and whose products with grid(…, 32)
// activations sum exactly in float32, so tolerance 0 applies (as in testGMMExact). I8: j/128
// with every row holding ±127/128, so the scale is 1/128 and q = j. MXFP4: E2M1 values/8
// with every 32-block holding ±6/8, so the scale is 2⁻³ (products are multiples of 2⁻⁹,
// sums stay below 2¹⁰).
func quantGrid(seed uint64, dt ascend.DType, n, k int) []float32 {
	rng := newRand(seed)
	w := make([]float32, n*k)
	for i := range w {
		if dt == ascend.I8 {
			w[i] = float32(rng.IntN(255)-127) / 128
			if i%k == 0 {
				w[i] = 127.0 / 128
			}
			continue
		}
		w[i] = ascend.E2M1Values[rng.IntN(16)] / 8
		if i%ascend.MXBlock == 0 {
			w[i] = -6.0 / 8
		}
	}
	return w
}

func testQuantGMMExact(t *testing.T, c ascend.Card, dt ascend.DType) {
	for ci, tc := range quantCases {
		name := fmt.Sprintf("exact %v/M%d_K%d_N%d_counts%v", dt, tc.m, tc.k, tc.n, tc.counts)
		x := grid(newRand(uint64(20+ci)), tc.m*tc.k, 32)
		ws := make([][]float32, len(tc.counts))
		for g := range ws {
			ws[g] = quantGrid(uint64(30+10*ci+g), dt, tc.n, tc.k)
		}
		out, stored := runGMM(t, c, dt, tc, x, ws)
		for g := range ws {
			checkSame(t, name+": grid weights stored", stored[g], ws[g])
		}
		want, scale := refGMM(x, tc.m, tc.k, ws, tc.n, tc.counts)
		checkGMM(t, name, tc, out, want, scale, 0)
	}
}

func testQuantGMMRandom(t *testing.T, c ascend.Card, dt ascend.DType) {
	rng := newRand(5)
	for _, tc := range quantCases {
		name := fmt.Sprintf("random %v/M%d_K%d_N%d_counts%v", dt, tc.m, tc.k, tc.n, tc.counts)
		x := uniform(rng, tc.m*tc.k, 1)
		ws := make([][]float32, len(tc.counts))
		for g := range ws {
			ws[g] = uniform(rng, tc.n*tc.k, float32(g+1)) // groups of different scales
		}
		out, stored := runGMM(t, c, dt, tc, x, ws)
		want, scale := refGMM(x, tc.m, tc.k, stored, tc.n, tc.counts)
		checkGMM(t, name, tc, out, want, scale, TolF32)
	}
	// One call mixing weight dtypes across groups.
	const m, k, n = 12, 64, 10
	x := uniform(rng, m*k, 1)
	dts := []ascend.DType{dt, ascend.F32, dt, ascend.BF16}
	counts := []int64{4, 3, 5, 0}
	bufs := make([]ascend.Buffer, len(dts))
	stored := make([][]float32, len(dts))
	for g, d := range dts {
		bufs[g] = upload(t, c, d, uniform(rng, n*k, 1), n, k)
		stored[g] = download(t, c, bufs[g])
	}
	xb := upload(t, c, ascend.F32, x, m, k)
	ob := upload(t, c, ascend.F32, fill(m*n, sentinel), m, n)
	mustOK(t, "GroupedMatmul", func() error { return c.GroupedMatmul(ob, xb, bufs, counts) })
	tc := gmmCase{m: m, k: k, n: n, counts: []int{4, 3, 5, 0}}
	want, scale := refGMM(x, m, k, stored, n, tc.counts)
	checkGMM(t, fmt.Sprintf("mixed %v, f32 and bf16 groups", dt), tc, download(t, c, ob), want, scale, TolBF16)
	for _, bb := range append(bufs, xb, ob) {
		mustOK(t, "Free", func() error { return c.Free(bb) })
	}
}

// testQuantRows: a row's result does not depend on the batch (the Ops contract).
func testQuantRows(t *testing.T, c ascend.Card, dt ascend.DType) {
	const k, n, rows = 608, 45, 13
	rng := newRand(6)
	w := upload(t, c, dt, uniform(rng, n*k, 1), n, k)
	x := uniform(rng, rows*k, 2)
	run := func(xs []float32, m int) []float32 {
		xb := upload(t, c, ascend.F32, xs, m, k)
		ob := upload(t, c, ascend.F32, nil, m, n)
		mustOK(t, "GroupedMatmul", func() error {
			return c.GroupedMatmul(ob, xb, []ascend.Buffer{w}, []int64{int64(m)})
		})
		out := download(t, c, ob)
		for _, bb := range []ascend.Buffer{xb, ob} {
			mustOK(t, "Free", func() error { return c.Free(bb) })
		}
		return out
	}
	all := run(x, rows)
	for _, r := range []int{0, 5, 8, 12} {
		alone := run(x[r*k:(r+1)*k], 1)
		for j := range alone {
			if !sameBits(alone[j], all[r*n+j]) {
				t.Errorf("%v: row %d col %d is %g alone, %g in a batch of %d", dt, r, j, alone[j], all[r*n+j], rows)
				break
			}
		}
	}
	mustOK(t, "Free", func() error { return c.Free(w) })
}

// testQuantBad: shapes, partial rows, non-finite values and the ops that take no quantised
// buffers fail with the documented errors.
func testQuantBad(t *testing.T, c ascend.Card, dt ascend.DType) {
	alloc := func(shape ...int) func() error {
		return func() error {
			b, err := c.Alloc(dt, shape...)
			if err == nil {
				_ = c.Free(b)
			}
			return err
		}
	}
	wantErr(t, "Alloc 1-D", alloc(64), ascend.ErrShape)
	wantErr(t, "Alloc 3-D", alloc(2, 2, 32), ascend.ErrShape)
	wantErr(t, "Alloc negative", alloc(-1, 32), ascend.ErrShape)
	if dt == ascend.MXFP4 {
		wantErr(t, "Alloc K=40", alloc(4, 40), ascend.ErrShape)
	}
	const n, k = 4, 32
	w := upload(t, c, dt, nil, n, k)
	f := upload(t, c, ascend.F32, nil, n, k)
	o := upload(t, c, ascend.F32, nil, n, n)
	size := int(w.Bytes())
	wantErr(t, "Write past the end", func() error { return c.Write(w, size-3, make([]byte, 4)) }, ascend.ErrShape)
	wantErr(t, "Write at -1", func() error { return c.Write(w, -1, make([]byte, 1)) }, ascend.ErrShape)
	wantErr(t, "WriteF32 of part of a row", func() error { return c.WriteF32(w, 0, make([]float32, k-1)) }, ascend.ErrShape)
	wantErr(t, "WriteF32 off a row start", func() error { return c.WriteF32(w, 1, make([]float32, k)) }, ascend.ErrShape)
	wantErr(t, "WriteF32 past the end", func() error { return c.WriteF32(w, k, make([]float32, n*k)) }, ascend.ErrShape)
	nan := make([]float32, k)
	nan[3] = float32(math.NaN())
	wantErr(t, "WriteF32 of NaN", func() error { return c.WriteF32(w, 0, nan) }, ascend.ErrInvalid)
	wantErr(t, "ReadF32 past the end", func() error { return c.ReadF32(w, make([]float32, n*k+1)) }, ascend.ErrShape)
	wantErr(t, "GroupedMatmul with quantised x", func() error {
		return c.GroupedMatmul(o, w, []ascend.Buffer{f}, []int64{n})
	}, ascend.ErrDType)
	wantErr(t, "GroupedMatmul into quantised out", func() error {
		return c.GroupedMatmul(w, f, []ascend.Buffer{f}, []int64{n})
	}, ascend.ErrDType)
	wantErr(t, "GroupedMatmul with a [4, 32] weight for N=8", func() error {
		o8 := upload(t, c, ascend.F32, nil, n, 8)
		defer func() { _ = c.Free(o8) }()
		return c.GroupedMatmul(o8, f, []ascend.Buffer{w}, []int64{n})
	}, ascend.ErrShape)
	h := upload(t, c, ascend.F32, nil, n, k/2)
	wantErr(t, "SwiGLU of a quantised x", func() error { return c.SwiGLU(h, w, 0) }, ascend.ErrDType)
	wantErr(t, "ScatterAdd of a quantised x", func() error {
		return c.ScatterAdd(f, w, []int32{0}, []int32{0}, []float32{1})
	}, ascend.ErrDType)
	for _, bb := range []ascend.Buffer{w, f, o, h} {
		mustOK(t, "Free", func() error { return c.Free(bb) })
	}
}
