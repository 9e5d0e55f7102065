package cpu

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// spinFor is how long a helper keeps polling for the next job after finishing one before it
// parks, and how long a caller polls for its job's last tasks before it blocks. A parked
// helper that is woken goes to the caller's P as its next goroutine, and an idle P may take
// it from there only after a usleep(3) (runtime/proc.go), which Linux's 50 µs timer slack
// and the VM stretch to ~100 µs; meanwhile the caller works through the tasks alone. Traces
// of the old pool (woken per job) gave a median of 111 µs from wake-up to run, 3 ms at p90
// under load, against 0.1–0.5 ms for a whole T=1 GEMV (issue 8). The ops of a decode step
// (gate/up, SwiGLU, down, the next layer's) follow each other within microseconds, so a
// helper polling this long takes each of them at once; past it, an idle card's helpers park
// and cost no CPU.
const spinFor = 100 * time.Microsecond

// pollEvery is how many polls (atomic loads, a few ns each) pass between yields and clock
// reads while spinning. Yielding on every poll would serialise both spinning goroutines on
// the scheduler's global queue lock; never yielding would starve goroutines that share the
// P, such as the caller when a card has more threads than GOMAXPROCS.
const pollEvery = 64

// pool is a card's fixed set of helper goroutines. An op splits its work into n tasks and
// calls parallel; the calling goroutine works too, so a card with T threads runs T-1
// helpers. Helpers live as long as the card: starting a goroutine per tile costs more than
// a small tile, and a fixed set keeps the goroutine count bounded and owned.
//
// A job is published by storing it in cur. Helpers that finished a job within spinFor are
// polling cur and take it at once; the others are parked and get a wake-up through wake.
// Polling yields with runtime.Gosched, so other goroutines on a spinning helper's P still
// run.
type pool struct {
	helpers int
	cur     atomic.Pointer[job] // the job in flight; nil between jobs
	// sleeping counts helpers that have committed to park and not yet been handed a
	// wake-up. It is a semaphore: the caller takes one unit per wake-up it sends, and a
	// helper that sees a job after committing takes its unit back if one is left, else
	// receives the wake-up that was sent for it. So every wake-up sent has a receiver and
	// wake, with room for one per helper, never fills.
	sleeping atomic.Int32
	wake     chan struct{}
	quit     chan struct{} // closed by stop: parked helpers return
	stopping atomic.Bool   // set by stop: spinning helpers return
	exited   sync.WaitGroup
	live     atomic.Int32 // helpers not yet returned; tests check it reaches 0
	stopped  sync.Once
	// shared makes every job one range that all goroutines claim from in order, the claim
	// order before home ranges; only benchmarks set it, to compare the two side by side.
	shared bool
	// jobs are reused by turns (flip picks the next; ops on a card run one at a time), so
	// a parallel call allocates nothing. Two rather than one, so that a helper still inside
	// the last op's run when the next starts is working on the other job.
	jobs [2]*job
	flip int
	gen  uint64 // parallel calls so far; a job's gen says which one it serves
}

// job is one parallel call. Its tasks are split into home ranges, one per goroutine that
// takes part: the caller's is part 0 and helper i's part i. Each goroutine runs its own
// range from the front, then takes what is left of the others from the back, so every task
// runs exactly once and a late helper's work is done by the others. While no one is late,
// fixed ranges keep each task on the same goroutine call after call; for a T=1 GEMV that
// means the same weight columns, which each core then finds where it left them, in its own
// caches. On the 2-vCPU target the bf16 FFN at 2048×1408 (17 MB of weights, which a 32 MB
// L3 holds) ran 1.31–1.33× faster on two threads with home ranges than with one range
// claimed in order by all (pool.shared, how tasks were claimed before; quiet runs of
// BenchmarkDecodeFFNScaling); at 7168×2048, streamed from DRAM, it made no difference.
// pending and done count tasks, not helpers: the caller waits for the work, never for a
// helper that was slow to start and finds nothing left to claim.
//
// A job is reused (pool.jobs). A helper descheduled inside run may still be claiming from
// a job when the caller readies it for a later op; reset therefore writes fn and the counts
// before it stores the new ranges, so such a helper either finds nothing to claim or runs
// a task of the new op with the new fn, which is correct too.
type job struct {
	fn      func(task int)
	parts   []jobPart      // room for every goroutine of the pool
	nparts  atomic.Int32   // how many of parts this use has
	gen     atomic.Uint64  // which use: the pool's count of parallel calls
	shared  atomic.Bool    // pool.shared: one part, claimed from the front by everyone
	pending atomic.Int64   // tasks not finished, polled by a spinning caller
	done    sync.WaitGroup // the same count, for a caller that stopped spinning
}

func newPool(threads int) *pool {
	h := max(threads-1, 0)
	p := &pool{helpers: h, wake: make(chan struct{}, h), quit: make(chan struct{})}
	for i := range p.jobs {
		p.jobs[i] = newJob(h+1, false)
	}
	p.exited.Add(p.helpers)
	p.live.Store(int32(p.helpers))
	for id := range p.helpers {
		go p.helper(id + 1)
	}
	return p
}

func (p *pool) helper(id int) {
	defer p.exited.Done()
	defer p.live.Add(-1)
	// seen is the generation of the job this helper ran most recently: while the caller
	// waits for another goroutine's last task, cur still holds it, and it must not count
	// as new. Jobs are reused, so their address does not tell one use from the next.
	var seen uint64
	for {
		j, gen := p.await(seen)
		if j == nil {
			return
		}
		j.run(id)
		seen = gen
	}
}

// await returns the next job (and its generation) whose generation is not seen, polling
// for spinFor and then parked, or nil once the pool is stopping.
func (p *pool) await(seen uint64) (*job, uint64) {
	for {
		start := time.Now()
		for i := 1; ; i++ {
			if j := p.cur.Load(); j != nil {
				if gen := j.gen.Load(); gen != seen {
					return j, gen
				}
			}
			if p.stopping.Load() {
				return nil, 0
			}
			if i%pollEvery == 0 {
				if time.Since(start) > spinFor {
					break
				}
				runtime.Gosched()
			}
		}
		if !p.park(seen) {
			return nil, 0
		}
	}
}

// park blocks until a wake-up (true) or stop (false). A wake-up may come for a job this
// helper has already seen or one another helper ran; await then polls and parks again.
func (p *pool) park(seen uint64) bool {
	p.sleeping.Add(1)
	// The caller stores cur before it reads sleeping and this reads cur after committing,
	// so a job published meanwhile is seen by this check, by the caller's, or by both.
	// Without the check such a job would run without this helper, woken only by the next.
	if j := p.cur.Load(); j != nil && j.gen.Load() != seen {
		for {
			s := p.sleeping.Load()
			if s == 0 {
				break // the caller took this helper's unit: its wake-up is on the way
			}
			if p.sleeping.CompareAndSwap(s, s-1) {
				return true
			}
		}
	}
	select {
	case <-p.wake:
		return true
	case <-p.quit:
		return false
	}
}

// run claims and runs tasks until none are left: its home range's from the front (home is
// the goroutine's part; helpers past the job's parts have none), then the others' from the
// back. A task's fn returns before it is counted finished, so once the caller's wait returns
// no goroutine touches the job's data again.
func (j *job) run(home int) {
	d := 0
	if j.shared.Load() {
		home = 0 // everyone claims part 0 from the front
	}
	parts := int(j.nparts.Load())
	if home < parts {
		for {
			i, ok := j.parts[home].claimFront()
			if !ok {
				break
			}
			j.do(i)
		}
		d = 1
	}
	for ; d < parts; d++ {
		pt := &j.parts[(home+d)%parts]
		for {
			i, ok := pt.claimBack()
			if !ok {
				break
			}
			j.do(i)
		}
	}
}

// do runs task i and counts it finished: pending first, done last, so that once done's
// Wait returns no goroutine is still between the two counts (see wait).
func (j *job) do(i int) {
	j.fn(i)
	j.pending.Add(-1)
	j.done.Done()
}

// jobPart is one goroutine's home range of a job's tasks, [lo, hi) packed in one word as
// lo<<32 | hi, so that its owner claims from the front and the others from the back with one
// compare-and-swap each, and a task is claimed once. It fills a cache line: claims in one
// range do not slow another.
type jobPart struct {
	r atomic.Uint64
	_ [56]byte
}

func (pt *jobPart) claimFront() (int, bool) {
	for {
		v := pt.r.Load()
		if v>>32 >= v&0xffffffff {
			return 0, false
		}
		if pt.r.CompareAndSwap(v, v+1<<32) {
			return int(v >> 32), true
		}
	}
}

func (pt *jobPart) claimBack() (int, bool) {
	for {
		v := pt.r.Load()
		if v>>32 >= v&0xffffffff {
			return 0, false
		}
		if pt.r.CompareAndSwap(v, v-1) {
			return int(v&0xffffffff) - 1, true
		}
	}
}

// newJob makes a job with room for maxParts home ranges.
func newJob(maxParts int, shared bool) *job {
	j := &job{parts: make([]jobPart, max(maxParts, 1))}
	j.shared.Store(shared)
	return j
}

// reset readies j for tasks 0..n-1 split into parts home ranges of n/parts tasks (1 ≤ parts
// ≤ its room, n < 2³²: ops make a task per tile or per thousands of elements, so n is far
// smaller). The ranges are stored last (see job).
func (j *job) reset(n, parts int, fn func(task int)) {
	j.fn = fn
	j.pending.Store(int64(n))
	j.done.Add(n)
	j.nparts.Store(int32(parts))
	for i := range j.parts {
		var lo, hi uint64
		if i < parts {
			lo, hi = uint64(i*n/parts), uint64((i+1)*n/parts)
		}
		j.parts[i].r.Store(lo<<32 | hi)
	}
}

// wait returns when every task has finished: polling for spinFor, since the tasks left
// are already running on helpers and a small task ends within microseconds, then blocked,
// for a helper whose thread the host has descheduled. It always ends on done's Wait, which
// returns at once when the polling saw the last task: the job is reused, and a count still
// to come from this use would land in the next one and end its wait a task early.
func (j *job) wait() {
	start := time.Now()
	for i := 1; j.pending.Load() > 0; i++ {
		if i%pollEvery == 0 {
			if time.Since(start) > spinFor {
				break
			}
			runtime.Gosched()
		}
	}
	j.done.Wait()
}

// parallel runs fn(0..n-1) and returns when all have finished. Ops call it with the card's
// lock held, so one job is in flight at a time. Small jobs (one task, or serial set) run on
// the caller alone: even a spinning helper costs a cache-line transfer or two per task.
// After stop, jobs run on the caller alone.
func (p *pool) parallel(n int, serial bool, fn func(task int)) {
	h := min(p.helpers, n-1)
	if serial || h <= 0 {
		for i := range n {
			fn(i)
		}
		return
	}
	parts := h + 1
	if p.shared {
		parts = 1
	}
	j := p.jobs[p.flip]
	p.flip ^= 1
	j.shared.Store(p.shared) // benchmarks flip p.shared between ops
	j.reset(n, parts, fn)
	p.gen++
	j.gen.Store(p.gen)
	p.cur.Store(j)
	p.wakeParked(h)
	j.run(0)
	j.wait()
	p.cur.Store(nil)
	// The pool keeps the job for a later op; dropping fn lets this op's buffers be
	// collected once freed. No goroutine reads fn now: every claim has been made.
	j.fn = nil
}

// wakeParked sends up to h wake-ups, one per parked helper, taking each helper's unit of
// sleeping first (see pool.sleeping).
func (p *pool) wakeParked(h int) {
	for woken := 0; woken < h; {
		s := p.sleeping.Load()
		if s <= 0 {
			return
		}
		if p.sleeping.CompareAndSwap(s, s-1) {
			p.wake <- struct{}{}
			woken++
		}
	}
}

// stop ends the helpers and waits for them. It is idempotent because both Close and the
// cleanup of an unreachable card may call it.
func (p *pool) stop() {
	p.stopped.Do(func() {
		p.stopping.Store(true)
		close(p.quit)
		p.exited.Wait()
	})
}
