package model

import (
	"context"
	"fmt"
)

// Routing is the gate's decision for T tokens of one MoE layer: token t uses experts
// Experts[t*TopK : (t+1)*TopK] (indices within the layer, in selection order) with the
// matching Weights (already renormalised and scaled as the family requires).
type Routing struct {
	TopK    int
	Experts []int32
	Weights []float32
}

// Tokens is the number of tokens routed.
func (r Routing) Tokens() int {
	if r.TopK == 0 {
		return 0
	}
	return len(r.Experts) / r.TopK
}

// Validate checks the shape of r against T tokens and E experts.
func (r Routing) Validate(tokens, experts int) error {
	if r.TopK <= 0 {
		return fmt.Errorf("%w: routing top-k %d", ErrRouting, r.TopK)
	}
	if len(r.Experts) != tokens*r.TopK || len(r.Weights) != len(r.Experts) {
		return fmt.Errorf("%w: routing has %d experts and %d weights for %d tokens × top-%d",
			ErrRouting, len(r.Experts), len(r.Weights), tokens, r.TopK)
	}
	for i, e := range r.Experts {
		if e < 0 || int(e) >= experts {
			return fmt.Errorf("%w: token %d routed to expert %d of %d", ErrRouting, i/r.TopK, e, experts)
		}
	}
	return nil
}

// Experts runs the routed experts of one MoE layer. It is the seam between the forward
// pass and where experts live: in this process (Local) or across the mesh (router.Mesh).
// Both must give the same result; in f32 with per-pair combine they are bit-identical.
type Experts interface {
	// Forward writes out[t] = Σ_k Weights[t,k] · E_{Experts[t,k]}(x[t]) for the T = len(x)/hidden
	// tokens of x (row-major [T, hidden] f32). out has the shape of x and is overwritten.
	Forward(ctx context.Context, layer int, x []float32, hidden int, r Routing, out []float32) error
}

// Scoring is how a gate turns router logits z into scores.
type Scoring uint8

// Scoring functions of the supported families (models.md §3).
const (
	// Softmax: p = softmax(z) over all experts (Mixtral, Qwen, OLMoE, DeepSeek-V2).
	Softmax Scoring = iota + 1
	// Sigmoid: s = sigmoid(z) (DeepSeek-V3, Kimi K2, Moonlight).
	Sigmoid
	// SqrtSoftplus: s = sqrt(softplus(z)) (DeepSeek-V4).
	SqrtSoftplus
	// TopKSoftmax: top-K of raw z, then softmax over the K (Granite).
	TopKSoftmax
)

// GroupScore is how group-limited routing scores a group of experts.
type GroupScore uint8

// Group scores.
const (
	GroupNone GroupScore = iota
	// GroupMax: max of the scores in the group (DeepSeek-V2 group_limited_greedy).
	GroupMax
	// GroupTop2Sum: sum of the two largest biased scores (DeepSeek-V3 noaux_tc).
	GroupTop2Sum
)

// GateSpec is a family's routing rule for one MoE layer, derived from config.json.
type GateSpec struct {
	Experts int
	TopK    int
	Scoring Scoring
	// Renormalize divides the selected weights by their sum (+1e-20 for sigmoid-like scores).
	Renormalize bool
	// Groups and TopKGroups enable group-limited routing (0 or 1 group: off).
	Groups     int
	TopKGroups int
	GroupScore GroupScore
	// Scale multiplies the final weights (routed_scaling_factor); 0 means 1.
	Scale float32
	// Bias is added to the scores for selection only (e_score_correction_bias); may be nil.
	Bias []float32
	// Hash, when non-nil, fixes the experts per token id (DeepSeek-V4 tid2eid, [vocab, TopK]);
	// the scores then only supply the weights.
	Hash []int32
}
