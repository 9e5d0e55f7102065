//go:build cann

package cann

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"

	"github.com/moemesh/moemesh/ascend"
)

// TestDequantEveryCode: the device dequantisation (quant.go) gives the f32 weights of
// ascend's codecs bit for bit, over every I8 value and every MXFP4 value byte and scale
// code, including the E8M0 extremes (2⁻¹²⁷, Inf for 2¹²⁷·6, NaN for 0xFF) that a matmul
// would smear: the scratch is read back directly.
func TestDequantEveryCode(t *testing.T) {
	i8Scales := []float32{0, 1.0 / 127, 0.37, 1e-40, math.MaxFloat32 / 127, -2.5}
	cases := []struct {
		name string
		dt   ascend.DType
		n, k int
		fill func(vals, scales []byte)
	}{
		{"i8 every value", ascend.I8, len(i8Scales), 256, func(vals, scales []byte) {
			for i := range vals {
				vals[i] = byte(i)
			}
			for r, s := range i8Scales {
				binary.LittleEndian.PutUint32(scales[4*r:], math.Float32bits(s))
			}
		}},
		{"mxfp4 every byte and scale", ascend.MXFP4, 8, 1024, func(vals, scales []byte) {
			for i := range vals {
				vals[i] = byte(i * 7) // every byte, in an order unlike the scales'
			}
			for i := range scales {
				scales[i] = byte(i)
			}
		}},
	}
	cc, err := Backend{}.OpenCard(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := cc.(*card)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, err := ascend.CheckQuantShape(tc.dt, []int{tc.n, tc.k})
			if err != nil {
				t.Fatal(err)
			}
			raw := make([]byte, l.Bytes())
			tc.fill(raw[:l.Values], raw[l.Values:])
			b, err := c.Alloc(tc.dt, tc.n, tc.k)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Free(b)
			if err := c.Write(b, 0, raw); err != nil {
				t.Fatal(err)
			}
			want := make([]float32, tc.n*tc.k)
			if err := c.ReadF32(b, want); err != nil { // host decoding, ascend's codecs
				t.Fatal(err)
			}
			got := make([]float32, tc.n*tc.k)
			err = c.do(func() error {
				tmp := &temps{c: c}
				defer tmp.release()
				dst, err := tmp.alloc(int64(4 * tc.n * tc.k))
				if err != nil {
					return err
				}
				if err := c.dequant(b.(*buffer), dst, tc.n, tc.k); err != nil {
					return err
				}
				st, err := c.d2hPtr(dst, 4*tc.n*tc.k)
				decode(ascend.F32, st, got)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			specials := 0
			for i := range want {
				g, w := got[i], want[i]
				if w != w || math.IsInf(float64(w), 0) {
					specials++
				}
				if !(math.Float32bits(g) == math.Float32bits(w) || g != g && w != w) {
					t.Fatalf("weight [%d %d] = %g (%#x) on the device, %g (%#x) on the host",
						i/tc.k, i%tc.k, g, math.Float32bits(g), w, math.Float32bits(w))
				}
			}
			if tc.dt == ascend.MXFP4 && specials == 0 {
				t.Error("no NaN or Inf weights: the extreme scale codes went untested")
			}
		})
	}
}

// TestDenseOpsRefuseQuantised: the Dense ops take float buffers only; quantised ones (even
// all of one quantised dtype, which passes their same-dtype checks) are ErrDType, not
// misread as f32.
func TestDenseOpsRefuseQuantised(t *testing.T) {
	cc, err := Backend{}.OpenCard(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := cc.(*card)
	for _, dt := range []ascend.DType{ascend.I8, ascend.MXFP4} {
		q := func(n, k int) ascend.Buffer {
			b, err := c.Alloc(dt, n, k)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		g, err := c.Alloc(ascend.F32, 32)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			call func() error
		}{
			{"Matmul", func() error { return c.Matmul(q(2, 32), q(2, 32), q(32, 32)) }},
			{"RMSNorm", func() error { return c.RMSNorm(q(2, 32), q(2, 32), g, 1e-6) }},
			{"GatingTopKSoftmax", func() error { return c.GatingTopKSoftmax(q(2, 32), 1, make([]int32, 2), make([]float32, 2)) }},
		} {
			if err := tc.call(); !errors.Is(err, ascend.ErrDType) {
				t.Errorf("%s on %v buffers: %v, want ErrDType", tc.name, dt, err)
			}
		}
	}
}
