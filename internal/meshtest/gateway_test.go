package meshtest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/moemesh/moemesh/gateway"
	"github.com/moemesh/moemesh/gateway/tenant"
	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/router"
)

// fullMesh is gateway → router → expert daemons, all real, in one process.
type fullMesh struct {
	url    string
	router *stack.Router
	name   string
}

// startFullMesh runs daemons, one router (experts on the mesh) and the gateway with a
// tenants file holding keys "sk-<id>" for each id=weight in tenants.
func startFullMesh(t testing.TB, ec router.EngineConfig, ignoreEOS bool, tenants map[string]float64) *fullMesh {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dir := Checkpoint(t, "qwen3_moe", "bf16")
	name := fmt.Sprintf("full-%d", time.Now().UnixNano())
	st, err := stack.Start(ctx, stack.Config{ModelDir: dir, Model: name, Daemons: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rnc, err := st.Connect(ctx, "router")
	if err != nil {
		t.Fatal(err)
	}
	rt, err := stack.NewRouter(ctx, stack.RouterConfig{ModelDir: dir, Model: name, Conn: rnc, Engine: ec, IgnoreEOS: ignoreEOS})
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	served := make(chan error, 1)
	rctx, stopRouter := context.WithCancel(context.Background())
	go func() {
		served <- router.Serve(rctx, router.ServiceConfig{ID: "r1", Model: name, Conn: rnc, Engine: rt.Engine, Ready: ready, Drain: time.Second})
	}()
	t.Cleanup(func() { stopRouter(); <-served; rt.Close() })
	select {
	case <-ready:
	case err := <-served:
		t.Fatal(err)
	}

	var yaml strings.Builder
	yaml.WriteString("tenants:\n")
	for id, w := range tenants {
		fmt.Fprintf(&yaml, "  - id: %s\n    api_keys: [%q]\n    weight: %g\n", id, tenant.HashKey("sk-"+id), w)
	}
	path := filepath.Join(t.TempDir(), "tenants.yaml")
	if err := os.WriteFile(path, []byte(yaml.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	store, err := tenant.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	gnc, err := st.Connect(ctx, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Models: []gateway.Model{{Name: name, Dir: dir}}, Tenants: store,
		Collectors: []prometheus.Collector{router.NewCollector(rt.Engine, nil)}}, gnc)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gctx, stopGateway := context.WithCancel(ctx)
	gwDone := make(chan error, 1)
	go func() { gwDone <- gw.Serve(gctx, ln) }()
	t.Cleanup(func() { stopGateway(); <-gwDone })
	return &fullMesh{url: "http://" + ln.Addr().String(), router: rt, name: name}
}

func (f *fullMesh) client(tenantID string) openai.Client {
	return openai.NewClient(option.WithBaseURL(f.url+"/v1/"), option.WithAPIKey("sk-"+tenantID), option.WithMaxRetries(0),
		option.WithRequestTimeout(time.Minute))
}

// TestGatewayOverRealMesh: the official OpenAI SDK against gateway, router and daemons:
// a seeded sampled chat streams exactly the text of its non-streamed twin; a stop string
// cuts the text before it with finish_reason stop; usage counts agree with the router's.
func TestGatewayOverRealMesh(t *testing.T) {
	f := startFullMesh(t, router.EngineConfig{}, true, map[string]float64{"acme": 1})
	c := f.client("acme")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	params := openai.ChatCompletionNewParams{Model: f.name, MaxTokens: openai.Int(24), Seed: openai.Int(11),
		Temperature: openai.Float(0.9), TopP: openai.Float(0.95),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell the mesh a story about 专家.")}}
	whole, err := c.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	text := whole.Choices[0].Message.Content
	if whole.Choices[0].FinishReason != "length" || whole.Usage.CompletionTokens != 24 || text == "" {
		t.Fatalf("whole: finish %q usage %+v text %q", whole.Choices[0].FinishReason, whole.Usage, text)
	}
	stream := c.Chat.Completions.NewStreaming(ctx, params)
	var sb strings.Builder
	for stream.Next() {
		if ch := stream.Current(); len(ch.Choices) > 0 {
			sb.WriteString(ch.Choices[0].Delta.Content)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if sb.String() != text {
		t.Fatalf("streamed %q, whole %q", sb.String(), text)
	}

	// A stop string from the middle of the text: the answer is the text before it.
	runes := []rune(text)
	stop := string(runes[len(runes)/2 : len(runes)/2+2])
	params.Stop = openai.ChatCompletionNewParamsStopUnion{OfString: openai.String(stop)}
	cut, err := c.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if want := text[:strings.Index(text, stop)]; cut.Choices[0].Message.Content != want || cut.Choices[0].FinishReason != "stop" {
		t.Fatalf("stop %q: %q (%s), want %q", stop, cut.Choices[0].Message.Content, cut.Choices[0].FinishReason, want)
	}
}

// TestGatewayDisconnectFreesKV: a client that goes away mid-stream cancels its generation
// at the router within a step: the sequence leaves, its KV cache returns to the pool, and
// the router's metrics show it.
func TestGatewayDisconnectFreesKV(t *testing.T) {
	f := startFullMesh(t, router.EngineConfig{}, true, map[string]float64{"acme": 1})
	c := f.client("acme")
	ctx, cancel := context.WithCancel(context.Background())
	stream := c.Completions.NewStreaming(ctx, openai.CompletionNewParams{Model: openai.CompletionNewParamsModel(f.name),
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")}, MaxTokens: openai.Int(3000)})
	for n := 0; n < 3 && stream.Next(); n++ {
	}
	if st := f.router.Engine.Stats(); st.Resident != 1 || st.KV.InUse == 0 {
		t.Fatalf("while streaming: %+v", st)
	}
	cancel()
	stream.Close()
	WaitFor(t, 10*time.Second, func() error {
		if st := f.router.Engine.Stats(); st.Resident != 0 || st.KV.InUse != 0 || st.KV.Reserved != 0 || st.Finished["cancelled"] != 1 {
			return fmt.Errorf("after disconnect: resident %d, kv %+v, finished %v", st.Resident, st.KV, st.Finished)
		}
		return nil
	})
	resp, err := http.Get(f.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := readAll(t, resp)
	for _, want := range []string{`moemesh_router_kv_bytes{state="in_use"} 0`, `moemesh_router_resident_sequences 0`, `moemesh_router_finished_total{reason="cancelled"} 1`} {
		if !strings.Contains(body, want) {
			t.Fatalf("metrics lack %s", want)
		}
	}
}

func readAll(t testing.TB, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
