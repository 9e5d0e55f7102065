package gateway

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/moemesh/moemesh/gateway/tenant"
	"github.com/moemesh/moemesh/model/chat"
	"github.com/moemesh/moemesh/proto"
)

// unauthenticated labels metrics of requests that named no valid key.
const unauthenticated = "-"

// statusClientGone is nginx's code for a client that closed the connection; only metrics
// see it.
const statusClientGone = 499

// job is a validated generation request of either endpoint.
type job struct {
	chat      bool
	id        string
	model     *served
	tenant    *tenant.Tenant
	prompt    []int32
	maxTokens int
	sampling  proto.Sampling
	stop      []string
	stream    bool
	usage     bool // stream_options.include_usage
	start     time.Time
	created   int64
}

// auth finds the caller's tenant from "Authorization: Bearer <key>".
func (g *Gateway) auth(r *http.Request) (*tenant.Tenant, *apiError) {
	set := g.tenants.Set()
	key := ""
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, rest, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			if !set.IsOpen() {
				return nil, errUnauthorized("Authorization must be \"Bearer <API key>\"")
			}
		}
		key = strings.TrimSpace(rest)
	}
	if !set.IsOpen() && key == "" {
		return nil, errUnauthorized("no API key: send the header Authorization: Bearer <API key>")
	}
	t, ok := set.Lookup(key)
	if !ok {
		return nil, errUnauthorized("invalid API key")
	}
	return t, nil
}

// fail writes e and counts it.
func (g *Gateway) fail(w http.ResponseWriter, tenantID string, e *apiError) {
	g.metrics.request(tenantID, e.Status)
	writeError(w, e)
}

// lookup finds the model a tenant asks for: 404 if nobody serves it, 403 if the tenant may
// not use it.
func (g *Gateway) lookup(t *tenant.Tenant, name string) (*served, *apiError) {
	if name == "" {
		return nil, badRequest("model", "model is required")
	}
	m, ok := g.models[name]
	if !ok {
		return nil, errNotFound(name)
	}
	if !t.Allows(name) {
		return nil, errForbidden(name, t.ID)
	}
	return m, nil
}

func (g *Gateway) handleChat(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	t, aerr := g.auth(r)
	if aerr != nil {
		g.fail(w, unauthenticated, aerr)
		return
	}
	var req chatRequest
	if aerr := decodeBody(w, r, g.cfg.MaxBodyBytes, &req); aerr != nil {
		g.fail(w, t.ID, aerr)
		return
	}
	m, aerr := g.lookup(t, req.Model)
	if aerr != nil {
		g.fail(w, t.ID, aerr)
		return
	}
	if m.tmpl == nil {
		g.fail(w, t.ID, badRequest("model", "model %s has no chat template; use /v1/completions (%v)", m.name, m.tmplErr))
		return
	}
	if len(req.Messages) == 0 {
		g.fail(w, t.ID, badRequest("messages", "messages must hold at least one message"))
		return
	}
	msgs := make([]chat.Message, len(req.Messages))
	for i, msg := range req.Messages {
		switch msg.Role {
		case "system", "developer", "user", "assistant", "tool":
		default:
			g.fail(w, t.ID, badRequest(fmt.Sprintf("messages[%d].role", i), "messages[%d].role %q, want system, developer, user, assistant or tool", i, msg.Role))
			return
		}
		role := msg.Role
		if role == "developer" { // OpenAI's new name for system; templates know only system
			role = "system"
		}
		msgs[i] = chat.Message{Role: role, Content: string(msg.Content), ReasoningContent: msg.ReasoningContent}
	}
	text, err := m.tmpl.Render(msgs, true, nil)
	if err != nil {
		var ex *chat.ExceptionError
		if errors.As(err, &ex) {
			g.fail(w, t.ID, badRequest("messages", "the chat template rejects the conversation: %s", ex.Message))
		} else {
			g.fail(w, t.ID, badRequest("messages", "rendering the chat template: %v", err))
		}
		return
	}
	// The template writes the special tokens itself, so the tokenizer adds none
	// (transformers' apply_chat_template does the same).
	ids, err := m.tok.Encode(text, false)
	if err != nil {
		g.fail(w, t.ID, errInternal("tokenizing the prompt: %v", err))
		return
	}
	g.run(w, r, &job{chat: true, id: newID("chatcmpl-"), model: m, tenant: t, prompt: ids, start: start}, &req.common)
}

// completionsDefaultMaxTokens is OpenAI's default max_tokens for /v1/completions.
const completionsDefaultMaxTokens = 16

func (g *Gateway) handleCompletion(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	t, aerr := g.auth(r)
	if aerr != nil {
		g.fail(w, unauthenticated, aerr)
		return
	}
	var req completionRequest
	if aerr := decodeBody(w, r, g.cfg.MaxBodyBytes, &req); aerr != nil {
		g.fail(w, t.ID, aerr)
		return
	}
	m, aerr := g.lookup(t, req.Model)
	if aerr != nil {
		g.fail(w, t.ID, aerr)
		return
	}
	switch {
	case !req.Prompt.Set:
		g.fail(w, t.ID, badRequest("prompt", "prompt is required"))
		return
	case req.Echo:
		g.fail(w, t.ID, badRequest("echo", "echo is not supported"))
		return
	case req.Suffix != nil && *req.Suffix != "":
		g.fail(w, t.ID, badRequest("suffix", "suffix is not supported"))
		return
	}
	ids := req.Prompt.IDs
	if !req.Prompt.IsIDs {
		var err error
		if ids, err = m.tok.Encode(req.Prompt.Text, true); err != nil {
			g.fail(w, t.ID, errInternal("tokenizing the prompt: %v", err))
			return
		}
	}
	vocab := m.tok.VocabSize()
	for i, id := range ids {
		if id < 0 || int(id) >= vocab {
			g.fail(w, t.ID, badRequest("prompt", "prompt token %d is %d, want 0 to %d", i, id, vocab-1))
			return
		}
	}
	if req.MaxTokens == nil && req.MaxCompletionTokens == nil {
		n := completionsDefaultMaxTokens
		req.MaxTokens = &n
	}
	g.run(w, r, &job{id: newID("cmpl-"), model: m, tenant: t, prompt: ids, start: start}, &req.common)
}

// params validates the sampling and length fields into j.
func (g *Gateway) params(j *job, c *common) *apiError {
	if c.N != nil && *c.N != 1 {
		return badRequest("n", "n is %d; only n=1 is supported", *c.N)
	}
	s := proto.Sampling{Temperature: 1} // OpenAI's default
	if c.Temperature != nil {
		if v := *c.Temperature; !(v >= 0 && v <= 2) {
			return badRequest("temperature", "temperature %g, want 0 to 2", v)
		}
		s.Temperature = float32(*c.Temperature)
	}
	if c.TopP != nil {
		if v := *c.TopP; !(v > 0 && v <= 1) {
			return badRequest("top_p", "top_p %g, want > 0 and <= 1", v)
		}
		s.TopP = float32(*c.TopP)
	}
	if c.TopK != nil {
		if v := *c.TopK; v < 0 || v > math.MaxInt32 {
			return badRequest("top_k", "top_k %d, want >= 0 (0: off)", v)
		}
		s.TopK = int32(*c.TopK)
	}
	if c.Seed != nil {
		s.Seed, s.HasSeed = uint64(*c.Seed), true
	}
	j.sampling = s
	if len(c.Stop) > proto.MaxStopStrings {
		return badRequest("stop", "%d stop strings, at most %d", len(c.Stop), proto.MaxStopStrings)
	}
	for i, st := range c.Stop {
		if st == "" || len(st) > proto.MaxStopLen {
			return badRequest("stop", "stop string %d must have 1 to %d bytes", i, proto.MaxStopLen)
		}
	}
	j.stop = c.Stop
	j.stream = c.Stream
	j.usage = c.Stream && c.StreamOptions != nil && c.StreamOptions.IncludeUsage

	lim := j.tenant.Limits
	p := len(j.prompt)
	switch {
	case p == 0:
		return badRequest("prompt", "the prompt is empty")
	case lim.MaxPromptTokens > 0 && p > lim.MaxPromptTokens:
		return errTooLong("prompt has %d tokens, more than tenant %s's limit of %d", p, j.tenant.ID, lim.MaxPromptTokens)
	case j.model.context > 0 && p >= j.model.context:
		return errTooLong("prompt has %d tokens; model %s's context is %d, leaving no room for a completion", p, j.model.name, j.model.context)
	}
	room := math.MaxInt32
	if j.model.context > 0 {
		room = j.model.context - p
	}
	want, param := c.MaxTokens, "max_tokens"
	if c.MaxCompletionTokens != nil { // the newer name wins
		want, param = c.MaxCompletionTokens, "max_completion_tokens"
	}
	switch {
	case want != nil && *want < 1:
		return badRequest(param, "%s is %d, want >= 1", param, *want)
	case want != nil && lim.MaxTokens > 0 && *want > lim.MaxTokens:
		return badRequest(param, "%s is %d, more than tenant %s's limit of %d", param, *want, j.tenant.ID, lim.MaxTokens)
	case want != nil:
		j.maxTokens = min(*want, room)
	default:
		j.maxTokens = room
		if g.cfg.DefaultMaxTokens > 0 {
			j.maxTokens = min(j.maxTokens, g.cfg.DefaultMaxTokens)
		}
		if lim.MaxTokens > 0 {
			j.maxTokens = min(j.maxTokens, lim.MaxTokens)
		}
	}
	return nil
}

// run admits j, sends it to a router and writes the answer.
func (g *Gateway) run(w http.ResponseWriter, r *http.Request, j *job, c *common) {
	tid := j.tenant.ID
	if aerr := g.params(j, c); aerr != nil {
		g.fail(w, tid, aerr)
		return
	}
	release, aerr := g.limits.admit(j.tenant, len(j.prompt), time.Now())
	if aerr != nil {
		g.fail(w, tid, aerr)
		return
	}
	completion := 0
	defer func() { release(completion) }()
	g.metrics.addInflight(tid, 1)
	defer g.metrics.addInflight(tid, -1)
	j.created = time.Now().Unix()

	priority := proto.PriorityInteractive
	if j.tenant.Priority == tenant.Batch {
		priority = proto.PriorityBatch
	}
	req := &proto.GenerateRequest{
		ID: j.id, Tenant: tid, Priority: priority, Weight: float32(j.tenant.Weight),
		Prompt: j.prompt, MaxTokens: int32(j.maxTokens), Sampling: j.sampling,
		StopIDs: j.model.stopIDs, Stop: j.stop,
	}
	annotate(r.Context(), j)
	ctx, span := startGeneration(r.Context(), j)
	gen, err := g.submit(ctx, j.model.name, req)
	if err != nil {
		endGeneration(span, "", 0, "", err)
		if r.Context().Err() != nil {
			g.metrics.request(tid, statusClientGone)
			return
		}
		g.log.WarnContext(ctx, "request not accepted", "id", j.id, "tenant", tid, "err", err)
		g.fail(w, tid, fromMesh(err))
		return
	}
	defer gen.close()
	g.log.DebugContext(ctx, "request accepted", "id", j.id, "tenant", tid, "router", gen.router, "prompt", len(j.prompt))

	out := &writer{g: g, w: w, j: j}
	completion = out.relay(ctx, gen)
	endGeneration(span, gen.router, completion, out.finish, out.err)
}

// usage is OpenAI's usage object.
type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// usageOf prefers the router's counts (what it actually ran) and falls back to the
// gateway's own.
func usageOf(ev *proto.TokenEvent, prompt, completion int) usage {
	u := usage{PromptTokens: prompt, CompletionTokens: completion}
	if ev.Usage.Prompt > 0 {
		u.PromptTokens = int(ev.Usage.Prompt)
	}
	if ev.Usage.Completion > 0 {
		u.CompletionTokens = int(ev.Usage.Completion)
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}

// finishError maps a last event that is not a normal finish to the client's error.
func finishError(ev *proto.TokenEvent) *apiError {
	if ev.Finish == proto.FinishCancel {
		return errUnavailable("the router cancelled the request (shutting down?)")
	}
	return fromMesh(ev.Err())
}
