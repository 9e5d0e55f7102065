//go:build !amd64 || purego

package cpu

// Without the AVX2 kernels (other architectures, or the purego build tag) the portable Go
// kernels run; they give the same bits.

// useAsm is false here; tests that compare kernels skip.
var useAsm = false

func kern4x2(acc *block4x2, xs *[4][]float32, w *wmat, c0, c1, k0, kn int) {
	kern4x2Go(acc, xs, w, c0, c1, k0, kn)
}

func kern1x4(acc *block1x4, x []float32, w *wmat, cs *[4]int, k0, kn int) {
	kern1x4Go(acc, x, w, cs, k0, kn)
}
