package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/router"
	"github.com/moemesh/moemesh/tracing"
)

// engineFlags are the generation engine's knobs, shared by router and up.
type engineFlags struct {
	kvMemory                               string
	maxSeqs, maxBatch, stepTokens, tenantQ int
	microBatchRows                         int
	deadline                               time.Duration
	traceDetail                            string
}

// register adds the flags; microRows is --micro-batch-rows' default, which depends on
// whether experts run on other cores than the router's (see docs/benchmarks.md).
func (f *engineFlags) register(fs *pflag.FlagSet, microRows int) {
	fs.StringVar(&f.kvMemory, "kv-memory", "1GiB", "KV cache budget of all sequences, e.g. 8GiB (0: unlimited)")
	fs.IntVar(&f.maxSeqs, "max-seqs", 64, "sequences resident at once (holding KV cache)")
	fs.IntVar(&f.maxBatch, "max-batch", 32, "sequences stepped together")
	fs.IntVar(&f.stepTokens, "step-tokens", 512, "tokens per step: prompt chunks and decode tokens together")
	fs.IntVar(&f.tenantQ, "tenant-queue", 64, "waiting requests per tenant (beyond: 429)")
	fs.IntVar(&f.microBatchRows, "micro-batch-rows", microRows, "run a step of at least this many rows (and 2+ sequences) as two micro-batches, one computing attention while the other's experts are on the mesh (0: never; ignored with --local)")
	fs.DurationVar(&f.deadline, "deadline", 10*time.Minute, "default deadline of a generation")
	fs.StringVar(&f.traceDetail, "trace-detail", envOr("MOEMESH_TRACE_DETAIL", "request"), "spans per sampled request: request, layer (steps, MoE layers, cards) or op (plus the daemons' compute) (env MOEMESH_TRACE_DETAIL)")
}

func (f *engineFlags) config() (router.EngineConfig, error) {
	var kv uint64
	if f.kvMemory != "" && f.kvMemory != "0" {
		var err error
		if kv, err = humanize.ParseBytes(f.kvMemory); err != nil {
			return router.EngineConfig{}, fmt.Errorf("--kv-memory: %w", err)
		}
	}
	if f.microBatchRows < 0 {
		return router.EngineConfig{}, fmt.Errorf("--micro-batch-rows %d: want 0 (never) or a row count", f.microBatchRows)
	}
	detail, err := tracing.ParseDetail(f.traceDetail)
	if err != nil {
		return router.EngineConfig{}, fmt.Errorf("--trace-detail: %w", err)
	}
	return router.EngineConfig{KVBudget: int64(kv), MaxSeqs: f.maxSeqs, MaxBatch: f.maxBatch,
		StepTokens: f.stepTokens, TenantQueue: f.tenantQ, Deadline: f.deadline, TraceDetail: detail,
		MicroBatchRows: f.microBatchRows}, nil
}

func newRouter(g *globals) *cobra.Command {
	var (
		natsURL, modelSpec, name, id string
		metricsAddr                  string
		local, exact                 bool
		ef                           engineFlags
		drain                        time.Duration
		controller                   bool
		minReplicas                  int
		hedgeAfter                   time.Duration
		hedgeFactor                  float64
		expertMetrics                string
		device                       string
		nf                           natsFlags
	)
	c := &cobra.Command{
		Use:   "router",
		Short: "Run a router: the dense model and the generation service; experts come from the mesh",
		Example: `  moemesh router --model ./Qwen3-30B-A3B --kv-memory 16GiB
  moemesh router --model builtin:tiny --local   # experts in process, no daemons needed`,
		RunE: func(cmd *cobra.Command, args []string) error {
			log := g.logger()
			if err := checkDevice(device); err != nil {
				return err
			}
			dir, defName, err := resolveModel(modelSpec, log)
			if err != nil {
				return err
			}
			if name == "" {
				name = defName
			}
			if id == "" {
				host, _ := os.Hostname()
				id = proto.Token(fmt.Sprintf("%s-%d", host, os.Getpid()))
			}
			ec, err := ef.config()
			if err != nil {
				return err
			}
			em, err := router.ParseExpertMetrics(expertMetrics)
			if err != nil {
				return fmt.Errorf("--expert-metrics: %w", err)
			}
			if hedgeAfter < 0 {
				return fmt.Errorf("--hedge-after %v: want >= 0 (0: off)", hedgeAfter)
			}
			if !(hedgeFactor >= 0 && hedgeFactor <= 1000) {
				return fmt.Errorf("--hedge-factor %g: want 0 (off) to 1000", hedgeFactor)
			}
			stopTracing, err := setupTracing(cmd.Context(), "moemesh-router", log)
			if err != nil {
				return err
			}
			defer stopTracing()
			ctx := cmd.Context()
			nc, ns, err := nf.connect(ctx, natsURL, "moemesh-router-"+id, log)
			if err != nil {
				return err
			}
			defer nc.Close()
			if !local {
				if err := ensureRegistry(ctx, nc, name, ns); err != nil {
					return err
				}
			}
			// The controller starts first: the router waits for every expert to have a
			// replica, which daemons started empty get only from the controller.
			stopCtl := func() {}
			if controller {
				if stopCtl, err = startController(ctx, nc, dir, name, id, minReplicas, log); err != nil {
					return err
				}
				defer stopCtl()
			}
			r, err := stack.NewRouter(ctx, stack.RouterConfig{ModelDir: dir, Model: name, Conn: nc, Local: local, Exact: exact, Engine: ec, Logger: log, Backend: device})
			if err != nil {
				return err
			}
			defer r.Close()
			if m := router.MeshOf(r.Engine); m != nil {
				m.SetHedgeAfter(hedgeAfter)
				m.SetHedgeFactor(hedgeFactor)
				m.SetExpertMetrics(em)
			}
			if err := serveMetricsProbes(ctx, metricsAddr, log, natsReady(nc), router.NewCollector(r.Engine, prometheus.Labels{"router": id, "model": name}),
				natsCollector(nc, prometheus.Labels{"service": "router", "router": id})); err != nil {
				return fmt.Errorf("--metrics: %w", err)
			}
			if err := router.Serve(ctx, router.ServiceConfig{ID: id, Model: name, Conn: nc, Engine: r.Engine, Drain: drain, Logger: log}); err != nil {
				return err
			}
			stopCtl() // resigns the leader lease while the connection is up
			return nc.Drain()
		},
	}
	f := c.Flags()
	f.StringVar(&natsURL, "nats", envOr("MOEMESH_NATS_URL", defaultNATS), "NATS server URL (env MOEMESH_NATS_URL)")
	f.StringVar(&modelSpec, "model", os.Getenv("MOEMESH_MODEL"), "Hugging Face model directory or builtin:tiny (env MOEMESH_MODEL)")
	f.StringVar(&name, "name", "", "model name in subjects (default: the directory's name)")
	f.StringVar(&id, "id", "", "router id, letters, digits, '-' and '_' (default: host-pid)")
	f.BoolVar(&local, "local", false, "run the routed experts in process instead of on the mesh")
	f.BoolVar(&exact, "exact", false, "mesh combine in pairs mode over an f32 wire: logits equal --local bit for bit")
	f.DurationVar(&drain, "drain", 30*time.Second, "on SIGTERM, how long to finish running generations")
	f.StringVar(&metricsAddr, "metrics", "", "serve Prometheus /metrics on this address, e.g. :9101")
	f.BoolVar(&controller, "controller", false, "also run the placement controller (leader-elected: one of the routers with this flag places experts)")
	f.IntVar(&minReplicas, "min-replicas", 1, "with --controller: the fewest cards every expert is on")
	f.DurationVar(&hedgeAfter, "hedge-after", 0, "send a card's rows to another replica too when it has not answered after this long, e.g. 20ms (0: off)")
	f.Float64Var(&hedgeFactor, "hedge-factor", 0, "adaptive hedging: hedge after this many times the fastest card's median answer time (at least --hedge-after; 0: off), e.g. 4")
	f.StringVar(&expertMetrics, "expert-metrics", "top-32", "per-(layer, expert) series on /metrics: off, top-N (the N most routed) or all")
	f.StringVar(&device, "device", "cpu", "backend of the dense path's card: cpu or cann (needs -tags cann; norms, attention and gating run on the host, see docs/cann.md)")
	ef.register(f, 32)
	nf.register(f, mesh.RoleRouter, true, os.Getenv)
	return c
}

// ensureRegistry opens the model's registry once with the replica count of the flags, for
// the commands whose registries are opened deeper down (stack.NewRouter, the controller)
// without it: should this process be the one to create the bucket, it gets its replicas.
// One place for the count instead of a field in every config on the way. With the default
// of 1 there is nothing to do.
func ensureRegistry(ctx context.Context, nc *nats.Conn, model string, ns *natsSettings) error {
	if ns.registryReplicas() <= 1 {
		return nil
	}
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := mesh.OpenRegistry(octx, nc, model, 0, ns.registryOptions()...); err != nil {
		return fmt.Errorf("--registry-replicas %d: %w", ns.replicas, err)
	}
	return nil
}
