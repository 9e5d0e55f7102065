package ascend

import "math"

// SwiGLURow computes one row of the SwiGLU op as the contract defines it: out[j] =
// silu(gate[j]) · up[j] in float64, rounded once to float32; with limit > 0 the gate is
// clamped to at most limit and up to [-limit, limit] first (DeepSeek-V4). Backends that
// compute on the host share it, so they agree bit for bit.
func SwiGLURow(out, gate, up []float32, limit float32) {
	gate, up = gate[:len(out)], up[:len(out)]
	for j := range out {
		g, u := gate[j], up[j]
		if limit > 0 {
			g = min(g, limit)
			u = max(min(u, limit), -limit)
		}
		out[j] = float32(silu64(float64(g)) * float64(u))
	}
}

// silu64 is a/(1+e^-a). For very negative a, e^-a overflows to +Inf and the quotient is the
// right -0; only a = -Inf itself would give -Inf/Inf = NaN.
func silu64(a float64) float64 {
	if math.IsInf(a, -1) {
		return math.Copysign(0, -1)
	}
	return a / (1 + math.Exp(-a))
}
