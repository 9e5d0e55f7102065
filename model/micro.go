package model

import (
	"context"
	"errors"
	"fmt"

	"github.com/moemesh/moemesh/model/nn"
)

// Micro-batches. A step cut in two parts goes through the layers interleaved: while one
// part's routed experts are out (on the mesh: a network round trip plus the daemons'
// compute), the router computes the other part's attention. Every kernel is
// row-independent, so the parts give the same bits as the whole step.

// SplitRows picks where to cut a step of sequences with the given token counts into two
// micro-batches: the first split sequences form part one. It balances rows and returns 0
// (no cut) for fewer than two sequences or fewer than minRows rows (minRows <= 0: never).
func SplitRows(counts []int, minRows int) int {
	total := 0
	for _, n := range counts {
		total += n
	}
	if minRows <= 0 || len(counts) < 2 || total < minRows {
		return 0
	}
	best, bestGap, acc := 0, total+1, 0
	for i := 1; i < len(counts); i++ {
		acc += counts[i-1]
		if gap := abs(total - 2*acc); gap < bestGap {
			best, bestGap = i, gap
		}
	}
	return best
}

// Part is one micro-batch of a step.
type Part[S any] struct {
	Ctx    context.Context // the second part's carries WithFirstRow
	Seqs   []S
	Tokens [][]int32
	Rows   int
}

// Parts cuts a step of rows tokens after sequence split; split 0 or len(seqs) gives one
// part. Another split is an error wrapping nn.ErrInvalid.
func Parts[S any](ctx context.Context, seqs []S, tokens [][]int32, rows, split int) ([]Part[S], error) {
	if split < 0 || split > len(seqs) || len(tokens) != len(seqs) {
		return nil, fmt.Errorf("%w: split at sequence %d of %d", nn.ErrInvalid, split, len(seqs))
	}
	if split == 0 || split == len(seqs) {
		return []Part[S]{{ctx, seqs, tokens, rows}}, nil
	}
	first := 0
	for _, t := range tokens[:split] {
		first += len(t)
	}
	return []Part[S]{{ctx, seqs[:split], tokens[:split], first},
		{WithFirstRow(ctx, first), seqs[split:], tokens[split:], rows - first}}, nil
}

// GatherLast copies each sequence's last new row, in sequence order across the parts, from
// its part's rows h(k) ([rows, hidden]) into dst ([sequences, hidden]): only those rows
// need the final norm and the head.
func GatherLast[S any](dst []float32, parts []Part[S], hidden int, h func(k int) []float32) {
	i := 0
	for k, pt := range parts {
		rows, off := h(k), 0
		for _, t := range pt.Tokens {
			off += len(t)
			copy(dst[i*hidden:(i+1)*hidden], rows[(off-1)*hidden:off*hidden])
			i++
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// RunLayers runs layers 0…n-1 over parts micro-batches (1 or 2). enter(li, p) runs layer li
// for part p up to its routed experts and returns the MoE call it started, or nil when it
// finished the layer itself (a dense layer); leave(p) finishes part p's layer once its call
// is back (or right away after a dense layer). Part p enters layer li+1 after its own layer li is done, so the other part's
// experts are in flight meanwhile. ctx is checked before every layer. On an error every
// call still in flight is waited for before RunLayers returns, so no expert goroutine
// writes into a part's buffers afterwards.
func RunLayers(ctx context.Context, n, parts int, enter func(li, p int) (*MoECall, error), leave func(p int) error) error {
	var flying [2]*MoECall
	if parts < 1 || parts > len(flying) {
		return errors.New("model: RunLayers takes one or two micro-batches")
	}
	defer func() {
		for _, c := range flying {
			if c != nil {
				_ = c.Wait() // the step already failed with err; this part's outcome is moot
			}
		}
	}()
	land := func(p int) error {
		c := flying[p]
		if c == nil {
			return nil
		}
		flying[p] = nil
		if err := c.Wait(); err != nil {
			return err
		}
		return leave(p)
	}
	for li := range n {
		for p := range parts {
			if err := land(p); err != nil {
				return err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			c, err := enter(li, p)
			if err != nil {
				return err
			}
			if c == nil {
				if err := leave(p); err != nil {
					return err
				}
				continue
			}
			flying[p] = c
		}
	}
	for p := range parts {
		if err := land(p); err != nil {
			return err
		}
	}
	return nil
}

type firstRowKey struct{}

// WithFirstRow tells an Experts implementation that the rows of its calls under ctx are
// the step's rows first, first+1, … (the second part of a step cut in two), so what it
// keeps per step row (the router's tenant of each row) stays aligned.
func WithFirstRow(ctx context.Context, first int) context.Context {
	return context.WithValue(ctx, firstRowKey{}, first)
}

// FirstRow is the step row of the first row of calls under ctx (0 unless WithFirstRow).
func FirstRow(ctx context.Context) int {
	v, _ := ctx.Value(firstRowKey{}).(int)
	return v
}
