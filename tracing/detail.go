package tracing

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Detail is how many spans a service makes per request.
type Detail uint8

const (
	// DetailRequest (the default): one span per request per service (gateway HTTP and
	// generation, router generate). Costs next to nothing per token.
	DetailRequest Detail = iota
	// DetailLayer adds, for steps holding a sampled request, a step span, a span per MoE
	// layer, a CLIENT span per card attempt and the expert daemon's SERVER span.
	DetailLayer
	// DetailOp adds the daemons' compute spans (one per grouped computation).
	DetailOp
)

func (d Detail) String() string {
	switch d {
	case DetailRequest:
		return "request"
	case DetailLayer:
		return "layer"
	case DetailOp:
		return "op"
	}
	return fmt.Sprintf("Detail(%d)", uint8(d))
}

// ParseDetail reads request, layer or op ("" is request).
func ParseDetail(s string) (Detail, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "request":
		return DetailRequest, nil
	case "layer":
		return DetailLayer, nil
	case "op":
		return DetailOp, nil
	}
	return 0, fmt.Errorf("tracing: detail %q, want request, layer or op", s)
}

// detailMember is the baggage member carrying the router's detail level to the expert
// daemons, so one knob decides how deep a request's trace goes on every hop.
const detailMember = "moe.detail"

// WithDetail returns ctx whose baggage tells downstream services the detail level d.
func WithDetail(ctx context.Context, d Detail) context.Context {
	m, err := baggage.NewMemberRaw(detailMember, d.String())
	if err != nil {
		return ctx
	}
	b, err := baggage.FromContext(ctx).SetMember(m)
	if err != nil {
		return ctx
	}
	return baggage.ContextWithBaggage(ctx, b)
}

// DetailFrom returns the detail level in ctx's baggage, DetailRequest when none is there.
func DetailFrom(ctx context.Context) Detail {
	d, err := ParseDetail(baggage.FromContext(ctx).Member(detailMember).Value())
	if err != nil {
		return DetailRequest
	}
	return d
}

// Recording reports whether ctx holds a span that records (sampled, real provider): the
// cheap test before making child spans that only matter inside a kept trace.
func Recording(ctx context.Context) bool {
	return trace.SpanFromContext(ctx).IsRecording()
}

// ExtractHTTP returns ctx carrying the trace context of an HTTP request's headers.
func ExtractHTTP(ctx context.Context, h http.Header) context.Context {
	return Propagator.Extract(ctx, propagation.HeaderCarrier(h))
}

// More attribute keys: OpenTelemetry semantic conventions (HTTP, GenAI) and moemesh's own.
var (
	HTTPMethod      = attribute.Key("http.request.method")
	HTTPRoute       = attribute.Key("http.route")
	HTTPStatus      = attribute.Key("http.response.status_code")
	URLPath         = attribute.Key("url.path")
	ServerAddress   = attribute.Key("server.address")
	UserAgent       = attribute.Key("user_agent.original")
	GenAIOperation  = attribute.Key("gen_ai.operation.name")
	GenAIModel      = attribute.Key("gen_ai.request.model")
	GenAIMaxTokens  = attribute.Key("gen_ai.request.max_tokens")
	GenAIResponseID = attribute.Key("gen_ai.response.id")
	GenAIFinish     = attribute.Key("gen_ai.response.finish_reasons")
	GenAIInTokens   = attribute.Key("gen_ai.usage.input_tokens")
	GenAIOutTokens  = attribute.Key("gen_ai.usage.output_tokens")
	Operation       = attribute.Key("messaging.operation.name")
	Router          = attribute.Key("moe.router")
	Sequences       = attribute.Key("moe.step.sequences")
	StepTokens      = attribute.Key("moe.step.tokens")
	Split           = attribute.Key("moe.step.split") // sequences in the first of two micro-batches
	Experts         = attribute.Key("moe.experts")
	Batches         = attribute.Key("moe.batches")
	Attempt         = attribute.Key("moe.attempt")
	TTFT            = attribute.Key("moe.ttft_ms")
	// Device op spans (detail op): the shapes of an op's output and first input.
	OpOutShape = attribute.Key("moe.op.out_shape")
	OpInShape  = attribute.Key("moe.op.in_shape")
	// Dispatch events (retries and hedges) on a layer step's span.
	DispatchReason  = attribute.Key("moe.dispatch.reason")
	DispatchHedgeTo = attribute.Key("moe.dispatch.hedge_cards")
	DispatchDelayMS = attribute.Key("moe.dispatch.delay_ms")
	DispatchResult  = attribute.Key("moe.dispatch.result")
	QueueMS         = attribute.Key("moe.queue_ms")
	ErrorCode       = attribute.Key("moe.error.code")
)

// System is the messaging.system value of NATS hops.
var System = MessagingSystem.String("nats")
