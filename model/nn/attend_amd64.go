//go:build amd64 && !purego

package nn

import "golang.org/x/sys/cpu"

// useAttnAsm selects the AVX kernels in attend_amd64.s; tests turn it off to compare
// against the Go kernels.
var useAttnAsm = cpu.X86.HasAVX2

//go:noescape
func dots8(acc *[32]float32, q *float32, ks *[8]*float32, n4 int)

//go:noescape
func axpy4(y *float32, xs *[4]*float32, a *[4]float32, n8 int)

// dot8 sets out[r] = dot(q, ks[r]) for r < 8; every ks[r] has len(q) values.
func dot8(out *[8]float32, q []float32, ks *[8][]float32) {
	if !useAttnAsm {
		dot8Go(out, q, ks)
		return
	}
	var ps [8]*float32
	for r, k := range ks {
		ps[r] = &k[:len(q)][0]
	}
	var acc [32]float32
	n4 := len(q) &^ 3
	dots8(&acc, &q[0], &ps, n4/4)
	for r, k := range ks {
		out[r] = foldDot((*[4]float32)(acc[4*r:]), q, k, n4)
	}
}

// axpyRows4 does axpy(y, a[r], xs[r]) for r = 0..3 in order; every xs[r] has len(y)
// values.
func axpyRows4(y []float32, a *[4]float32, xs *[4][]float32) {
	if !useAttnAsm {
		axpyRows4Go(y, a, xs)
		return
	}
	n8 := len(y) &^ 7
	if n8 > 0 {
		var ps [4]*float32
		for r, x := range xs {
			ps[r] = &x[:len(y)][0]
		}
		axpy4(&y[0], &ps, a, n8/8)
	}
	for i := n8; i < len(y); i++ {
		for r, x := range xs {
			y[i] += float32(a[r] * x[i])
		}
	}
}
