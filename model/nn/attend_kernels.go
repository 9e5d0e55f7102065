package nn

// Attend's inner kernels. dot is one query·key product in the documented order (four
// interleaved partial sums); a single dot is bound by the latency of its four add chains,
// so the fast path computes eight keys at once (dot8), which does not change any one
// dot's order. axpy accumulates one weighted value row; axpyRows4 does four in key order
// with one pass over y. The AVX forms (attend_amd64.s) round every product before adding
// it, like the Go forms, so both give the same bits.

// dot is Σ a_i·b_i in four interleaved partial sums (the order Attend documents); four
// independent chains also let the CPU overlap the adds.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += float32(a[i] * b[i])
		s1 += float32(a[i+1] * b[i+1])
		s2 += float32(a[i+2] * b[i+2])
		s3 += float32(a[i+3] * b[i+3])
	}
	for ; i < len(a); i++ {
		s0 += float32(a[i] * b[i])
	}
	return (s0 + s1) + (s2 + s3)
}

// foldDot finishes a dot whose first n4 (a multiple of 4) elements are in the partial
// sums s: the tail goes into s[0], then the sums fold as dot folds them.
func foldDot(s *[4]float32, a, b []float32, n4 int) float32 {
	b = b[:len(a)]
	s0 := s[0]
	for i := n4; i < len(a); i++ {
		s0 += float32(a[i] * b[i])
	}
	return (s0 + s[1]) + (s[2] + s[3])
}

// dot8Go is the portable form of dot8.
func dot8Go(out *[8]float32, q []float32, ks *[8][]float32) {
	for r, k := range ks {
		out[r] = dot(q, k)
	}
}

// axpy is y += a·x with the product rounded before the add.
func axpy(y []float32, a float32, x []float32) {
	x = x[:len(y)]
	for i := range y {
		y[i] += float32(a * x[i])
	}
}

// axpyRows4Go is the portable form of axpyRows4.
func axpyRows4Go(y []float32, a *[4]float32, xs *[4][]float32) {
	for r, x := range xs {
		axpy(y, a[r], x)
	}
}
