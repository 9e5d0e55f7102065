package cpu

import (
	"fmt"
	"testing"
	"time"

	"github.com/moemesh/moemesh/ascend"
)

// ffnCase is one SwiGLU expert at T=1 on a card, as `moemesh bench kernels` runs it: the
// gate and up projections stacked as one [2I, H] weight, SwiGLU, and the down projection
// [H, I], all bf16.
type ffnCase struct {
	card          *card
	w13, w2       []ascend.Buffer // one weight each, as GroupedMatmul takes them
	x, gu, act, y ascend.Buffer
	counts        []int64
}

func newFFNCase(tb testing.TB, threads, h, inter int) *ffnCase {
	tb.Helper()
	c, err := Backend{Threads: threads}.OpenCard(0, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	f := &ffnCase{card: c.(*card), counts: []int64{1}}
	alloc := func(dt ascend.DType, n, k int) ascend.Buffer {
		b, err := c.Alloc(dt, n, k)
		if err != nil {
			tb.Fatal(err)
		}
		vals := make([]float32, n*k)
		for i := range vals {
			vals[i] = float32((i*7919)%2003-1001) / 4096
		}
		if err := c.WriteF32(b, 0, vals); err != nil {
			tb.Fatal(err)
		}
		return b
	}
	f.w13, f.w2 = []ascend.Buffer{alloc(ascend.BF16, 2*inter, h)}, []ascend.Buffer{alloc(ascend.BF16, h, inter)}
	f.x, f.gu = alloc(ascend.F32, 1, h), alloc(ascend.F32, 1, 2*inter)
	f.act, f.y = alloc(ascend.F32, 1, inter), alloc(ascend.F32, 1, h)
	return f
}

func (f *ffnCase) run(tb testing.TB) {
	c := f.card
	if err := c.GroupedMatmul(f.gu, f.x, f.w13, f.counts); err != nil {
		tb.Fatal(err)
	}
	if err := c.SwiGLU(f.act, f.gu, 0); err != nil {
		tb.Fatal(err)
	}
	if err := c.GroupedMatmul(f.y, f.act, f.w2, f.counts); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkDecodeFFNScaling is issue 8's decode row (bench kernels' T=1 bf16 FFN) before and
// after home ranges (pool.shared) and the AVX512BW kernel (useBW), robustly on a shared
// machine: each round times a burst of FFNs in every setup below, in rotating order, and
// the medians of per-round time ratios are reported: t1-after/before and t2-after/before are
// the gains at one and two threads, t2-home/shared that of home ranges alone (the older
// kernel on both sides), x2-before and x2-after the two-thread speedups over one thread. A
// neighbour's load moves a round's samples alike, so the ratios hold where absolute times
// do not. Machines without AVX512BW run the same kernel in every setup.
func BenchmarkDecodeFFNScaling(b *testing.B) {
	const burst = 4
	type setup struct {
		f  *ffnCase
		bw bool
	}
	const (
		oneBefore = iota
		oneAfter
		twoBefore // shared claims, older kernel
		twoHome   // home ranges, older kernel
		twoAfter
	)
	for _, sh := range [][2]int{{2048, 1408}, {7168, 2048}} {
		b.Run(fmt.Sprintf("%dx%d", sh[0], sh[1]), func(b *testing.B) {
			one := newFFNCase(b, 1, sh[0], sh[1])
			shared := newFFNCase(b, 2, sh[0], sh[1])
			shared.card.pool.shared = true
			home := newFFNCase(b, 2, sh[0], sh[1])
			setups := []setup{{one, false}, {one, true}, {shared, false}, {home, false}, {home, true}}
			saved := useBW
			defer func() { useBW = saved }()
			var t1, t2, t2home, x2before, x2after []float64
			for round := 0; b.Loop(); round++ {
				sec := make([]float64, len(setups))
				for k := range setups {
					i := (k + round) % len(setups)
					useBW = saved && setups[i].bw
					setups[i].f.run(b) // untimed: wakes helpers parked since the card's last burst
					start := time.Now()
					for range burst {
						setups[i].f.run(b)
					}
					sec[i] = time.Since(start).Seconds()
				}
				t1 = append(t1, sec[oneBefore]/sec[oneAfter])
				t2 = append(t2, sec[twoBefore]/sec[twoAfter])
				t2home = append(t2home, sec[twoBefore]/sec[twoHome])
				x2before = append(x2before, sec[oneBefore]/sec[twoBefore])
				x2after = append(x2after, sec[oneAfter]/sec[twoAfter])
			}
			b.ReportMetric(medianOf(t1), "t1-after/before")
			b.ReportMetric(medianOf(t2), "t2-after/before")
			b.ReportMetric(medianOf(t2home), "t2-home/shared")
			b.ReportMetric(medianOf(x2before), "x2-before")
			b.ReportMetric(medianOf(x2after), "x2-after")
		})
	}
}
