//go:build !amd64 || purego

package cpu

import "github.com/moemesh/moemesh/ascend"

// Without the AVX2 kernels (other architectures, or the purego build tag) the portable Go
// kernels run; they give the same bits.

// useAsm, useWide and useBW are false here; tests that compare kernels skip.
var (
	useAsm  = false
	useWide = false
	useBW   = false
)

func kern4x2(acc *block4x2, xs *[4][]float32, w *wmat, c0, c1, k0, kn int) {
	kern4x2Go(acc, xs, w, c0, c1, k0, kn)
}

func kern1x4(acc *block1x4, x []float32, w *wmat, cs *[4]int, k0, kn int) {
	kern1x4Go(acc, x, w, cs, k0, kn)
}

// wideFor is false: the wide kernels are amd64 assembly only.
func wideFor(ascend.DType) bool { return false }

func kern4x4(acc *block4x4, xs *[4][]float32, _ *[2][]float32, w *wmat, cs *[4]int, k0, kn int) {
	kern4x4Go(acc, xs, w, cs, k0, kn)
}

func kern1x8(acc *block1x8, x []float32, w *wmat, cs *[8]int, k0, kn int) {
	kern1x8Go(acc, x, w, cs, k0, kn)
}

func kern8x4(acc *block8x4, xs *[8][]float32, _ *[4][]float32, w *wmat, cs *[4]int, k0, kn int) {
	kern8x4Go(acc, xs, w, cs, k0, kn)
}
