package ascend

import "fmt"

// CheckScatterAdd validates ScatterAdd's pair lists for out of r rows and x of p rows, so
// every backend refuses the same inputs with the same error.
func CheckScatterAdd(op string, src, dst []int32, w []float32, p, r int) error {
	if len(dst) != len(src) || len(w) != len(src) {
		return fmt.Errorf("%w: %s: %d src, %d dst and %d weights", ErrShape, op, len(src), len(dst), len(w))
	}
	for i := range src {
		if s, d := src[i], dst[i]; s < 0 || int(s) >= p || d < 0 || int(d) >= r {
			return fmt.Errorf("%w: %s: pair %d maps x row %d (of %d) to out row %d (of %d)", ErrShape, op, i, s, p, d, r)
		}
	}
	return nil
}
