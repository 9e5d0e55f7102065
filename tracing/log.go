package tracing

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// Log attribute keys of the trace context, as the OpenTelemetry log data model names them,
// so a log backend can jump from a line to its trace.
const (
	LogTraceID = "trace_id"
	LogSpanID  = "span_id"
)

// LogHandler is a slog.Handler that adds the trace and span ids of the span in a record's
// context to the record, then hands it to the wrapped handler. Only the ctx-taking
// methods (InfoContext, Log, ...) carry a context; lines logged without one, or outside a
// valid span, pass through unchanged.
type LogHandler struct {
	next slog.Handler
}

var _ slog.Handler = (*LogHandler)(nil)

// NewLogHandler wraps next. A nil next is an error of the caller's: it gets a handler that
// discards, not a panic at the first log line.
func NewLogHandler(next slog.Handler) *LogHandler {
	if next == nil {
		next = slog.DiscardHandler
	}
	return &LogHandler{next: next}
}

// Enabled reports whether the wrapped handler takes records at level.
func (h *LogHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle adds trace_id and span_id when ctx holds a valid span context. The ids are added
// even when the span is not sampled: a line of an unsampled request still groups with the
// other lines of that request.
func (h *LogHandler) Handle(ctx context.Context, r slog.Record) error {
	if ctx != nil {
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			// Clone: the record may be shared with other handlers (slog's contract).
			r = r.Clone()
			r.AddAttrs(slog.String(LogTraceID, sc.TraceID().String()), slog.String(LogSpanID, sc.SpanID().String()))
		}
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs returns a LogHandler over next.WithAttrs(attrs).
func (h *LogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &LogHandler{next: h.next.WithAttrs(attrs)}
}

// WithGroup returns a LogHandler over next.WithGroup(name). The ids of records logged
// through it land inside the group, as every attribute added at Handle time does.
func (h *LogHandler) WithGroup(name string) slog.Handler {
	return &LogHandler{next: h.next.WithGroup(name)}
}
