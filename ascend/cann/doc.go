// Package cann is the ascend backend for Huawei Ascend NPUs through CANN, registered as
// "cann" when built with the cann build tag (without it the package is empty). All C calls
// go through ascend/cann/acl; with -tags cann they reach the CPU emulator in
// ascend/cann/emu, with -tags cann,cann_real the real toolkit (see acl's doc).
//
// A card is one device: its own ACL context and stream, owned by ONE worker goroutine locked
// to an OS thread (ACL contexts are per thread), through which every ACL call of the card
// goes. Device memory comes from a caching allocator (blocks are reused in stream order and
// only returned with aclrtFree after a stream sync, on OOM or at Close); MemInfo counts the
// bytes of live buffers against the card's budget. Host↔device copies go through
// page-locked staging buffers (aclrtMallocHost) with 64-byte aligned async copies; an
// unaligned partial Write reads the aligned head back first.
//
// Ops:
//   - GroupedMatmul: aclnnGroupedMatmulV5 (groupType 0, splitItem 3, groupListType 1 =
//     INT64 counts on the device), weights as transposed [K, N] views (strides) over their
//     [N, K] storage. V5 needs x and weight in one dtype and our x is f32, so bf16/f16
//     weights are widened to f32 scratch with aclnnCast per call (exact; a faster path
//     casting x down instead is future work).
//   - SwiGLU without limit: aclnnSwiGlu (dim -1). With a limit: host fallback (copy x back,
//     compute as ascend/cpu does, copy out), because aclnnSwiGlu has no clamp; a device path
//     needs aclnnClamp on the gate/up halves first.
//   - ScatterAdd: host fallback, because the contract is bit-exact sequential float32
//     order and aclnn's scatter/index-add kernels accumulate in an unspecified order.
//   - Quantised weights (I8, MXFP4; quant.go): held on the device in their quantised
//     layout (values, then scales at an aligned offset) and dequantised to f32 scratch per
//     GroupedMatmul with aclnnCast, aclnnMul and (MXFP4) aclnnEmbedding lookups, exactly
//     (the same f32 weights ReadF32 gives), then multiplied like f32 weights.
//     aclnnGroupedMatmulV5's A16W8 antiquant mode would skip the scratch but takes
//     f16/bf16 activations only, and CANN documents no weight-only MXFP4 mode
//     (docs/cann.md §4).
//
// Beyond ascend.Ops every card implements Dense (dense.go): Matmul (aclnnMatmul, the
// weight as a transposed view), RMSNorm (aclnnRmsNorm with its mandatory rstd output in
// device scratch) and GatingTopKSoftmax (aclnnMoeGatingTopKSoftmax: softmax, top k, no
// renormalisation). The model's forward pass reaches a card only through ascend.Ops, so a
// router on --device cann runs its Linears through GroupedMatmul on the card and its norms,
// attention, RoPE and gating on the host; docs/cann.md lists what is emulated and what
// falls back.
//
// Import rule: cann imports ascend, ascend/cann/acl and the standard library.
package cann
