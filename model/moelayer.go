package model

import (
	"context"
	"fmt"
	"math"

	"github.com/moemesh/moemesh/ascend"
)

// MoEWeights are the parts of one MoE layer that stay with the router: the gate and the
// shared expert.
type MoEWeights struct {
	Gate       []float32      // router weight [experts, hidden], f32 (routing runs in f32)
	Bias       []float32      // selection-only bias [experts] or nil
	Hash       []int32        // DeepSeek-V4 tid2eid [vocab, top-k] or nil
	Shared     *ExpertWeights // shared expert ([SharedIntermediate, hidden] gate/up) or nil
	SharedGate []float32      // Qwen2-MoE shared_expert_gate [hidden] or nil
}

// MoELayer is one MoE layer's router side: gate, routing and shared expert, with the
// routed experts reached through the Experts seam.
type MoELayer struct {
	Index  int
	hidden int
	spec   GateSpec
	card   ascend.Card
	gate   ascend.Buffer
	shared *ExpertSet
	sgate  []float32

	// Scratch, reused across calls; a layer serves one step at a time.
	routing Routing
	logits  []float32
	routed  []float32
	sh      []float32
	shW     []float32
	rowPtr  []int32
	zeros   []int32
}

// NewMoELayer places a layer's gate and shared expert on card (the router's card).
func NewMoELayer(card ascend.Card, cfg *Config, index int, w MoEWeights) (*MoELayer, error) {
	if !cfg.IsMoELayer(index) {
		return nil, fmt.Errorf("%w: layer %d of %s is not a MoE layer", ErrConfig, index, cfg.Arch)
	}
	spec := cfg.GateSpec()
	spec.Bias, spec.Hash = w.Bias, w.Hash
	if err := spec.Validate(); err != nil {
		return nil, fmt.Errorf("layer %d: %w", index, err)
	}
	h := cfg.Hidden
	if len(w.Gate) != spec.Experts*h {
		return nil, fmt.Errorf("%w: layer %d gate has %d values, want [%d, %d]", ascend.ErrShape, index, len(w.Gate), spec.Experts, h)
	}
	l := &MoELayer{Index: index, hidden: h, spec: spec, card: card}
	var err error
	if l.gate, err = card.Alloc(ascend.F32, spec.Experts, h); err != nil {
		return nil, fmt.Errorf("layer %d gate: %w", index, err)
	}
	if err = card.WriteF32(l.gate, 0, w.Gate); err != nil {
		l.Close()
		return nil, err
	}
	if w.Shared != nil {
		l.shared = NewExpertSet(card, h, cfg.SharedIntermediate, cfg.SwiGLULimit)
		if err = l.shared.Add(ExpertKey{index, 0}, *w.Shared); err != nil {
			l.Close()
			return nil, fmt.Errorf("layer %d shared expert: %w", index, err)
		}
		if w.SharedGate != nil && len(w.SharedGate) != h {
			l.Close()
			return nil, fmt.Errorf("%w: layer %d shared expert gate has %d values, want %d", ascend.ErrShape, index, len(w.SharedGate), h)
		}
		l.sgate = w.SharedGate
	}
	return l, nil
}

// Close frees the layer's card memory.
func (l *MoELayer) Close() error {
	var first error
	if l.gate != nil {
		first = l.card.Free(l.gate)
		l.gate = nil
	}
	if l.shared != nil {
		if err := l.shared.Close(); err != nil && first == nil {
			first = err
		}
		l.shared = nil
	}
	return first
}

// Spec is the layer's routing rule.
func (l *MoELayer) Spec() GateSpec { return l.spec }

// Route computes the routing of x ([T, hidden]) without running experts. The result is
// valid until the next call on l.
func (l *MoELayer) Route(x []float32, tokenIDs []int32) (Routing, error) {
	t := len(x) / l.hidden
	if len(x) != t*l.hidden {
		return Routing{}, fmt.Errorf("%w: %d values are not rows of %d", ascend.ErrShape, len(x), l.hidden)
	}
	e := l.spec.Experts
	l.logits = resize(l.logits, t*e)
	if err := l.matmul(l.logits, x, t, e, l.gate); err != nil {
		return Routing{}, err
	}
	if err := l.spec.Route(l.logits, t, tokenIDs, &l.routing); err != nil {
		return Routing{}, fmt.Errorf("layer %d: %w", l.Index, err)
	}
	return l.routing, nil
}

// matmul: out [t, n] = x [t, hidden] · wᵀ on the layer's card.
func (l *MoELayer) matmul(out, x []float32, t, n int, w ascend.Buffer) (err error) {
	c := l.card
	xb, err := c.Alloc(ascend.F32, t, l.hidden)
	if err != nil {
		return err
	}
	defer func() {
		if ferr := c.Free(xb); ferr != nil && err == nil {
			err = ferr
		}
	}()
	ob, err := c.Alloc(ascend.F32, t, n)
	if err != nil {
		return err
	}
	defer func() {
		if ferr := c.Free(ob); ferr != nil && err == nil {
			err = ferr
		}
	}()
	if err = c.WriteF32(xb, 0, x); err != nil {
		return err
	}
	if err = c.GroupedMatmul(ob, xb, []ascend.Buffer{w}, []int64{int64(t)}); err != nil {
		return err
	}
	return c.ReadF32(ob, out)
}

// Forward computes the layer's FFN output for x ([T, hidden] f32, already normalised):
// out = Σ routed experts (through experts) + shared expert. tokenIDs are needed only for
// hash-routed layers. The shared expert runs on the router's card while the routed experts
// run wherever experts puts them.
func (l *MoELayer) Forward(ctx context.Context, x []float32, tokenIDs []int32, experts Experts, out []float32) error {
	if len(out) != len(x) {
		return fmt.Errorf("%w: output holds %d values for %d inputs", ascend.ErrShape, len(out), len(x))
	}
	r, err := l.Route(x, tokenIDs)
	if err != nil {
		return err
	}
	t := len(x) / l.hidden
	l.routed = resize(l.routed, len(x))
	done := make(chan error, 1)
	go func() { done <- experts.Forward(ctx, l.Index, x, l.hidden, r, l.routed) }()
	shErr := l.sharedForward(x, t)
	if err := <-done; err != nil {
		return fmt.Errorf("layer %d routed experts: %w", l.Index, err)
	}
	if shErr != nil {
		return fmt.Errorf("layer %d shared expert: %w", l.Index, shErr)
	}
	copy(out, l.routed)
	if l.shared != nil {
		for i, v := range l.sh {
			out[i] += v
		}
	}
	return nil
}

func (l *MoELayer) sharedForward(x []float32, t int) error {
	if l.shared == nil {
		return nil
	}
	l.rowPtr = resize(l.rowPtr, t+1)
	l.zeros = resize(l.zeros, t)
	l.shW = resize(l.shW, t)
	for i := range l.rowPtr {
		l.rowPtr[i] = int32(i)
	}
	clear(l.zeros)
	for i := range l.shW {
		l.shW[i] = 1
	}
	if l.sgate != nil {
		// Qwen2-MoE: the shared expert is scaled by sigmoid(shared_expert_gate · x) per token.
		for tok := 0; tok < t; tok++ {
			var dot float32
			row := x[tok*l.hidden : (tok+1)*l.hidden]
			for i, v := range row {
				dot += v * l.sgate[i]
			}
			l.shW[tok] = float32(1 / (1 + math.Exp(-float64(dot))))
		}
	}
	l.sh = resize(l.sh, len(x))
	return l.shared.Compute(Batch{Layer: l.Index, X: x, RowPtr: l.rowPtr, Experts: l.zeros, Weights: l.shW}, false, l.sh)
}
