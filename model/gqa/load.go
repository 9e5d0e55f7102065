package gqa

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/nn"
	"github.com/moemesh/moemesh/model/safetensors"
)

// Arches are the model_type values this package runs.
var Arches = []string{"granitemoe", "mixtral", "olmoe", "qwen2_moe", "qwen3_moe"}

// qkNorm is where a family normalises q and k before RoPE.
type qkNorm uint8

const (
	qkNone    qkNorm = iota
	qkPerHead        // Qwen3: RMSNorm over each head_dim slice, weight [head_dim]
	qkWhole          // OLMoE: RMSNorm over the whole projected vector, weight [heads·head_dim]
)

// attention is one layer's attention weights.
type attention struct {
	q, k, v, o   *nn.Linear
	qNorm, kNorm []float32
}

// layer is one decoder layer: exactly one of moe and dense is set.
type layer struct {
	inNorm, postNorm []float32
	attn             attention
	moe              *model.MoELayer
	dense            *model.ExpertSet // dense SwiGLU MLP held as the set's only "expert"
}

// params are the per-family scalars of the forward pass.
type params struct {
	eps        float32
	qk         qkNorm
	clip       float32 // OLMoE clip_qkv; 0: none
	embMul     float32 // Granite embedding_multiplier; 1 elsewhere
	resMul     float32 // Granite residual_multiplier; 1 elsewhere
	logitDiv   float32 // Granite logits_scaling; 1 elsewhere
	attn       nn.AttnConfig
	qkvBias    bool // q/k/v projections carry a bias
	oBias      bool // o_proj carries a bias (attention_bias: true outside Qwen2-MoE)
	ropeConfig nn.RopeConfig
}

// familyParams reads the scalars a family needs from cfg, rejecting what is unsupported.
func familyParams(cfg *model.Config) (params, error) {
	if !slices.Contains(Arches, cfg.Arch) {
		return params{}, fmt.Errorf("%w: gqa runs %v, not %q", model.ErrUnsupported, Arches, cfg.Arch)
	}
	hd := cfg.HeadDim
	p := params{
		eps: float32(cfg.RMSEps), embMul: 1, resMul: 1, logitDiv: 1,
		attn: nn.AttnConfig{Heads: cfg.Heads, KVHeads: cfg.KVHeads, QKDim: hd, VDim: hd,
			Scale: float32(1 / math.Sqrt(float64(hd)))},
	}
	getF := func(key string, dst *float32, def float64) error {
		var v float64
		ok, err := cfg.Lookup(key, &v)
		if err != nil {
			return err
		}
		if !ok {
			v = def
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%w: %s = %v", model.ErrConfig, key, v)
		}
		*dst = float32(v)
		return nil
	}
	var bias bool
	if _, err := cfg.Lookup("attention_bias", &bias); err != nil {
		return params{}, err
	}
	p.qkvBias, p.oBias = bias, bias
	switch cfg.Arch {
	case "qwen3_moe":
		p.qk = qkPerHead
	case "qwen2_moe":
		// Qwen1.5-MoE's q/k/v always carry a bias and o_proj never does (no config key).
		p.qkvBias, p.oBias = true, false
	case "olmoe":
		p.qk = qkWhole
		if err := getF("clip_qkv", &p.clip, 0); err != nil {
			return params{}, err
		}
		if p.clip < 0 {
			return params{}, fmt.Errorf("%w: clip_qkv = %v", model.ErrConfig, p.clip)
		}
	case "granitemoe":
		// transformers' GraniteMoeConfig defaults are all 1.0.
		for _, f := range []struct {
			key string
			dst *float32
		}{{"embedding_multiplier", &p.embMul}, {"residual_multiplier", &p.resMul},
			{"logits_scaling", &p.logitDiv}, {"attention_multiplier", &p.attn.Scale}} {
			if err := getF(f.key, f.dst, 1); err != nil {
				return params{}, err
			}
		}
		if p.logitDiv == 0 {
			return params{}, fmt.Errorf("%w: logits_scaling = 0", model.ErrConfig)
		}
	}
	if err := slidingWindow(cfg, &p.attn); err != nil {
		return params{}, err
	}
	sc, err := cfg.RopeScaling(nn.ScalingLinear)
	if err != nil {
		return params{}, err
	}
	p.ropeConfig = nn.RopeConfig{Dim: hd, Theta: cfg.RopeTheta, Scaling: sc, Style: nn.RopeHalf}
	return p, nil
}

// slidingWindow: Mixtral's sliding_window applies to every layer; Qwen's only with
// use_sliding_window and a per-layer max_window_layers rule we do not implement.
func slidingWindow(cfg *model.Config, a *nn.AttnConfig) error {
	switch cfg.Arch {
	case "mixtral":
		var w int
		if _, err := cfg.Lookup("sliding_window", &w); err != nil {
			return err
		}
		if w < 0 {
			return fmt.Errorf("%w: sliding_window = %d", model.ErrConfig, w)
		}
		a.Window = w
	case "qwen2_moe", "qwen3_moe":
		var use bool
		if _, err := cfg.Lookup("use_sliding_window", &use); err != nil {
			return err
		}
		if use {
			return fmt.Errorf("%w: %s with use_sliding_window", model.ErrUnsupported, cfg.Arch)
		}
	}
	return nil
}

// Load builds the dense side of a gqa-family model from ck onto card: attention and
// lm_head weights in their checkpoint dtype (FP8 and other dtypes widened to bf16), norms
// f32 on the host, MoE gates and shared experts via model.LoadMoELayer, dense MLP layers
// (mlp_only_layers, decoder_sparse_step) as a one-expert ExpertSet. Routed experts are not
// loaded: Forward reaches them through a model.Experts. On error nothing stays on card.
func Load(ck *safetensors.Checkpoint, cfg *model.Config, card ascend.Card) (_ *Model, err error) {
	if ck == nil || cfg == nil || card == nil {
		return nil, fmt.Errorf("%w: gqa.Load needs a checkpoint, a config and a card", model.ErrConfig)
	}
	p, err := familyParams(cfg)
	if err != nil {
		return nil, err
	}
	rope, err := nn.NewRope(p.ropeConfig)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", model.ErrConfig, err)
	}
	m := &Model{cfg: cfg, card: card, p: p, rope: rope}
	l := model.NewLoader(ck, card)
	defer func() {
		if err != nil {
			err = errors.Join(err, m.Close(), l.Free())
		}
	}()
	H, hd := cfg.Hidden, cfg.HeadDim
	qw, kvw := cfg.Heads*hd, cfg.KVHeads*hd
	if m.embed, err = l.Embedding(cfg.Vocab, H); err != nil {
		return nil, err
	}
	if m.finalNorm, err = l.Vec("model.norm.weight", H); err != nil {
		return nil, err
	}
	head := "lm_head."
	if cfg.TieEmbeddings {
		head = "model.embed_tokens."
	}
	if m.lmHead, err = l.Linear(head, cfg.Vocab, H, false); err != nil {
		return nil, err
	}
	m.layers = make([]layer, 0, cfg.Layers)
	for i := 0; i < cfg.Layers; i++ {
		pre := fmt.Sprintf("model.layers.%d.", i)
		var ly layer
		// Appended first so Close finds whatever part of the layer loaded.
		m.layers = append(m.layers, ly)
		lp := &m.layers[i]
		if lp.inNorm, err = l.Vec(pre+"input_layernorm.weight", H); err != nil {
			return nil, err
		}
		if lp.postNorm, err = l.Vec(pre+"post_attention_layernorm.weight", H); err != nil {
			return nil, err
		}
		a := &lp.attn
		sa := pre + "self_attn."
		if a.q, err = l.Linear(sa+"q_proj.", qw, H, p.qkvBias); err != nil {
			return nil, err
		}
		if a.k, err = l.Linear(sa+"k_proj.", kvw, H, p.qkvBias); err != nil {
			return nil, err
		}
		if a.v, err = l.Linear(sa+"v_proj.", kvw, H, p.qkvBias); err != nil {
			return nil, err
		}
		if a.o, err = l.Linear(sa+"o_proj.", H, qw, p.oBias); err != nil {
			return nil, err
		}
		switch p.qk {
		case qkPerHead:
			if a.qNorm, err = l.Vec(sa+"q_norm.weight", hd); err == nil {
				a.kNorm, err = l.Vec(sa+"k_norm.weight", hd)
			}
		case qkWhole:
			if a.qNorm, err = l.Vec(sa+"q_norm.weight", qw); err == nil {
				a.kNorm, err = l.Vec(sa+"k_norm.weight", kvw)
			}
		}
		if err != nil {
			return nil, err
		}
		if cfg.IsMoELayer(i) {
			if lp.moe, err = model.LoadMoELayer(ck, cfg, i, card); err != nil {
				return nil, err
			}
		} else if lp.dense, err = l.DenseMLP(cfg, i); err != nil {
			return nil, err
		}
	}
	m.bufs = l.Buffers()
	return m, nil
}
