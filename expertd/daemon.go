package expertd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/proto"
)

// CardConfig is one card a daemon drives.
type CardConfig struct {
	ID      string // subject token, unique in the mesh
	Device  int    // backend device index
	Budget  int64  // bytes; 0 = the device's own memory
	Experts []model.ExpertKey
}

// Config of a daemon. Model and ModelDir are required; the rest has defaults.
type Config struct {
	Model    string // model name used in subjects
	ModelDir string // Hugging Face checkpoint directory
	Daemon   string // daemon id (subject token)
	Backend  ascend.Backend
	Cards    []CardConfig

	Heartbeat   time.Duration // lease refresh; the lease lives 3 heartbeats (default 1s)
	QueueDepth  int           // batches a card holds before answering 503 (default 64)
	MaxCoalesce int           // batches merged into one grouped matmul (default 16)
	DrainWait   time.Duration // how long shutdown waits for in-flight work (default 10s)
	// LeaveWait bounds how long a graceful shutdown of a controller-managed daemon keeps
	// serving, with leases marked leaving, until every expert it holds is ready on another
	// card (default 20s; < 0: do not wait). Static daemons (no assignment) do not wait:
	// nobody would place the replicas.
	LeaveWait time.Duration
	// RegistryReplicas is the registry bucket's JetStream replicas (0: keep the bucket's,
	// 1 for a new one; 3 in a NATS cluster). See mesh.WithReplicas.
	RegistryReplicas int
	// WeightDType is the dtype experts are held in (0: as read — MXFP4 packed where the card
	// has it; ascend.I8 for W8A16, quantised per row at load; ascend.BF16 to dequantise).
	WeightDType ascend.DType
	Logger      *slog.Logger
}

func (c *Config) defaults() error {
	if c.Model == "" || c.ModelDir == "" {
		return errors.New("expertd: model name and directory are required")
	}
	if err := proto.ValidToken(c.Daemon); err != nil {
		return fmt.Errorf("expertd: daemon id: %w", err)
	}
	if c.Backend == nil {
		return errors.New("expertd: no backend")
	}
	if len(c.Cards) == 0 {
		return errors.New("expertd: no cards")
	}
	seen := map[string]bool{}
	for _, cc := range c.Cards {
		if err := proto.ValidToken(cc.ID); err != nil {
			return fmt.Errorf("expertd: card id: %w", err)
		}
		if seen[cc.ID] {
			return fmt.Errorf("expertd: card id %q used twice", cc.ID)
		}
		seen[cc.ID] = true
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = time.Second
	}
	if c.QueueDepth <= 0 {
		c.QueueDepth = 64
	}
	if c.MaxCoalesce <= 0 {
		c.MaxCoalesce = 16
	}
	if c.DrainWait <= 0 {
		c.DrainWait = 10 * time.Second
	}
	if c.LeaveWait == 0 {
		c.LeaveWait = 20 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Logger = c.Logger.With("daemon", c.Daemon)
	return nil
}

// Daemon is a running expert daemon.
type Daemon struct {
	cfg   Config
	nc    *nats.Conn
	mcfg  *model.Config
	cards []*card
	ready chan struct{}
}

// New checks the configuration; Run does the work.
func New(cfg Config, nc *nats.Conn) (*Daemon, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	mcfg, err := model.LoadConfig(cfg.ModelDir)
	if err != nil {
		return nil, err
	}
	for _, cc := range cfg.Cards {
		for _, k := range cc.Experts {
			if !mcfg.IsMoELayer(k.Layer) || k.Expert < 0 || k.Expert >= mcfg.Experts {
				return nil, fmt.Errorf("expertd: card %s: %s has no expert %v", cc.ID, cfg.ModelDir, k)
			}
		}
	}
	return &Daemon{cfg: cfg, nc: nc, mcfg: mcfg, ready: make(chan struct{})}, nil
}

// Ready is closed once every card serves and holds a lease.
func (d *Daemon) Ready() <-chan struct{} { return d.ready }

// CheckReady reports whether the daemon should count as ready to an orchestrator (an
// HTTP /readyz): it serves, its NATS connection is up, every card has written a lease, and
// no card is still loading experts a controller assigned. It only reads state, so probes
// may call it at any rate. (Ready, the channel, was taken: tests and the in-process stack
// wait on it.)
func (d *Daemon) CheckReady() error {
	select {
	case <-d.ready:
	default:
		return errors.New("expertd: not serving yet (loading experts or opening the registry)")
	}
	if !d.nc.IsConnected() {
		return fmt.Errorf("expertd: NATS not connected (%v)", d.nc.Status())
	}
	// d.cards is complete once ready is closed, and never changes after.
	for _, c := range d.cards {
		c.mu.Lock()
		beats, loading := c.beats, 0
		for _, s := range c.states {
			if s == proto.StateLoading {
				loading++
			}
		}
		c.mu.Unlock()
		if beats == 0 {
			return fmt.Errorf("expertd: card %s has written no lease yet", c.id)
		}
		if loading > 0 {
			return fmt.Errorf("expertd: card %s is loading %d experts", c.id, loading)
		}
	}
	return nil
}

// Run loads the experts, serves until ctx is done, then drains. It returns nil after a
// clean drain.
func (d *Daemon) Run(ctx context.Context) (err error) {
	log := d.cfg.Logger
	ck, err := safetensors.Open(d.cfg.ModelDir)
	if err != nil {
		return err
	}
	defer ck.Close()
	defer func() {
		for _, c := range d.cards {
			if cerr := c.close(); cerr != nil && err == nil {
				err = cerr
			}
		}
	}()
	for _, cc := range d.cfg.Cards {
		c, err := d.openCard(ctx, ck, cc)
		if err != nil {
			return err
		}
		d.cards = append(d.cards, c)
	}
	ck.Close() // weights are on the cards; drop the mappings

	// 30 s rides out a JetStream leader election of a replicated registry (4–9 s) that
	// happens while the daemon starts; a refusal or a bad bucket still fails at once.
	regCtx, cancelReg := context.WithTimeout(ctx, 30*time.Second)
	reg, err := mesh.OpenRegistry(regCtx, d.nc, d.cfg.Model, 3*d.cfg.Heartbeat, mesh.WithLogger(log), mesh.WithReplicas(d.cfg.RegistryReplicas))
	cancelReg()
	if err != nil {
		return fmt.Errorf("expertd: registry: %w", err)
	}
	svc, err := micro.AddService(d.nc, micro.Config{
		Name:        proto.ServiceExpertd,
		Version:     "0.1.0",
		Description: "moemesh expert daemon " + d.cfg.Daemon,
		Metadata:    map[string]string{"daemon": d.cfg.Daemon, "model": d.cfg.Model},
	})
	if err != nil {
		return fmt.Errorf("expertd: micro service: %w", err)
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = svc.Stop()
		}
	}()

	var workers sync.WaitGroup
	workCtx, stopWork := context.WithCancel(context.Background())
	defer stopWork()
	for _, c := range d.cards {
		err := svc.AddEndpoint("card-"+c.id, micro.HandlerFunc(c.handle),
			micro.WithEndpointSubject(proto.CardSubject(d.cfg.Model, c.id)),
			micro.WithEndpointMetadata(map[string]string{"card": c.id, "device": c.device}),
			micro.WithEndpointPendingLimits(-1, 512<<20))
		if err != nil {
			return fmt.Errorf("expertd: card %s endpoint: %w", c.id, err)
		}
		workers.Add(1)
		go func() { defer workers.Done(); c.work(workCtx) }()
	}
	// The subscriptions must reach the server before the leases advertise the cards, or a
	// router could get "no responders" from a card it was just told about.
	if err := d.nc.FlushTimeout(5 * time.Second); err != nil {
		return fmt.Errorf("expertd: flush: %w", err)
	}
	beat := func(draining, leaving bool) {
		for _, c := range d.cards {
			st := c.status(d.cfg.Daemon, draining, leaving)
			pctx, cancel := context.WithTimeout(context.Background(), d.cfg.Heartbeat)
			if err := reg.PutCard(pctx, st); err != nil {
				log.Warn("lease refresh failed", "card", c.id, "err", err)
			} else {
				c.beaten()
			}
			cancel()
		}
	}
	beat(false, false)
	// Live assignments: each card follows its assign key, if the controller writes one.
	var reconcilers sync.WaitGroup
	recCtx, stopReconcile := context.WithCancel(ctx)
	defer func() { stopReconcile(); reconcilers.Wait() }()
	var recs []*reconciler
	for _, c := range d.cards {
		rec := newReconciler(c, &d.cfg, d.mcfg)
		recs = append(recs, rec)
		if err := reg.WatchAssign(recCtx, c.id, rec.update); err != nil {
			return fmt.Errorf("expertd: card %s: %w", c.id, err)
		}
		reconcilers.Add(1)
		go func() { defer reconcilers.Done(); rec.run(recCtx) }()
	}
	close(d.ready)
	log.Info("expert daemon serving", "cards", len(d.cards), "model", d.cfg.Model)

	tick := time.NewTicker(d.cfg.Heartbeat)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick.C:
			beat(false, false)
		}
	}
	tick.Stop()

	// Leave: keep serving under leases marked leaving until the controller has made our
	// experts ready elsewhere, so that draining takes no expert's last replica away.
	stopReconcile()
	reconcilers.Wait()
	managed := false
	for _, r := range recs {
		if _, ok := r.desired(); ok {
			managed = true
		}
	}
	if managed && d.cfg.LeaveWait > 0 && !d.nc.IsClosed() {
		d.leave(reg, beat)
	}

	// Drain: routers stop choosing our cards on the draining lease; what is already on its
	// way is still answered until the endpoints stop; then the queues empty and the leases go.
	log.Info("draining")
	beat(true, false)
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), d.cfg.DrainWait)
	defer cancelDrain()
	for _, c := range d.cards {
		c.waitIdle(drainCtx, d.cfg.Heartbeat)
	}
	stopped = true
	if err := svc.Stop(); err != nil {
		log.Warn("stopping micro service", "err", err)
	}
	for _, c := range d.cards {
		c.waitIdle(drainCtx, 0)
	}
	stopWork()
	workers.Wait()
	for _, c := range d.cards {
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := reg.DeleteCard(dctx, c.id); err != nil {
			log.Warn("removing lease", "card", c.id, "err", err)
		}
		cancel()
	}
	log.Info("drained")
	return nil
}

// leave heartbeats leases marked leaving until every expert on the daemon's cards is ready
// on a card of another daemon that is itself staying, or LeaveWait has passed. It stops
// waiting early when waiting cannot help: no controller holds the leader lease, no other
// card stays (a whole mesh shutting down), or the connection is closed.
func (d *Daemon) leave(reg *mesh.Registry, beat func(draining, leaving bool)) {
	log := d.cfg.Logger
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.LeaveWait)
	defer cancel()
	tick := time.NewTicker(d.cfg.Heartbeat)
	defer tick.Stop()
	log.Info("leaving: waiting for the experts to be ready elsewhere", "max", d.cfg.LeaveWait)
	for {
		if d.nc.IsClosed() {
			log.Warn("leaving: the NATS connection is closed")
			return
		}
		beat(false, true)
		lctx, lcancel := context.WithTimeout(ctx, 2*d.cfg.Heartbeat+time.Second)
		leases, err := reg.Cards(lctx)
		lcancel()
		var missing []model.ExpertKey
		if err == nil {
			var staying int
			missing, staying = d.uncovered(leases)
			if len(missing) == 0 {
				log.Info("left: every expert is ready elsewhere", "after", time.Since(t0).Round(time.Millisecond))
				return
			}
			if staying == 0 {
				log.Warn("leaving: no other card stays to take the experts", "missing", len(missing))
				return
			}
			lctx, lcancel := context.WithTimeout(ctx, 2*d.cfg.Heartbeat+time.Second)
			leader, lerr := reg.Leader(lctx)
			lcancel()
			if lerr == nil && leader == "" {
				log.Warn("leaving: no placement controller to move the experts", "missing", len(missing))
				return
			}
		}
		select {
		case <-ctx.Done():
			args := []any{"after", time.Since(t0).Round(time.Millisecond), "last_err", err, "missing", len(missing)}
			if len(missing) > 0 {
				args = append(args, "first", missing[0].String())
			}
			log.Warn("leaving although experts have no replica elsewhere", args...)
			return
		case <-tick.C:
		}
	}
}

// uncovered lists the experts of the daemon's cards that no other card serves (ready
// there, and that card neither draining nor leaving), and counts the other cards staying.
func (d *Daemon) uncovered(leases []proto.CardStatus) (missing []model.ExpertKey, staying int) {
	ours := map[string]bool{}
	for _, c := range d.cards {
		ours[c.id] = true
	}
	elsewhere := map[model.ExpertKey]bool{}
	for _, st := range leases {
		if ours[st.Card] || st.Draining || st.Leaving {
			continue
		}
		staying++
		for _, e := range st.Experts {
			if e.State == proto.StateReady {
				elsewhere[model.ExpertKey{Layer: int(e.Layer), Expert: int(e.Expert)}] = true
			}
		}
	}
	for _, c := range d.cards {
		for _, k := range c.keys() {
			if !elsewhere[k] {
				missing = append(missing, k)
			}
		}
	}
	sortKeys(missing)
	return missing, staying
}

func (d *Daemon) openCard(ctx context.Context, ck *safetensors.Checkpoint, cc CardConfig) (*card, error) {
	dev, err := d.cfg.Backend.OpenCard(cc.Device, cc.Budget)
	if err != nil {
		return nil, fmt.Errorf("expertd: card %s (%s device %d): %w", cc.ID, d.cfg.Backend.Name(), cc.Device, err)
	}
	c := newCard(cc.ID, d.cfg.Backend.Name()+":"+strconv.Itoa(cc.Device), dev, d.mcfg, d.cfg)
	log := d.cfg.Logger
	start := time.Now()
	for i, k := range cc.Experts {
		if err := ctx.Err(); err != nil {
			_ = c.close()
			return nil, err
		}
		w, err := model.ReadExpert(ck, d.mcfg, k)
		if err != nil {
			_ = c.close()
			return nil, fmt.Errorf("expertd: card %s: reading expert %v: %w", cc.ID, k, err)
		}
		if err := c.set.Add(k, w); err != nil { // names the expert itself
			_ = c.close()
			return nil, fmt.Errorf("expertd: card %s: loading %d experts: %w", cc.ID, len(cc.Experts), err)
		}
		if (i+1)%64 == 0 || i+1 == len(cc.Experts) {
			mi := dev.MemInfo()
			log.Info("loading experts", "card", cc.ID, "done", i+1, "of", len(cc.Experts), "mem_used", mi.Used, "elapsed", time.Since(start).Round(time.Millisecond))
		}
	}
	return c, nil
}

// TenantPairs returns the expert (row, expert) pairs computed per tenant since start,
// summed over the daemon's cards (from the Moe-Tenant header of each batch; nothing before
// Ready).
func (d *Daemon) TenantPairs() map[string]int64 {
	out := map[string]int64{}
	select {
	case <-d.ready:
	default:
		return out
	}
	for _, c := range d.cards {
		c.mu.Lock()
		for t, n := range c.tenants {
			out[t] += n
		}
		c.mu.Unlock()
	}
	return out
}
