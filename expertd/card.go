package expertd

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/tracing"
)

// job is one ExpertBatch waiting for its card.
type job struct {
	req      micro.Request
	b        proto.ExpertBatch
	x        []float32
	enq      time.Time
	deadline time.Time
	tenants  map[string]int // expert pairs per tenant (header Moe-Tenant)
	op       *cardOp        // not a batch: work for the worker, run in queue order (see card.do)
}

// card is one served card: its device, the experts on it, a queue and the worker that
// owns the device.
type card struct {
	id, device string
	dev        ascend.Card
	ops        *opCard // dev with op spans: what the expert set computes on
	set        *model.ExpertSet
	experts    int
	jobs       chan *job
	log        *slog.Logger
	maxMerge   int

	inflight atomic.Int64 // accepted and not yet answered
	rows     atomic.Int64 // rows computed, for the rate in the lease
	runs     atomic.Int64 // grouped computations run (fewer than batches when coalescing)
	busy     atomic.Int64 // nanoseconds spent computing, for the lease
	mu       sync.Mutex
	lastRows int64
	lastBusy int64
	lastAt   time.Time
	tenants  map[string]int64 // expert pairs computed per tenant
	// states overrides the lease state of experts being loaded or drained by a live
	// reconcile (reconcile.go); experts not in it are ready. Guarded by mu.
	states map[model.ExpertKey]uint8
	beat   chan struct{} // closed and replaced after each lease written (see beaten); guarded by mu
	beats  int64         // leases written; guarded by mu

	// Worker scratch, reused by every group so that the steady state allocates nothing of
	// the card's own: the merged batch, the output, one result to encode, one reply body
	// per batch of the group (a body must stay intact until the group is done: a responder
	// may hold it, as tests do; NATS copies it while publishing), and the group's splits.
	x       []float32
	rowPtr  []int32
	ex      []int32
	w       []float32
	out     []float32
	res     proto.ExpertResult
	bodies  [][]byte
	nbodies int
	live    []*job
	part    []*job
	rest    []*job

	// free holds answered jobs for handle to reuse, with their decoded batch and rows.
	free chan *job
}

func newCard(id, device string, dev ascend.Card, mcfg *model.Config, cfg Config) *card {
	ops := &opCard{Card: dev, card: id}
	set := model.NewExpertSet(ops, mcfg.Hidden, mcfg.ExpertIntermediate, mcfg.SwiGLULimit)
	set.SetWeightDType(cfg.WeightDType)
	return &card{
		id: id, device: device, dev: dev, ops: ops,
		set:      set,
		experts:  mcfg.Experts,
		jobs:     make(chan *job, cfg.QueueDepth),
		free:     make(chan *job, cfg.QueueDepth+cfg.MaxCoalesce+1),
		log:      cfg.Logger.With("card", id),
		maxMerge: cfg.MaxCoalesce,
		lastAt:   time.Now(),
		states:   map[model.ExpertKey]uint8{},
		beat:     make(chan struct{}),
	}
}

func (c *card) close() error {
	return errors.Join(c.set.Close(), c.dev.Close())
}

// newJob takes an answered job for reuse, or makes one.
func (c *card) newJob(req micro.Request) *job {
	select {
	case j := <-c.free:
		j.req, j.enq, j.deadline, j.tenants = req, time.Now(), time.Time{}, nil
		return j
	default:
		return &job{req: req, enq: time.Now()}
	}
}

// recycle hands back a job that was answered and that nothing references any more.
func (c *card) recycle(j *job) {
	if j.op != nil {
		return // ops belong to card.do's caller
	}
	j.req, j.tenants = nil, nil
	select {
	case c.free <- j:
	default:
	}
}

// handle runs on the endpoint's goroutine: decode and check here, so decoding overlaps
// the worker's compute, then queue. The batch and its rows are decoded into a reused job
// and copied out of the message, which the handler must not keep.
func (c *card) handle(req micro.Request) {
	req = c.traced(req)
	j := c.newJob(req)
	if !c.decode(j) {
		c.recycle(j)
		return
	}
	c.inflight.Add(1)
	select {
	case c.jobs <- j:
	default:
		c.inflight.Add(-1)
		mesh.RespondError(req, proto.Errorf(proto.CodeUnavailable, "card %s queue full (%d batches)", c.id, cap(c.jobs)))
		c.recycle(j)
	}
}

// decode fills j from its request, answering the request with the error when it fails.
func (c *card) decode(j *job) bool {
	req := j.req
	if err := proto.DecodeExpertBatch(req.Data(), &j.b, c.experts); err != nil {
		mesh.RespondError(req, err)
		return false
	}
	if dl := req.Headers().Get(proto.HeaderDeadline); dl != "" {
		ns, err := strconv.ParseInt(dl, 10, 64)
		if err != nil {
			mesh.RespondError(req, proto.Errorf(proto.CodeBadRequest, "header %s: %q is not unix nanoseconds", proto.HeaderDeadline, dl))
			return false
		}
		j.deadline = time.Unix(0, ns)
	}
	if t := req.Headers().Get(proto.HeaderTenant); t != "" {
		var err error
		if j.tenants, err = proto.ParseTenantPairs(t); err != nil {
			mesh.RespondError(req, err)
			return false
		}
	}
	if int(j.b.X.Shape[1]) != c.set.Hidden() {
		mesh.RespondError(req, proto.Errorf(proto.CodeBadRequest, "rows of width %d, the model's hidden size is %d", j.b.X.Shape[1], c.set.Hidden()))
		return false
	}
	var err error
	if j.x, err = j.b.X.F32(j.x); err != nil {
		mesh.RespondError(req, err)
		return false
	}
	return true
}

// work owns the device: it takes queued batches, merges those that arrived together into
// one grouped run per (layer, mode), and answers each. An op (card.do) in the queue runs
// after every batch queued before it and before any batch queued after it.
func (c *card) work(ctx context.Context) {
	group := make([]*job, 0, c.maxMerge)
	for {
		select {
		case <-ctx.Done():
			for {
				select {
				case j := <-c.jobs:
					if j.op != nil {
						j.op.done <- errCardStopped
						continue
					}
					c.fail(j, proto.Errorf(proto.CodeUnavailable, "card %s is shutting down", c.id))
					c.recycle(j)
				default:
					return
				}
			}
		case j := <-c.jobs:
			if j.op != nil {
				j.op.run()
				continue
			}
			group = append(group[:0], j)
			var op *cardOp
		more:
			for len(group) < c.maxMerge {
				select {
				case j := <-c.jobs:
					if j.op != nil {
						op = j.op
						break more
					}
					group = append(group, j)
				default:
					break more
				}
			}
			c.runGroup(group)
			if op != nil {
				op.run()
			}
		}
	}
}

func (c *card) fail(j *job, err error) {
	mesh.RespondError(j.req, err)
	c.inflight.Add(-1)
}

// runGroup splits the group by (layer, mode) and runs each part as one computation. Every
// job of the group is answered when it returns, and handed back for reuse.
func (c *card) runGroup(group []*job) {
	defer func() {
		for _, j := range group {
			c.recycle(j)
		}
	}()
	now := time.Now()
	c.nbodies = 0
	live := c.live[:0]
	for _, j := range group {
		switch {
		case !j.deadline.IsZero() && now.After(j.deadline):
			c.fail(j, proto.Errorf(proto.CodeDeadline, "batch waited %v on card %s past its deadline", now.Sub(j.enq).Round(time.Microsecond), c.id))
		case !c.holds(j):
			// A stale placement: tell the router to use another replica.
		default:
			live = append(live, j)
		}
	}
	part, rest := c.part, c.rest
	for len(live) > 0 {
		first := live[0]
		part, rest = part[:0], rest[:0]
		for _, j := range live {
			if j.b.Layer == first.b.Layer && j.b.Mode == first.b.Mode {
				part = append(part, j)
			} else {
				rest = append(rest, j)
			}
		}
		c.runPart(part, now)
		live, rest = rest, live
	}
	c.live, c.part, c.rest = live[:0], part[:0], rest[:0]
	clear(c.live[:cap(c.live)]) // drop references to answered jobs
	clear(c.part[:cap(c.part)])
	clear(c.rest[:cap(c.rest)])
}

func (c *card) holds(j *job) bool {
	for _, e := range j.b.Experts {
		if !c.set.Has(model.ExpertKey{Layer: int(j.b.Layer), Expert: int(e)}) {
			c.fail(j, proto.Errorf(proto.CodeNotFound, "expert %d/%d is not on card %s", j.b.Layer, e, c.id))
			return false
		}
	}
	return true
}

func (c *card) runPart(part []*job, dequeued time.Time) {
	h := c.set.Hidden()
	pairs := part[0].b.Mode == proto.ModePairs
	c.x, c.rowPtr, c.ex, c.w = c.x[:0], append(c.rowPtr[:0], 0), c.ex[:0], c.w[:0]
	outRows := 0
	for _, j := range part {
		base := c.rowPtr[len(c.rowPtr)-1]
		c.x = append(c.x, j.x...)
		for _, p := range j.b.RowPtr[1:] {
			c.rowPtr = append(c.rowPtr, base+p)
		}
		c.ex = append(c.ex, j.b.Experts...)
		c.w = append(c.w, j.b.Weights...)
		if pairs {
			outRows += len(j.b.Experts)
		} else {
			outRows += j.b.Rows()
		}
	}
	if cap(c.out) < outRows*h {
		c.out = make([]float32, outRows*h)
	}
	out := c.out[:outRows*h]
	op := c.startOp(part, dequeued, len(c.rowPtr)-1, len(c.ex))
	if op != nil {
		c.ops.parent = trace.ContextWithSpan(context.Background(), op)
	}
	start := time.Now()
	err := c.set.Compute(model.Batch{Layer: int(part[0].b.Layer), X: c.x, RowPtr: c.rowPtr, Experts: c.ex, Weights: c.w}, pairs, out)
	compute := time.Since(start)
	c.ops.parent = nil
	c.busy.Add(int64(compute))
	if op != nil {
		endSpan(op, err)
	}
	c.runs.Add(1)
	if err != nil {
		c.log.WarnContext(trace.ContextWithSpan(context.Background(), op), "expert batch failed", "layer", part[0].b.Layer, "batches", len(part), "err", err)
		err = wireError(err)
		for _, j := range part {
			c.fail(j, err)
		}
		return
	}
	c.rows.Add(int64(len(c.rowPtr) - 1))
	c.account(part)
	off := 0
	for _, j := range part {
		n := j.b.Rows()
		if pairs {
			n = len(j.b.Experts)
		}
		res := &c.res
		res.V, res.Layer = proto.Version, j.b.Layer
		res.QueueNanos, res.ComputeNanos = int64(dequeued.Sub(j.enq)), int64(compute)
		err := res.Y.SetF32(j.b.OutDType, out[off*h:(off+n)*h], int64(n), int64(h))
		off += n
		if err != nil {
			c.fail(j, err)
			continue
		}
		data := c.body(res)
		if err := j.req.Respond(data); err != nil {
			c.log.Warn("reply failed", "err", err)
		}
		c.inflight.Add(-1)
	}
}

// body encodes res into the group's next reply buffer.
func (c *card) body(res *proto.ExpertResult) []byte {
	if c.nbodies == len(c.bodies) {
		c.bodies = append(c.bodies, nil)
	}
	b := proto.AppendExpertResult(c.bodies[c.nbodies][:0], res)
	c.bodies[c.nbodies] = b
	c.nbodies++
	return b
}

// account adds the computed batches' pairs to their tenants.
func (c *card) account(part []*job) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, j := range part {
		for t, n := range j.tenants {
			if c.tenants == nil {
				c.tenants = map[string]int64{}
			}
			c.tenants[t] += int64(n)
		}
	}
}

// wireError maps a compute error to its wire code.
func wireError(err error) error {
	switch {
	case errors.Is(err, model.ErrNotLoaded):
		return &proto.Error{Code: proto.CodeNotFound, Msg: err.Error()}
	case errors.Is(err, ascend.ErrOutOfMemory):
		return &proto.Error{Code: proto.CodeOutOfMemory, Msg: err.Error()}
	case errors.Is(err, ascend.ErrShape), errors.Is(err, ascend.ErrInvalid):
		return &proto.Error{Code: proto.CodeBadRequest, Msg: err.Error()}
	}
	return &proto.Error{Code: proto.CodeInternal, Msg: err.Error()}
}

// status is the card's lease. Called from the heartbeat goroutine: it reads only
// what is safe to read concurrently with the worker (the expert set is locked).
func (c *card) status(daemon string, draining, leaving bool) *proto.CardStatus {
	mi := c.dev.MemInfo()
	st := &proto.CardStatus{V: proto.Version, Card: c.id, Daemon: daemon, Device: c.device,
		MemTotal: mi.Total, MemUsed: mi.Used, Queue: int32(len(c.jobs)), Beat: time.Now().UnixNano(),
		Draining: draining, Leaving: leaving}
	keys := c.keys()
	c.mu.Lock()
	for _, k := range keys {
		state := proto.StateReady
		if s, ok := c.states[k]; ok {
			state = s
		}
		if draining {
			state = proto.StateDraining
		}
		st.Experts = append(st.Experts, proto.ExpertState{Layer: int32(k.Layer), Expert: int32(k.Expert), State: state})
	}
	for k, s := range c.states {
		if s == proto.StateLoading && !c.set.Has(k) {
			st.Experts = append(st.Experts, proto.ExpertState{Layer: int32(k.Layer), Expert: int32(k.Expert), State: s})
		}
	}
	now, rows, busy := time.Now(), c.rows.Load(), c.busy.Load()
	if dt := now.Sub(c.lastAt).Seconds(); dt > 0 {
		st.TokensPerSec = float32(float64(rows-c.lastRows) / dt)
		// A computation is counted when it ends, so one that began in the previous window
		// can push the fraction past 1.
		st.Busy = float32(min(1, float64(busy-c.lastBusy)/1e9/dt))
	}
	st.BusyNanos = busy
	c.lastRows, c.lastBusy, c.lastAt = rows, busy, now
	c.mu.Unlock()
	return st
}

// keys lists the experts held; the set locks itself, so this is safe beside the worker and
// a live reconcile.
func (c *card) keys() []model.ExpertKey { return c.set.Keys() }

// waitIdle waits until no batch is in flight, at least min (so routers see a draining
// lease before the endpoint goes), and at most until ctx is done.
func (c *card) waitIdle(ctx context.Context, min time.Duration) {
	t0 := time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if c.inflight.Load() == 0 && time.Since(t0) >= min {
			return
		}
		select {
		case <-ctx.Done():
			if n := c.inflight.Load(); n > 0 {
				c.log.Warn("drain timed out", "in_flight", n)
			}
			return
		case <-tick.C:
		}
	}
}

// tracedReq is a batch request in a sampled trace: its SERVER span starts when the batch
// arrives and ends when the reply (or error) is sent, whichever path sends it.
type tracedReq struct {
	micro.Request
	ctx  context.Context // carries span
	span trace.Span
}

func (r *tracedReq) Respond(data []byte, opts ...micro.RespondOpt) error {
	err := r.Request.Respond(data, opts...)
	endSpan(r.span, err)
	return err
}

func (r *tracedReq) RespondJSON(v any, opts ...micro.RespondOpt) error {
	err := r.Request.RespondJSON(v, opts...)
	endSpan(r.span, err)
	return err
}

func (r *tracedReq) Error(code, description string, data []byte, opts ...micro.RespondOpt) error {
	err := r.Request.Error(code, description, data, opts...)
	if r.span.IsRecording() {
		r.span.SetAttributes(tracing.ErrorCode.String(code))
		r.span.SetStatus(codes.Error, description)
	}
	r.span.End()
	return err
}

// traced wraps req in its SERVER span when the router sent the context of a sampled trace
// at detail layer or deeper (the level travels in the baggage); else req comes back as is.
func (c *card) traced(req micro.Request) micro.Request {
	h := req.Headers()
	// Looked up directly: the carrier's Get canonicalises a missing key, an allocation for
	// every untraced batch.
	if len(h["traceparent"]) == 0 && len(h["Traceparent"]) == 0 {
		return req
	}
	ctx := tracing.Extract(context.Background(), h)
	if !trace.SpanContextFromContext(ctx).IsSampled() || tracing.DetailFrom(ctx) < tracing.DetailLayer {
		return req
	}
	ctx, span := tracing.Tracer().Start(ctx, "process "+req.Subject(), trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(tracing.System, tracing.Destination.String(req.Subject()), tracing.Operation.String("process"),
			tracing.BodySize.Int(len(req.Data())), tracing.Card.String(c.id), tracing.Tenant.String(h.Get(proto.HeaderTenant))))
	if !span.IsRecording() {
		return req
	}
	return &tracedReq{Request: req, ctx: ctx, span: span}
}

// startOp starts the span of one grouped computation at detail op. A computation may serve
// batches of several traces: its parent is the first traced batch's SERVER span, and it
// links to every traced batch's span. Nil when no batch asks for it.
func (c *card) startOp(part []*job, dequeued time.Time, rows, pairs int) trace.Span {
	var parent *tracedReq
	var links []trace.Link
	for _, j := range part {
		tr, ok := j.req.(*tracedReq)
		if !ok {
			continue
		}
		tr.span.SetAttributes(tracing.Layer.Int(int(j.b.Layer)), tracing.Rows.Int(j.b.Rows()),
			tracing.QueueMS.Float64(float64(dequeued.Sub(j.enq))/1e6))
		if tracing.DetailFrom(tr.ctx) < tracing.DetailOp {
			continue
		}
		if parent == nil {
			parent = tr
		}
		links = append(links, trace.Link{SpanContext: tr.span.SpanContext()})
	}
	if parent == nil {
		return nil
	}
	_, span := tracing.Tracer().Start(parent.ctx, "expert.compute", trace.WithLinks(links...), trace.WithAttributes(
		tracing.Card.String(c.id), tracing.Layer.Int(int(part[0].b.Layer)), tracing.Rows.Int(rows),
		tracing.Pairs.Int(pairs), tracing.Batches.Int(len(part)), tracing.Experts.Int(distinct(c.ex))))
	return span
}

// distinct counts the different values in ids.
func distinct(ids []int32) int {
	seen := make(map[int32]struct{}, len(ids))
	for _, id := range ids {
		seen[id] = struct{}{}
	}
	return len(seen)
}

// endSpan ends span, marking it failed when err is set.
func endSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
