package model_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moemesh/moemesh/model"
)

// Real configs (models.md §2 and the config.json files it cites), trimmed of keys no
// field reads only where they are long lists.
const (
	qwen3_30B = `{"architectures":["Qwen3MoeForCausalLM"],"attention_bias":false,"attention_dropout":0.0,
"bos_token_id":151643,"decoder_sparse_step":1,"eos_token_id":151645,"head_dim":128,"hidden_act":"silu",
"hidden_size":2048,"initializer_range":0.02,"intermediate_size":6144,"max_position_embeddings":40960,
"max_window_layers":48,"mlp_only_layers":[],"model_type":"qwen3_moe","moe_intermediate_size":768,
"norm_topk_prob":true,"num_attention_heads":32,"num_experts":128,"num_experts_per_tok":8,
"num_hidden_layers":48,"num_key_value_heads":4,"output_router_logits":false,"rms_norm_eps":1e-06,
"rope_scaling":null,"rope_theta":1000000.0,"router_aux_loss_coef":0.001,"sliding_window":null,
"tie_word_embeddings":false,"torch_dtype":"bfloat16","transformers_version":"4.51.0","use_cache":true,
"use_sliding_window":false,"vocab_size":151936}`

	// The same model as saved by transformers 5.x: rope_parameters, dtype, an eos list.
	qwen3_30B_v5 = `{"architectures":["Qwen3MoeForCausalLM"],"bos_token_id":151643,"decoder_sparse_step":1,
"dtype":"bfloat16","eos_token_id":[151645,151643],"head_dim":128,"hidden_act":"silu","hidden_size":2048,
"intermediate_size":6144,"max_position_embeddings":40960,"mlp_only_layers":[],"model_type":"qwen3_moe",
"moe_intermediate_size":768,"norm_topk_prob":true,"num_attention_heads":32,"num_experts":128,
"num_experts_per_tok":8,"num_hidden_layers":48,"num_key_value_heads":4,"rms_norm_eps":1e-06,
"rope_parameters":{"rope_theta":10000000.0,"rope_type":"default"},"tie_word_embeddings":false,
"transformers_version":"5.0.0","vocab_size":151936}`

	qwen15MoE = `{"architectures":["Qwen2MoeForCausalLM"],"attention_dropout":0.0,"bos_token_id":151643,
"decoder_sparse_step":1,"eos_token_id":151643,"hidden_act":"silu","hidden_size":2048,"initializer_range":0.02,
"intermediate_size":5632,"max_position_embeddings":8192,"max_window_layers":21,"model_type":"qwen2_moe",
"moe_intermediate_size":1408,"norm_topk_prob":false,"num_attention_heads":16,"num_experts":60,
"num_experts_per_tok":4,"num_hidden_layers":24,"num_key_value_heads":16,"output_router_logits":false,
"rms_norm_eps":1e-06,"rope_theta":1000000.0,"router_aux_loss_coef":0.001,"shared_expert_intermediate_size":5632,
"sliding_window":32768,"tie_word_embeddings":false,"torch_dtype":"bfloat16","transformers_version":"4.40.0.dev0",
"use_cache":true,"use_sliding_window":false,"vocab_size":151936}`

	mixtral8x7B = `{"architectures":["MixtralForCausalLM"],"attention_dropout":0.0,"bos_token_id":1,"eos_token_id":2,
"hidden_act":"silu","hidden_size":4096,"initializer_range":0.02,"intermediate_size":14336,
"max_position_embeddings":32768,"model_type":"mixtral","num_attention_heads":32,"num_experts_per_tok":2,
"num_hidden_layers":32,"num_key_value_heads":8,"num_local_experts":8,"output_router_logits":false,
"rms_norm_eps":1e-05,"rope_theta":1e6,"router_aux_loss_coef":0.02,"sliding_window":null,
"tie_word_embeddings":false,"torch_dtype":"bfloat16","transformers_version":"4.36.0.dev0","use_cache":true,
"vocab_size":32000}`

	olmoe = `{"architectures":["OlmoeForCausalLM"],"attention_bias":false,"attention_dropout":0.0,"clip_qkv":null,
"eos_token_id":50279,"hidden_act":"silu","hidden_size":2048,"initializer_range":0.02,"intermediate_size":1024,
"max_position_embeddings":4096,"model_type":"olmoe","norm_topk_prob":false,"num_attention_heads":16,
"num_experts":64,"num_experts_per_tok":8,"num_hidden_layers":16,"num_key_value_heads":16,
"output_router_logits":false,"pad_token_id":1,"rms_norm_eps":1e-05,"rope_scaling":null,"rope_theta":10000.0,
"router_aux_loss_coef":0.01,"tie_word_embeddings":false,"torch_dtype":"bfloat16",
"transformers_version":"4.43.0.dev0","use_cache":true,"vocab_size":50304}`

	granite1b = `{"architectures":["GraniteMoeForCausalLM"],"attention_bias":false,"attention_dropout":0.1,
"attention_multiplier":0.015625,"bos_token_id":0,"embedding_multiplier":12.0,"eos_token_id":0,"hidden_act":"silu",
"hidden_size":1024,"initializer_range":0.02,"intermediate_size":512,"logits_scaling":6.0,
"max_position_embeddings":131072,"model_type":"granitemoe","num_attention_heads":16,"num_experts_per_tok":8,
"num_hidden_layers":24,"num_key_value_heads":8,"num_local_experts":32,"output_router_logits":false,
"pad_token_id":0,"residual_multiplier":0.22,"rms_norm_eps":1e-06,"rope_scaling":null,"rope_theta":1500000,
"router_aux_loss_coef":0.0,"tie_word_embeddings":true,"torch_dtype":"bfloat16",
"transformers_version":"4.46.0.dev0","use_cache":true,"vocab_size":49155}`

	dsV2Lite = `{"architectures":["DeepseekV2ForCausalLM"],"attention_bias":false,"attention_dropout":0.0,
"aux_loss_alpha":0.001,"bos_token_id":100000,"eos_token_id":100001,"first_k_dense_replace":1,"hidden_act":"silu",
"hidden_size":2048,"initializer_range":0.02,"intermediate_size":10944,"kv_lora_rank":512,
"max_position_embeddings":163840,"model_type":"deepseek_v2","moe_intermediate_size":1408,"moe_layer_freq":1,
"n_group":1,"n_routed_experts":64,"n_shared_experts":2,"norm_topk_prob":false,"num_attention_heads":16,
"num_experts_per_tok":6,"num_hidden_layers":27,"num_key_value_heads":16,"pretraining_tp":1,"q_lora_rank":null,
"qk_nope_head_dim":128,"qk_rope_head_dim":64,"rms_norm_eps":1e-06,"rope_scaling":{"beta_fast":32,"beta_slow":1,
"factor":40,"mscale":0.707,"mscale_all_dim":0.707,"original_max_position_embeddings":4096,"type":"yarn"},
"rope_theta":10000,"routed_scaling_factor":1.0,"scoring_func":"softmax","seq_aux":true,
"tie_word_embeddings":false,"topk_group":1,"topk_method":"greedy","torch_dtype":"bfloat16",
"transformers_version":"4.33.1","use_cache":true,"v_head_dim":128,"vocab_size":102400}`

	dsV2 = `{"architectures":["DeepseekV2ForCausalLM"],"bos_token_id":100000,"eos_token_id":100001,
"first_k_dense_replace":1,"hidden_act":"silu","hidden_size":5120,"intermediate_size":12288,"kv_lora_rank":512,
"max_position_embeddings":163840,"model_type":"deepseek_v2","moe_intermediate_size":1536,"moe_layer_freq":1,
"n_group":8,"n_routed_experts":160,"n_shared_experts":2,"norm_topk_prob":false,"num_attention_heads":128,
"num_experts_per_tok":6,"num_hidden_layers":60,"num_key_value_heads":128,"q_lora_rank":1536,
"qk_nope_head_dim":128,"qk_rope_head_dim":64,"rms_norm_eps":1e-06,"rope_theta":10000,
"routed_scaling_factor":16.0,"scoring_func":"softmax","topk_group":3,"topk_method":"group_limited_greedy",
"torch_dtype":"bfloat16","v_head_dim":128,"vocab_size":102400}`

	dsV3 = `{"architectures":["DeepseekV3ForCausalLM"],"attention_bias":false,"attention_dropout":0.0,
"auto_map":{"AutoConfig":"configuration_deepseek.DeepseekV3Config"},"aux_loss_alpha":0.001,"bos_token_id":0,
"eos_token_id":1,"ep_size":1,"first_k_dense_replace":3,"hidden_act":"silu","hidden_size":7168,
"initializer_range":0.02,"intermediate_size":18432,"kv_lora_rank":512,"max_position_embeddings":163840,
"model_type":"deepseek_v3","moe_intermediate_size":2048,"moe_layer_freq":1,"n_group":8,"n_routed_experts":256,
"n_shared_experts":1,"norm_topk_prob":true,"num_attention_heads":128,"num_experts_per_tok":8,
"num_hidden_layers":61,"num_key_value_heads":128,"num_nextn_predict_layers":1,"q_lora_rank":1536,
"qk_nope_head_dim":128,"qk_rope_head_dim":64,"quantization_config":{"activation_scheme":"dynamic","fmt":"e4m3",
"quant_method":"fp8","weight_block_size":[128,128]},"rms_norm_eps":1e-06,"rope_scaling":{"beta_fast":32,
"beta_slow":1,"factor":40,"mscale":1.0,"mscale_all_dim":1.0,"original_max_position_embeddings":4096,
"type":"yarn"},"rope_theta":10000,"routed_scaling_factor":2.5,"scoring_func":"sigmoid","seq_aux":true,
"tie_word_embeddings":false,"topk_group":4,"topk_method":"noaux_tc","torch_dtype":"bfloat16",
"transformers_version":"4.33.1","use_cache":true,"v_head_dim":128,"vocab_size":129280}`

	moonlight = `{"architectures":["DeepseekV3ForCausalLM"],"bos_token_id":163584,"eos_token_id":163585,
"first_k_dense_replace":1,"hidden_act":"silu","hidden_size":2048,"intermediate_size":11264,"kv_lora_rank":512,
"model_type":"deepseek_v3","moe_intermediate_size":1408,"moe_layer_freq":1,"n_group":1,"n_routed_experts":64,
"n_shared_experts":2,"norm_topk_prob":true,"num_attention_heads":16,"num_experts_per_tok":6,
"num_hidden_layers":27,"num_key_value_heads":16,"q_lora_rank":null,"qk_nope_head_dim":128,"qk_rope_head_dim":64,
"rms_norm_eps":1e-05,"rope_theta":50000.0,"routed_scaling_factor":2.446,"scoring_func":"sigmoid",
"topk_group":1,"topk_method":"noaux_tc","torch_dtype":"bfloat16","v_head_dim":128,"vocab_size":163840}`

	dsV4Flash = `{"architectures":["DeepseekV4ForCausalLM"],"bos_token_id":0,"compress_ratios":[0,0,4,128,4,128],
"compress_rope_theta":160000,"eos_token_id":1,"expert_dtype":"fp4","hc_eps":1e-06,"hc_mult":4,
"hc_sinkhorn_iters":20,"head_dim":512,"hidden_act":"silu","hidden_size":4096,"index_head_dim":128,
"index_n_heads":64,"index_topk":512,"max_position_embeddings":1048576,"model_type":"deepseek_v4",
"moe_intermediate_size":2048,"n_group":null,"n_routed_experts":256,"n_shared_experts":1,"norm_topk_prob":true,
"num_attention_heads":64,"num_experts_per_tok":6,"num_hash_layers":3,"num_hidden_layers":43,
"num_key_value_heads":1,"o_groups":8,"o_lora_rank":1024,"q_lora_rank":1024,"qk_rope_head_dim":64,
"quantization_config":{"activation_scheme":"dynamic","fmt":"e4m3","quant_method":"fp8","scale_fmt":"ue8m0",
"weight_block_size":[128,128]},"rms_norm_eps":1e-06,"rope_scaling":{"beta_fast":32,"beta_slow":1,"factor":16,
"original_max_position_embeddings":65536,"type":"yarn"},"rope_theta":10000,"routed_scaling_factor":1.5,
"scoring_func":"sqrtsoftplus","sliding_window":128,"swiglu_limit":10.0,"tie_word_embeddings":false,
"topk_group":null,"topk_method":"noaux_tc","torch_dtype":"bfloat16","vocab_size":129280}`

	// A tiny DeepSeek-V4 as transformers 5.x saves it: mlp_layer_types instead of
	// num_hash_layers, rope_parameters keyed by rope type.
	dsV4HF = `{"architectures":["DeepseekV4ForCausalLM"],"model_type":"deepseek_v4","hidden_size":64,
"num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":1,"head_dim":32,"q_lora_rank":32,
"n_routed_experts":8,"n_shared_experts":1,"num_experts_per_tok":2,"moe_intermediate_size":16,
"mlp_layer_types":["hash_moe","hash_moe","moe","moe"],"vocab_size":256,"swiglu_limit":10.0,"dtype":"bfloat16",
"rope_parameters":{"main":{"rope_type":"default","rope_theta":10000.0},"compress":{"rope_type":"yarn","rope_theta":160000.0,"factor":16}}}`
)

type configWant struct {
	hidden, layers, vocab, heads, kv, headDim int
	experts, topK, expertI, denseI, sharedI   int
	sharedGate, norm, tie                     bool
	scoring, method                           string
	groups, topKGroups, firstDense, hash      int
	scale, swiglu                             float32
	eps, theta                                float64
	dtype                                     string
	bos                                       int
	eos                                       []int
	moe                                       []int // len(MoELayers()), first MoE layer
	gate                                      model.GateSpec
}

func TestParseConfigFamilies(t *testing.T) {
	for _, c := range []struct {
		name, json string
		want       configWant
	}{
		{"Qwen3-30B-A3B", qwen3_30B, configWant{2048, 48, 151936, 32, 4, 128, 128, 8, 768, 6144, 0, false, true, false,
			"softmax", "", 0, 0, 0, 0, 1, 0, 1e-6, 1e6, "bfloat16", 151643, []int{151645}, []int{48, 0},
			model.GateSpec{Experts: 128, TopK: 8, Scoring: model.Softmax, Renormalize: true, Scale: 1}}},
		{"Qwen3-30B-A3B v5", qwen3_30B_v5, configWant{2048, 48, 151936, 32, 4, 128, 128, 8, 768, 6144, 0, false, true, false,
			"softmax", "", 0, 0, 0, 0, 1, 0, 1e-6, 1e7, "bfloat16", 151643, []int{151645, 151643}, []int{48, 0},
			model.GateSpec{Experts: 128, TopK: 8, Scoring: model.Softmax, Renormalize: true, Scale: 1}}},
		{"Qwen1.5-MoE-A2.7B", qwen15MoE, configWant{2048, 24, 151936, 16, 16, 128, 60, 4, 1408, 5632, 5632, true, false, false,
			"softmax", "", 0, 0, 0, 0, 1, 0, 1e-6, 1e6, "bfloat16", 151643, []int{151643}, []int{24, 0},
			model.GateSpec{Experts: 60, TopK: 4, Scoring: model.Softmax, Scale: 1}}},
		{"Mixtral-8x7B", mixtral8x7B, configWant{4096, 32, 32000, 32, 8, 128, 8, 2, 14336, 0, 0, false, true, false,
			"softmax", "", 0, 0, 0, 0, 1, 0, 1e-5, 1e6, "bfloat16", 1, []int{2}, []int{32, 0},
			model.GateSpec{Experts: 8, TopK: 2, Scoring: model.Softmax, Renormalize: true, Scale: 1}}},
		{"OLMoE-1B-7B", olmoe, configWant{2048, 16, 50304, 16, 16, 128, 64, 8, 1024, 0, 0, false, false, false,
			"softmax", "", 0, 0, 0, 0, 1, 0, 1e-5, 1e4, "bfloat16", -1, []int{50279}, []int{16, 0},
			model.GateSpec{Experts: 64, TopK: 8, Scoring: model.Softmax, Scale: 1}}},
		{"granite-3.1-1b-a400m", granite1b, configWant{1024, 24, 49155, 16, 8, 64, 32, 8, 512, 0, 0, false, true, true,
			"topk_softmax", "", 0, 0, 0, 0, 1, 0, 1e-6, 1.5e6, "bfloat16", 0, []int{0}, []int{24, 0},
			model.GateSpec{Experts: 32, TopK: 8, Scoring: model.TopKSoftmax, Renormalize: true, Scale: 1}}},
		{"DeepSeek-V2-Lite", dsV2Lite, configWant{2048, 27, 102400, 16, 16, 192, 64, 6, 1408, 10944, 2816, false, false, false,
			"softmax", "greedy", 1, 1, 1, 0, 1, 0, 1e-6, 1e4, "bfloat16", 100000, []int{100001}, []int{26, 1},
			model.GateSpec{Experts: 64, TopK: 6, Scoring: model.Softmax, Scale: 1}}},
		{"DeepSeek-V2", dsV2, configWant{5120, 60, 102400, 128, 128, 192, 160, 6, 1536, 12288, 3072, false, false, false,
			"softmax", "group_limited_greedy", 8, 3, 1, 0, 16, 0, 1e-6, 1e4, "bfloat16", 100000, []int{100001}, []int{59, 1},
			model.GateSpec{Experts: 160, TopK: 6, Scoring: model.Softmax, Scale: 16, Groups: 8, TopKGroups: 3, GroupScore: model.GroupMax}}},
		{"DeepSeek-V3", dsV3, configWant{7168, 61, 129280, 128, 128, 192, 256, 8, 2048, 18432, 2048, false, true, false,
			"sigmoid", "noaux_tc", 8, 4, 3, 0, 2.5, 0, 1e-6, 1e4, "bfloat16", 0, []int{1}, []int{58, 3},
			model.GateSpec{Experts: 256, TopK: 8, Scoring: model.Sigmoid, Renormalize: true, Scale: 2.5, Groups: 8, TopKGroups: 4, GroupScore: model.GroupTop2Sum}}},
		{"Moonlight-16B-A3B", moonlight, configWant{2048, 27, 163840, 16, 16, 192, 64, 6, 1408, 11264, 2816, false, true, false,
			"sigmoid", "noaux_tc", 1, 1, 1, 0, 2.446, 0, 1e-5, 5e4, "bfloat16", 163584, []int{163585}, []int{26, 1},
			model.GateSpec{Experts: 64, TopK: 6, Scoring: model.Sigmoid, Renormalize: true, Scale: 2.446}}},
		{"DeepSeek-V4-Flash", dsV4Flash, configWant{4096, 43, 129280, 64, 1, 512, 256, 6, 2048, 0, 2048, false, true, false,
			"sqrtsoftplus", "noaux_tc", 0, 0, 0, 3, 1.5, 10, 1e-6, 1e4, "bfloat16", 0, []int{1}, []int{43, 0},
			model.GateSpec{Experts: 256, TopK: 6, Scoring: model.SqrtSoftplus, Renormalize: true, Scale: 1.5}}},
		{"DeepSeek-V4 HF port", dsV4HF, configWant{64, 4, 256, 4, 1, 32, 8, 2, 16, 0, 16, false, true, false,
			"sqrtsoftplus", "noaux_tc", 0, 0, 0, 2, 1, 10, 1e-6, 1e4, "bfloat16", -1, nil, []int{4, 0},
			model.GateSpec{Experts: 8, TopK: 2, Scoring: model.SqrtSoftplus, Renormalize: true, Scale: 1}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := model.ParseConfig([]byte(c.json))
			if err != nil {
				t.Fatal(err)
			}
			w := c.want
			moe := cfg.MoELayers()
			got := configWant{cfg.Hidden, cfg.Layers, cfg.Vocab, cfg.Heads, cfg.KVHeads, cfg.HeadDim,
				cfg.Experts, cfg.TopK, cfg.ExpertIntermediate, cfg.DenseIntermediate, cfg.SharedIntermediate,
				cfg.SharedGate, cfg.NormTopK, cfg.TieEmbeddings, cfg.Scoring, cfg.TopKMethod, cfg.Groups, cfg.TopKGroups,
				cfg.FirstDense, cfg.HashLayers, cfg.RoutedScaling, cfg.SwiGLULimit, cfg.RMSEps, cfg.RopeTheta,
				cfg.TorchDType, cfg.BOS, cfg.EOS, []int{len(moe), moe[0]}, cfg.GateSpec()}
			gj, _ := json.Marshal(got)
			wj, _ := json.Marshal(w)
			if string(gj) != string(wj) {
				t.Errorf("normalised config\n got %+v\nwant %+v", got, w)
			}
			if err := cfg.GateSpec().Validate(); err != nil {
				t.Errorf("GateSpec().Validate: %v", err)
			}
			if cfg.Arch != strings.ToLower(cfg.Arch) || len(cfg.Architectures) != 1 || cfg.Raw["model_type"] == nil {
				t.Errorf("arch %q architectures %v", cfg.Arch, cfg.Architectures)
			}
			if cfg.HasSharedExpert() != (w.sharedI > 0) {
				t.Errorf("HasSharedExpert = %v", cfg.HasSharedExpert())
			}
		})
	}
}

// TestConfigExtras: keys only some families carry, read through their fields or Lookup.
func TestConfigExtras(t *testing.T) {
	v3, err := model.ParseConfig([]byte(dsV3))
	if err != nil {
		t.Fatal(err)
	}
	q := v3.Quant
	if q == nil || q.Method != "fp8" || q.Fmt != "e4m3" || !slices.Equal(q.BlockSize, []int{128, 128}) || q.ActivationScheme != "dynamic" {
		t.Errorf("quantization %+v", q)
	}
	if v3.QLoraRank != 1536 || v3.KVLoraRank != 512 || v3.QKNopeHeadDim != 128 || v3.QKRopeHeadDim != 64 || v3.VHeadDim != 128 {
		t.Errorf("MLA dims %d %d %d %d %d", v3.QLoraRank, v3.KVLoraRank, v3.QKNopeHeadDim, v3.QKRopeHeadDim, v3.VHeadDim)
	}
	lite, _ := model.ParseConfig([]byte(dsV2Lite))
	if lite.QLoraRank != 0 {
		t.Errorf("q_lora_rank null gave %d, want 0 (plain q_proj)", lite.QLoraRank)
	}
	g, _ := model.ParseConfig([]byte(granite1b))
	var mult float64
	if ok, err := g.Lookup("embedding_multiplier", &mult); !ok || err != nil || mult != 12 {
		t.Errorf("Lookup(embedding_multiplier) = %v, %v, %v", mult, ok, err)
	}
	if ok, err := g.Lookup("no_such_key", &mult); ok || err != nil {
		t.Errorf("Lookup(absent) = %v, %v", ok, err)
	}
	var s string
	if _, err := g.Lookup("embedding_multiplier", &s); !errors.Is(err, model.ErrConfig) || !strings.Contains(err.Error(), "embedding_multiplier") {
		t.Errorf("Lookup(wrong type) = %v", err)
	}
	v4, _ := model.ParseConfig([]byte(dsV4Flash))
	for i, want := range []bool{true, true, true, false} {
		if v4.IsHashLayer(i) != want {
			t.Errorf("V4 IsHashLayer(%d) = %v", i, !want)
		}
	}
}

func TestIsMoELayer(t *testing.T) {
	with := func(base string, kv map[string]any) string {
		var m map[string]any
		if err := json.Unmarshal([]byte(base), &m); err != nil {
			t.Fatal(err)
		}
		for k, v := range kv {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	for _, c := range []struct {
		name string
		json string
		want []int
	}{
		{"qwen sparse step 2, mlp_only [3]", with(qwen15MoE, map[string]any{"num_hidden_layers": 8, "decoder_sparse_step": 2, "mlp_only_layers": []int{3}}), []int{1, 5, 7}},
		{"qwen3 mlp_only", with(qwen3_30B, map[string]any{"num_hidden_layers": 4, "mlp_only_layers": []int{0, 2}}), []int{1, 3}},
		{"deepseek first 3 dense", with(dsV3, map[string]any{"num_hidden_layers": 6}), []int{3, 4, 5}},
		{"deepseek moe_layer_freq 2", with(dsV2Lite, map[string]any{"num_hidden_layers": 7, "moe_layer_freq": 2}), []int{2, 4, 6}},
		{"mixtral every layer", with(mixtral8x7B, map[string]any{"num_hidden_layers": 3}), []int{0, 1, 2}},
		{"granite every layer", with(granite1b, map[string]any{"num_hidden_layers": 2}), []int{0, 1}},
		{"olmoe every layer", with(olmoe, map[string]any{"num_hidden_layers": 2}), []int{0, 1}},
		{"v4 every layer", with(dsV4Flash, map[string]any{"num_hidden_layers": 4}), []int{0, 1, 2, 3}},
	} {
		cfg, err := model.ParseConfig([]byte(c.json))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := cfg.MoELayers(); !slices.Equal(got, c.want) {
			t.Errorf("%s: MoELayers = %v, want %v", c.name, got, c.want)
		}
		for _, i := range []int{-1, cfg.Layers, cfg.Layers + 1} { // MTP layer 61 etc.
			if cfg.IsMoELayer(i) {
				t.Errorf("%s: IsMoELayer(%d) out of range", c.name, i)
			}
		}
	}
}

// TestParseConfigRejects: malformed or impossible configs fail with an error that wraps
// the right sentinel and names the key.
func TestParseConfigRejects(t *testing.T) {
	edit := func(base string, kv map[string]any, drop ...string) string {
		var m map[string]any
		if err := json.Unmarshal([]byte(base), &m); err != nil {
			t.Fatal(err)
		}
		for k, v := range kv {
			m[k] = v
		}
		for _, k := range drop {
			delete(m, k)
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	type kv = map[string]any
	for _, c := range []struct {
		name string
		json string
		is   error
		want string
	}{
		{"not json", `{"model_type":`, model.ErrConfig, "not a JSON object"},
		{"array", `[1]`, model.ErrConfig, "not a JSON object"},
		{"null", `null`, model.ErrConfig, "not a JSON object"},
		{"no model_type", edit(mixtral8x7B, nil, "model_type"), model.ErrConfig, "missing model_type"},
		{"model_type number", edit(mixtral8x7B, kv{"model_type": 7}), model.ErrConfig, "model_type: want a string, got the number 7"},
		{"unknown model_type", edit(mixtral8x7B, kv{"model_type": "llama"}), model.ErrUnsupported, "deepseek_v2, deepseek_v3, deepseek_v4, granitemoe, mixtral, olmoe, qwen2_moe, qwen3_moe"},
		{"hidden_size string", edit(mixtral8x7B, kv{"hidden_size": "4096"}), model.ErrConfig, `hidden_size: want an integer, got a string ("4096")`},
		{"hidden_size fraction", edit(mixtral8x7B, kv{"hidden_size": 40.5}), model.ErrConfig, "hidden_size: want an integer"},
		{"hidden_size zero", edit(mixtral8x7B, kv{"hidden_size": 0}), model.ErrConfig, "hidden_size = 0"},
		{"hidden_size missing", edit(mixtral8x7B, nil, "hidden_size"), model.ErrConfig, "missing required key hidden_size"},
		{"layers huge", edit(mixtral8x7B, kv{"num_hidden_layers": 1e9}), model.ErrConfig, "num_hidden_layers"},
		{"no experts key", edit(mixtral8x7B, nil, "num_local_experts"), model.ErrConfig, "missing required key num_local_experts"},
		{"no top-k", edit(qwen3_30B, nil, "num_experts_per_tok"), model.ErrConfig, "num_experts_per_tok"},
		{"no moe_intermediate_size", edit(qwen3_30B, nil, "moe_intermediate_size"), model.ErrConfig, "moe_intermediate_size"},
		{"top-k above experts", edit(mixtral8x7B, kv{"num_experts_per_tok": 9}), model.ErrConfig, "num_experts_per_tok = 9, want 1..8"},
		{"conflicting aliases", edit(qwen3_30B, kv{"num_local_experts": 64}), model.ErrConfig, "num_experts = 128 but num_local_experts = 64"},
		{"bool as string", edit(qwen3_30B, kv{"norm_topk_prob": "yes"}), model.ErrConfig, "norm_topk_prob: want true or false"},
		{"mlp_only string", edit(qwen3_30B, kv{"mlp_only_layers": "1"}), model.ErrConfig, "mlp_only_layers: want a list of integers"},
		{"mlp_only negative", edit(qwen3_30B, kv{"mlp_only_layers": []int{-1}}), model.ErrConfig, "mlp_only_layers"},
		{"eos string", edit(qwen3_30B, kv{"eos_token_id": "x"}), model.ErrConfig, "eos_token_id: want an integer or a list of integers"},
		{"heads do not divide hidden", edit(mixtral8x7B, kv{"num_attention_heads": 3, "num_key_value_heads": 1}), model.ErrConfig, "not a multiple of num_attention_heads"},
		{"kv heads do not divide heads", edit(mixtral8x7B, kv{"num_key_value_heads": 5}), model.ErrConfig, "num_key_value_heads"},
		{"groups do not divide experts", edit(dsV3, kv{"n_group": 7}), model.ErrConfig, "n_group 7 does not divide 256"},
		{"topk_group above n_group", edit(dsV3, kv{"topk_group": 9}), model.ErrConfig, "topk_group 9 of n_group 8"},
		{"top-k above kept groups", edit(dsV3, kv{"topk_group": 1, "num_experts_per_tok": 40}), model.ErrConfig, "exceeds the 32 experts"},
		{"noaux_tc groups of one", edit(dsV3, kv{"n_group": 256, "topk_group": 8}), model.ErrConfig, "top 2 experts"},
		{"unknown scoring", edit(dsV3, kv{"scoring_func": "relu"}), model.ErrUnsupported, `scoring_func "relu"`},
		{"unknown topk_method", edit(dsV3, kv{"topk_method": "magic"}), model.ErrUnsupported, `topk_method "magic"`},
		{"gelu", edit(mixtral8x7B, kv{"hidden_act": "gelu"}), model.ErrUnsupported, `hidden_act "gelu"`},
		{"no MoE layer", edit(dsV3, kv{"first_k_dense_replace": 61}), model.ErrConfig, "no layer of 61 is a MoE layer"},
		{"dense layers without width", edit(dsV3, nil, "intermediate_size"), model.ErrConfig, "3 dense layers but no intermediate_size"},
		{"zero scale", edit(dsV3, kv{"routed_scaling_factor": 0}), model.ErrConfig, "routed_scaling_factor = 0"},
		{"zero eps", edit(mixtral8x7B, kv{"rms_norm_eps": 0}), model.ErrConfig, "rms_norm_eps = 0"},
		{"sparse step 0", edit(qwen3_30B, kv{"decoder_sparse_step": 0}), model.ErrConfig, "decoder_sparse_step = 0"},
		{"negative swiglu limit", edit(dsV4Flash, kv{"swiglu_limit": -1}), model.ErrConfig, "swiglu_limit = -1"},
		{"hash layers above layers", edit(dsV4Flash, kv{"num_hash_layers": 44}), model.ErrConfig, "num_hash_layers = 44"},
		{"hash after moe", edit(dsV4HF, kv{"mlp_layer_types": []string{"moe", "hash_moe", "moe", "moe"}}), model.ErrUnsupported, "mlp_layer_types[1]"},
		{"block size zero", edit(dsV3, kv{"quantization_config": kv{"quant_method": "fp8", "weight_block_size": []int{0, 128}}}), model.ErrConfig, "weight_block_size"},
		{"quantization_config string", edit(dsV3, kv{"quantization_config": "fp8"}), model.ErrConfig, "quantization_config: want an object"},
		{"quant block size strings", edit(dsV3, kv{"quantization_config": kv{"weight_block_size": []string{"a"}}}), model.ErrConfig, "quantization_config.weight_block_size"},
		{"rope_parameters list", edit(qwen3_30B_v5, kv{"rope_parameters": []int{1}}), model.ErrConfig, "rope_parameters"},
		{"rope_theta string", edit(qwen3_30B_v5, kv{"rope_parameters": kv{"rope_theta": "big"}}), model.ErrConfig, "rope_parameters.rope_theta: want a number"},
		{"architectures string", edit(mixtral8x7B, kv{"architectures": "MixtralForCausalLM"}), model.ErrConfig, "architectures: want a list of strings"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := model.ParseConfig([]byte(c.json))
			if err == nil {
				t.Fatalf("ParseConfig succeeded: %+v", cfg)
			}
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q\nwant %v containing %q", err, c.is, c.want)
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	if _, err := model.LoadConfig(dir); !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, model.ErrConfig) ||
		!strings.Contains(err.Error(), filepath.Join(dir, "config.json")) {
		t.Errorf("LoadConfig(empty dir) = %v", err)
	}
	p := filepath.Join(dir, "config.json")
	os.WriteFile(p, []byte(`{"model_type":"mixtral"}`), 0o644)
	if _, err := model.LoadConfig(dir); !errors.Is(err, model.ErrConfig) || !strings.Contains(err.Error(), p) {
		t.Errorf("LoadConfig(bad) = %v, want the path named", err)
	}
	os.WriteFile(p, []byte(olmoe), 0o644)
	cfg, err := model.LoadConfig(dir)
	if err != nil || cfg.Arch != "olmoe" {
		t.Errorf("LoadConfig = %v, %v", cfg, err)
	}
}

// FuzzParseConfig: any bytes parse or fail with ErrConfig/ErrUnsupported; an accepted
// config yields a valid GateSpec and at least one MoE layer, whatever the values.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{qwen3_30B, qwen3_30B_v5, qwen15MoE, mixtral8x7B, olmoe, granite1b, dsV2Lite, dsV2,
		dsV3, moonlight, dsV4Flash, dsV4HF, `{}`, `{"model_type":"mixtral","num_local_experts":"8"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := model.ParseConfig(data)
		if err != nil {
			if !errors.Is(err, model.ErrConfig) && !errors.Is(err, model.ErrUnsupported) {
				t.Fatalf("error %v wraps neither ErrConfig nor ErrUnsupported", err)
			}
			return
		}
		if err := cfg.GateSpec().Validate(); err != nil {
			t.Fatalf("accepted config gives an invalid GateSpec: %v", err)
		}
		moe := cfg.MoELayers()
		if len(moe) == 0 || cfg.HeadDim <= 0 || cfg.ExpertIntermediate <= 0 {
			t.Fatalf("accepted config: MoE layers %v, head_dim %d, I %d", moe, cfg.HeadDim, cfg.ExpertIntermediate)
		}
		for _, l := range moe {
			_, _, _ = cfg.ExpertTensorNames(l, cfg.Experts-1)
			_, _, _ = cfg.RouterTensorNames(l)
		}
	})
}
