package model_test

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moemesh/moemesh/ascend"
	_ "github.com/moemesh/moemesh/ascend/cpu"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/model/synth"
)

// naiveFFN is the SwiGLU expert in float64 straight from the checkpoint's [out, in] tensors.
func naiveFFN(x []float64, gate, up, down []float32, inter, hidden int) []float64 {
	act := make([]float64, inter)
	for i := 0; i < inter; i++ {
		var g, u float64
		for j := 0; j < hidden; j++ {
			g += float64(gate[i*hidden+j]) * x[j]
			u += float64(up[i*hidden+j]) * x[j]
		}
		act[i] = g / (1 + math.Exp(-g)) * u
	}
	y := make([]float64, hidden)
	for h := 0; h < hidden; h++ {
		for i := 0; i < inter; i++ {
			y[h] += float64(down[h*inter+i]) * act[i]
		}
	}
	return y
}

// TestMoELayerAgainstNaive checks one MoE layer (gate, routed experts in process, shared
// expert) of tiny checkpoints against float64 math written here from the tensors, per family.
func TestMoELayerAgainstNaive(t *testing.T) {
	for _, arch := range []string{"qwen3_moe", "mixtral", "deepseek_v3", "qwen2_moe", "granitemoe"} {
		t.Run(arch, func(t *testing.T) {
			dir := t.TempDir()
			cfg, err := synth.Write(dir, synth.Options{Arch: arch, Seed: 5, DType: "f32"})
			if err != nil {
				t.Fatal(err)
			}
			ck, err := safetensors.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			be, _ := ascend.Open("cpu")
			c1, _ := be.OpenCard(0, 0)
			c2, _ := be.OpenCard(1, 0)
			defer c1.Close()
			defer c2.Close()
			layer := cfg.MoELayers()[0]
			moe, err := model.LoadMoELayer(ck, cfg, layer, c1)
			if err != nil {
				t.Fatal(err)
			}
			defer moe.Close()
			local, err := model.LoadLocal(ck, cfg, c2, []int{layer})
			if err != nil {
				t.Fatal(err)
			}
			h, T := cfg.Hidden, 9
			rng := rand.New(rand.NewPCG(1, 2))
			x := make([]float32, T*h)
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
			got := make([]float32, len(x))
			if err := moe.Forward(context.Background(), x, nil, local, got); err != nil {
				t.Fatal(err)
			}
			r, err := moe.Route(x, nil)
			if err != nil {
				t.Fatal(err)
			}
			var maxDiff, maxAbs float64
			for tok := 0; tok < T; tok++ {
				xt := make([]float64, h)
				for j := range xt {
					xt[j] = float64(x[tok*h+j])
				}
				want := make([]float64, h)
				for k := 0; k < r.TopK; k++ {
					e := int(r.Experts[tok*r.TopK+k])
					refs, err := cfg.ExpertRefs(ck, layer, e)
					if err != nil {
						t.Fatal(err)
					}
					g, _ := ck.RowsF32(refs.Gate.Name, refs.Gate.Index, refs.Gate.RowStart, refs.Gate.RowEnd)
					u, _ := ck.RowsF32(refs.Up.Name, refs.Up.Index, refs.Up.RowStart, refs.Up.RowEnd)
					d, _ := ck.RowsF32(refs.Down.Name, refs.Down.Index, refs.Down.RowStart, refs.Down.RowEnd)
					y := naiveFFN(xt, g, u, d, cfg.ExpertIntermediate, h)
					for j := range want {
						want[j] += float64(r.Weights[tok*r.TopK+k]) * y[j]
					}
				}
				if refs, sg, ok, err := cfg.SharedRefs(ck, layer); err != nil {
					t.Fatal(err)
				} else if ok {
					g, _ := ck.RowsF32(refs.Gate.Name, refs.Gate.Index, refs.Gate.RowStart, refs.Gate.RowEnd)
					u, _ := ck.RowsF32(refs.Up.Name, refs.Up.Index, refs.Up.RowStart, refs.Up.RowEnd)
					d, _ := ck.RowsF32(refs.Down.Name, refs.Down.Index, refs.Down.RowStart, refs.Down.RowEnd)
					scale := 1.0
					if sg != nil {
						gw, _ := ck.F32(sg.Name)
						var dot float64
						for j := range xt {
							dot += float64(gw[j]) * xt[j]
						}
						scale = 1 / (1 + math.Exp(-dot))
					}
					y := naiveFFN(xt, g, u, d, cfg.SharedIntermediate, h)
					for j := range want {
						want[j] += scale * y[j]
					}
				}
				for j := range want {
					maxDiff = math.Max(maxDiff, math.Abs(want[j]-float64(got[tok*h+j])))
					maxAbs = math.Max(maxAbs, math.Abs(want[j]))
				}
			}
			// f32 with f32 accumulation over hidden ≤ 128 terms: well inside 1e-5 relative.
			if maxAbs == 0 || maxDiff > 1e-5*maxAbs {
				t.Fatalf("max |layer − naive| = %g (max |y| %g)", maxDiff, maxAbs)
			}
		})
	}
}
