package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func TestLogHandler(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	remote := trace.ContextWithRemoteSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	live, span := tp.Tracer("t").Start(context.Background(), "op")
	defer span.End()

	for _, tc := range []struct {
		name          string
		log           func(l *slog.Logger)
		trace, spanID string // "" means the key must be absent
		group         string // the ids are expected inside this group
	}{
		{name: "unsampled remote parent", log: func(l *slog.Logger) { l.InfoContext(remote, "hop") },
			trace: tid.String(), spanID: sid.String()},
		{name: "live span", log: func(l *slog.Logger) { l.WarnContext(live, "step") },
			trace: span.SpanContext().TraceID().String(), spanID: span.SpanContext().SpanID().String()},
		{name: "no span in ctx", log: func(l *slog.Logger) { l.InfoContext(context.Background(), "idle") }},
		{name: "no ctx method", log: func(l *slog.Logger) { l.Info("plain") }},
		{name: "with attrs keeps ids", log: func(l *slog.Logger) { l.With("card", "c0").InfoContext(remote, "x") },
			trace: tid.String(), spanID: sid.String()},
		{name: "group nests ids", log: func(l *slog.Logger) { l.WithGroup("g").InfoContext(remote, "x", "k", 1) },
			trace: tid.String(), spanID: sid.String(), group: "g"},
		{name: "below level: nothing", log: func(l *slog.Logger) { l.DebugContext(remote, "hidden") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := slog.New(NewLogHandler(slog.NewJSONHandler(&buf, nil)))
			tc.log(l)
			if strings.Contains(tc.name, "below level") {
				if buf.Len() != 0 {
					t.Fatalf("debug line written: %s", buf.String())
				}
				return
			}
			var rec map[string]any
			if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
				t.Fatalf("not one JSON line: %q: %v", buf.String(), err)
			}
			if tc.group != "" {
				g, ok := rec[tc.group].(map[string]any)
				if !ok {
					t.Fatalf("no group %q in %v", tc.group, rec)
				}
				rec = g
			}
			if got, _ := rec[LogTraceID].(string); got != tc.trace {
				t.Errorf("trace_id %q, want %q (%s)", got, tc.trace, buf.String())
			}
			if got, _ := rec[LogSpanID].(string); got != tc.spanID {
				t.Errorf("span_id %q, want %q (%s)", got, tc.spanID, buf.String())
			}
		})
	}
}

// TestLogHandlerRecordNotShared: adding the ids must not change a record another handler
// also receives (slog.Record shares its attribute storage between copies).
func TestLogHandlerRecordNotShared(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithRemoteSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
	var a, b bytes.Buffer
	ha := NewLogHandler(slog.NewTextHandler(&a, nil))
	hb := slog.NewTextHandler(&b, nil)
	r := slog.NewRecord(testTime, slog.LevelInfo, "m", 0)
	// More attributes than a Record holds inline, so copies share the overflow slice.
	r.AddAttrs(slog.Int("a", 1), slog.Int("b", 2), slog.Int("c", 3), slog.Int("d", 4), slog.Int("e", 5), slog.Int("f", 6))
	if err := ha.Handle(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := hb.Handle(ctx, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(a.String(), "trace_id="+tid.String()) {
		t.Fatalf("wrapped handler: %q", a.String())
	}
	if strings.Contains(b.String(), "trace_id") || r.NumAttrs() != 6 {
		t.Fatalf("the ids leaked into the shared record: %q, %d attrs", b.String(), r.NumAttrs())
	}
	if NewLogHandler(nil).Handle(ctx, r) != nil {
		t.Fatal("nil next handler")
	}
}

var testTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
