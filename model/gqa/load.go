package gqa

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
	sc, err := ropeScaling(cfg)
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

// ropeScaling reads rope_scaling (or v5 rope_parameters): none/default and linear only.
func ropeScaling(cfg *model.Config) (nn.RopeScaling, error) {
	var rs map[string]any
	ok, err := cfg.Lookup("rope_scaling", &rs)
	if err != nil {
		return nn.RopeScaling{}, err
	}
	key := "rope_scaling"
	if !ok {
		if ok, err = cfg.Lookup("rope_parameters", &rs); err != nil {
			return nn.RopeScaling{}, err
		}
		key = "rope_parameters"
	}
	if !ok {
		return nn.RopeScaling{}, nil
	}
	typ, _ := rs["rope_type"].(string)
	if typ == "" {
		typ, _ = rs["type"].(string)
	}
	switch typ {
	case "", "default":
		return nn.RopeScaling{}, nil
	case "linear":
		f, _ := rs["factor"].(float64)
		if !(f > 0) || math.IsInf(f, 0) {
			return nn.RopeScaling{}, fmt.Errorf("%w: %s.factor %v", model.ErrConfig, key, rs["factor"])
		}
		return nn.RopeScaling{Kind: nn.ScalingLinear, Factor: f}, nil
	}
	return nn.RopeScaling{}, fmt.Errorf("%w: %s type %q (gqa supports none and linear)", model.ErrUnsupported, key, typ)
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
// (FP8 and friends are widened once to bf16 at load).
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
	var b ascend.Buffer
	if dt := cardDType(info.DType); dt != 0 {
		raw, err := l.ck.Raw(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if b, err = l.card.Alloc(dt, out, in); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		l.bufs = append(l.bufs, b)
		if err := l.card.Write(b, 0, raw); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return b, nil
	}
	vals, err := l.ck.F32(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if b, err = nn.UploadWeight(l.card, ascend.BF16, vals, out, in); err != nil {
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

// linear builds an nn.Linear for prefix+"weight" (and prefix+"bias" when bias).
func (l *loader) linear(prefix string, out, in int, bias bool) (*nn.Linear, error) {
	w, err := l.weight(prefix+"weight", out, in)
	if err != nil {
		return nil, err
	}
	var b []float32
	if bias {
		if b, err = l.vec(prefix+"bias", out); err != nil {
			return nil, err
		}
	}
	lin, err := nn.NewLinear(l.card, w, b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", prefix+"weight", err)
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

// denseMLP loads layer i's dense SwiGLU (mlp.gate_proj|up_proj|down_proj) into a one-
// expert set, so dense layers share the experts' kernels (and their row independence).
func (l *loader) denseMLP(cfg *model.Config, i int) (*model.ExpertSet, error) {
	I, H := cfg.DenseIntermediate, cfg.Hidden
	pre := fmt.Sprintf("model.layers.%d.mlp.", i)
	shapes := [3][2]int{{I, H}, {I, H}, {H, I}}
	var parts [3][]byte
	dt := ascend.DType(0)
	for j, n := range [3]string{"gate_proj", "up_proj", "down_proj"} {
		name := pre + n + ".weight"
		info, err := l.info(name, shapes[j][0], shapes[j][1])
		if err != nil {
			return nil, err
		}
		d := cardDType(info.DType)
		if j == 0 {
			dt = d
		}
		if d == 0 || d != dt {
			// Decoded (or mixed dtypes): keep all three in f32.
			dt = ascend.F32
		}
	}
	for j, n := range [3]string{"gate_proj", "up_proj", "down_proj"} {
		name := pre + n + ".weight"
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
		return nil, fmt.Errorf("layer %d dense mlp: %w", i, err)
	}
	return set, nil
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
	l := &loader{ck: ck, card: card}
	defer func() {
		if err != nil {
			m.bufs = l.bufs
			err = errors.Join(err, m.Close())
		}
	}()
	H, hd := cfg.Hidden, cfg.HeadDim
	qw, kvw := cfg.Heads*hd, cfg.KVHeads*hd
	if m.embed, err = l.embedding(cfg.Vocab, H); err != nil {
		return nil, err
	}
	if m.finalNorm, err = l.vec("model.norm.weight", H); err != nil {
		return nil, err
	}
	head := "lm_head."
	if cfg.TieEmbeddings {
		head = "model.embed_tokens."
	}
	if m.lmHead, err = l.linear(head, cfg.Vocab, H, false); err != nil {
		return nil, err
	}
	m.layers = make([]layer, 0, cfg.Layers)
	for i := 0; i < cfg.Layers; i++ {
		pre := fmt.Sprintf("model.layers.%d.", i)
		var ly layer
		// Appended first so Close finds whatever part of the layer loaded.
		m.layers = append(m.layers, ly)
		lp := &m.layers[i]
		if lp.inNorm, err = l.vec(pre+"input_layernorm.weight", H); err != nil {
			return nil, err
		}
		if lp.postNorm, err = l.vec(pre+"post_attention_layernorm.weight", H); err != nil {
			return nil, err
		}
		a := &lp.attn
		sa := pre + "self_attn."
		if a.q, err = l.linear(sa+"q_proj.", qw, H, p.qkvBias); err != nil {
			return nil, err
		}
		if a.k, err = l.linear(sa+"k_proj.", kvw, H, p.qkvBias); err != nil {
			return nil, err
		}
		if a.v, err = l.linear(sa+"v_proj.", kvw, H, p.qkvBias); err != nil {
			return nil, err
		}
		if a.o, err = l.linear(sa+"o_proj.", H, qw, p.oBias); err != nil {
			return nil, err
		}
		switch p.qk {
		case qkPerHead:
			if a.qNorm, err = l.vec(sa+"q_norm.weight", hd); err == nil {
				a.kNorm, err = l.vec(sa+"k_norm.weight", hd)
			}
		case qkWhole:
			if a.qNorm, err = l.vec(sa+"q_norm.weight", qw); err == nil {
				a.kNorm, err = l.vec(sa+"k_norm.weight", kvw)
			}
		}
		if err != nil {
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
