package placement

import (
	"path/filepath"
	"testing"

	"github.com/moemesh/moemesh/ascend"
	_ "github.com/moemesh/moemesh/ascend/cpu"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/model/synth"
)

// ExpertBytes counts what a daemon's card holds for one expert: DeepSeek-V4's MXFP4
// experts packed (values + E8M0 scales, 4.25 bits a weight), bf16 experts as stored; and
// it equals the memory an ExpertSet on a cpu card takes for that expert.
func TestExpertBytes(t *testing.T) {
	for _, tc := range []struct {
		arch string
		dt   ascend.DType
	}{{synth.ArchDeepseekV4, ascend.MXFP4}, {"qwen3_moe", ascend.BF16}} {
		t.Run(tc.arch, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), tc.arch)
			cfg, err := synth.Write(dir, synth.Options{Arch: tc.arch, Preset: synth.Tiny, Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			got, err := ExpertBytes(dir, cfg)
			if err != nil {
				t.Fatal(err)
			}
			want, err := model.ExpertStorageBytes(tc.dt, cfg.Hidden, cfg.ExpertIntermediate)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("ExpertBytes = %d, want %d (%v)", got, want, tc.dt)
			}
			be, err := ascend.Open("cpu")
			if err != nil {
				t.Fatal(err)
			}
			card, err := be.OpenCard(0, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer card.Close()
			ck, err := safetensors.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			if _, err := model.LoadLocal(ck, cfg, card, cfg.MoELayers()[:1]); err != nil {
				t.Fatal(err)
			}
			if used := card.MemInfo().Used; used != int64(cfg.Experts)*got {
				t.Fatalf("a card holding %d experts uses %d bytes, ExpertBytes says %d each", cfg.Experts, used, got)
			}
		})
	}
	if _, err := ExpertBytes(t.TempDir(), &model.Config{}); err == nil {
		t.Fatalf("a config without experts: %v", err)
	}
}
