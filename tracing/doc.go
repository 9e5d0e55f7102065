// Package tracing holds moemesh's OpenTelemetry glue: the W3C trace-context carrier over NATS
// headers (lowercase keys, as the spec writes them) and the attribute keys used on spans.
// Provider setup from OTEL_* settings arrives with the observability work; until then the
// global (no-op) provider is used and propagation costs next to nothing.
//
// Import rule: tracing imports only OpenTelemetry and the standard library.
package tracing
