package tracing

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestCarrierRoundTrip(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	h := map[string][]string{}
	Inject(ctx, h)
	if got := h["traceparent"]; len(got) != 1 || got[0] != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Fatalf("traceparent = %v (keys %v)", got, HeaderCarrier(h).Keys())
	}
	back := trace.SpanContextFromContext(Extract(context.Background(), h))
	if back.TraceID() != tid || back.SpanID() != sid || !back.IsSampled() {
		t.Fatalf("extracted %v", back)
	}
	// A sender that canonicalised the key is still understood.
	canon := map[string][]string{"Traceparent": h["traceparent"]}
	if got := trace.SpanContextFromContext(Extract(context.Background(), canon)); got.TraceID() != tid {
		t.Fatalf("canonical key not read: %v", got)
	}
	if got := trace.SpanContextFromContext(Extract(context.Background(), map[string][]string{})); got.IsValid() {
		t.Fatal("empty headers gave a span context")
	}
}
