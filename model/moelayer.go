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

	// own is the call Forward and Route use; micro-batches bring their own (see Start).
	own MoECall
	// Shared-expert batch, used only while a call starts.
	rowPtr []int32
	zeros  []int32
	shW    []float32
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
	return l.route(x, tokenIDs, &l.own)
}

func (l *MoELayer) route(x []float32, tokenIDs []int32, c *MoECall) (Routing, error) {
	t := len(x) / l.hidden
	if len(x) != t*l.hidden {
		return Routing{}, fmt.Errorf("%w: %d values are not rows of %d", ascend.ErrShape, len(x), l.hidden)
	}
	e := l.spec.Experts
	c.logits = resize(c.logits, t*e)
	if err := l.matmul(c.logits, x, t, e, l.gate); err != nil {
		return Routing{}, err
	}
	if err := l.spec.Route(c.logits, t, tokenIDs, &c.routing); err != nil {
		return Routing{}, fmt.Errorf("layer %d: %w", l.Index, err)
	}
	return c.routing, nil
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
	if err := l.Start(ctx, x, tokenIDs, experts, out, &l.own); err != nil {
		return err
	}
	return l.own.Wait()
}

// MoECall is one MoE layer call in flight: its routing, the routed experts' output and the
// shared expert's. A micro-batch keeps one and passes it to every layer's Start, so two
// micro-batches can each have a layer's experts out at the same time.
type MoECall struct {
	l       *MoELayer
	routing Routing
	logits  []float32
	routed  []float32
	sh      []float32
	out     []float32
	done    chan error
	shErr   error
	flying  bool
}

// Start routes x, sends the routed experts off (they run in a goroutine that Wait joins)
// and computes the shared expert meanwhile; Wait finishes what Forward does. x and out
// must stay untouched until Wait returns. On an error nothing is in flight.
func (l *MoELayer) Start(ctx context.Context, x []float32, tokenIDs []int32, experts Experts, out []float32, c *MoECall) error {
	if c.flying {
		return fmt.Errorf("%w: layer %d: a MoE call started twice without Wait", ErrRouting, l.Index)
	}
	if len(out) != len(x) {
		return fmt.Errorf("%w: output holds %d values for %d inputs", ascend.ErrShape, len(out), len(x))
	}
	r, err := l.route(x, tokenIDs, c)
	if err != nil {
		return err
	}
	if c.done == nil {
		c.done = make(chan error, 1)
	}
	c.l, c.out, c.flying = l, out, true
	c.routed = resize(c.routed, len(x))
	routed := c.routed
	go func() { c.done <- experts.Forward(ctx, l.Index, x, l.hidden, r, routed) }()
	c.shErr = l.sharedForward(x, len(x)/l.hidden, c)
	return nil
}

// Wait waits for the routed experts of the started call and writes the layer's output.
// It is a no-op on a call that is not in flight.
func (c *MoECall) Wait() error {
	if !c.flying {
		return nil
	}
	err := <-c.done
	c.flying = false
	l := c.l
	if err != nil {
		return fmt.Errorf("layer %d routed experts: %w", l.Index, err)
	}
	if c.shErr != nil {
		return fmt.Errorf("layer %d shared expert: %w", l.Index, c.shErr)
	}
	copy(c.out, c.routed)
	if l.shared != nil {
		for i, v := range c.sh {
			c.out[i] += v
		}
	}
	return nil
}

func (l *MoELayer) sharedForward(x []float32, t int, c *MoECall) error {
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
	c.sh = resize(c.sh, len(x))
	return l.shared.Compute(Batch{Layer: l.Index, X: x, RowPtr: l.rowPtr, Experts: l.zeros, Weights: l.shW}, false, c.sh)
}
