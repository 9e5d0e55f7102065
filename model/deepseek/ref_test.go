package deepseek

import (
	"fmt"
	"math"
	"testing"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/safetensors"
)

// refModel is an independent float64 forward pass written from models.md §1, §2.6–2.7
// and §4 with plain loops over the checkpoint's tensors. It shares nothing with the
// package under test except the routing decision (model.GateSpec.Route, tested in package
// model): no nn kernels, its own YaRN inverse frequencies and its own rotation.
type refModel struct {
	t   *testing.T
	ck  *safetensors.Checkpoint
	cfg *model.Config
	tc  map[string][]float64
}

func newRef(t *testing.T, f *fixture) *refModel {
	return &refModel{t: t, ck: f.ck, cfg: f.cfg, tc: map[string][]float64{}}
}

func (r *refModel) w(name string) []float64 {
	if v, ok := r.tc[name]; ok {
		return v
	}
	f, err := r.ck.F32(name)
	if err != nil {
		r.t.Fatalf("reference: %v", err)
	}
	v := make([]float64, len(f))
	for i, x := range f {
		v[i] = float64(x)
	}
	r.tc[name] = v
	return v
}

// matvec: y = W x for W [out, in].
func matvec(w, x []float64, out int) []float64 {
	in := len(x)
	if len(w) != out*in {
		panic(fmt.Sprintf("matvec: %d weights for [%d %d]", len(w), out, in))
	}
	y := make([]float64, out)
	for o := range out {
		var s float64
		for i := range in {
			s += w[o*in+i] * x[i]
		}
		y[o] = s
	}
	return y
}

func rmsnorm(x, w []float64, eps float64) []float64 {
	var ss float64
	for _, v := range x {
		ss += v * v
	}
	r := 1 / math.Sqrt(ss/float64(len(x))+eps)
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = w[i] * v * r
	}
	return y
}

func silu(a float64) float64 { return a / (1 + math.Exp(-a)) }

// swiglu: down(silu(gate x) * up x) for gate/up [I, H] and down [H, I].
func swiglu(x, gate, up, down []float64, I int) []float64 {
	g, u := matvec(gate, x, I), matvec(up, x, I)
	for i := range g {
		g[i] = silu(g[i]) * u[i]
	}
	return matvec(down, g, len(x))
}

// yarn is the reference's reading of rope_scaling.
type yarn struct {
	on                                  bool
	factor, orig, fast, slow, ms, msAll float64
}

func (r *refModel) yarn() yarn {
	var rs map[string]any
	ok, err := r.cfg.Lookup("rope_scaling", &rs)
	if err != nil {
		r.t.Fatal(err)
	}
	if !ok || (rs["type"] != "yarn" && rs["rope_type"] != "yarn") {
		return yarn{}
	}
	get := func(k string, def float64) float64 {
		if v, ok := rs[k].(float64); ok {
			return v
		}
		return def
	}
	return yarn{on: true, factor: get("factor", 1), orig: get("original_max_position_embeddings", 0),
		fast: get("beta_fast", 32), slow: get("beta_slow", 1), ms: get("mscale", 0), msAll: get("mscale_all_dim", 0)}
}

func getMscale(f, m float64) float64 {
	if f <= 1 {
		return 1
	}
	return 0.1*m*math.Log(f) + 1
}

// invFreq is inv_freq_i for i < d/2 with YaRN's ramp (models.md §4), and the cos/sin
// multiplier.
func (y yarn) invFreq(d int, theta float64) ([]float64, float64) {
	inv := make([]float64, d/2)
	for i := range inv {
		inv[i] = 1 / math.Pow(theta, float64(2*i)/float64(d))
	}
	if !y.on {
		return inv, 1
	}
	corr := func(n float64) float64 {
		return float64(d) * math.Log(y.orig/(2*math.Pi*n)) / (2 * math.Log(theta))
	}
	low := math.Max(math.Floor(corr(y.fast)), 0)
	high := math.Min(math.Ceil(corr(y.slow)), float64(d-1))
	if low == high {
		high += 0.001
	}
	for i := range inv {
		ramp := math.Min(math.Max((float64(i)-low)/(high-low), 0), 1)
		inv[i] = inv[i]/y.factor*ramp + inv[i]*(1-ramp)
	}
	return inv, getMscale(y.factor, y.ms) / getMscale(y.factor, y.msAll)
}

// rotate turns the pairs (x[2i], x[2i+1]) by pos·inv[i], scaling by ms.
func rotate(x []float64, pos int, inv []float64, ms float64) {
	for i, f := range inv {
		a := float64(pos) * f
		c, s := math.Cos(a)*ms, math.Sin(a)*ms
		u, v := x[2*i], x[2*i+1]
		x[2*i], x[2*i+1] = u*c-v*s, v*c+u*s
	}
}

// ffn is layer li's MLP output for x.
func (r *refModel) ffn(li int, x []float64) []float64 {
	c := r.cfg
	pre := fmt.Sprintf("model.layers.%d.mlp.", li)
	if !c.IsMoELayer(li) {
		return swiglu(x, r.w(pre+"gate_proj.weight"), r.w(pre+"up_proj.weight"), r.w(pre+"down_proj.weight"), c.DenseIntermediate)
	}
	z64 := matvec(r.w(pre+"gate.weight"), x, c.Experts)
	z := make([]float32, len(z64))
	for i, v := range z64 {
		z[i] = float32(v)
	}
	spec := c.GateSpec()
	if c.TopKMethod == "noaux_tc" {
		b, err := r.ck.F32(pre + "gate.e_score_correction_bias")
		if err != nil {
			r.t.Fatal(err)
		}
		spec.Bias = b
	}
	var rt model.Routing
	if err := spec.Route(z, 1, nil, &rt); err != nil {
		r.t.Fatal(err)
	}
	y := make([]float64, len(x))
	for k, e := range rt.Experts {
		p := fmt.Sprintf("%sexperts.%d.", pre, e)
		o := swiglu(x, r.w(p+"gate_proj.weight"), r.w(p+"up_proj.weight"), r.w(p+"down_proj.weight"), c.ExpertIntermediate)
		for i := range y {
			y[i] += float64(rt.Weights[k]) * o[i]
		}
	}
	sp := pre + "shared_experts."
	o := swiglu(x, r.w(sp+"gate_proj.weight"), r.w(sp+"up_proj.weight"), r.w(sp+"down_proj.weight"), c.SharedIntermediate)
	for i := range y {
		y[i] += o[i]
	}
	return y
}

// forward returns the logits of the last position of ids.
func (r *refModel) forward(ids []int32) []float64 {
	c := r.cfg
	H, nh := c.Hidden, c.Heads
	nope, rp, vd, lora := c.QKNopeHeadDim, c.QKRopeHeadDim, c.VHeadDim, c.KVLoraRank
	qk := nope + rp
	T, eps := len(ids), c.RMSEps
	y := r.yarn()
	inv, ms := y.invFreq(rp, c.RopeTheta)
	scale := 1 / math.Sqrt(float64(qk))
	if y.on && y.msAll != 0 {
		m := getMscale(y.factor, y.msAll)
		scale *= m * m
	}
	emb := r.w("model.embed_tokens.weight")
	h := make([][]float64, T)
	for t, id := range ids {
		h[t] = append([]float64(nil), emb[int(id)*H:(int(id)+1)*H]...)
	}
	for li := range c.Layers {
		pre := fmt.Sprintf("model.layers.%d.", li)
		sa := pre + "self_attn."
		q := make([][]float64, T)
		k := make([][]float64, T) // [nh·qk]
		v := make([][]float64, T) // [nh·vd]
		for t := range T {
			x := rmsnorm(h[t], r.w(pre+"input_layernorm.weight"), eps)
			if c.QLoraRank > 0 {
				qa := rmsnorm(matvec(r.w(sa+"q_a_proj.weight"), x, c.QLoraRank), r.w(sa+"q_a_layernorm.weight"), eps)
				q[t] = matvec(r.w(sa+"q_b_proj.weight"), qa, nh*qk)
			} else {
				q[t] = matvec(r.w(sa+"q_proj.weight"), x, nh*qk)
			}
			kva := matvec(r.w(sa+"kv_a_proj_with_mqa.weight"), x, lora+rp)
			ckv := rmsnorm(kva[:lora], r.w(sa+"kv_a_layernorm.weight"), eps)
			kpe := append([]float64(nil), kva[lora:]...)
			rotate(kpe, t, inv, ms)
			kvb := matvec(r.w(sa+"kv_b_proj.weight"), ckv, nh*(nope+vd))
			k[t], v[t] = make([]float64, nh*qk), make([]float64, nh*vd)
			for hh := range nh {
				rotate(q[t][hh*qk+nope:(hh+1)*qk], t, inv, ms)
				src := kvb[hh*(nope+vd) : (hh+1)*(nope+vd)]
				copy(k[t][hh*qk:], src[:nope])
				copy(k[t][hh*qk+nope:], kpe)
				copy(v[t][hh*vd:], src[nope:])
			}
		}
		for t := range T {
			att := make([]float64, nh*vd)
			for hh := range nh {
				sc := make([]float64, t+1)
				mx := math.Inf(-1)
				for j := range t + 1 {
					var d float64
					for i := range qk {
						d += q[t][hh*qk+i] * k[j][hh*qk+i]
					}
					sc[j] = d * scale
					mx = math.Max(mx, sc[j])
				}
				var z float64
				for j := range sc {
					sc[j] = math.Exp(sc[j] - mx)
					z += sc[j]
				}
				for j := range sc {
					for i := range vd {
						att[hh*vd+i] += sc[j] / z * v[j][hh*vd+i]
					}
				}
			}
			o := matvec(r.w(sa+"o_proj.weight"), att, H)
			for i := range H {
				h[t][i] += o[i]
			}
		}
		for t := range T {
			f := r.ffn(li, rmsnorm(h[t], r.w(pre+"post_attention_layernorm.weight"), eps))
			for i := range H {
				h[t][i] += f[i]
			}
		}
	}
	x := rmsnorm(h[T-1], r.w("model.norm.weight"), eps)
	return matvec(r.w("lm_head.weight"), x, c.Vocab)
}
