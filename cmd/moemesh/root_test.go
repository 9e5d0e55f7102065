package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/moemesh/moemesh/tracing"
)

func TestLogFormat(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
	for _, tc := range []struct {
		name             string
		g                globals
		json, text, bad  bool
		debugLineWritten bool
	}{
		{name: "json", g: globals{logLevel: "info", logFormat: "json"}, json: true},
		{name: "JSON, any case", g: globals{logLevel: "info", logFormat: " JSON"}, json: true},
		{name: "text", g: globals{logLevel: "info", logFormat: "text"}, text: true},
		{name: "empty is text", g: globals{logLevel: "info"}, text: true},
		{name: "deprecated --log-json", g: globals{logLevel: "info", logFormat: "text", logJSON: true}, json: true},
		{name: "debug level", g: globals{logLevel: "debug", logFormat: "text"}, text: true, debugLineWritten: true},
		{name: "unknown format", g: globals{logLevel: "info", logFormat: "yaml"}, bad: true},
		{name: "unknown level", g: globals{logLevel: "verbose", logFormat: "json"}, bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			h, err := tc.g.handler(&buf)
			if tc.bad {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			log := slog.New(tracing.NewLogHandler(h))
			log.DebugContext(ctx, "debug line")
			if got := strings.Contains(buf.String(), "debug line"); got != tc.debugLineWritten {
				t.Fatalf("debug line written %v, want %v: %q", got, tc.debugLineWritten, buf.String())
			}
			buf.Reset()
			log.InfoContext(ctx, "request line", "tenant", "acme")
			line := buf.String()
			if tc.json {
				var rec map[string]any
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("not JSON: %q", line)
				}
				if rec["trace_id"] != tid.String() || rec["span_id"] != sid.String() || rec["tenant"] != "acme" {
					t.Fatalf("record %v", rec)
				}
			}
			if tc.text && (!strings.Contains(line, "trace_id="+tid.String()) || !strings.Contains(line, "span_id="+sid.String())) {
				t.Fatalf("text line %q lacks the ids", line)
			}
		})
	}
}

// TestLogFormatFlag: a bad --log-format stops any command before it starts anything.
func TestLogFormatFlag(t *testing.T) {
	root := newRoot()
	root.SetArgs([]string{"nats", "--port", "-1", "--log-format", "yaml"})
	root.SetOut(io.Discard)
	root.SetErr(io.Discard)
	err := root.ExecuteContext(context.Background())
	if err == nil || !strings.Contains(err.Error(), "--log-format") {
		t.Fatalf("err %v, want one naming --log-format", err)
	}
}
