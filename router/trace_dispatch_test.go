package router

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/moemesh/moemesh/tracing"
)

// recorder installs a recording tracer provider for the test; its tracer stands in for
// the engine's, which makes the moe.layer spans the mesh's events go on.
func recorder(t *testing.T) (trace.Tracer, *tracetest.SpanRecorder) {
	t.Helper()
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(noop.NewTracerProvider()) })
	return tp.Tracer("test"), sr
}

func attrs(kvs []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

// spanNamed returns the one ended span called name.
func spanNamed(t *testing.T, sr *tracetest.SpanRecorder, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	var found sdktrace.ReadOnlySpan
	for _, s := range sr.Ended() {
		if s.Name() == name {
			if found != nil {
				t.Fatalf("two spans named %s", name)
			}
			found = s
		}
	}
	if found == nil {
		t.Fatalf("no span named %s", name)
	}
	return found
}

// TestRetryEvents: a card that is in the registry but gone (no responders) and one that
// answers 503 make the step re-send; each re-send is an event on the layer span naming the
// card, the reason and the round, and each attempt has its own CLIENT span.
func TestRetryEvents(t *testing.T) {
	all := []int{0, 1, 2, 3, 4, 5, 6, 7}
	fm := startFakeMesh(t, fakeCard{id: "ok", experts: all}, fakeCard{id: "gone", experts: all, silent: true},
		fakeCard{id: "full", experts: all, busy: true})
	m := fm.newMesh(t, MeshConfig{})
	const hidden = 8
	x, r := testRouting(4, 8, hidden)
	want := wantOutput(t, x, r, hidden)

	tr, sr := recorder(t)
	ctx, span := tr.Start(context.Background(), "moe.layer")
	out := make([]float32, len(x))
	// With three equal replicas per expert, a step of 16 pairs all but surely picks each
	// card; a few steps make it certain enough that a miss means a bug.
	for i := 0; i < 5 && !sawBoth(m); i++ {
		if err := m.Forward(ctx, 1, x, hidden, r, out); err != nil {
			t.Fatal(err)
		}
		if !slicesEqual(out, want) {
			t.Fatalf("step %d: wrong output", i)
		}
	}
	span.End()
	layer := spanNamed(t, sr, "moe.layer")
	reasons := map[string]string{}
	for _, ev := range layer.Events() {
		if ev.Name != eventRetry {
			continue
		}
		a := attrs(ev.Attributes)
		card, reason := a[tracing.Card].AsString(), a[tracing.DispatchReason].AsString()
		if a[tracing.Attempt].AsInt64() < 1 || a[tracing.Layer].AsInt64() != 1 {
			t.Errorf("retry event attributes %v", ev.Attributes)
		}
		reasons[card] = reason
	}
	if reasons["gone"] != "no_responders" || reasons["full"] != "busy" || reasons["ok"] != "" {
		t.Errorf("retry events by card: %v, want gone: no_responders, full: busy", reasons)
	}
	clients := map[string]int{}
	for _, s := range sr.Ended() {
		if s.SpanKind() == trace.SpanKindClient {
			if s.Parent().SpanID() != layer.SpanContext().SpanID() {
				t.Errorf("attempt span %s not under the layer span", s.Name())
			}
			clients[attrs(s.Attributes())[tracing.Card].AsString()]++
		}
	}
	if clients["gone"] == 0 || clients["full"] == 0 || clients["ok"] == 0 {
		t.Errorf("attempt spans per card %v: want some on each", clients)
	}
}

func sawBoth(m *Mesh) bool {
	r, _, _ := m.stats.snapshot()
	return r["no_responders"] > 0 && r["busy"] > 0
}

func slicesEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestHedgeEvents: a hedge is an event on the layer span (card, reason "slow", where the
// rows went), followed by its result; the straggler's cancelled attempt and the hedge's
// attempt both have CLIENT spans under the layer span.
func TestHedgeEvents(t *testing.T) {
	fm := startFakeMesh(t, fakeCard{id: "fast", experts: []int{0, 1, 2, 3, 4, 5, 6, 7}},
		fakeCard{id: "slow", experts: []int{0}, delay: time.Second})
	m := fm.newMesh(t, MeshConfig{HedgeAfter: 20 * time.Millisecond})
	const hidden = 8
	x, r := testRouting(5, 1, hidden)
	r.Experts = []int32{0, 1}
	want := wantOutput(t, x, r, hidden)
	tr, sr := recorder(t)
	// Make fast look loaded so that power of two choices sends expert 0 to slow unless it
	// drew fast twice (one step in four); a few steps make a hedge certain.
	m.tab.mu.RLock()
	fast := m.tab.cards["fast"]
	m.tab.mu.RUnlock()
	fast.inflight.Add(1 << 20)
	out := make([]float32, len(x))
	var layer sdktrace.ReadOnlySpan
	for i := 0; i < 20 && layer == nil; i++ {
		ctx, span := tr.Start(context.Background(), "moe.layer")
		err := m.Forward(ctx, 1, x, hidden, r, out)
		span.End()
		if err != nil {
			t.Fatal(err)
		}
		if !slicesEqual(out, want) {
			t.Fatal("wrong output")
		}
		if _, h, _ := m.stats.snapshot(); h[hedgeWon] > 0 {
			layer = span.(sdktrace.ReadOnlySpan)
		}
	}
	fast.inflight.Add(-1 << 20)
	if layer == nil {
		t.Fatal("no step hedged in 20")
	}
	var hedge, result map[attribute.Key]attribute.Value
	for _, ev := range layer.Events() {
		switch ev.Name {
		case eventHedge:
			hedge = attrs(ev.Attributes)
		case eventHedgeResult:
			result = attrs(ev.Attributes)
		}
	}
	if hedge == nil || hedge[tracing.Card].AsString() != "slow" || hedge[tracing.DispatchReason].AsString() != "slow" ||
		hedge[tracing.DispatchHedgeTo].AsString() != "fast" || hedge[tracing.DispatchDelayMS].AsFloat64() != 20 {
		t.Errorf("hedge event %v", hedge)
	}
	if result == nil || result[tracing.DispatchResult].AsString() != hedgeWon || result[tracing.Card].AsString() != "slow" {
		t.Errorf("hedge result event %v", result)
	}
	clients := map[string]int{}
	for _, s := range sr.Ended() {
		if s.SpanKind() == trace.SpanKindClient && s.Parent().SpanID() == layer.SpanContext().SpanID() {
			clients[attrs(s.Attributes())[tracing.Card].AsString()]++
		}
	}
	// fast: its own batch (expert 1) and the hedge of slow's (expert 0).
	if clients["slow"] != 1 || clients["fast"] != 2 {
		t.Errorf("attempt spans per card %v, want slow 1, fast 2", clients)
	}
}
