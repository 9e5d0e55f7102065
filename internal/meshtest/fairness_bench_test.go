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

// medianOf returns the middle of ds (sorting it).
func medianOf(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// sampleTTFT appends n light-tenant times to first token to ds.
func sampleTTFT(b *testing.B, ctx context.Context, c openai.Client, model string, n int, ds []time.Duration) []time.Duration {
	for range n {
		d, err := ttft(ctx, c, model, 4)
		if err != nil {
			b.Fatal(err)
		}
		ds = append(ds, d)
	}
	return ds
}

// floodTenant keeps n long requests of c in flight until stop ends; wg owns the goroutines.
func floodTenant(c openai.Client, model string, n int, stop context.Context, wg *sync.WaitGroup) {
	for k := range n {
		wg.Go(func() {
			for stop.Err() == nil {
				// Lengths differ so the requests do not all end, and prefill again, in one step.
				_, _ = c.Completions.New(stop, openai.CompletionNewParams{Model: openai.CompletionNewParamsModel(model),
					Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("A heavy tenant writes a long essay.")}, MaxTokens: openai.Int(int64(200 + 20*k))})
			}
		})
	}
}

// BenchmarkTenantFairness (make bench): through the gateway, router and two daemons, a
// light tenant's time to first token alone and while a heavy tenant keeps 20 long requests
// in flight; then both tenants saturate (weights 1 and 3) and the tokens the router served
// each over a window of steps are compared (a step takes 16 sequences, fewer than either
// tenant has).
//
// The samples are 3–10 ms on a shared machine whose load drifts over seconds, so alone
// and loaded are measured in alternating rounds (5 alone with the router idle, then 10
// with the heavy flood resident) and the medians are over all 8 rounds (40 samples each).
// Within the loaded part the samples alternate between express steps on (the engine's
// default) and off, so the ratio noexpress/express is measured side by side. Metrics:
// ttft_ms alone, loaded and loaded without express steps; loaded/alone (want ≤ 2) and
// noexpress/express; the requests in flight at the start of the loaded samples (mean,
// want 20); served heavy/light (want 3) and the express steps in that window (want 0:
// neither saturating tenant is within its share of slots).
func BenchmarkTenantFairness(b *testing.B) {
	const rounds, perRound, heavyN, warmSteps, window = 8, 5, 20, 100, 300
	f := startFullMesh(b, router.EngineConfig{MaxBatch: 16, MaxSeqs: 64}, true, map[string]float64{"light": 1, "heavy": 3})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	light, heavy := f.client("light"), f.client("heavy")
	e := f.router.Engine
	for b.Loop() {
		sampleTTFT(b, ctx, light, f.name, 3, nil) // warm up
		var alone, express, mixed []time.Duration
		inflight := 0
		var wg sync.WaitGroup
		for range rounds {
			waitRouterIdle(b, f)
			alone = sampleTTFT(b, ctx, light, f.name, perRound, alone)
			stopHeavy, endHeavy := context.WithCancel(ctx)
			floodTenant(heavy, f.name, heavyN, stopHeavy, &wg)
			waitResident(b, f, heavyN)
			for range perRound {
				inflight += e.Stats().Resident
				express = sampleTTFT(b, ctx, light, f.name, 1, express)
				e.SetExpress(false)
				inflight += e.Stats().Resident
				mixed = sampleTTFT(b, ctx, light, f.name, 1, mixed)
				e.SetExpress(true)
			}
			endHeavy()
			wg.Wait()
		}
		waitRouterIdle(b, f)

		// Both saturate: each keeps 20 in flight; compare tokens served over a window of
		// steps (a count of steps, not of seconds, so a slow machine still fills it).
		stopAll, endAll := context.WithCancel(ctx)
		floodTenant(heavy, f.name, heavyN, stopAll, &wg)
		floodTenant(light, f.name, heavyN, stopAll, &wg)
		waitResident(b, f, 2*heavyN)
		// The window starts once the tenants' virtual times have met: the first steps
		// settle what the idle gap between the phases left over, a catch-up of a few
		// percent within the first ~50 steps.
		waitSteps(b, f, e.Stats().Steps+warmSteps)
		before := e.Stats()
		waitSteps(b, f, before.Steps+window)
		after := e.Stats()
		endAll()
		wg.Wait()
		share := float64(after.Tenants["heavy"]-before.Tenants["heavy"]) / float64(after.Tenants["light"]-before.Tenants["light"])

		a, x, m := medianOf(alone), medianOf(express), medianOf(mixed)
		b.ReportMetric(float64(a.Microseconds())/1000, "ttft_alone_ms")
		b.ReportMetric(float64(x.Microseconds())/1000, "ttft_loaded_ms")
		b.ReportMetric(float64(m.Microseconds())/1000, "ttft_loaded_noexpress_ms")
		b.ReportMetric(x.Seconds()/a.Seconds(), "ttft_loaded/alone")
		b.ReportMetric(m.Seconds()/x.Seconds(), "ttft_noexpress/express")
		b.ReportMetric(float64(inflight)/float64(len(express)+len(mixed)), "heavy_inflight")
		b.ReportMetric(share, "served_heavy/light(w=3)")
		b.ReportMetric(float64(after.ExpressSteps-before.ExpressSteps), "express_steps_saturated")
	}
}

// waitSteps waits until the router has run n steps in all.
func waitSteps(b *testing.B, f *fullMesh, n int64) {
	deadline := time.Now().Add(time.Minute)
	for f.router.Engine.Stats().Steps < n {
		if time.Now().After(deadline) {
			b.Fatalf("router at step %d of %d after a minute", f.router.Engine.Stats().Steps, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitRouterIdle waits until the router runs no request, so "alone" means alone.
func waitRouterIdle(b *testing.B, f *fullMesh) {
	select {
	case <-f.router.Engine.Idle():
	case <-time.After(30 * time.Second):
		b.Fatalf("router not idle: %d sequences resident", f.router.Engine.Stats().Resident)
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
