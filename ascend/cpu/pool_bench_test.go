package cpu

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moemesh/moemesh/ascend"
)

// runner is what an op needs of a pool; the benchmarks below run the same work on pool and
// on chanPool side by side.
type runner interface {
	parallel(n int, serial bool, fn func(task int))
	stop()
}

// chanPool is the pool as it was before issue 8: helpers park on a channel after every job
// and the caller sends each one a wake-up per job. It lives only in this file, as the
// baseline the benchmarks compare pool with. wakeNs and helperTasks are diagnostics: the
// time from publishing a job to a helper receiving it, and how many tasks helpers ran.
type chanPool struct {
	helpers     int
	work        chan *chanJob
	exited      sync.WaitGroup
	stopped     sync.Once
	wakeNs      atomic.Int64
	wakes       atomic.Int64
	helperTasks atomic.Int64
}

type chanJob struct {
	next  atomic.Int64
	n     int64
	fn    func(task int)
	done  sync.WaitGroup
	start time.Time
}

func newChanPool(threads int) *chanPool {
	h := max(threads-1, 0)
	p := &chanPool{helpers: h, work: make(chan *chanJob, h)}
	p.exited.Add(h)
	for range h {
		go p.helper()
	}
	return p
}

func (p *chanPool) helper() {
	defer p.exited.Done()
	for j := range p.work {
		p.wakeNs.Add(int64(time.Since(j.start)))
		p.wakes.Add(1)
		p.helperTasks.Add(j.run())
	}
}

func (j *chanJob) run() (ran int64) {
	for {
		i := j.next.Add(1) - 1
		if i >= j.n {
			return ran
		}
		j.fn(int(i))
		j.done.Done()
		ran++
	}
}

func (p *chanPool) parallel(n int, serial bool, fn func(task int)) {
	h := min(p.helpers, n-1)
	if serial || h <= 0 {
		for i := range n {
			fn(i)
		}
		return
	}
	j := &chanJob{n: int64(n), fn: fn, start: time.Now()}
	j.done.Add(n)
	for range h {
		select {
		case p.work <- j:
		default:
		}
	}
	j.run()
	j.done.Wait()
}

func (p *chanPool) stop() {
	p.stopped.Do(func() {
		close(p.work)
		p.exited.Wait()
	})
}

// pools names the implementations compared; each benchmark runs all of them in one run:
// chan (above), shared (the polling pool with one range of tasks claimed in order by every
// goroutine, as before home ranges) and home (the pool as it is: see job).
var pools = []struct {
	name string
	open func(threads int) runner
}{
	{"chan", func(t int) runner { return newChanPool(t) }},
	{"shared", func(t int) runner { p := newPool(t); p.shared = true; return p }},
	{"home", func(t int) runner { return newPool(t) }},
}

// gemvCase is one T=1 projection as GroupedMatmul tiles it: out[n] = W[n,k]·x[k], with W
// in dt, split into the same column tiles (panelFor), so that it can run on either pool.
type gemvCase struct {
	mm    *gmm
	tiles []gmmTile
	bytes int64   // weight bytes read per call
	flops float64 // 2·n·k per call
}

func newGEMVCase(tb testing.TB, dt ascend.DType, n, k int) *gemvCase {
	c, err := Backend{Threads: 1}.OpenCard(0, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	rng := rand.New(rand.NewPCG(3, 4))
	vals := make([]float32, n*k)
	for i := range vals {
		vals[i] = rng.Float32()*2 - 1
	}
	wb, err := c.Alloc(dt, n, k)
	if err != nil {
		tb.Fatal(err)
	}
	if err := c.WriteF32(wb, 0, vals); err != nil {
		tb.Fatal(err)
	}
	b := wb.(*buffer)
	w := wmat{dt: dt, f32: b.f32, u16: b.u16, k: k}
	g := &gemvCase{mm: &gmm{out: make([]float32, n), x: vals[:k], n: n, k: k}, bytes: b.Bytes(), flops: 2 * float64(n) * float64(k)}
	p := panelFor(dt, k)
	for n0 := 0; n0 < n; n0 += p {
		g.tiles = append(g.tiles, gmmTile{w: w, row: 0, rows: 1, n0: n0, cols: min(p, n-n0)})
	}
	return g
}

func (g *gemvCase) run(p runner) {
	p.parallel(len(g.tiles), false, func(i int) { g.mm.tile(&g.tiles[i]) })
}

// BenchmarkPoolGEMV is the decode projection of issue 8, on each of pools, 1 and 2
// threads: H×I = 2048×1408 (W is [1408, 2048], 5.8 MB in bf16) and 7168×2048 ([2048, 7168],
// 29 MB). Calls follow each other back to back, as the ops of a
// decode step do. GB/s is weight bytes read per second.
func BenchmarkPoolGEMV(b *testing.B) {
	for _, sh := range [][2]int{{2048, 1408}, {7168, 2048}} {
		g := newGEMVCase(b, ascend.BF16, sh[1], sh[0])
		for _, threads := range []int{1, 2} {
			for _, pl := range pools {
				b.Run(fmt.Sprintf("%dx%d/threads=%d/pool=%s", sh[0], sh[1], threads, pl.name), func(b *testing.B) {
					p := pl.open(threads)
					defer p.stop()
					for b.Loop() {
						g.run(p)
					}
					sec := b.Elapsed().Seconds()
					b.ReportMetric(float64(g.bytes)*float64(b.N)/sec/1e9, "GB/s")
					b.ReportMetric(g.flops*float64(b.N)/sec/1e9, "GFLOP/s")
					if cp, ok := p.(*chanPool); ok && cp.wakes.Load() > 0 {
						reportChanDiag(b, cp, len(g.tiles))
					}
				})
			}
		}
	}
}

// reportChanDiag reports, for the old pool, the mean time from publishing a job to the
// helper receiving it and the share of tasks the helper ran: the measurements behind
// issue 8's fix.
func reportChanDiag(b *testing.B, cp *chanPool, tasks int) {
	b.ReportMetric(float64(cp.wakeNs.Load())/float64(cp.wakes.Load())/1e3, "wake-µs")
	b.ReportMetric(float64(cp.helperTasks.Load())/float64(cp.wakes.Load()*int64(tasks)), "helper-share")
}

// BenchmarkPoolDispatch is a pool's own cost per parallel call: 2·threads empty tasks.
func BenchmarkPoolDispatch(b *testing.B) {
	for _, threads := range []int{2} {
		for _, pl := range pools {
			b.Run(fmt.Sprintf("threads=%d/pool=%s", threads, pl.name), func(b *testing.B) {
				p := pl.open(threads)
				defer p.stop()
				var sink atomic.Int64
				for b.Loop() {
					p.parallel(2*threads, false, func(i int) { sink.Add(int64(i)) })
				}
			})
		}
	}
}

// BenchmarkPoolShare reports which goroutines ran a GEMV's tasks: helper-share is the
// fraction run by helpers (0.5 is an even split at 2 threads). It finds the runner from the
// call stack, which is slow, so its times are not the kernels'.
func BenchmarkPoolShare(b *testing.B) {
	g := newGEMVCase(b, ascend.BF16, 1408, 2048)
	for _, pl := range pools {
		b.Run("2048x1408/threads=2/pool="+pl.name, func(b *testing.B) {
			p := pl.open(2)
			defer p.stop()
			var byHelper, all atomic.Int64
			fn := func(i int) {
				g.mm.tile(&g.tiles[i])
				if onHelper() {
					byHelper.Add(1)
				}
				all.Add(1)
			}
			for b.Loop() {
				p.parallel(len(g.tiles), false, fn)
			}
			b.ReportMetric(float64(byHelper.Load())/float64(all.Load()), "helper-share")
		})
	}
}

// onHelper reports whether the calling goroutine is a pool helper (of either pool).
func onHelper() bool {
	var pcs [32]uintptr
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs[:])])
	for {
		f, more := frames.Next()
		if strings.HasSuffix(f.Function, "Pool).helper") || strings.HasSuffix(f.Function, "pool).helper") {
			return true
		}
		if !more {
			return false
		}
	}
}

// BenchmarkPoolGEMVScaling measures what issue 8 is about, robustly on a shared machine:
// each round times a burst of GEMV calls on one thread and on two with each of pools, in
// rotating order, and the medians of per-round ratios are reported: x2-<pool> is the
// 2-thread speedup over 1 thread. A neighbour's load moves all samples of a round alike, so
// the ratios hold where absolute times do not. Every pool here reads the same weights, so
// which core last read a column changes with every burst: this measures dispatch and
// balance, not the cache locality of home ranges (BenchmarkDecodeFFNScaling does, a card
// and weights per setup).
func BenchmarkPoolGEMVScaling(b *testing.B) {
	const burst = 8
	for _, sh := range [][2]int{{2048, 1408}, {7168, 2048}} {
		g := newGEMVCase(b, ascend.BF16, sh[1], sh[0])
		b.Run(fmt.Sprintf("%dx%d", sh[0], sh[1]), func(b *testing.B) {
			ps := []runner{newPool(1)}
			for _, pl := range pools {
				ps = append(ps, pl.open(2))
			}
			defer func() {
				for _, p := range ps {
					p.stop()
				}
			}()
			x2 := make([][]float64, len(pools))
			for round := 0; b.Loop(); round++ {
				sec := make([]float64, len(ps))
				for k := range ps {
					i := (k + round) % len(ps)
					start := time.Now()
					for range burst {
						g.run(ps[i])
					}
					sec[i] = time.Since(start).Seconds()
				}
				for i := range pools {
					x2[i] = append(x2[i], sec[0]/sec[i+1])
				}
			}
			for i, pl := range pools {
				b.ReportMetric(medianOf(x2[i]), "x2-"+pl.name)
			}
		})
	}
}

func medianOf(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// BenchmarkPoolGEMVIdle is BenchmarkPoolGEMV with 1 ms idle before each call (untimed), as
// between the requests of an expert daemon in decode: the polling pools' helpers have parked by
// then, so each call pays the wake-up chan paid on every call.
func BenchmarkPoolGEMVIdle(b *testing.B) {
	g := newGEMVCase(b, ascend.BF16, 1408, 2048)
	for _, threads := range []int{1, 2} {
		for _, pl := range pools {
			b.Run(fmt.Sprintf("2048x1408/threads=%d/pool=%s", threads, pl.name), func(b *testing.B) {
				p := pl.open(threads)
				defer p.stop()
				for range b.N {
					b.StopTimer()
					time.Sleep(time.Millisecond)
					b.StartTimer()
					g.run(p)
				}
			})
		}
	}
}

// BenchmarkPoolJoin times jobs of two tasks that each wait until both have started: the
// time for a helper to join a job published back to back with the previous one. chan's
// helper must be woken for each job; the polling pools' are polling. The tasks busy-wait
// without yielding, as a kernel does, so a helper queued on the caller's P must be stolen.
func BenchmarkPoolJoin(b *testing.B) {
	for _, pl := range pools {
		b.Run("threads=2/pool="+pl.name, func(b *testing.B) {
			p := pl.open(2)
			defer p.stop()
			var late atomic.Int64
			for b.Loop() {
				var arrived atomic.Int32
				deadline := time.Now().Add(time.Second)
				p.parallel(2, false, func(int) {
					arrived.Add(1)
					for arrived.Load() < 2 {
						if time.Now().After(deadline) {
							late.Add(1) // the caller ran both tasks: the helper never came
							return
						}
					}
				})
			}
			b.ReportMetric(float64(late.Load())/float64(b.N), "late/op")
		})
	}
}
