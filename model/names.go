package model

import (
	"fmt"
	"slices"
	"strings"

	"github.com/moemesh/moemesh/model/safetensors"
)

// Tensor naming of MoE blocks per family (models.md §1–2). Readers accept every on-disk
// layout a family is found in; writers produce the family's canonical one:
//   - per-expert 2-D tensors: Mixtral "block_sparse_moe.experts.{e}.w1|w3|w2.weight";
//     Qwen, OLMoE, DeepSeek "mlp.experts.{e}.gate_proj|up_proj|down_proj.weight";
//     DeepSeek-V4 native "layers.{i}.ffn.experts.{e}.w1|w3|w2.weight" (no "model." prefix);
//   - fused 3-D tensors: Granite "block_sparse_moe.input_linear.weight [E,2I,H]" and
//     "output_linear.weight [E,H,I]"; transformers-v5 "mlp.experts.gate_up_proj [E,2I,H]"
//     and "mlp.experts.down_proj [E,H,I]". Rows [0,I) of a fused expert are gate, [I,2I) up.

// TensorRef locates one 2-D weight in a checkpoint: a whole tensor, or rows of one slice
// of a stacked 3-D tensor (safetensors.Checkpoint.Rows takes exactly these arguments).
type TensorRef struct {
	Name             string
	Index            int // −1: a 2-D tensor; else the slice of a stacked 3-D tensor
	RowStart, RowEnd int // 0, 0: all rows
}

// ExpertRefs locate one SwiGLU expert: gate and up [I, H], down [H, I].
type ExpertRefs struct {
	Gate, Up, Down TensorRef
}

// TensorLister is what naming needs of a checkpoint: *safetensors.Checkpoint, or a fake.
type TensorLister interface {
	Info(name string) (safetensors.TensorInfo, bool)
}

// projection names (gate, up, down) of per-expert and shared MLPs.
var (
	projGUD = [3]string{"gate_proj", "up_proj", "down_proj"}
	projW   = [3]string{"w1", "w3", "w2"}
)

func (c *Config) hfLayer(layer int) string { return fmt.Sprintf("model.layers.%d.", layer) }

// moeBlocks are the prefixes of layer's MoE block, canonical first, then the other
// places a family's tensors are found (v5 renames Mixtral/Granite's block to "mlp.";
// DeepSeek-V4 checkpoints saved by transformers use HF names).
func (c *Config) moeBlocks(layer int) []string {
	hf := c.hfLayer(layer)
	switch c.Arch {
	case "mixtral", "granitemoe":
		return []string{hf + "block_sparse_moe.", hf + "mlp."}
	case "deepseek_v4":
		return []string{fmt.Sprintf("layers.%d.ffn.", layer), hf + "mlp."}
	}
	return []string{hf + "mlp."}
}

// projNames are the per-expert projection name sets to try, canonical first.
func (c *Config) projNames() [][3]string {
	if c.Arch == "mixtral" || c.Arch == "deepseek_v4" {
		return [][3]string{projW, projGUD}
	}
	return [][3]string{projGUD, projW}
}

// ExpertTensorNames are the canonical names of routed expert e of layer, as a checkpoint
// writer should produce them. For Granite the experts are fused: gate and up both name
// the [E, 2I, H] input_linear, down the [E, H, I] output_linear.
func (c *Config) ExpertTensorNames(layer, expert int) (gate, up, down string) {
	b := c.moeBlocks(layer)[0]
	if c.Arch == "granitemoe" {
		return b + "input_linear.weight", b + "input_linear.weight", b + "output_linear.weight"
	}
	n := c.projNames()[0]
	p := fmt.Sprintf("%sexperts.%d.", b, expert)
	return p + n[0] + ".weight", p + n[1] + ".weight", p + n[2] + ".weight"
}

// GateTensorName is the canonical name of layer's router weight [E, H].
func (c *Config) GateTensorName(layer int) string {
	b := c.moeBlocks(layer)[0]
	if c.Arch == "granitemoe" {
		return b + "router.layer.weight"
	}
	return b + "gate.weight"
}

// SharedTensorNames are the canonical names of layer's shared MLP projections (all ""
// when the config has no shared expert).
func (c *Config) SharedTensorNames(layer int) (gate, up, down string) {
	if !c.HasSharedExpert() {
		return "", "", ""
	}
	b := c.moeBlocks(layer)[0]
	sub := "shared_experts."
	if c.Arch == "qwen2_moe" {
		sub = "shared_expert."
	}
	n := c.projNames()[0]
	return b + sub + n[0] + ".weight", b + sub + n[1] + ".weight", b + sub + n[2] + ".weight"
}

// RouterTensorNames are the canonical names of layer's other router-side tensors, ""
// where the layer has none: the selection bias [E] (DeepSeek noaux_tc), the token→expert
// table [vocab, K] (DeepSeek-V4 hash layers) and the shared expert gate [1, H] (Qwen2-MoE).
func (c *Config) RouterTensorNames(layer int) (bias, hash, sharedGate string) {
	b := c.moeBlocks(layer)[0]
	switch {
	case c.IsHashLayer(layer):
		hash = b + "gate.tid2eid"
	case c.TopKMethod == "noaux_tc" && c.Arch == "deepseek_v4":
		bias = b + "gate.bias"
	case c.TopKMethod == "noaux_tc":
		bias = b + "gate.e_score_correction_bias"
	}
	if c.SharedGate {
		sharedGate = b + "shared_expert_gate.weight"
	}
	return bias, hash, sharedGate
}

// ExpertRefs locates routed expert e of layer in ts, in any layout the family is found
// in, and checks the shapes against the config. A missing tensor wraps ErrMissing and a
// wrong shape ErrShape, both naming the tensor; a layer or expert the config does not
// have wraps ErrConfig.
func (c *Config) ExpertRefs(ts TensorLister, layer, expert int) (ExpertRefs, error) {
	if err := c.checkMoELayer(layer); err != nil {
		return ExpertRefs{}, err
	}
	if expert < 0 || expert >= c.Experts {
		return ExpertRefs{}, fmt.Errorf("%w: layer %d has %d experts, no expert %d", ErrConfig, layer, c.Experts, expert)
	}
	I, H, E := int64(c.ExpertIntermediate), int64(c.Hidden), int64(c.Experts)
	for _, b := range c.moeBlocks(layer) {
		for _, n := range c.projNames() {
			p := fmt.Sprintf("%sexperts.%d.", b, expert)
			if refs, ok, err := perExpert(ts, p, n, I, H); ok || err != nil {
				return refs, err
			}
		}
		for _, f := range [][2]string{{"experts.gate_up_proj", "experts.down_proj"},
			{"input_linear.weight", "output_linear.weight"}} {
			gu, down := b+f[0], b+f[1]
			if _, ok := ts.Info(gu); !ok {
				continue
			}
			if err := checkShape(ts, gu, E, 2*I, H); err != nil {
				return ExpertRefs{}, err
			}
			if err := checkShape(ts, down, E, H, I); err != nil {
				return ExpertRefs{}, err
			}
			return ExpertRefs{
				Gate: TensorRef{Name: gu, Index: expert, RowStart: 0, RowEnd: int(I)},
				Up:   TensorRef{Name: gu, Index: expert, RowStart: int(I), RowEnd: int(2 * I)},
				Down: TensorRef{Name: down, Index: expert},
			}, nil
		}
	}
	g, _, _ := c.ExpertTensorNames(layer, expert)
	return ExpertRefs{}, fmt.Errorf("%w: layer %d expert %d: no %s (nor another known layout: fused experts.gate_up_proj, input_linear)",
		ErrMissing, layer, expert, g)
}

// perExpert checks the three 2-D tensors of one MLP under prefix p; ok is false when the
// gate projection is absent (try the next layout).
func perExpert(ts TensorLister, p string, n [3]string, I, H int64) (ExpertRefs, bool, error) {
	gate, up, down := p+n[0]+".weight", p+n[1]+".weight", p+n[2]+".weight"
	if _, ok := ts.Info(gate); !ok {
		return ExpertRefs{}, false, nil
	}
	for _, s := range []struct {
		name string
		dims []int64
	}{{gate, []int64{I, H}}, {up, []int64{I, H}}, {down, []int64{H, I}}} {
		if err := checkShape(ts, s.name, s.dims...); err != nil {
			return ExpertRefs{}, true, err
		}
	}
	return ExpertRefs{Gate: whole(gate), Up: whole(up), Down: whole(down)}, true, nil
}

func whole(name string) TensorRef { return TensorRef{Name: name, Index: -1} }

// checkShape: name must exist with exactly dims (the logical shape; see storedShape).
func checkShape(ts TensorLister, name string, dims ...int64) error {
	info, ok := ts.Info(name)
	if !ok {
		return fmt.Errorf("%w: %s", ErrMissing, name)
	}
	if !slices.Equal(storedShape(ts, info), dims) {
		return fmt.Errorf("%w: %s has shape %v, want %v", ErrShape, name, info.Shape, dims)
	}
	return nil
}

// storedShape is a tensor's logical shape: DeepSeek-V4 FP4 experts are stored as I8/U8
// [R, C/2] (two e2m1 values per byte) with an F8_E8M0 ".scale" beside them.
func storedShape(ts TensorLister, info safetensors.TensorInfo) []int64 {
	if info.DType != safetensors.I8 && info.DType != safetensors.U8 || len(info.Shape) == 0 {
		return info.Shape
	}
	base, ok := strings.CutSuffix(info.Name, ".weight")
	if !ok {
		return info.Shape
	}
	if s, ok := ts.Info(base + ".scale"); ok && s.DType == safetensors.F8E8M0 {
		out := slices.Clone(info.Shape)
		out[len(out)-1] *= 2
		return out
	}
	return info.Shape
}

func (c *Config) checkMoELayer(layer int) error {
	if !c.IsMoELayer(layer) {
		return fmt.Errorf("%w: layer %d of %s is not a MoE layer (MoE layers: %v)", ErrConfig, layer, c.Arch, c.MoELayers())
	}
	return nil
}

// GateRefs locates layer's router weight [E, H] and, where the family has them, the
// selection bias [E] (DeepSeek noaux_tc: "gate.e_score_correction_bias", V4 native
// "gate.bias") and the hash table [vocab, K] (DeepSeek-V4 hash layers: "gate.tid2eid").
// bias and hash are nil when the layer has none; when the config says it must have one
// and it is missing, the error wraps ErrMissing.
func (c *Config) GateRefs(ts TensorLister, layer int) (weight TensorRef, bias, hash *TensorRef, err error) {
	if err := c.checkMoELayer(layer); err != nil {
		return TensorRef{}, nil, nil, err
	}
	E, H := int64(c.Experts), int64(c.Hidden)
	block := ""
	for _, b := range c.moeBlocks(layer) {
		for _, n := range []string{b + "gate.weight", b + "router.layer.weight"} {
			if _, ok := ts.Info(n); ok {
				weight, block = whole(n), b
				break
			}
		}
		if block != "" {
			break
		}
	}
	if block == "" {
		return TensorRef{}, nil, nil, fmt.Errorf("%w: layer %d router: %s", ErrMissing, layer, c.GateTensorName(layer))
	}
	if err := checkShape(ts, weight.Name, E, H); err != nil {
		return TensorRef{}, nil, nil, err
	}
	find := func(what string, names ...string) (*TensorRef, error) {
		for _, n := range names {
			if _, ok := ts.Info(block + n); ok {
				r := whole(block + n)
				return &r, nil
			}
		}
		return nil, fmt.Errorf("%w: layer %d %s: %s", ErrMissing, layer, what, block+names[0])
	}
	switch {
	case c.IsHashLayer(layer):
		if hash, err = find("hash table", "gate.tid2eid"); err != nil {
			return TensorRef{}, nil, nil, err
		}
		if err := checkShape(ts, hash.Name, int64(c.Vocab), int64(c.TopK)); err != nil {
			return TensorRef{}, nil, nil, err
		}
	case c.TopKMethod == "noaux_tc":
		if bias, err = find("selection bias", "gate.e_score_correction_bias", "gate.bias"); err != nil {
			return TensorRef{}, nil, nil, err
		}
		if err := checkShape(ts, bias.Name, E); err != nil {
			return TensorRef{}, nil, nil, err
		}
	}
	return weight, bias, hash, nil
}

// SharedRefs locates layer's shared MLP ([S, H] gate/up, [H, S] down with S =
// SharedIntermediate) and, for Qwen2-MoE, its sigmoid gate [1, H]. ok is false, with no
// error, when the config has no shared expert.
func (c *Config) SharedRefs(ts TensorLister, layer int) (refs ExpertRefs, gate *TensorRef, ok bool, err error) {
	if err := c.checkMoELayer(layer); err != nil {
		return ExpertRefs{}, nil, false, err
	}
	if !c.HasSharedExpert() {
		return ExpertRefs{}, nil, false, nil
	}
	S, H := int64(c.SharedIntermediate), int64(c.Hidden)
	for _, b := range c.moeBlocks(layer) {
		for _, sub := range []string{"shared_experts.", "shared_expert."} {
			for _, n := range c.projNames() {
				r, found, err := perExpert(ts, b+sub, n, S, H)
				if err != nil {
					return ExpertRefs{}, nil, false, fmt.Errorf("layer %d shared expert: %w", layer, err)
				}
				if !found {
					continue
				}
				if c.SharedGate {
					g := whole(b + "shared_expert_gate.weight")
					if err := checkShape(ts, g.Name, 1, H); err != nil {
						return ExpertRefs{}, nil, false, fmt.Errorf("layer %d shared expert gate: %w", layer, err)
					}
					gate = &g
				}
				return r, gate, true, nil
			}
		}
	}
	g, _, _ := c.SharedTensorNames(layer)
	return ExpertRefs{}, nil, false, fmt.Errorf("%w: layer %d shared expert: %s", ErrMissing, layer, g)
}
