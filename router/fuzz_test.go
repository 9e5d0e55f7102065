package router

import (
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/moemesh/moemesh/proto"
)

// genReq is a GenerateRequest as the micro endpoint hands it to service.generate; it
// records the answer instead of publishing it, so the handler is fuzzed without a server.
type genReq struct {
	data       []byte
	headers    micro.Headers
	answers    int
	resp       []byte
	code, desc string
}

func (r *genReq) Respond(b []byte, opts ...micro.RespondOpt) error {
	r.answers++
	r.resp = b
	m := &nats.Msg{}
	for _, o := range opts {
		o(m)
	}
	r.code, r.desc = m.Header.Get(proto.HeaderErrorCode), m.Header.Get(proto.HeaderError)
	return nil
}
func (r *genReq) RespondJSON(any, ...micro.RespondOpt) error { r.answers++; return nil }
func (r *genReq) Error(code, desc string, _ []byte, _ ...micro.RespondOpt) error {
	r.answers++
	r.code, r.desc = code, desc
	return nil
}
func (r *genReq) Data() []byte           { return r.data }
func (r *genReq) Headers() micro.Headers { return r.headers }
func (r *genReq) Subject() string        { return proto.GenSubject("m") }
func (r *genReq) Reply() string          { return "_INBOX.fuzz" }

// FuzzServiceGenerate drives the router's gen handler (service.generate) and its cancel
// handler (Engine.Cancel of the body) with any body and trace header. Every request is
// answered exactly once: a GenerateAccepted naming this router and the request, after
// which the engine holds the request; or a documented code: the decoder's own code for a
// body it refuses (400, 409), else 400 for what the model cannot take or 413 for what
// its context cannot hold. Never a panic.
//
// Each exec gets a fresh engine that is never Run (so no goroutine and no emit): the
// handler's part ends when the request is queued.
func FuzzServiceGenerate(f *testing.F) {
	l := tinyLM(f)
	vocab := int32(l.cfg.Vocab)
	for _, r := range []*proto.GenerateRequest{
		{V: proto.Version, ID: "r1", Tenant: "t", Prompt: proto.I32s{1, 2, 3}, MaxTokens: 4, Inbox: "_INBOX.a",
			Sampling: proto.Sampling{Temperature: 0.7, TopP: 0.9, TopK: 5, Seed: 3, HasSeed: true}, StopIDs: proto.I32s{7}},
		{V: proto.Version, ID: "r2", Prompt: proto.I32s{vocab - 1}, MaxTokens: 1 << 30, Inbox: "_INBOX.b", Priority: proto.PriorityBatch, Weight: 3},
		{V: proto.Version, ID: "r3", Prompt: proto.I32s{vocab}, MaxTokens: 1, Inbox: "_INBOX.c"},
		{V: proto.Version, ID: "r4", Prompt: make(proto.I32s, 70), MaxTokens: 1, Inbox: "_INBOX.d"},
		{V: proto.Version, ID: "r5", Prompt: proto.I32s{1}, MaxTokens: 1, Inbox: "_INBOX.e", Stop: []string{"x"}},
	} {
		data, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		f.Add(data[:len(data)-1], "")
	}
	f.Add([]byte("r1"), "")
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, data []byte, traceparent string) {
		e, err := NewEngine(EngineConfig{Decoder: l.dec, Experts: l.experts, Context: 64, TenantQueue: 2, Queue: 4})
		if err != nil {
			t.Fatal(err)
		}
		s := &service{cfg: ServiceConfig{ID: "r1", Model: "m", Engine: e}, log: log}
		h := nats.Header{}
		if traceparent != "" {
			h.Set("traceparent", traceparent)
		}
		req := &genReq{data: data, headers: micro.Headers(h)}
		s.generate(req)
		if req.answers != 1 {
			t.Fatalf("answered %d times", req.answers)
		}
		var r proto.GenerateRequest
		decodeErr := proto.DecodeGenerateRequest(data, &r)
		if req.code == "" {
			var acc proto.GenerateAccepted
			if err := proto.DecodeGenerateAccepted(req.resp, &acc); err != nil || acc.ID != r.ID || acc.Router != "r1" || decodeErr != nil {
				t.Fatalf("accepted %+v (%v) for request %q (%v)", acc, err, r.ID, decodeErr)
			}
			if !e.Cancel(r.ID) {
				t.Fatalf("the engine does not hold accepted request %q", r.ID)
			}
			return
		}
		code, err := strconv.Atoi(req.code)
		switch {
		case err != nil || req.desc == "" || strings.ContainsAny(req.desc, "\r\n"):
			t.Fatalf("error %q %q", req.code, req.desc)
		case decodeErr != nil && proto.Code(code) != proto.CodeOf(decodeErr):
			t.Fatalf("code %d for a body the decoder refuses with %v", code, decodeErr)
		case proto.Code(code) != proto.CodeBadRequest && proto.Code(code) != proto.CodeVersion && proto.Code(code) != proto.CodeTooLarge:
			t.Fatalf("code %d: %s", code, req.desc)
		}
		// A cancel naming what was never accepted is a no-op.
		if e.Cancel(string(data)) {
			t.Fatalf("cancel %q found a request", data)
		}
	})
}
