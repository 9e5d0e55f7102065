package cpu

import (
	"math"

	"github.com/moemesh/moemesh/ascend"
)

// The grouped-matmul kernels. Every output element out[r][n] = Σ_k x[r][k]·w[n][k] is
// summed in one fixed order, whatever kernel, block shape, thread or tile computes it:
//
//  1. k < K8 (K rounded down to a multiple of 8) is split into 8 lanes; lane j sums the
//     products of k = j, j+8, j+16, … in increasing k: s_j = s_j + float32(x·w), from +0.
//  2. The lanes are folded as ((s0+s4) + (s2+s6)) + ((s1+s5) + (s3+s7)).
//  3. The tail K8 ≤ k < K is added one product at a time, in increasing k.
//
// Every product is rounded to float32 before it is added (no fused multiply-add): the AVX2
// kernels use VMULPS then VADDPS, and the Go code converts each product explicitly, which
// the spec says prevents fusion even where the compiler could fuse (GOAMD64=v3). bf16 and
// f16 weights are widened exactly, so they add no rounding of their own. This makes a row's
// result independent of M, of the row's place in its group, of the other rows and of the
// thread count, and the Go and assembly kernels bit-identical.

const lanes = 8

// wmat is one [N, K] weight matrix as the kernels see it: f32 data in f32, bf16/f16 bits in
// u16.
type wmat struct {
	dt  ascend.DType
	f32 []float32
	u16 []uint16
	k   int
}

// at returns w[n][k] widened to f32.
func (w *wmat) at(n, k int) float32 {
	i := n*w.k + k
	switch w.dt {
	case ascend.F32:
		return w.f32[i]
	case ascend.BF16:
		return ascend.BF16ToF32(w.u16[i])
	}
	return ascend.F16ToF32(w.u16[i])
}

// fold is step 2 of the summation order.
func fold(s *[lanes]float32) float32 {
	a0, a1, a2, a3 := s[0]+s[4], s[1]+s[5], s[2]+s[6], s[3]+s[7]
	return (a0 + a2) + (a1 + a3)
}

// finish completes one output element: fold the lanes, then add the tail products (step 3).
func finish(s *[lanes]float32, x []float32, w *wmat, n, k8 int) float32 {
	sum := fold(s)
	for k := k8; k < len(x); k++ {
		sum += float32(x[k] * w.at(n, k))
	}
	return sum
}

// lanesGo adds the products of x (kn = len(x) values, a multiple of 8) and weight row n
// from k0 onwards into acc, in the lane order above. It is the portable kernel and the
// reference the assembly kernels are tested against.
func lanesGo(acc *[lanes]float32, x []float32, w *wmat, n, k0 int) {
	kn := len(x) &^ (lanes - 1)
	off := n*w.k + k0
	a0, a1, a2, a3, a4, a5, a6, a7 := acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7]
	switch w.dt {
	case ascend.F32:
		ws := w.f32[off : off+kn]
		for i := 0; i+lanes <= kn; i += lanes {
			xv, wv := x[i:i+lanes:i+lanes], ws[i:i+lanes:i+lanes]
			a0 += float32(xv[0] * wv[0])
			a1 += float32(xv[1] * wv[1])
			a2 += float32(xv[2] * wv[2])
			a3 += float32(xv[3] * wv[3])
			a4 += float32(xv[4] * wv[4])
			a5 += float32(xv[5] * wv[5])
			a6 += float32(xv[6] * wv[6])
			a7 += float32(xv[7] * wv[7])
		}
	case ascend.BF16:
		ws := w.u16[off : off+kn]
		for i := 0; i+lanes <= kn; i += lanes {
			xv, wv := x[i:i+lanes:i+lanes], ws[i:i+lanes:i+lanes]
			a0 += float32(xv[0] * math.Float32frombits(uint32(wv[0])<<16))
			a1 += float32(xv[1] * math.Float32frombits(uint32(wv[1])<<16))
			a2 += float32(xv[2] * math.Float32frombits(uint32(wv[2])<<16))
			a3 += float32(xv[3] * math.Float32frombits(uint32(wv[3])<<16))
			a4 += float32(xv[4] * math.Float32frombits(uint32(wv[4])<<16))
			a5 += float32(xv[5] * math.Float32frombits(uint32(wv[5])<<16))
			a6 += float32(xv[6] * math.Float32frombits(uint32(wv[6])<<16))
			a7 += float32(xv[7] * math.Float32frombits(uint32(wv[7])<<16))
		}
	default: // F16: the slow widening is acceptable here, amd64 uses F16C
		ws := w.u16[off : off+kn]
		for i := 0; i+lanes <= kn; i += lanes {
			xv, wv := x[i:i+lanes:i+lanes], ws[i:i+lanes:i+lanes]
			a0 += float32(xv[0] * ascend.F16ToF32(wv[0]))
			a1 += float32(xv[1] * ascend.F16ToF32(wv[1]))
			a2 += float32(xv[2] * ascend.F16ToF32(wv[2]))
			a3 += float32(xv[3] * ascend.F16ToF32(wv[3]))
			a4 += float32(xv[4] * ascend.F16ToF32(wv[4]))
			a5 += float32(xv[5] * ascend.F16ToF32(wv[5]))
			a6 += float32(xv[6] * ascend.F16ToF32(wv[6]))
			a7 += float32(xv[7] * ascend.F16ToF32(wv[7]))
		}
	}
	acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7] = a0, a1, a2, a3, a4, a5, a6, a7
}

// block4x2 is the accumulator block of kern4x2: [row][col][lane].
type block4x2 = [4 * 2 * lanes]float32

// block1x4 is the accumulator block of kern1x4: [col][lane].
type block1x4 = [4 * lanes]float32

// lane returns the 8 lanes starting at i (a multiple of 8) of an accumulator block.
func lane(acc []float32, i int) *[lanes]float32 { return (*[lanes]float32)(acc[i : i+lanes]) }

// kern4x2Go is the portable form of kern4x2.
func kern4x2Go(acc *block4x2, xs *[4][]float32, w *wmat, c0, c1, k0, kn int) {
	for r, x := range xs {
		lanesGo(lane(acc[:], (r*2+0)*lanes), x[k0:k0+kn], w, c0, k0)
		lanesGo(lane(acc[:], (r*2+1)*lanes), x[k0:k0+kn], w, c1, k0)
	}
}

// kern1x4Go is the portable form of kern1x4.
func kern1x4Go(acc *block1x4, x []float32, w *wmat, cs *[4]int, k0, kn int) {
	for j, c := range cs {
		lanesGo(lane(acc[:], j*lanes), x[k0:k0+kn], w, c, k0)
	}
}
