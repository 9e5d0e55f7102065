package expertd

import (
	"context"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/tracing"
)

// opCard is the card the expert set computes on, with a span per device op (grouped
// matmul, SwiGLU, scatter-add) under the batch's compute span when the trace detail is
// "op". The ops take no context, so the card's worker sets parent around each Compute;
// it is the only goroutine using the card, so the field needs no lock. On an asynchronous
// backend (cann) an op span covers the launch, not the device time; the compute span
// around them ends after the result is read back.
type opCard struct {
	ascend.Card
	card   string
	parent context.Context // nil: no op spans
}

// SupportsDType forwards the capability of the wrapped card: embedding hides it, and a
// loader asking ascend.Supports would otherwise think the card has no quantised dtypes.
func (c *opCard) SupportsDType(dt ascend.DType) bool { return ascend.Supports(c.Card, dt) }

func (c *opCard) op(name string, out ascend.Buffer, in ...ascend.Buffer) trace.Span {
	if c.parent == nil {
		return nil
	}
	_, span := tracing.Tracer().Start(c.parent, name, trace.WithAttributes(tracing.Card.String(c.card),
		tracing.OpOutShape.Int64Slice(shape(out)), tracing.OpInShape.Int64Slice(shape(in[0]))))
	return span
}

func shape(b ascend.Buffer) []int64 {
	if b == nil {
		return nil
	}
	s := b.Shape()
	out := make([]int64, len(s))
	for i, d := range s {
		out[i] = int64(d)
	}
	return out
}

func endOp(span trace.Span, err error) error {
	if span == nil {
		return err
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
	return err
}

func (c *opCard) GroupedMatmul(out, x ascend.Buffer, weights []ascend.Buffer, counts []int64) error {
	span := c.op("op.grouped_matmul", out, x)
	if span != nil {
		span.SetAttributes(tracing.Experts.Int(len(weights)))
	}
	return endOp(span, c.Card.GroupedMatmul(out, x, weights, counts))
}

func (c *opCard) SwiGLU(out, x ascend.Buffer, limit float32) error {
	return endOp(c.op("op.swiglu", out, x), c.Card.SwiGLU(out, x, limit))
}

func (c *opCard) ScatterAdd(out, x ascend.Buffer, src, dst []int32, w []float32) error {
	return endOp(c.op("op.scatter_add", out, x), c.Card.ScatterAdd(out, x, src, dst, w))
}
