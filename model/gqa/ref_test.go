package gqa

import (
	"fmt"
	"math"
	"testing"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/safetensors"
)

// refModel is an independent float64 forward pass written from models.md with plain loops
// over the checkpoint's tensors. It shares nothing with the package under test except
// the routing decision (model.GateSpec.Route, tested in package model).
type refModel struct {
	t   *testing.T
	ck  *safetensors.Checkpoint
	cfg *model.Config
	tc  map[string][]float64
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

func (r *refModel) has(name string) bool { _, ok := r.ck.Info(name); return ok }

func (r *refModel) scalar(key string, def float64) float64 {
	var v float64
	ok, err := r.cfg.Lookup(key, &v)
	if err != nil {
		r.t.Fatal(err)
	}
	if !ok {
		return def
	}
	return v
}

// matvec: y = W x (+ b) for W [out, in].
func matvec(w []float64, x []float64, out int, b []float64) []float64 {
	in := len(x)
	y := make([]float64, out)
	for o := range out {
		var s float64
		for i := range in {
			s += w[o*in+i] * x[i]
		}
		if b != nil {
			s += b[o]
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

// rope rotates each head of x (heads × hd) at position pos, pairs (i, i+hd/2).
func rope(x []float64, heads, hd int, pos int, theta, factor float64) {
	half := hd / 2
	for h := range heads {
		v := x[h*hd : (h+1)*hd]
		for i := range half {
			ang := float64(pos) * math.Pow(theta, -float64(2*i)/float64(hd)) / factor
			c, s := math.Cos(ang), math.Sin(ang)
			a, b := v[i], v[i+half]
			v[i], v[i+half] = a*c-b*s, b*c+a*s
		}
	}
}

func silu(a float64) float64 { return a / (1 + math.Exp(-a)) }

// swiglu: down(silu(gate x) * up x) for gate/up [I, H] and down [H, I].
func swiglu(x, gate, up, down []float64, I int) []float64 {
	g, u := matvec(gate, x, I, nil), matvec(up, x, I, nil)
	for i := range g {
		g[i] = silu(g[i]) * u[i]
	}
	return matvec(down, g, len(x), nil)
}

// expert returns routed expert e of layer li as gate, up, down matrices.
func (r *refModel) expert(li, e int) (gate, up, down []float64) {
	c := r.cfg
	pre := fmt.Sprintf("model.layers.%d.", li)
	I, H := c.ExpertIntermediate, c.Hidden
	switch c.Arch {
	case "granitemoe":
		in := r.w(pre + "block_sparse_moe.input_linear.weight")[e*2*I*H : (e+1)*2*I*H]
		out := r.w(pre + "block_sparse_moe.output_linear.weight")[e*H*I : (e+1)*H*I]
		return in[:I*H], in[I*H:], out
	case "mixtral":
		p := fmt.Sprintf("%sblock_sparse_moe.experts.%d.", pre, e)
		return r.w(p + "w1.weight"), r.w(p + "w3.weight"), r.w(p + "w2.weight")
	}
	p := fmt.Sprintf("%smlp.experts.%d.", pre, e)
	return r.w(p + "gate_proj.weight"), r.w(p + "up_proj.weight"), r.w(p + "down_proj.weight")
}

func (r *refModel) router(li int) string {
	switch r.cfg.Arch {
	case "granitemoe":
		return fmt.Sprintf("model.layers.%d.block_sparse_moe.router.layer.weight", li)
	case "mixtral":
		return fmt.Sprintf("model.layers.%d.block_sparse_moe.gate.weight", li)
	}
	return fmt.Sprintf("model.layers.%d.mlp.gate.weight", li)
}

// ffn is layer li's MLP output for x.
func (r *refModel) ffn(li int, x []float64) []float64 {
	c := r.cfg
	H := c.Hidden
	pre := fmt.Sprintf("model.layers.%d.mlp.", li)
	if !c.IsMoELayer(li) {
		return swiglu(x, r.w(pre+"gate_proj.weight"), r.w(pre+"up_proj.weight"), r.w(pre+"down_proj.weight"), c.DenseIntermediate)
	}
	z64 := matvec(r.w(r.router(li)), x, c.Experts, nil)
	z := make([]float32, len(z64))
	for i, v := range z64 {
		z[i] = float32(v)
	}
	var rt model.Routing
	if err := c.GateSpec().Route(z, 1, nil, &rt); err != nil {
		r.t.Fatal(err)
	}
	y := make([]float64, H)
	for k, e := range rt.Experts {
		g, u, d := r.expert(li, int(e))
		o := swiglu(x, g, u, d, c.ExpertIntermediate)
		for i := range y {
			y[i] += float64(rt.Weights[k]) * o[i]
		}
	}
	if c.Arch == "qwen2_moe" {
		sp := pre + "shared_expert."
		o := swiglu(x, r.w(sp+"gate_proj.weight"), r.w(sp+"up_proj.weight"), r.w(sp+"down_proj.weight"), c.SharedIntermediate)
		g := 1 / (1 + math.Exp(-matvec(r.w(pre+"shared_expert_gate.weight"), x, 1, nil)[0]))
		for i := range y {
			y[i] += g * o[i]
		}
	}
	return y
}

// forward returns the logits of every position of ids.
func (r *refModel) forward(ids []int32) [][]float64 {
	c := r.cfg
	H, hd, nh, nkv := c.Hidden, c.HeadDim, c.Heads, c.KVHeads
	T := len(ids)
	eps := c.RMSEps
	granite := c.Arch == "granitemoe"
	embMul, resMul, logitDiv, scale := 1.0, 1.0, 1.0, 1/math.Sqrt(float64(hd))
	if granite {
		embMul, resMul = r.scalar("embedding_multiplier", 1), r.scalar("residual_multiplier", 1)
		logitDiv, scale = r.scalar("logits_scaling", 1), r.scalar("attention_multiplier", 1)
	}
	clip := r.scalar("clip_qkv", 0)
	window := 0
	if c.Arch == "mixtral" {
		window = int(r.scalar("sliding_window", 0))
	}
	factor := 1.0
	var rs map[string]any
	if ok, _ := c.Lookup("rope_scaling", &rs); ok && rs["type"] == "linear" {
		factor = rs["factor"].(float64)
	}
	emb := r.w("model.embed_tokens.weight")
	h := make([][]float64, T)
	for t, id := range ids {
		h[t] = make([]float64, H)
		for i := range H {
			h[t][i] = emb[int(id)*H+i] * embMul
		}
	}
	for li := 0; li < c.Layers; li++ {
		pre := fmt.Sprintf("model.layers.%d.", li)
		sa := pre + "self_attn."
		bias := func(n string) []float64 {
			if c.Arch == "qwen2_moe" {
				return r.w(sa + n + ".bias")
			}
			return nil
		}
		qs, ks, vs := make([][]float64, T), make([][]float64, T), make([][]float64, T)
		for t := range T {
			x := rmsnorm(h[t], r.w(pre+"input_layernorm.weight"), eps)
			q := matvec(r.w(sa+"q_proj.weight"), x, nh*hd, bias("q_proj"))
			k := matvec(r.w(sa+"k_proj.weight"), x, nkv*hd, bias("k_proj"))
			v := matvec(r.w(sa+"v_proj.weight"), x, nkv*hd, bias("v_proj"))
			switch c.Arch {
			case "qwen3_moe":
				for hh := range nh {
					copy(q[hh*hd:], rmsnorm(q[hh*hd:(hh+1)*hd], r.w(sa+"q_norm.weight"), eps))
				}
				for hh := range nkv {
					copy(k[hh*hd:], rmsnorm(k[hh*hd:(hh+1)*hd], r.w(sa+"k_norm.weight"), eps))
				}
			case "olmoe":
				q = rmsnorm(q, r.w(sa+"q_norm.weight"), eps)
				k = rmsnorm(k, r.w(sa+"k_norm.weight"), eps)
			}
			if clip > 0 {
				for _, s := range [][]float64{q, k, v} {
					for i := range s {
						s[i] = math.Max(-clip, math.Min(clip, s[i]))
					}
				}
			}
			rope(q, nh, hd, t, c.RopeTheta, factor)
			rope(k, nkv, hd, t, c.RopeTheta, factor)
			qs[t], ks[t], vs[t] = q, k, v
		}
		for t := range T {
			att := make([]float64, nh*hd)
			for hh := range nh {
				kh := hh / (nh / nkv)
				lo := 0
				if window > 0 {
					lo = max(0, t-window+1)
				}
				sc := make([]float64, t+1)
				m := math.Inf(-1)
				for j := range sc {
					sc[j] = math.Inf(-1) // outside the sliding window: weight exactly 0
					if j < lo {
						continue
					}
					var d float64
					for i := range hd {
						d += qs[t][hh*hd+i] * ks[j][kh*hd+i]
					}
					sc[j] = d * scale
					m = math.Max(m, sc[j])
				}
				var z float64
				for j := range sc {
					sc[j] = math.Exp(sc[j] - m)
					z += sc[j]
				}
				for j := range sc {
					for i := range hd {
						att[hh*hd+i] += sc[j] / z * vs[j][kh*hd+i]
					}
				}
			}
			o := matvec(r.w(sa+"o_proj.weight"), att, H, nil)
			for i := range H {
				h[t][i] += resMul * o[i]
			}
		}
		for t := range T {
			x := rmsnorm(h[t], r.w(pre+"post_attention_layernorm.weight"), eps)
			y := r.ffn(li, x)
			for i := range H {
				h[t][i] += resMul * y[i]
			}
		}
	}
	head := "lm_head.weight"
	if !r.has(head) {
		head = "model.embed_tokens.weight"
	}
	out := make([][]float64, T)
	for t := range T {
		x := rmsnorm(h[t], r.w("model.norm.weight"), eps)
		out[t] = matvec(r.w(head), x, c.Vocab, nil)
		for i := range out[t] {
			out[t][i] /= logitDiv
		}
	}
	return out
}
