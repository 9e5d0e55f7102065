package proto

import (
	"bytes"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Version is the protocol version every body starts with. A receiver rejects bodies whose
// version it does not speak with CodeVersion.
const Version uint16 = 1

// Mode says how a card returns an ExpertBatch's outputs.
type Mode uint8

const (
	// ModeReduce: the card multiplies each expert output by its weight and sums per row;
	// Y is [rows, hidden]. One row per token: the fewest bytes on the wire.
	ModeReduce Mode = 0
	// ModePairs: the card returns each (row, expert) output unweighted, in CSR order;
	// Y is [pairs, hidden]. The router then sums every token's experts in one fixed order,
	// so the result is bit-identical to an in-process run however experts are placed.
	ModePairs Mode = 1
)

// ExpertBatch asks a card to run experts of one layer over a set of token rows.
//
// Row r of X uses the experts Experts[RowPtr[r]:RowPtr[r+1]] (indices within the layer) with
// the matching Weights: a CSR matrix of (row, expert, weight). A token appears once per card
// even when it uses several of the card's experts.
type ExpertBatch struct {
	_msgpack struct{} `msgpack:",as_array"`
	V        uint16
	Layer    int32
	Mode     Mode
	OutDType DType  // dtype of ExpertResult.Y
	X        Tensor // [rows, hidden]
	RowPtr   I32s   // rows+1, RowPtr[0] = 0, non-decreasing, last = pairs
	Experts  I32s   // pairs
	Weights  F32s   // pairs
	Tokens   I32s   // rows: the token index of each row in the sender's step (for tracing), or empty
}

// Rows is the number of token rows.
func (b *ExpertBatch) Rows() int { return len(b.RowPtr) - 1 }

// Validate checks that the batch is self-consistent; experts is the layer's expert count
// (0 skips the range check).
func (b *ExpertBatch) Validate(experts int) error {
	if b.V != Version {
		return Errorf(CodeVersion, "batch version %d, this build speaks %d", b.V, Version)
	}
	if b.Mode != ModeReduce && b.Mode != ModePairs {
		return fmt.Errorf("%w: batch mode %d unknown", ErrDecode, b.Mode)
	}
	if b.OutDType.Size() == 0 {
		return fmt.Errorf("%w: batch output dtype %d unknown", ErrDecode, b.OutDType)
	}
	if b.Layer < 0 {
		return fmt.Errorf("%w: layer %d", ErrDecode, b.Layer)
	}
	if err := b.X.Validate(); err != nil {
		return err
	}
	if len(b.X.Shape) != 2 {
		return fmt.Errorf("%w: batch rows have shape %v, want [rows, hidden]", ErrDecode, b.X.Shape)
	}
	rows := len(b.RowPtr) - 1
	if rows < 0 || int64(rows) != b.X.Shape[0] {
		return fmt.Errorf("%w: %d row pointers for %d rows", ErrDecode, len(b.RowPtr), b.X.Shape[0])
	}
	if b.RowPtr[0] != 0 {
		return fmt.Errorf("%w: first row pointer %d, want 0", ErrDecode, b.RowPtr[0])
	}
	for r := 0; r < rows; r++ {
		if b.RowPtr[r+1] < b.RowPtr[r] {
			return fmt.Errorf("%w: row pointers decrease at row %d", ErrDecode, r)
		}
	}
	pairs := int(b.RowPtr[rows])
	if len(b.Experts) != pairs || len(b.Weights) != pairs {
		return fmt.Errorf("%w: %d pairs by row pointers, %d experts, %d weights", ErrDecode, pairs, len(b.Experts), len(b.Weights))
	}
	if len(b.Tokens) != 0 && len(b.Tokens) != rows {
		return fmt.Errorf("%w: %d token indices for %d rows", ErrDecode, len(b.Tokens), rows)
	}
	for i, e := range b.Experts {
		if e < 0 || (experts > 0 && int(e) >= experts) {
			return fmt.Errorf("%w: pair %d names expert %d", ErrDecode, i, e)
		}
	}
	return nil
}

// ExpertResult answers an ExpertBatch.
type ExpertResult struct {
	_msgpack     struct{} `msgpack:",as_array"`
	V            uint16
	Layer        int32
	Y            Tensor // [rows, hidden] (ModeReduce) or [pairs, hidden] (ModePairs)
	QueueNanos   int64  // time the batch waited on the card
	ComputeNanos int64  // time the card computed (a coalesced run is shared by its batches)
}

// Validate checks the result against the batch it answers.
func (r *ExpertResult) Validate(b *ExpertBatch) error {
	if r.V != Version {
		return Errorf(CodeVersion, "result version %d, this build speaks %d", r.V, Version)
	}
	if r.Layer != b.Layer {
		return fmt.Errorf("%w: result for layer %d, asked layer %d", ErrDecode, r.Layer, b.Layer)
	}
	if err := r.Y.Validate(); err != nil {
		return err
	}
	want := int64(b.Rows())
	if b.Mode == ModePairs {
		want = int64(len(b.Experts))
	}
	if len(r.Y.Shape) != 2 || r.Y.Shape[0] != want || r.Y.Shape[1] != b.X.Shape[1] {
		return fmt.Errorf("%w: result shape %v, want [%d %d]", ErrDecode, r.Y.Shape, want, b.X.Shape[1])
	}
	return nil
}

// Expert states in a card's lease.
const (
	StateLoading  uint8 = 1
	StateReady    uint8 = 2
	StateDraining uint8 = 3
)

// ExpertState is one expert's state on a card.
type ExpertState struct {
	_msgpack struct{} `msgpack:",as_array"`
	Layer    int32
	Expert   int32
	State    uint8
}

// MaxExpertStates bounds the experts one lease may list (a card holding every expert of a
// 61-layer, 384-expert model lists 23,424).
const MaxExpertStates = 1 << 20

// ExpertStates is a lease's expert list, decoded with a bound on its length.
type ExpertStates []ExpertState

// DecodeMsgpack implements msgpack.CustomDecoder.
func (s *ExpertStates) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n > MaxExpertStates {
		return fmt.Errorf("%w: lease lists %d experts (at most %d)", ErrDecode, n, MaxExpertStates)
	}
	out := (*s)[:0]
	for i := 0; i < n; i++ {
		var e ExpertState
		if err := dec.Decode(&e); err != nil {
			return err
		}
		out = append(out, e)
	}
	if n < 0 {
		out = nil
	}
	*s = out
	return nil
}

// CardStatus is a card's lease in the registry, rewritten every heartbeat.
type CardStatus struct {
	_msgpack     struct{} `msgpack:",as_array"`
	V            uint16
	Card         string // card id, a subject token
	Daemon       string
	Device       string // backend and device index, e.g. "cpu:0"
	MemTotal     int64  // 0: unlimited
	MemUsed      int64
	Experts      ExpertStates
	Queue        int32   // batches waiting
	TokensPerSec float32 // rows computed per second, recent
	Beat         int64   // unix nanoseconds of this heartbeat
	Draining     bool
	// BusyNanos is the card's compute time since its daemon started (monotonic), and Busy
	// the fraction of wall time it computed over the last heartbeat (0 to 1). Queue depth
	// says what waits; busy time says how close the card is to saturation when nothing
	// waits yet.
	BusyNanos int64
	Busy      float32
	// Leaving: the daemon is shutting down gracefully and still serves. The controller
	// plans without the card (its experts get replicas elsewhere) and the daemon drains
	// once its experts are ready on other cards, so no request loses its replica.
	Leaving bool
}

// Validate checks a decoded status.
func (s *CardStatus) Validate() error {
	if s.V != Version {
		return Errorf(CodeVersion, "card status version %d, this build speaks %d", s.V, Version)
	}
	if err := ValidToken(s.Card); err != nil {
		return fmt.Errorf("%w: card status: %w", ErrDecode, err)
	}
	if s.BusyNanos < 0 || !(s.Busy >= 0 && s.Busy <= 1) {
		return fmt.Errorf("%w: card %s: busy %g (%d ns), want a fraction 0 to 1 and time >= 0", ErrDecode, s.Card, s.Busy, s.BusyNanos)
	}
	for _, e := range s.Experts {
		if e.Layer < 0 || e.Expert < 0 || e.State < StateLoading || e.State > StateDraining {
			return fmt.Errorf("%w: card %s: bad expert entry %d/%d state %d", ErrDecode, s.Card, e.Layer, e.Expert, e.State)
		}
	}
	return nil
}

// Marshal encodes v (one of this package's messages).
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.GetEncoder()
	defer msgpack.PutEncoder(enc)
	enc.Reset(&buf)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("proto: encode %T: %w", v, err)
	}
	return buf.Bytes(), nil
}

// unmarshal decodes data into v, requiring that all bytes are used, and turns any failure
// (including a panic deep in the decoder) into an ErrDecode error.
func unmarshal(data []byte, v any) (err error) {
	dec := msgpack.GetDecoder()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %T: %v", ErrDecode, v, r)
		}
		// Only a decoder that succeeded goes back to the pool. A read that fails on a
		// string or bin longer than the body leaves the decoder holding the buffer msgpack
		// grew for it (readNGrow), a quarter larger each time: pooled, a few dozen 9-byte
		// bad messages grew it past a gigabyte and one decode took seconds (found by
		// fuzzing; TestDecodeFailuresDoNotGrowMemory).
		if err == nil {
			msgpack.PutDecoder(dec)
		}
	}()
	rd := bytes.NewReader(data)
	dec.Reset(rd)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %T: %w", ErrDecode, v, err)
	}
	if rd.Len() != 0 {
		return fmt.Errorf("%w: %T: %d trailing bytes", ErrDecode, v, rd.Len())
	}
	return nil
}

// DecodeExpertBatch decodes and validates a batch (experts: see ExpertBatch.Validate).
// It reuses b's slices, so decoding into the same b again allocates nothing once they are
// large enough; b holds no reference to data afterwards.
func DecodeExpertBatch(data []byte, b *ExpertBatch, experts int) error {
	if !decodeBatchFast(data, b) {
		// Into a zeroed value: a body with fewer fields (another version) must not leave
		// fields of the batch b held before.
		*b = ExpertBatch{}
		if err := unmarshal(data, b); err != nil {
			return err
		}
	}
	return b.Validate(experts)
}

// DecodeExpertResult decodes a result and validates it against the batch it answers. Like
// DecodeExpertBatch it reuses r's storage and keeps no reference to data.
func DecodeExpertResult(data []byte, r *ExpertResult, b *ExpertBatch) error {
	if !decodeResultFast(data, r) {
		*r = ExpertResult{}
		if err := unmarshal(data, r); err != nil {
			return err
		}
	}
	return r.Validate(b)
}

// DecodeCardStatus decodes and validates a card lease.
func DecodeCardStatus(data []byte, s *CardStatus) error {
	if err := unmarshal(data, s); err != nil {
		return err
	}
	return s.Validate()
}
