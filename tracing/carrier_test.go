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

// TestExtractAllocations: extracting from headers without a trace context, what a daemon
// does for every untraced batch, allocates nothing; the canonical-key fallback used to
// allocate for each key the propagators look up.
func TestExtractAllocations(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    map[string][]string
	}{
		{"empty", map[string][]string{}},
		{"other keys", map[string][]string{"Moe-Tenant": {"a"}, "moe-deadline": {"1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if n := testing.AllocsPerRun(50, func() { ctx = Extract(context.Background(), tc.h) }); n != 0 {
				t.Fatalf("Extract allocates %v times", n)
			}
			if trace.SpanContextFromContext(ctx).IsValid() {
				t.Fatal("a span context from headers without one")
			}
		})
	}
}

func TestCarrierGetKeys(t *testing.T) {
	h := HeaderCarrier{"traceparent": {"lower"}, "Tracestate": {"canon"}, "X-Other": {"x"}}
	for _, tc := range []struct{ key, want string }{
		{"traceparent", "lower"},
		{"tracestate", "canon"}, // a sender that canonicalised it
		{"x-other", "x"},        // not a propagator key: still canonicalised
		{"baggage", ""},
	} {
		if got := h.Get(tc.key); got != tc.want {
			t.Errorf("Get(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}
