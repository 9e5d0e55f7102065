package ascendtest

import (
	"math"

	"github.com/moemesh/moemesh/ascend"
)

// Reference math, written without the bit tricks backends use, so a shared mistake is
// unlikely: rounding goes through float64 arithmetic, decoding through the formulas of the
// formats.

// format describes a binary floating-point format narrower than float32.
type format struct {
	bits    int     // significant bits, including the implicit one
	minQ    float64 // quantum of the subnormals (2^(emin-bits+1))
	maxFin  float64 // largest finite value
	expBits int     // exponent field width
}

var (
	bf16 = format{bits: 8, minQ: math.Ldexp(1, -133), maxFin: math.Ldexp(255, 120), expBits: 8} // (2-2⁻⁷)·2¹²⁷
	f16  = format{bits: 11, minQ: math.Ldexp(1, -24), maxFin: math.Ldexp(2047, 5), expBits: 5}  // 65504
)

// round rounds v to f, ties to even, overflowing to ±Inf and keeping NaN, ±0 and ±Inf.
func (f format) round(v float32) float32 {
	x := float64(v)
	if x != x || x == 0 || math.IsInf(x, 0) {
		return v
	}
	_, e := math.Frexp(x) // |x| = frac·2^e with frac in [0.5, 1)
	q := math.Max(math.Ldexp(1, e-f.bits), f.minQ)
	r := math.RoundToEven(x/q) * q // exact: q is a power of two
	if math.Abs(r) > f.maxFin {
		r = math.Copysign(math.Inf(1), x)
	}
	return float32(r)
}

// decode returns the value of the 16-bit pattern h in f (1 sign bit, expBits, the rest
// mantissa).
func (f format) decode(h uint16) float32 {
	mbits := 15 - f.expBits
	bias := 1<<(f.expBits-1) - 1
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	e := int(h>>mbits) & (1<<f.expBits - 1)
	m := float64(h & (1<<mbits - 1))
	var v float64
	switch {
	case e == 1<<f.expBits-1:
		if m != 0 {
			return float32(math.NaN())
		}
		v = math.Inf(1)
	case e == 0:
		v = m * math.Ldexp(1, 1-bias-mbits)
	default:
		v = (1 + m/float64(int(1)<<mbits)) * math.Ldexp(1, e-bias)
	}
	return float32(sign * v)
}

// roundTo is what storing v in dt must give.
func roundTo(dt ascend.DType, v float32) float32 {
	switch dt {
	case ascend.BF16:
		return bf16.round(v)
	case ascend.F16:
		return f16.round(v)
	}
	return v
}

// refGMM is GroupedMatmul in float64: out[r][n] for the rows covered by counts, and the
// scale Σ_k |x·w| of each for the tolerance. Rows past sum(counts) are NaN in want.
func refGMM(x []float32, m, k int, ws [][]float32, n int, counts []int) (want, scale []float64) {
	want, scale = make([]float64, m*n), make([]float64, m*n)
	for i := range want {
		want[i] = math.NaN()
	}
	row := 0
	for g, cnt := range counts {
		w := ws[g]
		for r := row; r < row+cnt; r++ {
			for c := 0; c < n; c++ {
				var s, a float64
				for kk := 0; kk < k; kk++ {
					p := float64(x[r*k+kk]) * float64(w[c*k+kk])
					s += p
					a += math.Abs(p)
				}
				want[r*n+c], scale[r*n+c] = s, a
			}
		}
		row += cnt
	}
	return want, scale
}

// refSilu is a/(1+e^-a) in float64.
func refSilu(a float64) float64 { return a / (1 + math.Exp(-a)) }

// refSwiGLU is SwiGLU in float64 for x [m, 2n].
func refSwiGLU(x []float32, m, n int, limit float32) []float64 {
	out := make([]float64, m*n)
	for r := 0; r < m; r++ {
		for j := 0; j < n; j++ {
			g, u := float64(x[r*2*n+j]), float64(x[r*2*n+n+j])
			if limit > 0 {
				l := float64(limit)
				g = math.Min(g, l)
				u = math.Max(math.Min(u, l), -l)
			}
			out[r*n+j] = refSilu(g) * u
		}
	}
	return out
}

// refScatterAdd is the sequential float32 loop, each product rounded before the add.
func refScatterAdd(out, x []float32, n int, src, dst []int32, w []float32) {
	for i := range src {
		for j := 0; j < n; j++ {
			p := float32(w[i] * x[int(src[i])*n+j])
			out[int(dst[i])*n+j] = out[int(dst[i])*n+j] + p
		}
	}
}
