package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/proto"
)

func newBench(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "bench",
		Short: "Benchmarks: a table, then one summary line",
	}
	c.AddCommand(newBenchLayer(g), newBenchGenerate(g), newBenchKernels(g), newBenchSkew(g))
	return c
}

func newBenchLayer(g *globals) *cobra.Command {
	var (
		modelSpec, tokens, wire, mode string
		daemons, iters, layer, repl   int
	)
	c := &cobra.Command{
		Use:   "layer",
		Short: "One MoE layer in process and through a mesh of expert daemons, on the same input",
		Long: `Runs one MoE layer both ways on the same random input: routed experts in this process, and
through an embedded NATS server and --daemons expert daemons (in this process, one cpu card
each). Local and mesh runs are interleaved so that a noisy neighbour slows both alike.
The summary line gives the largest max-abs difference over all T and the mesh/local ratio of
median step times at the largest T.`,
		Example: "  moemesh bench layer --model builtin:small --tokens 1,16,128 --daemons 2",
		RunE: func(cmd *cobra.Command, args []string) error {
			log := g.logger()
			dir, name, err := resolveModel(modelSpec, log)
			if err != nil {
				return err
			}
			var ts []int
			for _, s := range strings.Split(tokens, ",") {
				t, err := strconv.Atoi(strings.TrimSpace(s))
				if err != nil || t <= 0 {
					return fmt.Errorf("--tokens: %q is not a positive number", s)
				}
				ts = append(ts, t)
			}
			wd := proto.BF16
			switch wire {
			case "bf16":
			case "f32":
				wd = proto.F32
			default:
				return fmt.Errorf("--wire %q: want bf16 or f32", wire)
			}
			md := proto.ModeReduce
			switch mode {
			case "reduce":
			case "pairs":
				md = proto.ModePairs
			default:
				return fmt.Errorf("--mode %q: want reduce or pairs", mode)
			}
			ctx := cmd.Context()
			st, err := stack.Start(ctx, stack.Config{ModelDir: dir, Model: name, Daemons: daemons, Replicated: repl, Logger: log})
			if err != nil {
				return err
			}
			defer st.Close()
			l, err := st.NewLayer(ctx, layer, md, wd)
			if err != nil {
				return err
			}
			defer l.Close()
			cfg := st.Model
			fmt.Printf("model %s (%s): hidden %d, %d experts, top-%d, expert width %d; layer %d; %d daemons; wire %s, combine %s; machine: %d cpus\n",
				name, cfg.Arch, cfg.Hidden, cfg.Experts, cfg.TopK, cfg.ExpertIntermediate, l.Index, daemons, wire, mode, runtimeCPUs())
			tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "T\tlocal ms\tmesh ms\tmesh/local\tmaxdiff\tmax|y|\t")
			var worst float64
			var ratio float64
			rng := rand.New(rand.NewPCG(42, uint64(cfg.Hidden)))
			for _, t := range ts {
				x := stack.RandomInput(rng, t, cfg.Hidden)
				if _, err := l.Run(ctx, x, 2); err != nil { // warm up both paths
					return err
				}
				res, err := l.Run(ctx, x, iters)
				if err != nil {
					return err
				}
				ratio = res.Mesh.Seconds() / res.Local.Seconds()
				worst = max(worst, res.MaxDiff)
				fmt.Fprintf(tw, "%d\t%.3f\t%.3f\t%.2f\t%.3g\t%.3g\t\n", t, ms(res.Local), ms(res.Mesh), ratio, res.MaxDiff, res.MaxAbs)
			}
			tw.Flush()
			fmt.Printf("layer: maxdiff=%.3g mesh/local=%.2f\n", worst, ratio)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&modelSpec, "model", "builtin:tiny", "model directory or builtin:tiny|small")
	f.StringVar(&tokens, "tokens", "1,16,128", "token counts T, comma-separated")
	f.IntVar(&daemons, "daemons", 2, "expert daemons")
	f.IntVar(&repl, "replicated", 0, "experts (the first N) replicated on every daemon")
	f.IntVar(&iters, "iters", 20, "timed runs per T and way")
	f.IntVar(&layer, "layer", -1, "layer index (-1: the first MoE layer)")
	f.StringVar(&wire, "wire", "bf16", "activation dtype on the wire: bf16 or f32")
	f.StringVar(&mode, "mode", "reduce", "combine: reduce (cards sum per token) or pairs (router sums; exact)")
	return c
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
