package model

import (
	"fmt"
	"slices"
	"sync"

	"github.com/moemesh/moemesh/ascend"
)

// ExpertKey names one routed expert of one layer.
type ExpertKey struct {
	Layer, Expert int
}

func (k ExpertKey) String() string { return fmt.Sprintf("%d/%d", k.Layer, k.Expert) }

// expertWeights are one expert's FFN weights on a card. gate and up are stacked into one
// [2I, H] buffer so one grouped matmul yields both halves SwiGLU takes.
type expertWeights struct {
	gateUp ascend.Buffer // [2I, H]
	down   ascend.Buffer // [H, I]
}

// ExpertSet is a set of experts held on one card, and the computation every holder of
// experts runs: an expert daemon's card, the in-process Local experts, a router's shared
// expert. Sharing it is what makes mesh and local results agree.
//
// Concurrency: Has, Keys and Len may be called from any goroutine at any time, and the
// set of experts may change (Add, Remove) while another goroutine computes: Compute holds
// a read lock for its whole run, so Remove frees an expert's memory only once no running
// computation can use it, and a computation sees each expert either wholly present or
// absent (ErrNotLoaded). Compute calls themselves must be serialised by the owner (they
// share scratch), and the card's own rule applies to the device operations of Add, Remove
// and Compute (an ascend.Card is used by one goroutine at a time: a daemon runs them all on
// the card's worker).
type ExpertSet struct {
	card   ascend.Card
	hidden int
	inter  int
	limit  float32
	mu     sync.RWMutex // guards w
	w      map[ExpertKey]*expertWeights

	// Host scratch reused across calls so the steady state allocates little.
	order  []int32
	rowOf  []int32
	src    []int32
	dst    []int32
	ones   []float32
	xs     []float32
	counts []int64
	groups []ascend.Buffer
	ups    []ascend.Buffer
}

// NewExpertSet holds experts of width inter (moe_intermediate_size) for hidden size hidden
// on card. limit > 0 selects DeepSeek-V4's clamped SwiGLU.
func NewExpertSet(card ascend.Card, hidden, inter int, limit float32) *ExpertSet {
	return &ExpertSet{card: card, hidden: hidden, inter: inter, limit: limit, w: map[ExpertKey]*expertWeights{}}
}

// Card is the card the set lives on.
func (s *ExpertSet) Card() ascend.Card { return s.card }

// Hidden is the model's hidden size.
func (s *ExpertSet) Hidden() int { return s.hidden }

// Has reports whether the expert is held.
func (s *ExpertSet) Has(k ExpertKey) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.w[k]
	return ok
}

// Keys lists the held experts in (layer, expert) order.
func (s *ExpertSet) Keys() []ExpertKey {
	s.mu.RLock()
	keys := make([]ExpertKey, 0, len(s.w))
	for k := range s.w {
		keys = append(keys, k)
	}
	s.mu.RUnlock()
	slices.SortFunc(keys, func(a, b ExpertKey) int {
		if a.Layer != b.Layer {
			return a.Layer - b.Layer
		}
		return a.Expert - b.Expert
	})
	return keys
}

// Len is the number of experts held.
func (s *ExpertSet) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.w)
}

// ExpertBytes is the device memory one expert's weights of dtype dt take in this set.
func (s *ExpertSet) ExpertBytes(dt ascend.DType) int64 {
	return 3 * int64(s.inter) * int64(s.hidden) * int64(dt.Size())
}

// ExpertWeights is one expert's tensors as raw little-endian bytes of dtype DType:
// Gate and Up are [I, H], Down is [H, I] (a Linear's [out, in]).
type ExpertWeights struct {
	DType          ascend.DType
	Gate, Up, Down []byte
}

// Add uploads an expert's weights. On any error nothing is kept on the card.
func (s *ExpertSet) Add(k ExpertKey, w ExpertWeights) (err error) {
	if s.Has(k) {
		return fmt.Errorf("%w: expert %v is already on card %d", ascend.ErrInvalid, k, s.card.ID())
	}
	size := w.DType.Size()
	if size == 0 {
		return fmt.Errorf("%w: expert %v weights have dtype %v", ascend.ErrDType, k, w.DType)
	}
	want := s.inter * s.hidden * size
	if len(w.Gate) != want || len(w.Up) != want || len(w.Down) != want {
		return fmt.Errorf("%w: expert %v weights are %d/%d/%d bytes, want %d each ([%d,%d] %v)",
			ascend.ErrShape, k, len(w.Gate), len(w.Up), len(w.Down), want, s.inter, s.hidden, w.DType)
	}
	ew := &expertWeights{}
	defer func() {
		if err != nil {
			s.free(ew)
		}
	}()
	if ew.gateUp, err = s.card.Alloc(w.DType, 2*s.inter, s.hidden); err != nil {
		return fmt.Errorf("expert %v: %w", k, err)
	}
	if ew.down, err = s.card.Alloc(w.DType, s.hidden, s.inter); err != nil {
		return fmt.Errorf("expert %v: %w", k, err)
	}
	if err = s.card.Write(ew.gateUp, 0, w.Gate); err != nil {
		return err
	}
	if err = s.card.Write(ew.gateUp, s.inter*s.hidden, w.Up); err != nil {
		return err
	}
	if err = s.card.Write(ew.down, 0, w.Down); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.w[k]; dup { // added meanwhile by another goroutine
		return fmt.Errorf("%w: expert %v is already on card %d", ascend.ErrInvalid, k, s.card.ID())
	}
	s.w[k] = ew
	return nil
}

// Remove frees an expert's memory. It waits for a Compute running on another goroutine to
// finish, so the memory is never freed under a running computation.
func (s *ExpertSet) Remove(k ExpertKey) error {
	s.mu.Lock()
	ew, ok := s.w[k]
	if ok {
		delete(s.w, k)
	}
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %v on card %d", ErrNotLoaded, k, s.card.ID())
	}
	return s.free(ew)
}

func (s *ExpertSet) free(ew *expertWeights) error {
	var first error
	for _, b := range []ascend.Buffer{ew.gateUp, ew.down} {
		if b != nil {
			if err := s.card.Free(b); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// Close frees every expert.
func (s *ExpertSet) Close() error {
	var first error
	for _, k := range s.Keys() {
		if err := s.Remove(k); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Batch is work for an ExpertSet in the CSR form of the wire (proto.ExpertBatch): row r of X
// ([rows, hidden] f32) uses Experts[RowPtr[r]:RowPtr[r+1]] with the matching Weights.
type Batch struct {
	Layer   int
	X       []float32
	RowPtr  []int32
	Experts []int32
	Weights []float32
}

// Compute runs a batch. With pairs false, out is [rows, hidden]: each row's weighted sum of
// its experts, summed in CSR order. With pairs true, out is [pairs, hidden]: each pair's
// unweighted expert output, in CSR order. out is overwritten.
func (s *ExpertSet) Compute(b Batch, pairs bool, out []float32) error {
	rows := len(b.RowPtr) - 1
	if rows < 0 || len(b.X) != rows*s.hidden {
		return fmt.Errorf("%w: %d values for %d rows of %d", ascend.ErrShape, len(b.X), rows, s.hidden)
	}
	np := len(b.Experts)
	if int(b.RowPtr[rows]) != np || len(b.Weights) != np {
		return fmt.Errorf("%w: %d pairs, %d experts, %d weights", ascend.ErrShape, b.RowPtr[rows], np, len(b.Weights))
	}
	outRows := rows
	if pairs {
		outRows = np
	}
	if len(out) != outRows*s.hidden {
		return fmt.Errorf("%w: output holds %d values, want %d×%d", ascend.ErrShape, len(out), outRows, s.hidden)
	}
	if np == 0 {
		clear(out)
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	// rowOf[j]: the row of pair j; order: pairs sorted by expert (stable), the grouping the
	// grouped matmul needs.
	s.rowOf = resize(s.rowOf, np)
	for r := 0; r < rows; r++ {
		for j := b.RowPtr[r]; j < b.RowPtr[r+1]; j++ {
			s.rowOf[j] = int32(r)
		}
	}
	s.order = resize(s.order, np)
	for j := range s.order {
		s.order[j] = int32(j)
	}
	slices.SortStableFunc(s.order, func(a, c int32) int { return int(b.Experts[a]) - int(b.Experts[c]) })
	s.counts, s.groups, s.ups = s.counts[:0], s.groups[:0], s.ups[:0]
	for i := 0; i < np; {
		e := b.Experts[s.order[i]]
		ew, ok := s.w[ExpertKey{b.Layer, int(e)}]
		if !ok {
			return fmt.Errorf("%w: expert %d/%d on card %d", ErrNotLoaded, b.Layer, e, s.card.ID())
		}
		n := i
		for n < np && b.Experts[s.order[n]] == e {
			n++
		}
		s.counts = append(s.counts, int64(n-i))
		s.groups = append(s.groups, ew.gateUp)
		s.ups = append(s.ups, ew.down)
		i = n
	}
	// Expanded input: one row per pair in grouped order. src[j]: where pair j's output lands.
	h := s.hidden
	s.xs = resize(s.xs, np*h)
	s.src = resize(s.src, np)
	for i, j := range s.order {
		r := s.rowOf[j]
		copy(s.xs[i*h:(i+1)*h], b.X[int(r)*h:int(r+1)*h])
		s.src[j] = int32(i)
	}
	return s.run(np, outRows, b, pairs, out)
}

func (s *ExpertSet) run(np, outRows int, b Batch, pairs bool, out []float32) (err error) {
	c, h := s.card, s.hidden
	var bufs []ascend.Buffer
	defer func() {
		for _, buf := range bufs {
			if ferr := c.Free(buf); ferr != nil && err == nil {
				err = ferr
			}
		}
	}()
	alloc := func(shape ...int) ascend.Buffer {
		if err != nil {
			return nil
		}
		var buf ascend.Buffer
		buf, err = c.Alloc(ascend.F32, shape...)
		if err == nil {
			bufs = append(bufs, buf)
		}
		return buf
	}
	x, gu, act, y, o := alloc(np, h), alloc(np, 2*s.inter), alloc(np, s.inter), alloc(np, h), alloc(outRows, h)
	if err != nil {
		return fmt.Errorf("expert batch of %d pairs on card %d: %w", np, c.ID(), err)
	}
	if err = c.WriteF32(x, 0, s.xs); err != nil {
		return err
	}
	if err = c.GroupedMatmul(gu, x, s.groups, s.counts); err != nil {
		return err
	}
	if err = c.SwiGLU(act, gu, s.limit); err != nil {
		return err
	}
	if err = c.GroupedMatmul(y, act, s.ups, s.counts); err != nil {
		return err
	}
	if pairs {
		// Pair j's output moved to row j; 0 + 1·y is exact, so these are the expert outputs.
		s.dst = resize(s.dst, np)
		s.ones = resize(s.ones, np)
		for j := range s.dst {
			s.dst[j] = int32(j)
			s.ones[j] = 1
		}
		err = c.ScatterAdd(o, y, s.src, s.dst, s.ones)
	} else {
		err = c.ScatterAdd(o, y, s.src, s.rowOf[:np], b.Weights)
	}
	if err != nil {
		return err
	}
	return c.ReadF32(o, out)
}

func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
