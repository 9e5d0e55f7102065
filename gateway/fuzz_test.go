package gateway

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/moemesh/moemesh/gateway/tenant"
	"github.com/moemesh/moemesh/internal/meshtest"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model/chat"
	"github.com/moemesh/moemesh/proto"
)

// FuzzDecodeBody: any body gives a request or a 400/413 error object naming what is
// wrong, never a panic.
func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":["a"],"max_tokens":3}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
		`{"model":"m","prompt":[[1,2,3]],"stop":"x"}`, `{"prompt":["a","b"]}`, `{"prompt":[1,"a"]}`,
		`[]`, `null`, `{"stream":"yes"}`, `{"messages":[{"content":{}}]}`, "{\"model\":\"\xff\"}",
		`{"max_tokens":1e400}`, `{"seed":-9223372036854775809}`, `{"a":` + strings.Repeat("[", 10001),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, v := range []any{&chatRequest{}, &completionRequest{}} {
			r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
			e := decodeBody(httptest.NewRecorder(), r, 1<<16, v)
			switch {
			case e == nil:
			case e.Status != 400 && e.Status != 413:
				t.Errorf("status %d for %q", e.Status, body)
			case e.Message == "" || e.Type != "invalid_request_error":
				t.Errorf("error %+v says nothing", e)
			}
		}
	})
}

// fuzzLimit is the fuzz gateway's MaxBodyBytes: small, so the fuzzer reaches 413.
const fuzzLimit = 8 << 10

// fuzzEnv is a gateway serving models "tiny" (a router that answers every request with one
// final event), "busy" (a router answering 429) and "idle" (no router), over an embedded
// NATS server, for fuzz targets and tests that need a testing.TB rather than startEnv's
// *testing.T. Tenants: alice (no limits) and small (max_prompt_tokens 5, max_tokens 50).
type fuzzEnv struct {
	g   *Gateway
	bad chan string // requests the fake router could not decode: the gateway sent them
}

func newFuzzEnv(tb testing.TB, maxBody int64) *fuzzEnv {
	tb.Helper()
	srv, err := mesh.StartServer(mesh.ServerConfig{Port: -1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Shutdown)
	modelOnce.Do(func() { modelDir = buildModelDirTB(tb) })
	if modelDir == "" {
		tb.Fatal("no test model directory")
	}
	path := filepath.Join(tb.TempDir(), "tenants.yaml")
	yaml := fmt.Sprintf("tenants:\n  - id: alice\n    api_keys: [%q]\n  - id: small\n    api_keys: [%q]\n    limits: {max_prompt_tokens: 5, max_tokens: 50}\n",
		tenant.HashKey(keyAlice), tenant.HashKey(keySmall))
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	store, err := tenant.Load(path, log)
	if err != nil {
		tb.Fatal(err)
	}
	dial := func(name string) *nats.Conn {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		nc, err := mesh.Connect(ctx, srv.ClientURL(), name)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(nc.Close)
		return nc
	}
	e := &fuzzEnv{bad: make(chan string, 1)}
	var models []Model
	for _, n := range []string{"tiny", "busy", "idle"} {
		models = append(models, Model{Name: n, Dir: modelDir})
	}
	e.g, err = New(Config{Models: models, Tenants: store, MaxBodyBytes: maxBody, AcceptTimeout: 5 * time.Second, RouterWait: -1,
		IdleTimeout: 5 * time.Second, Logger: log}, dial("gateway"))
	if err != nil {
		tb.Fatal(err)
	}
	rnc := dial("router")
	if _, err := rnc.QueueSubscribe(proto.GenSubject("tiny"), proto.QueueRouters, e.answer(rnc)); err != nil {
		tb.Fatal(err)
	}
	if _, err := rnc.QueueSubscribe(proto.GenSubject("busy"), proto.QueueRouters, func(m *nats.Msg) {
		_ = m.RespondMsg(errMsg(m, proto.CodeTooMany, "queue full"))
	}); err != nil {
		tb.Fatal(err)
	}
	if err := rnc.Flush(); err != nil {
		tb.Fatal(err)
	}
	return e
}

// answer accepts a request and finishes it with one event holding its first prompt token.
func (e *fuzzEnv) answer(nc *nats.Conn) nats.MsgHandler {
	return func(m *nats.Msg) {
		var req proto.GenerateRequest
		if err := proto.DecodeGenerateRequest(m.Data, &req); err != nil {
			select {
			case e.bad <- err.Error():
			default:
			}
			_ = m.RespondMsg(errMsg(m, proto.CodeOf(err), err.Error()))
			return
		}
		acc, _ := proto.Marshal(&proto.GenerateAccepted{V: proto.Version, ID: req.ID, Router: "fuzz"})
		if err := m.Respond(acc); err != nil {
			return // the gateway's accept timeout reports it
		}
		ev, _ := proto.Marshal(&proto.TokenEvent{V: proto.Version, ID: req.ID, Tokens: proto.I32s{req.Prompt[0]}, Text: "ok",
			Finish: proto.FinishLength, Usage: proto.Usage{Prompt: int32(len(req.Prompt)), Completion: 1}})
		_ = nc.Publish(req.Inbox, ev)
	}
}

// buildModelDirTB is buildModelDir for a testing.TB (a fuzz target's F).
func buildModelDirTB(tb testing.TB) string {
	ck := meshtest.Checkpoint(tb, "qwen3_moe", "bf16")
	dir, err := os.MkdirTemp("", "moemesh-gw-model-")
	if err != nil {
		tb.Fatal(err)
	}
	put := func(from, to string, gz bool) {
		data, err := os.ReadFile(from)
		if err == nil && gz {
			var zr *gzip.Reader
			if zr, err = gzip.NewReader(bytes.NewReader(data)); err == nil {
				data, err = io.ReadAll(zr)
			}
		}
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, to), data, 0o644)
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
	put(filepath.Join(ck, "config.json"), "config.json", false)
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
		put(filepath.Join("..", "model", "tokenizer", "testdata", "qwen3", f+".gz"), f, true)
	}
	put(filepath.Join("..", "model", "chat", "testdata", "qwen3.jinja"), chat.TemplateFile, false)
	if err := os.WriteFile(filepath.Join(dir, chat.GenerationConfigFile), []byte(`{"eos_token_id": [151645, 151643]}`), 0o644); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// post runs one request through the gateway's handler.
func (e *fuzzEnv) post(path, auth, ctype string, body []byte) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	if ctype != "" {
		r.Header.Set("Content-Type", ctype)
	}
	w := httptest.NewRecorder()
	e.g.Handler().ServeHTTP(w, r)
	return w
}

// documented are the statuses DESIGN §5 gives the completion endpoints.
var documented = []int{200, 400, 401, 403, 404, 413, 429, 503, 504}

// checkResponse fails t unless w is a documented status with OpenAI's body for it: the
// error object for an error, a completion or a complete SSE stream for a 200.
func checkResponse(t *testing.T, w *httptest.ResponseRecorder, chatAPI bool) {
	t.Helper()
	if !slices.Contains(documented, w.Code) {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	ct := w.Header().Get("Content-Type")
	if w.Code != http.StatusOK {
		checkErrorBody(t, w)
		return
	}
	if ct == "text/event-stream" {
		checkStream(t, w.Body.String())
		return
	}
	var out struct {
		Object  string            `json:"object"`
		Choices []json.RawMessage `json:"choices"`
		Usage   *usage            `json:"usage"`
	}
	want := "text_completion"
	if chatAPI {
		want = "chat.completion"
	}
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil || ct != "application/json" || out.Object != want || len(out.Choices) != 1 || out.Usage == nil {
		t.Fatalf("200 with %s body %s (%v)", ct, w.Body, err)
	}
}

// checkErrorBody checks OpenAI's error object: exactly {"error": {message, type, param,
// code}} with a message and a type, param and code strings or null.
func checkErrorBody(t *testing.T, w *httptest.ResponseRecorder) {
	t.Helper()
	var body map[string]map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || len(body) != 1 || body["error"] == nil {
		t.Fatalf("%d with body %s (%v)", w.Code, w.Body, err)
	}
	e := body["error"]
	msg, _ := e["message"].(string)
	typ, _ := e["type"].(string)
	if msg == "" || typ == "" || len(e) != 4 || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("%d error object %v", w.Code, e)
	}
	for _, k := range []string{"param", "code"} {
		if _, isStr := e[k].(string); !isStr && e[k] != nil {
			t.Fatalf("%d error %s is %v", w.Code, k, e[k])
		}
	}
	if (w.Code == 429 || w.Code == 503) && w.Header().Get("Retry-After") == "" {
		t.Fatalf("%d without Retry-After", w.Code)
	}
}

// checkStream checks an SSE body: JSON events ending with [DONE].
func checkStream(t *testing.T, s string) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(nil, 1<<20)
	var last string
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("stream line %q", line)
		}
		if data != "[DONE]" && !json.Valid([]byte(data)) {
			t.Fatalf("stream event %q", data)
		}
		last = data
	}
	if last != "[DONE]" {
		t.Fatalf("stream does not end with [DONE]:\n%s", s)
	}
}

// fuzzHTTP runs bodies through one endpoint of the real handler. Besides checkResponse:
// a body over the limit from a valid key is a 413, and the router never gets a request
// it cannot decode.
func fuzzHTTP(f *testing.F, path string, chatAPI bool, bodies []string) {
	for _, b := range bodies {
		for _, auth := range []string{"Bearer " + keyAlice, "Bearer " + keySmall} {
			f.Add(auth, "application/json", []byte(b))
		}
	}
	f.Add("", "", []byte(bodies[0]))
	f.Add("Basic "+keyAlice, "application/json; charset=utf-8", []byte(bodies[0]))
	f.Add("bearer  "+keyAlice+" ", "text/plain", []byte(bodies[0]))
	f.Add("Bearer "+keyAlice, "", []byte(`{"model":"tiny","x":"`+strings.Repeat("y", fuzzLimit)+`"}`))
	e := newFuzzEnv(f, fuzzLimit)
	f.Fuzz(func(t *testing.T, auth, ctype string, body []byte) {
		w := e.post(path, auth, ctype, body)
		checkResponse(t, w, chatAPI)
		select {
		case err := <-e.bad:
			t.Fatalf("the gateway sent the router a request it refuses: %s", err)
		default:
		}
		key := strings.TrimPrefix(auth, "Bearer ")
		if (key == keyAlice || key == keySmall) && (ctype == "" || strings.HasPrefix(ctype, "application/json")) &&
			len(body) > fuzzLimit && w.Code != http.StatusRequestEntityTooLarge {
			t.Fatalf("a body of %d bytes got %d, want 413", len(body), w.Code)
		}
	})
}

// FuzzChatCompletions: any body (and Authorization and Content-Type header) posted to
// /v1/chat/completions gives a documented status with OpenAI's JSON body, never a panic.
func FuzzChatCompletions(f *testing.F) {
	fuzzHTTP(f, "/v1/chat/completions", true, []string{
		`{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":3,"stop":["a"],"seed":4}`,
		`{"model":"tiny","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"be terse"},{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
		`{"model":"tiny","messages":[{"role":"developer","content":null},{"role":"assistant","content":"x","reasoning_content":"r"},{"role":"user","content":"y"}],"temperature":0.5,"top_p":0.9,"top_k":3}`,
		`{"model":"busy","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"idle","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"nope","messages":[]}`,
		`{"model":"tiny","messages":[{"role":"wizard","content":"hi"}],"n":2,"max_completion_tokens":0}`,
		`{"model":"tiny","messages":[{"role":"user","content":[{"type":"image_url"}]}]}`,
		`{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":1e400,"temperature":"hot"}`,
	})
}

// FuzzCompletions: as FuzzChatCompletions for /v1/completions.
func FuzzCompletions(f *testing.F) {
	fuzzHTTP(f, "/v1/completions", false, []string{
		`{"model":"tiny","prompt":"hello","max_tokens":2,"seed":1}`,
		`{"model":"tiny","prompt":[[1,2,3]],"stream":true,"stop":"x"}`,
		`{"model":"tiny","prompt":[9,8],"echo":false,"suffix":""}`,
		`{"model":"tiny","prompt":["one"],"temperature":2,"top_p":1}`,
		`{"model":"tiny","prompt":[151936]}`,
		`{"model":"tiny","prompt":["a","b"]}`,
		`{"model":"tiny","prompt":"x","echo":true,"suffix":"s"}`,
		`{"model":"busy","prompt":"hi"}`,
		`{"model":"tiny","prompt":[],"max_tokens":` + strconv.Itoa(1<<31) + `}`,
	})
}

// The fuzz gateway's own statuses are pinned, so the targets above check a gateway that
// works: each documented route of the fake backends gives its status.
func TestFuzzEnv(t *testing.T) {
	e := newFuzzEnv(t, fuzzLimit)
	for _, tc := range []struct {
		body   string
		status int
	}{
		{`{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`, 200},
		{`{"model":"tiny","stream":true,"messages":[{"role":"user","content":"hi"}]}`, 200},
		{`{"model":"busy","messages":[{"role":"user","content":"hi"}]}`, 429},
		{`{"model":"idle","messages":[{"role":"user","content":"hi"}]}`, 503},
		{`{"model":"tiny","x":"` + strings.Repeat("y", fuzzLimit) + `"}`, 413},
	} {
		w := e.post("/v1/chat/completions", "Bearer "+keyAlice, "application/json", []byte(tc.body))
		if w.Code != tc.status {
			t.Errorf("%.60s: %d, want %d: %s", tc.body, w.Code, tc.status, w.Body)
		}
		checkResponse(t, w, true)
	}
}
