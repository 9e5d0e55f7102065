package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/moemesh/moemesh/gateway/tenant"
	"github.com/moemesh/moemesh/internal/meshtest"
	"github.com/moemesh/moemesh/model/chat"
)

const (
	keyAlice   = "sk-alice"
	keyBob     = "sk-bob"
	keyLimited = "sk-limited"
	keySmall   = "sk-small"
	keySolo    = "sk-solo"
	keyThrifty = "sk-thrifty"
)

func writeTenants(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tenants.yaml")
	yaml := fmt.Sprintf(tenantsYAML, tenant.HashKey(keyAlice), tenant.HashKey(keyBob), tenant.HashKey(keyLimited), tenant.HashKey(keySmall),
		tenant.HashKey(keySolo), tenant.HashKey(keyThrifty))
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func client(e *env, key string) *openai.Client {
	c := openai.NewClient(option.WithBaseURL(e.url+"/v1/"), option.WithAPIKey(key), option.WithMaxRetries(0),
		option.WithRequestTimeout(10*time.Second), option.WithHTTPClient(e.http))
	return &c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

var hello = []openai.ChatCompletionMessageParamUnion{
	openai.SystemMessage("You are terse."),
	openai.UserMessage("Say hello to the mesh, héllo wörld 你好!"),
}

// promptLen is the tokenizer's count of the chat prompt for hello.
func promptLen(t *testing.T, e *env) int {
	text, err := e.tmpl.Render([]chat.Message{{Role: "system", Content: "You are terse."},
		{Role: "user", Content: "Say hello to the mesh, héllo wörld 你好!"}}, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := e.tok.Encode(text, false)
	if err != nil {
		t.Fatal(err)
	}
	return len(ids)
}

func TestChatStreamEqualsWhole(t *testing.T) {
	e := startEnv(t, writeTenants(t))
	c := client(e, keyAlice)
	params := openai.ChatCompletionNewParams{Model: "tiny", Messages: hello, MaxTokens: openai.Int(12), Seed: openai.Int(3)}

	whole, err := c.Chat.Completions.New(ctx(t), params)
	if err != nil {
		t.Fatal(err)
	}
	if len(whole.Choices) != 1 || whole.Choices[0].FinishReason != "length" || whole.Choices[0].Message.Content == "" {
		t.Fatalf("whole response %+v", whole)
	}
	want := promptLen(t, e)
	if u := whole.Usage; u.PromptTokens != int64(want) || u.CompletionTokens != 12 || u.TotalTokens != int64(want)+12 {
		t.Errorf("usage %+v, want prompt %d, completion 12", u, want)
	}

	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := c.Chat.Completions.NewStreaming(ctx(t), params)
	var sb strings.Builder
	var finish string
	var usage openai.CompletionUsage
	chunks := 0
	for stream.Next() {
		ch := stream.Current()
		chunks++
		if len(ch.Choices) > 0 {
			sb.WriteString(ch.Choices[0].Delta.Content)
			if ch.Choices[0].FinishReason != "" {
				finish = ch.Choices[0].FinishReason
			}
		}
		if ch.Usage.TotalTokens > 0 {
			usage = ch.Usage
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if got := sb.String(); got != whole.Choices[0].Message.Content {
		t.Errorf("streamed text %q != whole text %q", got, whole.Choices[0].Message.Content)
	}
	if finish != "length" || usage.PromptTokens != int64(want) || usage.CompletionTokens != 12 || chunks < 12 {
		t.Errorf("stream: finish %q, usage %+v, %d chunks", finish, usage, chunks)
	}

	// The request that reached the router carries the tenant's scheduling parameters.
	reqs := e.tiny.requests()
	last := reqs[len(reqs)-1]
	if last.Tenant != "alice" || last.Weight != 2 || last.Priority != 0 || !last.Sampling.HasSeed || last.Sampling.Seed != 3 ||
		last.MaxTokens != 12 || len(last.StopIDs) == 0 || last.Deadline == 0 {
		t.Errorf("router saw %+v", last)
	}
}

func TestCompletion(t *testing.T) {
	e := startEnv(t, writeTenants(t))
	c := client(e, keyAlice)
	prompt := "The quick brown fox jumps over the lazy dog"
	ids, err := e.tok.Encode(prompt, true)
	if err != nil {
		t.Fatal(err)
	}
	params := openai.CompletionNewParams{Model: "tiny", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt)},
		MaxTokens: openai.Int(int64(len(ids))), Seed: openai.Int(0), Stop: openai.CompletionNewParamsStopUnion{OfString: openai.String("never")}}
	res, err := c.Completions.New(ctx(t), params)
	if err != nil {
		t.Fatal(err)
	}
	// The echo router with seed 0 repeats the prompt, so the text is the prompt itself.
	if res.Choices[0].Text != prompt || res.Choices[0].FinishReason != "length" {
		t.Errorf("completion %q (%s), want %q (length)", res.Choices[0].Text, res.Choices[0].FinishReason, prompt)
	}
	if res.Usage.PromptTokens != int64(len(ids)) || res.Usage.CompletionTokens != int64(len(ids)) {
		t.Errorf("usage %+v, want %d and %d", res.Usage, len(ids), len(ids))
	}
	stream := c.Completions.NewStreaming(ctx(t), params)
	var sb strings.Builder
	for stream.Next() {
		if ch := stream.Current(); len(ch.Choices) > 0 {
			sb.WriteString(ch.Choices[0].Text)
		}
	}
	if err := stream.Err(); err != nil || sb.String() != prompt {
		t.Errorf("streamed %q, %v; want %q", sb.String(), err, prompt)
	}
	if r := e.tiny.requests(); r[len(r)-1].Stop[0] != "never" {
		t.Errorf("stop strings %q did not reach the router", r[len(r)-1].Stop)
	}
}

func TestModelsAndProbes(t *testing.T) {
	e := startEnv(t, writeTenants(t))
	c := client(e, keyAlice)
	list, err := c.Models.List(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Data) != 5 || list.Data[0].ID != "tiny" {
		t.Errorf("models %+v", list.Data)
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200} {
		if code, _ := get(t, e, e.url+path); code != want {
			t.Errorf("GET %s: %d, want %d", path, code, want)
		}
	}
	if err := e.svc.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := e.tiny.nc.Flush(); err != nil { // the server has dropped the PING subscription
		t.Fatal(err)
	}
	if code, body := get(t, e, e.url+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("readyz without a router: %d %s", code, body)
	}
	if _, err := client(e, keyAlice).Chat.Completions.New(ctx(t), openai.ChatCompletionNewParams{Model: "tiny", Messages: hello, MaxTokens: openai.Int(2)}); err != nil {
		t.Fatal(err)
	}
	_, body := get(t, e, e.url+"/metrics")
	for _, want := range []string{`moemesh_gateway_requests_total{code="200",tenant="alice"} 1`,
		`moemesh_gateway_completion_tokens_total{tenant="alice"} 2`,
		`moemesh_gateway_time_to_first_token_seconds_count{tenant="alice"} 1`,
		`moemesh_gateway_request_duration_seconds_count{code="200",tenant="alice"} 1`,
		`moemesh_gateway_time_per_output_token_seconds_count{tenant="alice"} 1`,
		`moemesh_gateway_inflight_requests{tenant="alice"} 0`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}

func get(t *testing.T, e *env, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx(t), http.MethodGet, url, nil)
	res, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// apiErr runs fn and returns the SDK's API error.
func apiErr(t *testing.T, err error) *openai.Error {
	t.Helper()
	var ae *openai.Error
	if !errors.As(err, &ae) {
		t.Fatalf("want an API error, got %v", err)
	}
	return ae
}

func TestErrorStatuses(t *testing.T) {
	e := startEnv(t, writeTenants(t))
	chatWith := func(key, model string, mod func(*openai.ChatCompletionNewParams)) error {
		p := openai.ChatCompletionNewParams{Model: model, Messages: hello, MaxTokens: openai.Int(4)}
		if mod != nil {
			mod(&p)
		}
		_, err := client(e, key).Chat.Completions.New(ctx(t), p)
		return err
	}
	longPrompt := make([]int64, 40961) // more than the model's max_position_embeddings
	for _, tc := range []struct {
		name   string
		status int
		param  string
		err    func() error
	}{
		{"no key", 401, "", func() error { return chatWith("", "tiny", nil) }},
		{"bad key", 401, "", func() error { return chatWith("sk-wrong", "tiny", nil) }},
		{"model not allowed", 403, "model", func() error { return chatWith(keyBob, "tiny", nil) }},
		{"unknown model", 404, "model", func() error { return chatWith(keyAlice, "nope", nil) }},
		{"prompt over tenant limit", 413, "messages", func() error { return chatWith(keySmall, "tiny", nil) }},
		{"prompt over context", 413, "messages", func() error {
			_, err := client(e, keyAlice).Completions.New(ctx(t), openai.CompletionNewParams{Model: "tiny",
				Prompt: openai.CompletionNewParamsPromptUnion{OfArrayOfTokens: longPrompt}})
			return err
		}},
		{"max tokens over tenant limit", 400, "max_tokens", func() error {
			_, err := client(e, keySmall).Completions.New(ctx(t), openai.CompletionNewParams{Model: "tiny",
				Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("hi")}, MaxTokens: openai.Int(51)})
			return err
		}},
		{"n > 1", 400, "n", func() error {
			return chatWith(keyAlice, "tiny", func(p *openai.ChatCompletionNewParams) { p.N = openai.Int(2) })
		}},
		{"no router", 503, "", func() error { return chatWith(keyAlice, "idle", nil) }},
		{"router queue full", 429, "", func() error { return chatWith(keyAlice, "busy", nil) }},
		{"router silent", 504, "", func() error { return chatWith(keyAlice, "silent", nil) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ae := apiErr(t, tc.err())
			if ae.StatusCode != tc.status || ae.Param != tc.param || ae.Message == "" || ae.Type == "" {
				t.Errorf("got %d param %q type %q: %s; want %d param %q", ae.StatusCode, ae.Param, ae.Type, ae.Message, tc.status, tc.param)
			}
			if (tc.status == 429 || tc.status == 503) && ae.Response.Header.Get("Retry-After") == "" {
				t.Errorf("%d without Retry-After", tc.status)
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	e := startEnv(t, writeTenants(t))
	c := client(e, keyLimited)
	p := openai.ChatCompletionNewParams{Model: "tiny", Messages: hello, MaxTokens: openai.Int(2)}
	if _, err := c.Chat.Completions.New(ctx(t), p); err != nil {
		t.Fatal(err)
	}
	ae := apiErr(t, func() error { _, err := c.Chat.Completions.New(ctx(t), p); return err }())
	secs, err := strconv.Atoi(ae.Response.Header.Get("Retry-After"))
	if ae.StatusCode != 429 || err != nil || secs < 1 || secs > 60 {
		t.Errorf("second request in a minute: %d, Retry-After %q", ae.StatusCode, ae.Response.Header.Get("Retry-After"))
	}
	// Another tenant is not affected, and the limited one's request reached the router
	// as a batch-class request.
	if _, err := client(e, keyAlice).Chat.Completions.New(ctx(t), p); err != nil {
		t.Errorf("alice: %v", err)
	}
	if r := e.tiny.requests(); r[0].Tenant != "limited" || r[0].Priority != 1 {
		t.Errorf("router saw %+v", r[0])
	}
}

func TestBadBodies(t *testing.T) {
	e := startEnv(t, writeTenants(t))
	for _, tc := range []struct {
		name, body string
		status     int
		param      string
	}{
		{"malformed", `{"model": "tiny", "messages": [`, 400, ""},
		{"not an object", `[1, 2]`, 400, ""},
		{"max_tokens a string", `{"model": "tiny", "max_tokens": "ten", "messages": [{"role": "user", "content": "hi"}]}`, 400, "max_tokens"},
		{"stream a string", `{"model": "tiny", "stream": "yes", "messages": [{"role": "user", "content": "hi"}]}`, 400, "stream"},
		{"stop a number", `{"model": "tiny", "stop": 3, "messages": [{"role": "user", "content": "hi"}]}`, 400, "stop"},
		{"content a number", `{"model": "tiny", "messages": [{"role": "user", "content": 5}]}`, 400, "messages.content"},
		{"bad role", `{"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}`, 400, "messages[0].role"},
		{"temperature out of range", `{"model": "tiny", "temperature": 3, "messages": [{"role": "user", "content": "hi"}]}`, 400, "temperature"},
		{"too large", `{"model": "tiny", "messages": [{"role": "user", "content": "` + strings.Repeat("a", 5<<20) + `"}]}`, 413, ""},
		{"unknown fields and parts are fine", `{"model": "tiny", "max_tokens": 2, "frobnicate": {"x": 1}, "stop": ["a", "b"], "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}`, 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(ctx(t), http.MethodPost, e.url+"/v1/chat/completions", strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer "+keyAlice)
			req.Header.Set("Content-Type", "application/json")
			res, err := e.http.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, tc.status, b)
			}
			if tc.status != 200 && (tc.param != "" && !strings.Contains(string(b), `"param":"`+tc.param+`"`) || !strings.Contains(string(b), `"error":{"message":`)) {
				t.Errorf("body %s, want an error naming %q", b, tc.param)
			}
		})
	}
}

// A client that goes away mid-stream cancels the generation at the router that took it.
func TestDisconnectCancels(t *testing.T) {
	e := startEnv(t, writeTenants(t))
	sctx, cancel := context.WithCancel(ctx(t))
	stream := client(e, keyAlice).Chat.Completions.NewStreaming(sctx, openai.ChatCompletionNewParams{Model: "slow", Messages: hello})
	if !stream.Next() {
		t.Fatalf("no first chunk: %v", stream.Err())
	}
	id := stream.Current().ID
	cancel()
	stream.Close()
	meshtest.WaitFor(t, 5*time.Second, func() error {
		if !e.slow.cancelled(id) {
			return fmt.Errorf("router got no cancel for %s", id)
		}
		return nil
	})
}

// Tenants reload when the file changes; a broken file keeps the last good tenants.
func TestTenantsHotReload(t *testing.T) {
	path := writeTenants(t)
	e := startEnv(t, path)
	p := openai.ChatCompletionNewParams{Model: "tiny", Messages: hello, MaxTokens: openai.Int(1)}
	if _, err := client(e, "sk-carol").Chat.Completions.New(ctx(t), p); apiErr(t, err).StatusCode != 401 {
		t.Fatal("carol is not a tenant yet")
	}
	yaml := fmt.Sprintf("tenants:\n  - id: carol\n    api_keys: [%q]\n", tenant.HashKey("sk-carol"))
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	meshtest.WaitFor(t, 5*time.Second, func() error {
		_, err := client(e, "sk-carol").Chat.Completions.New(ctx(t), p)
		return err
	})
	if err := os.WriteFile(path, []byte("tenants: [ {id: "), 0o644); err != nil {
		t.Fatal(err)
	}
	meshtest.WaitFor(t, 5*time.Second, func() error {
		if e.g.tenants.LastError() == nil {
			return errors.New("the broken tenants file was not read")
		}
		return nil
	})
	if _, err := client(e, "sk-carol").Chat.Completions.New(ctx(t), p); err != nil {
		t.Fatalf("after a broken reload: %v", err)
	}
	if _, err := client(e, keyAlice).Chat.Completions.New(ctx(t), p); apiErr(t, err).StatusCode != 401 {
		t.Error("alice's key still works after the reload that removed her")
	}
}

// With no tenants file the gateway is open: any key or none is tenant "default".
func TestOpenGateway(t *testing.T) {
	e := startEnv(t, "")
	res, err := client(e, "").Chat.Completions.New(ctx(t), openai.ChatCompletionNewParams{Model: "tiny", Messages: hello, MaxTokens: openai.Int(3)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Usage.CompletionTokens != 3 {
		t.Errorf("usage %+v", res.Usage)
	}
	if r := e.tiny.requests(); r[0].Tenant != tenant.DefaultID {
		t.Errorf("tenant %q", r[0].Tenant)
	}
}

// max_concurrent and tokens_per_minute: the slot of a request in flight is taken until it
// ends; completion tokens are charged after the fact and delay the next request.
func TestConcurrencyAndTokenLimits(t *testing.T) {
	path := writeTenants(t)
	e := startEnv(t, path)

	sctx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	solo := client(e, keySolo)
	stream := solo.Chat.Completions.NewStreaming(sctx, openai.ChatCompletionNewParams{Model: "slow", Messages: hello})
	if !stream.Next() {
		t.Fatalf("no first chunk: %v", stream.Err())
	}
	p := openai.ChatCompletionNewParams{Model: "tiny", Messages: hello, MaxTokens: openai.Int(1)}
	if ae := apiErr(t, func() error { _, err := solo.Chat.Completions.New(ctx(t), p); return err }()); ae.StatusCode != 429 ||
		ae.Response.Header.Get("Retry-After") == "" {
		t.Errorf("second concurrent request: %d, Retry-After %q", ae.StatusCode, ae.Response.Header.Get("Retry-After"))
	}
	cancel()
	stream.Close()
	meshtest.WaitFor(t, 5*time.Second, func() error { _, err := solo.Chat.Completions.New(ctx(t), p); return err })

	// tokens_per_minute 10: a 1-token prompt and 10 completion tokens leave the bucket in
	// debt, so the next request waits.
	thrifty := client(e, keyThrifty)
	cp := openai.CompletionNewParams{Model: "tiny", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("hi")}, MaxTokens: openai.Int(10)}
	if _, err := thrifty.Completions.New(ctx(t), cp); err != nil {
		t.Fatal(err)
	}
	ae := apiErr(t, func() error { _, err := thrifty.Completions.New(ctx(t), cp); return err }())
	if ae.StatusCode != 429 || ae.Response.Header.Get("Retry-After") == "" || !strings.Contains(ae.Message, "tokens per minute") {
		t.Errorf("over tokens/min: %d %q, Retry-After %q", ae.StatusCode, ae.Message, ae.Response.Header.Get("Retry-After"))
	}
}

// A router that appears while a request waits for one (a router reconnecting to another
// NATS node, or restarting) gets the request: no responders is re-sent within RouterWait.
func TestRouterWaitResends(t *testing.T) {
	e := startEnv(t, writeTenants(t))
	e.g.cfg.RouterWait = 10 * time.Second // set before any request: no goroutine reads it yet
	errc := make(chan error, 1)
	go func() {
		p := openai.ChatCompletionNewParams{Model: "idle", Messages: hello, MaxTokens: openai.Int(4)}
		_, err := client(e, keyAlice).Chat.Completions.New(ctx(t), p)
		errc <- err
	}()
	time.Sleep(200 * time.Millisecond) // the router's absence is the scenario, not a wait
	startRouter(t, e.natsURL, "idle", e.tok, echo)
	if err := <-errc; err != nil {
		t.Fatalf("a request sent before its router came up failed: %v", err)
	}
}
