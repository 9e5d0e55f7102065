package model

import (
	"context"
	"fmt"
	"sync"
)

// CombinePairs writes out[t] = Σ_k w[t,k] · y[t·K+k] for every token, summing k in
// routing order in f32 (a multiply, then an add). y holds one expert output per (token, k)
// slot, [T·K, hidden]. It is the one definition of how routed outputs combine, used by the
// in-process experts and by the mesh's per-pair mode alike, so both give the same bits.
func CombinePairs(out, y []float32, r Routing, hidden int) error {
	t := r.Tokens()
	if len(out) != t*hidden || len(y) != len(r.Experts)*hidden {
		return fmt.Errorf("%w: combine %d outputs and %d pair values for %d tokens × top-%d × %d",
			ErrRouting, len(out), len(y), t, r.TopK, hidden)
	}
	for tok := 0; tok < t; tok++ {
		o := out[tok*hidden : (tok+1)*hidden]
		clear(o)
		for k := 0; k < r.TopK; k++ {
			slot := tok*r.TopK + k
			w := r.Weights[slot]
			row := y[slot*hidden : (slot+1)*hidden]
			for i, v := range row {
				o[i] += w * v
			}
		}
	}
	return nil
}

// Local runs routed experts in this process on one card: the reference every mesh result
// is checked against.
type Local struct {
	mu      sync.Mutex
	set     *ExpertSet
	experts int

	rowPtr []int32
	pairs  []float32
}

var _ Experts = (*Local)(nil)

// NewLocal serves the experts held by set; experts is the layer's expert count.
func NewLocal(set *ExpertSet, experts int) *Local {
	return &Local{set: set, experts: experts}
}

// Forward implements Experts.
func (l *Local) Forward(ctx context.Context, layer int, x []float32, hidden int, r Routing, out []float32) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if hidden != l.set.Hidden() || len(x)%hidden != 0 || len(out) != len(x) {
		return fmt.Errorf("%w: %d inputs, %d outputs, hidden %d (experts have %d)", ErrRouting, len(x), len(out), hidden, l.set.Hidden())
	}
	t := len(x) / hidden
	if err := r.Validate(t, l.experts); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rowPtr = resize(l.rowPtr, t+1)
	for i := range l.rowPtr {
		l.rowPtr[i] = int32(i * r.TopK)
	}
	l.pairs = resize(l.pairs, len(r.Experts)*hidden)
	b := Batch{Layer: layer, X: x, RowPtr: l.rowPtr, Experts: r.Experts, Weights: r.Weights}
	if err := l.set.Compute(b, true, l.pairs); err != nil {
		return err
	}
	return CombinePairs(out, l.pairs, r, hidden)
}
