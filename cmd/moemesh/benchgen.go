package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/router"
)

func newBenchGenerate(g *globals) *cobra.Command {
	var (
		modelSpec                          string
		daemons, prompt, maxTokens, rounds int
		batches                            []int
		ef                                 engineFlags
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
The summary line compares decode tok/s at the largest batch.`,
		Example: "  moemesh bench generate --model builtin:small --batch 1,16",
		RunE: func(cmd *cobra.Command, args []string) error {
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
			engines := map[string]*router.Engine{}
			runCtx, stop := context.WithCancel(ctx)
			var wg sync.WaitGroup
			defer func() { stop(); wg.Wait() }()
			for _, way := range []string{"local", "mesh"} {
				r, err := stack.NewRouter(ctx, stack.RouterConfig{ModelDir: dir, Model: name, Conn: nc, Local: way == "local", Engine: ec, IgnoreEOS: true, Logger: log})
				if err != nil {
					return err
				}
				defer r.Close()
				engines[way] = r.Engine
				wg.Add(1)
				go func() { defer wg.Done(); r.Engine.Run(runCtx) }()
			}
			cfg := st.Model
			fmt.Printf("model %s (%s): hidden %d, %d layers, %d experts, top-%d; %d daemons; prompt %d, %d new tokens; machine: %d cpus\n",
				name, cfg.Arch, cfg.Hidden, cfg.Layers, cfg.Experts, cfg.TopK, daemons, prompt, maxTokens, runtimeCPUs())
			tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "batch\tlocal tok/s\tmesh tok/s\tmesh/local\tlocal TTFT ms\tmesh TTFT ms\tsame tokens\t")
			rng := rand.New(rand.NewPCG(7, 7))
			var lastLocal, lastMesh float64
			for _, b := range batches {
				prompts := make([][]int32, b)
				for i := range prompts {
					for range prompt {
						prompts[i] = append(prompts[i], int32(rng.IntN(cfg.Vocab)))
					}
				}
				res := map[string][]genRun{}
				for round := 0; round < rounds+1; round++ { // round 0 warms up
					for _, way := range []string{"local", "mesh"} {
						r, err := runBatch(ctx, engines[way], prompts, maxTokens, fmt.Sprintf("%s-%d-%d", way, b, round))
						if err != nil {
							return fmt.Errorf("%s, batch %d: %w", way, b, err)
						}
						if round > 0 {
							res[way] = append(res[way], r)
						}
					}
				}
				l, m := medianRun(res["local"]), medianRun(res["mesh"])
				same := slices.EqualFunc(res["local"][0].tokens, res["mesh"][0].tokens, slices.Equal[[]int32])
				fmt.Fprintf(tw, "%d\t%.1f\t%.1f\t%.2f\t%.1f\t%.1f\t%v\t\n", b, l.tps, m.tps, m.tps/l.tps, ms(l.ttft), ms(m.ttft), same)
				lastLocal, lastMesh = l.tps, m.tps
			}
			tw.Flush()
			fmt.Printf("generate: local_tps=%.1f mesh_tps=%.1f mesh/local=%.2f\n", lastLocal, lastMesh, lastMesh/lastLocal)
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
	ef.register(f)
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
