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
//
// Quantised weights keep this order. I8 (W8A16): the products are x·q with q the int8
// value (exact in f32), and the finished sum is multiplied by the row's scale once (step
// 4), as aclnn's per-channel antiquant does; so the result is not bit-identical to f32
// weights holding q·s, but within a few ulps of Σ|x·w|. MXFP4: each weight is widened to
// its exact f32 value e2m1·2^(e−127) before the product, so the result is bit-identical to
// f32 weights holding the dequantised values; K is a multiple of 32, so there is no tail.

const lanes = 8

// wmat is one [N, K] weight matrix as the kernels see it: f32 data in f32, bf16/f16 bits in
// u16, i8 values or mxfp4 packed pairs in q and their scales in sc (ascend.QuantLayout).
type wmat struct {
	dt  ascend.DType
	f32 []float32
	u16 []uint16
	q   []byte
	sc  []byte
	k   int
}

// e8m0Tab and mxPairs are the decode tables of MXFP4: the scale of each E8M0 code, and the
// two E2M1 values (low nibble first) of each packed byte.
var (
	e8m0Tab [256]float32
	mxPairs [256][2]float32
)

func init() {
	for i := range 256 {
		e8m0Tab[i] = ascend.E8M0Value(byte(i))
		mxPairs[i] = [2]float32{ascend.E2M1Values[i&0xf], ascend.E2M1Values[i>>4]}
	}
}

// at returns w[n][k] widened to f32; for I8 it is the unscaled value q (finish scales).
func (w *wmat) at(n, k int) float32 {
	i := n*w.k + k
	switch w.dt {
	case ascend.F32:
		return w.f32[i]
	case ascend.BF16:
		return ascend.BF16ToF32(w.u16[i])
	case ascend.I8:
		return float32(int8(w.q[i]))
	case ascend.MXFP4:
		return mxPairs[w.q[i/2]][i%2] * e8m0Tab[w.sc[i/ascend.MXBlock]]
	}
	return ascend.F16ToF32(w.u16[i])
}

// decodeMX writes the dequantised weights w[n][k0 : k0+len(dst)] into dst; k0 and len(dst)
// are multiples of 8. tileMX uses it to turn an MXFP4 panel into f32 for the f32 kernels.
func decodeMX(dst []float32, w *wmat, n, k0 int) {
	i0 := n*w.k + k0
	q := w.q[i0/2 : (i0+len(dst))/2]
	for j := 0; j < len(dst); j += lanes {
		f := e8m0Tab[w.sc[(i0+j)/ascend.MXBlock]]
		b, d := q[j/2:j/2+4:j/2+4], dst[j:j+lanes:j+lanes]
		p0, p1, p2, p3 := &mxPairs[b[0]], &mxPairs[b[1]], &mxPairs[b[2]], &mxPairs[b[3]]
		d[0], d[1], d[2], d[3] = p0[0]*f, p0[1]*f, p1[0]*f, p1[1]*f
		d[4], d[5], d[6], d[7] = p2[0]*f, p2[1]*f, p3[0]*f, p3[1]*f
	}
}

// fold is step 2 of the summation order.
func fold(s *[lanes]float32) float32 {
	a0, a1, a2, a3 := s[0]+s[4], s[1]+s[5], s[2]+s[6], s[3]+s[7]
	return (a0 + a2) + (a1 + a3)
}

// finish completes one output element: fold the lanes, then add the tail products (step 3),
// then for I8 multiply by the row's scale (step 4).
func finish(s *[lanes]float32, x []float32, w *wmat, n, k8 int) float32 {
	sum := fold(s)
	for k := k8; k < len(x); k++ {
		sum += float32(x[k] * w.at(n, k))
	}
	if w.dt == ascend.I8 {
		sum *= ascend.I8Scale(w.sc, n)
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
	case ascend.I8:
		ws := w.q[off : off+kn]
		for i := 0; i+lanes <= kn; i += lanes {
			xv, wv := x[i:i+lanes:i+lanes], ws[i:i+lanes:i+lanes]
			a0 += float32(xv[0] * float32(int8(wv[0])))
			a1 += float32(xv[1] * float32(int8(wv[1])))
			a2 += float32(xv[2] * float32(int8(wv[2])))
			a3 += float32(xv[3] * float32(int8(wv[3])))
			a4 += float32(xv[4] * float32(int8(wv[4])))
			a5 += float32(xv[5] * float32(int8(wv[5])))
			a6 += float32(xv[6] * float32(int8(wv[6])))
			a7 += float32(xv[7] * float32(int8(wv[7])))
		}
	case ascend.MXFP4:
		// off is a multiple of 8, so each step's 8 values are 4 whole bytes under one scale.
		ws := w.q[off/2 : (off+kn)/2]
		for i := 0; i+lanes <= kn; i += lanes {
			f := e8m0Tab[w.sc[(off+i)/ascend.MXBlock]]
			xv, b := x[i:i+lanes:i+lanes], ws[i/2:i/2+4:i/2+4]
			p0, p1, p2, p3 := &mxPairs[b[0]], &mxPairs[b[1]], &mxPairs[b[2]], &mxPairs[b[3]]
			a0 += float32(xv[0] * (p0[0] * f))
			a1 += float32(xv[1] * (p0[1] * f))
			a2 += float32(xv[2] * (p1[0] * f))
			a3 += float32(xv[3] * (p1[1] * f))
			a4 += float32(xv[4] * (p2[0] * f))
			a5 += float32(xv[5] * (p2[1] * f))
			a6 += float32(xv[6] * (p3[0] * f))
			a7 += float32(xv[7] * (p3[1] * f))
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
