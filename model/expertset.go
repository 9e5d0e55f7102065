package model

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
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
	mu     sync.RWMutex // guards w and store
	w      map[ExpertKey]*expertWeights
	store  ascend.DType // SetWeightDType; 0: as given

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

	// Device scratch kept across calls: x, gu, act and y of devRows rows, o of devOut rows,
	// reallocated only when a batch needs more. Allocating and freeing the five per batch
	// was most of a daemon's allocations per batch (issue 8). A smaller batch uses their
	// first rows: GroupedMatmul leaves rows past sum(counts) unwritten, SwiGLU's rows are
	// independent, and ScatterAdd and ReadF32 touch only the batch's own rows of o, which
	// run zeroes first.
	dev     [5]ascend.Buffer
	devRows int
	devOut  int
	zeros   []float32
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

// HeldDType reports the dtype expert k is held in, false when it is not held: what Add
// chose, so that a holder can tell an MXFP4 expert that fell back to bf16 (a card without
// MXFP4 kernels) from a packed one.
func (s *ExpertSet) HeldDType(k ExpertKey) (ascend.DType, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ew, ok := s.w[k]
	if !ok {
		return 0, false
	}
	return ew.gateUp.DType(), true
}

// Len is the number of experts held.
func (s *ExpertSet) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.w)
}

// ExpertBytes is the device memory one expert given in dtype dt takes in this set: gate and
// up stacked [2I, H] plus down [H, I] in the dtype the set holds it in (dt itself, or the
// dtype SetWeightDType chose), values and scales for I8 and MXFP4 (ascend.StorageBytes).
// A card without MXFP4 holds such experts in bf16 instead (see Add), which this arithmetic
// cannot know; 0 for a dtype no card holds.
func (s *ExpertSet) ExpertBytes(dt ascend.DType) int64 {
	n, err := ExpertStorageBytes(s.heldDType(dt), s.hidden, s.inter)
	if err != nil {
		return 0
	}
	return n
}

// ExpertStorageBytes is the card memory of one SwiGLU expert of width inter for hidden size
// hidden held in dt: what ExpertSet.Add allocates. For MXFP4 it is 3·I·H·(1/2 + 1/32)
// bytes, 4.25 bits a weight.
func ExpertStorageBytes(dt ascend.DType, hidden, inter int) (int64, error) {
	gu, err := ascend.StorageBytes(dt, []int{2 * inter, hidden})
	if err != nil {
		return 0, err
	}
	down, err := ascend.StorageBytes(dt, []int{hidden, inter})
	return gu + down, err
}

// ExpertWeights is one expert's tensors as raw little-endian bytes of dtype DType: Gate and
// Up are [I, H], Down is [H, I] (a Linear's [out, in]). For the quantised dtypes the value
// and scale parts of ascend.QuantLayout are given apart, as checkpoints store them:
//
//	MXFP4: Gate holds [I, H/2] packed E2M1 pairs, GateScale [I, H/32] E8M0 codes
//	       (DeepSeek-V4's "w1.weight" and "w1.scale" rows); Down [H, I/2] and [H, I/32].
//	I8:    Gate holds [I, H] int8 values, GateScale I little-endian float32 row scales.
//
// The scales are nil for plain dtypes.
type ExpertWeights struct {
	DType                         ascend.DType
	Gate, Up, Down                []byte
	GateScale, UpScale, DownScale []byte
}

// Bytes is the size of the weights as given: what a card holding them in DType takes.
func (w ExpertWeights) Bytes() int64 {
	return int64(len(w.Gate) + len(w.Up) + len(w.Down) + len(w.GateScale) + len(w.UpScale) + len(w.DownScale))
}

// SetWeightDType makes Add convert every expert to dt before upload: 0 (the default)
// keeps each expert in the dtype it is given (MXFP4 packed on a card that has MXFP4),
// BF16 dequantises quantised experts as loaders did before packed experts (a comparison
// point), I8 quantises them per row to W8A16 on the card (ascend WriteF32), F32/F16/MXFP4
// likewise. Experts already held keep their dtype. A dtype the card lacks makes Add fail
// with ascend.ErrDType.
func (s *ExpertSet) SetWeightDType(dt ascend.DType) error {
	switch dt {
	case 0, ascend.F32, ascend.BF16, ascend.F16, ascend.I8, ascend.MXFP4:
	default:
		return fmt.Errorf("%w: expert weights cannot be held in %v", ascend.ErrDType, dt)
	}
	s.mu.Lock()
	s.store = dt
	s.mu.Unlock()
	return nil
}

// heldDType is the dtype an expert given in dt is held in (before any fallback of Add).
func (s *ExpertSet) heldDType(dt ascend.DType) ascend.DType {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.store != 0 {
		return s.store
	}
	return dt
}

// checkWeights checks that w holds an expert of this set's shape in its dtype.
func (s *ExpertSet) checkWeights(k ExpertKey, w ExpertWeights) error {
	I, H := s.inter, s.hidden
	if !w.DType.Quantized() {
		size := w.DType.Size()
		if size == 0 {
			return fmt.Errorf("%w: expert %v weights have dtype %v", ascend.ErrDType, k, w.DType)
		}
		want := I * H * size
		if len(w.Gate) != want || len(w.Up) != want || len(w.Down) != want {
			return fmt.Errorf("%w: expert %v weights are %d/%d/%d bytes, want %d each ([%d,%d] %v)",
				ascend.ErrShape, k, len(w.Gate), len(w.Up), len(w.Down), want, I, H, w.DType)
		}
		if len(w.GateScale)+len(w.UpScale)+len(w.DownScale) != 0 {
			return fmt.Errorf("%w: expert %v weights of dtype %v carry scales", ascend.ErrShape, k, w.DType)
		}
		return nil
	}
	gu, err := ascend.CheckQuantShape(w.DType, []int{I, H})
	if err != nil {
		return fmt.Errorf("expert %v gate/up: %w", k, err)
	}
	dn, err := ascend.CheckQuantShape(w.DType, []int{H, I})
	if err != nil {
		return fmt.Errorf("expert %v down: %w", k, err)
	}
	for _, p := range []struct {
		what         string
		vals, scales []byte
		l            ascend.QuantLayout
	}{{"gate", w.Gate, w.GateScale, gu}, {"up", w.Up, w.UpScale, gu}, {"down", w.Down, w.DownScale, dn}} {
		if int64(len(p.vals)) != p.l.Values || int64(len(p.scales)) != p.l.Scales {
			return fmt.Errorf("%w: expert %v %s is %d value and %d scale bytes, want %d and %d ([%d,%d] %v)",
				ascend.ErrShape, k, p.what, len(p.vals), len(p.scales), p.l.Values, p.l.Scales, p.l.N, p.l.K, w.DType)
		}
	}
	return nil
}

// Add uploads an expert's weights, in the dtype SetWeightDType chose or else as given. An
// MXFP4 expert given to a card without MXFP4 buffers (Alloc refuses the dtype; both
// backends here hold them, see ascend.Supports) is dequantised to bf16 on the host and held so, 3.8× the packed size;
// the values are the same (E2M1·2^k is exact in bf16), so results do not change. On any
// error nothing is kept on the card.
func (s *ExpertSet) Add(k ExpertKey, w ExpertWeights) error {
	if s.Has(k) {
		return fmt.Errorf("%w: expert %v is already on card %d", ascend.ErrInvalid, k, s.card.ID())
	}
	if err := s.checkWeights(k, w); err != nil {
		return err
	}
	s.mu.RLock()
	store := s.store
	s.mu.RUnlock()
	dt := w.DType
	if store != 0 {
		dt = store
	}
	ew, err := s.upload(w, dt)
	if err != nil && store == 0 && w.DType == ascend.MXFP4 && errors.Is(err, ascend.ErrDType) {
		ew, err = s.upload(w, ascend.BF16)
	}
	if err != nil {
		return fmt.Errorf("expert %v: %w", k, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.w[k]; dup { // added meanwhile by another goroutine
		return errors.Join(fmt.Errorf("%w: expert %v is already on card %d", ascend.ErrInvalid, k, s.card.ID()), s.free(ew))
	}
	s.w[k] = ew
	return nil
}

// upload places w on the card in dt: a copy when dt is w's dtype, else through f32 on the
// host and the card's conversion (WriteF32: rounding for plain dtypes, per-row quantisation
// for I8 and MXFP4). On error nothing stays allocated.
func (s *ExpertSet) upload(w ExpertWeights, dt ascend.DType) (_ *expertWeights, err error) {
	ew := &expertWeights{}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.free(ew))
		}
	}()
	I, H := s.inter, s.hidden
	if ew.gateUp, err = s.card.Alloc(dt, 2*I, H); err != nil {
		return nil, err
	}
	if ew.down, err = s.card.Alloc(dt, H, I); err != nil {
		return nil, err
	}
	if dt != w.DType {
		vals := make([]float32, 2*I*H)
		if err = decodeWeight(vals[:I*H], w.DType, w.Gate, w.GateScale, H); err != nil {
			return nil, err
		}
		if err = decodeWeight(vals[I*H:], w.DType, w.Up, w.UpScale, H); err != nil {
			return nil, err
		}
		if err = s.card.WriteF32(ew.gateUp, 0, vals); err != nil {
			return nil, err
		}
		vals = vals[:H*I]
		if err = decodeWeight(vals, w.DType, w.Down, w.DownScale, I); err != nil {
			return nil, err
		}
		return ew, s.card.WriteF32(ew.down, 0, vals)
	}
	if !dt.Quantized() {
		if err = s.card.Write(ew.gateUp, 0, w.Gate); err == nil {
			if err = s.card.Write(ew.gateUp, I*H, w.Up); err == nil {
				err = s.card.Write(ew.down, 0, w.Down)
			}
		}
		return ew, err
	}
	// Quantised: byte offsets into the [values | scales] storage (ascend.QuantLayout), so
	// the up rows follow the gate rows in both parts.
	gu, err := ascend.CheckQuantShape(dt, []int{2 * I, H})
	if err != nil {
		return nil, err
	}
	dn, err := ascend.CheckQuantShape(dt, []int{H, I})
	if err != nil {
		return nil, err
	}
	for _, p := range []struct {
		b    ascend.Buffer
		off  int64
		data []byte
	}{{ew.gateUp, gu.RowValues(0), w.Gate}, {ew.gateUp, gu.RowValues(I), w.Up},
		{ew.gateUp, gu.RowScales(0), w.GateScale}, {ew.gateUp, gu.RowScales(I), w.UpScale},
		{ew.down, dn.RowValues(0), w.Down}, {ew.down, dn.RowScales(0), w.DownScale}} {
		if err = s.card.Write(p.b, int(p.off), p.data); err != nil {
			return nil, err
		}
	}
	return ew, nil
}

// decodeWeight writes the real values of one [rows, k] weight given as raw bytes of dt (and
// its scales, for I8 and MXFP4) into dst.
func decodeWeight(dst []float32, dt ascend.DType, raw, scales []byte, k int) error {
	switch dt {
	case ascend.F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case ascend.BF16:
		for i := range dst {
			dst[i] = ascend.BF16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	case ascend.F16:
		for i := range dst {
			dst[i] = ascend.F16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	case ascend.I8:
		for r := 0; r*k < len(dst); r++ {
			ascend.DequantI8Row(dst[r*k:(r+1)*k], raw[r*k:(r+1)*k], ascend.I8Scale(scales, r))
		}
	case ascend.MXFP4:
		nb := k / ascend.MXBlock
		for r := 0; r*k < len(dst); r++ {
			if err := ascend.DequantMXFP4Row(dst[r*k:(r+1)*k], raw[r*k/2:(r+1)*k/2], scales[r*nb:(r+1)*nb]); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("%w: expert weights of dtype %v", ascend.ErrDType, dt)
	}
	return nil
}

// Remove frees an expert's memory. It waits for a Compute running on another goroutine to
// finish, so the memory is never freed under a running computation.
func (s *ExpertSet) Remove(k ExpertKey) error {
	s.mu.Lock()
	ew, ok := s.w[k]
	var scratchErr error
	if ok {
		delete(s.w, k)
		if len(s.w) == 0 {
			// An empty set holds no device memory. Under the write lock: Compute uses
			// the scratch under the read lock.
			scratchErr = s.freeScratch()
		}
	}
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %v on card %d", ErrNotLoaded, k, s.card.ID())
	}
	if err := s.free(ew); err != nil {
		return err
	}
	return scratchErr
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

// Close frees every expert and the device scratch.
func (s *ExpertSet) Close() error {
	var first error
	for _, k := range s.Keys() {
		if err := s.Remove(k); err != nil && first == nil {
			first = err
		}
	}
	s.mu.Lock()
	err := s.freeScratch() // if no expert was left to remove
	s.mu.Unlock()
	if err != nil && first == nil {
		first = err
	}
	return first
}

// freeScratch frees the device scratch, which the next Compute allocates again. The
// caller holds mu for writing, or is Compute.
func (s *ExpertSet) freeScratch() error {
	var first error
	for i, b := range s.dev {
		if b != nil {
			if err := s.card.Free(b); err != nil && first == nil {
				first = err
			}
			s.dev[i] = nil
		}
	}
	s.devRows, s.devOut = 0, 0
	return first
}

// scratch makes the device scratch hold np pairs and outRows output rows.
func (s *ExpertSet) scratch(np, outRows int) error {
	if np <= s.devRows && outRows <= s.devOut {
		return nil
	}
	// Freed first so that the card's budget holds one set at a time, as it did when each
	// batch allocated its own.
	if err := s.freeScratch(); err != nil {
		return err
	}
	rows, out := max(np, s.devRows), max(outRows, s.devOut)
	h := s.hidden
	for i, shape := range [5][2]int{{rows, h}, {rows, 2 * s.inter}, {rows, s.inter}, {rows, h}, {out, h}} {
		b, err := s.card.Alloc(ascend.F32, shape[0], shape[1])
		if err != nil {
			_ = s.freeScratch() // the first error is the one to report
			return err
		}
		s.dev[i] = b
	}
	s.devRows, s.devOut = rows, out
	return nil
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
	if err := s.scratch(np, outRows); err != nil {
		return fmt.Errorf("expert batch of %d pairs on card %d: %w", np, c.ID(), err)
	}
	x, gu, act, y, o := s.dev[0], s.dev[1], s.dev[2], s.dev[3], s.dev[4]
	s.zeros = resize(s.zeros, outRows*h)
	if err = c.WriteF32(o, 0, s.zeros); err != nil {
		return err
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
