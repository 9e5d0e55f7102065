//go:build cann

package cann_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/ascend/cann"
	"github.com/moemesh/moemesh/model"
)

// denseCard opens card 0 and returns it as the Dense ops it must offer.
func denseCard(t *testing.T) (ascend.Card, cann.Dense) {
	t.Helper()
	c, err := backend(t).OpenCard(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	d, ok := c.(cann.Dense)
	if !ok {
		t.Fatalf("cann card %T does not implement cann.Dense", c)
	}
	return c, d
}

// upload allocates a buffer of dt and writes v; it returns v as stored (rounded to dt).
func upload(t *testing.T, c ascend.Card, dt ascend.DType, v []float32, shape ...int) (ascend.Buffer, []float32) {
	t.Helper()
	b, err := c.Alloc(dt, shape...)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteF32(b, 0, v); err != nil {
		t.Fatal(err)
	}
	stored := make([]float32, len(v))
	if err := c.ReadF32(b, stored); err != nil {
		t.Fatal(err)
	}
	return b, stored
}

func randVec(r *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = (r.Float32()*2 - 1) * scale
	}
	return v
}

// unit is the relative rounding unit of a dtype's result (half an ulp at 1).
func unit(dt ascend.DType) float64 {
	switch dt {
	case ascend.BF16:
		return math.Ldexp(1, -8)
	case ascend.F16:
		return math.Ldexp(1, -11)
	}
	return math.Ldexp(1, -24)
}

// TestMatmul: aclnnMatmul through the card against a float64 reference over the stored
// (dtype-rounded) inputs. The tolerance per element is the dtype's rounding of the result
// plus f32 accumulation error, both relative to Σ|x·w|, so a wrong transpose, stride or
// row mapping (errors of order |y|) cannot pass.
func TestMatmul(t *testing.T) {
	c, d := denseCard(t)
	for _, tc := range []struct {
		dt      ascend.DType
		m, k, n int
	}{
		{ascend.F32, 5, 7, 3}, {ascend.F32, 1, 64, 33}, {ascend.BF16, 4, 16, 9}, {ascend.F16, 3, 32, 5},
	} {
		t.Run(fmt.Sprintf("%v-%dx%dx%d", tc.dt, tc.m, tc.k, tc.n), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(tc.m), uint64(tc.k)))
			xb, x := upload(t, c, tc.dt, randVec(r, tc.m*tc.k, 2), tc.m, tc.k)
			wb, w := upload(t, c, tc.dt, randVec(r, tc.n*tc.k, 1), tc.n, tc.k)
			ob, err := c.Alloc(tc.dt, tc.m, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Matmul(ob, xb, wb); err != nil {
				t.Fatal(err)
			}
			got := make([]float32, tc.m*tc.n)
			if err := c.ReadF32(ob, got); err != nil {
				t.Fatal(err)
			}
			for i := range tc.m {
				for j := range tc.n {
					want, mag := 0.0, 0.0
					for k := range tc.k {
						p := float64(x[i*tc.k+k]) * float64(w[j*tc.k+k])
						want += p
						mag += math.Abs(p)
					}
					tol := (unit(tc.dt) + float64(tc.k)*math.Ldexp(1, -24)) * math.Max(mag, 1e-30)
					if diff := math.Abs(float64(got[i*tc.n+j]) - want); diff > tol {
						t.Fatalf("out[%d][%d] = %v, want %v (|diff| %g > %g)", i, j, got[i*tc.n+j], want, diff, tol)
					}
				}
			}
		})
	}
}

// TestRMSNorm: aclnnRmsNorm through the card against a float64 reference over the stored
// inputs, per dtype (gamma also as f32 under a bf16 x).
func TestRMSNorm(t *testing.T) {
	c, d := denseCard(t)
	const eps = 1e-6
	for _, tc := range []struct {
		dt, gdt ascend.DType
		m, h    int
	}{
		{ascend.F32, ascend.F32, 3, 16}, {ascend.BF16, ascend.BF16, 4, 64}, {ascend.BF16, ascend.F32, 2, 8}, {ascend.F16, ascend.F16, 5, 24},
	} {
		t.Run(fmt.Sprintf("%v-gamma-%v", tc.dt, tc.gdt), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(tc.h), 3))
			xb, x := upload(t, c, tc.dt, randVec(r, tc.m*tc.h, 3), tc.m, tc.h)
			gb, g := upload(t, c, tc.gdt, randVec(r, tc.h, 1.5), tc.h)
			ob, err := c.Alloc(tc.dt, tc.m, tc.h)
			if err != nil {
				t.Fatal(err)
			}
			if err := d.RMSNorm(ob, xb, gb, eps); err != nil {
				t.Fatal(err)
			}
			got := make([]float32, tc.m*tc.h)
			if err := c.ReadF32(ob, got); err != nil {
				t.Fatal(err)
			}
			for i := range tc.m {
				ss := 0.0
				for j := range tc.h {
					ss += float64(x[i*tc.h+j]) * float64(x[i*tc.h+j])
				}
				rstd := 1 / math.Sqrt(ss/float64(tc.h)+float64(float32(eps)))
				for j := range tc.h {
					want := float64(x[i*tc.h+j]) * rstd * float64(g[j])
					tol := 2*unit(tc.dt)*math.Abs(want) + 1e-7
					if diff := math.Abs(float64(got[i*tc.h+j]) - want); diff > tol {
						t.Fatalf("out[%d][%d] = %v, want %v (|diff| %g > %g)", i, j, got[i*tc.h+j], want, diff, tol)
					}
				}
			}
		})
	}
}

// TestGatingTopKSoftmaxMatchesModelGate: aclnnMoeGatingTopKSoftmax on the card routes like
// the model's own gate for the softmax, no-renormalisation rule it implements (Qwen2-MoE,
// OLMoE): the same experts in the same order, weights within the dtype's rounding. First
// the worked example of models.md §3, then random logits.
func TestGatingTopKSoftmaxMatchesModelGate(t *testing.T) {
	c, d := denseCard(t)
	z := []float32{2.5, -3.0, 0.5, 0.2, 1.0, -2.0, 0.0, 0.3}
	lb, _ := upload(t, c, ascend.F32, z, 1, 8)
	ex, w := make([]int32, 2), make([]float32, 2)
	if err := d.GatingTopKSoftmax(lb, 2, ex, w); err != nil {
		t.Fatal(err)
	}
	if ex[0] != 0 || ex[1] != 4 || math.Abs(float64(w[0])-0.599949) > 1e-6 || math.Abs(float64(w[1])-0.133867) > 1e-6 {
		t.Fatalf("worked example: experts %v weights %v, want [0 4] [0.599949 0.133867]", ex, w)
	}
	for _, tc := range []struct {
		dt           ascend.DType
		tokens, e, k int
	}{
		{ascend.F32, 17, 8, 2}, {ascend.F32, 5, 64, 8}, {ascend.BF16, 9, 16, 4}, {ascend.F16, 3, 128, 6},
	} {
		t.Run(fmt.Sprintf("%v-%dx%d-top%d", tc.dt, tc.tokens, tc.e, tc.k), func(t *testing.T) {
			r := rand.New(rand.NewPCG(uint64(tc.e), uint64(tc.k)))
			lb, logits := upload(t, c, tc.dt, randVec(r, tc.tokens*tc.e, 4), tc.tokens, tc.e)
			ex, w := make([]int32, tc.tokens*tc.k), make([]float32, tc.tokens*tc.k)
			if err := d.GatingTopKSoftmax(lb, tc.k, ex, w); err != nil {
				t.Fatal(err)
			}
			var want model.Routing
			spec := model.GateSpec{Experts: tc.e, TopK: tc.k, Scoring: model.Softmax}
			if err := spec.Route(logits, tc.tokens, nil, &want); err != nil {
				t.Fatal(err)
			}
			for i := range ex {
				if ex[i] != want.Experts[i] {
					t.Fatalf("token %d slot %d: expert %d, the model's gate picks %d", i/tc.k, i%tc.k, ex[i], want.Experts[i])
				}
				if diff := math.Abs(float64(w[i] - want.Weights[i])); diff > 2*unit(tc.dt)*float64(want.Weights[i])+1e-9 {
					t.Fatalf("token %d slot %d: weight %v, the model's gate gives %v", i/tc.k, i%tc.k, w[i], want.Weights[i])
				}
			}
		})
	}
}

// TestDenseRejects: bad shapes, dtypes and arguments are clear errors before any device work.
func TestDenseRejects(t *testing.T) {
	c, d := denseCard(t)
	alloc := func(dt ascend.DType, shape ...int) ascend.Buffer {
		b, err := c.Alloc(dt, shape...)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	x, o := alloc(ascend.F32, 2, 4), alloc(ascend.F32, 2, 3)
	wbf := alloc(ascend.BF16, 3, 4)
	g := alloc(ascend.F32, 4)
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"matmul-dtype", d.Matmul(o, x, wbf), ascend.ErrDType},
		{"matmul-shape", d.Matmul(o, x, alloc(ascend.F32, 3, 5)), ascend.ErrShape},
		{"matmul-aliased", d.Matmul(x, x, alloc(ascend.F32, 4, 4)), ascend.ErrInvalid},
		{"rmsnorm-gamma", d.RMSNorm(alloc(ascend.F32, 2, 4), x, alloc(ascend.F32, 3), 1e-6), ascend.ErrShape},
		{"rmsnorm-eps", d.RMSNorm(alloc(ascend.F32, 2, 4), x, g, float32(math.NaN())), ascend.ErrInvalid},
		{"gating-k", d.GatingTopKSoftmax(x, 5, make([]int32, 10), make([]float32, 10)), ascend.ErrInvalid},
		{"gating-slots", d.GatingTopKSoftmax(x, 2, make([]int32, 3), make([]float32, 4)), ascend.ErrShape},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
}
