package meshtest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/moemesh/moemesh/router"
)

// ttft streams one completion and returns the time to its first chunk.
func ttft(ctx context.Context, c openai.Client, model string, maxTokens int64) (time.Duration, error) {
	start := time.Now()
	s := c.Completions.NewStreaming(ctx, openai.CompletionNewParams{Model: openai.CompletionNewParamsModel(model),
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("A light tenant asks a short question about experts.")}, MaxTokens: openai.Int(maxTokens)})
	defer s.Close()
	if !s.Next() {
		return 0, fmt.Errorf("no chunk: %v", s.Err())
	}
	d := time.Since(start)
	for s.Next() {
	}
	return d, s.Err()
}

func medianTTFT(b *testing.B, ctx context.Context, c openai.Client, model string, n int) time.Duration {
	var ds []time.Duration
	for range n {
		d, err := ttft(ctx, c, model, 4)
		if err != nil {
			b.Fatal(err)
		}
		ds = append(ds, d)
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// BenchmarkTenantFairness (make bench): through the gateway, router and two daemons, a
// light tenant's time to first token alone and while a heavy tenant keeps 20 long requests
// in flight; then both tenants saturate (weights 1 and 3) and the tokens the router served
// each over a window are compared (a step takes 16 sequences, fewer than either tenant has). Metrics: ttft_ms alone and loaded, their ratio, and the
// served-token ratio heavy/light (want 3).
func BenchmarkTenantFairness(b *testing.B) {
	f := startFullMesh(b, router.EngineConfig{MaxBatch: 16, MaxSeqs: 64}, true, map[string]float64{"light": 1, "heavy": 3})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	light, heavy := f.client("light"), f.client("heavy")
	for b.Loop() {
		medianTTFT(b, ctx, light, f.name, 3) // warm up
		alone := medianTTFT(b, ctx, light, f.name, 9)

		// flood keeps n long requests of c in flight until stop.
		flood := func(c openai.Client, n int, stop context.Context, wg *sync.WaitGroup) {
			for k := range n {
				wg.Go(func() {
					for stop.Err() == nil {
						// Lengths differ so the requests do not all end, and prefill again, in one step.
						_, _ = c.Completions.New(stop, openai.CompletionNewParams{Model: openai.CompletionNewParamsModel(f.name),
							Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("A heavy tenant writes a long essay.")}, MaxTokens: openai.Int(int64(200 + 20*k))})
					}
				})
			}
		}
		stopHeavy, endHeavy := context.WithCancel(ctx)
		var wg sync.WaitGroup
		flood(heavy, 20, stopHeavy, &wg)
		waitResident(b, f, 20)
		loaded := medianTTFT(b, ctx, light, f.name, 9)

		// Both saturate: light keeps 20 in flight too; compare tokens served in a window.
		stopLight, endLight := context.WithCancel(ctx)
		flood(light, 20, stopLight, &wg)
		waitResident(b, f, 40)
		before := f.router.Engine.Stats().Tenants
		time.Sleep(3 * time.Second) // the measurement window, not a wait for a condition
		after := f.router.Engine.Stats().Tenants
		endHeavy()
		endLight()
		wg.Wait()
		share := float64(after["heavy"]-before["heavy"]) / float64(after["light"]-before["light"])

		b.ReportMetric(float64(alone.Microseconds())/1000, "ttft_alone_ms")
		b.ReportMetric(float64(loaded.Microseconds())/1000, "ttft_loaded_ms")
		b.ReportMetric(loaded.Seconds()/alone.Seconds(), "ttft_loaded/alone")
		b.ReportMetric(share, "served_heavy/light(w=3)")
	}
}

func waitResident(b *testing.B, f *fullMesh, n int) {
	deadline := time.Now().Add(30 * time.Second)
	for f.router.Engine.Stats().Resident < n {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d sequences resident", f.router.Engine.Stats().Resident, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
