package router_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/synth"
	"github.com/moemesh/moemesh/proto"
)

// BenchmarkMeshForward: the routed experts of one MoE layer through a real mesh in this
// process (embedded NATS server, two expert daemons with one cpu card each, the router's
// Mesh), on the tiny preset so that the time is mostly the data path, not the experts.
// allocs/op counts the router and the daemons together (they share the process) and
// includes what nats.go, nats micro and the cpu backend allocate per message; see
// docs/ARCHITECTURE.md's data path notes for the split.
func BenchmarkMeshForward(b *testing.B) {
	dir := b.TempDir()
	if _, err := synth.Write(dir, synth.Options{Arch: "qwen3_moe", Preset: "tiny", Seed: 11, DType: "bf16"}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := stack.Start(ctx, stack.Config{ModelDir: dir, Daemons: 2, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	cfg := st.Model
	for _, mode := range []proto.Mode{proto.ModeReduce, proto.ModePairs} {
		l, err := st.NewLayer(ctx, -1, mode, proto.BF16)
		if err != nil {
			b.Fatal(err)
		}
		for _, tokens := range []int{1, 64} {
			rng := rand.New(rand.NewPCG(uint64(tokens), 5))
			x := stack.RandomInput(rng, tokens, cfg.Hidden)
			r := model.Routing{TopK: cfg.TopK}
			for range tokens {
				for _, e := range rng.Perm(cfg.Experts)[:cfg.TopK] {
					r.Experts = append(r.Experts, int32(e))
					r.Weights = append(r.Weights, rng.Float32())
				}
			}
			out := make([]float32, len(x))
			name := fmt.Sprintf("mode=%d/T=%d", mode, tokens)
			b.Run(name, func(b *testing.B) {
				for range 3 { // warm: buffers sized, connections and replies primed
					if err := l.Mesh.Forward(ctx, l.Index, x, cfg.Hidden, r, out); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				for b.Loop() {
					if err := l.Mesh.Forward(ctx, l.Index, x, cfg.Hidden, r, out); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		l.Close()
	}
}
