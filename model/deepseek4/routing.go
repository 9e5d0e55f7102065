package deepseek4

import (
	"fmt"
	"math"

	"github.com/moemesh/moemesh/model"
)

// LayerGate is MoE layer's routing rule as model.GateSpec, the one gate implementation
// the router and the in-process path share. model.py Gate.forward, the reference:
//
//	s = sqrt(softplus(z))                 (f32 logits z = W_gate·x)
//	ids = tid2eid[token]  if layer < num_hash_layers   (hash routing: no bias, no top-k)
//	ids = topk(s + bias)  otherwise                    (the bias only selects)
//	w = s[ids] / Σ s[ids] · routed_scaling_factor
//
// GateSpec computes the same (its normalisation adds 1e-20 to the sum, as the HF port
// does; sqrt-softplus of a finite logit is positive, so the sum is never 0 and the results
// agree). bias is gate.bias [E] for score-routed layers; tid2eid the [vocab, K] table of a
// hash layer (converted to int32 by the loader). Giving the wrong one is an error: a hash
// layer with a bias or a routed layer without one means the checkpoint and config
// disagree about num_hash_layers.
func (c *Config) LayerGate(layer int, bias []float32, tid2eid []int32) (model.GateSpec, error) {
	if layer < 0 || layer >= c.Layers {
		return model.GateSpec{}, fmt.Errorf("%w: deepseek_v4 has %d layers, no layer %d (MTP layers are not served)", ErrConfig, c.Layers, layer)
	}
	g := c.GateSpec()
	if c.IsHashLayer(layer) {
		if bias != nil || len(tid2eid) != c.Vocab*c.TopK {
			return model.GateSpec{}, fmt.Errorf("%w: deepseek_v4 layer %d routes by token id: want tid2eid [%d, %d] (%d ids) and no bias, got %d ids and %d bias values",
				ErrConfig, layer, c.Vocab, c.TopK, c.Vocab*c.TopK, len(tid2eid), len(bias))
		}
		g.Hash = tid2eid
	} else {
		if tid2eid != nil || len(bias) != c.Experts {
			return model.GateSpec{}, fmt.Errorf("%w: deepseek_v4 layer %d routes by score: want gate.bias [%d] and no tid2eid, got %d bias values and %d ids",
				ErrConfig, layer, c.Experts, len(bias), len(tid2eid))
		}
		g.Bias = bias
	}
	if err := g.Validate(); err != nil {
		return model.GateSpec{}, fmt.Errorf("deepseek_v4 layer %d: %w", layer, err)
	}
	return g, nil
}

// SwiGLU is model.py Expert.forward between the projections, for routed and shared
// experts alike: out = silu(min(gate, limit)) · clamp(up, −limit, limit); limit 0 (or
// less) disables the clamp. gate, up and out have one length; the clamp is one-sided on
// gate because silu is already bounded below.
func SwiGLU(gate, up, out []float32, limit float32) {
	for i, g := range gate[:len(out)] {
		u := up[i]
		if limit > 0 {
			g = min(g, limit)
			u = max(min(u, limit), -limit)
		}
		out[i] = float32(float64(g) / (1 + math.Exp(-float64(g))) * float64(u))
	}
}
