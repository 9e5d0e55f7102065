//go:build amd64 && !purego

package cpu

import (
	"golang.org/x/sys/cpu"

	"github.com/moemesh/moemesh/ascend"
)

// The AVX2 kernels in kernel_amd64.s compute exactly what kern4x2Go and kern1x4Go compute
// (see kernel.go for the order). They use no FMA, so the target (Zen 3) and any AVX2 machine
// give the same bits as the Go kernels. Where AVX-512 is present (Zen 4/5, recent Xeons),
// the wide kernels in kernel_wide_amd64.s do the same work 16 floats at a time: same
// products, same additions in the same order, so again the same bits.

// useAsm selects the assembly kernels; tests turn it off to compare against the Go ones.
var useAsm = cpu.X86.HasAVX2

// useWide selects the AVX-512 kernels where the CPU and OS support them (x/sys/cpu checks
// that the OS saves the zmm state); tests turn it off to compare against the AVX2 ones.
var useWide = useAsm && cpu.X86.HasAVX512F

// useBW selects gemm1x8ZBF16BW, the T=1 bf16 kernel that needs AVX512BW (VPERMI2W), over
// gemm1x8ZBF16; tests and benchmarks turn it off to compare the two.
var useBW = useWide && cpu.X86.HasAVX512BW

// haveF16C gates the f16 kernels (VCVTPH2PS); every AVX2 CPU has it, but it is a separate
// CPUID bit.
var haveF16C = cpu.X86.HasF16C

// Assembly kernels. acc is the accumulator block, x* point at k0 of the x rows, w* at k0 of
// the weight rows, n8 counts steps of 8 k. All pointers are checked slices' first elements.

//go:noescape
func gemm4x2F32(acc *float32, x0, x1, x2, x3 *float32, w0, w1 *float32, n8 int)

//go:noescape
func gemm4x2BF16(acc *float32, x0, x1, x2, x3 *float32, w0, w1 *uint16, n8 int)

//go:noescape
func gemm4x2F16(acc *float32, x0, x1, x2, x3 *float32, w0, w1 *uint16, n8 int)

//go:noescape
func gemm1x4F32(acc *float32, x *float32, w0, w1, w2, w3 *float32, n8 int)

//go:noescape
func gemm1x4BF16(acc *float32, x *float32, w0, w1, w2, w3 *uint16, n8 int)

//go:noescape
func gemm1x4F16(acc *float32, x *float32, w0, w1, w2, w3 *uint16, n8 int)

//go:noescape
func gemm4x2I8(acc *float32, x0, x1, x2, x3 *float32, w0, w1 *byte, n8 int)

//go:noescape
func gemm1x4I8(acc *float32, x *float32, w0, w1, w2, w3 *byte, n8 int)

func asmFor(dt ascend.DType) bool { return useAsm && (dt != ascend.F16 || haveF16C) }

// kern4x2 adds the lane products of x rows xs[0..3] and weight rows c0, c1 over
// k0 ≤ k < k0+kn (kn a positive multiple of 8) into acc.
func kern4x2(acc *block4x2, xs *[4][]float32, w *wmat, c0, c1, k0, kn int) {
	// MXFP4 takes the Go kernel, but never gets here: tileMX runs multi-row tiles as f32.
	if !asmFor(w.dt) || kn <= 0 || w.dt == ascend.MXFP4 {
		kern4x2Go(acc, xs, w, c0, c1, k0, kn)
		return
	}
	x0, x1, x2, x3 := &xs[0][k0 : k0+kn][0], &xs[1][k0 : k0+kn][0], &xs[2][k0 : k0+kn][0], &xs[3][k0 : k0+kn][0]
	o0, o1 := c0*w.k+k0, c1*w.k+k0
	switch w.dt {
	case ascend.I8:
		gemm4x2I8(&acc[0], x0, x1, x2, x3, &w.q[o0 : o0+kn][0], &w.q[o1 : o1+kn][0], kn/lanes)
	case ascend.F32:
		gemm4x2F32(&acc[0], x0, x1, x2, x3, &w.f32[o0 : o0+kn][0], &w.f32[o1 : o1+kn][0], kn/lanes)
	case ascend.BF16:
		gemm4x2BF16(&acc[0], x0, x1, x2, x3, &w.u16[o0 : o0+kn][0], &w.u16[o1 : o1+kn][0], kn/lanes)
	default:
		gemm4x2F16(&acc[0], x0, x1, x2, x3, &w.u16[o0 : o0+kn][0], &w.u16[o1 : o1+kn][0], kn/lanes)
	}
}

// kern1x4 adds the lane products of one x row and weight rows cs[0..3] over
// k0 ≤ k < k0+kn (kn a positive multiple of 8) into acc.
func kern1x4(acc *block1x4, x []float32, w *wmat, cs *[4]int, k0, kn int) {
	if !asmFor(w.dt) || kn <= 0 {
		kern1x4Go(acc, x, w, cs, k0, kn)
		return
	}
	if w.dt == ascend.MXFP4 {
		kern1x4MX(acc, x, w, cs, k0, kn)
		return
	}
	xp := &x[k0 : k0+kn][0]
	o0, o1, o2, o3 := cs[0]*w.k+k0, cs[1]*w.k+k0, cs[2]*w.k+k0, cs[3]*w.k+k0
	switch w.dt {
	case ascend.I8:
		gemm1x4I8(&acc[0], xp, &w.q[o0 : o0+kn][0], &w.q[o1 : o1+kn][0],
			&w.q[o2 : o2+kn][0], &w.q[o3 : o3+kn][0], kn/lanes)
	case ascend.F32:
		gemm1x4F32(&acc[0], xp, &w.f32[o0 : o0+kn][0], &w.f32[o1 : o1+kn][0],
			&w.f32[o2 : o2+kn][0], &w.f32[o3 : o3+kn][0], kn/lanes)
	case ascend.BF16:
		gemm1x4BF16(&acc[0], xp, &w.u16[o0 : o0+kn][0], &w.u16[o1 : o1+kn][0],
			&w.u16[o2 : o2+kn][0], &w.u16[o3 : o3+kn][0], kn/lanes)
	default:
		gemm1x4F16(&acc[0], xp, &w.u16[o0 : o0+kn][0], &w.u16[o1 : o1+kn][0],
			&w.u16[o2 : o2+kn][0], &w.u16[o3 : o3+kn][0], kn/lanes)
	}
}

// wideFor reports whether the wide kernels run for weights of dtype dt.
func wideFor(dt ascend.DType) bool { return useWide && asmFor(dt) }

//go:noescape
func gemm4x4ZF32(acc *float32, xp0, xp1 *float32, w0, w1, w2, w3 *float32, n8 int)

//go:noescape
func gemm4x4ZBF16(acc *float32, xp0, xp1 *float32, w0, w1, w2, w3 *uint16, n8 int)

//go:noescape
func gemm4x4ZF16(acc *float32, xp0, xp1 *float32, w0, w1, w2, w3 *uint16, n8 int)

//go:noescape
func gemm4x4ZI8(acc *float32, xp0, xp1 *float32, w0, w1, w2, w3 *byte, n8 int)

//go:noescape
func gemm1x8ZI8(acc *float32, x *float32, w0, w1, w2, w3, w4, w5, w6, w7 *byte, n8 int)

//go:noescape
func gemm8x4ZI8(acc *float32, xp0, xp1, xp2, xp3 *float32, w0, w1, w2, w3 *byte, n8 int)

//go:noescape
func gemm1x8ZF32(acc *float32, x *float32, w0, w1, w2, w3, w4, w5, w6, w7 *float32, n8 int)

//go:noescape
func gemm1x8ZBF16BW(acc *float32, x *float32, w0, w1, w2, w3, w4, w5, w6, w7 *uint16, n8 int)

//go:noescape
func gemm1x8ZBF16(acc *float32, x *float32, w0, w1, w2, w3, w4, w5, w6, w7 *uint16, n8 int)

//go:noescape
func gemm1x8ZF16(acc *float32, x *float32, w0, w1, w2, w3, w4, w5, w6, w7 *uint16, n8 int)

// kern4x4 adds the lane products of x rows xs[0..3] and weight rows cs[0..3] over
// k0 ≤ k < k0+kn (kn a positive multiple of 8) into acc (laid out as block4x4 says). The
// assembly reads the rows from xps, the same rows packed in pairs by packPairs. Callers
// check wideFor first.
func kern4x4(acc *block4x4, xs *[4][]float32, xps *[2][]float32, w *wmat, cs *[4]int, k0, kn int) {
	// MXFP4 takes the Go kernel, but never gets here: tileMX runs multi-row tiles as f32.
	if !wideFor(w.dt) || kn <= 0 || w.dt == ascend.MXFP4 {
		kern4x4Go(acc, xs, w, cs, k0, kn)
		return
	}
	x0, x1 := &xps[0][2*k0 : 2*(k0+kn)][0], &xps[1][2*k0 : 2*(k0+kn)][0]
	o0, o1, o2, o3 := cs[0]*w.k+k0, cs[1]*w.k+k0, cs[2]*w.k+k0, cs[3]*w.k+k0
	switch w.dt {
	case ascend.I8:
		gemm4x4ZI8(&acc[0], x0, x1, &w.q[o0 : o0+kn][0], &w.q[o1 : o1+kn][0],
			&w.q[o2 : o2+kn][0], &w.q[o3 : o3+kn][0], kn/lanes)
	case ascend.F32:
		gemm4x4ZF32(&acc[0], x0, x1, &w.f32[o0 : o0+kn][0], &w.f32[o1 : o1+kn][0],
			&w.f32[o2 : o2+kn][0], &w.f32[o3 : o3+kn][0], kn/lanes)
	case ascend.BF16:
		gemm4x4ZBF16(&acc[0], x0, x1, &w.u16[o0 : o0+kn][0], &w.u16[o1 : o1+kn][0],
			&w.u16[o2 : o2+kn][0], &w.u16[o3 : o3+kn][0], kn/lanes)
	default:
		gemm4x4ZF16(&acc[0], x0, x1, &w.u16[o0 : o0+kn][0], &w.u16[o1 : o1+kn][0],
			&w.u16[o2 : o2+kn][0], &w.u16[o3 : o3+kn][0], kn/lanes)
	}
}

// kern1x8 adds the lane products of one x row and weight rows cs[0..7] over
// k0 ≤ k < k0+kn (kn a positive multiple of 8) into acc. Callers check wideFor first.
func kern1x8(acc *block1x8, x []float32, w *wmat, cs *[8]int, k0, kn int) {
	if !wideFor(w.dt) || kn <= 0 {
		kern1x8Go(acc, x, w, cs, k0, kn)
		return
	}
	if w.dt == ascend.MXFP4 {
		kern1x8MX(acc, x, w, cs, k0, kn)
		return
	}
	xp := &x[k0 : k0+kn][0]
	var o [8]int
	for j, c := range cs {
		o[j] = c*w.k + k0
	}
	switch w.dt {
	case ascend.I8:
		q := func(j int) *byte { return &w.q[o[j] : o[j]+kn][0] }
		gemm1x8ZI8(&acc[0], xp, q(0), q(1), q(2), q(3), q(4), q(5), q(6), q(7), kn/lanes)
	case ascend.F32:
		f := func(j int) *float32 { return &w.f32[o[j] : o[j]+kn][0] }
		gemm1x8ZF32(&acc[0], xp, f(0), f(1), f(2), f(3), f(4), f(5), f(6), f(7), kn/lanes)
	case ascend.BF16:
		u := func(j int) *uint16 { return &w.u16[o[j] : o[j]+kn][0] }
		if useBW {
			gemm1x8ZBF16BW(&acc[0], xp, u(0), u(1), u(2), u(3), u(4), u(5), u(6), u(7), kn/lanes)
			return
		}
		gemm1x8ZBF16(&acc[0], xp, u(0), u(1), u(2), u(3), u(4), u(5), u(6), u(7), kn/lanes)
	default:
		u := func(j int) *uint16 { return &w.u16[o[j] : o[j]+kn][0] }
		gemm1x8ZF16(&acc[0], xp, u(0), u(1), u(2), u(3), u(4), u(5), u(6), u(7), kn/lanes)
	}
}

//go:noescape
func gemm8x4ZF32(acc *float32, xp0, xp1, xp2, xp3 *float32, w0, w1, w2, w3 *float32, n8 int)

//go:noescape
func gemm8x4ZBF16(acc *float32, xp0, xp1, xp2, xp3 *float32, w0, w1, w2, w3 *uint16, n8 int)

//go:noescape
func gemm8x4ZF16(acc *float32, xp0, xp1, xp2, xp3 *float32, w0, w1, w2, w3 *uint16, n8 int)

// kern8x4 is kern4x4 for 8 rows (4 packed pairs), laid out as block8x4 says. Callers
// check wideFor first.
func kern8x4(acc *block8x4, xs *[8][]float32, xps *[4][]float32, w *wmat, cs *[4]int, k0, kn int) {
	// MXFP4 takes the Go kernel, but never gets here: tileMX runs multi-row tiles as f32.
	if !wideFor(w.dt) || kn <= 0 || w.dt == ascend.MXFP4 {
		kern8x4Go(acc, xs, w, cs, k0, kn)
		return
	}
	var x [4]*float32
	for p := range x {
		x[p] = &xps[p][2*k0 : 2*(k0+kn)][0]
	}
	o0, o1, o2, o3 := cs[0]*w.k+k0, cs[1]*w.k+k0, cs[2]*w.k+k0, cs[3]*w.k+k0
	switch w.dt {
	case ascend.I8:
		gemm8x4ZI8(&acc[0], x[0], x[1], x[2], x[3], &w.q[o0 : o0+kn][0], &w.q[o1 : o1+kn][0],
			&w.q[o2 : o2+kn][0], &w.q[o3 : o3+kn][0], kn/lanes)
	case ascend.F32:
		gemm8x4ZF32(&acc[0], x[0], x[1], x[2], x[3], &w.f32[o0 : o0+kn][0], &w.f32[o1 : o1+kn][0],
			&w.f32[o2 : o2+kn][0], &w.f32[o3 : o3+kn][0], kn/lanes)
	case ascend.BF16:
		gemm8x4ZBF16(&acc[0], x[0], x[1], x[2], x[3], &w.u16[o0 : o0+kn][0], &w.u16[o1 : o1+kn][0],
			&w.u16[o2 : o2+kn][0], &w.u16[o3 : o3+kn][0], kn/lanes)
	default:
		gemm8x4ZF16(&acc[0], x[0], x[1], x[2], x[3], &w.u16[o0 : o0+kn][0], &w.u16[o1 : o1+kn][0],
			&w.u16[o2 : o2+kn][0], &w.u16[o3 : o3+kn][0], kn/lanes)
	}
}
