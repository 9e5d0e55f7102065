package deepseek4

import (
	"fmt"
	"regexp"
	"strings"
)

// Tensor is one tensor of a V4 checkpoint as shipped: its native name (no "model."
// prefix), safetensors dtype and shape. Layer is −1 for model-wide tensors; Expert is the
// routed expert the tensor belongs to, −1 otherwise; MTP marks the multi-token-prediction
// block (mtp.N.*), which inference ignores.
type Tensor struct {
	Name   string
	DType  string
	Shape  []int64
	Layer  int
	Expert int
	MTP    bool
}

// Bytes is the tensor's size on disk.
func (t Tensor) Bytes() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	switch t.DType {
	case "F32", "I32":
		return 4 * n
	case "BF16", "F16":
		return 2 * n
	case "I64":
		return 8 * n
	}
	return n // F8_E4M3, F8_E8M0, I8/U8 (two e2m1 codes per byte, already halved in Shape)
}

// weightFormat is how the linears of one class are stored.
type weightFormat int

const (
	fmtBF16 weightFormat = iota
	fmtFP8               // F8_E4M3 + ".scale" over 128×128 blocks
	fmtFP4               // I8 [out, in/2] + ".scale" F8_E8M0 [out, in/32]
)

// Tensors lists every tensor of a checkpoint written for c in the published layout
// (model.py module tree; dtypes from its Linear/Parameter declarations and the shipped
// shards): the FP8 linears when quantization_config says fp8, MXFP4 routed experts when
// expert_dtype is fp4, everything else as model.py stores it. withMTP adds the mtp.N.*
// blocks (one per num_nextn_predict_layers).
func (c *Config) Tensors(withMTP bool) []Tensor {
	lin, exp := fmtBF16, fmtBF16
	scaleDT := "F8_E8M0"
	if c.Quant != nil && c.Quant.Method == "fp8" {
		lin, exp = fmtFP8, fmtFP8
		var q map[string]any
		if _, err := c.Lookup("quantization_config", &q); err != nil || q["scale_fmt"] != "ue8m0" {
			scaleDT = "F32" // no ue8m0: float32 block scales (the Base checkpoints)
		}
	}
	switch c.ExpertDType {
	case "fp4":
		exp = fmtFP4
	case "fp8":
		exp = fmtFP8
	}
	H, V := int64(c.Hidden), int64(c.Vocab)
	hc := int64(c.HCMult)
	var out []Tensor
	add := func(name, dt string, layer, expert int, mtp bool, shape ...int64) {
		out = append(out, Tensor{Name: name, DType: dt, Shape: shape, Layer: layer, Expert: expert, MTP: mtp})
	}
	linear := func(name string, f weightFormat, layer, expert int, mtp bool, o, in int64) {
		switch f {
		case fmtBF16:
			add(name+".weight", "BF16", layer, expert, mtp, o, in)
		case fmtFP8:
			add(name+".weight", "F8_E4M3", layer, expert, mtp, o, in)
			add(name+".scale", scaleDT, layer, expert, mtp, (o+127)/128, (in+127)/128)
		case fmtFP4:
			add(name+".weight", "I8", layer, expert, mtp, o, in/2)
			add(name+".scale", "F8_E8M0", layer, expert, mtp, o, in/32)
		}
	}
	hcHead := func(p string, layer int, mtp bool) {
		add(p+"hc_head_fn", "F32", layer, -1, mtp, hc, hc*H)
		add(p+"hc_head_base", "F32", layer, -1, mtp, hc)
		add(p+"hc_head_scale", "F32", layer, -1, mtp, 1)
	}
	add("embed.weight", "BF16", -1, -1, false, V, H)
	add("norm.weight", "BF16", -1, -1, false, H)
	add("head.weight", "BF16", -1, -1, false, V, H)
	hcHead("", -1, false)
	block := func(p string, i int, mtp bool) {
		D, Q, E, I := int64(c.HeadDim), int64(c.QLoraRank), c.Experts, int64(c.ExpertIntermediate)
		nh, g, r := int64(c.Heads), int64(c.OGroups), int64(c.OLoraRank)
		mw := int64(c.MixWidth())
		add(p+"attn_norm.weight", "BF16", i, -1, mtp, H)
		add(p+"ffn_norm.weight", "BF16", i, -1, mtp, H)
		for _, s := range []string{"attn", "ffn"} {
			add(p+"hc_"+s+"_fn", "F32", i, -1, mtp, mw, hc*H)
			add(p+"hc_"+s+"_base", "F32", i, -1, mtp, mw)
			add(p+"hc_"+s+"_scale", "F32", i, -1, mtp, 3)
		}
		a := p + "attn."
		add(a+"attn_sink", "F32", i, -1, mtp, nh)
		linear(a+"wq_a", lin, i, -1, mtp, Q, H)
		add(a+"q_norm.weight", "BF16", i, -1, mtp, Q)
		linear(a+"wq_b", lin, i, -1, mtp, nh*D, Q)
		linear(a+"wkv", lin, i, -1, mtp, D, H)
		add(a+"kv_norm.weight", "BF16", i, -1, mtp, D)
		linear(a+"wo_a", lin, i, -1, mtp, g*r, nh*D/g)
		linear(a+"wo_b", lin, i, -1, mtp, H, g*r)
		compressor := func(p string, ratio, d int64) {
			coff := int64(1)
			if ratio == 4 {
				coff = 2
			}
			add(p+"ape", "F32", i, -1, mtp, ratio, coff*d)
			add(p+"wkv.weight", "BF16", i, -1, mtp, coff*d, H)
			add(p+"wgate.weight", "BF16", i, -1, mtp, coff*d, H)
			add(p+"norm.weight", "BF16", i, -1, mtp, d)
		}
		if ratio := int64(c.Ratio(i)); ratio > 0 {
			compressor(a+"compressor.", ratio, D)
			if ratio == 4 {
				ih, id := int64(c.IndexHeads), int64(c.IndexHeadDim)
				linear(a+"indexer.wq_b", lin, i, -1, mtp, ih*id, Q)
				add(a+"indexer.weights_proj.weight", "BF16", i, -1, mtp, ih, H)
				compressor(a+"indexer.compressor.", ratio, id)
			}
		}
		f := p + "ffn."
		add(f+"gate.weight", "BF16", i, -1, mtp, int64(E), H)
		if !mtp && c.IsHashLayer(i) {
			add(f+"gate.tid2eid", "I64", i, -1, mtp, V, int64(c.TopK))
		} else {
			add(f+"gate.bias", "F32", i, -1, mtp, int64(E))
		}
		for e := range E {
			x := fmt.Sprintf("%sexperts.%d.", f, e)
			linear(x+"w1", exp, i, e, mtp, I, H)
			linear(x+"w2", exp, i, e, mtp, H, I)
			linear(x+"w3", exp, i, e, mtp, I, H)
		}
		linear(f+"shared_experts.w1", lin, i, -1, mtp, I*int64(c.SharedExperts), H)
		linear(f+"shared_experts.w2", lin, i, -1, mtp, H, I*int64(c.SharedExperts))
		linear(f+"shared_experts.w3", lin, i, -1, mtp, I*int64(c.SharedExperts), H)
	}
	for i := range c.Layers {
		block(fmt.Sprintf("layers.%d.", i), i, false)
	}
	if withMTP {
		for k := range c.MTPLayers {
			p := fmt.Sprintf("mtp.%d.", k)
			block(p, c.Layers+k, true)
			linear(p+"e_proj", lin, c.Layers+k, -1, true, H, H)
			linear(p+"h_proj", lin, c.Layers+k, -1, true, H, H)
			for _, n := range []string{"enorm", "hnorm", "norm"} {
				add(p+n+".weight", "BF16", c.Layers+k, -1, true, H)
			}
			hcHead(p, c.Layers+k, true)
		}
	}
	return out
}

// hfRules are transformers' renames of the native names (conversion_mapping.py,
// "deepseek_v4"), applied in order to a name without its "model." prefix. The routed
// experts are not renamed one by one: transformers fuses them into
// mlp.experts.gate_up_proj [E, 2I, H] and mlp.experts.down_proj [E, H, I] (see HFName).
var hfRules = func() []struct {
	re  *regexp.Regexp
	rep string
} {
	pairs := [][2]string{
		{`^embed\.weight$`, "embed_tokens.weight"}, {`^head\.weight$`, "lm_head.weight"},
		{`^hc_head_fn$`, "hc_head.hc_fn"}, {`^hc_head_base$`, "hc_head.hc_base"}, {`^hc_head_scale$`, "hc_head.hc_scale"},
		{`^layers\.(\d+)\.attn_norm\.`, "layers.$1.input_layernorm."},
		{`^layers\.(\d+)\.ffn_norm\.`, "layers.$1.post_attention_layernorm."},
		{`^layers\.(\d+)\.hc_attn_(fn|base|scale)$`, "layers.$1.attn_hc.$2"},
		{`^layers\.(\d+)\.hc_ffn_(fn|base|scale)$`, "layers.$1.ffn_hc.$2"},
		{`^layers\.(\d+)\.attn\.`, "layers.$1.self_attn."},
		{`^layers\.(\d+)\.ffn\.`, "layers.$1.mlp."},
		{`^layers\.(\d+)\.self_attn\.attn_sink$`, "layers.$1.self_attn.sinks"},
		{`^layers\.(\d+)\.self_attn\.indexer\.compressor\.norm\.`, "layers.$1.self_attn.compressor.indexer.kv_norm."},
		{`^layers\.(\d+)\.self_attn\.indexer\.compressor\.ape$`, "layers.$1.self_attn.compressor.indexer.position_bias"},
		{`^layers\.(\d+)\.self_attn\.indexer\.compressor\.`, "layers.$1.self_attn.compressor.indexer."},
		{`^layers\.(\d+)\.self_attn\.indexer\.`, "layers.$1.self_attn.compressor.indexer."},
		{`^layers\.(\d+)\.self_attn\.compressor\.norm\.`, "layers.$1.self_attn.compressor.kv_norm."},
		{`^layers\.(\d+)\.self_attn\.compressor\.ape$`, "layers.$1.self_attn.compressor.position_bias"},
		{`^layers\.(\d+)\.self_attn\.(.*?)\.wq_a\.`, "layers.$1.self_attn.$2.q_a_proj."},
		{`^layers\.(\d+)\.self_attn\.(.*?)\.wq_b\.`, "layers.$1.self_attn.$2.q_b_proj."},
		{`^layers\.(\d+)\.self_attn\.(.*?)\.wkv\.`, "layers.$1.self_attn.$2.kv_proj."},
		{`^layers\.(\d+)\.self_attn\.(.*?)\.wgate\.`, "layers.$1.self_attn.$2.gate_proj."},
		{`^layers\.(\d+)\.self_attn\.wq_a\.`, "layers.$1.self_attn.q_a_proj."},
		{`^layers\.(\d+)\.self_attn\.wq_b\.`, "layers.$1.self_attn.q_b_proj."},
		{`^layers\.(\d+)\.self_attn\.wkv\.`, "layers.$1.self_attn.kv_proj."},
		{`^layers\.(\d+)\.self_attn\.wo_a\.`, "layers.$1.self_attn.o_a_proj."},
		{`^layers\.(\d+)\.self_attn\.wo_b\.`, "layers.$1.self_attn.o_b_proj."},
		{`^layers\.(\d+)\.self_attn\.q_norm\.`, "layers.$1.self_attn.q_a_norm."},
		{`^layers\.(\d+)\.mlp\.gate\.bias$`, "layers.$1.mlp.gate.e_score_correction_bias"},
		{`^layers\.(\d+)\.mlp\.shared_experts\.w1\.`, "layers.$1.mlp.shared_experts.gate_proj."},
		{`^layers\.(\d+)\.mlp\.shared_experts\.w2\.`, "layers.$1.mlp.shared_experts.down_proj."},
		{`^layers\.(\d+)\.mlp\.shared_experts\.w3\.`, "layers.$1.mlp.shared_experts.up_proj."},
	}
	out := make([]struct {
		re  *regexp.Regexp
		rep string
	}, len(pairs))
	for i, p := range pairs {
		out[i].re, out[i].rep = regexp.MustCompile(p[0]), p[1]
	}
	return out
}()

var nativeExpert = regexp.MustCompile(`^layers\.(\d+)\.ffn\.experts\.\d+\.(w[123])\.(weight|scale)$`)

// HFName is the name transformers' DeepseekV4ForCausalLM saves native tensor name under
// ("model." + renamed, "lm_head.weight" for the head). A routed expert's w1/w3 weight
// maps to the fused mlp.experts.gate_up_proj and w2 to mlp.experts.down_proj (rows of a
// stacked tensor, not a tensor of their own); MTP tensors (mtp.*) have no HF name and
// report false, as do names this table does not know.
func HFName(native string) (string, bool) {
	if strings.HasPrefix(native, "mtp.") {
		return "", false
	}
	if m := nativeExpert.FindStringSubmatch(native); m != nil {
		switch {
		case m[3] == "scale":
			return "", false // the port dequantises experts; it has no fused scale tensor
		case m[2] == "w2":
			return "model.layers." + m[1] + ".mlp.experts.down_proj", true
		}
		return "model.layers." + m[1] + ".mlp.experts.gate_up_proj", true
	}
	name, hit := native, native == "norm.weight"
	for _, r := range hfRules {
		if r.re.MatchString(name) {
			name, hit = r.re.ReplaceAllString(name, r.rep), true
		}
	}
	if !hit {
		return "", false
	}
	if name == "lm_head.weight" {
		return name, true
	}
	return "model." + name, true
}
