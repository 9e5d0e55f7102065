package model_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/safetensors"
)

// fakeCkpt is a TensorLister over a name → (dtype, shape) table.
type fakeCkpt map[string]safetensors.TensorInfo

func (f fakeCkpt) Info(name string) (safetensors.TensorInfo, bool) {
	t, ok := f[name]
	return t, ok
}

func (f fakeCkpt) add(name string, shape ...int64) fakeCkpt {
	return f.addT(name, safetensors.BF16, shape...)
}

func (f fakeCkpt) addT(name string, dt safetensors.DType, shape ...int64) fakeCkpt {
	f[name] = safetensors.TensorInfo{Name: name, DType: dt, Shape: shape}
	return f
}

// Tiny sizes, distinct so a swapped dimension cannot pass: H 16, I 6 (2I 12), E 4,
// shared width 24 (qwen2) / 12 (deepseek 2×6), vocab 32, top-k 2.
const H, I, E, V, K = 16, 6, 4, 32, 2

func tinyConfig(t *testing.T, base string, extra map[string]any) *model.Config {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(base), &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]any{
		"hidden_size": H, "num_hidden_layers": 3, "vocab_size": V, "num_attention_heads": 4, "num_key_value_heads": 2,
		"num_experts_per_tok": K, "first_k_dense_replace": 1, "n_group": nil, "topk_group": nil, "head_dim": 4,
		"num_hash_layers": 1, "shared_expert_intermediate_size": 24,
	} {
		if _, ok := m[k]; ok || k == "num_attention_heads" {
			m[k] = v
		}
	}
	for _, k := range []string{"num_local_experts", "num_experts", "n_routed_experts"} {
		if _, ok := m[k]; ok {
			m[k] = E
		}
	}
	for _, k := range []string{"moe_intermediate_size", "intermediate_size"} {
		if _, ok := m[k]; ok {
			m[k] = I
		}
	}
	if m["model_type"] == "qwen2_moe" || m["model_type"] == "qwen3_moe" {
		m["intermediate_size"] = 40
	}
	if m["model_type"] == "deepseek_v3" || m["model_type"] == "deepseek_v2" {
		m["intermediate_size"], m["n_shared_experts"] = 40, 2
	}
	for k, v := range extra {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	cfg, err := model.ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// canonical builds a fake checkpoint of layer l from the names the config gives writers.
func canonical(cfg *model.Config, l int) fakeCkpt {
	f := fakeCkpt{}
	f.add(cfg.GateTensorName(l), E, H)
	for e := 0; e < E; e++ {
		g, u, d := cfg.ExpertTensorNames(l, e)
		if g == u { // fused (Granite)
			f.add(g, E, 2*I, H).add(d, E, H, I)
			continue
		}
		f.add(g, I, H).add(u, I, H).add(d, H, I)
	}
	if sg, su, sd := cfg.SharedTensorNames(l); sg != "" {
		S := int64(cfg.SharedIntermediate)
		f.add(sg, S, H).add(su, S, H).add(sd, H, S)
	}
	bias, hash, sgate := cfg.RouterTensorNames(l)
	if bias != "" {
		f.addT(bias, safetensors.F32, E)
	}
	if hash != "" {
		f.addT(hash, safetensors.I64, V, K)
	}
	if sgate != "" {
		f.add(sgate, 1, H)
	}
	return f
}

func TestCanonicalNames(t *testing.T) {
	for _, c := range []struct {
		name, base                         string
		layer                              int
		gate, up, down, router             string
		sharedGate, sharedDown, bias, hash string
	}{
		{"mixtral", mixtral8x7B, 2, "model.layers.2.block_sparse_moe.experts.3.w1.weight", "model.layers.2.block_sparse_moe.experts.3.w3.weight",
			"model.layers.2.block_sparse_moe.experts.3.w2.weight", "model.layers.2.block_sparse_moe.gate.weight", "", "", "", ""},
		{"qwen3", qwen3_30B, 2, "model.layers.2.mlp.experts.3.gate_proj.weight", "model.layers.2.mlp.experts.3.up_proj.weight",
			"model.layers.2.mlp.experts.3.down_proj.weight", "model.layers.2.mlp.gate.weight", "", "", "", ""},
		{"qwen2", qwen15MoE, 2, "model.layers.2.mlp.experts.3.gate_proj.weight", "model.layers.2.mlp.experts.3.up_proj.weight",
			"model.layers.2.mlp.experts.3.down_proj.weight", "model.layers.2.mlp.gate.weight",
			"model.layers.2.mlp.shared_expert.gate_proj.weight", "model.layers.2.mlp.shared_expert.down_proj.weight", "", ""},
		{"olmoe", olmoe, 2, "model.layers.2.mlp.experts.3.gate_proj.weight", "model.layers.2.mlp.experts.3.up_proj.weight",
			"model.layers.2.mlp.experts.3.down_proj.weight", "model.layers.2.mlp.gate.weight", "", "", "", ""},
		{"granite", granite1b, 2, "model.layers.2.block_sparse_moe.input_linear.weight", "model.layers.2.block_sparse_moe.input_linear.weight",
			"model.layers.2.block_sparse_moe.output_linear.weight", "model.layers.2.block_sparse_moe.router.layer.weight", "", "", "", ""},
		{"deepseek_v2", dsV2Lite, 2, "model.layers.2.mlp.experts.3.gate_proj.weight", "model.layers.2.mlp.experts.3.up_proj.weight",
			"model.layers.2.mlp.experts.3.down_proj.weight", "model.layers.2.mlp.gate.weight",
			"model.layers.2.mlp.shared_experts.gate_proj.weight", "model.layers.2.mlp.shared_experts.down_proj.weight", "", ""},
		{"deepseek_v3", dsV3, 2, "model.layers.2.mlp.experts.3.gate_proj.weight", "model.layers.2.mlp.experts.3.up_proj.weight",
			"model.layers.2.mlp.experts.3.down_proj.weight", "model.layers.2.mlp.gate.weight",
			"model.layers.2.mlp.shared_experts.gate_proj.weight", "model.layers.2.mlp.shared_experts.down_proj.weight",
			"model.layers.2.mlp.gate.e_score_correction_bias", ""},
		{"deepseek_v4", dsV4Flash, 2, "layers.2.ffn.experts.3.w1.weight", "layers.2.ffn.experts.3.w3.weight",
			"layers.2.ffn.experts.3.w2.weight", "layers.2.ffn.gate.weight",
			"layers.2.ffn.shared_experts.w1.weight", "layers.2.ffn.shared_experts.w2.weight", "layers.2.ffn.gate.bias", ""},
		{"deepseek_v4 hash layer", dsV4Flash, 0, "layers.0.ffn.experts.3.w1.weight", "layers.0.ffn.experts.3.w3.weight",
			"layers.0.ffn.experts.3.w2.weight", "layers.0.ffn.gate.weight",
			"layers.0.ffn.shared_experts.w1.weight", "layers.0.ffn.shared_experts.w2.weight", "", "layers.0.ffn.gate.tid2eid"},
	} {
		cfg := tinyConfig(t, c.base, nil)
		g, u, d := cfg.ExpertTensorNames(c.layer, 3)
		sg, _, sd := cfg.SharedTensorNames(c.layer)
		bias, hash, _ := cfg.RouterTensorNames(c.layer)
		got := []string{g, u, d, cfg.GateTensorName(c.layer), sg, sd, bias, hash}
		want := []string{c.gate, c.up, c.down, c.router, c.sharedGate, c.sharedDown, c.bias, c.hash}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, want)
		}
	}
}

// TestRefsCanonical: every family resolves the checkpoint its own writer names produce.
func TestRefsCanonical(t *testing.T) {
	for name, base := range map[string]string{"mixtral": mixtral8x7B, "qwen3": qwen3_30B, "qwen2": qwen15MoE, "olmoe": olmoe,
		"granite": granite1b, "v2": dsV2Lite, "v3": dsV3, "v4": dsV4Flash} {
		cfg := tinyConfig(t, base, nil)
		l := cfg.MoELayers()[0]
		ck := canonical(cfg, l)
		refs, err := cfg.ExpertRefs(ck, l, 3)
		if err != nil {
			t.Errorf("%s: ExpertRefs: %v", name, err)
			continue
		}
		g, u, d := cfg.ExpertTensorNames(l, 3)
		wantG, wantU, wantD := model.TensorRef{Name: g, Index: -1}, model.TensorRef{Name: u, Index: -1}, model.TensorRef{Name: d, Index: -1}
		if g == u {
			wantG = model.TensorRef{Name: g, Index: 3, RowStart: 0, RowEnd: I}
			wantU = model.TensorRef{Name: g, Index: 3, RowStart: I, RowEnd: 2 * I}
			wantD = model.TensorRef{Name: d, Index: 3}
		}
		if refs != (model.ExpertRefs{Gate: wantG, Up: wantU, Down: wantD}) {
			t.Errorf("%s: ExpertRefs = %+v", name, refs)
		}
		w, bias, hash, err := cfg.GateRefs(ck, l)
		wantBias, wantHash, wantSG := cfg.RouterTensorNames(l)
		if err != nil || w.Name != cfg.GateTensorName(l) || w.Index != -1 || refName(bias) != wantBias || refName(hash) != wantHash {
			t.Errorf("%s: GateRefs = %+v %+v %+v %v", name, w, bias, hash, err)
		}
		shared, sgate, ok, err := cfg.SharedRefs(ck, l)
		sg, su, sd := cfg.SharedTensorNames(l)
		if err != nil || ok != cfg.HasSharedExpert() || shared.Gate.Name != sg || shared.Up.Name != su || shared.Down.Name != sd ||
			refName(sgate) != wantSG {
			t.Errorf("%s: SharedRefs = %+v %+v %v %v", name, shared, sgate, ok, err)
		}
	}
}

func refName(r *model.TensorRef) string {
	if r == nil {
		return ""
	}
	return r.Name
}

// TestRefsOtherLayouts: fused v5 tensors, v5 block renames, DeepSeek-V4 saved with HF
// names, and V4's packed FP4 experts.
func TestRefsOtherLayouts(t *testing.T) {
	fusedAt := func(block string) fakeCkpt {
		return fakeCkpt{}.add(block+"gate.weight", E, H).add(block+"experts.gate_up_proj", E, 2*I, H).add(block+"experts.down_proj", E, H, I)
	}
	fusedRefs := func(block string) model.ExpertRefs {
		return model.ExpertRefs{
			Gate: model.TensorRef{Name: block + "experts.gate_up_proj", Index: 2, RowStart: 0, RowEnd: I},
			Up:   model.TensorRef{Name: block + "experts.gate_up_proj", Index: 2, RowStart: I, RowEnd: 2 * I},
			Down: model.TensorRef{Name: block + "experts.down_proj", Index: 2},
		}
	}
	v4 := tinyConfig(t, dsV4Flash, nil)
	hfV4 := fusedAt("model.layers.1.mlp.").addT("model.layers.1.mlp.gate.e_score_correction_bias", safetensors.F32, E).
		add("model.layers.1.mlp.shared_experts.gate_proj.weight", I, H).add("model.layers.1.mlp.shared_experts.up_proj.weight", I, H).
		add("model.layers.1.mlp.shared_experts.down_proj.weight", H, I)
	fp4 := fakeCkpt{}
	for _, n := range []string{"w1", "w3"} {
		fp4.addT("layers.1.ffn.experts.2."+n+".weight", safetensors.I8, I, H/2).addT("layers.1.ffn.experts.2."+n+".scale", safetensors.F8E8M0, I, H/32+1)
	}
	fp4.addT("layers.1.ffn.experts.2.w2.weight", safetensors.I8, H, I/2).addT("layers.1.ffn.experts.2.w2.scale", safetensors.F8E8M0, H, 1)
	for _, c := range []struct {
		name string
		cfg  *model.Config
		ck   fakeCkpt
		want model.ExpertRefs
	}{
		{"qwen3 v5 fused", tinyConfig(t, qwen3_30B, nil), fusedAt("model.layers.1.mlp."), fusedRefs("model.layers.1.mlp.")},
		{"mixtral v5 fused", tinyConfig(t, mixtral8x7B, nil), fusedAt("model.layers.1.mlp."), fusedRefs("model.layers.1.mlp.")},
		{"v4 HF port", v4, hfV4, fusedRefs("model.layers.1.mlp.")},
		{"v4 native FP4", v4, fp4, model.ExpertRefs{
			Gate: model.TensorRef{Name: "layers.1.ffn.experts.2.w1.weight", Index: -1},
			Up:   model.TensorRef{Name: "layers.1.ffn.experts.2.w3.weight", Index: -1},
			Down: model.TensorRef{Name: "layers.1.ffn.experts.2.w2.weight", Index: -1}}},
	} {
		refs, err := c.cfg.ExpertRefs(c.ck, 1, 2)
		if err != nil || refs != c.want {
			t.Errorf("%s: ExpertRefs = %+v, %v\nwant %+v", c.name, refs, err, c.want)
		}
	}
	w, bias, hash, err := v4.GateRefs(hfV4, 1)
	if err != nil || w.Name != "model.layers.1.mlp.gate.weight" || refName(bias) != "model.layers.1.mlp.gate.e_score_correction_bias" || hash != nil {
		t.Errorf("V4 HF GateRefs = %+v %v %v %v", w, bias, hash, err)
	}
	shared, _, ok, err := v4.SharedRefs(hfV4, 1)
	if err != nil || !ok || shared.Down.Name != "model.layers.1.mlp.shared_experts.down_proj.weight" {
		t.Errorf("V4 HF SharedRefs = %+v %v %v", shared, ok, err)
	}
}

// TestRefsErrors: missing tensors wrap ErrMissing and wrong shapes ErrShape, naming the
// tensor; layers and experts the config lacks wrap ErrConfig.
func TestRefsErrors(t *testing.T) {
	qwen3 := tinyConfig(t, qwen3_30B, nil)
	qwen2 := tinyConfig(t, qwen15MoE, nil)
	v3 := tinyConfig(t, dsV3, nil)
	v4 := tinyConfig(t, dsV4Flash, nil)
	granite := tinyConfig(t, granite1b, nil)
	drop := func(f fakeCkpt, name string) fakeCkpt { delete(f, name); return f }
	reshape := func(f fakeCkpt, name string, shape ...int64) fakeCkpt { return f.add(name, shape...) }
	type call func(cfg *model.Config, ck fakeCkpt) error
	expert := func(l, e int) call {
		return func(cfg *model.Config, ck fakeCkpt) error { _, err := cfg.ExpertRefs(ck, l, e); return err }
	}
	gate := func(l int) call {
		return func(cfg *model.Config, ck fakeCkpt) error { _, _, _, err := cfg.GateRefs(ck, l); return err }
	}
	shared := func(l int) call {
		return func(cfg *model.Config, ck fakeCkpt) error { _, _, _, err := cfg.SharedRefs(ck, l); return err }
	}
	for _, c := range []struct {
		name string
		cfg  *model.Config
		ck   fakeCkpt
		call call
		is   error
		want string
	}{
		{"missing up", qwen3, drop(canonical(qwen3, 0), "model.layers.0.mlp.experts.1.up_proj.weight"), expert(0, 1),
			model.ErrMissing, "model.layers.0.mlp.experts.1.up_proj.weight"},
		{"missing expert", qwen3, fakeCkpt{}, expert(0, 1), model.ErrMissing, "model.layers.0.mlp.experts.1.gate_proj.weight"},
		{"transposed down", qwen3, reshape(canonical(qwen3, 0), "model.layers.0.mlp.experts.1.down_proj.weight", I, H), expert(0, 1),
			model.ErrShape, "down_proj.weight has shape [6 16], want [16 6]"},
		{"fused transposed", granite, reshape(canonical(granite, 0), "model.layers.0.block_sparse_moe.input_linear.weight", E, H, 2*I), expert(0, 1),
			model.ErrShape, "input_linear.weight has shape [4 16 12], want [4 12 16]"},
		{"fused down missing", granite, drop(canonical(granite, 0), "model.layers.0.block_sparse_moe.output_linear.weight"), expert(0, 1),
			model.ErrMissing, "output_linear.weight"},
		{"dense layer", v3, canonical(v3, 1), expert(0, 1), model.ErrConfig, "layer 0 of deepseek_v3 is not a MoE layer"},
		{"expert out of range", qwen3, canonical(qwen3, 0), expert(0, E), model.ErrConfig, "no expert 4"},
		{"MTP layer", v3, canonical(v3, 1), expert(3, 0), model.ErrConfig, "layer 3"},
		{"missing router", qwen3, drop(canonical(qwen3, 0), "model.layers.0.mlp.gate.weight"), gate(0), model.ErrMissing, "model.layers.0.mlp.gate.weight"},
		{"router shape", qwen3, reshape(canonical(qwen3, 0), "model.layers.0.mlp.gate.weight", H, E), gate(0), model.ErrShape, "gate.weight has shape [16 4]"},
		{"v3 missing bias", v3, drop(canonical(v3, 1), "model.layers.1.mlp.gate.e_score_correction_bias"), gate(1), model.ErrMissing, "model.layers.1.mlp.gate.e_score_correction_bias"},
		{"v3 bias shape", v3, reshape(canonical(v3, 1), "model.layers.1.mlp.gate.e_score_correction_bias", E+1), gate(1), model.ErrShape, "e_score_correction_bias has shape [5]"},
		{"v4 missing hash table", v4, drop(canonical(v4, 0), "layers.0.ffn.gate.tid2eid"), gate(0), model.ErrMissing, "layers.0.ffn.gate.tid2eid"},
		{"v4 hash table shape", v4, reshape(canonical(v4, 0), "layers.0.ffn.gate.tid2eid", V, K+1), gate(0), model.ErrShape, "tid2eid has shape [32 3], want [32 2]"},
		{"v4 missing bias", v4, drop(canonical(v4, 1), "layers.1.ffn.gate.bias"), gate(1), model.ErrMissing, "layers.1.ffn.gate.e_score_correction_bias"},
		{"qwen2 missing shared gate", qwen2, drop(canonical(qwen2, 0), "model.layers.0.mlp.shared_expert_gate.weight"), shared(0), model.ErrMissing, "shared_expert_gate.weight"},
		{"qwen2 missing shared", qwen2, drop(canonical(qwen2, 0), "model.layers.0.mlp.shared_expert.gate_proj.weight"), shared(0), model.ErrMissing, "model.layers.0.mlp.shared_expert.gate_proj.weight"},
		{"v3 shared width", v3, reshape(canonical(v3, 1), "model.layers.1.mlp.shared_experts.up_proj.weight", I, H), shared(1), model.ErrShape, "shared_experts.up_proj.weight has shape [6 16], want [12 16]"},
	} {
		err := c.call(c.cfg, c.ck)
		if !errors.Is(err, c.is) || !strings.Contains(fmt.Sprint(err), c.want) {
			t.Errorf("%s: %v\nwant %v containing %q", c.name, err, c.is, c.want)
		}
	}
	// No shared expert: not an error.
	if _, g, ok, err := qwen3.SharedRefs(canonical(qwen3, 0), 0); ok || g != nil || err != nil {
		t.Errorf("qwen3 SharedRefs = %v %v %v, want none", g, ok, err)
	}
}

// TestRefsOnCheckpoint: refs from a real safetensors checkpoint read the expert's bytes.
func TestRefsOnCheckpoint(t *testing.T) {
	cfg := tinyConfig(t, granite1b, map[string]any{"num_hidden_layers": 1})
	var ts []safetensors.Tensor
	mk := func(name string, shape ...int64) {
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		data := make([]byte, 4*n)
		for i := int64(0); i < n; i++ {
			data[4*i] = byte(i) // low byte of an F32 is enough to identify the element
			data[4*i+1] = byte(i >> 8)
		}
		ts = append(ts, safetensors.Tensor{Name: name, DType: safetensors.F32, Shape: shape, Data: data})
	}
	g, _, d := cfg.ExpertTensorNames(0, 0)
	mk(cfg.GateTensorName(0), E, H)
	mk(g, E, 2*I, H)
	mk(d, E, H, I)
	dir := t.TempDir()
	if err := safetensors.WriteFile(filepath.Join(dir, "model.safetensors"), ts, nil); err != nil {
		t.Fatal(err)
	}
	ck, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	refs, err := cfg.ExpertRefs(ck, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	up, _, err := ck.Rows(refs.Up.Name, refs.Up.Index, refs.Up.RowStart, refs.Up.RowEnd)
	if err != nil {
		t.Fatal(err)
	}
	first := (2*2*I + I) * H // element index of expert 2, row I, col 0
	if len(up) != 4*I*H || int(up[0])|int(up[1])<<8 != first {
		t.Errorf("up rows: %d bytes starting at element %d, want %d bytes at %d", len(up), int(up[0])|int(up[1])<<8, 4*I*H, first)
	}
}
