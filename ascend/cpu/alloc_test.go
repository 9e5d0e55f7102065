package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/moemesh/moemesh/ascend"
)

// opsCase is the three ops of an expert on one card: GroupedMatmul over groups weights of
// dtype dt, SwiGLU and ScatterAdd, at m rows.
type opsCase struct {
	card     ascend.Card
	out, x   ascend.Buffer
	ws       []ascend.Buffer
	counts   []int64
	act, gu  ascend.Buffer
	sum      ascend.Buffer
	src, dst []int32
	w        []float32
}

func newOpsCase(tb testing.TB, threads int, dt ascend.DType, m, k, n, groups int) *opsCase {
	tb.Helper()
	card, err := Backend{Threads: threads}.OpenCard(0, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = card.Close() })
	rng := rand.New(rand.NewPCG(7, 8))
	vals := make([]float32, max(n*k, m*k, m*2*n))
	for i := range vals {
		vals[i] = rng.Float32()*2 - 1
	}
	alloc := func(dt ascend.DType, shape ...int) ascend.Buffer {
		b, err := card.Alloc(dt, shape...)
		if err != nil {
			tb.Fatal(err)
		}
		if err := card.WriteF32(b, 0, vals[:shape[0]*shape[1]]); err != nil {
			tb.Fatal(err)
		}
		return b
	}
	c := &opsCase{card: card, counts: make([]int64, groups)}
	for g := range groups {
		c.ws = append(c.ws, alloc(dt, n, k))
		c.counts[g] = int64(m / groups)
	}
	c.counts[0] += int64(m % groups)
	c.x, c.out = alloc(ascend.F32, m, k), alloc(ascend.F32, m, n)
	c.gu, c.act = alloc(ascend.F32, m, 2*n), alloc(ascend.F32, m, n)
	c.sum = alloc(ascend.F32, m, n)
	for i := range m {
		c.src = append(c.src, int32(i))
		c.dst = append(c.dst, int32((i*7)%m))
		c.w = append(c.w, 0.5)
	}
	return c
}

func (c *opsCase) gmm(tb testing.TB) {
	if err := c.card.GroupedMatmul(c.out, c.x, c.ws, c.counts); err != nil {
		tb.Fatal(err)
	}
}

func (c *opsCase) swiglu(tb testing.TB) {
	if err := c.card.SwiGLU(c.act, c.gu, 7); err != nil {
		tb.Fatal(err)
	}
}

func (c *opsCase) scatter(tb testing.TB) {
	if err := c.card.ScatterAdd(c.sum, c.out, c.src, c.dst, c.w); err != nil {
		tb.Fatal(err)
	}
}

// TestOpsAllocateNothing: on a one-thread card, which never hands work to a helper, the
// ops allocate nothing in steady state, whatever the weights' dtype and the row blocks
// taken (1, 4 and 8 rows; MXFP4 tiles decode to the card's kept panels).
func TestOpsAllocateNothing(t *testing.T) {
	for _, tc := range []struct {
		dt     ascend.DType
		m      int
		groups int
	}{
		{ascend.F32, 1, 1},
		{ascend.F32, 13, 2},
		{ascend.F32, 64, 4},
		{ascend.BF16, 13, 2},
		{ascend.F16, 9, 1},
		{ascend.I8, 13, 2},
		{ascend.MXFP4, 13, 2},
	} {
		t.Run(fmt.Sprintf("%v/M=%d", tc.dt, tc.m), func(t *testing.T) {
			c := newOpsCase(t, 1, tc.dt, tc.m, 96, 80, tc.groups)
			for name, op := range map[string]func(testing.TB){"GroupedMatmul": c.gmm, "SwiGLU": c.swiglu, "ScatterAdd": c.scatter} {
				op(t) // warm: the card's scratch is sized on first use
				if n := testing.AllocsPerRun(20, func() { op(t) }); n != 0 {
					t.Errorf("%s allocates %v times per call", name, n)
				}
			}
		})
	}
}

// BenchmarkOpAllocs: allocations per op call, with threads=2 handing tasks to a helper.
// The shapes are small (an expert of the tiny preset) so that the time is mostly the
// op's fixed cost.
func BenchmarkOpAllocs(b *testing.B) {
	for _, dt := range []ascend.DType{ascend.F32, ascend.BF16, ascend.MXFP4} {
		for _, threads := range []int{1, 2} {
			for _, m := range []int{1, 64} {
				c := newOpsCase(b, threads, dt, m, 256, 128, 4)
				for _, op := range []struct {
					name string
					fn   func(testing.TB)
				}{{"GroupedMatmul", c.gmm}, {"SwiGLU", c.swiglu}, {"ScatterAdd", c.scatter}} {
					if dt != ascend.F32 && op.name != "GroupedMatmul" {
						continue // the others take f32 only
					}
					b.Run(fmt.Sprintf("%s/%v/M=%d/threads=%d", op.name, dt, m, threads), func(b *testing.B) {
						b.ReportAllocs()
						for b.Loop() {
							op.fn(b)
						}
					})
				}
			}
		}
	}
}
