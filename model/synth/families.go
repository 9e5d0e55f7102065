package synth

import (
	"fmt"
	"math"
	"strconv"
)

// dims are the resolved sizes of one synthetic model. Fields a family does not use are 0.
type dims struct {
	Layers, Hidden, Heads, KVHeads, HeadDim, Vocab int

	Experts, TopK, ExpertI int
	DenseI                 int // intermediate_size of dense (non-MoE) layers
	SharedI                int // qwen2_moe shared_expert_intermediate_size

	// DeepSeek: leading dense layers, shared experts, group-limited routing and MLA sizes.
	FirstDense, NShared                  int
	NGroup, TopKGroup                    int
	QLora, KVLora, QKNope, QKRope, VHead int
}

// family is one Hugging Face model family: its presets, config.json and tensor layout.
type family struct {
	arch  string // model_type
	class string // architectures[0]
	tiny  dims
	small dims
	// mla families take head sizes from the MLA fields, so hidden need not split into heads.
	mla bool
	// headDim derives head_dim from the other sizes (non-MLA families).
	headDim func(d dims) int
	// derive fixes sizes that depend on overridden ones, or rejects the combination.
	derive func(d *dims) error
	config func(d dims) map[string]any
	// moe reports whether layer i is a MoE layer, by the family's own rule and the config
	// this package writes; the tests check it agrees with model.Config.IsMoELayer.
	moe   func(d dims, i int) bool
	layer func(p *plan, d dims, i int)
	tied  bool // tie_word_embeddings: no lm_head tensor
	// gateBias: the gate has a selection bias (e_score_correction_bias), which Options.Skew fits.
	gateBias bool
	// embedStd is the std of the embedding table (Granite divides by its multiplier).
	embedStd func(d dims) float32
}

// families is the registry of supported architectures, by model_type.
var families = map[string]*family{}

func register(f *family) { families[f.arch] = f }

// hdFromHeads is head_dim = hidden/heads, the default of every non-MLA family here.
func hdFromHeads(d dims) int { return d.Hidden / d.Heads }

// The tiny presets pick dimensions that are pairwise distinct where a loader could mix
// them up (H ≠ I ≠ 2I, heads ≠ kv heads, Qwen3 head_dim ≠ hidden/heads), so a swapped
// shape fails loudly instead of loading by accident.
func init() {
	register(&family{
		arch: "qwen3_moe", class: "Qwen3MoeForCausalLM",
		// head_dim = 2·hidden/heads mirrors Qwen3-30B-A3B (2048, 32 heads, head_dim 128),
		// so the checkpoint only loads if head_dim is taken from config.json.
		tiny:    dims{Layers: 2, Hidden: 64, Heads: 4, KVHeads: 2, Vocab: 512, Experts: 8, TopK: 4, ExpertI: 32, DenseI: 128},
		small:   dims{Layers: 8, Hidden: 1024, Heads: 16, KVHeads: 4, Vocab: 4096, Experts: 16, TopK: 4, ExpertI: 704, DenseI: 2816},
		headDim: func(d dims) int { return 2 * d.Hidden / d.Heads },
		config:  qwen3Config,
		moe:     func(d dims, i int) bool { return d.Experts > 0 },
		layer: func(p *plan, d dims, i int) {
			pre := layerPrefix(i)
			gqaAttention(p, pre, d, false)
			p.norm(pre+"self_attn.q_norm.weight", d.HeadDim)
			p.norm(pre+"self_attn.k_norm.weight", d.HeadDim)
			routedExperts(p, pre+"mlp.", "gate", d, gpd)
		},
	})
	register(&family{
		arch: "qwen2_moe", class: "Qwen2MoeForCausalLM",
		tiny:    dims{Layers: 2, Hidden: 64, Heads: 4, KVHeads: 2, Vocab: 512, Experts: 8, TopK: 4, ExpertI: 32, DenseI: 128, SharedI: 96},
		small:   dims{Layers: 8, Hidden: 1024, Heads: 16, KVHeads: 4, Vocab: 4096, Experts: 16, TopK: 4, ExpertI: 704, DenseI: 2816, SharedI: 2816},
		headDim: hdFromHeads,
		config:  qwen2Config,
		moe:     func(d dims, i int) bool { return d.Experts > 0 },
		layer: func(p *plan, d dims, i int) {
			pre := layerPrefix(i)
			gqaAttention(p, pre, d, true) // Qwen1.5-MoE: q/k/v carry a bias
			routedExperts(p, pre+"mlp.", "gate", d, gpd)
			swiglu(p, pre+"mlp.shared_expert.", gpd, d.SharedI, d.Hidden)
			p.linear(pre+"mlp.shared_expert_gate.weight", 1, d.Hidden)
		},
	})
	register(&family{
		arch: "mixtral", class: "MixtralForCausalLM",
		tiny:    dims{Layers: 2, Hidden: 64, Heads: 4, KVHeads: 2, Vocab: 512, Experts: 8, TopK: 2, ExpertI: 48},
		small:   dims{Layers: 8, Hidden: 1024, Heads: 16, KVHeads: 4, Vocab: 4096, Experts: 16, TopK: 4, ExpertI: 704},
		headDim: hdFromHeads,
		config:  mixtralConfig,
		moe:     func(dims, int) bool { return true },
		layer: func(p *plan, d dims, i int) {
			pre := layerPrefix(i)
			gqaAttention(p, pre, d, false)
			routedExperts(p, pre+"block_sparse_moe.", "gate", d, [3]string{"w1", "w3", "w2"})
		},
	})
	register(&family{
		arch: "olmoe", class: "OlmoeForCausalLM",
		tiny:    dims{Layers: 2, Hidden: 64, Heads: 4, KVHeads: 2, Vocab: 512, Experts: 8, TopK: 4, ExpertI: 32},
		small:   dims{Layers: 8, Hidden: 1024, Heads: 16, KVHeads: 4, Vocab: 4096, Experts: 16, TopK: 4, ExpertI: 704},
		headDim: hdFromHeads,
		config:  olmoeConfig,
		moe:     func(dims, int) bool { return true },
		layer: func(p *plan, d dims, i int) {
			pre := layerPrefix(i)
			gqaAttention(p, pre, d, false)
			// OLMoE normalises the whole projected q and k vectors, not each head.
			p.norm(pre+"self_attn.q_norm.weight", d.Heads*d.HeadDim)
			p.norm(pre+"self_attn.k_norm.weight", d.KVHeads*d.HeadDim)
			routedExperts(p, pre+"mlp.", "gate", d, gpd)
		},
	})
	register(&family{
		arch: "granitemoe", class: "GraniteMoeForCausalLM",
		// I = 48 so the fused input_linear [E, 2I, H] = [8, 96, 64] cannot pass for [E, H, H].
		tiny:    dims{Layers: 2, Hidden: 64, Heads: 4, KVHeads: 2, Vocab: 512, Experts: 8, TopK: 2, ExpertI: 48},
		small:   dims{Layers: 8, Hidden: 1024, Heads: 16, KVHeads: 4, Vocab: 4096, Experts: 16, TopK: 4, ExpertI: 704},
		headDim: hdFromHeads,
		config:  graniteConfig,
		moe:     func(dims, int) bool { return true },
		tied:    true,
		// h0 = embed·embedding_multiplier (12): keep h0 O(1).
		embedStd: func(dims) float32 { return 1 / graniteEmbeddingMultiplier },
		layer: func(p *plan, d dims, i int) {
			pre := layerPrefix(i) + "block_sparse_moe."
			gqaAttention(p, layerPrefix(i), d, false)
			// Granite stores experts fused on disk: rows [0, I) of each expert's
			// input_linear are gate, [I, 2I) up.
			p.linear(pre+"router.layer.weight", d.Experts, d.Hidden)
			p.linear3(pre+"input_linear.weight", d.Experts, 2*d.ExpertI, d.Hidden)
			p.linear3(pre+"output_linear.weight", d.Experts, d.Hidden, d.ExpertI)
		},
	})
	register(&family{
		arch: "deepseek_v3", class: "DeepseekV3ForCausalLM",
		// 16 experts in 4 groups with 2 kept, so group-limited noaux_tc routing really
		// excludes experts: 1 dense layer, then MoE layers.
		tiny: dims{Layers: 3, Hidden: 64, Heads: 4, KVHeads: 4, Vocab: 512, Experts: 16, TopK: 4, ExpertI: 32, DenseI: 128,
			FirstDense: 1, NShared: 1, NGroup: 4, TopKGroup: 2, QLora: 48, KVLora: 32, QKNope: 16, QKRope: 8, VHead: 16},
		small: dims{Layers: 8, Hidden: 1024, Heads: 16, KVHeads: 16, Vocab: 4096, Experts: 16, TopK: 4, ExpertI: 704, DenseI: 2816,
			FirstDense: 1, NShared: 1, NGroup: 4, TopKGroup: 2, QLora: 384, KVLora: 256, QKNope: 64, QKRope: 32, VHead: 64},
		mla:      true,
		derive:   deriveDeepseek,
		config:   deepseekV3Config,
		moe:      deepseekMoE,
		layer:    deepseekLayer(true),
		gateBias: true,
	})
	register(&family{
		arch: "deepseek_v2", class: "DeepseekV2ForCausalLM",
		// V2-Lite shape: q_lora_rank null (plain q_proj), greedy softmax routing, 2 shared
		// experts fused into one MLP of width 2·moe_intermediate_size.
		tiny: dims{Layers: 3, Hidden: 64, Heads: 4, KVHeads: 4, Vocab: 512, Experts: 8, TopK: 2, ExpertI: 32, DenseI: 128,
			FirstDense: 1, NShared: 2, NGroup: 1, TopKGroup: 1, KVLora: 32, QKNope: 16, QKRope: 8, VHead: 16},
		small: dims{Layers: 8, Hidden: 1024, Heads: 16, KVHeads: 16, Vocab: 4096, Experts: 16, TopK: 4, ExpertI: 704, DenseI: 2816,
			FirstDense: 1, NShared: 2, NGroup: 1, TopKGroup: 1, KVLora: 256, QKNope: 64, QKRope: 32, VHead: 64},
		mla:    true,
		derive: deriveDeepseek,
		config: deepseekV2Config,
		moe:    deepseekMoE,
		layer:  deepseekLayer(false),
	})
}

// gpd are the gate/up/down projection names of every family except Mixtral (w1/w3/w2).
var gpd = [3]string{"gate_proj", "up_proj", "down_proj"}

func layerPrefix(i int) string { return "model.layers." + strconv.Itoa(i) + "." }

// gqaAttention adds the q/k/v/o projections of grouped-query attention.
func gqaAttention(p *plan, pre string, d dims, bias bool) {
	q, kv := d.Heads*d.HeadDim, d.KVHeads*d.HeadDim
	p.linear(pre+"self_attn.q_proj.weight", q, d.Hidden)
	p.linear(pre+"self_attn.k_proj.weight", kv, d.Hidden)
	p.linear(pre+"self_attn.v_proj.weight", kv, d.Hidden)
	if bias {
		p.bias(pre+"self_attn.q_proj.bias", q)
		p.bias(pre+"self_attn.k_proj.bias", kv)
		p.bias(pre+"self_attn.v_proj.bias", kv)
	}
	p.linear(pre+"self_attn.o_proj.weight", d.Hidden, q)
}

// swiglu adds one SwiGLU MLP: gate and up [inter, hidden], down [hidden, inter].
func swiglu(p *plan, pre string, names [3]string, inter, hidden int) {
	p.linear(pre+names[0]+".weight", inter, hidden)
	p.linear(pre+names[1]+".weight", inter, hidden)
	p.linear(pre+names[2]+".weight", hidden, inter)
}

// routedExperts adds the router [E, H] and the per-expert 2-D tensors of a MoE block.
func routedExperts(p *plan, pre, router string, d dims, names [3]string) {
	p.linear(pre+router+".weight", d.Experts, d.Hidden)
	for e := 0; e < d.Experts; e++ {
		swiglu(p, pre+"experts."+strconv.Itoa(e)+".", names, d.ExpertI, d.Hidden)
	}
}

func deepseekMoE(d dims, i int) bool { return d.Experts > 0 && i >= d.FirstDense } // moe_layer_freq 1

// deepseekLayer is one DeepSeek V2/V3 decoder layer: MLA attention, then a dense MLP or
// gate + routed experts + one fused shared MLP. v3 adds e_score_correction_bias.
func deepseekLayer(v3 bool) func(p *plan, d dims, i int) {
	return func(p *plan, d dims, i int) {
		pre := layerPrefix(i)
		a := pre + "self_attn."
		qk := d.QKNope + d.QKRope
		if d.QLora > 0 {
			p.linear(a+"q_a_proj.weight", d.QLora, d.Hidden)
			p.norm(a+"q_a_layernorm.weight", d.QLora)
			p.linear(a+"q_b_proj.weight", d.Heads*qk, d.QLora)
		} else {
			p.linear(a+"q_proj.weight", d.Heads*qk, d.Hidden)
		}
		p.linear(a+"kv_a_proj_with_mqa.weight", d.KVLora+d.QKRope, d.Hidden)
		p.norm(a+"kv_a_layernorm.weight", d.KVLora)
		p.linear(a+"kv_b_proj.weight", d.Heads*(d.QKNope+d.VHead), d.KVLora)
		p.linear(a+"o_proj.weight", d.Hidden, d.Heads*d.VHead)
		m := pre + "mlp."
		if !deepseekMoE(d, i) {
			swiglu(p, m, gpd, d.DenseI, d.Hidden)
			return
		}
		routedExperts(p, m, "gate", d, gpd)
		if v3 {
			// Always F32 on disk, also in bf16 checkpoints (models.md §5.2). Its std is
			// of the order of the gaps between sigmoid scores, so it changes selections.
			p.add(tspec{name: m + "gate.e_score_correction_bias", shape: []int64{int64(d.Experts)}, std: 0.1, alwaysF32: true})
		}
		if d.NShared > 0 {
			swiglu(p, m+"shared_experts.", gpd, d.NShared*d.ExpertI, d.Hidden)
		}
	}
}

// deriveDeepseek keeps the dense prefix and expert groups valid after overrides.
func deriveDeepseek(d *dims) error {
	if d.Layers < 2 {
		d.FirstDense = 0 // a one-layer model must still have a MoE layer
	}
	if d.NGroup > 1 && (d.Experts%d.NGroup != 0 || d.Experts/d.NGroup < 2) {
		// noaux_tc scores a group by its top-2 experts, so each group needs two; pick the
		// most groups (up to 8) that divide the expert count evenly.
		d.NGroup, d.TopKGroup = 1, 1
		for _, g := range []int{8, 4, 2} {
			if d.Experts%g == 0 && d.Experts/g >= 2 {
				d.NGroup, d.TopKGroup = g, g/2
				break
			}
		}
	}
	if d.TopK > d.TopKGroup*(d.Experts/d.NGroup) {
		return fmt.Errorf("%w: top-k %d exceeds the %d experts of the %d kept groups (%d experts in %d groups)",
			ErrOptions, d.TopK, d.TopKGroup*(d.Experts/d.NGroup), d.TopKGroup, d.Experts, d.NGroup)
	}
	return nil
}

// tokID is the id of a special token in the family's tokenizer (tokfamilies.go), so
// config.json, generation_config.json and tokenizer.json agree on it.
func tokID(arch, content string, d dims) int { return tokSpecs[arch].id(content, d.Vocab) }

// common are the keys every family's config.json has, before family-specific ones.
func common(f string, d dims, version string) map[string]any {
	return map[string]any{
		"architectures":           []string{families[f].class},
		"model_type":              f,
		"attention_dropout":       0.0,
		"hidden_act":              "silu",
		"hidden_size":             d.Hidden,
		"initializer_range":       0.02,
		"num_attention_heads":     d.Heads,
		"num_hidden_layers":       d.Layers,
		"num_key_value_heads":     d.KVHeads,
		"tie_word_embeddings":     families[f].tied,
		"transformers_version":    version,
		"use_cache":               true,
		"vocab_size":              d.Vocab,
		"torch_dtype":             "bfloat16", // replaced by the chosen dtype
		"output_router_logits":    false,
		"max_position_embeddings": 4096,
	}
}

// qwen3Config follows Qwen3-30B-A3B's config.json.
func qwen3Config(d dims) map[string]any {
	bos, eos := tokID("qwen3_moe", "<|endoftext|>", d), tokID("qwen3_moe", "<|im_end|>", d)
	return with(common("qwen3_moe", d, "4.51.0"), map[string]any{
		"attention_bias":          false,
		"bos_token_id":            bos,
		"eos_token_id":            eos,
		"decoder_sparse_step":     1,
		"head_dim":                d.HeadDim,
		"intermediate_size":       d.DenseI,
		"max_position_embeddings": 40960,
		"max_window_layers":       d.Layers,
		"mlp_only_layers":         []int{},
		"moe_intermediate_size":   d.ExpertI,
		"norm_topk_prob":          true,
		"num_experts":             d.Experts,
		"num_experts_per_tok":     d.TopK,
		"rms_norm_eps":            1e-6,
		"rope_scaling":            nil,
		"rope_theta":              1e6,
		"router_aux_loss_coef":    0.001,
		"sliding_window":          nil,
		"use_sliding_window":      false,
	})
}

// qwen2Config follows Qwen1.5-MoE-A2.7B's config.json.
func qwen2Config(d dims) map[string]any {
	eot := tokID("qwen2_moe", "<|endoftext|>", d) // both bos and eos there
	return with(common("qwen2_moe", d, "4.39.0.dev0"), map[string]any{
		"bos_token_id":                    eot,
		"eos_token_id":                    eot,
		"decoder_sparse_step":             1,
		"intermediate_size":               d.DenseI,
		"max_position_embeddings":         8192,
		"max_window_layers":               d.Layers,
		"mlp_only_layers":                 []int{},
		"moe_intermediate_size":           d.ExpertI,
		"norm_topk_prob":                  false,
		"num_experts":                     d.Experts,
		"num_experts_per_tok":             d.TopK,
		"rms_norm_eps":                    1e-6,
		"rope_theta":                      1e6,
		"router_aux_loss_coef":            0.001,
		"shared_expert_intermediate_size": d.SharedI,
		"sliding_window":                  32768,
		"use_sliding_window":              false,
	})
}

// mixtralConfig follows Mixtral-8x7B-v0.1's config.json (no head_dim key: hidden/heads).
func mixtralConfig(d dims) map[string]any {
	return with(common("mixtral", d, "4.36.0.dev0"), map[string]any{
		"bos_token_id":            tokID("mixtral", "<s>", d),
		"eos_token_id":            tokID("mixtral", "</s>", d),
		"intermediate_size":       d.ExpertI,
		"max_position_embeddings": 32768,
		"num_experts_per_tok":     d.TopK,
		"num_local_experts":       d.Experts,
		"rms_norm_eps":            1e-5,
		"rope_theta":              1e6,
		"router_aux_loss_coef":    0.02,
		"sliding_window":          nil,
	})
}

// olmoeConfig follows OLMoE-1B-7B-0924's config.json.
func olmoeConfig(d dims) map[string]any {
	return with(common("olmoe", d, "4.43.0.dev0"), map[string]any{
		"attention_bias":       false,
		"clip_qkv":             nil,
		"eos_token_id":         tokID("olmoe", "<|endoftext|>", d),
		"pad_token_id":         tokID("olmoe", "<|padding|>", d),
		"intermediate_size":    d.ExpertI,
		"norm_topk_prob":       false,
		"num_experts":          d.Experts,
		"num_experts_per_tok":  d.TopK,
		"rms_norm_eps":         1e-5,
		"rope_scaling":         nil,
		"rope_theta":           1e4,
		"router_aux_loss_coef": 0.01,
	})
}

const graniteEmbeddingMultiplier = 12.0

// graniteConfig follows granite-3.1-1b-a400m-base's config.json, µP multipliers included.
func graniteConfig(d dims) map[string]any {
	return with(common("granitemoe", d, "4.46.0.dev0"), map[string]any{
		"attention_bias":    false,
		"attention_dropout": 0.1,
		// Granite scales scores by 1/head_dim (0.015625 for head_dim 64).
		"attention_multiplier":    1 / float64(d.HeadDim),
		"bos_token_id":            tokID("granitemoe", "<|end_of_text|>", d),
		"eos_token_id":            tokID("granitemoe", "<|end_of_text|>", d),
		"pad_token_id":            tokID("granitemoe", "<|end_of_text|>", d),
		"embedding_multiplier":    graniteEmbeddingMultiplier,
		"intermediate_size":       d.ExpertI,
		"logits_scaling":          6.0,
		"max_position_embeddings": 131072,
		"num_experts_per_tok":     d.TopK,
		"num_local_experts":       d.Experts,
		"residual_multiplier":     0.22,
		"rms_norm_eps":            1e-6,
		"rope_scaling":            nil,
		"rope_theta":              1.5e6,
		"router_aux_loss_coef":    0.0,
	})
}

// deepseekCommon are the keys DeepSeek V2 and V3 share (both DeepseekV3Config-style).
func deepseekCommon(arch string, d dims, mscale float64) map[string]any {
	var qLora any // null selects the plain q_proj path
	if d.QLora > 0 {
		qLora = d.QLora
	}
	return with(common(arch, d, "4.33.1"), map[string]any{
		"attention_bias":          false,
		"aux_loss_alpha":          0.001,
		"ep_size":                 1,
		"first_k_dense_replace":   d.FirstDense,
		"intermediate_size":       d.DenseI,
		"kv_lora_rank":            d.KVLora,
		"max_position_embeddings": 163840,
		"moe_intermediate_size":   d.ExpertI,
		"moe_layer_freq":          1,
		"n_group":                 d.NGroup,
		"n_routed_experts":        d.Experts,
		"n_shared_experts":        d.NShared,
		"num_experts_per_tok":     d.TopK,
		"pretraining_tp":          1,
		"q_lora_rank":             qLora,
		"qk_nope_head_dim":        d.QKNope,
		"qk_rope_head_dim":        d.QKRope,
		"rms_norm_eps":            1e-6,
		"rope_scaling": map[string]any{
			"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": mscale, "mscale_all_dim": mscale,
			"original_max_position_embeddings": 4096, "type": "yarn",
		},
		"rope_theta": 10000,
		"seq_aux":    true,
		"topk_group": d.TopKGroup,
		"v_head_dim": d.VHead,
	})
}

// deepseekV3Config follows DeepSeek-V3's config.json, without quantization_config (the
// weights are bf16/f32) and without the MTP layer (num_nextn_predict_layers 0).
func deepseekV3Config(d dims) map[string]any {
	return with(deepseekCommon("deepseek_v3", d, 1.0), map[string]any{
		"bos_token_id":             tokID("deepseek_v3", dsBOS, d),
		"eos_token_id":             tokID("deepseek_v3", dsEOS, d),
		"norm_topk_prob":           true,
		"num_nextn_predict_layers": 0,
		"routed_scaling_factor":    2.5,
		"scoring_func":             "sigmoid",
		"topk_method":              "noaux_tc",
	})
}

// deepseekV2Config follows DeepSeek-V2-Lite's config.json.
func deepseekV2Config(d dims) map[string]any {
	bos, eos := tokID("deepseek_v2", dsBOS, d), tokID("deepseek_v2", dsEOS, d)
	method := "greedy"
	if d.NGroup > 1 {
		method = "group_limited_greedy"
	}
	return with(deepseekCommon("deepseek_v2", d, 0.707), map[string]any{
		"bos_token_id":          bos,
		"eos_token_id":          eos,
		"norm_topk_prob":        false,
		"routed_scaling_factor": 1.0,
		"scoring_func":          "softmax",
		"topk_method":           method,
	})
}

// with copies extra into m (extra wins) and returns m.
func with(m, extra map[string]any) map[string]any {
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// generationConfig is generation_config.json: the family's stop ids from its tokenizer
// spec (Qwen lists <|im_end|> and <|endoftext|>, as the real chat models do, so readers
// handle an eos list).
func generationConfig(f *family, d dims, cfg map[string]any) map[string]any {
	g := map[string]any{
		"_from_model_config":   true,
		"transformers_version": cfg["transformers_version"],
	}
	for _, k := range []string{"bos_token_id", "eos_token_id", "pad_token_id"} {
		if v, ok := cfg[k]; ok {
			g[k] = v
		}
	}
	var stops []int
	for _, s := range tokSpecs[f.arch].stops {
		stops = append(stops, tokID(f.arch, s, d))
	}
	if len(stops) == 1 {
		g["eos_token_id"] = stops[0]
	} else {
		g["eos_token_id"] = stops
	}
	if f.arch == "qwen3_moe" {
		g["_from_model_config"] = false
		g["do_sample"], g["temperature"], g["top_k"], g["top_p"] = true, 0.6, 20, 0.95
	}
	return g
}

// linearStd is the init std of a linear layer: variance 1/fan_in keeps y = Wx at the
// scale of x.
func linearStd(in int) float32 { return float32(1 / math.Sqrt(float64(in))) }
