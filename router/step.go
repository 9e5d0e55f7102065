package router

import (
	"context"
	"errors"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/decoder"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/tracing"
)

// maxReplays bounds how often one job's cache is rebuilt after failed steps.
const maxReplays = 3

// plan picks the jobs of the next step and their tokens. When a new interactive request
// qualifies (see express.go) the step is an express step of new prompts only. Otherwise,
// slot by slot it takes a job of the tenant with the smallest virtual time, counting what
// this step already gave it, so one step is shared by weight (interactive before batch);
// inside a tenant, the job served least goes first. Each job takes what it has not fed
// yet — a prompt chunk, or its last sampled token — until MaxBatch jobs or StepTokens
// tokens.
func (e *Engine) plan(resident []*job) (jobs []*job, tokens [][]int32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	order(resident)
	// An express step holding every resident job is just a step: it must not hold back
	// the next real express step.
	if jobs, tokens = e.planExpress(resident); len(jobs) > 0 && len(jobs) < len(resident) {
		e.lastExpress = true
		e.stats.ExpressSteps++
		return jobs, tokens
	}
	jobs, tokens = nil, nil
	e.lastExpress = false
	vt := map[*tenant]float64{}
	for _, j := range resident {
		vt[j.tenant] = j.tenant.vtime
	}
	taken := make([]bool, len(resident))
	budget := e.cfg.StepTokens
	for len(jobs) < e.cfg.MaxBatch && budget > 0 {
		pick := -1
		for i, j := range resident {
			if taken[i] {
				continue
			}
			if pick < 0 {
				pick = i
				continue
			}
			p := resident[pick]
			if j.req.Priority < p.req.Priority || (j.req.Priority == p.req.Priority && vt[j.tenant] < vt[p.tenant]) {
				pick = i
			}
		}
		if pick < 0 {
			break
		}
		j := resident[pick]
		taken[pick] = true
		n := min(len(j.toks)-j.fed, budget)
		jobs = append(jobs, j)
		tokens = append(tokens, j.toks[j.fed:j.fed+n])
		budget -= n
		vt[j.tenant] += float64(n) / j.tenant.weight
	}
	return jobs, tokens
}

// step runs one Forward over the planned jobs, then samples, detokenizes, checks stops
// and sends events. It returns the jobs still resident.
func (e *Engine) step(ctx context.Context, resident []*job) []*job {
	jobs, tokens := e.plan(resident)
	seqs := make([]decoder.Sequence, len(jobs))
	logits := make([][]float32, len(jobs))
	var rowTenants []string
	for i, j := range jobs {
		seqs[i] = j.seq
		logits[i] = make([]float32, e.vocab)
		for range tokens[i] {
			rowTenants = append(rowTenants, j.req.Tenant)
		}
	}
	rows := len(rowTenants)
	split := 0
	if e.cfg.MicroBatchRows > 0 {
		counts := make([]int, len(tokens))
		for i, t := range tokens {
			counts[i] = len(t)
		}
		split = model.SplitRows(counts, e.cfg.MicroBatchRows)
	}
	fctx, experts, stepSpan := e.traceStep(ctx, jobs, rows)
	if stepSpan != nil && split > 0 {
		stepSpan.SetAttributes(tracing.Split.Int(split))
	}
	err := e.cfg.Decoder.ForwardSplit(WithTenants(fctx, rowTenants), seqs, tokens, experts, logits, split)
	if stepSpan != nil {
		endSpan(stepSpan, err)
	}
	e.mu.Lock()
	e.stats.Steps++
	if split > 0 {
		e.stats.SplitSteps++
	}
	e.stats.LastStepRows, e.stats.LastStepSequences = rows, len(jobs)
	for i, j := range jobs {
		e.fair.charge(j.tenant, len(tokens[i]))
	}
	e.mu.Unlock()
	if err != nil {
		return e.failed(ctx, resident, jobs, err)
	}
	for i, j := range jobs {
		j.fed += len(tokens[i])
		j.served += int64(len(tokens[i]))
		if j.fed < len(j.toks) {
			continue // more prompt to feed
		}
		if done := e.sample(j, logits[i]); done {
			resident = remove(resident, j)
		}
	}
	for _, j := range jobs {
		if j.seq != nil && (len(j.pending.Tokens) > 0 || j.pending.Text != "") {
			e.send(j)
		}
	}
	return resident
}

// sample draws the job's next token from logits and decides whether it is done; it
// finishes the job (sending its last event) when it is.
func (e *Engine) sample(j *job, logits []float32) (done bool) {
	tok := j.sampler.Sample(logits)
	j.toks = append(j.toks, tok)
	j.gen++
	j.pending.Tokens = append(j.pending.Tokens, tok)
	e.mu.Lock()
	e.stats.GenTokens++
	if j.gen == 1 {
		e.stats.PromptTokens += int64(len(j.req.Prompt))
	}
	e.mu.Unlock()
	if !j.first {
		j.first = true
		j.pending.TTFTNanos = time.Since(j.received).Nanoseconds()
		if j.span != nil && j.span.IsRecording() {
			j.span.AddEvent("first_token", trace.WithAttributes(tracing.TTFT.Float64(float64(j.pending.TTFTNanos)/1e6)))
		}
	}
	if (!j.req.IgnoreEOS && slices.Contains(e.cfg.EOS, tok)) || slices.Contains(j.req.StopIDs, tok) {
		e.finish(j, proto.FinishStop, nil)
		return true
	}
	if j.text != nil {
		piece, err := j.text.Add(tok)
		if err != nil {
			e.finish(j, proto.FinishError, proto.Errorf(proto.CodeInternal, "request %s: detokenize: %v", j.req.ID, err))
			return true
		}
		out, hit := j.stop.push(piece)
		j.pending.Text += out
		if hit {
			j.text = nil // the text ends before the stop string: nothing more to flush
			e.finish(j, proto.FinishStop, nil)
			return true
		}
	}
	if j.gen >= j.req.MaxTokens || len(j.toks) >= j.capacity {
		e.finish(j, proto.FinishLength, nil)
		return true
	}
	return false
}

// failed handles a step that returned err. Every sequence of the step lost its cache
// state; while the error is one another attempt may fix (a lost card, a busy mesh) and
// the job has replays left, its cache is reset and rebuilt from its tokens by later steps
// (row independence makes the rebuilt logits, and so the tokens, the same). Otherwise the
// job fails with the error's code.
func (e *Engine) failed(ctx context.Context, resident, jobs []*job, err error) []*job {
	code := proto.CodeOf(err)
	switch {
	case ctx.Err() != nil:
		code = proto.CodeUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = proto.CodeDeadline
	case errors.Is(err, ErrNoReplica):
		code = proto.CodeUnavailable
	}
	e.cfg.Logger.Warn("generation step failed", "sequences", len(jobs), "err", err)
	for _, j := range jobs {
		if ctx.Err() == nil && code.Retryable() && j.retries < maxReplays {
			j.retries++
			j.seq.Reset()
			j.fed = 0
			continue
		}
		resident = remove(resident, j)
		e.finish(j, proto.FinishError, proto.Errorf(code, "request %s: step failed after %d tokens: %v", j.req.ID, j.gen, err))
	}
	return resident
}

// send emits the job's pending event.
func (e *Engine) send(j *job) {
	ev := j.pending
	j.pending = proto.TokenEvent{}
	ev.V, ev.ID, ev.Seq = proto.Version, j.req.ID, j.events
	j.events++
	j.emit(&ev)
}

// finish ends a job with reason (err for FinishError), frees its sequence and sends its
// last event, carrying any text still held back and the usage.
func (e *Engine) finish(j *job, reason string, err error) {
	if j.text != nil {
		out, _ := j.stop.push(j.text.Flush())
		j.pending.Text += out + j.stop.flush()
	}
	j.pending.Finish = reason
	j.pending.Usage = proto.Usage{Prompt: int32(len(j.req.Prompt)), Completion: j.gen}
	if err != nil {
		var pe *proto.Error
		if !errors.As(err, &pe) {
			pe = proto.Errorf(proto.CodeInternal, "%v", err)
		}
		j.pending.ErrCode, j.pending.ErrMsg = pe.Code, pe.Msg
	}
	if j.seq != nil {
		j.seq.Close()
	}
	if j.span != nil {
		j.span.SetAttributes(tracing.GenAIFinish.StringSlice([]string{reason}),
			tracing.GenAIInTokens.Int(len(j.req.Prompt)), tracing.GenAIOutTokens.Int(int(j.gen)))
		endSpan(j.span, err)
		j.span = nil
	}
	e.mu.Lock()
	if j.seq != nil {
		j.tenant.resident--
	}
	j.seq = nil
	delete(e.byID, j.req.ID)
	e.stats.Finished[reason]++
	if len(e.byID) == 0 {
		close(e.idle)
		e.idle = make(chan struct{})
	}
	e.mu.Unlock()
	e.send(j)
}

// startGenerate starts a request's "generate" span, a child of the trace context the
// request arrived with.
func startGenerate(ctx context.Context, req *proto.GenerateRequest) trace.Span {
	_, span := tracing.Tracer().Start(ctx, "generate", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(tracing.Tenant.String(req.Tenant), tracing.Request.String(req.ID),
			tracing.GenAIMaxTokens.Int(int(req.MaxTokens)), tracing.GenAIInTokens.Int(len(req.Prompt))))
	return span
}

// endSpan ends span, marking it failed when err is set.
func endSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// traceStep starts the step's span when the detail level asks for it and a job of the
// step is in a sampled trace. A step serves many requests: its span is a child of the first
// sampled job's span (so a request's own trace shows the steps it led) and links to the
// span of every job in it. The returned experts make a span per MoE layer under it. With
// no span, ctx and the configured experts come back unchanged.
func (e *Engine) traceStep(ctx context.Context, jobs []*job, rows int) (context.Context, model.Experts, trace.Span) {
	if e.cfg.TraceDetail < tracing.DetailLayer {
		return ctx, e.cfg.Experts, nil
	}
	var parent *job
	links := make([]trace.Link, 0, len(jobs))
	for _, j := range jobs {
		if j.span == nil || !j.span.IsRecording() {
			continue
		}
		if parent == nil {
			parent = j
		}
		links = append(links, trace.Link{SpanContext: j.span.SpanContext(),
			Attributes: []attribute.KeyValue{tracing.Request.String(j.req.ID), tracing.Tenant.String(j.req.Tenant)}})
	}
	if parent == nil {
		return ctx, e.cfg.Experts, nil
	}
	ctx, span := tracing.Tracer().Start(trace.ContextWithSpan(ctx, parent.span), "router.step",
		trace.WithLinks(links...), trace.WithAttributes(
			tracing.Request.String(parent.req.ID), tracing.Tenant.String(parent.req.Tenant),
			tracing.Sequences.Int(len(jobs)), tracing.StepTokens.Int(rows)))
	return tracing.WithDetail(ctx, e.cfg.TraceDetail), layerSpans{e.cfg.Experts}, span
}

// layerSpans wraps the experts of a traced step: one span per MoE layer's dispatch, the
// parent of the mesh's per-card CLIENT spans.
type layerSpans struct{ model.Experts }

func (l layerSpans) Forward(ctx context.Context, layer int, x []float32, hidden int, r model.Routing, out []float32) error {
	if !tracing.Recording(ctx) || hidden <= 0 {
		return l.Experts.Forward(ctx, layer, x, hidden, r, out)
	}
	ctx, span := tracing.Tracer().Start(ctx, "moe.layer", trace.WithAttributes(
		tracing.Layer.Int(layer), tracing.Rows.Int(len(x)/hidden), tracing.Pairs.Int(len(r.Experts))))
	err := l.Experts.Forward(ctx, layer, x, hidden, r, out)
	endSpan(span, err)
	return err
}
