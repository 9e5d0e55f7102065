package cpu

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// waitLimit bounds every wait in these tests. It is far above spinFor: on a loaded 2-core
// machine a goroutine can wait tens of milliseconds for a CPU, but a helper that never parks
// or never wakes misses it by definition.
const waitLimit = 10 * time.Second

// waitFor polls cond until it holds or waitLimit passes, and returns how long it took.
func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > waitLimit {
			t.Fatalf("%s: not within %v", what, waitLimit)
		}
		time.Sleep(50 * time.Microsecond)
	}
	return time.Since(start)
}

// allParked reports whether every helper has committed to park with no wake-up pending:
// none is polling, so an idle card costs no CPU.
func allParked(p *pool) func() bool {
	return func() bool { return p.sleeping.Load() == int32(p.helpers) && len(p.wake) == 0 }
}

// runOnce runs a job of n tasks and fails unless each ran exactly once.
func runOnce(t *testing.T, p *pool, n int) {
	t.Helper()
	hits := make([]atomic.Int32, n)
	p.parallel(n, false, func(i int) { hits[i].Add(1) })
	for i := range hits {
		if h := hits[i].Load(); h != 1 {
			t.Fatalf("n %d: task %d ran %d times", n, i, h)
		}
	}
}

// barrierJob runs a job whose tasks each wait until all of them have started: it finishes
// in time only if helpers - threads-1 of them - take part. It fails the test otherwise.
func barrierJob(t *testing.T, p *pool, threads int) {
	t.Helper()
	var arrived, seen atomic.Int32
	deadline := time.Now().Add(waitLimit)
	p.parallel(threads, false, func(int) {
		arrived.Add(1)
		for arrived.Load() < int32(threads) {
			if time.Now().After(deadline) {
				seen.Store(arrived.Load())
				return
			}
			runtime.Gosched()
		}
	})
	if n := seen.Load(); n != 0 {
		t.Fatalf("threads %d: only %d of %d tasks ran at once: a helper did not join", threads, n, threads)
	}
}

// TestPoolHelpersPark: after a job, helpers poll for a while and then park, within a bound,
// and a job arriving then wakes them: both from polling (right after a job) and parked,
// every helper takes part.
func TestPoolHelpersPark(t *testing.T) {
	for _, threads := range []int{2, 4} {
		p := newPool(threads)
		t.Cleanup(p.stop) // on failure too: a helper left polling would slow later tests
		runOnce(t, p, 64)
		took := waitFor(t, "helpers park after a job", allParked(p))
		t.Logf("threads %d: helpers parked %v after the job (spinFor %v)", threads, took, spinFor)
		barrierJob(t, p, threads) // from parked
		barrierJob(t, p, threads) // from polling: the previous job just ended
		waitFor(t, "helpers park again", allParked(p))
		p.stop()
		if n := p.live.Load(); n != 0 {
			t.Fatalf("threads %d: %d helpers left after stop", threads, n)
		}
	}
}

// TestPoolStop: stop ends helpers whether they are polling or parked, is idempotent, and
// later jobs run on the caller alone.
func TestPoolStop(t *testing.T) {
	for _, tc := range []struct {
		name      string
		waitParks bool
	}{{"polling", false}, {"parked", true}} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPool(3)
			t.Cleanup(p.stop)
			runOnce(t, p, 16)
			if tc.waitParks {
				waitFor(t, "helpers park", allParked(p))
			}
			p.stop()
			p.stop()
			if n := p.live.Load(); n != 0 {
				t.Fatalf("%d helpers left after stop", n)
			}
			runOnce(t, p, 16)
			runOnce(t, p, 16) // wake-ups sent to helpers that quit parked must not fill wake
		})
	}
}

// TestPoolStress runs jobs of random sizes separated by random idle times around spinFor,
// so that jobs arrive while helpers poll, while they commit to park and while they are
// parked: every task must run once, the wake-up semaphore must never go negative, and the
// helpers must still join jobs and park at the end (a lost wake-up would leave one parked).
func TestPoolStress(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	rounds := 300
	if testing.Short() {
		rounds = 60
	}
	for _, threads := range []int{2, 3} {
		p := newPool(threads)
		t.Cleanup(p.stop)
		for range rounds {
			runOnce(t, p, rng.IntN(40))
			if s := p.sleeping.Load(); s < 0 || s > int32(p.helpers) {
				t.Fatalf("threads %d: sleeping %d outside 0..%d", threads, s, p.helpers)
			}
			idle := time.Duration(rng.IntN(int(3 * spinFor)))
			for start := time.Now(); time.Since(start) < idle; {
				runtime.Gosched() // idle on the CPU, not in the timer: a sleep overshoots by far more
			}
		}
		barrierJob(t, p, threads)
		waitFor(t, "helpers park after the stress", allParked(p))
		p.stop()
		if n := p.live.Load(); n != 0 {
			t.Fatalf("threads %d: %d helpers left after stop", threads, n)
		}
	}
}

// TestPoolSerial: serial jobs and one-task jobs run on the caller, in order.
func TestPoolSerial(t *testing.T) {
	p := newPool(2)
	defer p.stop()
	for _, tc := range []struct {
		n      int
		serial bool
	}{{5, true}, {1, false}, {0, false}} {
		var order []int // no lock: a data race here would fail under -race
		p.parallel(tc.n, tc.serial, func(i int) { order = append(order, i) })
		if len(order) != tc.n {
			t.Fatalf("n %d serial %v: ran %d tasks", tc.n, tc.serial, len(order))
		}
		for i, v := range order {
			if v != i {
				t.Fatalf("n %d serial %v: order %v", tc.n, tc.serial, order)
			}
		}
	}
}

// TestJobClaimOrder: a goroutine runs its home range from the front, then the other ranges
// from the back, starting with the next part; a helper past the job's parts only steals;
// with pool.shared everyone takes one range from the front. Ranges split n evenly and
// together cover every task once.
func TestJobClaimOrder(t *testing.T) {
	for _, tc := range []struct {
		name   string
		n      int
		parts  int
		home   int
		shared bool
		want   []int
	}{
		{"caller", 6, 2, 0, false, []int{0, 1, 2, 5, 4, 3}},
		{"helper", 6, 2, 1, false, []int{3, 4, 5, 2, 1, 0}},
		{"uneven", 7, 3, 1, false, []int{2, 3, 6, 5, 4, 1, 0}},
		{"no home", 5, 2, 3, false, []int{4, 3, 2, 1, 0}},
		{"more parts than tasks", 2, 3, 2, false, []int{1, 0}},
		{"shared", 5, 1, 1, true, []int{0, 1, 2, 3, 4}},
		{"empty", 0, 2, 0, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []int
			j := newJob(tc.parts+1, tc.shared)
			j.reset(99, tc.parts+1, func(int) {}) // a use before: reset must clear every range
			j.run(0)
			j.reset(tc.n, tc.parts, func(i int) { got = append(got, i) })
			j.run(tc.home)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("order %v, want %v", got, tc.want)
			}
			if p := j.pending.Load(); p != 0 {
				t.Fatalf("%d tasks pending after run", p)
			}
		})
	}
}

// TestParallelAllocatesNothing: a parallel call reuses the pool's jobs, with more than 4
// goroutines too, and every task still runs once.
func TestParallelAllocatesNothing(t *testing.T) {
	for _, threads := range []int{2, 6} {
		p := newPool(threads)
		var hits [64]atomic.Int32
		fn := func(i int) { hits[i].Add(1) }
		for range 10 {
			p.parallel(len(hits), false, fn)
		}
		allocs := testing.AllocsPerRun(200, func() { p.parallel(len(hits), false, fn) })
		p.stop()
		if allocs != 0 {
			t.Fatalf("%d threads: %v allocations per parallel call", threads, allocs)
		}
		for i := range hits {
			if n := hits[i].Load(); n != 211 { // 10 warm-up calls, AllocsPerRun's 1 + 200
				t.Fatalf("%d threads: task %d ran %d times, want 211", threads, i, n)
			}
		}
	}
}
