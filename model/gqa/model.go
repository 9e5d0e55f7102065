package gqa

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/nn"
)

// Model is a loaded gqa-family decoder. Forward calls are serialised by a mutex, because
// the card and the Linears' scratch buffers serve one goroutine at a time; concurrency
// comes from batching many sequences into one Forward instead.
type Model struct {
	cfg  *model.Config
	card ascend.Card
	p    params
	rope *nn.Rope

	embed     *nn.Embedding
	finalNorm []float32
	lmHead    *nn.Linear
	layers    []layer
	bufs      []ascend.Buffer // weight buffers this model allocated (Linears do not own them)

	mu     sync.Mutex
	closed bool
	s      [2]scratch // one per micro-batch (see ForwardSplit)
}

// scratch is the host memory of one step, grown to the largest step seen.
type scratch struct {
	ids                []int32
	h, x, q, k, v, att []float32
	o, ffn, last       []float32
	logits             []float32
	// Dense-layer batch: row r uses "expert" 0 with weight 1.
	rowPtr, zeros []int32
	ones          []float32
	moe           model.MoECall
}

// Config is the model's configuration.
func (m *Model) Config() *model.Config { return m.cfg }

// Close frees everything the model holds on its card. It is safe to call twice.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	var errs []error
	closeLin := func(l *nn.Linear) {
		if l != nil {
			errs = append(errs, l.Close())
		}
	}
	closeLin(m.lmHead)
	for i := range m.layers {
		ly := &m.layers[i]
		for _, l := range []*nn.Linear{ly.attn.q, ly.attn.k, ly.attn.v, ly.attn.o} {
			closeLin(l)
		}
		if ly.moe != nil {
			errs = append(errs, ly.moe.Close())
		}
		if ly.dense != nil {
			errs = append(errs, ly.dense.Close())
		}
	}
	for _, b := range m.bufs {
		errs = append(errs, m.card.Free(b))
	}
	m.bufs, m.layers = nil, nil
	return errors.Join(errs...)
}

// Sequence is one sequence's KV cache and position. It belongs to the Model that made it
// and is used by one Forward at a time (the Model's mutex ensures that).
type Sequence struct {
	m        *Model
	kv       *nn.KVCache
	n        int
	capacity int
	// broken is set when a Forward failed after this sequence's cache was partly
	// appended to: its layers then disagree on length, so it must not be stepped again.
	broken error
}

// NewSequence makes an empty sequence that can hold capacity tokens, its KV cache in a
// private pool without a budget.
func (m *Model) NewSequence(capacity int) (*Sequence, error) { return m.NewSequenceIn(nil, capacity) }

// NewSequenceIn makes an empty sequence whose KV cache draws on pool: it reserves the
// worst case for capacity tokens and fails with an error wrapping nn.ErrCacheFull when the
// pool's budget cannot cover it. Close gives the memory back.
func (m *Model) NewSequenceIn(pool *nn.KVPool, capacity int) (*Sequence, error) {
	if capacity <= 0 {
		return nil, fmt.Errorf("%w: sequence capacity %d", nn.ErrInvalid, capacity)
	}
	w := m.cfg.KVHeads * m.cfg.HeadDim
	kv, err := nn.NewKVCacheIn(pool, m.cfg.Layers, capacity, w, w)
	if err != nil {
		return nil, err
	}
	return &Sequence{m: m, kv: kv, capacity: capacity}, nil
}

// Len is the number of tokens the sequence holds (the position of its next token).
func (s *Sequence) Len() int { return s.n }

// Cap is the sequence's token capacity.
func (s *Sequence) Cap() int { return s.capacity }

// Reset empties the sequence (also after a failed step), returning its cache blocks to
// the pool but keeping its reservation. A closed sequence stays closed.
func (s *Sequence) Reset() {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.kv.Reset()
	if !errors.Is(s.broken, model.ErrSequenceClosed) {
		s.n, s.broken = 0, nil
	}
}

// Close frees the sequence's cache and reservation; the sequence cannot be stepped again.
// It is safe to call twice.
func (s *Sequence) Close() {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.kv.Close()
	s.n, s.broken = 0, model.ErrSequenceClosed
}

// grow returns s resized to n values, reusing its memory.
func grow(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}

// validate checks a Forward's arguments without changing any state; rows is the total
// number of new tokens.
func (m *Model) validate(seqs []*Sequence, tokens [][]int32, logits [][]float32) (rows int, err error) {
	return model.CheckStep(seqs, tokens, logits, m.cfg.Vocab, func(s *Sequence) model.SeqState {
		return model.SeqState{Mine: s.m == m, Len: s.n, Cap: s.capacity, Broken: s.broken}
	})
}

// Forward runs one step for a batch of sequences: sequence i appends tokens[i] (a prefill
// chunk or one decode token) at positions s.Len()…, and logits[i] (len vocab, caller-
// allocated) receives the logits of its last new token. All new tokens of all sequences go
// through each MoE layer in one experts.Forward call (that is how the mesh gets big
// batches); linears run batched over all rows; attention runs per sequence against its own
// cache. Every kernel is row-independent, so a sequence's logits do not depend on what it
// is batched with or how its prompt is chunked.
//
// Invalid arguments return an error and change nothing. An error after the step started
// (experts, card, cancelled ctx) leaves the step's sequences broken until Reset.
func (m *Model) Forward(ctx context.Context, seqs []*Sequence, tokens [][]int32, experts model.Experts, logits [][]float32) error {
	return m.ForwardSplit(ctx, seqs, tokens, experts, logits, 0)
}

// ForwardSplit is Forward with the step cut into two micro-batches, the first split
// sequences and the rest (split 0 or len(seqs): one part), that go through the layers
// interleaved (model.RunLayers); the results are the same bits as Forward's. The second
// part's experts calls carry model.WithFirstRow.
func (m *Model) ForwardSplit(ctx context.Context, seqs []*Sequence, tokens [][]int32, experts model.Experts, logits [][]float32, split int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("%w: gqa model is closed", ascend.ErrClosed)
	}
	if experts == nil {
		return fmt.Errorf("%w: no experts", nn.ErrInvalid)
	}
	rows, err := m.validate(seqs, tokens, logits)
	if err != nil {
		return err
	}
	parts, err := model.Parts(ctx, seqs, tokens, rows, split)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := m.step(parts, experts, logits); err != nil {
		for _, s := range seqs {
			s.broken = model.StepFailed(err)
		}
		return err
	}
	for i, s := range seqs {
		s.n += len(tokens[i])
	}
	return nil
}

// step is Forward after validation.
func (m *Model) step(parts []model.Part[*Sequence], experts model.Experts, logits [][]float32) error {
	cfg, p := m.cfg, &m.p
	H, hd := cfg.Hidden, cfg.HeadDim
	qw, kvw := cfg.Heads*hd, cfg.KVHeads*hd
	for k, pt := range parts {
		s, rows := &m.s[k], pt.Rows
		s.ids = s.ids[:0]
		for _, t := range pt.Tokens {
			s.ids = append(s.ids, t...)
		}
		s.h, s.x, s.o, s.ffn = grow(s.h, rows*H), grow(s.x, rows*H), grow(s.o, rows*H), grow(s.ffn, rows*H)
		s.q, s.att = grow(s.q, rows*qw), grow(s.att, rows*qw)
		s.k, s.v = grow(s.k, rows*kvw), grow(s.v, rows*kvw)
		if err := m.embed.Lookup(s.h, s.ids); err != nil {
			return err
		}
		if p.embMul != 1 {
			nn.Scale(s.h, p.embMul)
		}
	}
	err := model.RunLayers(parts[0].Ctx, len(m.layers), len(parts), func(li, k int) (*model.MoECall, error) {
		pt, ly, s := &parts[k], &m.layers[li], &m.s[k]
		nn.RMSNorm(s.x, s.h, ly.inNorm, p.eps, pt.Rows)
		if err := m.attention(li, ly, s, pt.Seqs, pt.Tokens, pt.Rows); err != nil {
			return nil, fmt.Errorf("layer %d attention: %w", li, err)
		}
		residual(s.h, s.o, p.resMul)
		nn.RMSNorm(s.x, s.h, ly.postNorm, p.eps, pt.Rows)
		if ly.moe == nil {
			return nil, m.denseForward(li, ly, s, pt.Rows)
		}
		// One call with every row of the part: the mesh's batch is the whole part.
		if err := ly.moe.Start(pt.Ctx, s.x, s.ids, experts, s.ffn, &s.moe); err != nil {
			return nil, err
		}
		return &s.moe, nil
	}, func(k int) error { residual(m.s[k].h, m.s[k].ffn, p.resMul); return nil })
	if err != nil {
		return err
	}
	// Only each sequence's last new row needs the final norm and lm_head: gathered from
	// every part into one batch.
	B, s := len(logits), &m.s[0]
	last := grow(m.s[1].last, B*H)
	m.s[1].last = last
	model.GatherLast(last, parts, H, func(k int) []float32 { return m.s[k].h })
	nn.RMSNorm(last, last, m.finalNorm, p.eps, B)
	s.logits = grow(s.logits, B*cfg.Vocab)
	if err := m.lmHead.Forward(s.logits, last, B); err != nil {
		return fmt.Errorf("lm_head: %w", err)
	}
	for i := range logits {
		row := s.logits[i*cfg.Vocab : (i+1)*cfg.Vocab]
		if p.logitDiv != 1 {
			// Divided, not multiplied by the reciprocal, to round as HF does.
			for j := range row {
				row[j] /= p.logitDiv
			}
		}
		copy(logits[i], row)
	}
	return nil
}

// residual is h += mul·y, the product rounded before the add as in HF's
// `residual + hidden_states * residual_multiplier` (mul is 1 outside Granite, exact).
func residual(h, y []float32, mul float32) {
	for i, v := range y {
		h[i] += float32(v * mul) // explicit rounding: no fused multiply-add
	}
}

// attention computes o = o_proj(Attn(x)) for all rows of the step, appending each
// sequence's new keys and values to its cache.
func (m *Model) attention(li int, ly *layer, s *scratch, seqs []*Sequence, tokens [][]int32, rows int) error {
	cfg, p, a := m.cfg, &m.p, &ly.attn
	hd := cfg.HeadDim
	qw, kvw := cfg.Heads*hd, cfg.KVHeads*hd
	if err := a.q.Forward(s.q, s.x, rows); err != nil {
		return err
	}
	if err := a.k.Forward(s.k, s.x, rows); err != nil {
		return err
	}
	if err := a.v.Forward(s.v, s.x, rows); err != nil {
		return err
	}
	switch p.qk {
	case qkPerHead:
		nn.RMSNormHeads(s.q, s.q, a.qNorm, p.eps, rows, cfg.Heads, hd)
		nn.RMSNormHeads(s.k, s.k, a.kNorm, p.eps, rows, cfg.KVHeads, hd)
	case qkWhole:
		nn.RMSNorm(s.q, s.q, a.qNorm, p.eps, rows)
		nn.RMSNorm(s.k, s.k, a.kNorm, p.eps, rows)
	}
	if p.clip > 0 {
		// OLMoE clamps q, k and v after the norm, before RoPE.
		nn.Clamp(s.q, p.clip)
		nn.Clamp(s.k, p.clip)
		nn.Clamp(s.v, p.clip)
	}
	off := 0
	for i, seq := range seqs {
		n := len(tokens[i])
		q := s.q[off*qw : (off+n)*qw]
		k := s.k[off*kvw : (off+n)*kvw]
		v := s.v[off*kvw : (off+n)*kvw]
		m.rope.Apply(q, cfg.Heads, hd, hd, seq.n, nil)
		m.rope.Apply(k, cfg.KVHeads, hd, hd, seq.n, nil)
		kv := seq.kv.Layer(li)
		if err := kv.Append(k, v, n); err != nil {
			return err
		}
		if err := nn.Attend(s.att[off*qw:(off+n)*qw], q, kv.Keys(), kv.Values(), seq.n, p.attn); err != nil {
			return err
		}
		off += n
	}
	return a.o.Forward(s.o, s.att, rows)
}

// denseForward runs a dense layer's SwiGLU MLP on the card, every row with weight 1.
func (m *Model) denseForward(li int, ly *layer, s *scratch, rows int) error {
	if len(s.ones) != rows {
		s.rowPtr, s.zeros, s.ones = make([]int32, rows+1), make([]int32, rows), make([]float32, rows)
		for i := range s.rowPtr {
			s.rowPtr[i] = int32(i)
		}
		for i := range s.ones {
			s.ones[i] = 1
		}
	}
	b := model.Batch{Layer: li, X: s.x, RowPtr: s.rowPtr, Experts: s.zeros, Weights: s.ones}
	if err := ly.dense.Compute(b, false, s.ffn); err != nil {
		return fmt.Errorf("layer %d dense mlp: %w", li, err)
	}
	return nil
}

// KVWidths is the values a cached token holds per layer: keys and values of every kv head.
func (m *Model) KVWidths() (k, v int) { w := m.cfg.KVHeads * m.cfg.HeadDim; return w, w }
