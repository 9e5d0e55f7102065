package stack

import (
	"context"
	"fmt"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/decoder"
	"github.com/moemesh/moemesh/model/safetensors"
)

// LM is a loaded language model of any supported architecture, driven one sequence at a time.
type LM struct{ decoder.Decoder }

// Generate prefills prompt, then decodes up to max tokens: next picks each token from the
// step's logits, emit receives it (and the logits) and returns false to stop.
func (l LM) Generate(ctx context.Context, experts model.Experts, prompt []int32, max int,
	next func(logits []float32) int32, emit func(tok int32, logits []float32) bool) error {
	if len(prompt) == 0 {
		return fmt.Errorf("stack: empty prompt")
	}
	seq, err := l.NewSequence(nil, len(prompt)+max)
	if err != nil {
		return err
	}
	defer seq.Close()
	logits := [][]float32{make([]float32, l.Config().Vocab)}
	seqs, step := []decoder.Sequence{seq}, prompt
	for i := 0; i < max; i++ {
		if err := l.Forward(ctx, seqs, [][]int32{step}, experts, logits); err != nil {
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

// LoadLM loads the dense part of a checkpoint onto card.
func LoadLM(ck *safetensors.Checkpoint, cfg *model.Config, card ascend.Card) (LM, error) {
	d, err := decoder.Load(ck, cfg, card)
	return LM{d}, err
}
