package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/model/synth"
)

func newMkmodel(g *globals) *cobra.Command {
	var o synth.Options
	var out string
	c := &cobra.Command{
		Use:     "mkmodel",
		Short:   "Write a random-weight checkpoint in the exact Hugging Face layout of a model family",
		Example: "  moemesh mkmodel --arch deepseek_v3 --preset tiny --out ./tiny-dsv3 --seed 7 --dtype bf16",
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
	f.StringVar(&o.Arch, "arch", "qwen3_moe", "model family (model_type), e.g. qwen3_moe, mixtral, deepseek_v3")
	f.StringVar(&o.Preset, "preset", "tiny", "size: tiny or small")
	f.StringVar(&out, "out", "", "output directory")
	f.Int64Var(&o.Seed, "seed", 1, "random seed (same seed, same bytes)")
	f.StringVar(&o.DType, "dtype", "bf16", "weight dtype: bf16 or f32")
	f.IntVar(&o.Shards, "shards", 2, "number of safetensors shards")
	return c
}
