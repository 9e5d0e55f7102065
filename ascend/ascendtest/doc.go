// Package ascendtest is the conformance suite every ascend backend must pass:
// RunAll(t, backend) checks memory accounting and budgets, dtype conversions, the three
// expert ops against reference math written here independently of any backend (float64
// accumulation, its own bf16/f16 rounding), row independence and determinism, error
// reporting on bad arguments (errors, never panics) and Close.
//
// What the suite pins down beyond the comments in ascend.go:
//   - bf16/f16 stores round to nearest even and keep NaN a NaN; bit-exact.
//   - GroupedMatmul on inputs whose every partial sum is exact in float32 must be exact; on
//     random inputs it must be within Tol* · Σ|x·w| of the float64 result for the weights as
//     stored. A row's output is bit-identical whatever batch, group position or row count
//     it is computed in, and repeated calls give identical bits.
//   - ScatterAdd is bit-exact to the sequential float32 loop (product rounded, then added).
//   - Errors: dtypes → ErrDType; shapes, counts, offsets and indices that do not fit →
//     ErrShape; nil, freed or aliased (out also an input) buffers and a NaN limit →
//     ErrInvalid; another card's buffer → ErrForeignBuffer; after Close → ErrClosed.
//     Failed ops leave their output untouched; failed Allocs leave MemInfo unchanged.
//   - Buffers may have zero-sized dimensions; Alloc with no dimensions is an error.
//   - Quantised weights (I8, MXFP4): a card that ascend.Supports them stores the documented
//     layout (Write raw, ReadF32 dequantised, WriteF32 quantising whole rows, Bytes and the
//     budget counting values and scales) and passes the exact, random, mixed-dtype and
//     row-independence GroupedMatmul checks with them; every other card refuses them in
//     Alloc with ErrDType.
//
// Import rule: ascendtest imports ascend, the standard library and testing; nothing else
// from the module (in particular no backend: backends import it from their tests).
package ascendtest
