package main

import (
	"testing"

	"github.com/moemesh/moemesh/tracing"
)

func TestTracingConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want tracing.Config
		bad  bool
	}{
		{name: "nothing set: off", want: tracing.Config{Exporter: "none", ServiceName: "svc", SampleRatio: 1}},
		{name: "endpoint alone: OTLP over HTTP",
			env:  map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318"},
			want: tracing.Config{Exporter: "otlp-http", Endpoint: "http://jaeger:4318", ServiceName: "svc", SampleRatio: 1}},
		{name: "grpc, signal endpoint wins, name, ratio",
			env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
				"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4317", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4317",
				"OTEL_SERVICE_NAME": "edge", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
			want: tracing.Config{Exporter: "otlp-grpc", Endpoint: "http://b:4317", ServiceName: "edge", SampleRatio: 0.1}},
		{name: "ratio alone", env: map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
			want: tracing.Config{Exporter: "stdout", ServiceName: "svc", SampleRatio: 0.25}},
		{name: "always off", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp-grpc", "OTEL_TRACES_SAMPLER": "parentbased_always_off"},
			want: tracing.Config{Exporter: "otlp-grpc", ServiceName: "svc", SampleRatio: 0}},
		{name: "disabled", env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"},
			want: tracing.Config{Exporter: "none", ServiceName: "svc", SampleRatio: 1}},
		{name: "unknown exporter", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, bad: true},
		{name: "two exporters", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp,console"}, bad: true},
		{name: "bad protocol", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, bad: true},
		{name: "bad ratio", env: map[string]string{"OTEL_TRACES_SAMPLER_ARG": "2"}, bad: true},
		{name: "bad sampler", env: map[string]string{"OTEL_TRACES_SAMPLER": "jaeger_remote"}, bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tracingConfig("svc", func(k string) string { return tc.env[k] })
			if tc.bad {
				if err == nil {
					t.Fatalf("accepted: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Exporter != tc.want.Exporter || got.Endpoint != tc.want.Endpoint || got.ServiceName != tc.want.ServiceName || got.SampleRatio != tc.want.SampleRatio {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
