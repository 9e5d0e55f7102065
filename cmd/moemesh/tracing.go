package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/moemesh/moemesh/tracing"
)

// tracingConfig reads the standard OpenTelemetry environment into a tracing.Config:
// OTEL_SDK_DISABLED, OTEL_TRACES_EXPORTER (otlp, console/stdout, none; also otlp-http,
// otlp-grpc), OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL (grpc or http/protobuf),
// OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER and
// OTEL_TRACES_SAMPLER_ARG. Unlike the SDK's default, tracing is off unless an exporter or
// an endpoint is named: a plain run does not try to reach a collector.
func tracingConfig(service string, getenv func(string) string) (tracing.Config, error) {
	cfg := tracing.Config{ServiceName: service, SampleRatio: 1}
	if v := getenv("OTEL_SERVICE_NAME"); v != "" {
		cfg.ServiceName = v
	}
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		cfg.Exporter = tracing.ExporterNone
		return cfg, nil
	}
	endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" {
		endpoint = getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	cfg.Endpoint = endpoint
	exp := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")))
	if exp == "" && endpoint != "" {
		exp = "otlp"
	}
	if i := strings.IndexByte(exp, ','); i >= 0 {
		return cfg, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: one exporter only", exp)
	}
	switch exp {
	case "", "none":
		cfg.Exporter = tracing.ExporterNone
	case "otlp":
		proto := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
		if proto == "" {
			proto = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
		}
		switch proto {
		case "", "http/protobuf", "http":
			cfg.Exporter = tracing.ExporterOTLPHTTP
		case "grpc":
			cfg.Exporter = tracing.ExporterOTLPGRPC
		default:
			return cfg, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: want grpc or http/protobuf", proto)
		}
	case "console", "stdout":
		cfg.Exporter = tracing.ExporterStdout
	case tracing.ExporterOTLPHTTP, tracing.ExporterOTLPGRPC:
		cfg.Exporter = exp
	default:
		return cfg, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: want otlp, console or none", exp)
	}
	arg := getenv("OTEL_TRACES_SAMPLER_ARG")
	switch s := getenv("OTEL_TRACES_SAMPLER"); s {
	case "", "parentbased_always_on", "always_on":
		if s == "" && arg != "" { // a ratio alone means parent-based ratio sampling
			break
		}
		return cfg, nil
	case "parentbased_always_off", "always_off":
		cfg.SampleRatio = 0
		return cfg, nil
	case "parentbased_traceidratio", "traceidratio":
	default:
		return cfg, fmt.Errorf("OTEL_TRACES_SAMPLER=%q: want parentbased_traceidratio, parentbased_always_on or parentbased_always_off", s)
	}
	if arg != "" {
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return cfg, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG=%q: want a ratio from 0 to 1", arg)
		}
		cfg.SampleRatio = r
	}
	return cfg, nil
}

// setupTracing installs the tracer provider for service (its default service.name) from the
// environment. The returned function flushes what is buffered, bounded by a few seconds;
// call it when the service has stopped.
func setupTracing(ctx context.Context, service string, log *slog.Logger) (func(), error) {
	cfg, err := tracingConfig(service, os.Getenv)
	if err != nil {
		return nil, err
	}
	shutdown, err := tracing.Setup(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Exporter != tracing.ExporterNone {
		log.Info("tracing on", "exporter", cfg.Exporter, "endpoint", cfg.Endpoint, "service", cfg.ServiceName, "sample_ratio", cfg.SampleRatio)
	}
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := shutdown(sctx); err != nil {
			log.Warn("flushing traces", "err", err)
		}
	}, nil
}
