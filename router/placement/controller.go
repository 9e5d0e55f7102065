package placement

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
)

// ControllerConfig configures a placement controller.
type ControllerConfig struct {
	Model       string // model name in subjects and the registry
	ID          string // this controller's id in the leader lease (a subject token)
	Layers      []int  // the model's MoE layers
	Experts     int    // routed experts per layer
	ExpertBytes int64  // memory of one expert on a card
	MinReplicas int    // default 1

	Interval time.Duration // how often the plan is recomputed (default 3s)
	Window   time.Duration // the load window (default 30s)
	Settle   time.Duration // delay after a card joins or leaves before replanning (default 500ms)
	LeaseTTL time.Duration // the leader lease (default 3s)
	Logger   *slog.Logger
}

func (c *ControllerConfig) defaults() error {
	if c.Model == "" || c.Experts <= 0 || len(c.Layers) == 0 || c.ExpertBytes <= 0 {
		return errors.New("placement: controller needs the model name, its MoE layers, experts and expert size")
	}
	if err := proto.ValidToken(c.ID); err != nil {
		return fmt.Errorf("placement: controller id: %w", err)
	}
	if c.MinReplicas <= 0 {
		c.MinReplicas = 1
	}
	if c.Interval <= 0 {
		c.Interval = 3 * time.Second
	}
	if c.Window <= 0 {
		c.Window = 30 * time.Second
	}
	if c.Settle <= 0 {
		c.Settle = 500 * time.Millisecond
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = 3 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Controller is a placement controller; Run does the work.
type Controller struct {
	cfg ControllerConfig
	nc  *nats.Conn
}

// NewController checks cfg.
func NewController(cfg ControllerConfig, nc *nats.Conn) (*Controller, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	return &Controller{cfg: cfg, nc: nc}, nil
}

// Run campaigns for leadership until ctx is done; while leading, it places experts.
func (c *Controller) Run(ctx context.Context) error {
	reg, err := c.openRegistry(ctx)
	if err != nil {
		return err
	}
	for {
		err := reg.Campaign(ctx, c.cfg.ID, c.cfg.LeaseTTL, func(lctx context.Context) {
			if err := c.lead(lctx, reg); err != nil && lctx.Err() == nil {
				c.cfg.Logger.Warn("placement controller stopped leading", "err", err)
			}
		})
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// openRegistry opens the model's registry, retrying until ctx ends: the controller does not
// create the bucket (an expertd does, and with NATS authorization only expertd may), so a
// controller started before every daemon waits for the first one instead of exiting.
func (c *Controller) openRegistry(ctx context.Context) (*mesh.Registry, error) {
	const attempt = 10 * time.Second
	for {
		octx, cancel := context.WithTimeout(ctx, attempt)
		reg, err := mesh.OpenRegistry(octx, c.nc, c.cfg.Model, 0, mesh.WithLogger(c.cfg.Logger))
		cancel()
		if err == nil {
			return reg, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("placement: registry: %w", err)
		}
		c.cfg.Logger.Warn("placement controller: registry not ready, retrying", "err", err)
		select { // an error that came at once (not a timeout) is not retried in a hot loop
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// sample is one load report's counts, kept for the window.
type sample struct {
	at time.Time
	n  map[model.ExpertKey]float64
}

// leader is the state of one term.
type leader struct {
	mu      sync.Mutex
	cards   map[string]*proto.CardStatus
	assigns map[string]*proto.Assignment
	planned map[string][]model.ExpertKey // this term's last plan per card (without kept extras)
	samples []sample
	wake    chan struct{}
}

func (l *leader) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (c *Controller) lead(ctx context.Context, reg *mesh.Registry) error {
	log := c.cfg.Logger.With("controller", c.cfg.ID)
	log.Info("placement controller leading")
	l := &leader{cards: map[string]*proto.CardStatus{}, assigns: map[string]*proto.Assignment{}, planned: map[string][]model.ExpertKey{}, wake: make(chan struct{}, 1)}
	if err := reg.WatchAssigns(ctx, func(id string, a *proto.Assignment) {
		l.mu.Lock()
		defer l.mu.Unlock()
		if a == nil {
			delete(l.assigns, id)
		} else {
			l.assigns[id] = a
		}
	}); err != nil {
		return err
	}
	sub, err := c.nc.Subscribe(proto.LoadSubject(c.cfg.Model), func(m *nats.Msg) {
		var r proto.LoadReport
		if err := proto.DecodeLoadReport(m.Data, &r); err != nil {
			log.Warn("skipping load report", "err", err)
			return
		}
		s := sample{at: time.Now(), n: make(map[model.ExpertKey]float64, len(r.Layers))}
		for i := range r.Layers {
			s.n[model.ExpertKey{Layer: int(r.Layers[i]), Expert: int(r.Experts[i])}] += float64(r.Tokens[i])
		}
		l.mu.Lock()
		l.samples = append(l.samples, s)
		l.mu.Unlock()
	})
	if err != nil {
		return fmt.Errorf("placement: load subscription: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := reg.WatchCards(ctx, func(id string, st *proto.CardStatus) {
		l.mu.Lock()
		defer l.mu.Unlock()
		old, known := l.cards[id]
		if st == nil {
			delete(l.cards, id)
			l.signal() // a card left: re-place what only it held
			return
		}
		l.cards[id] = st
		if !known || old.Draining != st.Draining || old.Leaving != st.Leaving {
			l.signal() // capacity came or is going: plan again
		}
	}); err != nil {
		return err
	}

	var epoch int64
	tick := time.NewTicker(c.cfg.Interval)
	defer tick.Stop()
	settle := time.NewTimer(c.cfg.Settle) // the first round, once the current cards are known
	defer settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-l.wake:
			settle.Reset(c.cfg.Settle)
			continue
		case <-settle.C:
		case <-tick.C:
		}
		epoch++
		if err := c.round(ctx, reg, l, epoch, log); err != nil && ctx.Err() == nil {
			log.Warn("placement round failed", "err", err)
		}
	}
}

// round computes a plan and writes the assignments that changed.
func (c *Controller) round(ctx context.Context, reg *mesh.Registry, l *leader, epoch int64, log *slog.Logger) error {
	in, leases, prev := c.input(l)
	if len(in.Cards) == 0 {
		return nil
	}
	p, err := Compute(in)
	if err != nil {
		return err
	}
	if len(p.Unplaced) > 0 {
		log.Warn("experts without enough replicas for want of card memory", "count", len(p.Unplaced), "first", p.Unplaced[0].String())
	}
	// Make before break: an expert leaves a card only once enough of its new replicas are
	// ready elsewhere.
	ready := map[model.ExpertKey]map[string]bool{}
	for id, st := range leases {
		for _, e := range st.Experts {
			if e.State == proto.StateReady {
				k := model.ExpertKey{Layer: int(e.Layer), Expert: int(e.Expert)}
				if ready[k] == nil {
					ready[k] = map[string]bool{}
				}
				ready[k][id] = true
			}
		}
	}
	l.mu.Lock()
	for id, want := range p.Assign {
		l.planned[id] = want
	}
	l.mu.Unlock()
	var errs []error
	for id, want := range p.Assign {
		out := slices.Clone(want)
		for k := range ready {
			if !ready[k][id] || slices.Contains(want, k) {
				continue
			}
			n := 0
			for other := range ready[k] {
				if other != id && slices.Contains(p.Assign[other], k) {
					n++
				}
			}
			if n < min(c.cfg.MinReplicas, p.Replicas[k]) {
				out = append(out, k) // keep until its replacement serves
			}
		}
		slices.SortFunc(out, keyCmp)
		if old, ok := prev[id]; ok && slices.Equal(old, out) {
			continue
		}
		a := &proto.Assignment{V: proto.Version, Card: id, Epoch: epoch, Leader: c.cfg.ID, Experts: make(proto.ExpertRefs, 0, len(out))}
		for _, k := range out {
			a.Experts = append(a.Experts, proto.ExpertRef{Layer: int32(k.Layer), Expert: int32(k.Expert)})
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := reg.PutAssign(wctx, a)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		l.mu.Lock()
		l.assigns[id] = a
		l.mu.Unlock()
		log.Info("assignment written", "card", id, "experts", len(out), "epoch", epoch)
	}
	return errors.Join(errs...)
}

// input snapshots the leader's view: the live cards (draining and leaving ones get
// nothing: a leaving card's experts are placed elsewhere while it still serves them, and
// it drains once they are ready there), their current experts (the last assignment, or the lease in static mode) and
// the load over the window.
func (c *Controller) input(l *leader) (Input, map[string]*proto.CardStatus, map[string][]model.ExpertKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cutoff := time.Now().Add(-c.cfg.Window)
	i := 0
	for i < len(l.samples) && l.samples[i].at.Before(cutoff) {
		i++
	}
	l.samples = l.samples[i:]
	load := map[model.ExpertKey]float64{}
	for _, s := range l.samples {
		for k, v := range s.n {
			load[k] += v
		}
	}
	in := Input{Layers: c.cfg.Layers, Experts: c.cfg.Experts, ExpertBytes: c.cfg.ExpertBytes,
		MinReplicas: c.cfg.MinReplicas, Load: load}
	leases := map[string]*proto.CardStatus{}
	prev := map[string][]model.ExpertKey{}
	for id, st := range l.cards {
		leases[id] = st
		if a, ok := l.assigns[id]; ok {
			ks := make([]model.ExpertKey, 0, len(a.Experts))
			for _, e := range a.Experts {
				ks = append(ks, model.ExpertKey{Layer: int(e.Layer), Expert: int(e.Expert)})
			}
			prev[id] = ks
		}
		if st.Draining || st.Leaving {
			continue
		}
		card := Card{ID: id}
		held := 0
		for _, e := range st.Experts {
			if e.State != proto.StateDraining {
				held++
			}
		}
		if st.MemTotal > 0 {
			other := max(0, st.MemUsed-int64(held)*c.cfg.ExpertBytes)
			card.Capacity = max(1, st.MemTotal-other) // 0 would mean unlimited
		}
		if ks, ok := l.planned[id]; ok {
			card.Current = ks
		} else if ks, ok := prev[id]; ok {
			card.Current = ks
		} else {
			for _, e := range st.Experts {
				card.Current = append(card.Current, model.ExpertKey{Layer: int(e.Layer), Expert: int(e.Expert)})
			}
		}
		in.Cards = append(in.Cards, card)
	}
	return in, leases, prev
}
