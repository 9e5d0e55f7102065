package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/router"
	"github.com/moemesh/moemesh/tracing"
)

func newBenchGenerate(g *globals) *cobra.Command {
	var (
		modelSpec                          string
		daemons, prompt, maxTokens, rounds int
		batches                            []int
		ef                                 engineFlags
		traceOverhead, compareSplit        bool
		traceSample                        float64
	)
	c := &cobra.Command{
		Use:   "generate",
		Short: "End-to-end generation: experts in process vs on a mesh of expert daemons",
		Long: `Runs the same greedy generations on two routers built from one checkpoint: one with the
routed experts in process, one with them on --daemons expert daemons behind an embedded NATS
server (all in this process, one cpu card each). For every batch size B, B requests of
--prompt random tokens generate exactly --max-tokens tokens each (eos ignored); local and
mesh runs alternate for --rounds rounds and the medians are reported.
decode tok/s counts the tokens after each request's first, over the time from the last
first token to the last finish; TTFT is the median time from submission to first token.
The summary line compares decode tok/s at the largest batch.

With --trace-overhead the mesh router runs alone, with tracing off and on in alternate
runs (the order flips every round): on is a real SDK tracer provider at --trace-detail with
--trace-sample parent-based ratio sampling and a batching exporter that drops the spans,
so what is measured is what tracing costs the router and daemons, not a collector.

With --compare-split two mesh routers run: one stepping every batch whole, one cutting
steps of --micro-batch-rows rows or more (default here: 2) into two micro-batches (one computes attention
while the other's experts are out); the tokens must be the same.`,
		Example: `  moemesh bench generate --model builtin:small --batch 1,16
  moemesh bench generate --model builtin:small --batch 16 --trace-overhead --trace-sample 0.1 --rounds 7`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if rounds < 1 || prompt < 1 || maxTokens < 2 {
				return fmt.Errorf("--rounds and --prompt must be positive and --max-tokens at least 2 (decode speed counts the tokens after the first)")
			}
			if traceSample < 0 || traceSample > 1 {
				return fmt.Errorf("--trace-sample %g: want a ratio from 0 to 1", traceSample)
			}
			log := g.logger()
			dir, name, err := resolveModel(modelSpec, log)
			if err != nil {
				return err
			}
			ec, err := ef.config()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			st, err := stack.Start(ctx, stack.Config{ModelDir: dir, Model: name, Daemons: daemons, Logger: log})
			if err != nil {
				return err
			}
			defer st.Close()
			nc, err := st.Connect(ctx, "bench-router")
			if err != nil {
				return err
			}
			ways := []string{"local", "mesh"}
			switch {
			case traceOverhead && compareSplit:
				return fmt.Errorf("--trace-overhead and --compare-split are two different comparisons: pick one")
			case traceOverhead:
				ways = []string{"off", "on"}
			case compareSplit:
				if ec.MicroBatchRows == 0 {
					ec.MicroBatchRows = 2 // every step of two or more sequences
				}
				ways = []string{"whole", "split"}
			}
			paired := traceOverhead || compareSplit
			engines := map[string]*router.Engine{}
			runCtx, stop := context.WithCancel(ctx)
			var wg sync.WaitGroup
			defer func() { stop(); wg.Wait() }()
			for _, way := range ways {
				if way == "on" { // one mesh router for both: only the tracer provider changes
					engines[way] = engines["off"]
					continue
				}
				wec := ec
				if way == "whole" {
					wec.MicroBatchRows = 0
				}
				r, err := stack.NewRouter(ctx, stack.RouterConfig{ModelDir: dir, Model: name, Conn: nc, Local: way == "local", Engine: wec, IgnoreEOS: true, Logger: log})
				if err != nil {
					return err
				}
				defer r.Close()
				engines[way] = r.Engine
				wg.Add(1)
				go func() { defer wg.Done(); r.Engine.Run(runCtx) }()
			}
			// switchTracing installs the provider of a run: tracing on for "on", off otherwise.
			switchTracing := func(string) {}
			flush := func() {}
			var spans *tracing.Discard
			if traceOverhead {
				spans = &tracing.Discard{}
				tp, err := tracing.NewProvider(ctx, tracing.Config{Exporter: tracing.ExporterDiscard, ServiceName: "moemesh-bench", SampleRatio: traceSample, Discard: spans})
				if err != nil {
					return err
				}
				defer func() { _ = tp.Shutdown(context.WithoutCancel(ctx)) }()
				flush = func() { _ = tp.ForceFlush(ctx) }
				off := noop.NewTracerProvider()
				defer otel.SetTracerProvider(off)
				switchTracing = func(way string) {
					if way == "on" {
						otel.SetTracerProvider(tp)
					} else {
						otel.SetTracerProvider(off)
					}
				}
			}
			cfg := st.Model
			fmt.Printf("model %s (%s): hidden %d, %d layers, %d experts, top-%d; %d daemons; prompt %d, %d new tokens; machine: %d cpus\n",
				name, cfg.Arch, cfg.Hidden, cfg.Layers, cfg.Experts, cfg.TopK, daemons, prompt, maxTokens, runtimeCPUs())
			if traceOverhead {
				fmt.Printf("tracing on: detail %s, sample ratio %g, spans dropped by an in-process batching exporter\n", ec.TraceDetail, traceSample)
			}
			a, b := ways[0], ways[1]
			tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintf(tw, "batch\t%[1]s tok/s\t%[2]s tok/s\t%[2]s/%[1]s\t%[2]s/%[1]s per round\t%[1]s TTFT ms\t%[2]s TTFT ms\tsame tokens\t\n", a, b)
			rng := rand.New(rand.NewPCG(7, 7))
			var lastA, lastB, lastPaired float64
			for _, bs := range batches {
				prompts := make([][]int32, bs)
				for i := range prompts {
					for range prompt {
						prompts[i] = append(prompts[i], int32(rng.IntN(cfg.Vocab)))
					}
				}
				res := map[string][]genRun{}
				var perRound []string
				var ratios []float64                        // b/a within one round: drift between rounds cancels
				for round := 0; round < rounds+1; round++ { // round 0 warms up
					order := ways
					if paired && round%2 == 1 { // drift on a shared machine hits both ways alike
						order = []string{b, a}
					}
					for _, way := range order {
						switchTracing(way)
						r, err := runBatch(ctx, engines[way], prompts, maxTokens, fmt.Sprintf("%s-%d-%d", way, bs, round))
						if err != nil {
							return fmt.Errorf("%s, batch %d: %w", way, bs, err)
						}
						if round > 0 {
							res[way] = append(res[way], r)
						}
					}
					if round > 0 {
						r := res[b][round-1].tps / res[a][round-1].tps
						ratios = append(ratios, r)
						perRound = append(perRound, fmt.Sprintf("%.3f", r))
					}
				}
				ra, rb := medianRun(res[a]), medianRun(res[b])
				same := slices.EqualFunc(res[a][0].tokens, res[b][0].tokens, slices.Equal[[]int32])
				fmt.Fprintf(tw, "%d\t%.1f\t%.1f\t%.3f\t%s\t%.1f\t%.1f\t%v\t\n", bs, ra.tps, rb.tps, rb.tps/ra.tps, strings.Join(perRound, " "), ms(ra.ttft), ms(rb.ttft), same)
				lastA, lastB = ra.tps, rb.tps
				slices.Sort(ratios)
				lastPaired = ratios[len(ratios)/2]
			}
			tw.Flush()
			if traceOverhead {
				flush() // the spans of the last runs are still in the batch processor
				fmt.Printf("trace-overhead: off_tps=%.1f on_tps=%.1f on/off=%.3f paired_median=%.3f spans=%d\n", lastA, lastB, lastB/lastA, lastPaired, spans.Spans())
				return nil
			}
			if compareSplit {
				fmt.Printf("micro-batches: whole_tps=%.1f split_tps=%.1f split/whole=%.3f paired_median=%.3f\n", lastA, lastB, lastB/lastA, lastPaired)
				return nil
			}
			fmt.Printf("generate: local_tps=%.1f mesh_tps=%.1f mesh/local=%.2f\n", lastA, lastB, lastB/lastA)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&modelSpec, "model", "builtin:small", "model directory or builtin:tiny|small")
	f.IntVar(&daemons, "daemons", 2, "expert daemons")
	f.IntSliceVar(&batches, "batch", []int{1, 16}, "batch sizes (concurrent requests)")
	f.IntVar(&prompt, "prompt", 64, "prompt tokens per request")
	f.IntVar(&maxTokens, "max-tokens", 32, "tokens generated per request")
	f.IntVar(&rounds, "rounds", 3, "timed rounds per batch and way (after one warm-up)")
	f.BoolVar(&traceOverhead, "trace-overhead", false, "compare tracing off and on (mesh router only) instead of local and mesh experts")
	f.Float64Var(&traceSample, "trace-sample", 0.1, "with --trace-overhead: the ratio of requests sampled")
	f.BoolVar(&compareSplit, "compare-split", false, "compare mesh steps run whole and as two micro-batches (--micro-batch-rows) instead of local and mesh experts")
	ef.register(f, 0)
	return c
}

// genRun is one batch's measurements.
type genRun struct {
	tps    float64       // decode tokens per second
	ttft   time.Duration // median time to first token
	tokens [][]int32
}

// runBatch submits one greedy request per prompt and waits for all to finish.
func runBatch(ctx context.Context, e *router.Engine, prompts [][]int32, n int, tag string) (genRun, error) {
	var mu sync.Mutex
	out := genRun{tokens: make([][]int32, len(prompts))}
	var ttfts []time.Duration
	var lastFirst, lastDone time.Time
	var firstErr error
	done := make(chan struct{}, len(prompts))
	start := time.Now()
	for i, p := range prompts {
		req := &proto.GenerateRequest{V: proto.Version, ID: fmt.Sprint(tag, "-", i), Tenant: "bench", Prompt: p, MaxTokens: int32(n), Inbox: "bench"}
		_, err := e.Submit(req, func(ev *proto.TokenEvent) {
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			if ev.Seq == 0 {
				ttfts = append(ttfts, now.Sub(start))
				lastFirst = now
			}
			out.tokens[i] = append(out.tokens[i], ev.Tokens...)
			if ev.Finish != "" {
				if err := ev.Err(); err != nil && firstErr == nil {
					firstErr = err
				}
				lastDone = now
				done <- struct{}{}
			}
		})
		if err != nil {
			return out, err
		}
	}
	for range prompts {
		select {
		case <-done:
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
	if firstErr != nil {
		return out, firstErr
	}
	slices.Sort(ttfts)
	out.ttft = ttfts[len(ttfts)/2]
	out.tps = float64(len(prompts)*(n-1)) / lastDone.Sub(lastFirst).Seconds()
	return out, nil
}

func medianRun(rs []genRun) genRun {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b genRun) int {
		switch {
		case a.tps < b.tps:
			return -1
		case a.tps > b.tps:
			return 1
		}
		return 0
	})
	m := s[len(s)/2]
	tt := make([]time.Duration, len(rs))
	for i, r := range rs {
		tt[i] = r.ttft
	}
	slices.Sort(tt)
	m.ttft = tt[len(tt)/2]
	return m
}
