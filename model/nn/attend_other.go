//go:build !amd64 || purego

package nn

// Without AVX (other architectures, or the purego build tag) the Go kernels run; they
// give the same bits.

// useAttnAsm is false here; tests that compare kernels skip.
var useAttnAsm = false

func dot8(out *[8]float32, q []float32, ks *[8][]float32) { dot8Go(out, q, ks) }

func axpyRows4(y []float32, a *[4]float32, xs *[4][]float32) { axpyRows4Go(y, a, xs) }
