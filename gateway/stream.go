package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/moemesh/moemesh/proto"
)

// writer turns a generation's events into one JSON response or an SSE stream.
type writer struct {
	g         *Gateway
	w         http.ResponseWriter
	j         *job
	committed bool      // the status line is out; errors now travel in the stream
	finish    string    // the last event's finish reason, for the generation span
	err       error     // why the generation failed, for the generation span
	first     time.Time // when the first token arrived
}

// Response objects. finish_reason and usage are pointers because OpenAI sends them as
// null in stream chunks, and clients look for that null.
type (
	chatCompletion struct {
		ID      string       `json:"id"`
		Object  string       `json:"object"`
		Created int64        `json:"created"`
		Model   string       `json:"model"`
		Choices []chatChoice `json:"choices"`
		Usage   *usage       `json:"usage,omitempty"`
	}
	chatChoice struct {
		Index        int       `json:"index"`
		Message      *chatOut  `json:"message,omitempty"`
		Delta        *chatOut  `json:"delta,omitempty"`
		Logprobs     *struct{} `json:"logprobs"`
		FinishReason *string   `json:"finish_reason"`
	}
	chatOut struct {
		Role    string  `json:"role,omitempty"`
		Content *string `json:"content,omitempty"`
	}
	chatChunk struct {
		ID      string       `json:"id"`
		Object  string       `json:"object"`
		Created int64        `json:"created"`
		Model   string       `json:"model"`
		Choices []chatChoice `json:"choices"`
		Usage   *usage       `json:"usage"`
	}
	textCompletion struct {
		ID      string       `json:"id"`
		Object  string       `json:"object"`
		Created int64        `json:"created"`
		Model   string       `json:"model"`
		Choices []textChoice `json:"choices"`
		Usage   *usage       `json:"usage"`
	}
	textChoice struct {
		Text         string    `json:"text"`
		Index        int       `json:"index"`
		Logprobs     *struct{} `json:"logprobs"`
		FinishReason *string   `json:"finish_reason"`
	}
)

// relay reads events until the last one and writes them; it returns the completion tokens
// produced (for the tokens/min bucket). Every return path has written a complete response
// or the client is gone.
func (o *writer) relay(ctx context.Context, gen *generation) (completion int) {
	var text strings.Builder
	tid := o.j.tenant.ID
	first := true
	for {
		ev, err := gen.next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				o.g.log.InfoContext(ctx, "client left; cancelling at the router", "id", o.j.id, "tenant", tid, "router", gen.router)
				o.g.metrics.finished(tid, statusClientGone, o.j.start, o.first, completion)
				return completion
			}
			o.err = err
			o.g.log.WarnContext(ctx, "generation failed", "id", o.j.id, "tenant", tid, "router", gen.router, "err", err)
			o.fail(fromMesh(err))
			return completion
		}
		if first {
			first = false
			o.first = time.Now()
			o.g.metrics.firstToken(tid, o.first.Sub(o.j.start))
			firstTokenEvent(ctx)
		}
		completion += len(ev.Tokens)
		o.finish = ev.Finish
		if ev.Finish == proto.FinishError || ev.Finish == proto.FinishCancel {
			o.g.log.WarnContext(ctx, "router ended the generation", "id", o.j.id, "tenant", tid, "router", gen.router,
				"finish", ev.Finish, "code", int(ev.ErrCode), "err", ev.ErrMsg)
			o.err = finishError(ev)
			o.fail(finishError(ev))
			o.g.metrics.tokens(tid, len(o.j.prompt), completion)
			return completion
		}
		if o.j.stream {
			if !o.streamEvent(ev) {
				o.g.metrics.finished(tid, statusClientGone, o.j.start, o.first, completion)
				return completion
			}
		} else {
			text.WriteString(ev.Text)
		}
		if ev.Finish == "" {
			continue
		}
		u := usageOf(ev, len(o.j.prompt), completion)
		o.g.metrics.tokens(tid, u.PromptTokens, u.CompletionTokens)
		o.g.metrics.finished(tid, http.StatusOK, o.j.start, o.first, u.CompletionTokens)
		if o.j.stream {
			o.streamEnd(ev.Finish, u)
		} else {
			o.whole(text.String(), ev.Finish, u)
		}
		return u.CompletionTokens
	}
}

// fail reports e: as the response before anything was written, else as an error event.
func (o *writer) fail(e *apiError) {
	o.g.metrics.finished(o.j.tenant.ID, e.Status, o.j.start, o.first, 0)
	if !o.committed {
		writeError(o.w, e)
		return
	}
	o.sse(e.body())
}

func (o *writer) whole(text, finish string, u usage) {
	o.committed = true
	if o.j.chat {
		writeJSON(o.w, http.StatusOK, chatCompletion{
			ID: o.j.id, Object: "chat.completion", Created: o.j.created, Model: o.j.model.name,
			Choices: []chatChoice{{Message: &chatOut{Role: "assistant", Content: &text}, FinishReason: &finish}},
			Usage:   &u,
		})
		return
	}
	writeJSON(o.w, http.StatusOK, textCompletion{
		ID: o.j.id, Object: "text_completion", Created: o.j.created, Model: o.j.model.name,
		Choices: []textChoice{{Text: text, FinishReason: &finish}},
		Usage:   &u,
	})
}

// streamEvent writes ev's text as a chunk, committing the stream on the first event (so
// errors a router reports before its first token still get their HTTP status). It
// reports false when the client is gone.
func (o *writer) streamEvent(ev *proto.TokenEvent) bool {
	if !o.committed {
		o.committed = true
		h := o.w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
		o.w.WriteHeader(http.StatusOK)
		if o.j.chat { // OpenAI's first chunk carries the role alone
			empty := ""
			if !o.sse(o.chatChunk(&chatOut{Role: "assistant", Content: &empty}, nil)) {
				return false
			}
		}
	}
	if ev.Text == "" {
		return true
	}
	if o.j.chat {
		return o.sse(o.chatChunk(&chatOut{Content: &ev.Text}, nil))
	}
	return o.sse(o.textChunk(ev.Text, nil))
}

func (o *writer) streamEnd(finish string, u usage) {
	var ok bool
	if o.j.chat {
		ok = o.sse(o.chatChunk(&chatOut{}, &finish))
	} else {
		ok = o.sse(o.textChunk("", &finish))
	}
	if ok && o.j.usage {
		// OpenAI's usage chunk: no choices, the usage of the whole request.
		if o.j.chat {
			c := o.chatChunk(nil, nil)
			c.Choices, c.Usage = []chatChoice{}, &u
			ok = o.sse(c)
		} else {
			c := o.textChunk("", nil)
			c.Choices, c.Usage = []textChoice{}, &u
			ok = o.sse(c)
		}
	}
	if ok {
		o.raw("data: [DONE]\n\n")
	}
}

func (o *writer) chatChunk(delta *chatOut, finish *string) chatChunk {
	c := chatChunk{ID: o.j.id, Object: "chat.completion.chunk", Created: o.j.created, Model: o.j.model.name}
	if delta != nil {
		c.Choices = []chatChoice{{Delta: delta, FinishReason: finish}}
	}
	return c
}

func (o *writer) textChunk(text string, finish *string) textCompletion {
	return textCompletion{ID: o.j.id, Object: "text_completion", Created: o.j.created, Model: o.j.model.name,
		Choices: []textChoice{{Text: text, FinishReason: finish}}}
}

// sse writes v as one event and flushes it; false means the client is gone.
func (o *writer) sse(v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		return false // our own types always marshal
	}
	return o.raw("data: " + string(b) + "\n\n")
}

func (o *writer) raw(s string) bool {
	if _, err := o.w.Write([]byte(s)); err != nil {
		return false
	}
	return http.NewResponseController(o.w).Flush() == nil
}
