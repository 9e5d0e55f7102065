//go:build amd64 && !purego

package cpu

import (
	"testing"

	"github.com/moemesh/moemesh/ascend"
)

// BenchmarkMXFP4Decode times the T=1 kernels alone on 8 weight rows × 2048 that stay in
// L1, so it measures decode and arithmetic, not memory: MXFP4 decoded in registers by the
// AVX-512 1×8 and AVX2 1×4 kernels, against bf16's AVX-512 1×8 kernels (with AVX512BW's
// VPERMI2W, the default where present, and without). ns/op is for 16384 weights.
func BenchmarkMXFP4Decode(b *testing.B) {
	const n, k = 8, 2048
	q, sc, u := make([]byte, n*k/2), make([]byte, n*k/ascend.MXBlock), make([]uint16, n*k)
	for i := range q {
		q[i] = byte(i * 7)
	}
	for i := range sc {
		sc[i] = 120
	}
	x := make([]float32, k)
	mx := wmat{dt: ascend.MXFP4, q: q, sc: sc, k: k}
	bf := wmat{dt: ascend.BF16, u16: u, k: k}
	c8, lo, hi := [8]int{0, 1, 2, 3, 4, 5, 6, 7}, [4]int{0, 1, 2, 3}, [4]int{4, 5, 6, 7}
	if useWide {
		b.Run("mxfp4_1x8_avx512", func(b *testing.B) {
			var acc block1x8
			for b.Loop() {
				kern1x8MX(&acc, x, &mx, &c8, 0, k)
			}
		})
		if useBW {
			b.Run("bf16_1x8_avx512bw", func(b *testing.B) {
				var acc block1x8
				for b.Loop() {
					kern1x8(&acc, x, &bf, &c8, 0, k)
				}
			})
		}
		b.Run("bf16_1x8_avx512f", func(b *testing.B) {
			saved := useBW
			useBW = false
			defer func() { useBW = saved }()
			var acc block1x8
			for b.Loop() {
				kern1x8(&acc, x, &bf, &c8, 0, k)
			}
		})
	}
	if useAsm {
		b.Run("mxfp4_2x1x4_avx2", func(b *testing.B) {
			var acc block1x4
			for b.Loop() {
				kern1x4MX(&acc, x, &mx, &lo, 0, k)
				kern1x4MX(&acc, x, &mx, &hi, 0, k)
			}
		})
	}
}
