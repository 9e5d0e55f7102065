package tracing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Exporter names, as OTEL_TRACES_EXPORTER spells them (plus the transport for OTLP).
const (
	ExporterOTLPHTTP = "otlp-http"
	ExporterOTLPGRPC = "otlp-grpc"
	ExporterStdout   = "stdout"
	ExporterNone     = "none"
	// ExporterDiscard batches spans like the others and drops them: what tracing costs a
	// process, without a collector (benchmarks).
	ExporterDiscard = "discard"
)

// Config configures Setup. cmd/ fills it from the standard OTEL_* environment.
type Config struct {
	// Exporter is one of otlp-http, otlp-grpc, stdout, discard or none ("" is none).
	Exporter string
	// Endpoint is the OTLP endpoint URL, e.g. http://localhost:4318 (HTTP; /v1/traces is
	// appended to a URL without a path) or http://localhost:4317 (gRPC); an http:// scheme
	// means no TLS. Empty: the exporter's default (localhost, and whatever
	// OTEL_EXPORTER_OTLP_* settings the exporter itself honours).
	Endpoint string
	// ServiceName is the resource's service.name, e.g. moemesh-router.
	ServiceName string
	// SampleRatio is the fraction of new traces sampled, 0 to 1. Spans with a parent
	// follow the parent's decision (ParentBased), so one trace is kept or dropped whole.
	SampleRatio float64
	// Attributes are added to the resource (e.g. service.instance.id).
	Attributes []attribute.KeyValue
	// Stdout is where the stdout exporter writes (nil: os.Stdout).
	Stdout io.Writer
	// Discard is the discard exporter's counter (nil: a new one).
	Discard *Discard
}

// Setup installs a TracerProvider exporting as cfg says and the W3C trace-context plus
// baggage propagator as the global ones; the returned function flushes and stops the
// provider. With Exporter none the global provider stays the no-op one: spans cost next to
// nothing and shutdown does nothing.
func Setup(ctx context.Context, cfg Config) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(Propagator)
	if strings.EqualFold(cfg.Exporter, ExporterNone) || cfg.Exporter == "" {
		if cfg.SampleRatio < 0 || cfg.SampleRatio > 1 {
			return nil, fmt.Errorf("tracing: sample ratio %g, want 0 to 1", cfg.SampleRatio)
		}
		return func(context.Context) error { return nil }, nil
	}
	tp, err := NewProvider(ctx, cfg)
	if err != nil {
		return nil, err
	}
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// NewProvider makes the TracerProvider Setup installs, without installing it: a batching
// span processor over cfg's exporter, cfg's resource and the parent-based ratio sampler.
// Exporter none is an error here: it means no provider at all.
func NewProvider(ctx context.Context, cfg Config) (*sdktrace.TracerProvider, error) {
	if cfg.SampleRatio < 0 || cfg.SampleRatio > 1 {
		return nil, fmt.Errorf("tracing: sample ratio %g, want 0 to 1", cfg.SampleRatio)
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch strings.ToLower(cfg.Exporter) {
	case ExporterOTLPHTTP, "otlp":
		var opts []otlptracehttp.Option
		if cfg.Endpoint != "" {
			u, perr := url.Parse(cfg.Endpoint)
			if perr != nil || u.Host == "" {
				return nil, fmt.Errorf("tracing: endpoint %q is not a URL like http://host:4318", cfg.Endpoint)
			}
			if u.Path == "" || u.Path == "/" {
				u.Path = "/v1/traces"
			}
			opts = append(opts, otlptracehttp.WithEndpointURL(u.String()))
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	case ExporterOTLPGRPC:
		var opts []otlptracegrpc.Option
		if cfg.Endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpointURL(cfg.Endpoint))
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	case ExporterStdout, "console":
		w := cfg.Stdout
		if w == nil {
			w = os.Stdout
		}
		exp, err = stdouttrace.New(stdouttrace.WithWriter(w))
	case ExporterDiscard:
		exp = cfg.Discard
		if exp == nil {
			exp = &Discard{}
		}
	default:
		return nil, fmt.Errorf("tracing: exporter %q, want otlp-http, otlp-grpc, stdout, discard or none", cfg.Exporter)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: %s exporter: %w", cfg.Exporter, err)
	}
	res, err := Resource(cfg.ServiceName, cfg.Attributes...)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, err
	}
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(Sampler(cfg.SampleRatio)),
	), nil
}

// Discard is a span exporter that counts the spans it is given and drops them.
type Discard struct {
	spans atomic.Int64
}

// ExportSpans counts spans.
func (d *Discard) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	d.spans.Add(int64(len(spans)))
	return nil
}

// Shutdown does nothing.
func (d *Discard) Shutdown(context.Context) error { return nil }

// Spans is how many spans were exported so far.
func (d *Discard) Spans() int64 { return d.spans.Load() }

// Sampler is the sampler Setup uses: parent-based, new traces kept with probability ratio.
func Sampler(ratio float64) sdktrace.Sampler {
	return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))
}

// Resource describes the process: the SDK's defaults, service.name and attrs.
func Resource(service string, attrs ...attribute.KeyValue) (*resource.Resource, error) {
	if service != "" {
		attrs = append(attrs, attribute.String("service.name", service))
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attrs...))
	if err != nil && !errors.Is(err, resource.ErrSchemaURLConflict) {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	return res, nil
}
