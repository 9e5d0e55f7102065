package router

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/moemesh/moemesh/tracing"
)

// TestStepSpans: at detail layer a step that holds a sampled request gets a span under
// that request's span, linked to it, with a span per MoE layer below; a request in a
// dropped trace makes no spans and is not linked; steps of dropped requests alone make none.
func TestStepSpans(t *testing.T) {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr), sdktrace.WithSampler(tracing.Sampler(1)))
	otel.SetTracerProvider(tp)
	defer otel.SetTracerProvider(noop.NewTracerProvider())

	l := tinyLM(t)
	e, err := NewEngine(EngineConfig{Decoder: l.dec, Experts: l.experts, TraceDetail: tracing.DetailLayer})
	if err != nil {
		t.Fatal(err)
	}
	remote := func(tid, sid string, flags trace.TraceFlags) context.Context {
		t, _ := trace.TraceIDFromHex(tid)
		s, _ := trace.SpanIDFromHex(sid)
		return trace.ContextWithRemoteSpanContext(context.Background(),
			trace.NewSpanContext(trace.SpanContextConfig{TraceID: t, SpanID: s, TraceFlags: flags}))
	}
	dropped := remote("11111111111111111111111111111111", "1111111111111111", 0)
	kept := remote("22222222222222222222222222222222", "2222222222222222", trace.FlagsSampled)
	c := newCollector()
	// Both queued before the engine runs: the first steps hold both.
	if _, err := e.SubmitContext(dropped, request("a", "t", prompt(5, 1), 3), c.emit("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.SubmitContext(kept, request("b", "t", prompt(4, 2), 6), c.emit("b")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	c.wait(t, "a")
	c.wait(t, "b")
	<-e.Idle()

	var gen sdktrace.ReadOnlySpan
	var steps, layers []sdktrace.ReadOnlySpan
	for _, s := range sr.Ended() {
		switch s.Name() {
		case "generate":
			if gen != nil {
				t.Fatal("two generate spans: the dropped trace's request recorded one")
			}
			gen = s
		case "router.step":
			steps = append(steps, s)
		case "moe.layer":
			layers = append(layers, s)
		}
	}
	if gen == nil || gen.Parent().SpanID().String() != "2222222222222222" {
		t.Fatalf("generate span %v", gen)
	}
	// b needs 6 steps (its prompt in one, then a token per step): exactly those have spans.
	if len(steps) != 6 {
		t.Fatalf("%d step spans, want 6 (b's steps)", len(steps))
	}
	shared := 0
	for _, s := range steps {
		if s.Parent().SpanID() != gen.SpanContext().SpanID() {
			t.Errorf("step parent %v, want b's span", s.Parent().SpanID())
		}
		if len(s.Links()) != 1 || s.Links()[0].SpanContext.SpanID() != gen.SpanContext().SpanID() {
			t.Errorf("step links %v, want b's span alone", s.Links())
		}
		for _, kv := range s.Attributes() {
			if kv.Key == tracing.Sequences && kv.Value.AsInt64() == 2 {
				shared++
			}
		}
	}
	if shared == 0 {
		t.Error("no traced step held both requests")
	}
	if moe := len(l.dec.Config().MoELayers()); len(layers) != moe*len(steps) {
		t.Errorf("%d layer spans, want %d MoE layers × %d steps", len(layers), moe, len(steps))
	}
}
