package tracing

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

func TestSetupStdout(t *testing.T) {
	var buf bytes.Buffer
	shutdown, err := Setup(context.Background(), Config{Exporter: ExporterStdout, ServiceName: "moemesh-test", SampleRatio: 1, Stdout: &buf})
	if err != nil {
		t.Fatal(err)
	}
	defer otel.SetTracerProvider(noop.NewTracerProvider())
	_, span := Tracer().Start(context.Background(), "hello")
	if !span.IsRecording() {
		t.Fatal("span of a sampled root does not record")
	}
	span.End()
	if err := shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, `"Name":"hello"`) || !strings.Contains(out, "moemesh-test") {
		t.Fatalf("stdout exporter wrote %q", out)
	}
	// The global propagator is W3C trace context plus baggage.
	if f := otel.GetTextMapPropagator().Fields(); !strings.Contains(strings.Join(f, ","), "traceparent") || !strings.Contains(strings.Join(f, ","), "baggage") {
		t.Fatalf("global propagator fields %v", f)
	}
}

func TestSetupRejects(t *testing.T) {
	for _, cfg := range []Config{
		{Exporter: "zipkin"},
		{Exporter: ExporterStdout, SampleRatio: 1.5},
		{Exporter: ExporterOTLPHTTP, Endpoint: "localhost:4318", SampleRatio: 1}, // no scheme
	} {
		if _, err := Setup(context.Background(), cfg); err == nil {
			t.Errorf("Setup(%+v) accepted", cfg)
		}
	}
	shutdown, err := Setup(context.Background(), Config{Exporter: ExporterNone})
	if err != nil || shutdown(context.Background()) != nil {
		t.Fatalf("none: %v", err)
	}
}

// TestSetupOTLP: the OTLP exporters start without a collector (they connect lazily) and
// shut down within the context's bound.
func TestSetupOTLP(t *testing.T) {
	defer otel.SetTracerProvider(noop.NewTracerProvider())
	for _, exp := range []string{ExporterOTLPHTTP, ExporterOTLPGRPC} {
		shutdown, err := Setup(context.Background(), Config{Exporter: exp, Endpoint: "http://127.0.0.1:1", SampleRatio: 0.5})
		if err != nil {
			t.Fatalf("%s: %v", exp, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // nothing was recorded; do not wait for the unreachable endpoint
		_ = shutdown(ctx)
	}
}

// TestSampler: new traces follow the ratio, children follow their parent either way.
func TestSampler(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sampled := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
	dropped := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
	for _, tc := range []struct {
		ratio float64
		ctx   context.Context
		want  bool
	}{
		{0, context.Background(), false},
		{1, context.Background(), true},
		{0, sampled, true},
		{1, dropped, false},
	} {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(Sampler(tc.ratio)))
		_, span := tp.Tracer("t").Start(tc.ctx, "s")
		if got := span.SpanContext().IsSampled(); got != tc.want {
			t.Errorf("ratio %g, parent sampled=%v: sampled %v, want %v", tc.ratio, trace.SpanContextFromContext(tc.ctx).IsSampled(), got, tc.want)
		}
		span.End()
	}
}

func TestDetail(t *testing.T) {
	for _, s := range []string{"request", "layer", "op"} {
		d, err := ParseDetail(s)
		if err != nil || d.String() != s {
			t.Errorf("ParseDetail(%q) = %v, %v", s, d, err)
		}
	}
	if d, err := ParseDetail(""); err != nil || d != DetailRequest {
		t.Errorf("empty detail: %v %v", d, err)
	}
	if _, err := ParseDetail("verbose"); err == nil {
		t.Error("ParseDetail accepted verbose")
	}
	// The level crosses a hop in the baggage header.
	h := map[string][]string{}
	Inject(WithDetail(context.Background(), DetailOp), h)
	if got := DetailFrom(Extract(context.Background(), h)); got != DetailOp {
		t.Fatalf("detail after a hop %v (headers %v)", got, h)
	}
	if got := DetailFrom(context.Background()); got != DetailRequest {
		t.Fatalf("detail without baggage %v", got)
	}
}

// TestDiscardProvider: the discard exporter sees exactly the sampled spans, after the batch
// processor flushes them on shutdown.
func TestDiscardProvider(t *testing.T) {
	for _, tc := range []struct {
		ratio float64
		want  int64
	}{{1, 5}, {0, 0}} {
		d := &Discard{}
		tp, err := NewProvider(context.Background(), Config{Exporter: ExporterDiscard, SampleRatio: tc.ratio, Discard: d})
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			_, span := tp.Tracer("t").Start(context.Background(), "s")
			span.End()
		}
		if err := tp.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := d.Spans(); got != tc.want {
			t.Errorf("ratio %g: %d spans exported, want %d", tc.ratio, got, tc.want)
		}
	}
	for _, cfg := range []Config{{Exporter: ExporterNone}, {Exporter: ""}, {Exporter: ExporterDiscard, SampleRatio: -1}} {
		if _, err := NewProvider(context.Background(), cfg); err == nil {
			t.Errorf("NewProvider(%+v) accepted", cfg)
		}
	}
}
