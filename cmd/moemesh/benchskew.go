package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/ascend/cpu"
	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/model/synth"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/router"
	"github.com/moemesh/moemesh/router/placement"
)

// skewFlags are bench skew's knobs.
type skewFlags struct {
	modelSpec               string
	skew                    float64
	daemons, clients        int
	tokens, hot, minReplica int
	duration, warmup        time.Duration
	segment                 time.Duration
	pairTime, launch        time.Duration
	interval, window        time.Duration
	cpuProfile              string
	timeline                bool
	load, rate              float64
	inflight                int
	calibrate               time.Duration
}

func newBenchSkew(g *globals) *cobra.Command {
	var f skewFlags
	c := &cobra.Command{
		Use:   "skew",
		Short: "Zipf-skewed routing: p99 MoE-layer latency with the placement controller off and on",
		Long: `Runs the same load of MoE-layer calls on two meshes (each with its own embedded NATS
server and --daemons expert daemons in this process, one card each, experts spread
round-robin with one replica each): one with the placement controller off (the static
assignment stays), one with it on (it replicates the experts the routers' load reports show
hot). Every call routes --tokens random hidden states through the layer's gate and sends
them to the mesh.

The load is an open loop by default: calls arrive at Poisson times at --load times the
throughput the static mesh reaches with --clients closed-loop clients (measured first), and
a call's latency counts from its arrival. With --load 0 it is that closed loop instead. The
meshes take the load in turns of --segment until each had --duration, so a noisy neighbour
slows both alike; calls due in the first --warmup (wall time) are left out of the latencies.

The default model is a DeepSeek-V3-style checkpoint whose gate bias is fitted so that expert
popularity is Zipf(--skew) (mkmodel --skew). Cards are emulated devices: every grouped
matmul takes at least --card-launch plus --card-pair-time per (token, expert) pair,
whether or not the host CPU finished sooner. This is what makes a hot card a queue of its own
as on real accelerators; without it (--card-pair-time 0) all cards share this machine's cores
and placement cannot change how much compute there is. The default 1ms per pair is slow for a
real card, but it keeps device time well above the host's own per-call overhead (gating,
NATS, scheduling) on a small shared machine, as device time is on real hardware.
The summary line compares p99 latency: off over on.`,
		Example: "  moemesh bench skew --skew 1.2 --daemons 8 --clients 8 --duration 30s",
		RunE:    func(cmd *cobra.Command, args []string) error { return runBenchSkew(cmd.Context(), g.logger(), f) },
	}
	fl := c.Flags()
	fl.StringVar(&f.modelSpec, "model", "", "model directory (default: a skewed deepseek_v3 checkpoint generated into the cache)")
	fl.Float64Var(&f.skew, "skew", 1.2, "Zipf exponent of expert popularity for the generated model")
	fl.IntVar(&f.daemons, "daemons", 8, "expert daemons (one card each)")
	fl.IntVar(&f.clients, "clients", 8, "closed loop (and calibration): concurrent clients, each with one MoE-layer call in flight")
	fl.Float64Var(&f.load, "load", 0.8, "open loop: offered calls/s as a fraction of the static placement's closed-loop throughput, measured first (0 with --rate 0: closed loop)")
	fl.Float64Var(&f.rate, "rate", 0, "open loop: offered calls/s (overrides --load)")
	fl.IntVar(&f.inflight, "inflight", 32, "open loop: most calls in flight at once (later arrivals wait, and their wait counts)")
	fl.DurationVar(&f.calibrate, "calibrate", 4*time.Second, "open loop with --load: how long the static placement's throughput is measured")
	fl.IntVar(&f.tokens, "tokens", 32, "tokens per MoE-layer call")
	fl.DurationVar(&f.duration, "duration", 30*time.Second, "load time per mesh (the two take turns, so the bench runs twice as long)")
	fl.DurationVar(&f.segment, "segment", 2*time.Second, "how long one mesh is loaded before the other takes its turn")
	fl.DurationVar(&f.warmup, "warmup", 12*time.Second, "first part of the bench (wall time, both meshes) left out of the latencies: the controller's reaction")
	fl.IntVar(&f.hot, "hot", 2, "the hottest experts whose replicas are tracked")
	fl.DurationVar(&f.pairTime, "card-pair-time", time.Millisecond, "emulated device time per (token, expert) pair (0: real CPU compute only)")
	fl.DurationVar(&f.launch, "card-launch", 50*time.Microsecond, "emulated device time per grouped matmul")
	fl.IntVar(&f.minReplica, "min-replicas", 1, "the controller's fewest replicas per expert")
	fl.DurationVar(&f.interval, "controller-interval", 0, "how often the controller replans (0: its default)")
	fl.DurationVar(&f.window, "controller-window", 0, "the controller's load window (0: its default)")
	fl.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole bench to this file")
	fl.BoolVar(&f.timeline, "timeline", false, "also print each segment's calls and latencies, in order")
	return c
}

func runBenchSkew(ctx context.Context, log *slog.Logger, f skewFlags) (err error) {
	switch {
	case f.daemons < 2:
		return fmt.Errorf("--daemons %d: want at least 2 (replicas need somewhere to go)", f.daemons)
	case f.clients < 1 || f.tokens < 1 || f.hot < 1 || f.inflight < 1:
		return fmt.Errorf("--clients, --inflight, --tokens and --hot must be positive")
	case f.load < 0 || f.rate < 0 || (f.rate == 0 && f.load > 0 && f.calibrate <= 0):
		return fmt.Errorf("--load and --rate must not be negative, and --load needs a positive --calibrate")
	case f.duration <= 0 || f.segment <= 0 || f.warmup < 0 || f.warmup >= 2*f.duration:
		return fmt.Errorf("--duration and --segment must be positive and --warmup %v shorter than twice --duration %v", f.warmup, f.duration)
	case f.pairTime < 0 || f.launch < 0:
		return fmt.Errorf("--card-pair-time and --card-launch must not be negative")
	}
	dir, name, err := skewModel(f, log)
	if err != nil {
		return err
	}
	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return err
	}
	layers := cfg.MoELayers()
	if len(layers) == 0 {
		return fmt.Errorf("%s has no MoE layer", dir)
	}
	card := fmt.Sprintf("emulated, %v/pair + %v/matmul", f.pairTime, f.launch)
	if f.pairTime == 0 {
		card = "the cpu backend, no emulated device time"
	}
	fmt.Printf("model %s (%s): hidden %d, %d experts, top-%d, expert width %d; layer %d; %d daemons per mesh, %d clients × %d tokens; card: %s; %v per mesh in turns of %v (%v warm-up); machine: %d cpus\n",
		name, cfg.Arch, cfg.Hidden, cfg.Experts, cfg.TopK, cfg.ExpertIntermediate, layers[0], f.daemons, f.clients, f.tokens,
		card, f.duration, f.segment, f.warmup, runtimeCPUs())
	// Both meshes stay up and take the load in turns of --segment, so that whatever else
	// runs on this machine slows both alike; each mesh is loaded for --duration in all.
	var meshes [2]*skewMesh
	for i, on := range []bool{false, true} {
		if meshes[i], err = startSkewMesh(ctx, log, f, dir, name, cfg, on); err != nil {
			return fmt.Errorf("controller %s: %w", onOff(on), err)
		}
		defer func() { err = errors.Join(err, meshes[i].close()) }()
	}
	rng := rand.New(rand.NewPCG(1, 99))
	var inputs [][]float32 // the same inputs, in the same order, for both meshes
	for range 64 {
		inputs = append(inputs, stack.RandomInput(rng, f.tokens, cfg.Hidden))
	}
	rate := f.rate
	if rate == 0 && f.load > 0 {
		// The offered load is a fraction of what the static placement can serve, measured
		// first with a closed loop. With emulated cards that capacity is the busiest
		// card's calls per second of device time, which does not depend on what else runs
		// on this machine; the closed loop's own calls per second do.
		m0 := meshes[0]
		t0 := time.Now()
		var busy0 map[int]time.Duration
		if m0.pace != nil {
			busy0 = m0.pace.busySnapshot()
		}
		if err := m0.segment(ctx, cfg, layers[0], inputs, f.clients, 0, t0.Add(f.calibrate), t0.Add(time.Hour)); err != nil {
			return fmt.Errorf("calibrating: %w", err)
		}
		calls := float64(len(m0.run.all))
		capacity, how := calls/time.Since(t0).Seconds(), "closed-loop throughput"
		if m0.pace != nil {
			var worst time.Duration
			for id, b := range m0.pace.busySnapshot() {
				worst = max(worst, b-busy0[id])
			}
			if worst > 0 {
				capacity, how = calls/worst.Seconds(), "busiest card's device time per call"
			}
		}
		rate = f.load * capacity
		m0.run = &skewRun{pairs: make([]int64, cfg.Experts)}
		fmt.Printf("open loop: %.1f calls/s, %.0f%% of the static placement's capacity of %.1f calls/s (from the %s, %d clients)\n", rate, 100*f.load, capacity, how, f.clients)
	} else if rate > 0 {
		fmt.Printf("open loop: %.1f calls/s\n", rate)
	} else {
		fmt.Printf("closed loop: %d clients\n", f.clients)
	}
	start := time.Now()
	measureFrom := start.Add(f.warmup)
	for seg := 0; time.Since(start) < 2*f.duration; seg++ {
		i := seg % 2
		until := time.Now().Add(min(f.segment, start.Add(2*f.duration).Sub(time.Now())))
		if err := meshes[i].segment(ctx, cfg, layers[0], inputs, f.clients, rate, until, measureFrom); err != nil {
			return fmt.Errorf("controller %s: %w", onOff(i == 1), err)
		}
	}
	var res [2]*skewRun
	for i, m := range meshes {
		m.finish(f)
		res[i] = m.run
	}
	if f.timeline {
		for i := range max(len(res[0].segs), len(res[1].segs)) {
			for _, r := range res {
				if i < len(r.segs) {
					fmt.Println(r.segs[i])
				}
			}
		}
	}
	printSkew(f, cfg, res)
	off, on := res[0].p(0.99), res[1].p(0.99)
	// A stall of the whole machine (other work on it) in one turn inflates that turn's
	// tail on whichever mesh had it; the median over consecutive turns shows how much of
	// the overall ratio is the placement and how much the noise.
	var turns []float64
	for k := range min(len(res[0].segP99), len(res[1].segP99)) {
		turns = append(turns, res[0].segP99[k].Seconds()/max(res[1].segP99[k].Seconds(), 1e-9))
	}
	if len(turns) > 0 {
		slices.Sort(turns)
		fmt.Printf("p99 off/on per pair of turns: median %.2f, range %.2f to %.2f over %d pairs\n", turns[len(turns)/2], turns[0], turns[len(turns)-1], len(turns))
	}
	fmt.Printf("skew: p99_off_ms=%.2f p99_on_ms=%.2f ratio=%.2f\n", ms(off), ms(on), off.Seconds()/on.Seconds())
	return nil
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// skewModel resolves --model, or generates the default skewed checkpoint into the cache.
func skewModel(f skewFlags, log *slog.Logger) (dir, name string, err error) {
	if f.modelSpec != "" {
		return resolveModel(f.modelSpec, log)
	}
	// Tiny dimensions: the emulated cards set the compute time, and the host's two cores
	// should be left to the mesh's own work (gating, transport, bookkeeping).
	o := synth.Options{Arch: "deepseek_v3", Preset: synth.Tiny, Seed: 1, DType: "bf16",
		Layers: 2, Experts: 16, TopK: 2, Hidden: 128, ExpertIntermediate: 64, Skew: f.skew}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	name = strings.ReplaceAll(fmt.Sprintf("bench-skew-%g", f.skew), ".", "_")
	dir = filepath.Join(cache, "moemesh", name)
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err != nil {
		log.Info("generating the skewed model", "skew", f.skew, "dir", dir)
		if _, err := synth.Write(dir, o); err != nil {
			return "", "", fmt.Errorf("generating the skewed model: %w", err)
		}
	}
	return dir, name, nil
}

// skewRun is what one mesh measured.
type skewRun struct {
	on      bool
	lat     []time.Duration // per call started after the warm-up, sorted
	all     []time.Duration // per call, warm-up included, sorted
	span    time.Duration   // time this mesh was loaded after the warm-up
	pairs   []int64         // routed pairs per expert, whole run
	hot     []int           // the hottest experts by routed pairs
	gained  []time.Duration // per hot expert: load time until it had 2 ready replicas (-1: never)
	final   map[int]int     // ready replicas of each hot expert at the end
	busy    []float64       // each card's emulated busy fraction over span
	started time.Time       // when this mesh first got load
	segs    []string        // per segment: when, calls, p50, p99, max (--timeline)
	segP99  []time.Duration // p99 of each measured segment
}

func (r *skewRun) p(q float64) time.Duration { return quantile(r.lat, q) }

// quantile of sorted durations (0 for none).
func quantile(s []time.Duration, q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// skewMesh is one of the two meshes: its daemons, controller (when on), router side and
// per-client gates.
type skewMesh struct {
	run     *skewRun
	st      *stack.Stack
	m       *router.Mesh
	gates   []*model.MoELayer
	pace    *pacing
	watch   *replicaWatch
	busy0   map[int]time.Duration
	next    atomic.Int64 // the next input
	warmup  time.Duration
	closers []func() error // in reverse order
}

func (s *skewMesh) close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	return errors.Join(errs...)
}

// startSkewMesh starts a mesh (its own embedded server and daemons) with the controller on
// or off and waits until every expert of the layer has a replica.
func startSkewMesh(ctx context.Context, log *slog.Logger, f skewFlags, dir, name string, cfg *model.Config, on bool) (_ *skewMesh, err error) {
	s := &skewMesh{run: &skewRun{on: on, pairs: make([]int64, cfg.Experts)}, watch: &replicaWatch{}, warmup: f.warmup}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.close())
		}
	}()
	name += "-" + onOff(on) // separate servers, but keep the registries apart anyway
	s.pace = setPacing(f, cfg)
	backend := "cpu"
	if s.pace != nil {
		backend = pacedBackendName
	}
	if s.st, err = stack.Start(ctx, stack.Config{ModelDir: dir, Model: name, Daemons: f.daemons, Backend: backend, Logger: log}); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, s.st.Close)
	layer := cfg.MoELayers()[0]
	if on {
		stop, err := startSkewController(ctx, s.st, dir, name, cfg, f)
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, stop)
	}
	nc, err := s.st.Connect(ctx, "bench-router")
	if err != nil {
		return nil, err
	}
	if s.m, err = router.NewMesh(ctx, nc, router.MeshConfig{Model: name, Experts: cfg.Experts}); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() error { s.m.Close(); return nil })
	keys := make([]model.ExpertKey, cfg.Experts)
	for e := range keys {
		keys[e] = model.ExpertKey{Layer: layer, Expert: e}
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = s.m.WaitFor(wctx, keys)
	cancel()
	if err != nil {
		return nil, err
	}
	// One gate per client (a MoELayer is not safe for concurrent use), each on a card of
	// its own with one thread, so that gating costs the same on both meshes.
	ck, err := safetensors.Open(dir)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	for i := range max(f.clients, f.inflight) {
		card, err := cpu.Backend{Threads: 1}.OpenCard(2000+i, 0)
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, card.Close)
		g, err := model.LoadMoELayer(ck, cfg, layer, card)
		if err != nil {
			return nil, err
		}
		s.closers = append(s.closers, g.Close)
		s.gates = append(s.gates, g)
	}
	wctx, stopWatch := context.WithCancel(context.Background())
	s.closers = append(s.closers, func() error { stopWatch(); return nil })
	if err := s.watch.start(wctx, s.st, name, layer); err != nil {
		return nil, err
	}
	return s, nil
}

// call is one MoE-layer call: its input and when it was due (the latency counts from
// then, so time spent waiting for a free client in an open loop is counted too).
type call struct {
	at time.Time
	x  []float32
}

// segment loads s until until. rate > 0 is an open loop: calls arrive at Poisson times,
// rate per second, and any of the mesh's gates takes the next; rate 0 is a closed loop of
// clients gates, each sending its next call as soon as the previous one returned. Calls
// due after measureFrom are measured.
func (s *skewMesh) segment(ctx context.Context, cfg *model.Config, layer int, inputs [][]float32, clients int, rate float64, until, measureFrom time.Time) error {
	if s.run.started.IsZero() {
		s.run.started = time.Now()
	}
	if s.pace != nil && s.busy0 == nil && !time.Now().Before(measureFrom) {
		s.busy0 = s.pace.busySnapshot()
	}
	segStart := time.Now()
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	input := func() []float32 { return inputs[int(s.next.Add(1)-1)%len(inputs)] }
	var get func() (call, bool)
	workers := s.gates[:min(clients, len(s.gates))]
	if rate > 0 {
		workers = s.gates
		due := make(chan call, 1<<14)
		rng := rand.New(rand.NewPCG(uint64(segStart.UnixNano()), 3))
		go func() {
			defer close(due)
			timer := time.NewTimer(0)
			defer timer.Stop()
			for t := segStart; ; {
				t = t.Add(time.Duration(rng.ExpFloat64() / rate * float64(time.Second)))
				if !t.Before(until) {
					return
				}
				timer.Reset(time.Until(t)) // the arrival process: the next call is due then
				select {
				case <-sctx.Done():
					return
				case <-timer.C:
				}
				select {
				case due <- call{at: t, x: input()}:
				case <-sctx.Done():
					return
				}
			}
		}()
		get = func() (call, bool) { c, ok := <-due; return c, ok }
	} else {
		get = func() (call, bool) {
			if !time.Now().Before(until) || sctx.Err() != nil {
				return call{}, false
			}
			return call{at: time.Now(), x: input()}, true
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var seg []time.Duration
	errs := make([]error, len(workers))
	for i, gate := range workers {
		wg.Go(func() {
			out := make([]float32, f32len(inputs))
			pairs := make([]int64, cfg.Experts)
			var lat, all []time.Duration
			for {
				c, ok := get()
				if !ok {
					break
				}
				r, err := gate.Route(c.x, nil)
				if err == nil {
					for _, e := range r.Experts {
						pairs[e]++
					}
					err = s.m.Forward(sctx, layer, c.x, cfg.Hidden, r, out)
				}
				if err != nil {
					errs[i] = fmt.Errorf("client %d: %w", i, err)
					stop()
					break
				}
				d := time.Since(c.at)
				all = append(all, d)
				if !c.at.Before(measureFrom) {
					lat = append(lat, d)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			seg = append(seg, all...)
			s.run.lat = append(s.run.lat, lat...)
			s.run.all = append(s.run.all, all...)
			for e, n := range pairs {
				s.run.pairs[e] += n
			}
		})
	}
	wg.Wait()
	if !segStart.Before(measureFrom) {
		s.run.span += time.Since(segStart)
	}
	slices.Sort(seg)
	if !segStart.Before(measureFrom) && len(seg) > 0 {
		s.run.segP99 = append(s.run.segP99, quantile(seg, 0.99))
	}
	s.run.segs = append(s.run.segs, fmt.Sprintf("%s at %6.1fs: %4d calls, p50 %7.1f ms, p99 %7.1f ms, max %7.1f ms",
		onOff(s.run.on), segStart.Sub(measureFrom.Add(-s.warmup)).Seconds(), len(seg), ms(quantile(seg, 0.5)), ms(quantile(seg, 0.99)), ms(quantile(seg, 1))))
	return errors.Join(errs...)
}

func f32len(inputs [][]float32) int { return len(inputs[0]) }

// finish computes the run's summary from what the segments collected.
func (s *skewMesh) finish(f skewFlags) {
	r := s.run
	slices.Sort(r.lat)
	slices.Sort(r.all)
	order := make([]int, len(r.pairs))
	for e := range order {
		order[e] = e
	}
	sort.SliceStable(order, func(a, b int) bool { return r.pairs[order[a]] > r.pairs[order[b]] })
	r.hot = order[:min(f.hot, len(order))]
	r.gained, r.final = s.watch.gained(r.started, r.hot)
	if s.pace != nil && s.busy0 != nil && r.span > 0 {
		busy1 := s.pace.busySnapshot()
		for id := range f.daemons {
			r.busy = append(r.busy, (busy1[id]-s.busy0[id]).Seconds()/r.span.Seconds())
		}
	}
}

// startSkewController runs a placement controller for the stack until the returned stop.
func startSkewController(ctx context.Context, st *stack.Stack, dir, name string, cfg *model.Config, f skewFlags) (func() error, error) {
	size, err := placement.ExpertBytes(dir, cfg)
	if err != nil {
		return nil, err
	}
	nc, err := st.Connect(ctx, "bench-controller")
	if err != nil {
		return nil, err
	}
	ctl, err := placement.NewController(placement.ControllerConfig{Model: name, ID: "bench", Layers: cfg.MoELayers(),
		Experts: cfg.Experts, ExpertBytes: size, MinReplicas: f.minReplica, Interval: f.interval, Window: f.window}, nc)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ctl.Run(cctx) }()
	var once sync.Once
	var runErr error
	return func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}, nil
}

// replicaWatch follows the registry: how many cards hold each expert of the layer ready,
// after every lease change.
type replicaWatch struct {
	mu      sync.Mutex
	cards   map[string]map[int]bool // card → experts of the layer it holds ready
	samples []replicaSample
}

type replicaSample struct {
	at    time.Time
	ready map[int]int
}

// start watches the leases of model name until ctx is done.
func (w *replicaWatch) start(ctx context.Context, st *stack.Stack, name string, layer int) error {
	nc, err := st.Connect(ctx, "bench-watch")
	if err != nil {
		return err
	}
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	reg, err := mesh.OpenRegistry(octx, nc, name, 0)
	if err != nil {
		return err
	}
	w.cards = map[string]map[int]bool{}
	return reg.WatchCards(ctx, func(id string, cs *proto.CardStatus) {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.cards, id)
		if cs != nil {
			held := map[int]bool{}
			for _, e := range cs.Experts {
				if e.State == proto.StateReady && int(e.Layer) == layer {
					held[int(e.Expert)] = true
				}
			}
			w.cards[id] = held
		}
		s := replicaSample{at: time.Now(), ready: map[int]int{}}
		for _, held := range w.cards {
			for e := range held {
				s.ready[e]++
			}
		}
		w.samples = append(w.samples, s)
	})
}

// gained returns, per expert of hot, when (after start) it first had two ready replicas
// (-1: never), and its ready replicas in the last sample.
func (w *replicaWatch) gained(start time.Time, hot []int) ([]time.Duration, map[int]int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]time.Duration, len(hot))
	final := map[int]int{}
	for i, e := range hot {
		out[i] = -1
		for _, s := range w.samples {
			if s.ready[e] >= 2 {
				out[i] = max(0, s.at.Sub(start))
				break
			}
		}
		if n := len(w.samples); n > 0 {
			final[e] = w.samples[n-1].ready[e]
		}
	}
	return out, final
}

func printSkew(f skewFlags, cfg *model.Config, res [2]*skewRun) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "controller\tcalls\tcalls/s\tp50 ms\tp90 ms\tp99 ms\tmax ms\tp99 incl. warm-up\thot experts (share)\treplicas\t2 replicas after\tbusiest card\t")
	for _, r := range res {
		var total int64
		for _, n := range r.pairs {
			total += n
		}
		var hot, reps, gained []string
		for i, e := range r.hot {
			hot = append(hot, fmt.Sprintf("%d (%.0f%%)", e, 100*float64(r.pairs[e])/float64(max(total, 1))))
			reps = append(reps, fmt.Sprint(r.final[e]))
			if r.gained[i] < 0 {
				gained = append(gained, "never")
			} else {
				gained = append(gained, r.gained[i].Round(100*time.Millisecond).String())
			}
		}
		busiest := "-"
		if len(r.busy) > 0 {
			busiest = fmt.Sprintf("%.0f%% busy", 100*slices.Max(r.busy))
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t%s\t%s\t%s\t\n", onOff(r.on), len(r.lat), float64(len(r.lat))/r.span.Seconds(),
			ms(r.p(0.5)), ms(r.p(0.9)), ms(r.p(0.99)), ms(r.p(1)), ms(quantile(r.all, 0.99)), strings.Join(hot, ", "), strings.Join(reps, ","), strings.Join(gained, ", "), busiest)
	}
	tw.Flush()
	for _, r := range res {
		if len(r.busy) == 0 {
			continue
		}
		var b []string
		for _, v := range r.busy {
			b = append(b, fmt.Sprintf("%.0f%%", 100*v))
		}
		fmt.Printf("cards busy, controller %s: %s\n", onOff(r.on), strings.Join(b, " "))
	}
}

// Emulated cards (see the command's help). The backend is registered once per process
// under pacedBackendName; each run installs its own pacing, which OpenCard captures.
const pacedBackendName = "bench-paced"

var (
	pacedOnce sync.Once
	pacedMu   sync.Mutex
	pacedCur  *pacing
)

// pacing is the device-time model of one run and the busy time it accounted per card id.
type pacing struct {
	launch      time.Duration
	nsPerFlop   float64
	mu          sync.Mutex
	busy        map[int]time.Duration
	realCompute time.Duration
}

// setPacing installs the pacing of a run (nil when --card-pair-time is 0).
func setPacing(f skewFlags, cfg *model.Config) *pacing {
	if f.pairTime == 0 {
		return nil
	}
	pacedOnce.Do(func() {
		ascend.Register(pacedBackendName, func() ascend.Backend {
			pacedMu.Lock()
			defer pacedMu.Unlock()
			return pacedBackend{p: pacedCur}
		})
	})
	// A pair is 6·H·I flops (gate and up: 4·H·I, down: 2·H·I).
	pairFlops := 6 * float64(cfg.Hidden) * float64(cfg.ExpertIntermediate)
	p := &pacing{launch: f.launch, nsPerFlop: float64(f.pairTime.Nanoseconds()) / pairFlops, busy: map[int]time.Duration{}}
	pacedMu.Lock()
	pacedCur = p
	pacedMu.Unlock()
	return p
}

func (p *pacing) busySnapshot() map[int]time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[int]time.Duration, len(p.busy))
	for k, v := range p.busy {
		out[k] = v
	}
	return out
}

type pacedBackend struct{ p *pacing }

func (pacedBackend) Name() string { return pacedBackendName }

func (b pacedBackend) OpenCard(id int, budget int64) (ascend.Card, error) {
	if b.p == nil {
		return nil, fmt.Errorf("%w: %s has no pacing installed", ascend.ErrInvalid, pacedBackendName)
	}
	c, err := cpu.Backend{Threads: 1}.OpenCard(id, budget)
	if err != nil {
		return nil, err
	}
	return &pacedCard{Card: c, p: b.p, id: id}, nil
}

// pacedCard is a cpu card whose grouped matmuls last at least the modelled device time.
// The wait is the emulated device working, not synchronisation: the card's worker holds
// it as it would wait for a real device.
type pacedCard struct {
	ascend.Card
	p  *pacing
	id int
}

func (c *pacedCard) GroupedMatmul(out, x ascend.Buffer, weights []ascend.Buffer, counts []int64) error {
	t0 := time.Now()
	err := c.Card.GroupedMatmul(out, x, weights, counts)
	flops := 0.0
	for g, n := range counts {
		if g < len(weights) {
			s := weights[g].Shape()
			if len(s) == 2 {
				flops += 2 * float64(n) * float64(s[0]) * float64(s[1])
			}
		}
	}
	real := time.Since(t0)
	if rest := c.p.launch + time.Duration(flops*c.p.nsPerFlop) - real; rest > 0 {
		time.Sleep(rest)
	}
	c.p.mu.Lock()
	c.p.busy[c.id] += time.Since(t0)
	c.p.realCompute += real
	c.p.mu.Unlock()
	return err
}
