package placement

import (
	"fmt"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/safetensors"
)

// ExpertBytes is the memory one routed expert of the checkpoint in dir takes on a card:
// the size of its gate, up and down weights as stored (what a daemon uploads).
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
	return int64(len(w.Gate) + len(w.Up) + len(w.Down)), nil
}
