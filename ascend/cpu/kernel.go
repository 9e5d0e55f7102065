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

// The wide kernels (AVX-512 on amd64) keep the lane order above but hold two output
// elements' 8 lanes in one 16-wide register. Their accumulator blocks:
//
//	block4x4: [row pair][col][16]: rows 2q and 2q+1 of column c share 16 floats, the even
//	          row's lanes first, so (r, c) starts at ((r/2)·4 + c)·16 + (r%2)·8.
//	block8x4: the same for rows 0..7 (4 row pairs).
//	block1x8: [col][lane], like block1x4 with 8 columns.
type (
	block4x4 = [4 * 4 * lanes]float32
	block8x4 = [8 * 4 * lanes]float32
	block1x8 = [8 * lanes]float32
)

// at4x4 is where element (r, c) of a block4x4 or block8x4 starts.
func at4x4(r, c int) int { return ((r/2)*4+c)*16 + (r%2)*lanes }

// kern4x4Go is the portable form of kern4x4: rows xs[0..3] × weight rows cs[0..3].
func kern4x4Go(acc *block4x4, xs *[4][]float32, w *wmat, cs *[4]int, k0, kn int) {
	for r, x := range xs {
		for j, c := range cs {
			lanesGo(lane(acc[:], at4x4(r, j)), x[k0:k0+kn], w, c, k0)
		}
	}
}

// kern8x4Go is the portable form of kern8x4: rows xs[0..7] × weight rows cs[0..3].
func kern8x4Go(acc *block8x4, xs *[8][]float32, w *wmat, cs *[4]int, k0, kn int) {
	for r, x := range xs {
		for j, c := range cs {
			lanesGo(lane(acc[:], at4x4(r, j)), x[k0:k0+kn], w, c, k0)
		}
	}
}

// kern1x8Go is the portable form of kern1x8: one x row × weight rows cs[0..7].
func kern1x8Go(acc *block1x8, x []float32, w *wmat, cs *[8]int, k0, kn int) {
	for j, c := range cs {
		lanesGo(lane(acc[:], j*lanes), x[k0:k0+kn], w, c, k0)
	}
}

// packPairs packs rows [row, row+cnt) of x ([M, k]) for the wide 8- and 4-row kernels, whose
// blocks start at row+4j: the pair of rows r, r+1 (r = row+2j, r+1 < row+cnt) goes to
// xp[r·k : (r+2)·k] as groups of 16 values, 8 k of row r then the same 8 k of row r+1, for
// k < k rounded down to 8. One 16-wide load then gives both rows' lanes. It only moves
// values.
func packPairs(xp, x []float32, k, row, cnt int) {
	k8 := k &^ (lanes - 1)
	for r := row; r+2 <= row+cnt; r += 2 {
		packPair(xp, x, k, k8, r)
	}
}

// packPair packs rows r and r+1; see packPairs.
func packPair(xp, x []float32, k, k8, r int) {
	dst := xp[r*k : r*k+2*k8]
	a, b := x[r*k:r*k+k8], x[(r+1)*k:(r+1)*k+k8]
	for g := 0; g < k8; g += lanes {
		d := dst[2*g : 2*g+2*lanes : 2*g+2*lanes]
		copy(d[:lanes], a[g:g+lanes])
		copy(d[lanes:], b[g:g+lanes])
	}
}
