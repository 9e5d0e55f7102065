package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/model/synth"
)

func newMkmodel(g *globals) *cobra.Command {
	var o synth.Options
	var out string
	c := &cobra.Command{
		Use:   "mkmodel",
		Short: "Write a random-weight checkpoint in the exact Hugging Face layout of a model family",
		Example: `  moemesh mkmodel --arch deepseek_v3 --preset tiny --out ./tiny-dsv3 --seed 7 --dtype bf16
  moemesh mkmodel --arch deepseek_v3 --preset small --layers 2 --top-k 2 --skew 1.2 --out ./skewed
  moemesh mkmodel --arch deepseek_v4 --preset tiny --out ./tiny-dsv4`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("--out is required")
			}
			cfg, err := synth.Write(out, o)
			if err != nil {
				return err
			}
			fmt.Printf("wrote %s: %s, %d layers (MoE: %v), %d experts, top-%d, hidden %d\n",
				out, cfg.Arch, cfg.Layers, cfg.MoELayers(), cfg.Experts, cfg.TopK, cfg.Hidden)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&o.Arch, "arch", "qwen3_moe", "model family (model_type): "+strings.Join(append(synth.Arches(), synth.ArchDeepseekV4), ", ")+" (deepseek_v4: native names, FP8 and MXFP4 tensors)")
	f.StringVar(&o.Preset, "preset", "tiny", "size: tiny or small")
	f.StringVar(&out, "out", "", "output directory")
	f.Int64Var(&o.Seed, "seed", 1, "random seed (same seed, same bytes)")
	f.StringVar(&o.DType, "dtype", "bf16", "weight dtype: bf16 or f32")
	f.IntVar(&o.Shards, "shards", 2, "number of safetensors shards")
	f.IntVar(&o.Layers, "layers", 0, "override the preset's layer count (0: the preset's)")
	f.IntVar(&o.Experts, "experts", 0, "override the preset's routed experts per layer (0: the preset's)")
	f.IntVar(&o.TopK, "top-k", 0, "override the preset's experts per token (0: the preset's)")
	f.IntVar(&o.Hidden, "hidden", 0, "override the preset's hidden size (0: the preset's)")
	f.IntVar(&o.ExpertIntermediate, "expert-intermediate", 0, "override the preset's expert width (0: the preset's)")
	f.Float64Var(&o.Skew, "skew", 0, "fit the gate bias so expert popularity is Zipf(skew) per layer, e.g. 1.2 (deepseek_v3 only; 0: unskewed)")
	return c
}
