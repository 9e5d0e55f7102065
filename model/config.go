package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Config is a MoE checkpoint's config.json normalised across families (models.md §1–2):
// each field has one meaning whatever key, alias or default the family uses. Keys that
// only one architecture needs stay in Raw.
type Config struct {
	Arch          string   // model_type, one of SupportedArches
	Architectures []string // architectures, e.g. ["Qwen3MoeForCausalLM"]

	Hidden, Layers, Vocab int
	Heads, KVHeads        int
	// HeadDim is head_dim when present (Qwen3-30B-A3B: 128 ≠ 2048/32), else hidden/heads;
	// for DeepSeek-V2/V3 MLA without head_dim, qk_nope_head_dim + qk_rope_head_dim.
	HeadDim      int
	MaxPositions int // max_position_embeddings, 0 when absent

	// MLA (DeepSeek): q_lora_rank (0: plain q_proj), kv_lora_rank and the head splits.
	QLoraRank, KVLoraRank                  int
	QKNopeHeadDim, QKRopeHeadDim, VHeadDim int

	Experts int // routed experts per MoE layer (num_local_experts / num_experts / n_routed_experts)
	TopK    int // num_experts_per_tok
	// ExpertIntermediate is one routed expert's I: moe_intermediate_size, or
	// intermediate_size for Mixtral, OLMoE and Granite.
	ExpertIntermediate int
	// DenseIntermediate is the MLP width of dense (non-MoE) layers; 0 when the family has
	// none (Mixtral, OLMoE, Granite, DeepSeek-V4).
	DenseIntermediate int
	// SharedIntermediate is the total width of the always-on shared MLP, 0 when none:
	// Qwen2-MoE shared_expert_intermediate_size; DeepSeek moe_intermediate_size ×
	// n_shared_experts (stored as one fused MLP).
	SharedIntermediate int
	SharedExperts      int  // DeepSeek n_shared_experts; Qwen2-MoE 1 with a shared expert; else 0
	SharedGate         bool // Qwen2-MoE: the shared MLP is scaled by sigmoid(shared_expert_gate·x)

	// Routing (see GateSpec).
	NormTopK      bool    // renormalise the top-K weights
	Scoring       string  // "softmax", "sigmoid", "sqrtsoftplus" or "topk_softmax" (Granite)
	TopKMethod    string  // DeepSeek topk_method: "greedy", "group_limited_greedy", "noaux_tc"; else ""
	Groups        int     // n_group (0 when null)
	TopKGroups    int     // topk_group
	RoutedScaling float32 // routed_scaling_factor, 1 when absent

	// Which layers are MoE (see IsMoELayer).
	FirstDense int   // DeepSeek first_k_dense_replace
	MoEFreq    int   // DeepSeek moe_layer_freq (1 when absent)
	SparseStep int   // Qwen decoder_sparse_step (1 when absent)
	MLPOnly    []int // Qwen mlp_only_layers
	HashLayers int   // DeepSeek-V4: layers [0, HashLayers) route by tid2eid[token id]

	SwiGLULimit   float32 // DeepSeek-V4 clamped SwiGLU (swiglu_limit); 0: no clamp
	RMSEps        float64 // rms_norm_eps
	RopeTheta     float64 // rope_theta, also from v5 rope_parameters
	TieEmbeddings bool    // tie_word_embeddings: no lm_head, use embed_tokens
	TorchDType    string  // torch_dtype, or v5 dtype ("bfloat16", ...)
	Quant         *Quantization
	BOS           int   // bos_token_id, −1 when absent
	EOS           []int // eos_token_id (one or a list)

	// Raw holds every key of config.json, for what the fields above do not cover (Granite
	// multipliers, rope_scaling, V4 compress_ratios, ...); read it with Lookup.
	Raw map[string]json.RawMessage
}

// Quantization is config.json's quantization_config.
type Quantization struct {
	Method           string // quant_method: "fp8", "compressed-tensors", ...
	Fmt              string // fmt: "e4m3"
	BlockSize        []int  // weight_block_size, e.g. [128, 128]
	ActivationScheme string // activation_scheme: "dynamic", "static"
	Raw              json.RawMessage
}

// family holds what differs between model_types: key names, defaults and layer rules.
type family struct {
	expertKeys []string // aliases of the routed expert count, preferred first
	interKey   string   // per-expert intermediate size
	denseKey   string   // dense-layer MLP width ("" when every layer is MoE)
	norm       bool     // norm_topk_prob default
	normFixed  bool     // renormalisation is part of the rule, no key
	scoring    string   // default scoring
	topk       string   // default topk_method (DeepSeek)
	eps        float64  // rms_norm_eps default
	qwen       bool     // decoder_sparse_step / mlp_only_layers
	deepseek   bool     // first_k_dense_replace, groups, scoring_func, shared experts
	mla        bool     // DeepSeek V2/V3 multi-head latent attention
	v4         bool     // hash layers, swiglu_limit
	shared     int      // n_shared_experts default
}

var (
	localFirst  = []string{"num_local_experts", "num_experts", "n_routed_experts"}
	numFirst    = []string{"num_experts", "num_local_experts", "n_routed_experts"}
	routedFirst = []string{"n_routed_experts", "num_local_experts", "num_experts"}
)

// families. An absent optional key takes the transformers config class default where
// that default is part of the family's rule (norm_topk_prob, scoring_func, topk_method,
// MLA sizes, n_shared_experts); group routing and scaling default to off. transformers
// writes every model-specific key on save, so real configs rarely rely on these.
var families = map[string]family{
	"qwen3_moe":   {expertKeys: numFirst, interKey: "moe_intermediate_size", denseKey: "intermediate_size", scoring: "softmax", eps: 1e-6, qwen: true},
	"qwen2_moe":   {expertKeys: numFirst, interKey: "moe_intermediate_size", denseKey: "intermediate_size", scoring: "softmax", eps: 1e-6, qwen: true},
	"mixtral":     {expertKeys: localFirst, interKey: "intermediate_size", normFixed: true, scoring: "softmax", eps: 1e-5},
	"olmoe":       {expertKeys: numFirst, interKey: "intermediate_size", scoring: "softmax", eps: 1e-5},
	"granitemoe":  {expertKeys: localFirst, interKey: "intermediate_size", normFixed: true, scoring: "topk_softmax", eps: 1e-6},
	"deepseek_v2": {expertKeys: routedFirst, interKey: "moe_intermediate_size", denseKey: "intermediate_size", scoring: "softmax", topk: "greedy", eps: 1e-6, deepseek: true, mla: true},
	"deepseek_v3": {expertKeys: routedFirst, interKey: "moe_intermediate_size", denseKey: "intermediate_size", norm: true, scoring: "sigmoid", topk: "noaux_tc", eps: 1e-6, deepseek: true, mla: true, shared: 1},
	"deepseek_v4": {expertKeys: routedFirst, interKey: "moe_intermediate_size", norm: true, scoring: "sqrtsoftplus", topk: "noaux_tc", eps: 1e-6, deepseek: true, v4: true, shared: 1},
}

// SupportedArches lists the model_type values ParseConfig accepts, sorted.
func SupportedArches() []string {
	out := make([]string, 0, len(families))
	for k := range families {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Limits on sizes, far above any real model, so that a corrupt config cannot make a
// caller allocate per layer or per expert without bound.
const (
	maxLayers  = 1 << 14
	maxExperts = 1 << 16
	maxDim     = 1 << 24
	maxVocab   = 1 << 26
	maxConfig  = 16 << 20 // bytes of config.json
)

// LoadConfig reads and parses dir/config.json. Errors name the file and wrap ErrConfig
// (and fs.ErrNotExist when it is missing).
func LoadConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, "config.json")
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfig+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrConfig, path, err)
	}
	if len(data) > maxConfig {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrConfig, path, maxConfig)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses a config.json. Errors wrap ErrConfig and name the key and the
// problem (wrong JSON type, missing required key, impossible value); an unknown
// model_type or an unsupported feature (hidden_act other than silu, an unknown
// topk_method) wraps ErrUnsupported.
func ParseConfig(data []byte) (*Config, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil || raw == nil {
		if err == nil {
			err = errors.New("null")
		}
		return nil, fmt.Errorf("%w: config.json is not a JSON object: %v", ErrConfig, err)
	}
	p := &parser{raw: raw}
	arch := p.str("model_type", "")
	if p.err != nil {
		return nil, p.err
	}
	fam, ok := families[arch]
	if arch == "" {
		return nil, fmt.Errorf("%w: missing model_type (supported: %s)", ErrConfig, strings.Join(SupportedArches(), ", "))
	}
	if !ok {
		return nil, fmt.Errorf("%w: model_type %q (supported: %s)", ErrUnsupported, arch, strings.Join(SupportedArches(), ", "))
	}
	c := &Config{Arch: arch, Raw: raw}
	c.parse(p, fam)
	if p.err != nil {
		return nil, p.err
	}
	if err := c.validate(fam); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) parse(p *parser, fam family) {
	c.Architectures = p.strList("architectures")
	c.Hidden = p.reqInt("hidden_size")
	c.Layers = p.reqInt("num_hidden_layers")
	c.Vocab = p.reqInt("vocab_size")
	c.Heads = p.reqInt("num_attention_heads")
	c.KVHeads = p.int("num_key_value_heads", c.Heads)
	c.MaxPositions = p.int("max_position_embeddings", 0)

	c.Experts = p.alias(fam.expertKeys)
	c.TopK = p.reqInt("num_experts_per_tok")
	c.ExpertIntermediate = p.reqInt(fam.interKey)
	if fam.denseKey != "" {
		c.DenseIntermediate = p.int(fam.denseKey, 0)
	}

	c.Scoring, c.NormTopK, c.RoutedScaling = fam.scoring, fam.norm, 1
	if fam.normFixed {
		c.NormTopK = true
	} else {
		c.NormTopK = p.bool("norm_topk_prob", fam.norm)
	}
	c.MoEFreq, c.SparseStep = 1, 1
	if fam.qwen {
		c.SparseStep = p.int("decoder_sparse_step", 1)
		c.MLPOnly = p.intList("mlp_only_layers")
		if c.Arch == "qwen2_moe" {
			c.SharedIntermediate = p.int("shared_expert_intermediate_size", 0)
			c.SharedGate = c.SharedIntermediate > 0
			if c.SharedGate {
				c.SharedExperts = 1
			}
		}
	}
	if fam.deepseek {
		c.Scoring = strings.ToLower(p.str("scoring_func", fam.scoring))
		c.TopKMethod = p.str("topk_method", fam.topk)
		c.Groups = p.int("n_group", 0)
		c.TopKGroups = p.int("topk_group", 0)
		c.RoutedScaling = float32(p.float("routed_scaling_factor", 1))
		c.FirstDense = p.int("first_k_dense_replace", 0)
		c.MoEFreq = p.int("moe_layer_freq", 1)
		c.SharedExperts = p.int("n_shared_experts", fam.shared)
		if c.SharedExperts > 0 && c.SharedExperts <= maxExperts && c.ExpertIntermediate <= maxDim {
			c.SharedIntermediate = c.ExpertIntermediate * c.SharedExperts
		}
	}
	c.HeadDim = p.int("head_dim", 0)
	if fam.mla {
		// transformers' DeepseekV2/V3Config defaults; q_lora_rank null selects q_proj.
		c.QLoraRank = p.int("q_lora_rank", 1536)
		if p.isNull("q_lora_rank") {
			c.QLoraRank = 0
		}
		c.KVLoraRank = p.int("kv_lora_rank", 512)
		c.QKNopeHeadDim = p.int("qk_nope_head_dim", 128)
		c.QKRopeHeadDim = p.int("qk_rope_head_dim", 64)
		c.VHeadDim = p.int("v_head_dim", 128)
		if c.HeadDim == 0 {
			c.HeadDim = c.QKNopeHeadDim + c.QKRopeHeadDim
		}
	}
	if fam.v4 {
		c.QLoraRank = p.int("q_lora_rank", 1024)
		c.QKRopeHeadDim = p.int("qk_rope_head_dim", 64)
		if c.HeadDim == 0 {
			c.HeadDim = 512
		}
		c.SwiGLULimit = float32(p.float("swiglu_limit", 0))
		c.HashLayers = c.hashLayers(p)
	}
	if c.HeadDim == 0 && c.Heads > 0 {
		if c.Hidden%c.Heads != 0 {
			p.fail(fmt.Errorf("%w: no head_dim and hidden_size %d is not a multiple of num_attention_heads %d",
				ErrConfig, c.Hidden, c.Heads))
		}
		c.HeadDim = c.Hidden / c.Heads
	}

	c.RMSEps = p.float("rms_norm_eps", fam.eps)
	c.RopeTheta = c.ropeTheta(p)
	c.TieEmbeddings = p.bool("tie_word_embeddings", false)
	c.TorchDType = p.str("torch_dtype", "")
	if c.TorchDType == "" {
		c.TorchDType = p.str("dtype", "") // transformers v5
	}
	c.BOS = p.int("bos_token_id", -1)
	c.EOS = p.intOrList("eos_token_id")
	c.Quant = p.quant("quantization_config")
	if act := p.str("hidden_act", "silu"); act != "silu" && p.err == nil {
		p.fail(fmt.Errorf("%w: hidden_act %q (the expert FFN is SwiGLU: silu only)", ErrUnsupported, act))
	}
}

// hashLayers reads num_hash_layers (alias n_hash_layers), or counts the leading
// "hash_moe" entries of v5 mlp_layer_types; transformers' default is 3.
func (c *Config) hashLayers(p *parser) int {
	if p.has("num_hash_layers") || p.has("n_hash_layers") {
		return p.alias([]string{"num_hash_layers", "n_hash_layers"})
	}
	types := p.strList("mlp_layer_types")
	if types == nil {
		return 3
	}
	n := 0
	for n < len(types) && types[n] == "hash_moe" {
		n++
	}
	for i, t := range types {
		if (t != "hash_moe" && t != "moe") || (i >= n && t == "hash_moe") {
			p.fail(fmt.Errorf("%w: mlp_layer_types[%d] = %q (want leading \"hash_moe\" then \"moe\")", ErrUnsupported, i, t))
		}
	}
	return n
}

// ropeTheta: top-level rope_theta, else v5 rope_parameters.rope_theta, else V4's nested
// rope_parameters.main.rope_theta; 10000 (the transformers default) when absent.
func (c *Config) ropeTheta(p *parser) float64 {
	if p.has("rope_theta") {
		return p.float("rope_theta", 0)
	}
	var rp map[string]json.RawMessage
	if ok, err := c.Lookup("rope_parameters", &rp); err != nil || !ok {
		p.fail(err)
		return 10000
	}
	sub := &parser{raw: rp, prefix: "rope_parameters."}
	if !sub.has("rope_theta") {
		var main map[string]json.RawMessage
		if m, ok := rp["main"]; ok && json.Unmarshal(m, &main) == nil && main != nil {
			sub = &parser{raw: main, prefix: "rope_parameters.main."}
		}
	}
	v := sub.float("rope_theta", 10000)
	p.fail(sub.err)
	return v
}

func (c *Config) validate(fam family) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, a...)...)
	}
	for _, d := range []struct {
		key       string
		v, lo, hi int
	}{
		{"hidden_size", c.Hidden, 1, maxDim},
		{"num_hidden_layers", c.Layers, 1, maxLayers},
		{"vocab_size", c.Vocab, 1, maxVocab},
		{"num_attention_heads", c.Heads, 1, maxDim},
		{"num_key_value_heads", c.KVHeads, 1, c.Heads},
		{"head_dim", c.HeadDim, 1, maxDim},
		{fam.expertKeys[0], c.Experts, 1, maxExperts},
		{"num_experts_per_tok", c.TopK, 1, c.Experts},
		{fam.interKey, c.ExpertIntermediate, 1, maxDim},
		{"dense intermediate_size", c.DenseIntermediate, 0, maxDim},
		{"shared expert width", c.SharedIntermediate, 0, maxDim},
		{"n_shared_experts", c.SharedExperts, 0, maxExperts},
		{"n_group", c.Groups, 0, maxExperts},
		{"topk_group", c.TopKGroups, 0, maxExperts},
		{"first_k_dense_replace", c.FirstDense, 0, maxLayers},
		{"moe_layer_freq", c.MoEFreq, 1, maxLayers},
		{"decoder_sparse_step", c.SparseStep, 1, maxLayers},
		{"num_hash_layers", c.HashLayers, 0, c.Layers},
		{"max_position_embeddings", c.MaxPositions, 0, math.MaxInt32},
		{"bos_token_id", c.BOS, -1, maxVocab},
	} {
		if d.v < d.lo || d.v > d.hi {
			return bad("%s = %d, want %d..%d", d.key, d.v, d.lo, d.hi)
		}
	}
	if c.Heads%c.KVHeads != 0 {
		return bad("num_attention_heads %d is not a multiple of num_key_value_heads %d", c.Heads, c.KVHeads)
	}
	if len(c.MLPOnly) > maxLayers {
		return bad("mlp_only_layers lists %d layers", len(c.MLPOnly))
	}
	for _, l := range c.MLPOnly {
		if l < 0 {
			return bad("mlp_only_layers holds %d", l)
		}
	}
	for _, e := range c.EOS {
		if e < 0 || e > maxVocab {
			return bad("eos_token_id %d", e)
		}
	}
	for _, f := range []struct {
		key string
		v   float64
		pos bool // must be > 0 (else ≥ 0)
	}{
		{"rms_norm_eps", c.RMSEps, true}, {"rope_theta", c.RopeTheta, true},
		{"routed_scaling_factor", float64(c.RoutedScaling), true}, {"swiglu_limit", float64(c.SwiGLULimit), false},
	} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) || f.v < 0 || (f.pos && f.v == 0) {
			return bad("%s = %v", f.key, f.v)
		}
	}
	switch c.Scoring {
	case "softmax", "sigmoid", "sqrtsoftplus", "topk_softmax":
	default:
		return fmt.Errorf("%w: scoring_func %q (supported: softmax, sigmoid, sqrtsoftplus)", ErrUnsupported, c.Scoring)
	}
	switch c.TopKMethod {
	case "", "greedy":
	case "group_limited_greedy", "noaux_tc":
		if c.Groups > 1 {
			per := c.Experts / c.Groups
			switch {
			case c.Experts%c.Groups != 0:
				return bad("n_group %d does not divide %d experts", c.Groups, c.Experts)
			case c.TopKGroups < 1 || c.TopKGroups > c.Groups:
				return bad("topk_group %d of n_group %d", c.TopKGroups, c.Groups)
			case c.TopK > c.TopKGroups*per:
				return bad("num_experts_per_tok %d exceeds the %d experts of topk_group %d groups", c.TopK, c.TopKGroups*per, c.TopKGroups)
			case c.TopKMethod == "noaux_tc" && per < 2:
				return bad("noaux_tc scores groups by their top 2 experts; %d groups of %d experts", c.Groups, per)
			}
		}
	default:
		return fmt.Errorf("%w: topk_method %q (supported: greedy, group_limited_greedy, noaux_tc)", ErrUnsupported, c.TopKMethod)
	}
	if c.Quant != nil {
		for _, b := range c.Quant.BlockSize {
			if b <= 0 {
				return bad("quantization_config.weight_block_size %v", c.Quant.BlockSize)
			}
		}
	}
	moe := c.MoELayers()
	if len(moe) == 0 {
		return bad("no layer of %d is a MoE layer", c.Layers)
	}
	if len(moe) < c.Layers && c.DenseIntermediate == 0 {
		return bad("%d dense layers but no %s", c.Layers-len(moe), fam.denseKeyOr())
	}
	return nil
}

func (f family) denseKeyOr() string {
	if f.denseKey == "" {
		return "dense MLP size"
	}
	return f.denseKey
}

// IsMoELayer reports whether layer i has routed experts, by the family's rule:
// Qwen: i ∉ mlp_only_layers and (i+1) % decoder_sparse_step == 0; DeepSeek:
// i ≥ first_k_dense_replace and i % moe_layer_freq == 0; Mixtral, OLMoE, Granite and
// DeepSeek-V4: every layer. Layers outside [0, Layers) (MTP) are not.
func (c *Config) IsMoELayer(i int) bool {
	if i < 0 || i >= c.Layers || i < c.FirstDense || slices.Contains(c.MLPOnly, i) {
		return false
	}
	if c.SparseStep > 1 && (i+1)%c.SparseStep != 0 {
		return false
	}
	return c.MoEFreq <= 1 || i%c.MoEFreq == 0
}

// MoELayers lists the MoE layers in order.
func (c *Config) MoELayers() []int {
	var out []int
	for i := 0; i < c.Layers; i++ {
		if c.IsMoELayer(i) {
			out = append(out, i)
		}
	}
	return out
}

// IsHashLayer reports whether MoE layer i routes by token id (DeepSeek-V4 tid2eid).
func (c *Config) IsHashLayer(i int) bool { return i < c.HashLayers && c.IsMoELayer(i) }

// HasSharedExpert reports whether MoE layers add an always-on shared MLP.
func (c *Config) HasSharedExpert() bool { return c.SharedIntermediate > 0 }

// GateSpec is the family's routing rule (models.md §3). Bias and Hash are left nil: they
// are per-layer tensors the loader fills in.
func (c *Config) GateSpec() GateSpec {
	g := GateSpec{Experts: c.Experts, TopK: c.TopK, Renormalize: c.NormTopK, Scale: c.RoutedScaling}
	switch c.Scoring {
	case "sigmoid":
		g.Scoring = Sigmoid
	case "sqrtsoftplus":
		g.Scoring = SqrtSoftplus
	case "topk_softmax":
		g.Scoring = TopKSoftmax
	default:
		g.Scoring = Softmax
	}
	if c.Groups > 1 {
		switch c.TopKMethod {
		case "group_limited_greedy":
			g.Groups, g.TopKGroups, g.GroupScore = c.Groups, c.TopKGroups, GroupMax
		case "noaux_tc":
			g.Groups, g.TopKGroups, g.GroupScore = c.Groups, c.TopKGroups, GroupTop2Sum
		}
	}
	return g
}

// Lookup decodes config key into dst (any encoding/json target). It reports false when
// the key is absent or null; a value of the wrong type is an error naming the key.
func (c *Config) Lookup(key string, dst any) (bool, error) {
	v, ok := c.Raw[key]
	if !ok || isNull(v) {
		return false, nil
	}
	if err := json.Unmarshal(v, dst); err != nil {
		return false, fmt.Errorf("%w: %s: %s", ErrConfig, key, typeError(v, err))
	}
	return true, nil
}

// parser reads typed keys from a JSON object, keeping the first error.
type parser struct {
	raw    map[string]json.RawMessage
	prefix string // for nested objects in error messages
	err    error
}

func (p *parser) fail(err error) {
	if p.err == nil && err != nil {
		p.err = err
	}
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

// has reports whether key is present and not null.
func (p *parser) has(key string) bool { v, ok := p.raw[key]; return ok && !isNull(v) }

func (p *parser) isNull(key string) bool { v, ok := p.raw[key]; return ok && isNull(v) }

func (p *parser) wrongType(key, want string) {
	p.fail(fmt.Errorf("%w: %s%s: want %s, got %s", ErrConfig, p.prefix, key, want, describeJSON(p.raw[key])))
}

// int reads an integer key (an integral float such as 2048.0 is accepted), def when
// absent or null.
func (p *parser) int(key string, def int) int {
	if !p.has(key) {
		return def
	}
	v, ok := jsonInt(p.raw[key])
	if !ok {
		p.wrongType(key, "an integer")
		return def
	}
	return v
}

func jsonInt(raw json.RawMessage) (int, bool) {
	var n json.Number
	if json.Unmarshal(raw, &n) != nil || bytes.HasPrefix(bytes.TrimSpace(raw), []byte(`"`)) {
		return 0, false
	}
	if i, err := strconv.ParseInt(n.String(), 10, 64); err == nil {
		return int(max(min(i, math.MaxInt32), math.MinInt32)), true
	}
	f, err := strconv.ParseFloat(n.String(), 64)
	if err != nil || f != math.Trunc(f) {
		return 0, false
	}
	// Clamped: range checks happen in validate, and int32 bounds keep products of two
	// sizes from overflowing on 64-bit ints.
	return int(max(min(f, math.MaxInt32), math.MinInt32)), true
}

func (p *parser) reqInt(key string) int {
	if !p.has(key) {
		p.fail(fmt.Errorf("%w: missing required key %s%s", ErrConfig, p.prefix, key))
		return 0
	}
	return p.int(key, 0)
}

// alias reads the first present of keys (all present ones must agree).
func (p *parser) alias(keys []string) int {
	found, val := "", 0
	for _, k := range keys {
		if !p.has(k) {
			continue
		}
		v := p.int(k, 0)
		if found == "" {
			found, val = k, v
		} else if v != val {
			p.fail(fmt.Errorf("%w: %s = %d but %s = %d", ErrConfig, found, val, k, v))
		}
	}
	if found == "" {
		p.fail(fmt.Errorf("%w: missing required key %s (or %s)", ErrConfig, keys[0], strings.Join(keys[1:], ", ")))
	}
	return val
}

func (p *parser) float(key string, def float64) float64 {
	if !p.has(key) {
		return def
	}
	var f float64
	if err := json.Unmarshal(p.raw[key], &f); err != nil {
		p.wrongType(key, "a number")
		return def
	}
	return f
}

func (p *parser) bool(key string, def bool) bool {
	if !p.has(key) {
		return def
	}
	var b bool
	if err := json.Unmarshal(p.raw[key], &b); err != nil {
		p.wrongType(key, "true or false")
		return def
	}
	return b
}

func (p *parser) str(key, def string) string {
	if !p.has(key) {
		return def
	}
	var s string
	if err := json.Unmarshal(p.raw[key], &s); err != nil {
		p.wrongType(key, "a string")
		return def
	}
	return s
}

func (p *parser) strList(key string) []string {
	if !p.has(key) {
		return nil
	}
	var s []string
	if err := json.Unmarshal(p.raw[key], &s); err != nil {
		p.wrongType(key, "a list of strings")
		return nil
	}
	return s
}

func (p *parser) intList(key string) []int {
	if !p.has(key) {
		return nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(p.raw[key], &items); err != nil {
		p.wrongType(key, "a list of integers")
		return nil
	}
	out := make([]int, 0, len(items))
	for _, it := range items {
		v, ok := jsonInt(it)
		if !ok {
			p.wrongType(key, "a list of integers")
			return nil
		}
		out = append(out, v)
	}
	return out
}

// intOrList reads an integer or a list of integers (eos_token_id).
func (p *parser) intOrList(key string) []int {
	if !p.has(key) {
		return nil
	}
	if v, ok := jsonInt(p.raw[key]); ok {
		return []int{v}
	}
	sub := &parser{raw: p.raw, prefix: p.prefix}
	out := sub.intList(key)
	if sub.err != nil { // name the union type, not just the list reading
		p.wrongType(key, "an integer or a list of integers")
	}
	return out
}

func (p *parser) quant(key string) *Quantization {
	if !p.has(key) {
		return nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(p.raw[key], &m); err != nil {
		p.wrongType(key, "an object")
		return nil
	}
	sub := &parser{raw: m, prefix: key + "."}
	q := &Quantization{
		Method:           sub.str("quant_method", ""),
		Fmt:              sub.str("fmt", ""),
		BlockSize:        sub.intList("weight_block_size"),
		ActivationScheme: sub.str("activation_scheme", ""),
		Raw:              p.raw[key],
	}
	p.fail(sub.err)
	return q
}

// describeJSON names a JSON value's type (and a short excerpt) for error messages.
func describeJSON(v json.RawMessage) string {
	s := strings.TrimSpace(string(v))
	excerpt := s
	if r := []rune(excerpt); len(r) > 30 {
		excerpt = string(r[:30]) + "…"
	}
	switch {
	case s == "":
		return "nothing"
	case s == "null":
		return "null"
	case s == "true" || s == "false":
		return "a boolean (" + s + ")"
	case s[0] == '"':
		return "a string (" + excerpt + ")"
	case s[0] == '{':
		return "an object"
	case s[0] == '[':
		return "a list (" + excerpt + ")"
	}
	return "the number " + excerpt
}

func typeError(v json.RawMessage, err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("want %s, got %s", te.Type, describeJSON(v))
	}
	return err.Error()
}
