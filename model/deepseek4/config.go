package deepseek4

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/nn"
)

// ErrConfig is model.ErrConfig, the sentinel every config problem found here wraps.
var ErrConfig = model.ErrConfig

// Attention kinds of a layer, chosen by its compress ratio (model.py Attention.__init__).
const (
	KindWindow = "sliding_attention"            // ratio 0: the 128-token raw window only
	KindCSA    = "compressed_sparse_attention"  // ratio 4: overlapping pooling + lightning indexer
	KindHCA    = "heavily_compressed_attention" // ratio 128 (any other >1): pooling, all rows
)

// Config is a V4 config.json: the shared fields (model.Config) plus the V4-only keys.
// Field comments name the config.json key and, in brackets, model.py's ModelArgs name.
type Config struct {
	*model.Config

	RopeDim   int // qk_rope_head_dim [rope_head_dim]: the rotated tail of each 512-dim head
	OLoraRank int // o_lora_rank
	OGroups   int // o_groups: heads per output group = Heads/OGroups
	Window    int // sliding_window [window_size]

	// CompressRatios has one entry per layer, MTP layers included when the config lists
	// them (Flash: 43 layers + 1 MTP = 44 entries); see Ratio.
	CompressRatios    []int
	CompressRopeTheta float64 // compress_rope_theta: RoPE base of compressed layers

	// YaRN of compressed layers (rope_scaling): Factor [rope_factor], OriginalLen
	// [original_seq_len] (0: no YaRN anywhere), BetaFast, BetaSlow.
	YaRNFactor, YaRNBetaFast, YaRNBetaSlow float64
	YaRNOriginalLen                        int

	IndexHeads, IndexHeadDim, IndexTopK int // index_n_heads, index_head_dim, index_topk

	HCMult  int     // hc_mult: parallel residual streams
	HCIters int     // hc_sinkhorn_iters
	HCEps   float64 // hc_eps

	MTPLayers   int    // num_nextn_predict_layers [n_mtp_layers]; ignored for inference
	ExpertDType string // expert_dtype: "fp4" (MXFP4 experts), "fp8", or "" (as the linears)
}

// Load reads dir/config.json.
func Load(dir string) (*Config, error) {
	base, err := model.LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	c, err := FromModel(base)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "config.json"), err)
	}
	return c, nil
}

// Parse parses config.json bytes.
func Parse(data []byte) (*Config, error) {
	base, err := model.ParseConfig(data)
	if err != nil {
		return nil, err
	}
	return FromModel(base)
}

// FromModel reads the V4 keys of an already parsed config. It accepts both spellings
// transformers has used: the release config (compress_ratios, rope_scaling,
// num_hash_layers) and the v5 one (layer_types + compress_rates, rope_parameters
// {main, compress}, partial_rotary_factor, mlp_layer_types).
func FromModel(base *model.Config) (*Config, error) {
	if base.Arch != "deepseek_v4" {
		return nil, fmt.Errorf("%w: model_type %q is not deepseek_v4", ErrConfig, base.Arch)
	}
	c := &Config{Config: base, RopeDim: base.QKRopeHeadDim, HCMult: 4, HCIters: 20, HCEps: 1e-6,
		Window: 128, OGroups: 8, OLoraRank: 1024, IndexHeads: 64, IndexHeadDim: 128, IndexTopK: 512,
		CompressRopeTheta: 160000, MTPLayers: 1}
	var errs []error
	get := func(key string, dst any) bool {
		ok, err := base.Lookup(key, dst)
		errs = append(errs, err)
		return ok
	}
	get("o_lora_rank", &c.OLoraRank)
	get("o_groups", &c.OGroups)
	get("sliding_window", &c.Window)
	get("index_n_heads", &c.IndexHeads)
	get("index_head_dim", &c.IndexHeadDim)
	get("index_topk", &c.IndexTopK)
	get("hc_mult", &c.HCMult)
	get("hc_sinkhorn_iters", &c.HCIters)
	get("hc_eps", &c.HCEps)
	get("num_nextn_predict_layers", &c.MTPLayers)
	get("compress_rope_theta", &c.CompressRopeTheta)
	get("expert_dtype", &c.ExpertDType)
	var prf float64
	if _, explicit := base.Raw["qk_rope_head_dim"]; get("partial_rotary_factor", &prf) && !explicit {
		c.RopeDim = int(math.Round(prf * float64(base.HeadDim)))
	}
	if !get("compress_ratios", &c.CompressRatios) {
		errs = append(errs, c.ratiosFromLayerTypes())
	}
	errs = append(errs, c.readYaRN())
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%w: deepseek_v4: %w", ErrConfig, err)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// ratesDefault are transformers' compress_rates defaults per layer type.
var ratesDefault = map[string]int{KindWindow: 0, KindCSA: 4, KindHCA: 128}

// ratiosFromLayerTypes reads the v5 spelling: layer_types names each layer's kind and
// compress_rates (optional) maps kinds to ratios.
func (c *Config) ratiosFromLayerTypes() error {
	var types []string
	ok, err := c.Lookup("layer_types", &types)
	if err != nil || !ok {
		return err // neither spelling: validate reports the missing key
	}
	rates := map[string]int{}
	for k, v := range ratesDefault {
		rates[k] = v
	}
	var over map[string]int
	if _, err := c.Lookup("compress_rates", &over); err != nil {
		return err
	}
	for k, v := range over {
		rates[k] = v
	}
	c.CompressRatios = make([]int, len(types))
	for i, t := range types {
		r, ok := rates[t]
		if !ok {
			return fmt.Errorf("layer_types[%d] = %q (want %s, %s or %s)", i, t, KindWindow, KindCSA, KindHCA)
		}
		c.CompressRatios[i] = r
	}
	return nil
}

// readYaRN reads rope_scaling (release configs) or rope_parameters.compress (v5).
func (c *Config) readYaRN() error {
	var rs map[string]any
	ok, err := c.Lookup("rope_scaling", &rs)
	if err != nil {
		return err
	}
	if !ok {
		var rp map[string]map[string]any
		if ok, _ := c.Lookup("rope_parameters", &rp); ok && rp["compress"] != nil {
			rs = rp["compress"]
			if th, isNum := rs["rope_theta"].(float64); isNum {
				c.CompressRopeTheta = th
			}
		}
	}
	typ, _ := rs["rope_type"].(string)
	if typ == "" {
		typ, _ = rs["type"].(string)
	}
	switch typ {
	case "", "default":
		return nil
	case "yarn":
	default:
		return fmt.Errorf("rope_scaling type %q (deepseek_v4 uses yarn)", typ)
	}
	num := func(key string, def float64) float64 {
		if v, isNum := rs[key].(float64); isNum {
			return v
		}
		return def
	}
	c.YaRNFactor = num("factor", 1)
	c.YaRNOriginalLen = int(num("original_max_position_embeddings", 0))
	c.YaRNBetaFast = num("beta_fast", 32)
	c.YaRNBetaSlow = num("beta_slow", 1)
	return nil
}

func (c *Config) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: deepseek_v4: "+format, append([]any{ErrConfig}, a...)...)
	}
	for _, d := range []struct {
		key   string
		v, lo int
	}{
		{"qk_rope_head_dim", c.RopeDim, 2}, {"o_lora_rank", c.OLoraRank, 1}, {"o_groups", c.OGroups, 1},
		{"sliding_window", c.Window, 1}, {"index_n_heads", c.IndexHeads, 1}, {"index_head_dim", c.IndexHeadDim, 2},
		{"index_topk", c.IndexTopK, 1}, {"hc_mult", c.HCMult, 1}, {"hc_sinkhorn_iters", c.HCIters, 1},
		{"num_nextn_predict_layers", c.MTPLayers, 0}, {"q_lora_rank", c.QLoraRank, 1},
	} {
		if d.v < d.lo || d.v > 1<<24 {
			return bad("%s = %d, want ≥ %d", d.key, d.v, d.lo)
		}
	}
	switch {
	case c.RopeDim%2 != 0 || c.RopeDim >= c.HeadDim:
		return bad("qk_rope_head_dim %d must be even and below head_dim %d", c.RopeDim, c.HeadDim)
	case c.IndexHeadDim < c.RopeDim:
		return bad("index_head_dim %d is below qk_rope_head_dim %d (the indexer rotates its last %d dims)", c.IndexHeadDim, c.RopeDim, c.RopeDim)
	case c.Heads%c.OGroups != 0:
		return bad("num_attention_heads %d is not a multiple of o_groups %d", c.Heads, c.OGroups)
	case c.KVHeads != 1:
		return bad("num_key_value_heads %d (V4 attention has one shared K=V head)", c.KVHeads)
	case c.SharedExperts != 1:
		return bad("n_shared_experts %d (the reference asserts exactly 1)", c.SharedExperts)
	case c.Groups > 1:
		return bad("n_group %d: V4 routing has no expert groups", c.Groups)
	case math.IsNaN(c.HCEps) || c.HCEps < 0 || math.IsInf(c.HCEps, 0):
		return bad("hc_eps = %v", c.HCEps)
	case !(c.CompressRopeTheta > 0) || math.IsInf(c.CompressRopeTheta, 0):
		return bad("compress_rope_theta = %v", c.CompressRopeTheta)
	case c.YaRNOriginalLen < 0 || (c.YaRNOriginalLen > 0 && !(c.YaRNFactor >= 1)):
		return bad("rope_scaling: factor %v, original_max_position_embeddings %d", c.YaRNFactor, c.YaRNOriginalLen)
	case c.CompressRatios == nil:
		return bad("no compress_ratios (nor layer_types): the attention kind of each layer is unknown")
	case len(c.CompressRatios) < c.Layers:
		return bad("compress_ratios has %d entries for %d layers", len(c.CompressRatios), c.Layers)
	}
	for i, r := range c.CompressRatios {
		if r < 0 || r == 1 || r > 1<<20 {
			return bad("compress_ratios[%d] = %d (want 0, or a window of ≥ 2 tokens)", i, r)
		}
	}
	switch c.ExpertDType {
	case "", "fp4", "fp8":
	default:
		return bad("expert_dtype %q (want fp4, fp8 or absent)", c.ExpertDType)
	}
	if c.ExpertDType == "fp4" && (c.Hidden%32 != 0 || c.ExpertIntermediate%32 != 0) {
		return bad("MXFP4 experts need hidden_size %d and moe_intermediate_size %d to be multiples of 32", c.Hidden, c.ExpertIntermediate)
	}
	return nil
}

// Ratio is layer i's compress ratio; layers past the list (MTP beyond what the config
// lists) are window-only.
func (c *Config) Ratio(i int) int {
	if i < 0 || i >= len(c.CompressRatios) {
		return 0
	}
	return c.CompressRatios[i]
}

// Kind is layer i's attention kind.
func (c *Config) Kind(i int) string {
	switch r := c.Ratio(i); {
	case r == 0:
		return KindWindow
	case r == 4:
		return KindCSA
	default:
		return KindHCA
	}
}

// HasIndexer reports whether layer i has a lightning indexer: model.py builds one exactly
// when the ratio is 4 (and uses overlapping windows exactly then, too).
func (c *Config) HasIndexer(i int) bool { return c.Ratio(i) == 4 }

// Rope is the rotary setting of layer i (model.py Attention.__init__): compressed layers
// use compress_rope_theta with YaRN; window-only layers rope_theta without YaRN
// (original_seq_len 0 disables the ramp). Neither scales cos/sin by a YaRN mscale.
type Rope struct {
	Theta       float64
	YaRN        bool
	Factor      float64
	OriginalLen int
	BetaFast    float64
	BetaSlow    float64
}

// LayerRope returns layer i's rotary setting.
func (c *Config) LayerRope(i int) Rope {
	if c.Ratio(i) == 0 {
		return Rope{Theta: c.RopeTheta}
	}
	return Rope{Theta: c.CompressRopeTheta, YaRN: c.YaRNOriginalLen > 0, Factor: c.YaRNFactor,
		OriginalLen: c.YaRNOriginalLen, BetaFast: c.YaRNBetaFast, BetaSlow: c.YaRNBetaSlow}
}

// RopeConfig is layer i's rotary embedding as model/nn builds it: adjacent pairs on the
// last qk_rope_head_dim dims (model.py apply_rotary_emb's complex view), the layer's theta,
// YaRN on compressed layers with the cos/sin multiplier pinned to 1 (nn would otherwise
// apply YaRN's 0.1·ln(factor)+1, which the reference never does). The layer's indexer and
// compressors share it.
func (c *Config) RopeConfig(i int) nn.RopeConfig {
	r := c.LayerRope(i)
	rc := nn.RopeConfig{Dim: c.RopeDim, Theta: r.Theta, Style: nn.RopeInterleaved}
	if r.YaRN {
		rc.Scaling = nn.RopeScaling{Kind: nn.ScalingYaRN, Factor: r.Factor, OriginalMaxPosition: r.OriginalLen,
			BetaFast: r.BetaFast, BetaSlow: r.BetaSlow, AttentionFactor: 1}
	}
	return rc
}

// SoftmaxScale is head_dim^−0.5 for every layer: unlike V2/V3, V4 applies no YaRN mscale
// to the attention logits (model.py Attention.softmax_scale).
func (c *Config) SoftmaxScale() float32 { return float32(1 / math.Sqrt(float64(c.HeadDim))) }

// MixWidth is (2+hc)·hc, the rows of hc_attn_fn/hc_ffn_fn: pre, post, then the hc×hc
// comb matrix.
func (c *Config) MixWidth() int { return (2 + c.HCMult) * c.HCMult }
