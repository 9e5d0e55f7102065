package main

import (
	"fmt"
	"os"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/router"
)

// engineFlags are the generation engine's knobs, shared by router and up.
type engineFlags struct {
	kvMemory                               string
	maxSeqs, maxBatch, stepTokens, tenantQ int
	deadline                               time.Duration
}

func (f *engineFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.kvMemory, "kv-memory", "1GiB", "KV cache budget of all sequences, e.g. 8GiB (0: unlimited)")
	fs.IntVar(&f.maxSeqs, "max-seqs", 64, "sequences resident at once (holding KV cache)")
	fs.IntVar(&f.maxBatch, "max-batch", 32, "sequences stepped together")
	fs.IntVar(&f.stepTokens, "step-tokens", 512, "tokens per step: prompt chunks and decode tokens together")
	fs.IntVar(&f.tenantQ, "tenant-queue", 64, "waiting requests per tenant (beyond: 429)")
	fs.DurationVar(&f.deadline, "deadline", 10*time.Minute, "default deadline of a generation")
}

func (f *engineFlags) config() (router.EngineConfig, error) {
	var kv uint64
	if f.kvMemory != "" && f.kvMemory != "0" {
		var err error
		if kv, err = humanize.ParseBytes(f.kvMemory); err != nil {
			return router.EngineConfig{}, fmt.Errorf("--kv-memory: %w", err)
		}
	}
	return router.EngineConfig{KVBudget: int64(kv), MaxSeqs: f.maxSeqs, MaxBatch: f.maxBatch,
		StepTokens: f.stepTokens, TenantQueue: f.tenantQ, Deadline: f.deadline}, nil
}

func newRouter(g *globals) *cobra.Command {
	var (
		natsURL, modelSpec, name, id string
		metricsAddr                  string
		local, exact                 bool
		ef                           engineFlags
		drain                        time.Duration
	)
	c := &cobra.Command{
		Use:   "router",
		Short: "Run a router: the dense model and the generation service; experts come from the mesh",
		Example: `  moemesh router --model ./Qwen3-30B-A3B --kv-memory 16GiB
  moemesh router --model builtin:tiny --local   # experts in process, no daemons needed`,
		RunE: func(cmd *cobra.Command, args []string) error {
			log := g.logger()
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
			ctx := cmd.Context()
			nc, err := mesh.Connect(ctx, natsURL, "moemesh-router-"+id)
			if err != nil {
				return err
			}
			defer nc.Close()
			r, err := stack.NewRouter(ctx, stack.RouterConfig{ModelDir: dir, Model: name, Conn: nc, Local: local, Exact: exact, Engine: ec, Logger: log})
			if err != nil {
				return err
			}
			defer r.Close()
			if err := serveMetrics(ctx, metricsAddr, log, router.NewCollector(r.Engine, prometheus.Labels{"router": id, "model": name})); err != nil {
				return fmt.Errorf("--metrics: %w", err)
			}
			if err := router.Serve(ctx, router.ServiceConfig{ID: id, Model: name, Conn: nc, Engine: r.Engine, Drain: drain, Logger: log}); err != nil {
				return err
			}
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
	ef.register(f)
	return c
}
