package cpu

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model/quant"
)

// Quantised weights against references built with model/quant's decoders (test files may
// import it; the package may not). The tolerance of the float64 references is 1e-5 of
// Σ_k |x_k·w_k| per output: the kernels sum K/8 products per lane in float32 (each
// addition rounds by at most 2⁻²⁴ of the running |sum| ≤ Σ|x·w|), so K = 2048 allows
// 256·2⁻²⁴ ≈ 1.5e-5 in the worst case and random signs give far less; I8 adds one rounding
// for the final scale. MXFP4 is also checked bit for bit against f32 weights holding its
// dequantised values, which is what kernel.go promises.

type quantCase struct {
	m, k, n int
	counts  []int64
}

var quantCases = []quantCase{
	{1, 32, 5, []int64{1}},
	{4, 64, 9, []int64{4}},
	{13, 608, 37, []int64{8, 0, 5}},  // an 8-row block, a 4-row block and a leftover row
	{37, 1088, 70, []int64{21, 16}},  // past kChunk and mxChunk, ragged column tile
	{2, 2048, 33, []int64{1, 1}},     // GEMV, two experts
	{9, 7168, 11, []int64{9}},        // long rows: narrow panels
	{6, 96, 3, []int64{0, 4}},        // an empty group and rows past sum(counts)
	{16, 2048, 64, []int64{8, 4, 4}}, // decode-like and prefill-like blocks in one call
	{9, 96, 17, []int64{2, 3, 4}},    // 2 and 3 rows decode in registers, 4 through the f32 panel (mxPanelRows)
}

// kernelModes runs fn with each kernel set this machine has: default (AVX-512 with AVX512BW's
// bf16 T=1 kernel, or AVX2), AVX-512 without it, AVX2 only and portable Go. It restores the
// selection before it returns (withoutWide and withoutAsm restore only at the end of the
// test).
func kernelModes(t *testing.T, fn func(mode string)) {
	saved := [3]bool{useAsm, useWide, useBW}
	defer func() { useAsm, useWide, useBW = saved[0], saved[1], saved[2] }()
	fn("default")
	if useBW {
		useBW = false
		fn("avx512f")
	}
	if useWide {
		useWide = false
		fn("avx2")
	}
	if useAsm {
		useAsm, useWide = false, false
		fn("portable")
	}
}

func randVals(rng *rand.Rand, n int, s float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32((rng.Float64()*2 - 1) * s)
	}
	return v
}

// gmmWith runs GroupedMatmul of x [m, k] over weight buffers and returns out [m, n]
// (rows past sum(counts) hold NaN, which GroupedMatmul leaves alone).
func gmmWith(t *testing.T, c ascend.Card, x []float32, m, k, n int, ws []ascend.Buffer, counts []int64) []float32 {
	t.Helper()
	xb, err := c.Alloc(ascend.F32, m, k)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := c.Alloc(ascend.F32, m, n)
	if err != nil {
		t.Fatal(err)
	}
	nan := make([]float32, m*n)
	for i := range nan {
		nan[i] = float32(math.NaN())
	}
	for _, e := range []error{c.WriteF32(xb, 0, x), c.WriteF32(ob, 0, nan), c.GroupedMatmul(ob, xb, ws, counts)} {
		if e != nil {
			t.Fatal(e)
		}
	}
	out := make([]float32, m*n)
	if err := c.ReadF32(ob, out); err != nil {
		t.Fatal(err)
	}
	_, _ = c.Free(xb), c.Free(ob)
	return out
}

// checkRef compares out with Σ x·w in float64 (w dequantised, [groups][n·k]).
func checkRef(t *testing.T, name string, out, x []float32, w [][]float32, tc quantCase) {
	t.Helper()
	row := 0
	for g, cnt := range tc.counts {
		for r := row; r < row+int(cnt); r++ {
			for j := range tc.n {
				var sum, mag float64
				for k := range tc.k {
					p := float64(x[r*tc.k+k]) * float64(w[g][j*tc.k+k])
					sum += p
					mag += math.Abs(p)
				}
				if got := float64(out[r*tc.n+j]); math.Abs(got-sum) > 1e-5*mag {
					t.Fatalf("%s: out[%d][%d] = %.9g, want %.9g ± %.3g", name, r, j, got, sum, 1e-5*mag)
				}
			}
		}
		row += int(cnt)
	}
	for i := row * tc.n; i < len(out); i++ {
		if out[i] == out[i] {
			t.Fatalf("%s: out[%d] = %g past sum(counts), want it unwritten", name, i, out[i])
		}
	}
}

func TestMXFP4GroupedMatmul(t *testing.T) {
	c, err := Backend{Threads: 2}.OpenCard(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rng := rand.New(rand.NewPCG(7, 8))
	for ci, tc := range quantCases {
		x := randVals(rng, tc.m*tc.k, 2)
		var mx, f32 []ascend.Buffer
		var deq [][]float32
		for range tc.counts {
			// Rows of different magnitudes, so blocks get different scales.
			w := randVals(rng, tc.n*tc.k, math.Ldexp(1, rng.IntN(12)-6))
			packed, scales, err := quant.QuantMXFP4(w, tc.n, tc.k)
			if err != nil {
				t.Fatal(err)
			}
			d := make([]float32, tc.n*tc.k)
			if err := quant.DequantMXFP4(packed, tc.n, tc.k, scales, d); err != nil {
				t.Fatal(err)
			}
			deq = append(deq, d)
			b, err := c.Alloc(ascend.MXFP4, tc.n, tc.k)
			if err != nil {
				t.Fatal(err)
			}
			// The storage is the two checkpoint tensors back to back.
			if err := c.Write(b, 0, packed); err != nil {
				t.Fatal(err)
			}
			if err := c.Write(b, len(packed), scales); err != nil {
				t.Fatal(err)
			}
			mx = append(mx, b)
			fb, err := c.Alloc(ascend.F32, tc.n, tc.k)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.WriteF32(fb, 0, d); err != nil {
				t.Fatal(err)
			}
			f32 = append(f32, fb)
		}
		kernelModes(t, func(mode string) {
			name := fmt.Sprintf("case %d %s", ci, mode)
			got := gmmWith(t, c, x, tc.m, tc.k, tc.n, mx, tc.counts)
			want := gmmWith(t, c, x, tc.m, tc.k, tc.n, f32, tc.counts)
			for i := range got {
				if !(got[i] != got[i] && want[i] != want[i]) && math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("%s: out[%d] = %g with mxfp4, %g with its f32 values", name, i, got[i], want[i])
				}
			}
			checkRef(t, name, got, x, deq, tc)
		})
		for _, b := range append(mx, f32...) {
			if err := c.Free(b); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestI8GroupedMatmul(t *testing.T) {
	c, err := Backend{Threads: 2}.OpenCard(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rng := rand.New(rand.NewPCG(9, 10))
	cases := append(quantCases, quantCase{5, 37, 7, []int64{3, 2}}) // K % 8 ≠ 0: a tail
	for ci, tc := range cases {
		x := randVals(rng, tc.m*tc.k, 2)
		var bufs []ascend.Buffer
		var deq [][]float32
		for range tc.counts {
			// Raw storage: any int8 (-128 included, which WriteF32 never makes), then
			// little-endian f32 scales.
			raw := make([]byte, tc.n*tc.k+4*tc.n)
			for i := range tc.n * tc.k {
				raw[i] = byte(rng.IntN(256))
			}
			d := make([]float32, tc.n*tc.k)
			for j := range tc.n {
				s := float32(rng.Float64() * 0.01)
				binary.LittleEndian.PutUint32(raw[tc.n*tc.k+4*j:], math.Float32bits(s))
				for k := range tc.k {
					d[j*tc.k+k] = float32(float64(int8(raw[j*tc.k+k])) * float64(s))
				}
			}
			deq = append(deq, d)
			b, err := c.Alloc(ascend.I8, tc.n, tc.k)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Write(b, 0, raw); err != nil {
				t.Fatal(err)
			}
			back := make([]float32, tc.n*tc.k)
			if err := c.ReadF32(b, back); err != nil {
				t.Fatal(err)
			}
			for i := range back {
				if back[i] != d[i] {
					t.Fatalf("case %d: ReadF32 value %d = %g, want %g", ci, i, back[i], d[i])
				}
			}
			bufs = append(bufs, b)
		}
		var ref []float32
		kernelModes(t, func(mode string) {
			name := fmt.Sprintf("case %d %s", ci, mode)
			got := gmmWith(t, c, x, tc.m, tc.k, tc.n, bufs, tc.counts)
			checkRef(t, name, got, x, deq, tc)
			if ref == nil {
				ref = got
				return
			}
			for i := range got {
				if !(got[i] != got[i] && ref[i] != ref[i]) && math.Float32bits(got[i]) != math.Float32bits(ref[i]) {
					t.Fatalf("%s: out[%d] = %g, default kernels %g: want the same bits", name, i, got[i], ref[i])
				}
			}
		})
		for _, b := range bufs {
			if err := c.Free(b); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestMXFP4AllCodes: random packed bytes and scale codes (0 and 254, whose products
// underflow to subnormals or overflow to Inf, and 0xFF, NaN, included) give the same bits
// as f32 weights holding model/quant's decoding, with every kernel set.
func TestMXFP4AllCodes(t *testing.T) {
	c, err := Backend{Threads: 2}.OpenCard(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rng := rand.New(rand.NewPCG(11, 12))
	const m, k, n = 13, 4096, 9 // two gemm1x4MX chunks
	raw := make([]byte, n*k/2+n*k/32)
	for i := range raw {
		raw[i] = byte(rng.IntN(256))
	}
	// Scale codes: 0..253 in rows 1.., row 0 also gets 254 (Inf weights) and 0xFF (NaN).
	for i := n * k / 2; i < len(raw); i++ {
		raw[i] %= 254
	}
	raw[n*k/2+3], raw[n*k/2+7] = 254, 0xff
	deq := make([]float32, n*k)
	if err := quant.DequantMXFP4(raw[:n*k/2], n, k, raw[n*k/2:], deq); err != nil {
		t.Fatal(err)
	}
	mb, err := c.Alloc(ascend.MXFP4, n, k)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := c.Alloc(ascend.F32, n, k)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(mb, 0, raw); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteF32(fb, 0, deq); err != nil {
		t.Fatal(err)
	}
	x := randVals(rng, m*k, 1e-30) // small, so most sums stay finite
	counts := []int64{1, 8, 4}
	ws := func(b ascend.Buffer) []ascend.Buffer { return []ascend.Buffer{b, b, b} }
	kernelModes(t, func(mode string) {
		got := gmmWith(t, c, x, m, k, n, ws(mb), counts)
		want := gmmWith(t, c, x, m, k, n, ws(fb), counts)
		finite := 0
		for i := range got {
			if !(got[i] != got[i] && want[i] != want[i]) && math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s: out[%d] = %g with mxfp4, %g with its f32 values", mode, i, got[i], want[i])
			}
			if !math.IsNaN(float64(got[i])) && !math.IsInf(float64(got[i]), 0) {
				finite++
			}
		}
		t.Logf("%s: %d of %d outputs finite", mode, finite, len(got))
	})
}

// TestQuantGMMNoAllocs: quantised weights add no allocations to a steady-state
// GroupedMatmul (the card recycles the MXFP4 panels), at T=1 and in multi-row tiles: the count
// equals f32's. (f32's own count is the pool's business: pool.go hands the op's closure to
// its helpers, which makes it escape.)
func TestQuantGMMNoAllocs(t *testing.T) {
	c, err := Backend{Threads: 1}.OpenCard(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const k, n = 256, 40
	for _, m := range []int{1, 12} {
		var base float64
		for _, dt := range []ascend.DType{ascend.F32, ascend.I8, ascend.MXFP4} {
			w, err1 := c.Alloc(dt, n, k)
			x, err2 := c.Alloc(ascend.F32, m, k)
			o, err3 := c.Alloc(ascend.F32, m, n)
			if err1 != nil || err2 != nil || err3 != nil {
				t.Fatal(err1, err2, err3)
			}
			ws, counts := []ascend.Buffer{w}, []int64{int64(m)}
			if err := c.GroupedMatmul(o, x, ws, counts); err != nil { // warm up scratch
				t.Fatal(err)
			}
			allocs := testing.AllocsPerRun(20, func() {
				if err := c.GroupedMatmul(o, x, ws, counts); err != nil {
					t.Fatal(err)
				}
			})
			if dt == ascend.F32 {
				base = allocs
			} else if allocs != base {
				t.Errorf("%v, M=%d: %.1f allocations per GroupedMatmul, f32 makes %.1f", dt, m, allocs, base)
			}
			for _, b := range []ascend.Buffer{w, x, o} {
				if err := c.Free(b); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}
