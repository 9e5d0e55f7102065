package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/moemesh/moemesh/ascend"
	_ "github.com/moemesh/moemesh/ascend/cpu" // the default backend
	"github.com/moemesh/moemesh/expertd"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
)

// Config of an in-process mesh.
type Config struct {
	ModelDir string
	Model    string // name in subjects; default: the directory's base name
	NATSURL  string // "" starts an embedded server
	Daemons  int    // default 2, one card each; ignored when Placement is given
	// Placement gives each daemon's expert indices (applied to every MoE layer), one entry per
	// daemon (an empty, non-nil Placement starts none: daemons run elsewhere); nil spreads
	// experts round-robin and replicates the first Replicated experts on every daemon.
	Placement  [][]int
	Replicated int
	Heartbeat  time.Duration
	Backend    string // default "cpu"
	// QueueDepth is each card's queue (expertd.Config.QueueDepth; 0: its default).
	QueueDepth int
	// Prefix starts daemon and card ids, so that several stacks can share one server
	// (default: s1, s2, … per process).
	Prefix string
	Logger *slog.Logger
}

var stacks atomic.Int64

// Stack is a running in-process mesh.
type Stack struct {
	Config  Config
	Server  *mesh.Server // nil when Config.NATSURL was given
	URL     string
	Model   *model.Config
	conns   []*nats.Conn
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	errs    []error
	daemons []*expertd.Daemon
	stops   []context.CancelFunc // per daemon
	stopped []chan struct{}      // closed when the daemon's Run has returned
	dconns  []*nats.Conn         // per daemon
}

// Spread places experts [0, experts) round-robin over cards, then adds the first
// replicated experts to every card as well.
func Spread(experts, cards, replicated int) [][]int {
	out := make([][]int, cards)
	for e := 0; e < experts; e++ {
		if e < replicated {
			for c := range out {
				out[c] = append(out[c], e)
			}
			continue
		}
		out[e%cards] = append(out[e%cards], e)
	}
	return out
}

// Start brings the mesh up and returns when every daemon serves.
func Start(ctx context.Context, cfg Config) (_ *Stack, err error) {
	if cfg.Model == "" {
		cfg.Model = filepath.Base(filepath.Clean(cfg.ModelDir))
	}
	if cfg.Backend == "" {
		cfg.Backend = "cpu"
	}
	if cfg.Prefix == "" {
		cfg.Prefix = fmt.Sprintf("s%d", stacks.Add(1))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	mcfg, err := model.LoadConfig(cfg.ModelDir)
	if err != nil {
		return nil, err
	}
	if cfg.Placement == nil {
		if cfg.Daemons <= 0 {
			cfg.Daemons = 2
		}
		cfg.Placement = Spread(mcfg.Experts, cfg.Daemons, cfg.Replicated)
	}
	cfg.Daemons = len(cfg.Placement)
	be, err := ascend.Open(cfg.Backend)
	if err != nil {
		return nil, err
	}
	s := &Stack{Config: cfg, URL: cfg.NATSURL, Model: mcfg}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.URL == "" {
		if s.Server, err = mesh.StartServer(mesh.ServerConfig{Host: "127.0.0.1", Port: -1}); err != nil {
			return nil, err
		}
		s.URL = s.Server.ClientURL()
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	for i, experts := range cfg.Placement {
		var keys []model.ExpertKey
		for _, l := range mcfg.MoELayers() {
			for _, e := range experts {
				keys = append(keys, model.ExpertKey{Layer: l, Expert: e})
			}
		}
		nc, err := s.Connect(ctx, fmt.Sprintf("expertd-%d", i))
		if err != nil {
			return nil, err
		}
		id := fmt.Sprintf("%sd%d", cfg.Prefix, i)
		d, err := expertd.New(expertd.Config{Model: cfg.Model, ModelDir: cfg.ModelDir, Daemon: id, Backend: be,
			Cards:     []expertd.CardConfig{{ID: id + "-c0", Device: i, Experts: keys}},
			Heartbeat: cfg.Heartbeat, QueueDepth: cfg.QueueDepth, Logger: cfg.Logger}, nc)
		if err != nil {
			return nil, err
		}
		s.daemons = append(s.daemons, d)
		s.dconns = append(s.dconns, nc)
		dctx, stop := context.WithCancel(runCtx)
		stopped := make(chan struct{})
		s.stops, s.stopped = append(s.stops, stop), append(s.stopped, stopped)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer close(stopped)
			if err := d.Run(dctx); err != nil {
				s.mu.Lock()
				s.errs = append(s.errs, fmt.Errorf("daemon %s: %w", id, err))
				s.mu.Unlock()
				cancel()
			}
		}()
	}
	for _, d := range s.daemons {
		select {
		case <-d.Ready():
		case <-runCtx.Done():
			return nil, fmt.Errorf("stack: a daemon stopped while starting: %w", s.Err())
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s, nil
}

// StopDaemon stops daemon i (it drains and removes its lease, as on SIGTERM) and waits
// until it has, or ctx is done.
func (s *Stack) StopDaemon(ctx context.Context, i int) error {
	if i < 0 || i >= len(s.stops) {
		return fmt.Errorf("stack: no daemon %d", i)
	}
	s.stops[i]()
	select {
	case <-s.stopped[i]:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stack: daemon %d still stopping: %w", i, ctx.Err())
	}
}

// KillDaemon cuts daemon i off the mesh as a crash would: its connection closes at once
// (no draining lease, no lease removal: the lease lapses by its TTL), then its goroutines
// are stopped and waited for, or ctx is done.
func (s *Stack) KillDaemon(ctx context.Context, i int) error {
	if i < 0 || i >= len(s.stops) {
		return fmt.Errorf("stack: no daemon %d", i)
	}
	s.dconns[i].Close()
	return s.StopDaemon(ctx, i)
}

// CardIDs lists the card ids of the stack's daemons, in daemon order.
func (s *Stack) CardIDs() []string {
	ids := make([]string, len(s.Config.Placement))
	for i := range ids {
		ids[i] = fmt.Sprintf("%sd%d-c0", s.Config.Prefix, i)
	}
	return ids
}

// Connect opens a connection to the stack's server, closed by Close.
func (s *Stack) Connect(ctx context.Context, name string) (*nats.Conn, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nc, err := mesh.Connect(cctx, s.URL, name)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.conns = append(s.conns, nc)
	s.mu.Unlock()
	return nc, nil
}

// Err joins the errors daemons stopped with.
func (s *Stack) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.errs...)
}

// Close drains the daemons, closes connections and stops the server.
func (s *Stack) Close() error {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	s.mu.Lock()
	for _, nc := range s.conns {
		nc.Close()
	}
	s.conns = nil
	s.mu.Unlock()
	if s.Server != nil {
		s.Server.Shutdown()
	}
	return s.Err()
}

// TenantPairs sums the expert pairs every daemon of the stack computed per tenant.
func (s *Stack) TenantPairs() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int64{}
	for _, d := range s.daemons {
		for t, n := range d.TenantPairs() {
			out[t] += n
		}
	}
	return out
}

// Collectors are the daemons' Prometheus collectors, labelled by daemon id.
func (s *Stack) Collectors() []prometheus.Collector {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cs []prometheus.Collector
	for i, d := range s.daemons {
		cs = append(cs, expertd.NewCollector(d, prometheus.Labels{"daemon": fmt.Sprintf("%sd%d", s.Config.Prefix, i)}))
	}
	return cs
}
