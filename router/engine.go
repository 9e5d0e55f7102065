package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/decoder"
	"github.com/moemesh/moemesh/model/nn"
	"github.com/moemesh/moemesh/model/tokenizer"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/tracing"
)

// EngineConfig configures the generation engine of one router.
type EngineConfig struct {
	Decoder decoder.Decoder
	Experts model.Experts // the mesh (router.Mesh) or in process (model.Local)
	// Tokenizer turns tokens into the events' text and enables stop strings; nil sends ids
	// only and rejects requests with stop strings.
	Tokenizer *tokenizer.Tokenizer
	EOS       []int32 // tokens that end every generation (generation_config's eos ids)
	Context   int     // the model's context length (max_position_embeddings); 0: no limit
	// KVBudget bounds the KV cache of all sequences in bytes (0: unlimited); BlockRows is
	// its page size in tokens (0: nn.DefaultBlockRows).
	KVBudget  int64
	BlockRows int
	// MaxSeqs bounds resident sequences (default 64); MaxBatch the sequences stepped at
	// once (default 32); StepTokens the tokens of one step, prompt chunks and decode
	// tokens together (default 512).
	MaxSeqs, MaxBatch, StepTokens int
	// TenantQueue bounds each tenant's waiting requests (default 64; beyond: 429), Queue
	// all waiting requests (default 1024; beyond: 503).
	TenantQueue, Queue int
	// Deadline is the default time a request may take (default 10 minutes).
	Deadline time.Duration
	// TraceDetail is how deep a sampled request's trace goes (default request: one span
	// per request; layer adds step, MoE layer and card spans; op adds the daemons'
	// compute spans). The level travels to the daemons in the trace's baggage.
	TraceDetail tracing.Detail
	Logger      *slog.Logger
	// NoExpress turns off express steps (a new interactive request's prompt in a step of
	// its own, see express.go): every step is then filled by weight alone.
	NoExpress bool
	// MicroBatchRows: a step of at least this many rows and two or more sequences runs as
	// two micro-batches, one computing attention while the other's experts are out
	// (decoder.ForwardSplit); 0 never splits. Worth it when experts are remote.
	MicroBatchRows int
}

func (c *EngineConfig) defaults() error {
	if c.Decoder == nil || c.Experts == nil {
		return fmt.Errorf("%w: engine needs a decoder and experts", nn.ErrInvalid)
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.MaxSeqs, 64)
	def(&c.MaxBatch, 32)
	def(&c.StepTokens, 512)
	def(&c.TenantQueue, 64)
	def(&c.Queue, 1024)
	def(&c.BlockRows, nn.DefaultBlockRows)
	if c.Deadline <= 0 {
		c.Deadline = 10 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Emit receives a request's events in order, from the engine's goroutine; it must not
// block for long (publishing to NATS is fine).
type Emit func(*proto.TokenEvent)

// Engine runs continuous batching for one model: requests are admitted by tenant weight
// as KV memory allows, every step mixes prompt chunks and decode tokens of many sequences
// in one Forward, and each sequence's new tokens go out as events after every step.
type Engine struct {
	cfg   EngineConfig
	pool  *nn.KVPool
	vocab int

	mu      sync.Mutex
	fair    fair
	queued  int
	cancels []string
	byID    map[string]*job
	closed  bool
	wake    chan struct{}
	idle    chan struct{} // closed and replaced when the engine has no work
	stats   Stats
	nextAdm int64
	// lastExpress: the previous step was an express step (see express.go); noExpress
	// turns them off.
	lastExpress, noExpress bool
}

// Stats are an engine's counters and gauges.
type Stats struct {
	Queued, Resident                int
	Steps, PromptTokens, GenTokens  int64
	ExpressSteps                    int64            // steps of new interactive prompts only (express.go)
	SplitSteps                      int64            // steps run as two micro-batches
	Finished                        map[string]int64 // by finish reason
	KV                              nn.KVStats
	Tenants                         map[string]int64 // tokens served
	LastStepRows, LastStepSequences int
}

// job is one request inside the engine. Its tokens are the prompt followed by what was
// generated; fed of them are in the KV cache. A step feeds toks[fed:] (a prompt chunk, or
// the last sampled token); when that reaches the end, the step's logits give a new token.
type job struct {
	req      *proto.GenerateRequest
	emit     Emit
	tenant   *tenant
	seq      decoder.Sequence
	toks     []int32
	fed      int
	gen      int32 // tokens generated
	capacity int
	sampler  *nn.Sampler
	text     *tokenizer.Decoder
	stop     stopper
	events   uint32
	received time.Time
	first    bool // the first token was sent
	deadline time.Time
	served   int64
	admitted int64
	retries  int
	pending  proto.TokenEvent // what this step produced, sent after it
	span     trace.Span       // the request's "generate" span, ended by finish
}

// NewEngine makes an engine; Run drives it.
func NewEngine(cfg EngineConfig) (*Engine, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	pool, err := nn.NewKVPool(cfg.KVBudget, cfg.BlockRows)
	if err != nil {
		return nil, err
	}
	return &Engine{
		cfg: cfg, pool: pool, vocab: cfg.Decoder.Config().Vocab,
		fair: fair{tenants: map[string]*tenant{}}, byID: map[string]*job{},
		wake: make(chan struct{}, 1), idle: make(chan struct{}),
		stats: Stats{Finished: map[string]int64{}}, noExpress: cfg.NoExpress,
	}, nil
}

// Submit queues a request; its events go to emit. It fails at once with a *proto.Error:
// 400 for what the model cannot take, 413 for a request whose KV cache alone exceeds the
// budget, 429 when the tenant's queue is full, 503 when the engine is full or closed.
func (e *Engine) Submit(req *proto.GenerateRequest, emit Emit) (queued int, err error) {
	return e.SubmitContext(context.Background(), req, emit)
}

// SubmitContext is Submit for a request whose trace context is in ctx: the request's
// "generate" span is a child of ctx's span and ends when the request finishes.
func (e *Engine) SubmitContext(ctx context.Context, req *proto.GenerateRequest, emit Emit) (queued int, err error) {
	span := startGenerate(ctx, req)
	defer func() {
		if err != nil {
			endSpan(span, err)
		}
	}()
	return e.submit(req, emit, span)
}

func (e *Engine) submit(req *proto.GenerateRequest, emit Emit, span trace.Span) (queued int, err error) {
	if err := req.Validate(); err != nil {
		return 0, err
	}
	for _, id := range req.Prompt {
		if int(id) >= e.vocab {
			return 0, proto.Errorf(proto.CodeBadRequest, "request %s: token id %d is outside the vocabulary of %d", req.ID, id, e.vocab)
		}
	}
	if len(req.Stop) > 0 && e.cfg.Tokenizer == nil {
		return 0, proto.Errorf(proto.CodeBadRequest, "request %s: stop strings need the model's tokenizer, which this router has not loaded", req.ID)
	}
	capacity := len(req.Prompt) + int(req.MaxTokens)
	if c := e.cfg.Context; c > 0 {
		if len(req.Prompt) >= c {
			return 0, proto.Errorf(proto.CodeTooLarge, "request %s: prompt of %d tokens leaves no room in the context of %d", req.ID, len(req.Prompt), c)
		}
		capacity = min(capacity, c)
	}
	if b := e.cfg.KVBudget; b > 0 {
		if need := e.cfg.Decoder.KVBytes(e.cfg.BlockRows, capacity); need > b {
			return 0, proto.Errorf(proto.CodeTooLarge, "request %s: %d tokens need %d bytes of KV cache, the router's budget is %d", req.ID, capacity, need, b)
		}
	}
	cfg := nn.SamplerConfig{Temperature: req.Sampling.Temperature, TopK: int(req.Sampling.TopK), TopP: req.Sampling.TopP, Seed: req.Sampling.Seed}
	if !req.Sampling.HasSeed {
		cfg.Seed = rand.Uint64()
	}
	sampler, err := nn.NewSampler(cfg)
	if err != nil {
		return 0, proto.Errorf(proto.CodeBadRequest, "request %s: %v", req.ID, err)
	}
	now := time.Now()
	j := &job{req: req, emit: emit, toks: append(make([]int32, 0, capacity), req.Prompt...), capacity: capacity,
		sampler: sampler, stop: stopper{stops: req.Stop}, received: now, deadline: now.Add(e.cfg.Deadline), span: span}
	if req.Deadline > 0 {
		j.deadline = time.Unix(0, req.Deadline)
	}
	if e.cfg.Tokenizer != nil {
		j.text = tokenizer.NewDecoderSkipSpecial(e.cfg.Tokenizer)
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		return 0, proto.Errorf(proto.CodeUnavailable, "router is shutting down")
	case e.byID[req.ID] != nil:
		return 0, proto.Errorf(proto.CodeBadRequest, "request id %s is already running", req.ID)
	case e.queued >= e.cfg.Queue:
		return 0, proto.Errorf(proto.CodeUnavailable, "router queue is full (%d requests waiting)", e.queued)
	}
	t := e.fair.get(req.Tenant, float64(req.Weight))
	if len(t.queue) >= e.cfg.TenantQueue {
		return 0, proto.Errorf(proto.CodeTooMany, "tenant %q has %d requests waiting on this router", req.Tenant, len(t.queue))
	}
	j.tenant = t
	t.queue = append(t.queue, j)
	e.queued++
	e.byID[req.ID] = j
	e.signal()
	return len(t.queue) - 1, nil
}

// Cancel ends a request (queued or running) within one step; it reports whether the
// engine knew the id.
func (e *Engine) Cancel(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.byID[id] == nil {
		return false
	}
	e.cancels = append(e.cancels, id)
	e.signal()
	return true
}

// Stats returns a snapshot of the engine's counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.Queued = e.queued
	s.Resident = len(e.byID) - e.queued
	s.KV = e.pool.Stats()
	s.Finished = make(map[string]int64, len(e.stats.Finished))
	for k, v := range e.stats.Finished {
		s.Finished[k] = v
	}
	s.Tenants = make(map[string]int64, len(e.fair.tenants))
	for id, t := range e.fair.tenants {
		s.Tenants[id] = t.served
	}
	return s
}

// Idle returns a channel closed once the engine has no queued or running request.
func (e *Engine) Idle() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.byID) == 0 {
		c := make(chan struct{})
		close(c)
		return c
	}
	return e.idle
}

// Close stops taking requests; Run then finishes what is running and returns once idle
// or when its context ends.
func (e *Engine) Close() {
	e.mu.Lock()
	e.closed = true
	e.signal()
	e.mu.Unlock()
}

func (e *Engine) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Run is the engine's loop; it returns when ctx ends (failing what is left with 503) or,
// after Close, when the last request finished.
func (e *Engine) Run(ctx context.Context) error {
	var resident []*job
	defer func() {
		e.mu.Lock()
		e.closed = true
		left := resident
		for _, t := range e.fair.tenants {
			left = append(left, t.queue...)
			t.queue = nil
		}
		e.queued = 0
		e.mu.Unlock()
		for _, j := range left {
			e.finish(j, proto.FinishError, proto.Errorf(proto.CodeUnavailable, "router stopped"))
		}
	}()
	for {
		e.mu.Lock()
		cancels := e.cancels
		e.cancels = nil
		closed := e.closed
		e.mu.Unlock()
		resident = e.cancel(resident, cancels)
		resident = e.expire(resident)
		resident = e.admit(resident)
		if len(resident) == 0 {
			e.mu.Lock()
			empty := e.queued == 0
			e.mu.Unlock()
			if closed && empty {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-e.wake:
			}
			continue
		}
		resident = e.step(ctx, resident)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// cancel ends the jobs named in ids.
func (e *Engine) cancel(resident []*job, ids []string) []*job {
	for _, id := range ids {
		e.mu.Lock()
		j := e.byID[id]
		if j != nil && j.seq == nil {
			e.unqueue(j)
		}
		e.mu.Unlock()
		if j == nil {
			continue
		}
		if j.seq != nil {
			resident = remove(resident, j)
		}
		e.finish(j, proto.FinishCancel, nil)
	}
	return resident
}

// expire fails jobs past their deadline, queued or running.
func (e *Engine) expire(resident []*job) []*job {
	now := time.Now()
	var late []*job
	e.mu.Lock()
	for _, t := range e.fair.tenants {
		for _, j := range t.queue {
			if now.After(j.deadline) {
				late = append(late, j)
			}
		}
	}
	for _, j := range late {
		e.unqueue(j)
	}
	e.mu.Unlock()
	for _, j := range resident {
		if now.After(j.deadline) {
			late = append(late, j)
			resident = remove(resident, j)
		}
	}
	for _, j := range late {
		e.finish(j, proto.FinishError, proto.Errorf(proto.CodeDeadline, "request %s passed its deadline after %d tokens", j.req.ID, j.gen))
	}
	return resident
}

// unqueue takes a waiting job off its tenant's queue; e.mu is held.
func (e *Engine) unqueue(j *job) {
	t := j.tenant
	for i, q := range t.queue {
		if q == j {
			t.queue = append(t.queue[:i], t.queue[i+1:]...)
			e.queued--
			return
		}
	}
}

// admit moves queued jobs into the resident set, fairest tenant first, while sequences
// and KV memory allow. A job that does not fit waits at the head of its tenant's queue.
func (e *Engine) admit(resident []*job) []*job {
	e.mu.Lock()
	defer e.mu.Unlock()
	for len(resident) < e.cfg.MaxSeqs {
		t := e.fair.next()
		if t == nil {
			break
		}
		j := t.queue[0]
		seq, err := e.cfg.Decoder.NewSequence(e.pool, j.capacity)
		if errors.Is(err, nn.ErrCacheFull) {
			break // memory frees as running sequences finish
		}
		t.queue = t.queue[1:]
		e.queued--
		if err != nil {
			e.mu.Unlock()
			e.finish(j, proto.FinishError, proto.Errorf(proto.CodeInternal, "request %s: %v", j.req.ID, err))
			e.mu.Lock()
			continue
		}
		j.seq = seq
		if j.span != nil {
			j.span.AddEvent("admitted")
		}
		t.resident++
		e.nextAdm++
		j.admitted = e.nextAdm
		resident = append(resident, j)
	}
	e.fair.drop(4 * e.cfg.TenantQueue)
	return resident
}

// remove deletes j from s keeping the order.
func remove(s []*job, j *job) []*job {
	for i, x := range s {
		if x == j {
			return append(s[:i], s[i+1:]...)
		}
	}
	return s
}
