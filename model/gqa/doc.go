// Package gqa is the forward pass of Llama-style MoE decoders with grouped-query
// attention: qwen3_moe, qwen2_moe, mixtral, olmoe, granitemoe (models.md §1, §2.1–2.5, §4).
//
// Dense weights (attention projections, lm_head) live on an ascend.Card in their
// checkpoint dtype and run through nn.Linear; norms and the embedding table stay on the
// host in f32 (or bf16 for the table). Each MoE layer's gate and shared expert run on the
// same card via model.MoELayer, and the routed experts are reached only through the
// model.Experts seam, so the same Model serves from in-process experts or from the mesh.
//
// Import rule: gqa imports model, model/nn, model/safetensors and ascend; never a service.
package gqa
