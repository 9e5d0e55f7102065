package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/moemesh/moemesh/ascend"
)

// BenchmarkGroupedMatmul times one expert projection of the small reference shape
// (H = 2048 in, I = 1408 out): GFLOP/s = 2·M·H·I per op. threads=1 is the per-core figure.
// A single 1408×2048 weight (5.8 MB bf16, 11.5 MB f32) stays in a 32 MB L3 between
// iterations, so M=1 here is an L3 number; BenchmarkGroupedMatmulDecode is the DRAM one.
func BenchmarkGroupedMatmul(b *testing.B) {
	const h, inter = 2048, 1408
	for _, dt := range []ascend.DType{ascend.F32, ascend.BF16} {
		for _, m := range []int{1, 16, 64, 128} {
			for _, threads := range []int{1, 0} {
				name := fmt.Sprintf("%v/M=%d/threads=%s", dt, m, threadName(threads))
				b.Run(name, func(b *testing.B) {
					benchGMM(b, threads, dt, m, h, inter, 1)
				})
			}
		}
	}
}

// BenchmarkGroupedMatmulDecode is the decode step: 8 tokens' top-8 give 64 rows over 64
// experts, one row each, so every weight byte comes from DRAM once per call.
func BenchmarkGroupedMatmulDecode(b *testing.B) {
	for _, dt := range []ascend.DType{ascend.F32, ascend.BF16} {
		for _, threads := range []int{1, 0} {
			b.Run(fmt.Sprintf("%v/experts=16/threads=%s", dt, threadName(threads)), func(b *testing.B) {
				benchGMM(b, threads, dt, 16, 2048, 1408, 16)
			})
		}
	}
}

// BenchmarkGroupedMatmulQuant compares quantised weights with bf16 on the two expert shapes
// (K×N = H×I: 2048×1408, and V4-Flash-like 7168×2048) at T=1 (decode, GEMV) and T=64. GB/s
// counts weight bytes as stored (values and scales), the traffic a memory-bound GEMV pays;
// the weights stay in L3 between iterations (one expert), so T=1 is an L3 figure here.
func BenchmarkGroupedMatmulQuant(b *testing.B) {
	for _, sh := range [][2]int{{2048, 1408}, {7168, 2048}} {
		for _, m := range []int{1, 64} {
			for _, dt := range []ascend.DType{ascend.BF16, ascend.I8, ascend.MXFP4} {
				for _, threads := range []int{1, 0} {
					name := fmt.Sprintf("%dx%d/T=%d/%v/threads=%s", sh[0], sh[1], m, dt, threadName(threads))
					b.Run(name, func(b *testing.B) {
						benchGMM(b, threads, dt, m, sh[0], sh[1], 1)
					})
				}
			}
		}
	}
}

func threadName(t int) string {
	if t == 0 {
		return "all"
	}
	return fmt.Sprint(t)
}

// benchGMM runs M rows split evenly over groups distinct [inter, h] weights.
func benchGMM(b *testing.B, threads int, dt ascend.DType, m, h, inter, groups int) {
	card, err := Backend{Threads: threads}.OpenCard(0, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer card.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	vals := make([]float32, inter*h)
	for i := range vals {
		vals[i] = rng.Float32()*2 - 1
	}
	ws := make([]ascend.Buffer, groups)
	counts := make([]int64, groups)
	for g := range ws {
		if ws[g], err = card.Alloc(dt, inter, h); err != nil {
			b.Fatal(err)
		}
		if err := card.WriteF32(ws[g], 0, vals); err != nil {
			b.Fatal(err)
		}
		counts[g] = int64(m / groups)
	}
	x, err := card.Alloc(ascend.F32, m, h)
	if err != nil {
		b.Fatal(err)
	}
	if err := card.WriteF32(x, 0, vals[:m*h]); err != nil {
		b.Fatal(err)
	}
	out, err := card.Alloc(ascend.F32, m, inter)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() { // b.Loop times only the loop, not the setup above
		if err := card.GroupedMatmul(out, x, ws, counts); err != nil {
			b.Fatal(err)
		}
	}
	flops := 2 * float64(m) * float64(h) * float64(inter)
	b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	var wbytes int64
	for _, w := range ws {
		wbytes += w.Bytes()
	}
	b.ReportMetric(float64(wbytes)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
}
