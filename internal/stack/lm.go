package stack

import (
	"context"
	"fmt"
	"slices"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/deepseek"
	"github.com/moemesh/moemesh/model/gqa"
	"github.com/moemesh/moemesh/model/safetensors"
)

// LM is a loaded language model of any supported architecture, driven one sequence at a time.
type LM interface {
	Config() *model.Config
	// Generate prefills prompt, then decodes up to max tokens: next picks each token from the
	// step's logits, emit receives it (and the logits) and returns false to stop.
	Generate(ctx context.Context, experts model.Experts, prompt []int32, max int,
		next func(logits []float32) int32, emit func(tok int32, logits []float32) bool) error
	Close() error
}

// forwarder is what an architecture package's model offers.
type forwarder[S any] interface {
	Config() *model.Config
	NewSequence(capacity int) (S, error)
	Forward(ctx context.Context, seqs []S, tokens [][]int32, experts model.Experts, logits [][]float32) error
	Close() error
}

type lm[S any, M forwarder[S]] struct{ m M }

func (l lm[S, M]) Config() *model.Config { return l.m.Config() }
func (l lm[S, M]) Close() error          { return l.m.Close() }

func (l lm[S, M]) Generate(ctx context.Context, experts model.Experts, prompt []int32, max int,
	next func([]float32) int32, emit func(int32, []float32) bool) error {
	if len(prompt) == 0 {
		return fmt.Errorf("stack: empty prompt")
	}
	seq, err := l.m.NewSequence(len(prompt) + max)
	if err != nil {
		return err
	}
	logits := [][]float32{make([]float32, l.m.Config().Vocab)}
	step := prompt
	for i := 0; i < max; i++ {
		if err := l.m.Forward(ctx, []S{seq}, [][]int32{step}, experts, logits); err != nil {
			return fmt.Errorf("step %d: %w", i, err)
		}
		tok := next(logits[0])
		if !emit(tok, logits[0]) {
			return nil
		}
		step = []int32{tok}
	}
	return nil
}

// LoadLM loads the dense part of a checkpoint onto card, picking the architecture package by
// config.json's model_type.
func LoadLM(ck *safetensors.Checkpoint, cfg *model.Config, card ascend.Card) (LM, error) {
	switch {
	case slices.Contains(gqa.Arches, cfg.Arch):
		m, err := gqa.Load(ck, cfg, card)
		if err != nil {
			return nil, err
		}
		return lm[*gqa.Sequence, *gqa.Model]{m}, nil
	case slices.Contains(deepseek.Arches, cfg.Arch):
		m, err := deepseek.Load(ck, cfg, card)
		if err != nil {
			return nil, err
		}
		return lm[*deepseek.Sequence, *deepseek.Model]{m}, nil
	}
	return nil, fmt.Errorf("%w: no forward pass for %s yet (have %v and %v)", model.ErrUnsupported, cfg.Arch, gqa.Arches, deepseek.Arches)
}
