package meshtest

import (
	"testing"

	"github.com/moemesh/moemesh/model/deepseek4"
)

// TestGenerateMeshEqualsLocalDeepseekV4: the tiny DeepSeek-V4 checkpoint (FP8 linears,
// MXFP4 experts, hash-routed first layer, window/CSA/HCA attention) generates the same 32
// greedy tokens, and in exact mode the same logits bit for bit, with its routed experts
// on a mesh of three daemons as in process; 8 batched sequences equal their solo runs.
// Both sides hold the MXFP4 experts packed, as stored (deepseek4_packed_test.go checks the
// memory and compares with experts dequantised to bf16).
func TestGenerateMeshEqualsLocalDeepseekV4(t *testing.T) {
	checkGenerate(t, "deepseek_v4", deepseek4.LoadModel)
}
