package nn

import (
	"fmt"

	"github.com/moemesh/moemesh/ascend"
)

// Linear computes y = x·Wᵀ (+ bias) for a weight W [out, in] that lives on an ascend.Card
// in its checkpoint dtype, through the card's GroupedMatmul with a single group. It owns
// two f32 scratch buffers on the card (input and output rows), grown to the largest batch
// seen. Like the card, a Linear is for one goroutine at a time.
type Linear struct {
	card    ascend.Card
	w       ascend.Buffer
	bias    []float32
	in, out int

	rows   int // capacity of the scratch buffers in rows
	xb, yb ascend.Buffer
	ws     [1]ascend.Buffer
	counts [1]int64
}

// NewLinear wraps w ([out, in], any dtype the card takes). bias is nil or has out values
// (Qwen2-MoE's q/k/v bias); it is added in f32 on the host. The Linear does not own w.
func NewLinear(card ascend.Card, w ascend.Buffer, bias []float32) (*Linear, error) {
	if card == nil || w == nil {
		return nil, fmt.Errorf("%w: linear needs a card and a weight", ErrInvalid)
	}
	sh := w.Shape()
	if len(sh) != 2 || sh[0] <= 0 || sh[1] <= 0 {
		return nil, fmt.Errorf("%w: linear weight shape %v, want [out, in]", ErrShape, sh)
	}
	if bias != nil && len(bias) != sh[0] {
		return nil, fmt.Errorf("%w: linear bias has %d values for %d outputs", ErrShape, len(bias), sh[0])
	}
	return &Linear{card: card, w: w, bias: bias, out: sh[0], in: sh[1], ws: [1]ascend.Buffer{w}}, nil
}

// UploadWeight allocates a [out, in] buffer of dtype dt on card and stores w (f32, rounded
// to dt). It is how tests and small models get weights onto a card; checkpoint loaders
// write raw bytes instead.
func UploadWeight(card ascend.Card, dt ascend.DType, w []float32, out, in int) (ascend.Buffer, error) {
	if out <= 0 || in <= 0 || len(w) != out*in {
		return nil, fmt.Errorf("%w: upload of %d values as [%d %d]", ErrShape, len(w), out, in)
	}
	b, err := card.Alloc(dt, out, in)
	if err != nil {
		return nil, fmt.Errorf("upload weight: %w", err)
	}
	if err := card.WriteF32(b, 0, w); err != nil {
		_ = card.Free(b)
		return nil, fmt.Errorf("upload weight: %w", err)
	}
	return b, nil
}

// In and Out are the weight's input and output widths.
func (l *Linear) In() int  { return l.in }
func (l *Linear) Out() int { return l.out }

// Forward computes out [rows, Out] from x [rows, In].
func (l *Linear) Forward(out, x []float32, rows int) error {
	if rows < 0 || len(x) != rows*l.in || len(out) != rows*l.out {
		return fmt.Errorf("%w: linear [%d %d]: %d input and %d output values for %d rows", ErrShape, l.out, l.in, len(x), len(out), rows)
	}
	if rows == 0 {
		return nil
	}
	if err := l.reserve(rows); err != nil {
		return err
	}
	if err := l.card.WriteF32(l.xb, 0, x); err != nil {
		return fmt.Errorf("linear: %w", err)
	}
	// Scratch may hold more rows than this call; GroupedMatmul leaves rows past the group
	// unwritten, and ReadF32 reads only the first rows·out values.
	l.counts[0] = int64(rows)
	if err := l.card.GroupedMatmul(l.yb, l.xb, l.ws[:], l.counts[:]); err != nil {
		return fmt.Errorf("linear: %w", err)
	}
	if err := l.card.ReadF32(l.yb, out); err != nil {
		return fmt.Errorf("linear: %w", err)
	}
	if l.bias != nil {
		AddBias(out, l.bias)
	}
	return nil
}

// reserve makes the scratch buffers hold at least rows rows.
func (l *Linear) reserve(rows int) error {
	if rows <= l.rows {
		return nil
	}
	n := max(rows, 2*l.rows)
	if err := l.Close(); err != nil {
		return err
	}
	xb, err := l.card.Alloc(ascend.F32, n, l.in)
	if err != nil {
		return fmt.Errorf("linear scratch: %w", err)
	}
	yb, err := l.card.Alloc(ascend.F32, n, l.out)
	if err != nil {
		_ = l.card.Free(xb)
		return fmt.Errorf("linear scratch: %w", err)
	}
	l.xb, l.yb, l.rows = xb, yb, n
	return nil
}

// Close frees the scratch buffers (not the weight). The Linear stays usable: the next
// Forward allocates again.
func (l *Linear) Close() error {
	var first error
	for _, b := range []*ascend.Buffer{&l.xb, &l.yb} {
		if *b != nil {
			if err := l.card.Free(*b); err != nil && first == nil {
				first = fmt.Errorf("linear close: %w", err)
			}
			*b = nil
		}
	}
	l.rows = 0
	return first
}

// Embedding is a token-embedding table [vocab, dim] kept on the host: a lookup copies
// rows, which needs no device.
type Embedding struct {
	vocab, dim int
	f32        []float32
	bf16       []uint16
}

// NewEmbeddingF32 wraps w [vocab, dim] (not copied).
func NewEmbeddingF32(w []float32, vocab, dim int) (*Embedding, error) {
	if vocab <= 0 || dim <= 0 || len(w) != vocab*dim {
		return nil, fmt.Errorf("%w: embedding of %d values as [%d %d]", ErrShape, len(w), vocab, dim)
	}
	return &Embedding{vocab: vocab, dim: dim, f32: w}, nil
}

// NewEmbeddingBF16 wraps bf16 bits w [vocab, dim] (not copied); rows widen exactly to f32
// on lookup, so the table costs half the memory of f32.
func NewEmbeddingBF16(w []uint16, vocab, dim int) (*Embedding, error) {
	if vocab <= 0 || dim <= 0 || len(w) != vocab*dim {
		return nil, fmt.Errorf("%w: embedding of %d values as [%d %d]", ErrShape, len(w), vocab, dim)
	}
	return &Embedding{vocab: vocab, dim: dim, bf16: w}, nil
}

// Vocab and Dim are the table's shape.
func (e *Embedding) Vocab() int { return e.vocab }
func (e *Embedding) Dim() int   { return e.dim }

// Lookup writes the rows of ids to out [len(ids), Dim]. An id outside [0, Vocab) is an
// error wrapping ErrInvalid (it comes from a tokenizer or a client, not from this code).
func (e *Embedding) Lookup(out []float32, ids []int32) error {
	if len(out) != len(ids)*e.dim {
		return fmt.Errorf("%w: embedding lookup of %d ids into %d values (dim %d)", ErrShape, len(ids), len(out), e.dim)
	}
	for t, id := range ids {
		if id < 0 || int(id) >= e.vocab {
			return fmt.Errorf("%w: token id %d at %d outside vocabulary of %d", ErrInvalid, id, t, e.vocab)
		}
		dst := out[t*e.dim : (t+1)*e.dim]
		r := int(id) * e.dim
		if e.f32 != nil {
			copy(dst, e.f32[r:r+e.dim])
			continue
		}
		for i, b := range e.bf16[r : r+e.dim] {
			dst[i] = ascend.BF16ToF32(b)
		}
	}
	return nil
}
