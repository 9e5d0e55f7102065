package placement

import (
	"fmt"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/safetensors"
)

// ExpertBytes is the memory one routed expert of the checkpoint in dir takes on a card:
// the size of its gate, up and down weights as model.ReadExpert gives them, which is what a
// daemon uploads. Packed MXFP4 experts (DeepSeek-V4) count values and E8M0 scales, 4.25
// bits a weight, as a card with MXFP4 kernels (cpu) holds them and as `moemesh plan`
// counts them as shipped; a card without them (cann today) holds bf16, 3.76× more, and
// this count is then too small (the daemon skips what does not fit). FP8 weights count as
// the bf16 they are dequantised to.
func ExpertBytes(dir string, cfg *model.Config) (int64, error) {
	layers := cfg.MoELayers()
	if len(layers) == 0 || cfg.Experts == 0 {
		return 0, fmt.Errorf("placement: %s has no routed experts", dir)
	}
	ck, err := safetensors.Open(dir)
	if err != nil {
		return 0, err
	}
	defer ck.Close()
	w, err := model.ReadExpert(ck, cfg, model.ExpertKey{Layer: layers[0], Expert: 0})
	if err != nil {
		return 0, fmt.Errorf("placement: sizing an expert: %w", err)
	}
	return w.Bytes(), nil
}
