// Package deepseek4 holds the DeepSeek-V4 (model_type deepseek_v4: V4-Flash, V4-Pro)
// architecture pieces that differ from every other family: the V4 config keys, the native
// and transformers-port tensor names with their shipped shapes and dtypes, the routing
// rule mapped onto model.GateSpec, the clamped SwiGLU, the mHC residual streams with their
// Sinkhorn-normalised mixing, the attention-sink softmax, the compressor's gated pooling
// and the lightning indexer's top-k — each a pure function following the official
// reference (inference/model.py and kernel.py of the DeepSeek-V4-Flash repository; every
// decision and its source is listed in docs/models/deepseek-v4.md).
//
// The forward pass that strings them together (attention, KV cache layouts, the layer
// loop) is later work; these functions are its tested parts.
//
// Imports model (config, gating) and model/nn (rotary embeddings).
package deepseek4
