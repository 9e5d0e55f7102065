package model

import (
	"fmt"
	"slices"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model/safetensors"
)

// weightDType is the card dtype an expert tensor is kept in: its checkpoint dtype when the
// card has it (cardDType), else bf16 (FP8 blocks are dequantised once at load).
func weightDType(dt safetensors.DType) ascend.DType {
	if d := cardDType(dt); d != 0 {
		return d
	}
	return ascend.BF16
}

// readRef returns the bytes of ref as raw little-endian values of dt, converting only when
// the checkpoint dtype differs (e.g. FP8 → bf16).
func readRef(ck *safetensors.Checkpoint, ref TensorRef, dt ascend.DType) ([]byte, safetensors.TensorInfo, error) {
	raw, info, err := ck.Rows(ref.Name, ref.Index, ref.RowStart, ref.RowEnd)
	if err != nil {
		return nil, info, err
	}
	if d := cardDType(info.DType); d != 0 && d == dt {
		return raw, info, nil
	}
	// Quantised (FP8 blocks, FP4) or another dtype: dequantise just these rows.
	vals, err := ck.RowsF32(ref.Name, ref.Index, ref.RowStart, ref.RowEnd)
	if err != nil {
		return nil, info, err
	}
	out := make([]byte, len(vals)*dt.Size())
	encode(out, vals, dt)
	return out, info, nil
}

// ReadExpert reads one routed expert's weights from a checkpoint: only that expert's byte
// ranges are touched. Packed MXFP4 experts (DeepSeek-V4) come as they are stored, values
// and E8M0 scales (DType MXFP4); FP8 and other dtypes a card does not hold are
// dequantised to bf16. The bytes may be views into the checkpoint's mapping, valid until
// it is closed.
func ReadExpert(ck *safetensors.Checkpoint, cfg *Config, k ExpertKey) (ExpertWeights, error) {
	refs, err := cfg.ExpertRefs(ck, k.Layer, k.Expert)
	if err != nil {
		return ExpertWeights{}, err
	}
	return readExpertRefs(ck, refs)
}

func readExpertRefs(ck *safetensors.Checkpoint, refs ExpertRefs) (ExpertWeights, error) {
	info, ok := ck.Info(refs.Gate.Name)
	if !ok {
		return ExpertWeights{}, fmt.Errorf("%w: %s", ErrMissing, refs.Gate.Name)
	}
	if w, ok, err := readPackedExpert(ck, refs); ok || err != nil {
		return w, err
	}
	w := ExpertWeights{DType: weightDType(info.DType)}
	var err error
	if w.Gate, _, err = readRef(ck, refs.Gate, w.DType); err != nil {
		return w, err
	}
	if w.Up, _, err = readRef(ck, refs.Up, w.DType); err != nil {
		return w, err
	}
	if w.Down, _, err = readRef(ck, refs.Down, w.DType); err != nil {
		return w, err
	}
	return w, nil
}

// mxfp4Scale returns the E8M0 scale tensor of name when name is stored as DeepSeek-V4's
// packed MXFP4: I8/U8 [..., C/2] beside an F8_E8M0 scale [..., C/32] with the same leading
// dimensions (one code per 32 values along the row).
func mxfp4Scale(ck *safetensors.Checkpoint, name string) (safetensors.TensorInfo, bool) {
	info, ok := ck.Info(name)
	if !ok || info.DType != safetensors.I8 && info.DType != safetensors.U8 {
		return safetensors.TensorInfo{}, false
	}
	sc, ok := ck.ScaleOf(name)
	r := len(info.Shape)
	if !ok || sc.DType != safetensors.F8E8M0 || r < 2 || len(sc.Shape) != r ||
		!slices.Equal(sc.Shape[:r-1], info.Shape[:r-1]) || 2*info.Shape[r-1] != ascend.MXBlock*sc.Shape[r-1] {
		return safetensors.TensorInfo{}, false
	}
	return sc, true
}

// readPackedExpert reads an expert whose three projections are all packed MXFP4 as they are
// stored: the rows of this expert from the value tensors and from their scale tensors, no
// dequantisation (ExpertWeights with DType MXFP4). ok is false when any projection is
// stored otherwise; the caller then dequantises.
func readPackedExpert(ck *safetensors.Checkpoint, refs ExpertRefs) (w ExpertWeights, ok bool, err error) {
	var scales [3]string
	for i, ref := range []TensorRef{refs.Gate, refs.Up, refs.Down} {
		sc, ok := mxfp4Scale(ck, ref.Name)
		if !ok {
			return ExpertWeights{}, false, nil
		}
		scales[i] = sc.Name
	}
	w.DType = ascend.MXFP4
	read := func(ref TensorRef, scale string) (vals, sc []byte, err error) {
		if vals, _, err = ck.Rows(ref.Name, ref.Index, ref.RowStart, ref.RowEnd); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", ref.Name, err)
		}
		if sc, _, err = ck.Rows(scale, ref.Index, ref.RowStart, ref.RowEnd); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", scale, err)
		}
		return vals, sc, nil
	}
	if w.Gate, w.GateScale, err = read(refs.Gate, scales[0]); err != nil {
		return w, true, err
	}
	if w.Up, w.UpScale, err = read(refs.Up, scales[1]); err != nil {
		return w, true, err
	}
	if w.Down, w.DownScale, err = read(refs.Down, scales[2]); err != nil {
		return w, true, err
	}
	return w, true, nil
}

// LoadMoELayer reads a MoE layer's router side (gate, selection bias, hash table, shared
// expert) from a checkpoint onto card.
func LoadMoELayer(ck *safetensors.Checkpoint, cfg *Config, layer int, card ascend.Card) (*MoELayer, error) {
	gate, bias, hash, err := cfg.GateRefs(ck, layer)
	if err != nil {
		return nil, err
	}
	var w MoEWeights
	if w.Gate, err = ck.F32(gate.Name); err != nil {
		return nil, err
	}
	if bias != nil {
		if w.Bias, err = ck.F32(bias.Name); err != nil {
			return nil, err
		}
	}
	if hash != nil {
		ids, err := ck.F32(hash.Name)
		if err != nil {
			return nil, err
		}
		w.Hash = make([]int32, len(ids))
		for i, v := range ids {
			w.Hash[i] = int32(v)
		}
	}
	shared, sgate, ok, err := cfg.SharedRefs(ck, layer)
	if err != nil {
		return nil, err
	}
	if ok {
		sw, err := readExpertRefs(ck, shared)
		if err != nil {
			return nil, fmt.Errorf("layer %d shared expert: %w", layer, err)
		}
		w.Shared = &sw
		if sgate != nil {
			if w.SharedGate, err = ck.F32(sgate.Name); err != nil {
				return nil, err
			}
		}
	}
	return NewMoELayer(card, cfg, layer, w)
}

// LoadOption changes how LoadLocal holds experts.
type LoadOption func(*ExpertSet) error

// WithExpertDType holds every routed expert in dt (ExpertSet.SetWeightDType): BF16 gives the
// dequantised experts of before packed MXFP4 (for comparisons), I8 quantises to W8A16.
func WithExpertDType(dt ascend.DType) LoadOption {
	return func(s *ExpertSet) error { return s.SetWeightDType(dt) }
}

// LoadLocal loads every routed expert of the given layers onto card and serves them in
// process. Experts are held as ReadExpert gives them (MXFP4 packed where the checkpoint
// and the card have it) unless an option says otherwise.
func LoadLocal(ck *safetensors.Checkpoint, cfg *Config, card ascend.Card, layers []int, opts ...LoadOption) (*Local, error) {
	set := NewExpertSet(card, cfg.Hidden, cfg.ExpertIntermediate, cfg.SwiGLULimit)
	for _, o := range opts {
		if err := o(set); err != nil {
			return nil, err
		}
	}
	for _, l := range layers {
		for e := 0; e < cfg.Experts; e++ {
			k := ExpertKey{l, e}
			w, err := ReadExpert(ck, cfg, k)
			if err == nil {
				err = set.Add(k, w)
			}
			if err != nil {
				set.Close()
				return nil, fmt.Errorf("loading expert %v: %w", k, err)
			}
		}
	}
	return NewLocal(set, cfg.Experts), nil
}
