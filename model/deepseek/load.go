package deepseek

import (
	"encoding/binary"
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
	sc, err := ropeScaling(cfg)
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

// ropeScaling reads rope_scaling (or v5 rope_parameters): none/default, linear or yarn
// with DeepSeek's mscale keys.
func ropeScaling(cfg *model.Config) (nn.RopeScaling, error) {
	var rs map[string]any
	key := "rope_scaling"
	ok, err := cfg.Lookup(key, &rs)
	if err != nil {
		return nn.RopeScaling{}, err
	}
	if !ok {
		key = "rope_parameters"
		if ok, err = cfg.Lookup(key, &rs); err != nil {
			return nn.RopeScaling{}, err
		}
	}
	if !ok {
		return nn.RopeScaling{}, nil
	}
	typ, _ := rs["rope_type"].(string)
	if typ == "" {
		typ, _ = rs["type"].(string)
	}
	num := func(name string, def float64) (float64, error) {
		v, present := rs[name]
		if !present || v == nil {
			return def, nil
		}
		f, isNum := v.(float64)
		if !isNum || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			return 0, fmt.Errorf("%w: %s.%s = %v", model.ErrConfig, key, name, v)
		}
		return f, nil
	}
	var sc nn.RopeScaling
	switch typ {
	case "", "default":
		return nn.RopeScaling{}, nil
	case "linear":
		sc.Kind = nn.ScalingLinear
	case "yarn":
		sc.Kind = nn.ScalingYaRN
	default:
		return nn.RopeScaling{}, fmt.Errorf("%w: %s type %q (deepseek supports none, linear and yarn)", model.ErrUnsupported, key, typ)
	}
	if sc.Factor, err = num("factor", 0); err != nil {
		return sc, err
	}
	if !(sc.Factor > 0) {
		return sc, fmt.Errorf("%w: %s.factor %v", model.ErrConfig, key, rs["factor"])
	}
	if sc.Kind == nn.ScalingLinear {
		return sc, nil
	}
	orig, err := num("original_max_position_embeddings", 0)
	if err != nil {
		return sc, err
	}
	if orig < 1 || orig > math.MaxInt32 || orig != math.Trunc(orig) {
		return sc, fmt.Errorf("%w: %s.original_max_position_embeddings %v", model.ErrConfig, key, rs["original_max_position_embeddings"])
	}
	sc.OriginalMaxPosition = int(orig)
	for _, f := range []struct {
		name string
		dst  *float64
	}{{"beta_fast", &sc.BetaFast}, {"beta_slow", &sc.BetaSlow}, {"mscale", &sc.Mscale},
		{"mscale_all_dim", &sc.MscaleAllDim}, {"attention_factor", &sc.AttentionFactor}} {
		if *f.dst, err = num(f.name, 0); err != nil {
			return sc, err
		}
	}
	return sc, nil
}

// loader reads tensors of one checkpoint onto one card, remembering every buffer it
// allocates so that Load can free them all on failure.
type loader struct {
	ck   *safetensors.Checkpoint
	card ascend.Card
	bufs []ascend.Buffer
}

// info returns name's metadata, checking it has exactly shape.
func (l *loader) info(name string, shape ...int) (safetensors.TensorInfo, error) {
	info, ok := l.ck.Info(name)
	if !ok {
		return info, fmt.Errorf("%w: %s", model.ErrMissing, name)
	}
	want := make([]int64, len(shape))
	for i, d := range shape {
		want[i] = int64(d)
	}
	if !slices.Equal(info.Shape, want) {
		return info, fmt.Errorf("%w: %s has shape %v, want %v", model.ErrShape, name, info.Shape, want)
	}
	return info, nil
}

// cardDType is the card dtype a checkpoint dtype is kept in; 0 when it must be decoded
// (FP8 blocks and friends are widened once to bf16 at load).
func cardDType(dt safetensors.DType) ascend.DType {
	switch dt {
	case safetensors.F32:
		return ascend.F32
	case safetensors.BF16:
		return ascend.BF16
	case safetensors.F16:
		return ascend.F16
	}
	return 0
}

// weight places the [out, in] matrix name on the card in its checkpoint dtype.
func (l *loader) weight(name string, out, in int) (ascend.Buffer, error) {
	info, err := l.info(name, out, in)
	if err != nil {
		return nil, err
	}
	if dt := cardDType(info.DType); dt != 0 {
		raw, err := l.ck.Raw(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		b, err := l.card.Alloc(dt, out, in)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		l.bufs = append(l.bufs, b)
		if err := l.card.Write(b, 0, raw); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return b, nil
	}
	// F32 decodes FP8 with its weight_scale_inv blocks (models.md §5.2).
	vals, err := l.ck.F32(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	b, err := nn.UploadWeight(l.card, ascend.BF16, vals, out, in)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	l.bufs = append(l.bufs, b)
	return b, nil
}

// vec reads the 1-D tensor name of n values as f32 on the host.
func (l *loader) vec(name string, n int) ([]float32, error) {
	if _, err := l.info(name, n); err != nil {
		return nil, err
	}
	v, err := l.ck.F32(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return v, nil
}

// linear builds an nn.Linear for name ([out, in], no bias: DeepSeek's attention_bias is
// false and transformers' MLA has no bias on any projection).
func (l *loader) linear(name string, out, in int) (*nn.Linear, error) {
	w, err := l.weight(name, out, in)
	if err != nil {
		return nil, err
	}
	lin, err := nn.NewLinear(l.card, w, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return lin, nil
}

// embedding keeps model.embed_tokens.weight on the host: bf16 as bits (half the memory),
// anything else decoded to f32.
func (l *loader) embedding(vocab, hidden int) (*nn.Embedding, error) {
	const name = "model.embed_tokens.weight"
	info, err := l.info(name, vocab, hidden)
	if err != nil {
		return nil, err
	}
	if info.DType == safetensors.BF16 {
		raw, err := l.ck.Raw(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if len(raw) != 2*vocab*hidden {
			return nil, fmt.Errorf("%w: %s holds %d bytes", model.ErrShape, name, len(raw))
		}
		// Copied: Raw is a view into the mapping, which dies with the checkpoint.
		bits := make([]uint16, vocab*hidden)
		for i := range bits {
			bits[i] = binary.LittleEndian.Uint16(raw[2*i:])
		}
		return nn.NewEmbeddingBF16(bits, vocab, hidden)
	}
	vals, err := l.ck.F32(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return nn.NewEmbeddingF32(vals, vocab, hidden)
}

// denseMLP loads layer i's dense SwiGLU (mlp.gate_proj|up_proj|down_proj, the
// first_k_dense_replace layers) into a one-expert set, so dense layers share the experts'
// row-independent kernels.
func (l *loader) denseMLP(cfg *model.Config, i int) (*model.ExpertSet, error) {
	I, H := cfg.DenseIntermediate, cfg.Hidden
	if I <= 0 {
		return nil, fmt.Errorf("%w: layer %d is dense but intermediate_size is %d", model.ErrConfig, i, I)
	}
	pre := fmt.Sprintf("model.layers.%d.mlp.", i)
	names := [3]string{pre + "gate_proj.weight", pre + "up_proj.weight", pre + "down_proj.weight"}
	shapes := [3][2]int{{I, H}, {I, H}, {H, I}}
	dt := ascend.DType(0)
	for j, name := range names {
		info, err := l.info(name, shapes[j][0], shapes[j][1])
		if err != nil {
			return nil, err
		}
		d := cardDType(info.DType)
		if j == 0 {
			dt = d
		}
		if d == 0 || d != dt {
			dt = ascend.F32 // decoded or mixed dtypes: keep all three in f32
		}
	}
	var parts [3][]byte
	for j, name := range names {
		info, _ := l.ck.Info(name)
		if cardDType(info.DType) == dt {
			raw, err := l.ck.Raw(name)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			parts[j] = raw
			continue
		}
		vals, err := l.ck.F32(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		parts[j] = make([]byte, 4*len(vals))
		for k, v := range vals {
			binary.LittleEndian.PutUint32(parts[j][4*k:], math.Float32bits(v))
		}
	}
	set := model.NewExpertSet(l.card, H, I, 0)
	if err := set.Add(model.ExpertKey{Layer: i}, model.ExpertWeights{DType: dt, Gate: parts[0], Up: parts[1], Down: parts[2]}); err != nil {
		return nil, errors.Join(fmt.Errorf("layer %d dense mlp: %w", i, err), set.Close())
	}
	return set, nil
}

// mla loads layer i's attention weights.
func (l *loader) mla(cfg *model.Config, p *params, i int, a *attention) error {
	H := cfg.Hidden
	sa := fmt.Sprintf("model.layers.%d.self_attn.", i)
	qw := p.heads * p.qkDim
	var err error
	if p.qLora > 0 {
		if a.qa, err = l.linear(sa+"q_a_proj.weight", p.qLora, H); err != nil {
			return err
		}
		if a.qaNorm, err = l.vec(sa+"q_a_layernorm.weight", p.qLora); err != nil {
			return err
		}
		if a.qb, err = l.linear(sa+"q_b_proj.weight", qw, p.qLora); err != nil {
			return err
		}
	} else if a.q, err = l.linear(sa+"q_proj.weight", qw, H); err != nil {
		return err
	}
	if a.kva, err = l.linear(sa+"kv_a_proj_with_mqa.weight", p.kvLora+p.rope, H); err != nil {
		return err
	}
	if a.kvNorm, err = l.vec(sa+"kv_a_layernorm.weight", p.kvLora); err != nil {
		return err
	}
	if a.kvb, err = l.linear(sa+"kv_b_proj.weight", p.heads*(p.nope+p.vDim), p.kvLora); err != nil {
		return err
	}
	a.o, err = l.linear(sa+"o_proj.weight", H, p.heads*p.vDim)
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
	l := &loader{ck: ck, card: card}
	defer func() {
		if err != nil {
			m.bufs = l.bufs
			err = errors.Join(err, m.Close())
		}
	}()
	H := cfg.Hidden
	if m.embed, err = l.embedding(cfg.Vocab, H); err != nil {
		return nil, err
	}
	if m.finalNorm, err = l.vec("model.norm.weight", H); err != nil {
		return nil, err
	}
	head := "lm_head.weight"
	if cfg.TieEmbeddings {
		head = "model.embed_tokens.weight"
	}
	if m.lmHead, err = l.linear(head, cfg.Vocab, H); err != nil {
		return nil, err
	}
	m.layers = make([]layer, 0, cfg.Layers)
	for i := 0; i < cfg.Layers; i++ {
		pre := fmt.Sprintf("model.layers.%d.", i)
		// Appended first so Close finds whatever part of the layer loaded.
		m.layers = append(m.layers, layer{})
		lp := &m.layers[i]
		if lp.inNorm, err = l.vec(pre+"input_layernorm.weight", H); err != nil {
			return nil, err
		}
		if lp.postNorm, err = l.vec(pre+"post_attention_layernorm.weight", H); err != nil {
			return nil, err
		}
		if err = l.mla(cfg, &p, i, &lp.attn); err != nil {
			return nil, err
		}
		if cfg.IsMoELayer(i) {
			if lp.moe, err = model.LoadMoELayer(ck, cfg, i, card); err != nil {
				return nil, err
			}
		} else if lp.dense, err = l.denseMLP(cfg, i); err != nil {
			return nil, err
		}
	}
	m.bufs = l.bufs
	return m, nil
}
