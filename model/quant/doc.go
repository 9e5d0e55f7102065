// Package quant decodes the low-precision number formats DeepSeek-V4 checkpoints ship
// (models.md §5.1, §5.3): FP8 E4M3 ("fn": no infinities) values with E8M0 (ue8m0,
// exponent-only) scales over 128×128 blocks for the non-expert linears, and MXFP4 routed
// experts — E2M1 codes packed two per byte, one E8M0 scale per 32 values of a row.
//
// The functions work on raw little-endian bytes as they sit in a safetensors file, so an
// expert kernel can keep a weight packed in memory and dequantise one row (or one block)
// at the moment it needs it. Every finite value of these formats is exactly representable
// in float32, so decoding is exact; only the product with the scale can underflow.
//
// Import rule: the standard library only (a leaf, like model/nn and model/safetensors).
package quant
