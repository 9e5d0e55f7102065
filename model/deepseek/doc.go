// Package deepseek is the forward pass of DeepSeek-V2/V3-architecture models
// (DeepSeek-V2/V2-Lite, V3/R1, Kimi K2, Moonlight): MLA attention, YaRN, dense prefix
// layers, shared experts; routed experts through the model.Experts seam.
//
// Imports model, model/nn, model/safetensors, ascend.
package deepseek
