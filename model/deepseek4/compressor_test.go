package deepseek4

import (
	"errors"
	"math/rand/v2"
	"testing"
)

// Decoding token by token through the compressor state gives the rows prefill pooling
// gives, overlapping or not, including a window that straddles the prompt's end.
func TestCompressorDecodeEqualsPrefill(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, c := range []struct {
		ratio, d, T int
		overlap     bool
	}{{4, 3, 23, true}, {4, 2, 8, true}, {8, 2, 30, false}, {2, 1, 7, false}} {
		coff := 1
		if c.overlap {
			coff = 2
		}
		w := coff * c.d
		kv, sc, ape := make([]float32, c.T*w), make([]float32, c.T*w), make([]float32, c.ratio*w)
		for i := range kv {
			kv[i], sc[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64()*2)
		}
		for i := range ape {
			ape[i] = float32(rng.NormFloat64())
		}
		want, err := Pool(kv, sc, ape, c.ratio, c.d, c.overlap)
		if err != nil {
			t.Fatal(err)
		}
		st, err := NewCompressor(ape, c.ratio, c.d, c.overlap)
		if err != nil {
			t.Fatal(err)
		}
		var got [][]float32
		for tok := range c.T {
			row, done, err := st.Push(kv[tok*w:(tok+1)*w], sc[tok*w:(tok+1)*w])
			if err != nil {
				t.Fatal(err)
			}
			if done != ((tok+1)%c.ratio == 0) {
				t.Fatalf("%+v: token %d: done %v", c, tok, done)
			}
			if done {
				got = append(got, row)
			}
		}
		if len(got) != len(want) || st.Pos() != c.T {
			t.Fatalf("%+v: %d rows, prefill %d", c, len(got), len(want))
		}
		for r := range want {
			for j := range want[r] {
				if !near(float64(got[r][j]), float64(want[r][j]), 1e-6) {
					t.Fatalf("%+v: row %d dim %d: decode %v, prefill %v", c, r, j, got[r][j], want[r][j])
				}
			}
		}
	}
	if _, err := NewCompressor(make([]float32, 7), 4, 1, true); !errors.Is(err, ErrShape) {
		t.Errorf("short ape: %v", err)
	}
	st, _ := NewCompressor(make([]float32, 8), 4, 1, true)
	if _, _, err := st.Push(make([]float32, 1), make([]float32, 2)); !errors.Is(err, ErrShape) {
		t.Errorf("short push: %v", err)
	}
}
