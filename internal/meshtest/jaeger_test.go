package meshtest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/model"
)

// jaegerBinary is the Jaeger all-in-one binary named by MOEMESH_JAEGER (make test-trace builds
// bin/jaeger from tools/jaeger and sets it). Without it the test skips, except where it must
// run: under CI or MOEMESH_REQUIRE_JAEGER it fails instead, so CI cannot pass without it.
func jaegerBinary(t *testing.T) string {
	t.Helper()
	p := os.Getenv("MOEMESH_JAEGER")
	required := os.Getenv("CI") != "" || os.Getenv("MOEMESH_REQUIRE_JAEGER") != ""
	if p == "" {
		if required {
			t.Fatal("MOEMESH_JAEGER is not set but CI or MOEMESH_REQUIRE_JAEGER is: run `make test-trace`, or `make bin/jaeger` and MOEMESH_JAEGER=$PWD/bin/jaeger")
		}
		t.Skip("MOEMESH_JAEGER not set (`make test-trace` builds bin/jaeger and sets it)")
	}
	if !filepath.IsAbs(p) {
		root, err := moduleRoot()
		if err != nil {
			t.Fatal(err)
		}
		p = filepath.Join(root, p)
	}
	if fi, err := os.Stat(p); err != nil || fi.IsDir() {
		t.Fatalf("MOEMESH_JAEGER=%s: not a binary (%v); `make bin/jaeger` builds it", p, err)
	}
	return p
}

// moduleRoot is the directory of the go.mod above the working directory, so a relative
// MOEMESH_JAEGER means the same thing in every package's test.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", errors.New("module root: no go.mod above the working directory")
		}
		dir = up
	}
}

// jaegerConfig is a Jaeger v2 (OpenTelemetry collector) configuration: OTLP receivers, an
// in-memory store and the query service, every listener on a port the test chose, nothing on
// Jaeger's fixed default ports (other tests and helpers share the machine).
const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 10000
  jaeger_query:
    # On by default: the query service would trace itself to localhost:4317.
    enable_tracing: false
    storage:
      traces: mem
    http:
      endpoint: %q
    grpc:
      endpoint: %q
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %q
      http:
        endpoint: %q
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
`

// jaeger is a running Jaeger all-in-one.
type jaeger struct {
	query, otlpHTTP, otlpGRPC string // host:port
}

func startJaeger(t *testing.T) *jaeger {
	t.Helper()
	bin := jaegerBinary(t)
	j := &jaeger{query: freeAddr(t), otlpHTTP: freeAddr(t), otlpGRPC: freeAddr(t)}
	cfg := filepath.Join(t.TempDir(), "jaeger.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, jaegerConfig, j.query, freeAddr(t), j.otlpGRPC, j.otlpHTTP), 0o644); err != nil {
		t.Fatal(err)
	}
	startProc(t, "jaeger", exec.Command(bin, "--config", cfg))
	WaitFor(t, time.Minute, func() error {
		_, err := getJSON(context.Background(), "http://"+j.query+"/api/services", nil)
		return err
	})
	return j
}

// proc is a child process the test stops at cleanup: SIGTERM, then SIGKILL after a bound.
type proc struct {
	name   string
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
	err    error // Wait's result, once exited is closed
}

func startProc(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{name: name, cmd: cmd, out: &syncBuffer{}, exited: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = p.out
	}
	cmd.Stderr = p.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		if err := p.stop(15 * time.Second); err != nil {
			t.Logf("%s: %v", name, err)
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits up to grace for the exit (SIGKILL after that); it returns
// the process's exit error, or an error saying it had to be killed.
func (p *proc) stop(grace time.Duration) error {
	select {
	case <-p.exited:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.err
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("did not stop within %v of SIGTERM; killed", grace)
	}
}

// getJSON GETs url and decodes a 200 response's JSON body into out (nil: only the status).
func getJSON(ctx context.Context, url string, out any) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("GET %s: %s: %.200s", url, resp.Status, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return resp.StatusCode, fmt.Errorf("GET %s: %w", url, err)
		}
	}
	return resp.StatusCode, nil
}

// jaegerTrace is the part of Jaeger's /api/traces/{id} answer the test reads.
type jaegerTrace struct {
	TraceID string `json:"traceID"`
	Spans   []struct {
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		ProcessID     string `json:"processID"`
		References    []struct {
			RefType string `json:"refType"`
			TraceID string `json:"traceID"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
		Tags []struct {
			Key   string `json:"key"`
			Value any    `json:"value"`
		} `json:"tags"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

// jspan is one span of a Jaeger trace with its service and parent resolved.
type jspan struct {
	id, name, service, parent string
	tags                      map[string]string
}

func (tr *jaegerTrace) index() map[string]*jspan {
	out := map[string]*jspan{}
	for _, s := range tr.Spans {
		js := &jspan{id: s.SpanID, name: s.OperationName, service: tr.Processes[s.ProcessID].ServiceName, tags: map[string]string{}}
		// A span both child of and linked to one span (a step of a single request) comes
		// back from Jaeger with one FOLLOWS_FROM reference: Jaeger keeps one reference per
		// span. CHILD_OF wins when both kinds are there.
		for _, r := range s.References {
			if r.RefType == "CHILD_OF" || (r.RefType == "FOLLOWS_FROM" && js.parent == "") {
				js.parent = r.SpanID
			}
		}
		for _, kv := range s.Tags {
			js.tags[kv.Key] = fmt.Sprint(kv.Value)
		}
		out[js.id] = js
	}
	return out
}

// checkJaegerTrace checks that the trace holds the whole request: the gateway's HTTP span
// under the caller's span, its generation span, the router's generate span under it, steps,
// MoE layers and card sends below that, and under every send the daemon's span on that card,
// with both daemons present. It returns what is missing (the trace may still be arriving).
func checkJaegerTrace(tr *jaegerTrace, callerSpan, model string) error {
	spans := tr.index()
	named := func(service, prefix string) []*jspan {
		var out []*jspan
		for _, s := range spans {
			if s.service == service && strings.HasPrefix(s.name, prefix) {
				out = append(out, s)
			}
		}
		return out
	}
	one := func(service, name string) (*jspan, error) {
		ss := named(service, name)
		if len(ss) != 1 {
			return nil, fmt.Errorf("%d %s spans %q, want 1", len(ss), service, name)
		}
		return ss[0], nil
	}
	httpSpan, err := one("moemesh-gateway", "POST /v1/chat/completions")
	if err != nil {
		return err
	}
	if httpSpan.parent != callerSpan {
		return fmt.Errorf("gateway HTTP span's parent %q, want the caller's span %s", httpSpan.parent, callerSpan)
	}
	gen, err := one("moemesh-gateway", "chat "+model)
	if err != nil {
		return err
	}
	if gen.parent != httpSpan.id {
		return fmt.Errorf("generation span's parent %q, want the HTTP span %s", gen.parent, httpSpan.id)
	}
	rgen, err := one("moemesh-router", "generate")
	if err != nil {
		return err
	}
	if rgen.parent != gen.id {
		return fmt.Errorf("router generate span's parent %q, want the gateway's generation span %s", rgen.parent, gen.id)
	}
	if rgen.tags["moe.request"] == "" || rgen.tags["moe.request"] != httpSpan.tags["moe.request"] {
		return fmt.Errorf("request ids: router %q, gateway %q", rgen.tags["moe.request"], httpSpan.tags["moe.request"])
	}
	// Below the router span: step → MoE layer → send (CLIENT, one per card batch).
	chain := map[string]string{"router.step": "generate", "moe.layer": "router.step", "send ": "moe.layer"}
	for child, parent := range chain {
		kids := named("moemesh-router", child)
		if len(kids) == 0 {
			return fmt.Errorf("no router spans %q", child)
		}
		for _, k := range kids {
			if p := spans[k.parent]; p == nil || !strings.HasPrefix(p.name, parent) {
				return fmt.Errorf("router span %q (%s) is not under a %q span", k.name, k.id, parent)
			}
		}
	}
	sends := named("moemesh-router", "send ")
	procs := named("moemesh-expertd", "process ")
	if len(procs) != len(sends) {
		return fmt.Errorf("%d expertd spans for %d router sends", len(procs), len(sends))
	}
	cards := map[string]bool{}
	for _, p := range procs {
		send := spans[p.parent]
		if send == nil || send.service != "moemesh-router" || !strings.HasPrefix(send.name, "send ") {
			return fmt.Errorf("expertd span %q (%s) is not under a router send span", p.name, p.id)
		}
		if p.tags["moe.card"] == "" || p.tags["moe.card"] != send.tags["moe.card"] {
			return fmt.Errorf("expertd span on card %q under a send to card %q", p.tags["moe.card"], send.tags["moe.card"])
		}
		cards[p.tags["moe.card"]] = true
	}
	if len(cards) != 2 {
		return fmt.Errorf("expertd spans from cards %v, want both daemons'", cards)
	}
	return nil
}

// TestJaegerEndToEnd runs the real binaries (nats, two expert daemons, a router at detail
// layer, the gateway) exporting over OTLP (HTTP from gateway and router, gRPC from the
// daemons) to a real Jaeger, sends one chat request with the OpenAI SDK carrying a
// traceparent, stops the services and then finds the request's trace through Jaeger's HTTP
// API, spanning the three services with the right parent links. The services' periodic
// export is pushed past the test's lifetime, so the trace reaching Jaeger also shows that
// every service flushes its spans when it stops.
func TestJaegerEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs the binaries")
	}
	jg := startJaeger(t)
	bin := Binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	natsCmd := exec.Command(bin, "nats", "--port", "-1", "--log-level", "warn")
	stdout, err := natsCmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	startProc(t, "nats", natsCmd)
	urlc := make(chan string, 1)
	go func() { // ends when the process's stdout closes
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			urlc <- sc.Text()
		}
		close(urlc)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	var natsURL string
	select {
	case natsURL = <-urlc:
	case <-time.After(30 * time.Second):
		t.Fatal("moemesh nats printed no URL")
	}
	if natsURL == "" {
		t.Fatal("moemesh nats exited without a URL")
	}

	dir := Checkpoint(t, "qwen3_moe", "bf16")
	const name = "jaeger"
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	otel := func(service, proto, endpoint string) []string {
		return append(os.Environ(), "OTEL_SERVICE_NAME="+service, "OTEL_TRACES_EXPORTER=otlp",
			"OTEL_EXPORTER_OTLP_PROTOCOL="+proto, "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+endpoint,
			"OTEL_TRACES_SAMPLER=parentbased_always_on", "OTEL_TRACES_SAMPLER_ARG=",
			"OTEL_BSP_SCHEDULE_DELAY=600000", "OTEL_SDK_DISABLED=")
	}
	common := []string{"--nats", natsURL, "--model", dir, "--name", name, "--log-level", "warn"}
	var services []*proc
	for i, set := range stack.Spread(cfg.Experts, 2, 0) {
		var ids []string
		for _, e := range set {
			ids = append(ids, fmt.Sprint(e))
		}
		c := exec.Command(bin, append([]string{"expertd", "--id", fmt.Sprint("jd", i), "--experts", strings.Join(ids, ","), "--heartbeat", "200ms"}, common...)...)
		c.Env = otel("moemesh-expertd", "grpc", jg.otlpGRPC)
		services = append(services, startProc(t, fmt.Sprint("expertd ", i), c))
	}
	rc := exec.Command(bin, append([]string{"router", "--id", "jr", "--trace-detail", "layer"}, common...)...)
	rc.Env = otel("moemesh-router", "http/protobuf", jg.otlpHTTP)
	services = append(services, startProc(t, "router", rc))
	gwAddr := freeAddr(t)
	gc := exec.Command(bin, append([]string{"gateway", "--addr", gwAddr}, common...)...)
	gc.Env = otel("moemesh-gateway", "http/protobuf", jg.otlpHTTP)
	services = append(services, startProc(t, "gateway", gc))
	WaitFor(t, 2*time.Minute, func() error {
		_, err := getJSON(ctx, "http://"+gwAddr+"/readyz", nil)
		return err
	})

	var tid, sid [16]byte
	_, _ = rand.Read(tid[:])
	_, _ = rand.Read(sid[:8])
	traceID, callerSpan := hex.EncodeToString(tid[:]), hex.EncodeToString(sid[:8])
	client := openai.NewClient(option.WithBaseURL("http://"+gwAddr+"/v1/"), option.WithAPIKey("sk-none"),
		option.WithMaxRetries(0), option.WithRequestTimeout(time.Minute),
		option.WithHeader("traceparent", "00-"+traceID+"-"+callerSpan+"-01"))
	resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:     name,
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Where did the time go?")},
		MaxTokens: openai.Int(3),
	})
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	if resp.Usage.CompletionTokens == 0 {
		t.Fatalf("chat generated nothing: %+v", resp.Usage)
	}

	// Gateway first, daemons last: each flushes its spans as it stops.
	for _, p := range slices.Backward(services) {
		if err := p.stop(30 * time.Second); err != nil {
			t.Fatalf("%s on SIGTERM: %v\n%s", p.name, err, p.out.String())
		}
	}

	var tr jaegerTrace
	t.Cleanup(func() {
		if t.Failed() {
			for _, s := range tr.Spans {
				t.Logf("span %s %q in %s, references %+v", s.SpanID, s.OperationName, tr.Processes[s.ProcessID].ServiceName, s.References)
			}
		}
	})
	WaitFor(t, 30*time.Second, func() error {
		var out struct {
			Data []jaegerTrace `json:"data"`
		}
		if _, err := getJSON(ctx, "http://"+jg.query+"/api/traces/"+traceID, &out); err != nil {
			return err
		}
		if len(out.Data) != 1 {
			return fmt.Errorf("%d traces for id %s", len(out.Data), traceID)
		}
		tr = out.Data[0]
		return checkJaegerTrace(&tr, callerSpan, name)
	})
	perService := map[string]int{}
	for _, s := range tr.index() {
		perService[s.service]++
	}
	t.Logf("trace %s in Jaeger: %d spans %v", traceID, len(tr.Spans), perService)
}

// TestCheckJaegerTrace: the trace check passes a complete trace and names what is wrong
// with a broken one, so the end-to-end test cannot pass vacuously.
func TestCheckJaegerTrace(t *testing.T) {
	type sp struct{ id, name, proc, parent, card, req string }
	build := func(spans []sp) *jaegerTrace {
		tr := &jaegerTrace{Processes: map[string]struct {
			ServiceName string `json:"serviceName"`
		}{"g": {"moemesh-gateway"}, "r": {"moemesh-router"}, "d1": {"moemesh-expertd"}, "d2": {"moemesh-expertd"}}}
		for _, s := range spans {
			var js struct {
				SpanID        string `json:"spanID"`
				OperationName string `json:"operationName"`
				ProcessID     string `json:"processID"`
				References    []struct {
					RefType string `json:"refType"`
					TraceID string `json:"traceID"`
					SpanID  string `json:"spanID"`
				} `json:"references"`
				Tags []struct {
					Key   string `json:"key"`
					Value any    `json:"value"`
				} `json:"tags"`
			}
			raw := fmt.Sprintf(`{"spanID":%q,"operationName":%q,"processID":%q,"references":[{"refType":"CHILD_OF","spanID":%q}],"tags":[{"key":"moe.card","value":%q},{"key":"moe.request","value":%q}]}`,
				s.id, s.name, s.proc, s.parent, s.card, s.req)
			if err := json.Unmarshal([]byte(raw), &js); err != nil {
				t.Fatal(err)
			}
			tr.Spans = append(tr.Spans, js)
		}
		return tr
	}
	good := []sp{
		{"h", "POST /v1/chat/completions", "g", "caller", "", "r1"},
		{"c", "chat m", "g", "h", "", "r1"},
		{"gen", "generate", "r", "c", "", "r1"},
		{"st", "router.step", "r", "gen", "", ""},
		{"l", "moe.layer", "r", "st", "", ""},
		{"s1", "send moe.m.x", "r", "l", "card1", ""},
		{"s2", "send moe.m.y", "r", "l", "card2", ""},
		{"p1", "process moe.m.x", "d1", "s1", "card1", ""},
		{"p2", "process moe.m.y", "d2", "s2", "card2", ""},
	}
	edit := func(i int, f func(*sp)) []sp {
		out := slices.Clone(good)
		f(&out[i])
		return out
	}
	for _, tc := range []struct {
		name  string
		spans []sp
		want  string // "" passes
	}{
		{"whole trace", good, ""},
		{"HTTP span not under the caller", edit(0, func(s *sp) { s.parent = "other" }), "caller's span"},
		{"router span orphaned", edit(2, func(s *sp) { s.parent = "h" }), "generation span"},
		{"request ids differ", edit(2, func(s *sp) { s.req = "r2" }), "request ids"},
		{"layer under generate", edit(4, func(s *sp) { s.parent = "gen" }), "router.step"},
		{"daemon span on another card", edit(8, func(s *sp) { s.card = "card1" }), "under a send to card"},
		{"one daemon missing", good[:8], "expertd spans for"},
		{"daemon span in the router's service", edit(8, func(s *sp) { s.proc = "r" }), "expertd spans for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkJaegerTrace(build(tc.spans), "caller", "m")
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
