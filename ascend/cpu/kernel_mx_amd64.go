//go:build amd64 && !purego

package cpu

import "github.com/moemesh/moemesh/ascend"

// MXFP4 on amd64 at T=1 (single-row tiles; multi-row tiles are decoded to f32 by tileMX):
// gemm1x4MX (AVX2) and gemm1x8ZMX (AVX-512) decode the packed nibbles in registers. They
// multiply by exactly the weights the Go kernel uses, in the same lane order, so the
// results are the same bits. The Go side only lays out the block scales for them.

//go:noescape
func gemm1x4MX(acc *float32, x *float32, w0, w1, w2, w3 *byte, sc *float32, n8 int)

// e8m0Half is half of each E8M0 scale, 2^(e−128) (exact: the smallest is 2^−128, a float32
// subnormal): gemm1x4MX's VPSHUFB table holds 2·e2m1, which fits int8 exactly.
var e8m0Half = func() (t [256]float32) {
	for i := range t {
		t[i] = ascend.E8M0Value(byte(i)) / 2 // not e8m0Tab: init() fills it after this runs
	}
	return t
}()

// mxAsmChunk bounds the k range of one gemm1x4MX or gemm1x8ZMX call, so the scales fit a
// small stack array; acc carries the lanes across calls.
const mxAsmChunk = 2048

// mxScales lays out the half scales of rows cs over [k, k+n) for the assembly, row-
// interleaved: sc[len(cs)·block + j] is row cs[j]'s. o[j] is the row's packed byte offset.
func mxScales(sc []float32, o []int, w *wmat, cs []int, k, n int) {
	for j, c := range cs {
		i0 := c*w.k + k
		for b, e := range w.sc[i0/ascend.MXBlock : (i0+n)/ascend.MXBlock] {
			sc[len(cs)*b+j] = e8m0Half[e]
		}
		o[j] = i0 / 2
	}
}

// kern1x4MX is the T=1 path: the 4 rows are decoded in registers by gemm1x4MX, which
// needs whole scale blocks; other ranges (none arise, K being a multiple of 32) take the
// Go kernel.
func kern1x4MX(acc *block1x4, x []float32, w *wmat, cs *[4]int, k0, kn int) {
	if k0%ascend.MXBlock != 0 || kn%ascend.MXBlock != 0 {
		kern1x4Go(acc, x, w, cs, k0, kn)
		return
	}
	var sc [mxAsmChunk / ascend.MXBlock * 4]float32
	var o [4]int
	for k := k0; k < k0+kn; k += mxAsmChunk {
		n := min(mxAsmChunk, k0+kn-k)
		mxScales(sc[:], o[:], w, cs[:], k, n)
		gemm1x4MX(&acc[0], &x[k : k+n][0], &w.q[o[0] : o[0]+n/2][0], &w.q[o[1] : o[1]+n/2][0],
			&w.q[o[2] : o[2]+n/2][0], &w.q[o[3] : o[3]+n/2][0], &sc[0], n/lanes)
	}
}

//go:noescape
func gemm1x8ZMX(acc *float32, x *float32, w0, w1, w2, w3, w4, w5, w6, w7 *byte, sc *float32, n32 int)

// kern1x8MX is the T=1 path of the wide kernels: gemm1x8ZMX decodes two rows per 16-wide
// register. It needs whole scale blocks; other ranges (none arise, K being a multiple of
// 32) take the Go kernel.
func kern1x8MX(acc *block1x8, x []float32, w *wmat, cs *[8]int, k0, kn int) {
	if k0%ascend.MXBlock != 0 || kn%ascend.MXBlock != 0 {
		kern1x8Go(acc, x, w, cs, k0, kn)
		return
	}
	var sc [mxAsmChunk / ascend.MXBlock * 8]float32
	var o [8]int
	for k := k0; k < k0+kn; k += mxAsmChunk {
		n := min(mxAsmChunk, k0+kn-k)
		mxScales(sc[:], o[:], w, cs[:], k, n)
		q := func(j int) *byte { return &w.q[o[j] : o[j]+n/2][0] }
		gemm1x8ZMX(&acc[0], &x[k : k+n][0], q(0), q(1), q(2), q(3), q(4), q(5), q(6), q(7), &sc[0], n/ascend.MXBlock)
	}
}
