// Package ascend is the accelerator contract of moemesh: a Backend opens Cards (units of
// placement with a memory budget), Cards hold Buffers and run the expert ops (grouped
// matmul, SwiGLU, weighted scatter-add). Backends register by name: ascend/cpu (pure Go,
// always built) and ascend/cann (Huawei Ascend through CANN, behind the cann build tag).
// ascend/ascendtest is the conformance suite every backend must pass.
//
// Import rule: ascend imports only the standard library; nothing in this module below it.
package ascend
