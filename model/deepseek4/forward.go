package deepseek4

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/nn"
	"github.com/moemesh/moemesh/model/quant"
)

// Model is a loaded V4 decoder: a straightforward host implementation of model.py's
// Transformer.forward (float32 values, float64 sums), with the routed experts behind the
// model.Experts seam so the mesh can serve them. Forward calls are serialised by a mutex;
// concurrency comes from batching sequences into one Forward.
type Model struct {
	cfg    *Config
	card   ascend.Card
	embed  []float32 // [vocab, H]
	norm   []float32
	head   linear
	hcHead HC
	layers []layerW

	mu     sync.Mutex
	closed bool
}

// Config is the shared part of the model's configuration.
func (m *Model) Config() *model.Config { return m.cfg.Config }

// V4 is the model's full V4 configuration.
func (m *Model) V4() *Config { return m.cfg }

// Close frees the MoE layers' card memory. It is safe to call twice.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	var errs []error
	for i := range m.layers {
		if m.layers[i].moe != nil {
			errs = append(errs, m.layers[i].moe.Close())
		}
	}
	return errors.Join(errs...)
}

// KVWidths is what a cached token costs per layer at most, for pool accounting: one
// head_dim row (the raw window row; compressed rows are fewer). The rows themselves live
// in host slices (layerCache); the pool only carries the reservation, so a budget still
// bounds how many V4 sequences are admitted.
func (m *Model) KVWidths() (k, v int) { return m.cfg.HeadDim, 0 }

// layerCache is one layer's KV state of one sequence (model.py Attention.kv_cache and
// the compressors' state): a ring of the last `window` raw KV rows (row = position mod
// window), the compressed rows so far, and for CSA layers the indexer's compressed keys.
type layerCache struct {
	ring  [][]float32
	comp  *Compressor
	rows  [][]float32
	icomp *Compressor
	irows [][]float32
}

// Sequence is one sequence's caches and position.
type Sequence struct {
	m        *Model
	res      *nn.KVCache // the pool reservation only; no rows are appended to it
	n        int
	capacity int
	layers   []layerCache
	broken   error
}

// NewSequence makes an empty sequence of capacity tokens.
func (m *Model) NewSequence(capacity int) (*Sequence, error) { return m.NewSequenceIn(nil, capacity) }

// NewSequenceIn makes a sequence whose worst-case cache (KVWidths per token and layer) is
// reserved in pool; over the pool's budget it fails with an error wrapping
// nn.ErrCacheFull. nil pool: no budget.
func (m *Model) NewSequenceIn(pool *nn.KVPool, capacity int) (*Sequence, error) {
	if capacity <= 0 {
		return nil, fmt.Errorf("%w: sequence capacity %d", nn.ErrInvalid, capacity)
	}
	k, v := m.KVWidths()
	res, err := nn.NewKVCacheIn(pool, m.cfg.Layers, capacity, k, v)
	if err != nil {
		return nil, err
	}
	s := &Sequence{m: m, capacity: capacity, res: res}
	if err := s.init(); err != nil {
		res.Close()
		return nil, err
	}
	return s, nil
}

func (s *Sequence) init() error {
	m := s.m
	s.layers = make([]layerCache, len(m.layers))
	for i := range m.layers {
		a, lc := &m.layers[i].attentionW, &s.layers[i]
		lc.ring = make([][]float32, m.cfg.Window)
		if a.comp != nil {
			c, err := NewCompressor(a.comp.ape, a.ratio, a.comp.d, a.comp.overlap)
			if err != nil {
				return fmt.Errorf("layer %d compressor: %w", i, err)
			}
			lc.comp = c
		}
		if a.idx != nil {
			c, err := NewCompressor(a.idx.comp.ape, a.ratio, a.idx.comp.d, true)
			if err != nil {
				return fmt.Errorf("layer %d indexer compressor: %w", i, err)
			}
			lc.icomp = c
		}
	}
	return nil
}

// Len is the number of tokens held.
func (s *Sequence) Len() int { return s.n }

// Cap is the token capacity.
func (s *Sequence) Cap() int { return s.capacity }

// Reset empties the sequence (also after a failed step). A closed sequence stays closed.
func (s *Sequence) Reset() {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if errors.Is(s.broken, model.ErrSequenceClosed) {
		return
	}
	s.n, s.broken = 0, nil
	_ = s.init() // cannot fail: the same shapes succeeded when the sequence was made
}

// Close drops the caches; the sequence cannot be stepped again.
func (s *Sequence) Close() {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.res.Close()
	s.layers, s.n, s.broken = nil, 0, model.ErrSequenceClosed
}

// Forward appends tokens[i] to seqs[i] and writes the logits of each sequence's last new
// token to logits[i]. All new tokens of the step go through each MoE layer in one
// experts.Forward call; attention runs token by token against each sequence's cache, so
// a prompt gives the same logits whether it is prefilled at once or fed one token at a
// time, and a sequence's logits do not depend on its batch.
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
		return fmt.Errorf("%w: deepseek4 model is closed", ascend.ErrClosed)
	}
	if experts == nil {
		return fmt.Errorf("%w: no experts", nn.ErrInvalid)
	}
	if len(seqs) == 0 {
		return fmt.Errorf("%w: no sequences", nn.ErrInvalid)
	}
	rows, err := model.CheckStep(seqs, tokens, logits, m.cfg.Vocab, func(s *Sequence) model.SeqState {
		return model.SeqState{Mine: s.m == m, Len: s.n, Cap: s.capacity, Broken: s.broken}
	})
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

// stream is one micro-batch's state through the layers: its token ids, the hc residual
// streams X [rows, hc, H], the sublayer input x and output f [rows, H] and the mHC mixes
// of the sublayer in progress.
type stream struct {
	ids   []int32
	X     []float32
	x, f  []float32
	mixes []Mix
	moe   model.MoECall
}

// pre writes the sublayer input: the hc streams mixed down by h's pre weights, normalised.
func (m *Model) pre(st *stream, h HC, norm []float32) error {
	H, hc := m.cfg.Hidden, m.cfg.HCMult
	for t := range st.mixes {
		u, mix, err := h.Pre(st.X[t*hc*H : (t+1)*hc*H])
		if err != nil {
			return err
		}
		copy(st.x[t*H:], u)
		st.mixes[t] = mix
	}
	nn.RMSNorm(st.x, st.x, norm, float32(m.cfg.RMSEps), len(st.mixes))
	return nil
}

// post mixes the sublayer output f back into the hc streams.
func (m *Model) post(st *stream) error {
	H, hc := m.cfg.Hidden, m.cfg.HCMult
	for t, mix := range st.mixes {
		y, err := Post(st.f[t*H:(t+1)*H], st.X[t*hc*H:(t+1)*hc*H], mix)
		if err != nil {
			return err
		}
		copy(st.X[t*hc*H:], y)
	}
	return nil
}

func (m *Model) step(parts []model.Part[*Sequence], experts model.Experts, logits [][]float32) error {
	cfg := m.cfg
	H, hc := cfg.Hidden, cfg.HCMult
	streams := make([]stream, len(parts))
	for k, pt := range parts {
		st := &streams[k]
		st.ids = make([]int32, 0, pt.Rows)
		for _, t := range pt.Tokens {
			st.ids = append(st.ids, t...)
		}
		// The residual is hc copies of the embedding (Transformer.forward).
		st.X = make([]float32, pt.Rows*hc*H)
		for t, id := range st.ids {
			e := m.embed[int(id)*H : int(id+1)*H]
			for j := range hc {
				copy(st.X[(t*hc+j)*H:], e)
			}
		}
		st.x, st.f, st.mixes = make([]float32, pt.Rows*H), make([]float32, pt.Rows*H), make([]Mix, pt.Rows)
	}
	err := model.RunLayers(parts[0].Ctx, len(m.layers), len(parts), func(li, k int) (*model.MoECall, error) {
		pt, ly, st := &parts[k], &m.layers[li], &streams[k]
		if err := m.pre(st, ly.hcAttn, ly.attnNorm); err != nil {
			return nil, fmt.Errorf("layer %d attention: %w", li, err)
		}
		if err := m.attention(li, pt.Seqs, pt.Tokens, st.x, st.f); err != nil {
			return nil, fmt.Errorf("layer %d attention: %w", li, err)
		}
		if err := m.post(st); err != nil {
			return nil, fmt.Errorf("layer %d attention: %w", li, err)
		}
		if err := m.pre(st, ly.hcFFN, ly.fNrm); err != nil {
			return nil, fmt.Errorf("layer %d moe: %w", li, err)
		}
		if err := ly.moe.Start(pt.Ctx, st.x, st.ids, experts, st.f, &st.moe); err != nil {
			return nil, fmt.Errorf("layer %d moe: %w", li, err)
		}
		return &st.moe, nil
	}, func(k int) error {
		if err := m.post(&streams[k]); err != nil {
			return fmt.Errorf("moe: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	last := make([]float32, H)
	i := 0
	for k, pt := range parts {
		off := 0
		for _, t := range pt.Tokens {
			off += len(t)
			u, err := m.hcHead.Head(streams[k].X[(off-1)*hc*H : off*hc*H])
			if err != nil {
				return err
			}
			nn.RMSNorm(last, u, m.norm, float32(cfg.RMSEps), 1)
			m.head.apply(logits[i], last, 1)
			i++
		}
	}
	return nil
}

// attention is Attention.forward for every new row of the step: x are the normalised
// inputs [rows, H], out receives wo_b(...) [rows, H]. Projections of x run batched over
// all rows; the cache-dependent part runs per sequence, token by token, in position order.
func (m *Model) attention(li int, seqs []*Sequence, tokens [][]int32, x, out []float32) error {
	cfg, a := m.cfg, &m.layers[li].attentionW
	rows := len(x) / cfg.Hidden
	D, nh, Q := cfg.HeadDim, cfg.Heads, cfg.QLoraRank
	eps := float32(cfg.RMSEps)
	qr := make([]float32, rows*Q)
	a.wqa.apply(qr, x, rows)
	nn.RMSNorm(qr, qr, a.qNorm, eps, rows)
	q := make([]float32, rows*nh*D)
	a.wqb.apply(q, qr, rows)
	nn.RMSNormHeads(q, q, nil, eps, rows, nh, D) // unweighted per-head norm of q
	kv := make([]float32, rows*D)
	a.wkv.apply(kv, x, rows)
	nn.RMSNorm(kv, kv, a.kvNorm, eps, rows)
	var ckv, cscore, ikv, iscore, iq, iw []float32
	if a.comp != nil {
		ckv, cscore = proj2(&a.comp.wkv, &a.comp.wgate, x, rows)
	}
	if a.idx != nil {
		ikv, iscore = proj2(&a.idx.comp.wkv, &a.idx.comp.wgate, x, rows)
		ih, id := cfg.IndexHeads, cfg.IndexHeadDim
		iq, iw = make([]float32, rows*ih*id), make([]float32, rows*ih)
		a.idx.wqb.apply(iq, qr, rows)
		a.idx.wproj.apply(iw, x, rows)
		ws := 1 / math.Sqrt(float64(id)) / math.Sqrt(float64(ih))
		for i := range iw {
			iw[i] = float32(float64(iw[i]) * ws)
		}
	}
	o := make([]float32, rows*nh*D)
	t := 0
	for si, seq := range seqs {
		lc := &seq.layers[li]
		for k := range tokens[si] {
			pos := seq.n + k
			if err := m.attendOne(a, lc, pos, t, q, kv, ckv, cscore, ikv, iscore, iq, iw, o[t*nh*D:(t+1)*nh*D]); err != nil {
				return err
			}
			t++
		}
	}
	// Grouped low-rank output: heads split into o_groups groups; group g's concatenated
	// head outputs go through its own [o_lora, nh·D/G] slice of wo_a, then wo_b mixes all.
	G, R := cfg.OGroups, cfg.OLoraRank
	gw := nh * D / G
	mid := make([]float32, rows*G*R)
	for r := range rows {
		for g := range G {
			og := o[r*nh*D+g*gw : r*nh*D+(g+1)*gw]
			for j := range R {
				wrow := a.woa.w[(g*R+j)*gw : (g*R+j+1)*gw]
				s := 0.0
				for i, w := range wrow {
					s += float64(w) * float64(og[i])
				}
				mid[(r*G+g)*R+j] = float32(s)
			}
		}
	}
	a.wob.apply(out, mid, rows)
	return nil
}

func proj2(a, b *linear, x []float32, rows int) ([]float32, []float32) {
	ya, yb := make([]float32, rows*a.out), make([]float32, rows*b.out)
	a.apply(ya, x, rows)
	b.apply(yb, x, rows)
	return ya, yb
}

// finishRow is what Compressor.forward does to a pooled row: RMSNorm, RoPE on the last
// rope dims at the window's first position, then the quantisation-aware rounding — FP8
// (blocks of 64, ue8m0 scales) on the non-rope dims, or for the indexer's keys a Hadamard
// rotation of the whole row and FP4 (blocks of 32).
func (m *Model) finishRow(c *compressorW, rope *nn.Rope, row []float32, start int) error {
	rd, eps := m.cfg.RopeDim, float32(m.cfg.RMSEps)
	nn.RMSNorm(row, row, c.norm, eps, 1)
	rope.Apply(row, 1, c.d, rd, start, nil)
	if c.rotate {
		if err := quant.Hadamard(row); err != nil {
			return err
		}
		return quant.SimFP4(row, quant.MXBlock)
	}
	return quant.SimFP8(row[:c.d-rd], 64)
}

// attendOne is one token's attention at position pos (row t of the step's projections):
// it updates the sequence's caches and writes the per-head outputs o [heads, D].
func (m *Model) attendOne(a *attentionW, lc *layerCache, pos, t int, q, kv, ckv, cscore, ikv, iscore, iq, iw, o []float32) error {
	cfg := m.cfg
	D, rd, nh, W := cfg.HeadDim, cfg.RopeDim, cfg.Heads, cfg.Window
	qt := append([]float32(nil), q[t*nh*D:(t+1)*nh*D]...)
	a.rope.Apply(qt, nh, D, rd, pos, nil)
	k := append([]float32(nil), kv[t*D:(t+1)*D]...)
	a.rope.Apply(k, 1, D, rd, pos, nil)
	// FP8-simulate the non-rope dims of the window KV (model.py: "to match QAT").
	if err := quant.SimFP8(k[:D-rd], 64); err != nil {
		return err
	}
	lc.ring[pos%W] = k
	// Keys: the window rows (oldest first, as get_window_topk_idxs lists them), then the
	// compressed rows the layer selects.
	first := max(0, pos-W+1)
	keys := make([]float32, 0, (pos-first+1+len(lc.rows)+1)*D)
	for p := first; p <= pos; p++ {
		keys = append(keys, lc.ring[p%W]...)
	}
	nwin := pos - first + 1
	var sel []int32
	if a.idx != nil {
		cw := 2 * a.idx.comp.d
		if row, ok, err := lc.icomp.Push(ikv[t*cw:(t+1)*cw], iscore[t*cw:(t+1)*cw]); err != nil {
			return err
		} else if ok {
			if err := m.finishRow(&a.idx.comp, a.rope, row, pos+1-a.ratio); err != nil {
				return err
			}
			lc.irows = append(lc.irows, row)
		}
		ih, id := cfg.IndexHeads, cfg.IndexHeadDim
		qi := append([]float32(nil), iq[t*ih*id:(t+1)*ih*id]...)
		a.rope.Apply(qi, ih, id, rd, pos, nil)
		for h := range ih {
			head := qi[h*id : (h+1)*id]
			if err := quant.Hadamard(head); err != nil {
				return err
			}
		}
		if err := quant.SimFP4(qi, quant.MXBlock); err != nil {
			return err
		}
		flat := make([]float32, 0, len(lc.irows)*id)
		for _, r := range lc.irows {
			flat = append(flat, r...)
		}
		var err error
		if sel, err = IndexerTopK(qi, flat, iw[t*ih:(t+1)*ih], id, len(lc.irows), cfg.IndexTopK); err != nil {
			return err
		}
	}
	if a.comp != nil {
		cw := a.comp.d
		if a.comp.overlap {
			cw *= 2
		}
		if row, ok, err := lc.comp.Push(ckv[t*cw:(t+1)*cw], cscore[t*cw:(t+1)*cw]); err != nil {
			return err
		} else if ok {
			if err := m.finishRow(a.comp, a.rope, row, pos+1-a.ratio); err != nil {
				return err
			}
			lc.rows = append(lc.rows, row)
		}
		if a.idx == nil { // HCA: every compressed row so far
			sel = make([]int32, len(lc.rows))
			for i := range sel {
				sel[i] = int32(i)
			}
		}
	}
	for _, r := range sel {
		keys = append(keys, lc.rows[r]...)
	}
	idx := make([]int32, nwin+len(sel)) // keys were gathered in attention order
	for i := range idx {
		idx[i] = int32(i)
	}
	if err := SparseAttend(qt, keys, D, a.sink, idx, cfg.SoftmaxScale(), o); err != nil {
		return err
	}
	// De-rotate the rope slice of the output (apply_rotary_emb(..., inverse=True)).
	a.rope.ApplyInverse(o, nh, D, rd, pos, nil)
	return nil
}
