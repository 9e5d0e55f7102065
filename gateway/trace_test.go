package gateway

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/moemesh/moemesh/tracing"
)

// TestTracedHandler: the wrapper continues the caller's trace, names the span by the
// route the mux chose, records the status, keeps streaming writers flushable, and leaves
// probes alone.
func TestTracedHandler(t *testing.T) {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr), sdktrace.WithSampler(tracing.Sampler(1)))
	otel.SetTracerProvider(tp)
	defer otel.SetTracerProvider(noop.NewTracerProvider())

	mux := http.NewServeMux()
	var inner trace.SpanContext
	mux.HandleFunc("POST /v1/things/{id}", func(w http.ResponseWriter, r *http.Request) {
		inner = trace.SpanContextFromContext(r.Context())
		w.WriteHeader(http.StatusTeapot)
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("flush through the wrapper: %v", err)
		}
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {})
	h := traced(mux)

	req := httptest.NewRequest(http.MethodPost, "/v1/things/7", nil)
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/healthz", nil))
	_ = tp.ForceFlush(context.Background())

	spans := sr.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1 (none for /healthz)", len(spans))
	}
	s := spans[0]
	if s.Name() != "POST /v1/things/{id}" || s.SpanKind() != trace.SpanKindServer {
		t.Errorf("span %q kind %v", s.Name(), s.SpanKind())
	}
	if s.SpanContext().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || s.Parent().SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("span not in the caller's trace: %v parent %v", s.SpanContext().TraceID(), s.Parent().SpanID())
	}
	if inner.SpanID() != s.SpanContext().SpanID() {
		t.Error("the handler's context does not carry the server span")
	}
	var status int64
	for _, kv := range s.Attributes() {
		if kv.Key == tracing.HTTPStatus {
			status = kv.Value.AsInt64()
		}
	}
	if status != http.StatusTeapot || !rec.Flushed {
		t.Errorf("status attribute %d, flushed %v", status, rec.Flushed)
	}
}
