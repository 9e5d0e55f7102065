package model

import (
	"fmt"

	"github.com/moemesh/moemesh/model/nn"
)

// SeqState is one sequence's bookkeeping as CheckStep sees it.
type SeqState struct {
	Mine     bool  // the sequence belongs to the model being stepped
	Len, Cap int   // tokens held and token capacity
	Broken   error // set by a failed step (see StepFailed) until the sequence is reset
}

// CheckStep checks a family model's Forward arguments without changing any state:
// one token list and one logits row per sequence; every sequence non-nil, the model's own
// (state reports that and its bookkeeping), in the step once, not broken, with at least
// one new token that fits its capacity; every token id below vocab and every logits row
// vocab long. rows is the total number of new tokens.
func CheckStep[S comparable](seqs []S, tokens [][]int32, logits [][]float32, vocab int, state func(S) SeqState) (rows int, err error) {
	if len(tokens) != len(seqs) || len(logits) != len(seqs) {
		return 0, fmt.Errorf("%w: %d sequences, %d token lists, %d logit rows", nn.ErrShape, len(seqs), len(tokens), len(logits))
	}
	var none S
	seen := make(map[S]bool, len(seqs))
	for i, s := range seqs {
		if s == none {
			return 0, fmt.Errorf("%w: sequence %d is nil", nn.ErrInvalid, i)
		}
		st := state(s)
		switch {
		case !st.Mine:
			return 0, fmt.Errorf("%w: sequence %d belongs to another model", nn.ErrInvalid, i)
		case seen[s]:
			return 0, fmt.Errorf("%w: sequence %d appears twice in one step", nn.ErrInvalid, i)
		case st.Broken != nil:
			return 0, fmt.Errorf("sequence %d: %w", i, st.Broken)
		case len(tokens[i]) == 0:
			return 0, fmt.Errorf("%w: sequence %d has no new tokens", nn.ErrInvalid, i)
		case len(tokens[i]) > st.Cap-st.Len:
			return 0, fmt.Errorf("%w: sequence %d holds %d of %d tokens, cannot add %d", nn.ErrCacheFull, i, st.Len, st.Cap, len(tokens[i]))
		case len(logits[i]) != vocab:
			return 0, fmt.Errorf("%w: logits %d has %d values, want vocab %d", nn.ErrShape, i, len(logits[i]), vocab)
		}
		seen[s] = true
		for j, id := range tokens[i] {
			if id < 0 || int(id) >= vocab {
				return 0, fmt.Errorf("%w: sequence %d token %d is id %d, vocabulary is %d", nn.ErrInvalid, i, j, id, vocab)
			}
		}
		rows += len(tokens[i])
	}
	return rows, nil
}

// StepFailed is the Broken error of every sequence of a step that failed after it
// started: their caches may be partly appended to, so they must not be stepped again.
func StepFailed(err error) error {
	return fmt.Errorf("%w: sequence state lost in a failed step: %w", nn.ErrInvalid, err)
}

// ErrSequenceClosed is the Broken error of a closed sequence: its cache went back to the
// pool, so neither Forward nor Reset revive it.
var ErrSequenceClosed = fmt.Errorf("%w: sequence closed", nn.ErrInvalid)
