package tracing

import (
	"context"
	"net/textproto"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// HeaderCarrier adapts NATS headers (nats.Header is a map[string][]string) to the
// propagation API. Unlike propagation.HeaderCarrier it does not canonicalise keys, so
// "traceparent" stays lowercase on the wire; Get also accepts canonicalised senders.
type HeaderCarrier map[string][]string

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get returns the first value of key.
func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	if v := c[canonical(key)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// canonicalKeys holds the canonical forms of the keys Propagator reads. Extract runs on
// every batch a daemon takes, whose headers mostly carry no trace context, and
// textproto.CanonicalMIMEHeaderKey allocates the canonical form of a lowercase key on each
// call.
var canonicalKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range Propagator.Fields() {
		m[k] = textproto.CanonicalMIMEHeaderKey(k)
	}
	return m
}()

func canonical(key string) string {
	if k, ok := canonicalKeys[key]; ok {
		return k
	}
	return textproto.CanonicalMIMEHeaderKey(key)
}

// Set replaces key's values.
func (c HeaderCarrier) Set(key, value string) { c[key] = []string{value} }

// Keys lists the keys present.
func (c HeaderCarrier) Keys() []string {
	out := make([]string, 0, len(c))
	for k := range c {
		out = append(out, k)
	}
	return out
}

// Propagator is W3C trace context plus baggage, used on every hop whatever the global
// propagator is set to.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})

// Inject writes ctx's trace context into headers.
func Inject(ctx context.Context, headers map[string][]string) {
	Propagator.Inject(ctx, HeaderCarrier(headers))
}

// Extract returns ctx carrying the trace context found in headers.
func Extract(ctx context.Context, headers map[string][]string) context.Context {
	return Propagator.Extract(ctx, HeaderCarrier(headers))
}

// Tracer is the tracer moemesh packages use, from the global provider.
func Tracer() trace.Tracer {
	return otel.Tracer("github.com/moemesh/moemesh")
}

// Attribute keys, defined once.
var (
	MessagingSystem = attribute.Key("messaging.system")
	Destination     = attribute.Key("messaging.destination.name")
	BodySize        = attribute.Key("messaging.message.body.size")
	Layer           = attribute.Key("moe.layer")
	Card            = attribute.Key("moe.card")
	Rows            = attribute.Key("moe.batch.rows")
	Pairs           = attribute.Key("moe.batch.pairs")
	Tenant          = attribute.Key("moe.tenant")
	Request         = attribute.Key("moe.request")
)
