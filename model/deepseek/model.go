package deepseek

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/nn"
)

// Model is a loaded DeepSeek-V2/V3-architecture decoder. Forward calls are serialised by
// a mutex, because the card and the Linears' scratch buffers serve one goroutine at a
// time; concurrency comes from batching many sequences into one Forward instead.
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
	ids                  []int32
	h, x, o, ffn         []float32
	qa, q, kva, ckv, kpe []float32
	kvb, k, v, att       []float32
	last, logits         []float32
	rowPtr, zeros        []int32
	ones                 []float32
	moe                  model.MoECall
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
		for _, l := range ly.attn.linears() {
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
//
// The cache holds the expanded per-head keys [heads·(nope+rope)] and values [heads·v] of
// every token and layer (simple, non-absorbed MLA). That costs heads·(nope+rope+v)
// floats per token per layer — 128·320 = 40960 for V3, 71× the 576 values of the latent
// c_kv + k_pe an absorbed-MLA cache would keep — but lets nn.Attend run MLA as ordinary
// multi-head attention. Absorbing kv_b_proj into q and o_proj is a later optimisation.
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
	p := &m.p
	kv, err := nn.NewKVCacheIn(pool, m.cfg.Layers, capacity, p.heads*p.qkDim, p.heads*p.vDim)
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
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// validate checks a Forward's arguments without changing any state; rows is the total
// number of new tokens.
func (m *Model) validate(seqs []*Sequence, tokens [][]int32, logits [][]float32) (rows int, err error) {
	if len(seqs) == 0 {
		return 0, fmt.Errorf("%w: no sequences", nn.ErrInvalid)
	}
	return model.CheckStep(seqs, tokens, logits, m.cfg.Vocab, func(s *Sequence) model.SeqState {
		return model.SeqState{Mine: s.m == m, Len: s.n, Cap: s.capacity, Broken: s.broken}
	})
}

// Forward runs one step for a batch of sequences: sequence i appends tokens[i] (a prefill
// chunk or one decode token) at positions s.Len()…, and logits[i] (len vocab, caller-
// allocated) receives the logits of its last new token. All new tokens of all sequences go
// through each MoE layer in ONE experts.Forward call (the mesh's batch is the whole step);
// dense (first_k_dense_replace) layers run their MLP on the card; linears run batched over
// all rows; attention runs per sequence against its own cache. Every kernel is
// row-independent, so a sequence's logits do not depend on what it is batched with or
// how its prompt is chunked.
//
// Invalid arguments return an error and change nothing. An error after the step started
// (experts, card, cancelled ctx) leaves the step's sequences broken until Reset.
func (m *Model) Forward(ctx context.Context, seqs []*Sequence, tokens [][]int32, experts model.Experts, logits [][]float32) error {
	return m.ForwardSplit(ctx, seqs, tokens, experts, logits, 0)
}

// ForwardSplit is Forward with the step cut into two micro-batches, the first split
// sequences and the rest (split 0 or len(seqs): one part), that go through the layers
// interleaved (model.RunLayers); the results are the same bits as Forward's.
func (m *Model) ForwardSplit(ctx context.Context, seqs []*Sequence, tokens [][]int32, experts model.Experts, logits [][]float32, split int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("%w: deepseek model is closed", ascend.ErrClosed)
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
	H := cfg.Hidden
	for k, pt := range parts {
		s, rows := &m.s[k], pt.Rows
		s.ids = s.ids[:0]
		for _, t := range pt.Tokens {
			s.ids = append(s.ids, t...)
		}
		s.h, s.x, s.o, s.ffn = grow(s.h, rows*H), grow(s.x, rows*H), grow(s.o, rows*H), grow(s.ffn, rows*H)
		if err := m.embed.Lookup(s.h, s.ids); err != nil {
			return err
		}
	}
	err := model.RunLayers(parts[0].Ctx, len(m.layers), len(parts), func(li, k int) (*model.MoECall, error) {
		pt, ly, s := &parts[k], &m.layers[li], &m.s[k]
		nn.RMSNorm(s.x, s.h, ly.inNorm, p.eps, pt.Rows)
		if err := m.attention(li, ly, s, pt.Seqs, pt.Tokens, pt.Rows); err != nil {
			return nil, fmt.Errorf("layer %d attention: %w", li, err)
		}
		residual(s.h, s.o)
		nn.RMSNorm(s.x, s.h, ly.postNorm, p.eps, pt.Rows)
		if ly.moe == nil {
			return nil, m.denseForward(li, ly, s, pt.Rows)
		}
		// Routed experts through the seam, shared expert on this card (MoELayer).
		if err := ly.moe.Start(pt.Ctx, s.x, s.ids, experts, s.ffn, &s.moe); err != nil {
			return nil, err
		}
		return &s.moe, nil
	}, func(k int) error { residual(m.s[k].h, m.s[k].ffn); return nil })
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
		copy(logits[i], s.logits[i*cfg.Vocab:(i+1)*cfg.Vocab])
	}
	return nil
}

// residual is h += y.
func residual(h, y []float32) {
	for i, v := range y {
		h[i] += v
	}
}

// attention computes o = o_proj(MLA(x)) for all rows of the step (models.md §4),
// appending each sequence's expanded keys and values to its cache:
//
//	q   = q_b_proj(RMSNorm(q_a_proj x))   or q_proj x        → per head [q_nope | q_pe]
//	kva = kv_a_proj_with_mqa x                               → [c_kv | k_pe]
//	kv  = kv_b_proj(RMSNorm(c_kv))                           → per head [k_nope | v]
//	k_h = [k_nope_h | rope(k_pe)], q_pe = rope(q_pe)          (k_pe shared by all heads)
func (m *Model) attention(li int, ly *layer, s *scratch, seqs []*Sequence, tokens [][]int32, rows int) error {
	p, a := &m.p, &ly.attn
	heads, nope, rp, vd, qk, lora := p.heads, p.nope, p.rope, p.vDim, p.qkDim, p.kvLora
	qw, kw, vw, bw := heads*qk, heads*qk, heads*vd, nope+vd
	s.q, s.att = grow(s.q, rows*qw), grow(s.att, rows*vw)
	if a.qa != nil {
		s.qa = grow(s.qa, rows*p.qLora)
		if err := a.qa.Forward(s.qa, s.x, rows); err != nil {
			return err
		}
		nn.RMSNorm(s.qa, s.qa, a.qaNorm, p.eps, rows)
		if err := a.qb.Forward(s.q, s.qa, rows); err != nil {
			return err
		}
	} else if err := a.q.Forward(s.q, s.x, rows); err != nil {
		return err
	}
	s.kva = grow(s.kva, rows*(lora+rp))
	if err := a.kva.Forward(s.kva, s.x, rows); err != nil {
		return err
	}
	// Split [c_kv | k_pe] into contiguous rows: the norm and kv_b_proj take c_kv rows, the
	// rope takes k_pe rows as a single "head".
	s.ckv, s.kpe = grow(s.ckv, rows*lora), grow(s.kpe, rows*rp)
	for t := range rows {
		row := s.kva[t*(lora+rp) : (t+1)*(lora+rp)]
		copy(s.ckv[t*lora:(t+1)*lora], row[:lora])
		copy(s.kpe[t*rp:(t+1)*rp], row[lora:])
	}
	nn.RMSNorm(s.ckv, s.ckv, a.kvNorm, p.eps, rows)
	s.kvb = grow(s.kvb, rows*heads*bw)
	if err := a.kvb.Forward(s.kvb, s.ckv, rows); err != nil {
		return err
	}
	s.k, s.v = grow(s.k, rows*kw), grow(s.v, rows*vw)
	off := 0
	for i, seq := range seqs {
		n := len(tokens[i])
		q := s.q[off*qw : (off+n)*qw]
		kpe := s.kpe[off*rp : (off+n)*rp]
		// RopeInterleaved rotates the last rp dims of each head: q_pe inside q's heads,
		// and all of k_pe.
		m.rope.Apply(q, heads, qk, rp, seq.n, nil)
		m.rope.Apply(kpe, 1, rp, rp, seq.n, nil)
		for t := off; t < off+n; t++ {
			pe := s.kpe[t*rp : (t+1)*rp]
			for h := range heads {
				src := s.kvb[(t*heads+h)*bw : (t*heads+h+1)*bw]
				kd := s.k[(t*heads+h)*qk : (t*heads+h+1)*qk]
				copy(kd[:nope], src[:nope])
				copy(kd[nope:], pe)
				copy(s.v[(t*heads+h)*vd:(t*heads+h+1)*vd], src[nope:])
			}
		}
		kv := seq.kv.Layer(li)
		if err := kv.Append(s.k[off*kw:(off+n)*kw], s.v[off*vw:(off+n)*vw], n); err != nil {
			return err
		}
		if err := nn.Attend(s.att[off*vw:(off+n)*vw], q, kv.Keys(), kv.Values(), seq.n, p.attn); err != nil {
			return err
		}
		off += n
	}
	return a.o.Forward(s.o, s.att, rows)
}

// denseForward runs a dense layer's SwiGLU MLP on the card, every row with weight 1.
func (m *Model) denseForward(li int, ly *layer, s *scratch, rows int) error {
	s.rowPtr, s.zeros, s.ones = grow(s.rowPtr, rows+1), grow(s.zeros, rows), grow(s.ones, rows)
	for i := range s.rowPtr {
		s.rowPtr[i] = int32(i)
	}
	clear(s.zeros)
	for i := range s.ones {
		s.ones[i] = 1
	}
	b := model.Batch{Layer: li, X: s.x, RowPtr: s.rowPtr, Experts: s.zeros, Weights: s.ones}
	if err := ly.dense.Compute(b, false, s.ffn); err != nil {
		return fmt.Errorf("layer %d dense mlp: %w", li, err)
	}
	return nil
}

// KVWidths is the values a cached token holds per layer: expanded per-head keys and values.
func (m *Model) KVWidths() (k, v int) { return m.p.heads * m.p.qkDim, m.p.heads * m.p.vDim }
