package deepseek4

import (
	"errors"
	"fmt"
	"slices"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/nn"
	"github.com/moemesh/moemesh/model/safetensors"
)

// Arches are the model_type values this package runs.
var Arches = []string{"deepseek_v4"}

// linear is a dense weight [out, in] held in float32 (FP8 weights dequantised at load).
type linear struct {
	w       []float32
	out, in int
}

// apply writes y [rows, out] = x [rows, in] · Wᵀ, accumulating in float64 so the result
// does not depend on how rows are batched.
func (l *linear) apply(y, x []float32, rows int) {
	for r := range rows {
		xr := x[r*l.in : (r+1)*l.in]
		yr := y[r*l.out : (r+1)*l.out]
		for o := range l.out {
			s := 0.0
			for i, w := range l.w[o*l.in : (o+1)*l.in] {
				s += float64(w) * float64(xr[i])
			}
			yr[o] = float32(s)
		}
	}
}

// compressorW is a Compressor module's weights (model.py Compressor): wkv and wgate
// [coff·d, H], ape [ratio, coff·d], norm [d].
type compressorW struct {
	wkv, wgate linear
	ape, norm  []float32
	ratio, d   int
	overlap    bool
	rotate     bool // the indexer's: Hadamard + FP4 instead of FP8 on the non-rope dims
}

// indexerW is a CSA layer's lightning indexer.
type indexerW struct {
	wqb, wproj linear // wq_b [ih·id, q_lora], weights_proj [ih, H]
	comp       compressorW
}

type attentionW struct {
	sink           []float32
	wqa, wqb, wkv  linear
	qNorm, kvNorm  []float32
	woa, wob       linear
	comp           *compressorW // nil in window-only layers
	idx            *indexerW    // CSA layers only
	rope           *nn.Rope
	ratio          int
	hcAttn, hcFFN  HC
	attnNorm, fNrm []float32
}

type layerW struct {
	attentionW
	moe *model.MoELayer
}

// loader reads tensors by native name, checking shapes against the table.
type loader struct {
	ck     *safetensors.Checkpoint
	shapes map[string][]int64
}

func (l *loader) f32(name string, logical ...int64) ([]float32, error) {
	want, ok := l.shapes[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s is not in the deepseek_v4 layout", model.ErrMissing, name)
	}
	info, ok := l.ck.Info(name)
	if !ok {
		return nil, fmt.Errorf("%w: %s", model.ErrMissing, name)
	}
	if !slices.Equal(info.Shape, want) {
		return nil, fmt.Errorf("%w: %s has shape %v, config says %v", ErrShape, name, info.Shape, want)
	}
	v, err := l.ck.F32(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	n := int64(1)
	for _, d := range logical {
		n *= d
	}
	if len(logical) > 0 && int64(len(v)) != n {
		return nil, fmt.Errorf("%w: %s decodes to %d values, want %v", ErrShape, name, len(v), logical)
	}
	return v, nil
}

func (l *loader) linear(name string, out, in int) (linear, error) {
	w, err := l.f32(name+".weight", int64(out), int64(in))
	return linear{w: w, out: out, in: in}, err
}

// LoadModel reads a V4 checkpoint's dense side (everything but the routed experts, which stay
// behind the model.Experts seam) into host memory; the MoE layers' gate and shared expert
// go onto card through model.LoadMoELayer, the path every family shares. MTP tensors are
// not read.
func LoadModel(ck *safetensors.Checkpoint, base *model.Config, card ascend.Card) (*Model, error) {
	if !slices.Contains(Arches, base.Arch) {
		return nil, fmt.Errorf("%w: deepseek4 runs %v, not %q", model.ErrUnsupported, Arches, base.Arch)
	}
	cfg, err := FromModel(base)
	if err != nil {
		return nil, err
	}
	if cfg.IndexHeadDim&(cfg.IndexHeadDim-1) != 0 || cfg.IndexHeadDim%32 != 0 || (cfg.HeadDim-cfg.RopeDim)%64 != 0 {
		return nil, fmt.Errorf("%w: deepseek_v4 forward needs index_head_dim a power of two ≥ 32 (Hadamard, FP4 blocks) and head_dim − qk_rope_head_dim a multiple of 64 (FP8 blocks); got %d and %d",
			ErrConfig, cfg.IndexHeadDim, cfg.HeadDim-cfg.RopeDim)
	}
	l := &loader{ck: ck, shapes: map[string][]int64{}}
	for _, t := range cfg.Tensors(false) {
		l.shapes[t.Name] = t.Shape
	}
	m := &Model{cfg: cfg, card: card}
	fail := func(err error) (*Model, error) {
		return nil, errors.Join(err, m.Close())
	}
	H, V, hc := cfg.Hidden, cfg.Vocab, cfg.HCMult
	if m.embed, err = l.f32("embed.weight", int64(V), int64(H)); err != nil {
		return fail(err)
	}
	if m.norm, err = l.f32("norm.weight"); err != nil {
		return fail(err)
	}
	if m.head, err = l.linear("head", V, H); err != nil {
		return fail(err)
	}
	m.hcHead = HC{Mult: hc, Iters: cfg.HCIters, NormEps: cfg.RMSEps, Eps: cfg.HCEps}
	if m.hcHead.Fn, err = l.f32("hc_head_fn"); err == nil {
		if m.hcHead.Base, err = l.f32("hc_head_base"); err == nil {
			m.hcHead.Scale, err = l.f32("hc_head_scale")
		}
	}
	if err != nil {
		return fail(err)
	}
	m.layers = make([]layerW, cfg.Layers)
	for i := range m.layers {
		if err := m.loadLayer(l, i); err != nil {
			return fail(fmt.Errorf("layer %d: %w", i, err))
		}
		if m.layers[i].moe, err = model.LoadMoELayer(ck, cfg.Config, i, card); err != nil {
			return fail(fmt.Errorf("layer %d moe: %w", i, err))
		}
	}
	return m, nil
}

func (m *Model) loadLayer(l *loader, i int) error {
	cfg := m.cfg
	H, D, Q, nh := cfg.Hidden, cfg.HeadDim, cfg.QLoraRank, cfg.Heads
	g, r := cfg.OGroups, cfg.OLoraRank
	p := fmt.Sprintf("layers.%d.", i)
	ly := &m.layers[i]
	var errs []error
	vec := func(name string) []float32 {
		v, err := l.f32(p + name)
		errs = append(errs, err)
		return v
	}
	lin := func(name string, out, in int) linear {
		v, err := l.linear(p+name, out, in)
		errs = append(errs, err)
		return v
	}
	hcOf := func(s string) HC {
		return HC{Fn: vec("hc_" + s + "_fn"), Base: vec("hc_" + s + "_base"), Scale: vec("hc_" + s + "_scale"),
			Mult: cfg.HCMult, Iters: cfg.HCIters, NormEps: cfg.RMSEps, Eps: cfg.HCEps}
	}
	ly.hcAttn, ly.hcFFN = hcOf("attn"), hcOf("ffn")
	ly.attnNorm, ly.fNrm = vec("attn_norm.weight"), vec("ffn_norm.weight")
	a := &ly.attentionW
	a.sink = vec("attn.attn_sink")
	a.wqa, a.qNorm = lin("attn.wq_a", Q, H), vec("attn.q_norm.weight")
	a.wqb = lin("attn.wq_b", nh*D, Q)
	a.wkv, a.kvNorm = lin("attn.wkv", D, H), vec("attn.kv_norm.weight")
	a.woa, a.wob = lin("attn.wo_a", g*r, nh*D/g), lin("attn.wo_b", H, g*r)
	a.ratio = cfg.Ratio(i)
	comp := func(pre string, d int, rotate bool) *compressorW {
		coff := 1
		if a.ratio == 4 {
			coff = 2
		}
		return &compressorW{wkv: lin(pre+"wkv", coff*d, H), wgate: lin(pre+"wgate", coff*d, H),
			ape: vec(pre + "ape"), norm: vec(pre + "norm.weight"), ratio: a.ratio, d: d, overlap: a.ratio == 4, rotate: rotate}
	}
	if a.ratio > 0 {
		a.comp = comp("attn.compressor.", D, false)
		if cfg.HasIndexer(i) {
			ih, id := cfg.IndexHeads, cfg.IndexHeadDim
			a.idx = &indexerW{wqb: lin("attn.indexer.wq_b", ih*id, Q), wproj: lin("attn.indexer.weights_proj", ih, H),
				comp: *comp("attn.indexer.compressor.", id, true)}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	var err error
	a.rope, err = nn.NewRope(cfg.RopeConfig(i))
	return err
}
