package meshtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/moemesh/moemesh/gateway"
	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/router"
	"github.com/moemesh/moemesh/tracing"
)

// recordSpans installs a tracer provider that keeps every span in memory for the test; the
// global provider is a no-op again afterwards.
func recordSpans(t *testing.T) *tracetest.SpanRecorder {
	t.Helper()
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr), sdktrace.WithSampler(tracing.Sampler(1)))
	otel.SetTracerProvider(tp)
	t.Cleanup(func() {
		otel.SetTracerProvider(noop.NewTracerProvider())
		_ = tp.Shutdown(context.Background())
	})
	return sr
}

// tracedMesh is a whole mesh in process (two daemons, a router at detail, the gateway's
// HTTP API) for the trace tests.
type tracedMesh struct {
	url  string
	name string
}

func startTracedMesh(t *testing.T, ctx context.Context, name string, detail tracing.Detail) *tracedMesh {
	t.Helper()
	dir := Checkpoint(t, "qwen3_moe", "bf16")
	st, err := stack.Start(ctx, stack.Config{ModelDir: dir, Model: name, Daemons: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rnc, err := st.Connect(ctx, "router")
	if err != nil {
		t.Fatal(err)
	}
	rt, err := stack.NewRouter(ctx, stack.RouterConfig{ModelDir: dir, Model: name, Conn: rnc,
		Engine: router.EngineConfig{TraceDetail: detail}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rt.Close)
	rctx, stopRouter := context.WithCancel(ctx)
	done := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		done <- router.Serve(rctx, router.ServiceConfig{ID: "traced", Model: name, Conn: rnc, Engine: rt.Engine, Ready: ready})
	}()
	t.Cleanup(func() {
		stopRouter()
		if err := <-done; err != nil {
			t.Errorf("router: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("router: %v", err)
	}
	gnc, err := st.Connect(ctx, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Models: []gateway.Model{{Name: name, Dir: dir}}}, gnc)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	return &tracedMesh{url: srv.URL, name: name}
}

// chat sends one chat completion and returns its id.
func (m *tracedMesh) chat(t *testing.T, ctx context.Context, maxTokens int) string {
	t.Helper()
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"Where did the time go?"}],"max_tokens":%d,"temperature":0}`, m.name, maxTokens)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		ID    string `json:"id"`
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || out.ID == "" {
		t.Fatalf("chat: status %d, %+v, %v", resp.StatusCode, out, err)
	}
	return out.ID
}

// spanTree indexes a trace's ended spans.
type spanTree struct {
	spans []sdktrace.ReadOnlySpan
	byID  map[trace.SpanID]sdktrace.ReadOnlySpan
}

func treeOf(spans []sdktrace.ReadOnlySpan) *spanTree {
	tr := &spanTree{spans: spans, byID: map[trace.SpanID]sdktrace.ReadOnlySpan{}}
	for _, s := range spans {
		tr.byID[s.SpanContext().SpanID()] = s
	}
	return tr
}

// named returns the spans whose name starts with prefix.
func (tr *spanTree) named(prefix string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range tr.spans {
		if strings.HasPrefix(s.Name(), prefix) {
			out = append(out, s)
		}
	}
	return out
}

// parent returns s's parent span in the tree, nil for a root or an unknown parent.
func (tr *spanTree) parent(s sdktrace.ReadOnlySpan) sdktrace.ReadOnlySpan {
	if !s.Parent().IsValid() {
		return nil
	}
	return tr.byID[s.Parent().SpanID()]
}

func attr(s sdktrace.ReadOnlySpan, k attribute.Key) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if kv.Key == k {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func attrString(s sdktrace.ReadOnlySpan, k attribute.Key) string {
	v, _ := attr(s, k)
	return v.Emit()
}

func hasEvent(s sdktrace.ReadOnlySpan, name string) bool {
	for _, e := range s.Events() {
		if e.Name == name {
			return true
		}
	}
	return false
}

// waitSpan waits until a span named name has ended and returns the ended spans then.
func waitSpan(t *testing.T, sr *tracetest.SpanRecorder, name string) []sdktrace.ReadOnlySpan {
	t.Helper()
	var spans []sdktrace.ReadOnlySpan
	WaitFor(t, 10*time.Second, func() error {
		spans = sr.Ended()
		for _, s := range spans {
			if s.Name() == name {
				return nil
			}
		}
		return fmt.Errorf("no span %q among %d ended", name, len(spans))
	})
	return spans
}

// one returns the only span of the list or fails.
func one(t *testing.T, what string, spans []sdktrace.ReadOnlySpan) sdktrace.ReadOnlySpan {
	t.Helper()
	if len(spans) != 1 {
		t.Fatalf("%d %s spans, want 1", len(spans), what)
	}
	return spans[0]
}

// TestTraceAcrossServices: at detail op, one chat request through the gateway's HTTP API
// yields one trace: HTTP SERVER → generation CLIENT → router generate → steps (linked to the
// request) → MoE layers → a CLIENT span per card batch → the daemon's SERVER span → the
// grouped computation, on both daemons, with tenant and request ids where they are known.
func TestTraceAcrossServices(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sr := recordSpans(t)
	m := startTracedMesh(t, ctx, "traced", tracing.DetailOp)
	id := m.chat(t, ctx, 3)
	spans := waitSpan(t, sr, "POST /v1/chat/completions")

	httpSpan := one(t, "HTTP", treeOf(spans).named("POST /v1/chat/completions"))
	tid := httpSpan.SpanContext().TraceID()
	for _, s := range spans {
		if s.SpanContext().TraceID() != tid {
			t.Errorf("span %q is in trace %s, the request's is %s", s.Name(), s.SpanContext().TraceID(), tid)
		}
	}
	tr := treeOf(spans)
	if httpSpan.SpanKind() != trace.SpanKindServer || httpSpan.Parent().IsValid() {
		t.Errorf("HTTP span: kind %v, parent %v; want a SERVER root", httpSpan.SpanKind(), httpSpan.Parent())
	}
	if got := attrString(httpSpan, tracing.HTTPStatus); got != "200" {
		t.Errorf("HTTP span status %q", got)
	}
	for _, k := range []attribute.Key{tracing.Request, tracing.Tenant} {
		if _, ok := attr(httpSpan, k); !ok {
			t.Errorf("HTTP span lacks %s", k)
		}
	}
	if got := attrString(httpSpan, tracing.Request); got != id {
		t.Errorf("HTTP span request %q, the response's id is %q", got, id)
	}

	gen := one(t, "generation", tr.named("chat traced"))
	if gen.SpanKind() != trace.SpanKindClient || tr.parent(gen) != httpSpan {
		t.Errorf("generation span: kind %v, parent %v", gen.SpanKind(), gen.Parent().SpanID())
	}
	if !hasEvent(gen, "first_token") {
		t.Error("generation span has no first_token event")
	}

	rgen := one(t, "router generate", tr.named("generate"))
	if rgen.SpanKind() != trace.SpanKindServer || tr.parent(rgen) != gen {
		t.Errorf("router span: kind %v, parent %v, want SERVER under the generation span %v", rgen.SpanKind(), rgen.Parent().SpanID(), gen.SpanContext().SpanID())
	}
	if attrString(rgen, tracing.Request) != id || attrString(rgen, tracing.Tenant) != "default" {
		t.Errorf("router span: request %q tenant %q", attrString(rgen, tracing.Request), attrString(rgen, tracing.Tenant))
	}
	if !hasEvent(rgen, "first_token") || !hasEvent(rgen, "admitted") {
		t.Errorf("router span events %v, want admitted and first_token", rgen.Events())
	}
	if _, ok := attr(rgen, tracing.GenAIFinish); !ok {
		t.Error("router span has no finish reason")
	}

	steps := tr.named("router.step")
	if len(steps) == 0 {
		t.Fatal("no step spans")
	}
	for _, s := range steps {
		if tr.parent(s) != rgen {
			t.Errorf("step span's parent %v, want the router span", s.Parent().SpanID())
		}
		if !slices.ContainsFunc(s.Links(), func(l sdktrace.Link) bool { return l.SpanContext.SpanID() == rgen.SpanContext().SpanID() }) {
			t.Errorf("step span links %v lack the request's span", s.Links())
		}
	}

	layers := tr.named("moe.layer")
	if len(layers) == 0 || len(layers)%len(steps) != 0 {
		t.Fatalf("%d MoE layer spans over %d steps", len(layers), len(steps))
	}
	for _, l := range layers {
		if p := tr.parent(l); p == nil || p.Name() != "router.step" {
			t.Errorf("layer span's parent is not a step")
		}
	}

	sends := tr.named("send ")
	if len(sends) < len(layers) {
		t.Fatalf("%d CLIENT spans for %d layer steps", len(sends), len(layers))
	}
	for _, s := range sends {
		if p := tr.parent(s); s.SpanKind() != trace.SpanKindClient || p == nil || p.Name() != "moe.layer" {
			t.Errorf("send span %q: kind %v, parent not a layer", s.Name(), s.SpanKind())
		}
		if attrString(s, tracing.MessagingSystem) != "nats" || attrString(s, tracing.Card) == "" ||
			attrString(s, tracing.Destination) != strings.TrimPrefix(s.Name(), "send ") {
			t.Errorf("send span %q attributes %v", s.Name(), s.Attributes())
		}
	}

	procs := tr.named("process ")
	if len(procs) != len(sends) {
		t.Errorf("%d daemon SERVER spans for %d sends", len(procs), len(sends))
	}
	cards := map[string]bool{}
	for _, p := range procs {
		parent := tr.parent(p)
		if p.SpanKind() != trace.SpanKindServer || parent == nil || !strings.HasPrefix(parent.Name(), "send ") {
			t.Errorf("daemon span %q: kind %v, parent not a send", p.Name(), p.SpanKind())
			continue
		}
		if attrString(p, tracing.Card) != attrString(parent, tracing.Card) {
			t.Errorf("daemon span on card %q under a send to %q", attrString(p, tracing.Card), attrString(parent, tracing.Card))
		}
		if attrString(p, tracing.Tenant) == "" {
			t.Error("daemon span has no tenant")
		}
		cards[attrString(p, tracing.Card)] = true
	}
	if len(cards) != 2 {
		t.Errorf("daemon spans on cards %v, want both daemons' cards", cards)
	}

	ops := tr.named("expert.compute")
	if len(ops) == 0 || len(ops) > len(procs) {
		t.Fatalf("%d compute spans for %d daemon spans", len(ops), len(procs))
	}
	for _, o := range ops {
		if p := tr.parent(o); p == nil || !strings.HasPrefix(p.Name(), "process ") {
			t.Errorf("compute span's parent is not a daemon span")
		}
		if v, _ := attr(o, tracing.Rows); v.AsInt64() <= 0 {
			t.Errorf("compute span rows %v", v.Emit())
		}
	}
	// Each computation's device ops: grouped matmul (gate+up, down) and SwiGLU, with shapes.
	for _, name := range []string{"op.grouped_matmul", "op.swiglu"} {
		devOps := tr.named(name)
		want := len(ops)
		if name == "op.grouped_matmul" {
			want *= 2
		}
		if len(devOps) != want {
			t.Errorf("%d %s spans for %d computations, want %d", len(devOps), name, len(ops), want)
		}
		for _, o := range devOps {
			if p := tr.parent(o); p == nil || p.Name() != "expert.compute" {
				t.Errorf("%s span's parent is not a compute span", name)
			}
			if v, _ := attr(o, tracing.OpOutShape); len(v.AsInt64Slice()) != 2 || attrString(o, tracing.Card) == "" {
				t.Errorf("%s span: out shape %v, card %q", name, v.Emit(), attrString(o, tracing.Card))
			}
		}
	}
	t.Logf("one trace: %d spans (%d steps, %d layer steps, %d card batches, %d computations)", len(spans), len(steps), len(layers), len(sends), len(ops))
}

// TestTraceDetailRequest: at the default detail a request costs three spans, and nothing
// reaches the daemons.
func TestTraceDetailRequest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sr := recordSpans(t)
	m := startTracedMesh(t, ctx, "plain", tracing.DetailRequest)
	m.chat(t, ctx, 3)
	spans := waitSpan(t, sr, "POST /v1/chat/completions")
	var names []string
	for _, s := range spans {
		names = append(names, s.Name())
	}
	slices.Sort(names)
	if want := []string{"POST /v1/chat/completions", "chat plain", "generate"}; !slices.Equal(names, want) {
		t.Fatalf("spans %v, want %v", names, want)
	}
}
