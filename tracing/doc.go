// Package tracing holds moemesh's OpenTelemetry glue: provider setup (Setup and NewProvider,
// from a Config that cmd/ fills from the standard OTEL_* environment), the W3C trace-context
// and baggage carrier over NATS headers (lowercase keys, as the spec writes them), the
// detail level (request | layer | op) that decides how many spans a request makes, the
// attribute keys used on spans, and LogHandler, the slog.Handler wrapper that puts the trace
// and span ids on every line logged with a request's context. Without Setup the global
// (no-op) provider is used and propagation costs next to nothing.
//
// Import rule: tracing imports only OpenTelemetry and the standard library.
package tracing
