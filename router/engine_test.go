package router

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moemesh/moemesh/ascend"
	_ "github.com/moemesh/moemesh/ascend/cpu"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/decoder"
	"github.com/moemesh/moemesh/model/nn"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/model/synth"
	"github.com/moemesh/moemesh/proto"
)

// lm is a tiny model with in-process experts.
type lm struct {
	dec     decoder.Decoder
	experts model.Experts
	cfg     *model.Config
}

var (
	lmOnce sync.Once
	lmVal  *lm
	lmErr  error
)

// tinyLM loads one tiny qwen3_moe checkpoint for every engine test of the binary.
func tinyLM(t testing.TB) *lm {
	t.Helper()
	lmOnce.Do(func() {
		dir, err := osTempDir()
		if err != nil {
			lmErr = err
			return
		}
		cfg, err := synth.Write(dir, synth.Options{Arch: "qwen3_moe", Seed: 5, DType: "bf16"})
		if err != nil {
			lmErr = err
			return
		}
		ck, err := safetensors.Open(dir)
		if err != nil {
			lmErr = err
			return
		}
		be, err := ascend.Open("cpu")
		if err != nil {
			lmErr = err
			return
		}
		card, err := be.OpenCard(0, 0)
		if err != nil {
			lmErr = err
			return
		}
		dec, err := decoder.Load(ck, cfg, card)
		if err != nil {
			lmErr = err
			return
		}
		local, err := model.LoadLocal(ck, cfg, card, cfg.MoELayers())
		if err != nil {
			lmErr = err
			return
		}
		lmVal = &lm{dec: dec, experts: local, cfg: cfg}
	})
	if lmErr != nil {
		t.Fatal(lmErr)
	}
	return lmVal
}

// solo generates greedily for one prompt, one whole-prompt prefill then one token a step.
func (l *lm) solo(t *testing.T, prompt []int32, n int) []int32 {
	t.Helper()
	seq, err := l.dec.NewSequence(nil, len(prompt)+n)
	if err != nil {
		t.Fatal(err)
	}
	defer seq.Close()
	logits := [][]float32{make([]float32, l.cfg.Vocab)}
	var out []int32
	step := prompt
	for range n {
		if err := l.dec.Forward(context.Background(), []decoder.Sequence{seq}, [][]int32{step}, l.experts, logits); err != nil {
			t.Fatal(err)
		}
		tok := nn.Argmax(logits[0])
		out = append(out, tok)
		step = []int32{tok}
	}
	return out
}

// collector gathers each request's events.
type collector struct {
	mu     sync.Mutex
	events map[string][]proto.TokenEvent
	done   map[string]chan struct{}
}

func newCollector() *collector {
	return &collector{events: map[string][]proto.TokenEvent{}, done: map[string]chan struct{}{}}
}

func (c *collector) emit(id string) Emit {
	c.mu.Lock()
	c.done[id] = make(chan struct{})
	c.mu.Unlock()
	return func(ev *proto.TokenEvent) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.events[id] = append(c.events[id], *ev)
		if ev.Finish != "" {
			close(c.done[id])
		}
	}
}

func (c *collector) wait(t *testing.T, id string) (tokens []int32, last proto.TokenEvent) {
	t.Helper()
	c.mu.Lock()
	done := c.done[id]
	c.mu.Unlock()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("request %s never finished", id)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, ev := range c.events[id] {
		if ev.Seq != uint32(i) || ev.ID != id {
			t.Fatalf("request %s event %d has seq %d id %s", id, i, ev.Seq, ev.ID)
		}
		tokens = append(tokens, ev.Tokens...)
		if ev.Finish != "" && i != len(c.events[id])-1 {
			t.Fatalf("request %s: events after the finish", id)
		}
	}
	return tokens, c.events[id][len(c.events[id])-1]
}

func startEngine(t *testing.T, cfg EngineConfig) *Engine {
	t.Helper()
	l := tinyLM(t)
	cfg.Decoder, cfg.Experts = l.dec, l.experts
	e, err := NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return e
}

func request(id, tenant string, prompt []int32, max int32) *proto.GenerateRequest {
	return &proto.GenerateRequest{V: proto.Version, ID: id, Tenant: tenant, Prompt: prompt, MaxTokens: max, Inbox: "_INBOX." + id}
}

func prompt(n int, seed int32) []int32 {
	p := make([]int32, n)
	for i := range p {
		p[i] = (seed*31 + int32(i)*7) % 500
	}
	return p
}

// Continuous batching with small steps (prompts chunked, decodes mixed in, more sequences
// than a step takes) gives every request exactly its solo greedy tokens, with steps whole
// and with steps cut into two micro-batches.
func TestEngineMatchesSolo(t *testing.T) {
	for _, micro := range []int{0, 2} {
		t.Run(fmt.Sprint("micro-batch-rows=", micro), func(t *testing.T) {
			l := tinyLM(t)
			e := startEngine(t, EngineConfig{StepTokens: 9, MaxBatch: 3, MaxSeqs: 5, MicroBatchRows: micro})
			c := newCollector()
			const n = 12
			lens := []int{1, 5, 17, 3, 30, 8, 2, 11}
			for i, ln := range lens {
				id := fmt.Sprint("r", i)
				if _, err := e.Submit(request(id, fmt.Sprint("t", i%3), prompt(ln, int32(i)), n), c.emit(id)); err != nil {
					t.Fatal(err)
				}
			}
			for i, ln := range lens {
				got, last := c.wait(t, fmt.Sprint("r", i))
				want := l.solo(t, prompt(ln, int32(i)), n)
				if !slices.Equal(got, want) {
					t.Errorf("request %d (prompt %d): %v, solo %v", i, ln, got, want)
				}
				if last.Finish != proto.FinishLength || last.Usage != (proto.Usage{Prompt: int32(ln), Completion: n}) {
					t.Errorf("request %d: finish %q usage %+v", i, last.Finish, last.Usage)
				}
			}
			<-e.Idle()
			st := e.Stats()
			if st.KV.InUse != 0 || st.KV.Reserved != 0 || st.Finished[proto.FinishLength] != int64(len(lens)) {
				t.Fatalf("after all finished: %+v", st)
			}
			if split := st.SplitSteps > 0; split != (micro > 0) {
				t.Fatalf("micro-batch rows %d: %d of %d steps split", micro, st.SplitSteps, st.Steps)
			}
		})
	}
}

// A seeded sampled request gives the same tokens alone and batched with others; another
// seed gives other tokens.
func TestEngineSeededSampling(t *testing.T) {
	e := startEngine(t, EngineConfig{StepTokens: 8})
	run := func(id string, seed uint64, others int) []int32 {
		c := newCollector()
		for k := range others {
			oid := fmt.Sprint(id, "-other", k)
			r := request(oid, "x", prompt(6+k, int32(k)), 10)
			r.Sampling = proto.Sampling{Temperature: 1, Seed: uint64(k), HasSeed: true}
			if _, err := e.Submit(r, c.emit(oid)); err != nil {
				t.Fatal(err)
			}
		}
		r := request(id, "a", prompt(9, 4), 24)
		r.Sampling = proto.Sampling{Temperature: 1.5, TopK: 50, TopP: 0.95, Seed: seed, HasSeed: true}
		if _, err := e.Submit(r, c.emit(id)); err != nil {
			t.Fatal(err)
		}
		got, _ := c.wait(t, id)
		return got
	}
	alone := run("s1", 42, 0)
	batched := run("s2", 42, 4)
	other := run("s3", 43, 0)
	if !slices.Equal(alone, batched) {
		t.Fatalf("seed 42 alone %v, batched %v", alone, batched)
	}
	if slices.Equal(alone, other) {
		t.Fatalf("seeds 42 and 43 gave the same %v", alone)
	}
}

// Stop token ids end a request with "stop", counting the stop token.
func TestEngineStopID(t *testing.T) {
	l := tinyLM(t)
	want := l.solo(t, prompt(7, 1), 10)
	e := startEngine(t, EngineConfig{})
	c := newCollector()
	r := request("stop", "a", prompt(7, 1), 10)
	r.StopIDs = proto.I32s{want[3]}
	if _, err := e.Submit(r, c.emit("stop")); err != nil {
		t.Fatal(err)
	}
	got, last := c.wait(t, "stop")
	k := slices.Index(want, want[3])
	if !slices.Equal(got, want[:k+1]) || last.Finish != proto.FinishStop || last.Usage.Completion != int32(k+1) {
		t.Fatalf("got %v finish %q usage %+v; solo %v", got, last.Finish, last.Usage, want)
	}
}

// Cancelling a running request ends it with "cancelled" within a step and gives its KV
// memory back; cancelling a queued one never runs it.
func TestEngineCancel(t *testing.T) {
	l := tinyLM(t)
	budget := l.dec.KVBytes(nn.DefaultBlockRows, 10+4000)
	e := startEngine(t, EngineConfig{KVBudget: budget, Context: 100000})
	c := newCollector()
	var first sync.Once
	started := make(chan struct{})
	emit := c.emit("long")
	if _, err := e.Submit(request("long", "a", prompt(10, 2), 4000), func(ev *proto.TokenEvent) {
		emit(ev)
		first.Do(func() { close(started) })
	}); err != nil {
		t.Fatal(err)
	}
	// Only one such request fits the budget: the second waits in the queue.
	if _, err := e.Submit(request("queued", "a", prompt(10, 3), 4000), c.emit("queued")); err != nil {
		t.Fatal(err)
	}
	<-started
	if st := e.Stats(); st.KV.InUse == 0 || st.Queued != 1 {
		t.Fatalf("running: %+v", st)
	}
	if !e.Cancel("queued") || !e.Cancel("long") {
		t.Fatal("cancel did not know the requests")
	}
	if e.Cancel("nobody") {
		t.Fatal("cancel of an unknown id")
	}
	toks, last := c.wait(t, "long")
	if last.Finish != proto.FinishCancel || len(toks) == 0 || len(toks) >= 4000 {
		t.Fatalf("long: finish %q after %d tokens", last.Finish, len(toks))
	}
	toks, last = c.wait(t, "queued")
	if last.Finish != proto.FinishCancel || len(toks) != 0 {
		t.Fatalf("queued: finish %q after %d tokens", last.Finish, len(toks))
	}
	<-e.Idle()
	if st := e.Stats(); st.KV.InUse != 0 || st.KV.Reserved != 0 {
		t.Fatalf("after cancel: %+v", st.KV)
	}
}

// The KV budget bounds resident sequences; requests beyond it wait and then run.
func TestEngineKVBudget(t *testing.T) {
	l := tinyLM(t)
	per := l.dec.KVBytes(nn.DefaultBlockRows, 12+8)
	e := startEngine(t, EngineConfig{KVBudget: 2 * per})
	c := newCollector()
	for i := range 5 {
		id := fmt.Sprint("b", i)
		if _, err := e.Submit(request(id, "a", prompt(12, int32(i)), 8), c.emit(id)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		got, last := c.wait(t, fmt.Sprint("b", i))
		if want := l.solo(t, prompt(12, int32(i)), 8); !slices.Equal(got, want) || last.Finish != proto.FinishLength {
			t.Fatalf("request %d: %v (%s), solo %v", i, got, last.Finish, want)
		}
	}
	_, err := e.Submit(request("huge", "a", prompt(12, 0), 1000), c.emit("huge"))
	if pe := (*proto.Error)(nil); !errors.As(err, &pe) || pe.Code != proto.CodeTooLarge {
		t.Fatalf("request over the whole budget: %v", err)
	}
}

func TestEngineRejects(t *testing.T) {
	l := tinyLM(t)
	// Not running: what is submitted stays queued.
	e, err := NewEngine(EngineConfig{Decoder: l.dec, Experts: l.experts, TenantQueue: 2, Queue: 3, Context: 64})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := e.Submit(request(fmt.Sprint("q", i), "busy", prompt(4, 1), 5), func(*proto.TokenEvent) {}); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	stopReq := request("s", "a", prompt(4, 1), 5)
	stopReq.Stop = []string{"x"}
	cases := []struct {
		name string
		req  *proto.GenerateRequest
		code proto.Code
	}{
		{"tenant queue full", request("q3", "busy", prompt(4, 1), 5), proto.CodeTooMany},
		{"token id", request("v", "a", []int32{int32(l.cfg.Vocab)}, 5), proto.CodeBadRequest},
		{"prompt too long", request("p", "a", prompt(64, 1), 5), proto.CodeTooLarge},
		{"empty prompt", request("e", "a", nil, 5), proto.CodeBadRequest},
		{"duplicate id", request("q0", "other", prompt(4, 1), 5), proto.CodeBadRequest},
		{"stop strings without a tokenizer", stopReq, proto.CodeBadRequest},
		{"fills the router queue", request("ok", "other", prompt(4, 1), 5), 0},
		{"router queue full", request("full", "third", prompt(4, 1), 5), proto.CodeUnavailable},
	}
	for _, c := range cases {
		_, err := e.Submit(c.req, func(*proto.TokenEvent) {})
		if c.code == 0 {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if pe := (*proto.Error)(nil); !errors.As(err, &pe) || pe.Code != c.code {
			t.Errorf("%s: %v, want code %d", c.name, err, c.code)
		}
	}
	e.Close()
	if _, err := e.Submit(request("closed", "a", prompt(4, 1), 5), func(*proto.TokenEvent) {}); !errors.Is(err, proto.ErrUnavailable) {
		t.Errorf("closed engine: %v", err)
	}
}

// Under contention every step is shared by weight: a weight-3 tenant is served three
// times the tokens of a weight-1 tenant (within 10%) while both have work.
func TestEngineWeightedShare(t *testing.T) {
	e := startEngine(t, EngineConfig{MaxBatch: 4, MaxSeqs: 16, StepTokens: 64})
	var mu sync.Mutex
	served := map[string]int{}
	stopCounting := false
	c := newCollector()
	for i := range 6 {
		for _, tn := range []struct {
			id string
			w  float32
		}{{"light", 1}, {"heavy", 3}} {
			id := fmt.Sprint(tn.id, i)
			r := request(id, tn.id, prompt(1, int32(i)), 60)
			r.Weight = tn.w
			emit := c.emit(id)
			if _, err := e.Submit(r, func(ev *proto.TokenEvent) {
				mu.Lock()
				if ev.Finish != "" {
					stopCounting = true // from here on one tenant may run out of work
				}
				if !stopCounting {
					served[tn.id] += len(ev.Tokens)
				}
				mu.Unlock()
				emit(ev)
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 6 {
		c.wait(t, fmt.Sprint("light", i))
		c.wait(t, fmt.Sprint("heavy", i))
	}
	mu.Lock()
	defer mu.Unlock()
	ratio := float64(served["heavy"]) / float64(served["light"])
	t.Logf("served while contended: %v (ratio %.3f)", served, ratio)
	if served["light"] < 20 || ratio < 2.7 || ratio > 3.3 {
		t.Fatalf("heavy/light = %.3f, want 3 ± 10%% (%v)", ratio, served)
	}
}

func osTempDir() (string, error) { return os.MkdirTemp("", "moemesh-router-") }

// The collector reports what the engine holds: KV in use while a request runs, none after
// it is cancelled.
func TestCollector(t *testing.T) {
	e := startEngine(t, EngineConfig{KVBudget: 1 << 30})
	c := NewCollector(e, prometheus.Labels{"router": "r1"})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	started := make(chan struct{})
	var once sync.Once
	done := make(chan struct{})
	if _, err := e.Submit(request("m", "acme", prompt(5, 1), 100000), func(ev *proto.TokenEvent) {
		once.Do(func() { close(started) })
		if ev.Finish != "" {
			close(done)
		}
	}); err != nil {
		t.Fatal(err)
	}
	<-started
	gauge := func(name, label, value string) float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if lp.GetName() == label && lp.GetValue() == value {
						if m.GetGauge() != nil {
							return m.GetGauge().GetValue()
						}
						return m.GetCounter().GetValue()
					}
				}
			}
		}
		t.Fatalf("no %s{%s=%q}", name, label, value)
		return 0
	}
	if v := gauge("moemesh_router_kv_bytes", "state", "in_use"); v <= 0 {
		t.Fatalf("kv in use while running: %v", v)
	}
	if v := gauge("moemesh_router_resident_sequences", "router", "r1"); v != 1 {
		t.Fatalf("resident while running: %v", v)
	}
	e.Cancel("m")
	<-done
	if v := gauge("moemesh_router_kv_bytes", "state", "in_use"); v != 0 {
		t.Fatalf("kv in use after cancel: %v", v)
	}
	if v := gauge("moemesh_router_resident_sequences", "router", "r1"); v != 0 {
		t.Fatalf("resident after cancel: %v", v)
	}
	if v := gauge("moemesh_router_finished_total", "reason", "cancelled"); v != 1 {
		t.Fatalf("cancelled: %v", v)
	}
	if v := gauge("moemesh_router_tenant_tokens_total", "tenant", "acme"); v < 5 {
		t.Fatalf("tenant tokens: %v", v)
	}
}

// The model's eos ends a request with "stop" unless it asks to ignore eos.
func TestEngineEOS(t *testing.T) {
	l := tinyLM(t)
	want := l.solo(t, prompt(6, 9), 12)
	e := startEngine(t, EngineConfig{EOS: []int32{want[2]}})
	c := newCollector()
	plain := request("plain", "a", prompt(6, 9), 12)
	ignore := request("ignore", "a", prompt(6, 9), 12)
	ignore.IgnoreEOS = true
	for _, r := range []*proto.GenerateRequest{plain, ignore} {
		if _, err := e.Submit(r, c.emit(r.ID)); err != nil {
			t.Fatal(err)
		}
	}
	k := slices.Index(want, want[2])
	if got, last := c.wait(t, "plain"); !slices.Equal(got, want[:k+1]) || last.Finish != proto.FinishStop {
		t.Fatalf("plain: %v (%s), solo %v", got, last.Finish, want)
	}
	if got, last := c.wait(t, "ignore"); !slices.Equal(got, want) || last.Finish != proto.FinishLength {
		t.Fatalf("ignore eos: %v (%s), solo %v", got, last.Finish, want)
	}
}
