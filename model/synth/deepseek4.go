package synth

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/deepseek4"
	"github.com/moemesh/moemesh/model/quant"
	"github.com/moemesh/moemesh/model/safetensors"
)

// DeepSeek-V4 checkpoints are written apart from the families table: V4 ships native
// tensor names (no Hugging Face "model." layout) and mixed dtypes per tensor — FP8 E4M3
// linears with E8M0 128×128 block scales, MXFP4 routed experts, BF16 and F32 where the
// release stores them — so the layout comes from deepseek4.Config.Tensors (the table the
// loaders and `moemesh plan` read) and every weight is drawn in float32 and then
// quantised with model/quant's nearest-rounding encoders.

// ArchDeepseekV4 is the model_type of DeepSeek-V4 checkpoints.
const ArchDeepseekV4 = "deepseek_v4"

// deepseek4Tiny is the tiny preset. Sizes keep the published ratios' structure where the
// forward pass depends on it: head_dim − rope dims is a multiple of 64 (act_quant blocks of
// the window KV), index_head_dim a power of two (Hadamard) and a multiple of 32 (FP4
// blocks), hidden and moe_intermediate multiples of 32 (MXFP4), a window of 8 tokens and
// an HCA ratio of 8 so that a 20-token test crosses the window and both compressions, and
// index_topk 2 so the indexer actually drops rows.
func deepseek4Tiny(layers, experts, topK int) map[string]any {
	ratios := make([]int, layers+1) // + the MTP layer's entry (0), as the release lists it
	for i := 1; i < layers; i++ {
		ratios[i] = 4
		if i%2 == 0 {
			ratios[i] = 8
		}
	}
	return map[string]any{
		"architectures":            []string{"DeepseekV4ForCausalLM"},
		"attention_bias":           false,
		"attention_dropout":        0.0,
		"bos_token_id":             tokID("deepseek_v3", dsBOS, dims{Vocab: 512}),
		"eos_token_id":             tokID("deepseek_v3", dsEOS, dims{Vocab: 512}),
		"compress_ratios":          ratios,
		"compress_rope_theta":      160000,
		"expert_dtype":             "fp4",
		"hc_eps":                   1e-6,
		"hc_mult":                  4,
		"hc_sinkhorn_iters":        20,
		"head_dim":                 80,
		"hidden_act":               "silu",
		"hidden_size":              64,
		"index_head_dim":           32,
		"index_n_heads":            4,
		"index_topk":               2,
		"initializer_range":        0.02,
		"max_position_embeddings":  4096,
		"model_type":               ArchDeepseekV4,
		"moe_intermediate_size":    32,
		"n_routed_experts":         experts,
		"n_shared_experts":         1,
		"norm_topk_prob":           true,
		"num_attention_heads":      4,
		"num_experts_per_tok":      topK,
		"num_hash_layers":          1,
		"num_hidden_layers":        layers,
		"num_key_value_heads":      1,
		"num_nextn_predict_layers": 1,
		"o_groups":                 2,
		"o_lora_rank":              16,
		"q_lora_rank":              32,
		"qk_rope_head_dim":         16,
		"quantization_config": map[string]any{"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
			"scale_fmt": "ue8m0", "weight_block_size": []int{128, 128}},
		"rms_norm_eps": 1e-6,
		"rope_scaling": map[string]any{"beta_fast": 32, "beta_slow": 1, "factor": 16,
			"original_max_position_embeddings": 256, "type": "yarn"},
		"rope_theta":            10000,
		"routed_scaling_factor": 1.5,
		"scoring_func":          "sqrtsoftplus",
		"sliding_window":        8,
		"swiglu_limit":          10.0,
		"tie_word_embeddings":   false,
		"topk_method":           "noaux_tc",
		"torch_dtype":           "bfloat16",
		"transformers_version":  "4.57.1",
		"use_cache":             true,
		"vocab_size":            512,
	}
}

// writeDeepseek4 is Write for ArchDeepseekV4.
func writeDeepseek4(dir string, o Options) (*model.Config, error) {
	switch {
	case o.Preset != "" && o.Preset != Tiny:
		return nil, fmt.Errorf("%w: %s has only the %s preset, not %q", ErrOptions, ArchDeepseekV4, Tiny, o.Preset)
	case o.DType != "" && o.DType != "bf16" && o.DType != "bfloat16":
		return nil, fmt.Errorf("%w: %s is written in its shipped dtypes (FP8, MXFP4, BF16, F32); --dtype %q is not supported", ErrOptions, ArchDeepseekV4, o.DType)
	case o.Hidden != 0 || o.ExpertIntermediate != 0:
		return nil, fmt.Errorf("%w: %s tiny fixes hidden and expert width (MXFP4 and act_quant block sizes)", ErrOptions, ArchDeepseekV4)
	case o.Skew != 0:
		return nil, fmt.Errorf("%w: skew is not supported for %s", ErrOptions, ArchDeepseekV4)
	case o.Layers < 0 || o.Layers > 64 || o.Experts < 0 || o.Experts > maxExperts || o.TopK < 0:
		return nil, fmt.Errorf("%w: layers %d, experts %d, top-k %d", ErrOptions, o.Layers, o.Experts, o.TopK)
	}
	o.Preset, o.DType = Tiny, "bf16"
	if o.Shards == 0 {
		o.Shards = 2
	}
	layers, experts, topK := 4, 8, 2
	if o.Layers > 0 {
		layers = o.Layers
	}
	if o.Experts > 0 {
		experts = o.Experts
	}
	if o.TopK > 0 {
		topK = o.TopK
	}
	if topK > experts {
		return nil, fmt.Errorf("%w: top-k %d exceeds %d experts", ErrOptions, topK, experts)
	}
	m := deepseek4Tiny(layers, experts, topK)
	cfgJSON, err := marshal(m)
	if err != nil {
		return nil, err
	}
	cfg, err := deepseek4.Parse(cfgJSON)
	if err != nil {
		return nil, fmt.Errorf("synth: generated %s config does not parse: %w", ArchDeepseekV4, err)
	}
	tensors, err := deepseek4Tensors(cfg, o.Seed)
	if err != nil {
		return nil, err
	}
	if o.Shards < 1 || o.Shards > len(tensors) {
		return nil, fmt.Errorf("%w: shards %d (want 1..%d)", ErrOptions, o.Shards, len(tensors))
	}
	genJSON, err := marshal(map[string]any{"_from_model_config": true, "bos_token_id": m["bos_token_id"],
		"eos_token_id": m["eos_token_id"], "transformers_version": m["transformers_version"]})
	if err != nil {
		return nil, err
	}
	mk, err := marshal(marker{Generator: "moemesh/synth", Version: 2, Options: o})
	if err != nil {
		return nil, err
	}
	// The tokenizer stands in with DeepSeek-V3's (same special tokens); V4's chat
	// formatting is a Python encoder, not a template, and is not built yet.
	tokJSON, tokCfgJSON, err := tokSpecs["deepseek_v3"].tokenizerFiles(cfg.Vocab)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{"config.json": cfgJSON, "generation_config.json": genJSON,
		"tokenizer.json": tokJSON, "tokenizer_config.json": tokCfgJSON, MarkerFile: mk}
	err = atomicDir(dir, func(tmp string) error {
		for name, b := range files {
			if err := writeFileSync(tmp, name, b); err != nil {
				return err
			}
		}
		return safetensors.WriteSharded(tmp, tensors, o.Shards, shardMetadata)
	})
	if err != nil {
		return nil, err
	}
	return cfg.Config, nil
}

// deepseek4Tensors draws every tensor of cfg's layout (MTP block included, as published)
// and stores it in its table dtype. A weight's values depend on seed and its name only.
func deepseek4Tensors(cfg *deepseek4.Config, seed int64) ([]safetensors.Tensor, error) {
	table := cfg.Tensors(true)
	byName := make(map[string]deepseek4.Tensor, len(table))
	for _, t := range table {
		byName[t.Name] = t
	}
	var out []safetensors.Tensor
	for _, t := range table {
		base, isScale := cutSuffix(t.Name, ".scale")
		if isScale {
			if _, ok := byName[base+".weight"]; ok {
				continue // written with its weight
			}
		}
		ts, err := deepseek4Tensor(cfg, t, byName, seed)
		if err != nil {
			return nil, fmt.Errorf("synth: %s: %w", t.Name, err)
		}
		out = append(out, ts...)
	}
	return out, nil
}

func cutSuffix(s, suf string) (string, bool) {
	if len(s) >= len(suf) && s[len(s)-len(suf):] == suf {
		return s[:len(s)-len(suf)], true
	}
	return s, false
}

// deepseek4Std is the mean and spread of a V4 tensor's values, chosen so that activations
// stay O(1) through the mHC streams: linears 1/√fan_in, norms near 1, mHC mix weights
// giving O(1) mix values, small position biases.
func deepseek4Std(cfg *deepseek4.Config, name string, shape []int64) (mean, std float32) {
	last := func(suf string) bool { _, ok := cutSuffix(name, suf); return ok }
	switch {
	case name == "embed.weight":
		return 0, 1
	case last("norm.weight"):
		return 1, 0.05
	case last("_fn"):
		return 0, linearStd(int(shape[len(shape)-1]))
	case last("_base"):
		return 0, 0.5
	case last("_scale"):
		return 0.5, 0.1
	case last("ape"):
		return 0, 0.1
	case last("attn_sink"):
		return 0, 0.5
	case last("gate.bias"):
		return 0, 0.1
	}
	return 0, linearStd(int(shape[len(shape)-1]))
}

// deepseek4Tensor makes the tensor t (and, for a quantised weight, its scale beside it).
func deepseek4Tensor(cfg *deepseek4.Config, t deepseek4.Tensor, byName map[string]deepseek4.Tensor, seed int64) ([]safetensors.Tensor, error) {
	rng := rand.NewPCG(uint64(seed), fnv64(t.Name))
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	draw := func(count int64, shape []int64) []float32 {
		mean, std := deepseek4Std(cfg, t.Name, shape)
		v := make([]float32, count)
		for i := range v {
			v[i] = mean + std*normal(rng)
		}
		return v
	}
	st := safetensors.Tensor{Name: t.Name, DType: safetensors.DType(t.DType), Shape: t.Shape}
	switch t.DType {
	case "BF16":
		st.Data = make([]byte, 2*n)
		for i, v := range draw(n, t.Shape) {
			binary.LittleEndian.PutUint16(st.Data[2*i:], bf16(v))
		}
	case "F32":
		st.Data = make([]byte, 4*n)
		for i, v := range draw(n, t.Shape) {
			binary.LittleEndian.PutUint32(st.Data[4*i:], math.Float32bits(v))
		}
	case "I64":
		// tid2eid [vocab, K]: K distinct experts per token, the published table's shape.
		rows, k := int(t.Shape[0]), int(t.Shape[1])
		st.Data = make([]byte, 8*n)
		r := rand.New(rng)
		for row := range rows {
			for j, e := range r.Perm(cfg.Experts)[:k] {
				binary.LittleEndian.PutUint64(st.Data[8*(row*k+j):], uint64(e))
			}
		}
	case "F8_E4M3":
		rows, cols := int(t.Shape[0]), int(t.Shape[1])
		q, s, err := quant.QuantFP8(draw(n, t.Shape), rows, cols)
		if err != nil {
			return nil, err
		}
		st.Data = q
		sc, ok := byName[t.Name[:len(t.Name)-len("weight")]+"scale"]
		if !ok || sc.DType != "F8_E8M0" {
			return nil, fmt.Errorf("FP8 weight without an E8M0 scale in the table")
		}
		return []safetensors.Tensor{st, {Name: sc.Name, DType: safetensors.DType(sc.DType), Shape: sc.Shape, Data: s}}, nil
	case "I8":
		rows, cols := int(t.Shape[0]), int(t.Shape[1])*2
		logical := []int64{int64(rows), int64(cols)}
		p, s, err := quant.QuantMXFP4(draw(int64(rows*cols), logical), rows, cols)
		if err != nil {
			return nil, err
		}
		st.Data = p
		sc := byName[t.Name[:len(t.Name)-len("weight")]+"scale"]
		return []safetensors.Tensor{st, {Name: sc.Name, DType: safetensors.DType(sc.DType), Shape: sc.Shape, Data: s}}, nil
	default:
		return nil, fmt.Errorf("dtype %s is not generated", t.DType)
	}
	return []safetensors.Tensor{st}, nil
}
