package router

import (
	"context"
	"errors"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/tracing"
)

// Event names on the layer span (or whatever span the step's context carries).
const (
	eventRetry       = "dispatch.retry"
	eventHedge       = "dispatch.hedge"
	eventHedgeResult = "dispatch.hedge.result"
)

// retryReason names why a card's batch is re-sent, for events and the retries metric:
// a short, bounded set of label values.
func retryReason(err error) string {
	switch {
	case errors.Is(err, mesh.ErrNoResponders):
		return "no_responders"
	case errors.Is(err, mesh.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	switch code := proto.CodeOf(err); code {
	case proto.CodeUnavailable:
		return "busy"
	case proto.CodeOutOfMemory:
		return "out_of_memory"
	case proto.CodeNotFound:
		return "stale_placement"
	default:
		return "code_" + strconv.Itoa(int(code))
	}
}

// retried records that s's batch failed retryably and is re-sent: a metric, and an event
// on the span of ctx (the layer's at detail layer; nothing when it does not record).
// attempt is the step's send round that failed (1: the first send).
func (m *Mesh) retried(ctx context.Context, s *send, attempt int) {
	reason := retryReason(s.err)
	m.stats.retried(reason)
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.AddEvent(eventRetry, trace.WithAttributes(tracing.Card.String(s.card.id), tracing.DispatchReason.String(reason),
		tracing.Attempt.Int(attempt), tracing.Layer.Int(int(s.batch.Layer)), tracing.Rows.Int(s.batch.Rows()),
		tracing.ErrorCode.Int(int(proto.CodeOf(s.err)))))
}

// hedgeEvent records that s's card did not answer within delay and its rows went to the
// cards of hedges as well (result hedgeNoReplica: there was nowhere to send them).
func hedgeEvent(ctx context.Context, s *send, hedges []*send, delay time.Duration, result string) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	attrs := []attribute.KeyValue{tracing.Card.String(s.card.id), tracing.DispatchReason.String("slow"),
		tracing.Layer.Int(int(s.batch.Layer)), tracing.Rows.Int(s.batch.Rows()),
		tracing.DispatchDelayMS.Float64(float64(delay) / float64(time.Millisecond)), tracing.DispatchHedgeTo.String(cardIDs(hedges))}
	if result != "" {
		attrs = append(attrs, tracing.DispatchResult.String(result))
	}
	span.AddEvent(eventHedge, trace.WithAttributes(attrs...))
}

// hedgeResult records which side of a hedge answered first.
func hedgeResult(ctx context.Context, s *send, result string) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.AddEvent(eventHedgeResult, trace.WithAttributes(tracing.Card.String(s.card.id),
		tracing.Layer.Int(int(s.batch.Layer)), tracing.DispatchResult.String(result)))
}
