package expertd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/proto"
)

// Live reconcile: when the registry holds an assignment for a card (proto.AssignKey,
// written by the placement controller), the daemon makes the card hold exactly that set.
// Without one, the card keeps its static experts from the configuration.
//
// Removing an expert: it is listed draining in the lease; once that lease has been out for
// a full heartbeat (routers stop choosing the replica on the watch event), a removal op is
// queued behind the card's batches, so every batch that arrived before it is answered
// first; then the memory is freed. A batch that still arrives is answered 404, which
// routers retry on another replica.
//
// Adding an expert: it is listed loading while its tensors are read from the checkpoint
// and uploaded (on the card's worker, between batches), then ready. An expert that does not
// fit in the card's memory budget is skipped and logged; the controller sees it missing
// from the lease.

// errCardStopped: the card's worker stopped before running an op.
var errCardStopped = errors.New("expertd: card stopped")

// cardOp is work that must run on the card's worker goroutine (which owns the device).
type cardOp struct {
	fn   func() error
	done chan error // buffered: the worker never blocks on it
}

func (o *cardOp) run() { o.done <- o.fn() }

// do runs fn on the card's worker, after every batch queued before it, and waits for it.
// If ctx ends first do returns ctx's error; the op may still run later.
func (c *card) do(ctx context.Context, fn func() error) error {
	op := &cardOp{fn: fn, done: make(chan error, 1)}
	select {
	case c.jobs <- &job{op: op}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-op.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// setState sets (state > 0) or clears (0) the lease state override of keys.
func (c *card) setState(state uint8, keys ...model.ExpertKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		if state == 0 {
			delete(c.states, k)
		} else {
			c.states[k] = state
		}
	}
}

// beaten records that a lease was written (called by the heartbeat).
func (c *card) beaten() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.beats++
	close(c.beat)
	c.beat = make(chan struct{})
}

// waitBeats waits until n more leases have been written, or ctx is done.
func (c *card) waitBeats(ctx context.Context, n int64) error {
	c.mu.Lock()
	target := c.beats + n
	c.mu.Unlock()
	for {
		c.mu.Lock()
		ch, reached := c.beat, c.beats >= target
		c.mu.Unlock()
		if reached {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// reconciler keeps one card's experts equal to its latest assignment.
type reconciler struct {
	c    *card
	cfg  *Config
	mcfg *model.Config

	mu    sync.Mutex
	want  *proto.Assignment // latest assignment seen; nil: none (static mode)
	wake  chan struct{}     // one pending signal: want changed
	retry time.Duration     // delay before trying an incomplete reconcile again
}

func newReconciler(c *card, cfg *Config, mcfg *model.Config) *reconciler {
	return &reconciler{c: c, cfg: cfg, mcfg: mcfg, wake: make(chan struct{}, 1), retry: 5 * cfg.Heartbeat}
}

// update is the WatchAssign callback: it records the latest assignment and wakes run.
// A deleted assignment (nil) leaves the card as it is.
func (r *reconciler) update(a *proto.Assignment) {
	if a == nil {
		r.c.log.Info("assignment deleted; keeping the experts held")
		return
	}
	r.mu.Lock()
	r.want = a
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// desired returns the experts of the latest assignment that this model has, and whether
// there is an assignment at all.
func (r *reconciler) desired() (map[model.ExpertKey]bool, bool) {
	r.mu.Lock()
	a := r.want
	r.mu.Unlock()
	if a == nil {
		return nil, false
	}
	want := make(map[model.ExpertKey]bool, len(a.Experts))
	for _, e := range a.Experts {
		k := model.ExpertKey{Layer: int(e.Layer), Expert: int(e.Expert)}
		if !r.mcfg.IsMoELayer(k.Layer) || k.Expert >= r.mcfg.Experts {
			r.c.log.Warn("assignment names an expert the model does not have; ignored", "expert", k.String())
			continue
		}
		want[k] = true
	}
	return want, true
}

// run reconciles on every change until ctx is done. While the card differs from its
// assignment (an expert did not fit, or a step failed), it tries again every retry.
func (r *reconciler) run(ctx context.Context) {
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-retry.C:
		}
		if err := r.reconcile(ctx); err != nil && ctx.Err() == nil {
			r.c.log.Warn("reconcile failed", "err", err)
		}
		if !r.done() {
			retry.Reset(r.retry)
		}
	}
}

// done reports whether the card holds exactly its assignment (or has none).
func (r *reconciler) done() bool {
	want, ok := r.desired()
	if !ok {
		return true
	}
	have := r.c.set.Keys()
	if len(have) != len(want) {
		return false
	}
	for _, k := range have {
		if !want[k] {
			return false
		}
	}
	return true
}

// reconcile brings the card to the latest assignment: removals first (they free memory),
// then loads.
func (r *reconciler) reconcile(ctx context.Context) error {
	c := r.c
	want, ok := r.desired()
	if !ok {
		return nil
	}
	var drop []model.ExpertKey
	for _, k := range c.set.Keys() {
		if !want[k] {
			drop = append(drop, k)
		}
	}
	if len(drop) > 0 {
		if err := r.remove(ctx, drop); err != nil {
			return err
		}
		// The assignment may have changed during the drain.
		if want, ok = r.desired(); !ok {
			return nil
		}
	}
	var add []model.ExpertKey
	for k := range want {
		if !c.set.Has(k) {
			add = append(add, k)
		}
	}
	if len(add) == 0 {
		return nil
	}
	sortKeys(add)
	return r.load(ctx, add)
}

// remove drains and frees keys.
func (r *reconciler) remove(ctx context.Context, keys []model.ExpertKey) error {
	c := r.c
	c.setState(proto.StateDraining, keys...)
	defer c.setState(0, keys...)
	// One lease listing them draining, then one more heartbeat for routers to act on it.
	if err := c.waitBeats(ctx, 2); err != nil {
		return err
	}
	want, _ := r.desired()
	removed := 0
	err := c.do(ctx, func() error {
		var errs []error
		for _, k := range keys {
			if want[k] {
				continue // wanted again meanwhile: keep it
			}
			if err := c.set.Remove(k); err != nil {
				errs = append(errs, err)
				continue
			}
			removed++
		}
		return errors.Join(errs...)
	})
	c.log.Info("experts removed", "count", removed, "mem_used", c.dev.MemInfo().Used)
	if err != nil {
		return fmt.Errorf("removing experts: %w", err)
	}
	return nil
}

// load reads and uploads keys, skipping those that do not fit the card's memory.
func (r *reconciler) load(ctx context.Context, keys []model.ExpertKey) error {
	c := r.c
	ck, err := safetensors.Open(r.cfg.ModelDir)
	if err != nil {
		return fmt.Errorf("opening the checkpoint: %w", err)
	}
	defer ck.Close()
	c.setState(proto.StateLoading, keys...)
	defer c.setState(0, keys...)
	loaded, skipped := 0, 0
	for i, k := range keys {
		if err := ctx.Err(); err != nil {
			return err
		}
		if want, ok := r.desired(); ok && !want[k] {
			c.setState(0, k) // no longer wanted
			continue
		}
		w, err := model.ReadExpert(ck, r.mcfg, k)
		if err != nil {
			return fmt.Errorf("reading expert %v: %w", k, err)
		}
		need := w.Bytes() // scales included (a packed MXFP4 expert holds 1/17 of its bytes in them)
		if mi := c.dev.MemInfo(); mi.Total > 0 && mi.Used+need > mi.Total {
			c.log.Warn("expert does not fit the card's memory; skipped", "expert", k.String(),
				"bytes", need, "mem_used", mi.Used, "mem_total", mi.Total)
			c.setState(0, k)
			skipped++
			continue
		}
		if err := c.do(ctx, func() error { return c.set.Add(k, w) }); err != nil {
			c.setState(0, k)
			if errors.Is(err, errCardStopped) || ctx.Err() != nil {
				return err
			}
			c.log.Warn("loading expert failed; skipped", "expert", k.String(), "err", err)
			skipped++
			continue
		}
		c.setState(0, k) // ready
		loaded++
		if (i+1)%64 == 0 {
			c.log.Info("loading experts", "done", i+1, "of", len(keys))
		}
	}
	c.log.Info("experts loaded", "count", loaded, "skipped", skipped, "mem_used", c.dev.MemInfo().Used)
	return nil
}

func sortKeys(keys []model.ExpertKey) {
	slices.SortFunc(keys, func(a, b model.ExpertKey) int {
		if a.Layer != b.Layer {
			return a.Layer - b.Layer
		}
		return a.Expert - b.Expert
	})
}
