package nn

import (
	"fmt"
	"math"
	"runtime"
	"testing"
)

// withAsm runs fn with the AVX kernels on and off (off only where they are missing).
func withAsm(t *testing.T, fn func(t *testing.T)) {
	modes := []bool{false}
	if useAttnAsm {
		modes = append(modes, true)
	}
	saved := useAttnAsm
	defer func() { useAttnAsm = saved }()
	for _, on := range modes {
		useAttnAsm = on
		t.Run(fmt.Sprintf("asm=%v", on), fn)
	}
}

// spiky returns n values spanning many binades, with signed zeros and subnormals, so a
// changed summation order or a fused multiply-add shows in the bits.
func spiky(seed uint64, n int) []float32 {
	r := newRand(seed)
	v := make([]float32, n)
	for i := range v {
		switch r.IntN(10) {
		case 0:
			v[i] = float32(math.Copysign(0, r.Float64()-0.5))
		case 1:
			v[i] = math.Float32frombits(uint32(r.IntN(1 << 23))) // subnormal
		default:
			v[i] = float32((2*r.Float64() - 1) * math.Pow(2, float64(r.IntN(40)-20)))
		}
	}
	return v
}

// The kernels give dot's and axpy's bits for every length, tails included.
func TestAttendKernelsMatchScalar(t *testing.T) {
	withAsm(t, func(t *testing.T) {
		for _, n := range []int{1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 64, 127, 128, 192} {
			q := spiky(uint64(n), n)
			var ks [8][]float32
			for r := range ks {
				ks[r] = spiky(uint64(100*n+r), n)
			}
			var got [8]float32
			dot8(&got, q, &ks)
			for r, k := range ks {
				if want := dot(q, k); math.Float32bits(got[r]) != math.Float32bits(want) {
					t.Fatalf("n=%d key %d: dot8 %v, dot %v", n, r, got[r], want)
				}
			}
			y0 := spiky(uint64(7*n), n)
			var xs [4][]float32
			var a [4]float32
			for r := range xs {
				xs[r] = spiky(uint64(200*n+r), n)
				a[r] = spiky(uint64(300*n+r), 1)[0]
			}
			got4 := append([]float32(nil), y0...)
			axpyRows4(got4, &a, &xs)
			want4 := append([]float32(nil), y0...)
			for r := range xs {
				axpy(want4, a[r], xs[r])
			}
			if !equalBits(got4, want4) {
				t.Fatalf("n=%d: axpyRows4 differs from four axpy calls", n)
			}
		}
	})
}

// orderAttend is Attend's documented arithmetic written out plainly: one (query, head) at
// a time, one key at a time.
func orderAttend(q []float32, k, v KVView, start int, c AttnConfig) []float32 {
	T := len(q) / (c.Heads * c.QKDim)
	out := make([]float32, T*c.Heads*c.VDim)
	g := c.Heads / c.KVHeads
	for t := range T {
		pos := start + t
		lo := 0
		if c.Window > 0 {
			lo = max(0, pos-c.Window+1)
		}
		for h := range c.Heads {
			kh := h / g
			qh := q[(t*c.Heads+h)*c.QKDim : (t*c.Heads+h+1)*c.QKDim]
			var s []float32
			for j := lo; j <= pos; j++ {
				s = append(s, float32(c.Scale*dot(qh, k.Row(j)[kh*c.QKDim:(kh+1)*c.QKDim])))
			}
			m := float32(math.Inf(-1))
			for _, x := range s {
				m = max(m, x)
			}
			if c.Sinks != nil {
				m = max(m, c.Sinks[h])
			}
			var z float32
			for j := range s {
				s[j] = float32(math.Exp(float64(s[j] - m)))
				z += s[j]
			}
			if c.Sinks != nil {
				z += float32(math.Exp(float64(c.Sinks[h] - m)))
			}
			o := out[(t*c.Heads+h)*c.VDim : (t*c.Heads+h+1)*c.VDim]
			for j := range s {
				axpy(o, s[j]/z, v.Row(lo + j)[kh*c.VDim:(kh+1)*c.VDim])
			}
		}
	}
	return out
}

// Attend gives the documented order's bits exactly, with the AVX kernels on and off and
// with one worker or several; odd head dims exercise the kernels' tails.
func TestAttendBitsMatchDocumentedOrder(t *testing.T) {
	cases := append(attnCases(),
		attnCase{"odd-dims", AttnConfig{Heads: 6, KVHeads: 2, QKDim: 13, VDim: 11}, 10, 5},
		attnCase{"tiny-dims", AttnConfig{Heads: 2, KVHeads: 1, QKDim: 3, VDim: 2, Window: 6}, 20, 3},
		attnCase{"decode-long", AttnConfig{Heads: 16, KVHeads: 4, QKDim: 128, VDim: 128}, 517, 1},
	)
	withAsm(t, func(t *testing.T) {
		for _, c := range cases {
			if c.cfg.Scale == 0 {
				c.cfg.Scale = 1 / float32(math.Sqrt(float64(c.cfg.QKDim)))
			}
			q, k, v := attnInputs(c, 31)
			n := c.start + c.T
			kv := ContiguousView(k, n, c.cfg.KVHeads*c.cfg.QKDim)
			vv := ContiguousView(v, n, c.cfg.KVHeads*c.cfg.VDim)
			want := orderAttend(q, kv, vv, c.start, c.cfg)
			for _, procs := range []int{1, 2, 5} {
				prev := runtime.GOMAXPROCS(procs)
				got := attend(t, q, k, v, c.start, c.cfg)
				runtime.GOMAXPROCS(prev)
				if !equalBits(got, want) {
					t.Errorf("%s, GOMAXPROCS %d: Attend differs from the documented order", c.name, procs)
				}
			}
		}
	})
}
