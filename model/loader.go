package model

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model/nn"
	"github.com/moemesh/moemesh/model/safetensors"
)

// Loader reads the dense-side tensors of one checkpoint onto one card for a family
// package's Load, remembering every buffer it allocates: Buffers hands them to the model
// on success, Free releases them all on failure.
type Loader struct {
	ck   *safetensors.Checkpoint
	card ascend.Card
	bufs []ascend.Buffer
}

// NewLoader returns a Loader reading ck onto card.
func NewLoader(ck *safetensors.Checkpoint, card ascend.Card) *Loader {
	return &Loader{ck: ck, card: card}
}

// Buffers are the card buffers the Loader has allocated so far (Linears do not own them).
func (l *Loader) Buffers() []ascend.Buffer { return l.bufs }

// Free releases every buffer the Loader allocated and forgets them.
func (l *Loader) Free() error {
	var errs []error
	for _, b := range l.bufs {
		errs = append(errs, l.card.Free(b))
	}
	l.bufs = nil
	return errors.Join(errs...)
}

// cardDType is the card dtype a checkpoint dtype is kept in as is; 0 when it must be
// decoded (FP8 blocks and friends are widened once at load).
func cardDType(dt safetensors.DType) ascend.DType {
	switch dt {
	case safetensors.F32:
		return ascend.F32
	case safetensors.BF16:
		return ascend.BF16
	case safetensors.F16:
		return ascend.F16
	}
	return 0
}

// Info returns name's metadata, checking it has exactly shape.
func (l *Loader) Info(name string, shape ...int) (safetensors.TensorInfo, error) {
	info, ok := l.ck.Info(name)
	if !ok {
		return info, fmt.Errorf("%w: %s", ErrMissing, name)
	}
	want := make([]int64, len(shape))
	for i, d := range shape {
		want[i] = int64(d)
	}
	if !slices.Equal(info.Shape, want) {
		return info, fmt.Errorf("%w: %s has shape %v, want %v", ErrShape, name, info.Shape, want)
	}
	return info, nil
}

// Weight places the [out, in] matrix name on the card in its checkpoint dtype (FP8 and
// other dtypes decoded, with their scale blocks, and widened to bf16).
func (l *Loader) Weight(name string, out, in int) (ascend.Buffer, error) {
	info, err := l.Info(name, out, in)
	if err != nil {
		return nil, err
	}
	if dt := cardDType(info.DType); dt != 0 {
		raw, err := l.ck.Raw(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		b, err := l.card.Alloc(dt, out, in)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		l.bufs = append(l.bufs, b)
		if err := l.card.Write(b, 0, raw); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return b, nil
	}
	vals, err := l.ck.F32(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	b, err := nn.UploadWeight(l.card, ascend.BF16, vals, out, in)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	l.bufs = append(l.bufs, b)
	return b, nil
}

// Vec reads the 1-D tensor name of n values as f32 on the host.
func (l *Loader) Vec(name string, n int) ([]float32, error) {
	if _, err := l.Info(name, n); err != nil {
		return nil, err
	}
	v, err := l.ck.F32(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return v, nil
}

// Linear builds an nn.Linear for prefix+"weight" ([out, in]) and, when bias, prefix+"bias".
func (l *Loader) Linear(prefix string, out, in int, bias bool) (*nn.Linear, error) {
	w, err := l.Weight(prefix+"weight", out, in)
	if err != nil {
		return nil, err
	}
	var b []float32
	if bias {
		if b, err = l.Vec(prefix+"bias", out); err != nil {
			return nil, err
		}
	}
	lin, err := nn.NewLinear(l.card, w, b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", prefix+"weight", err)
	}
	return lin, nil
}

// Embedding keeps model.embed_tokens.weight on the host: bf16 as bits (half the memory),
// anything else decoded to f32.
func (l *Loader) Embedding(vocab, hidden int) (*nn.Embedding, error) {
	const name = "model.embed_tokens.weight"
	info, err := l.Info(name, vocab, hidden)
	if err != nil {
		return nil, err
	}
	if info.DType == safetensors.BF16 {
		raw, err := l.ck.Raw(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if len(raw) != 2*vocab*hidden {
			return nil, fmt.Errorf("%w: %s holds %d bytes", ErrShape, name, len(raw))
		}
		// Copied: Raw is a view into the mapping, which dies with the checkpoint.
		bits := make([]uint16, vocab*hidden)
		for i := range bits {
			bits[i] = binary.LittleEndian.Uint16(raw[2*i:])
		}
		return nn.NewEmbeddingBF16(bits, vocab, hidden)
	}
	vals, err := l.ck.F32(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return nn.NewEmbeddingF32(vals, vocab, hidden)
}

// DenseMLP loads layer i's dense SwiGLU (mlp.gate_proj|up_proj|down_proj) into a one-
// expert set, so dense layers share the experts' row-independent kernels. The three
// weights keep their common card dtype; decoded or mixed dtypes are all kept in f32.
func (l *Loader) DenseMLP(cfg *Config, i int) (*ExpertSet, error) {
	I, H := cfg.DenseIntermediate, cfg.Hidden
	if I <= 0 {
		return nil, fmt.Errorf("%w: layer %d is dense but intermediate_size is %d", ErrConfig, i, I)
	}
	pre := fmt.Sprintf("model.layers.%d.mlp.", i)
	names := [3]string{pre + "gate_proj.weight", pre + "up_proj.weight", pre + "down_proj.weight"}
	shapes := [3][2]int{{I, H}, {I, H}, {H, I}}
	dt := ascend.DType(0)
	for j, name := range names {
		info, err := l.Info(name, shapes[j][0], shapes[j][1])
		if err != nil {
			return nil, err
		}
		d := cardDType(info.DType)
		if j == 0 {
			dt = d
		}
		if d == 0 || d != dt {
			dt = ascend.F32 // decoded or mixed dtypes: keep all three in f32
		}
	}
	var parts [3][]byte
	for j, name := range names {
		info, _ := l.ck.Info(name)
		if cardDType(info.DType) == dt {
			raw, err := l.ck.Raw(name)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			parts[j] = raw
			continue
		}
		vals, err := l.ck.F32(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		parts[j] = make([]byte, 4*len(vals))
		for k, v := range vals {
			binary.LittleEndian.PutUint32(parts[j][4*k:], math.Float32bits(v))
		}
	}
	set := NewExpertSet(l.card, H, I, 0)
	if err := set.Add(ExpertKey{Layer: i}, ExpertWeights{DType: dt, Gate: parts[0], Up: parts[1], Down: parts[2]}); err != nil {
		return nil, errors.Join(fmt.Errorf("layer %d dense mlp: %w", i, err), set.Close())
	}
	return set, nil
}
