package gateway

import (
	"context"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/tracing"
)

// untraced are routes polled by machines; a span per probe or scrape is noise.
var untraced = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// traced wraps next in an HTTP SERVER span per request, continuing a trace the caller sent
// in traceparent. The span is named "METHOD route" once the mux has chosen the route.
func traced(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if untraced[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		ctx := tracing.ExtractHTTP(r.Context(), r.Header)
		ctx, span := tracing.Tracer().Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(tracing.HTTPMethod.String(r.Method), tracing.URLPath.String(r.URL.Path),
				tracing.ServerAddress.String(r.Host), tracing.UserAgent.String(r.UserAgent())))
		defer span.End()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		r = r.WithContext(ctx)
		next.ServeHTTP(sw, r)
		if r.Pattern != "" && r.Pattern != "/" {
			route := r.Pattern
			if _, path, ok := cutMethod(route); ok {
				route = path
			}
			span.SetName(r.Method + " " + route)
			span.SetAttributes(tracing.HTTPRoute.String(route))
		}
		span.SetAttributes(tracing.HTTPStatus.Int(sw.status))
		if sw.status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(sw.status))
		}
	})
}

// cutMethod splits a ServeMux pattern "POST /v1/x" into method and path.
func cutMethod(p string) (method, path string, ok bool) {
	for i := 0; i < len(p); i++ {
		if p[i] == ' ' {
			return p[:i], p[i+1:], true
		}
	}
	return "", p, false
}

// statusWriter records the status code. Flush and the rest reach the wrapped writer
// through Unwrap (http.ResponseController), so SSE streams still flush.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// annotate puts the request's tenant and id on the HTTP span once they are known.
func annotate(ctx context.Context, j *job) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(tracing.Tenant.String(j.tenant.ID), tracing.Request.String(j.id),
		tracing.GenAIModel.String(j.model.name))
}

// startGeneration starts the CLIENT span of one generation (GenAI conventions: named
// "operation model"), a child of the HTTP span.
func startGeneration(ctx context.Context, j *job) (context.Context, trace.Span) {
	op := "text_completion"
	if j.chat {
		op = "chat"
	}
	return tracing.Tracer().Start(ctx, op+" "+j.model.name, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(tracing.GenAIOperation.String(op), tracing.GenAIModel.String(j.model.name),
			tracing.GenAIMaxTokens.Int(j.maxTokens), tracing.GenAIInTokens.Int(len(j.prompt)),
			tracing.GenAIResponseID.String(j.id), tracing.Tenant.String(j.tenant.ID), tracing.Request.String(j.id),
			tracing.System, tracing.Destination.String(proto.GenSubject(j.model.name))))
}

// endGeneration records how a generation ended on its span and ends it.
func endGeneration(span trace.Span, router string, completion int, finish string, err error) {
	if span.IsRecording() {
		attrs := []attribute.KeyValue{tracing.GenAIOutTokens.Int(completion)}
		if router != "" {
			attrs = append(attrs, tracing.Router.String(router))
		}
		if finish != "" {
			attrs = append(attrs, tracing.GenAIFinish.StringSlice([]string{finish}))
		}
		span.SetAttributes(attrs...)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
}

// firstTokenEvent marks the first token's arrival on the generation span.
func firstTokenEvent(ctx context.Context) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("first_token")
	}
}
