package decoder

import (
	"context"
	"fmt"
	"slices"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/deepseek"
	"github.com/moemesh/moemesh/model/deepseek4"
	"github.com/moemesh/moemesh/model/gqa"
	"github.com/moemesh/moemesh/model/nn"
	"github.com/moemesh/moemesh/model/safetensors"
)

// Sequence is one sequence's KV cache and position, made by a Decoder.
type Sequence interface {
	Len() int // tokens held: the position of the next token
	Cap() int // token capacity
	Reset()   // empty it (also after a failed step), keeping its reservation
	Close()   // give its memory back; it cannot be stepped again
}

// Decoder is a loaded model. Forward appends tokens[i] to seqs[i] for every i in one
// batched step and writes the logits of each sequence's last new token to logits[i]; a
// sequence's logits do not depend on what it is batched with or how its prompt is chunked.
type Decoder interface {
	Config() *model.Config
	// NewSequence makes a sequence of capacity tokens whose KV cache draws on pool (nil: a
	// private pool without a budget); over the pool's budget it fails with nn.ErrCacheFull.
	NewSequence(pool *nn.KVPool, capacity int) (Sequence, error)
	Forward(ctx context.Context, seqs []Sequence, tokens [][]int32, experts model.Experts, logits [][]float32) error
	// ForwardSplit is Forward with the step cut into two micro-batches after sequence split
	// (0 or len(seqs): one part) that go through the layers interleaved, one part's
	// attention running while the other's routed experts are out (model.RunLayers). The
	// logits are the same bits as Forward's; the second part's experts calls carry
	// model.WithFirstRow.
	ForwardSplit(ctx context.Context, seqs []Sequence, tokens [][]int32, experts model.Experts, logits [][]float32, split int) error
	// KVBytes is what a sequence of capacity tokens reserves in a pool of blockRows rows.
	KVBytes(blockRows, capacity int) int64
	Close() error
}

// family is what an architecture package's Model offers.
type family[S Sequence] interface {
	Config() *model.Config
	NewSequenceIn(pool *nn.KVPool, capacity int) (S, error)
	ForwardSplit(ctx context.Context, seqs []S, tokens [][]int32, experts model.Experts, logits [][]float32, split int) error
	KVWidths() (k, v int)
	Close() error
}

type adapter[S Sequence, M family[S]] struct{ m M }

func (a adapter[S, M]) Config() *model.Config { return a.m.Config() }
func (a adapter[S, M]) Close() error          { return a.m.Close() }

func (a adapter[S, M]) NewSequence(pool *nn.KVPool, capacity int) (Sequence, error) {
	s, err := a.m.NewSequenceIn(pool, capacity)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (a adapter[S, M]) KVBytes(blockRows, capacity int) int64 {
	pool, err := nn.NewKVPool(0, blockRows)
	if err != nil {
		return 0
	}
	k, v := a.m.KVWidths()
	return pool.CacheBytes(a.m.Config().Layers, capacity, k, v)
}

func (a adapter[S, M]) Forward(ctx context.Context, seqs []Sequence, tokens [][]int32, experts model.Experts, logits [][]float32) error {
	return a.ForwardSplit(ctx, seqs, tokens, experts, logits, 0)
}

func (a adapter[S, M]) ForwardSplit(ctx context.Context, seqs []Sequence, tokens [][]int32, experts model.Experts, logits [][]float32, split int) error {
	own := make([]S, len(seqs))
	for i, s := range seqs {
		o, ok := s.(S)
		if !ok {
			return fmt.Errorf("%w: sequence %d is a %T, not this model's", nn.ErrInvalid, i, s)
		}
		own[i] = o
	}
	return a.m.ForwardSplit(ctx, own, tokens, experts, logits, split)
}

// Load loads the dense part of a checkpoint onto card (the routed experts stay behind the
// Experts seam), picking the architecture package by config.json's model_type.
func Load(ck *safetensors.Checkpoint, cfg *model.Config, card ascend.Card) (Decoder, error) {
	switch {
	case slices.Contains(gqa.Arches, cfg.Arch):
		m, err := gqa.Load(ck, cfg, card)
		if err != nil {
			return nil, err
		}
		return adapter[*gqa.Sequence, *gqa.Model]{m}, nil
	case slices.Contains(deepseek.Arches, cfg.Arch):
		m, err := deepseek.Load(ck, cfg, card)
		if err != nil {
			return nil, err
		}
		return adapter[*deepseek.Sequence, *deepseek.Model]{m}, nil
	case slices.Contains(deepseek4.Arches, cfg.Arch):
		m, err := deepseek4.LoadModel(ck, cfg, card)
		if err != nil {
			return nil, err
		}
		return adapter[*deepseek4.Sequence, *deepseek4.Model]{m}, nil
	}
	return nil, fmt.Errorf("%w: no forward pass for %s yet (have %v, %v and %v)", model.ErrUnsupported, cfg.Arch, gqa.Arches, deepseek.Arches, deepseek4.Arches)
}
