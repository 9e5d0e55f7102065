package deepseek

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
var Arches = []string{"deepseek_v2", "deepseek_v3"}

// attention is one layer's MLA weights (models.md §4).
type attention struct {
	qa     *nn.Linear // q_a_proj [q_lora, H]; nil when q_lora_rank is null
	qaNorm []float32  // q_a_layernorm [q_lora]
	qb     *nn.Linear // q_b_proj [heads·(nope+rope), q_lora]
	q      *nn.Linear // q_proj [heads·(nope+rope), H] when q_lora_rank is null
	kva    *nn.Linear // kv_a_proj_with_mqa [kv_lora+rope, H]
	kvNorm []float32  // kv_a_layernorm [kv_lora]
	kvb    *nn.Linear // kv_b_proj [heads·(nope+v), kv_lora]
	o      *nn.Linear // o_proj [H, heads·v]
}

func (a *attention) linears() []*nn.Linear {
	return []*nn.Linear{a.qa, a.qb, a.q, a.kva, a.kvb, a.o}
}

// layer is one decoder layer: exactly one of moe and dense is set.
type layer struct {
	inNorm, postNorm []float32
	attn             attention
	moe              *model.MoELayer
	dense            *model.ExpertSet // dense SwiGLU MLP held as the set's only "expert"
}

// params are the scalars of the forward pass, derived once from the config.
type params struct {
	eps                     float32
	heads                   int
	qLora, kvLora           int
	nope, rope, vDim, qkDim int
	attn                    nn.AttnConfig
	ropeConfig              nn.RopeConfig
}

// familyParams reads and checks what the forward pass needs from cfg.
func familyParams(cfg *model.Config) (params, error) {
	if !slices.Contains(Arches, cfg.Arch) {
		return params{}, fmt.Errorf("%w: deepseek runs %v, not %q", model.ErrUnsupported, Arches, cfg.Arch)
	}
	p := params{
		eps: float32(cfg.RMSEps), heads: cfg.Heads, qLora: cfg.QLoraRank, kvLora: cfg.KVLoraRank,
		nope: cfg.QKNopeHeadDim, rope: cfg.QKRopeHeadDim, vDim: cfg.VHeadDim,
	}
	p.qkDim = p.nope + p.rope
	// ParseConfig bounds hidden sizes but not these MLA splits; a zero or negative one
	// would otherwise surface as a panic in a kernel.
	for _, d := range []struct {
		key    string
		v, min int
	}{{"q_lora_rank", p.qLora, 0}, {"kv_lora_rank", p.kvLora, 1}, {"qk_nope_head_dim", p.nope, 0},
		{"qk_rope_head_dim", p.rope, 2}, {"v_head_dim", p.vDim, 1}} {
		if d.v < d.min || d.v > 1<<20 {
			return params{}, fmt.Errorf("%w: %s = %d", model.ErrConfig, d.key, d.v)
		}
	}
	if p.rope%2 != 0 {
		return params{}, fmt.Errorf("%w: qk_rope_head_dim %d is odd (rotated in pairs)", model.ErrConfig, p.rope)
	}
	if cfg.KVHeads != cfg.Heads {
		// MLA has no kv heads of its own: kv_b_proj expands one latent into every head.
		// HF writes num_key_value_heads = num_attention_heads; anything else is a
		// checkpoint we would misread.
		return params{}, fmt.Errorf("%w: num_key_value_heads %d ≠ num_attention_heads %d in MLA", model.ErrUnsupported, cfg.KVHeads, cfg.Heads)
	}
	sc, err := cfg.RopeScaling(nn.ScalingLinear, nn.ScalingYaRN)
	if err != nil {
		return params{}, err
	}
	scale := float32(1 / math.Sqrt(float64(p.qkDim)))
	if sc.Kind == nn.ScalingYaRN {
		// DeepSeek folds the YaRN mscale into the softmax scale (squared, because q and k
		// would each have carried it) when mscale_all_dim is set.
		scale = nn.SoftmaxScaleYaRN(p.qkDim, sc.Factor, sc.MscaleAllDim)
	}
	p.attn = nn.AttnConfig{Heads: cfg.Heads, KVHeads: cfg.Heads, QKDim: p.qkDim, VDim: p.vDim, Scale: scale}
	p.ropeConfig = nn.RopeConfig{Dim: p.rope, Theta: cfg.RopeTheta, Scaling: sc, Style: nn.RopeInterleaved}
	return p, nil
}

// mla loads layer i's attention weights.
func mla(l *model.Loader, cfg *model.Config, p *params, i int, a *attention) error {
	H := cfg.Hidden
	sa := fmt.Sprintf("model.layers.%d.self_attn.", i)
	qw := p.heads * p.qkDim
	var err error
	if p.qLora > 0 {
		if a.qa, err = l.Linear(sa+"q_a_proj.", p.qLora, H, false); err != nil {
			return err
		}
		if a.qaNorm, err = l.Vec(sa+"q_a_layernorm.weight", p.qLora); err != nil {
			return err
		}
		if a.qb, err = l.Linear(sa+"q_b_proj.", qw, p.qLora, false); err != nil {
			return err
		}
	} else if a.q, err = l.Linear(sa+"q_proj.", qw, H, false); err != nil {
		return err
	}
	if a.kva, err = l.Linear(sa+"kv_a_proj_with_mqa.", p.kvLora+p.rope, H, false); err != nil {
		return err
	}
	if a.kvNorm, err = l.Vec(sa+"kv_a_layernorm.weight", p.kvLora); err != nil {
		return err
	}
	if a.kvb, err = l.Linear(sa+"kv_b_proj.", p.heads*(p.nope+p.vDim), p.kvLora, false); err != nil {
		return err
	}
	a.o, err = l.Linear(sa+"o_proj.", H, p.heads*p.vDim, false)
	return err
}

// Load builds the dense side of a DeepSeek-V2/V3-architecture model from ck onto card:
// MLA and lm_head weights in their checkpoint dtype (FP8 and other dtypes widened to
// bf16), norms f32 on the host, MoE gates and shared experts via model.LoadMoELayer, the
// first_k_dense_replace dense MLPs as one-expert ExpertSets. Routed experts are not
// loaded: Forward reaches them through a model.Experts. On error nothing stays on card.
// Layers at index ≥ num_hidden_layers (the MTP layer) are never read.
func Load(ck *safetensors.Checkpoint, cfg *model.Config, card ascend.Card) (_ *Model, err error) {
	if ck == nil || cfg == nil || card == nil {
		return nil, fmt.Errorf("%w: deepseek.Load needs a checkpoint, a config and a card", model.ErrConfig)
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
	H := cfg.Hidden
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
		// Appended first so Close finds whatever part of the layer loaded.
		m.layers = append(m.layers, layer{})
		lp := &m.layers[i]
		if lp.inNorm, err = l.Vec(pre+"input_layernorm.weight", H); err != nil {
			return nil, err
		}
		if lp.postNorm, err = l.Vec(pre+"post_attention_layernorm.weight", H); err != nil {
			return nil, err
		}
		if err = mla(l, cfg, &p, i, &lp.attn); err != nil {
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
