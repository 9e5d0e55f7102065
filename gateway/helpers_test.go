package gateway

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/moemesh/moemesh/gateway/tenant"
	"github.com/moemesh/moemesh/internal/meshtest"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model/chat"
	"github.com/moemesh/moemesh/model/tokenizer"
	"github.com/moemesh/moemesh/proto"
)

func TestMain(m *testing.M) {
	var mu sync.Mutex
	cache := map[string]*served{}
	load = func(m Model) (*served, error) {
		mu.Lock()
		defer mu.Unlock()
		if s, ok := cache[m.Dir]; ok {
			return s, nil
		}
		s, err := loadModel(m)
		if err == nil {
			cache[m.Dir] = s
		}
		return s, err
	}
	code := m.Run()
	if modelDir != "" {
		os.RemoveAll(modelDir)
	}
	meshtest.Cleanup()
	os.Exit(code)
}

var (
	modelOnce sync.Once
	modelDir  string
)

// testModelDir returns a model directory, built once per test binary, with the real Qwen3
// tokenizer and chat template beside a synthetic checkpoint's config.json (the gateway
// needs no weights).
func testModelDir(t *testing.T) string {
	t.Helper()
	modelOnce.Do(func() { modelDir = buildModelDir(t) })
	if modelDir == "" {
		t.Fatal("no test model directory (see the first test's failure)")
	}
	return modelDir
}

func buildModelDir(t *testing.T) string {
	ck := meshtest.Checkpoint(t, "qwen3_moe", "bf16")
	dir, err := os.MkdirTemp("", "moemesh-gw-model-")
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, filepath.Join(ck, "config.json"), filepath.Join(dir, "config.json"), false)
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
		copyFile(t, filepath.Join("..", "model", "tokenizer", "testdata", "qwen3", f+".gz"), filepath.Join(dir, f), true)
	}
	copyFile(t, filepath.Join("..", "model", "chat", "testdata", "qwen3.jinja"), filepath.Join(dir, chat.TemplateFile), false)
	if err := os.WriteFile(filepath.Join(dir, chat.GenerationConfigFile), []byte(`{"eos_token_id": [151645, 151643]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func copyFile(t *testing.T, from, to string, gz bool) {
	t.Helper()
	f, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if gz {
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Behaviours of the fake router.
const (
	echo   = iota // echo the prompt's tokens (rotated by the seed) up to max tokens
	silent        // accept, then never send an event
	first         // accept, send one event, then nothing (until cancelled)
	reject        // answer a service error: 429, the tenant's queue is full
)

// fakeRouter stands in for package router: it takes GenerateRequests of one model in the
// routers' queue group and records the cancels it receives.
type fakeRouter struct {
	t     *testing.T
	nc    *nats.Conn
	tok   *tokenizer.Tokenizer
	model string
	mode  int

	mu      sync.Mutex
	cancels []string
	reqs    []proto.GenerateRequest
}

func startRouter(t *testing.T, url, model string, tok *tokenizer.Tokenizer, mode int) *fakeRouter {
	t.Helper()
	nc := connect(t, url)
	fr := &fakeRouter{t: t, nc: nc, tok: tok, model: model, mode: mode}
	if _, err := nc.QueueSubscribe(proto.GenSubject(model), proto.QueueRouters, fr.onGen); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe(proto.CancelSubject(model, "fake-"+proto.Token(model)), func(m *nats.Msg) {
		fr.mu.Lock()
		defer fr.mu.Unlock()
		fr.cancels = append(fr.cancels, string(m.Data))
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return fr
}

func (fr *fakeRouter) onGen(m *nats.Msg) {
	var req proto.GenerateRequest
	if err := proto.DecodeGenerateRequest(m.Data, &req); err != nil {
		fr.t.Errorf("fake router: %v", err)
		_ = m.RespondMsg(errMsg(m, proto.CodeBadRequest, err.Error()))
		return
	}
	if m.Header.Get(proto.HeaderTenant) != req.Tenant || m.Header.Get(proto.HeaderRequest) != req.ID || m.Header.Get(proto.HeaderDeadline) == "" {
		fr.t.Errorf("fake router: headers %v do not match request %s of tenant %s", m.Header, req.ID, req.Tenant)
	}
	fr.mu.Lock()
	fr.reqs = append(fr.reqs, req)
	fr.mu.Unlock()
	if fr.mode == reject {
		_ = m.RespondMsg(errMsg(m, proto.CodeTooMany, "queue full"))
		return
	}
	acc, _ := proto.Marshal(&proto.GenerateAccepted{V: proto.Version, ID: req.ID, Router: "fake-" + proto.Token(fr.model)})
	if err := m.Respond(acc); err != nil {
		fr.t.Errorf("fake router: %v", err)
		return
	}
	switch fr.mode {
	case silent:
		return
	case first:
		fr.send(req.Inbox, &proto.TokenEvent{ID: req.ID, Seq: 0, Tokens: proto.I32s{req.Prompt[0]}, Text: "x"})
		return
	}
	// Echo: token i is the prompt's token (i + seed) mod len, one event per token.
	dec := tokenizer.NewDecoderSkipSpecial(fr.tok)
	n := int(req.MaxTokens)
	for i := range n {
		id := req.Prompt[(i+int(req.Sampling.Seed%uint64(len(req.Prompt))))%len(req.Prompt)]
		text, err := dec.Add(id)
		if err != nil {
			fr.t.Errorf("fake router: %v", err)
		}
		ev := &proto.TokenEvent{ID: req.ID, Seq: uint32(i), Tokens: proto.I32s{id}, Text: text}
		if i == n-1 {
			ev.Text += dec.Flush()
			ev.Finish, ev.Usage = proto.FinishLength, proto.Usage{Prompt: int32(len(req.Prompt)), Completion: int32(n)}
		}
		fr.send(req.Inbox, ev)
	}
}

func (fr *fakeRouter) send(inbox string, ev *proto.TokenEvent) {
	ev.V = proto.Version
	b, err := proto.Marshal(ev)
	if err != nil {
		fr.t.Errorf("fake router: %v", err)
		return
	}
	if err := fr.nc.Publish(inbox, b); err != nil {
		fr.t.Errorf("fake router: %v", err)
	}
}

func errMsg(m *nats.Msg, code proto.Code, desc string) *nats.Msg {
	r := nats.NewMsg(m.Reply)
	r.Header.Set(proto.HeaderErrorCode, strconv.Itoa(int(code)))
	r.Header.Set(proto.HeaderError, desc)
	return r
}

func (fr *fakeRouter) cancelled(id string) bool {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	return slices.Contains(fr.cancels, id)
}

func (fr *fakeRouter) requests() []proto.GenerateRequest {
	fr.mu.Lock()
	defer fr.mu.Unlock()
	return slices.Clone(fr.reqs)
}

func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, err := mesh.Connect(ctx, url, t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// env is a gateway over an embedded NATS server with fake routers for models "tiny"
// (echo), "silent" and "slow" (first); model "idle" has no router.
type env struct {
	url     string // http://host:port
	dir     string
	tok     *tokenizer.Tokenizer
	tmpl    *chat.Template
	tiny    *fakeRouter
	slow    *fakeRouter
	natsURL string
	svc     micro.Service
	g       *Gateway
	http    *http.Client
}

// syncBuffer is a bytes.Buffer safe for the gateway's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const tenantsYAML = `tenants:
  - id: alice
    api_keys: ["%s"]
    weight: 2
  - id: bob
    api_keys: ["%s"]
    models: [other]
  - id: limited
    api_keys: ["%s"]
    priority: batch
    limits: {requests_per_minute: 1}
  - id: small
    api_keys: ["%s"]
    limits: {max_prompt_tokens: 5, max_tokens: 50}
  - id: solo
    api_keys: ["%s"]
    limits: {max_concurrent: 1}
  - id: thrifty
    api_keys: ["%s"]
    limits: {tokens_per_minute: 10}
`

func startEnv(t *testing.T, tenantsFile string) *env {
	t.Helper()
	srv, err := mesh.StartServer(mesh.ServerConfig{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	e := &env{dir: testModelDir(t), natsURL: srv.ClientURL()}
	// Logs go to a buffer that fails the test if a handler panicked (net/http would only
	// log it and drop the connection); with -v they are shown as well.
	logs := &syncBuffer{}
	var out io.Writer = logs
	if testing.Verbose() {
		out = io.MultiWriter(logs, os.Stderr)
	}
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if strings.Contains(logs.String(), "panic") {
			t.Errorf("the gateway panicked:\n%s", logs.String())
		}
	})
	// Each env has its own HTTP transport: a pooled connection to an earlier test's server
	// on a reused port would otherwise break a POST.
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	e.http = &http.Client{Transport: tr}
	store, err := tenant.Load(tenantsFile, log)
	if err != nil {
		t.Fatal(err)
	}
	var models []Model
	for _, n := range []string{"tiny", "silent", "slow", "idle", "busy"} {
		models = append(models, Model{Name: n, Dir: e.dir})
	}
	e.g, err = New(Config{Models: models, Tenants: store, TenantsPoll: 10 * time.Millisecond,
		IdleTimeout: 300 * time.Millisecond, AcceptTimeout: 2 * time.Second, Logger: log}, connect(t, e.natsURL))
	if err != nil {
		t.Fatal(err)
	}
	e.tok, e.tmpl = e.g.models["tiny"].tok, e.g.models["tiny"].tmpl
	e.tiny = startRouter(t, e.natsURL, "tiny", e.tok, echo)
	startRouter(t, e.natsURL, "silent", e.tok, silent)
	e.slow = startRouter(t, e.natsURL, "slow", e.tok, first)
	startRouter(t, e.natsURL, "busy", e.tok, reject)
	if e.svc, err = micro.AddService(e.tiny.nc, micro.Config{Name: DefaultRouterService, Version: "0.0.1"}); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.url = "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.g.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return within 10s of its context ending")
		}
	})
	return e
}
