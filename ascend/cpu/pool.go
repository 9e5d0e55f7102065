package cpu

import (
	"sync"
	"sync/atomic"
)

// pool is a card's fixed set of helper goroutines. An op splits its work into n tasks and
// calls parallel; the calling goroutine works too, so a card with T threads runs T-1
// helpers. Helpers live as long as the card: starting a goroutine per tile costs more than
// a small tile, and a fixed set keeps the goroutine count bounded and owned.
type pool struct {
	helpers int
	work    chan *job
	exited  sync.WaitGroup
	live    atomic.Int32 // helpers not yet returned; tests check it reaches 0
	stopped sync.Once
}

// job is one parallel call: tasks 0..n-1 are claimed in order through next, so which
// goroutine runs a task varies but every task runs exactly once. done counts tasks, not
// helpers: the caller waits for the work, never for a helper that was slow to wake (on a
// busy machine that can take milliseconds) and finds nothing left to claim.
type job struct {
	next atomic.Int64
	n    int64
	fn   func(task int)
	done sync.WaitGroup
}

func newPool(threads int) *pool {
	// The channel holds one wake-up per helper, so handing out a job never blocks; a
	// wake-up a helper reads after its job is finished finds no task and is dropped.
	h := max(threads-1, 0)
	p := &pool{helpers: h, work: make(chan *job, h)}
	p.exited.Add(p.helpers)
	p.live.Store(int32(p.helpers))
	for range p.helpers {
		go p.helper()
	}
	return p
}

func (p *pool) helper() {
	defer p.exited.Done()
	defer p.live.Add(-1)
	for j := range p.work {
		j.run()
	}
}

// run claims and runs tasks until none are left. A task's fn returns before its Done, so
// once the caller's Wait returns no goroutine touches the job's data again.
func (j *job) run() {
	for {
		i := j.next.Add(1) - 1
		if i >= j.n {
			return
		}
		j.fn(int(i))
		j.done.Done()
	}
}

// parallel runs fn(0..n-1) and returns when all have finished. Ops call it with the card's
// lock held, so one job is in flight at a time. Small jobs (one task, or serial set) run on
// the caller alone, since waking a helper costs microseconds.
func (p *pool) parallel(n int, serial bool, fn func(task int)) {
	h := min(p.helpers, n-1)
	if serial || h <= 0 {
		for i := range n {
			fn(i)
		}
		return
	}
	j := &job{n: int64(n), fn: fn}
	j.done.Add(n)
	for range h {
		select {
		case p.work <- j:
		default:
			// The queue is full of wake-ups for finished jobs that lagging helpers have not
			// read yet; this job runs with fewer helpers rather than waiting for them.
		}
	}
	j.run()
	j.done.Wait()
}

// stop ends the helpers and waits for them. It is idempotent because both Close and the
// cleanup of an unreachable card may call it.
func (p *pool) stop() {
	p.stopped.Do(func() {
		close(p.work)
		p.exited.Wait()
	})
}
