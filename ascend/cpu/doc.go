// Package cpu is the pure-Go ascend backend, registered as "cpu": emulated cards whose
// buffers are Go memory (f32 as []float32, bf16/f16 as raw []uint16) with a byte budget, and
// whose ops run on the CPU. It is the default backend, the reference other backends are
// compared with, and the one tests use.
//
// GroupedMatmul is the expert-FFN hot path: a blocked kernel (4 rows × 2 columns, or 1 row ×
// 4 columns for GEMV-like batches) parallelised over output-column tiles by a fixed pool of
// helper goroutines that each card owns and Close stops. Each goroutine has a home range of
// an op's tiles and takes the others' only when it has run out (pool.go), so at T=1 a core
// reads the same weights call after call, from its own caches. On amd64 the inner kernels
// are AVX2 assembly (no FMA), or AVX-512 assembly where the CPU has it (8 or 4 rows × 4
// columns, 1 row × 8 columns, two output elements per 16-wide register; with AVX512BW the
// bf16 1 × 8 kernel widens a cache line of two rows per VPERMI2W and prefetches); elsewhere,
// or with the purego build tag, portable Go kernels run. All give bit-identical results, in a summation
// order fixed per output element (see kernel.go), so a row's result never depends on the
// batch around it, the thread count or the CPU's vector width.
//
// Quantised weights (quant.go) keep the ascend.QuantLayout storage as written. I8 runs the
// same kernels with int8 → f32 conversion in-register (VPMOVSXBD + VCVTDQ2PS) and the row
// scale applied once per output. MXFP4 rows are decoded in registers at T=1 (VPSHUFB on the
// nibbles, gemm1x4MX and gemm1x8ZMX); tiles of several rows decode their weight panel to f32
// once and run the f32 kernels (tileMX). Both are deterministic in the same order.
//
// Storage conversions come from ascend (BF16ToF32, F32ToBF16, ...): one definition of the
// module's rounding for every backend.
//
// Import rule: cpu imports ascend, the standard library and golang.org/x/sys/cpu (feature
// detection); nothing else from the module.
package cpu
