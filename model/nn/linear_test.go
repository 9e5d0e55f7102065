package nn

import (
	"errors"
	"math"
	"testing"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/ascend/cpu"
)

func openCard(t testing.TB) ascend.Card {
	t.Helper()
	c, err := cpu.Backend{Threads: 2}.OpenCard(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestLinear checks x·Wᵀ+b against float64 math over the weights as stored (rounded to
// the buffer dtype). Tolerance: 1e-5 · Σ_k |x_k·w_k| per output, the f32 accumulation
// bound used by the ascend conformance suite.
func TestLinear(t *testing.T) {
	card := openCard(t)
	r := newRand(20)
	in, out := 67, 45 // not multiples of 8: exercises the kernels' tails
	for _, dt := range []ascend.DType{ascend.F32, ascend.BF16, ascend.F16} {
		w := randVec(r, out*in)
		wb, err := UploadWeight(card, dt, w, out, in)
		if err != nil {
			t.Fatal(err)
		}
		stored := make([]float32, out*in)
		if err := card.ReadF32(wb, stored); err != nil {
			t.Fatal(err)
		}
		bias := randVec(r, out)
		lin, err := NewLinear(card, wb, bias)
		if err != nil {
			t.Fatal(err)
		}
		// Growing then shrinking batches: scratch larger than the batch must not leak rows.
		for _, rows := range []int{1, 5, 2, 9} {
			x := randVec(r, rows*in)
			y := make([]float32, rows*out)
			if err := lin.Forward(y, x, rows); err != nil {
				t.Fatal(err)
			}
			for i := range rows {
				for o := range out {
					var want, mag float64
					for k := range in {
						p := float64(x[i*in+k]) * float64(stored[o*in+k])
						want += p
						mag += math.Abs(p)
					}
					want += float64(bias[o])
					mag += math.Abs(float64(bias[o]))
					if d := math.Abs(float64(y[i*out+o]) - want); d > 1e-5*mag {
						t.Fatalf("%v rows %d: y[%d,%d] = %g, want %g", dt, rows, i, o, y[i*out+o], want)
					}
				}
			}
		}
		if err := lin.Close(); err != nil {
			t.Fatal(err)
		}
		if used := card.MemInfo().Used; used != wb.Bytes() {
			t.Fatalf("%v: %d bytes in use after Close, want the weight's %d", dt, used, wb.Bytes())
		}
		if err := card.Free(wb); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLinearErrors(t *testing.T) {
	card := openCard(t)
	wb, err := UploadWeight(card, ascend.F32, make([]float32, 6), 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewLinear(card, wb, make([]float32, 3)); !errors.Is(err, ErrShape) {
		t.Fatalf("bias of wrong width: %v", err)
	}
	lin, err := NewLinear(card, wb, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := lin.Forward(make([]float32, 2), make([]float32, 4), 1); !errors.Is(err, ErrShape) {
		t.Fatalf("wrong x width: %v", err)
	}
	if _, err := UploadWeight(card, ascend.F32, make([]float32, 5), 2, 3); !errors.Is(err, ErrShape) {
		t.Fatalf("upload of wrong size: %v", err)
	}
	_ = card.Close()
	if err := lin.Forward(make([]float32, 2), make([]float32, 3), 1); !errors.Is(err, ascend.ErrClosed) {
		t.Fatalf("forward on a closed card: %v, want ascend.ErrClosed through the wrap", err)
	}
}

func TestEmbedding(t *testing.T) {
	w := []float32{0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31, 32}
	bf := make([]uint16, len(w))
	for i, v := range w {
		bf[i] = ascend.F32ToBF16(v) // small integers are exact in bf16
	}
	ef, err := NewEmbeddingF32(w, 4, 3)
	if err != nil {
		t.Fatal(err)
	}
	eb, err := NewEmbeddingBF16(bf, 4, 3)
	if err != nil {
		t.Fatal(err)
	}
	ids := []int32{3, 0, 3}
	want := []float32{30, 31, 32, 0, 1, 2, 30, 31, 32}
	for name, e := range map[string]*Embedding{"f32": ef, "bf16": eb} {
		out := make([]float32, 9)
		if err := e.Lookup(out, ids); err != nil {
			t.Fatal(err)
		}
		if !equalBits(out, want) {
			t.Fatalf("%s lookup = %v", name, out)
		}
		if err := e.Lookup(make([]float32, 3), []int32{4}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%s: id past vocab: %v", name, err)
		}
		if err := e.Lookup(make([]float32, 3), []int32{-1}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%s: negative id: %v", name, err)
		}
	}
}
