package model

import (
	"fmt"

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
// ranges are touched.
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

// LoadLocal loads every routed expert of the given layers onto card and serves them in
// process.
func LoadLocal(ck *safetensors.Checkpoint, cfg *Config, card ascend.Card, layers []int) (*Local, error) {
	set := NewExpertSet(card, cfg.Hidden, cfg.ExpertIntermediate, cfg.SwiGLULimit)
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
