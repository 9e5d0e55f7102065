// Package deepseek4 runs DeepSeek-V4 (model_type deepseek_v4: V4-Flash, V4-Pro): the V4
// config keys, the native and transformers-port tensor names with their shipped shapes
// and dtypes, the routing rule mapped onto model.GateSpec, the clamped SwiGLU, the mHC
// residual streams with their Sinkhorn-normalised mixing, the attention-sink softmax, the
// compressor's gated pooling, the lightning indexer's top-k, and the forward pass that
// strings them together (LoadModel, Model.Forward): hybrid window/CSA/HCA attention with
// its caches, the quantisation-aware roundings of the reference, grouped low-rank output
// projection, and MoE layers whose routed experts go through the model.Experts seam. Its
// chat format (the release's encoding_dsv4.py) is chat.EncodeDSV4. It
// follows the official reference (inference/model.py and kernel.py of the
// DeepSeek-V4-Flash repository); every decision and its source is listed in
// docs/models/deepseek-v4.md.
//
// The forward pass is a straightforward host implementation (float32 values, float64
// sums, attention token by token from the caches); the MoE layers' gate and shared expert
// run on the card through model.MoELayer like every other family.
//
// Imports model (config, gating, MoE layers), model/nn (norms, rotary embeddings, KV pool
// reservations), model/quant (number formats), model/safetensors and ascend.
package deepseek4
