package model_test

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/moemesh/moemesh/ascend"
	_ "github.com/moemesh/moemesh/ascend/cpu"
	"github.com/moemesh/moemesh/model"
)

const (
	esHidden = 8
	esInter  = 4
)

func esWeights(rng *rand.Rand) model.ExpertWeights {
	f := func() []byte {
		b := make([]byte, 4*esHidden*esInter)
		for i := 0; i < esHidden*esInter; i++ {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(rng.NormFloat64()/4)))
		}
		return b
	}
	return model.ExpertWeights{DType: ascend.F32, Gate: f(), Up: f(), Down: f()}
}

func esCard(t *testing.T, id int) ascend.Card {
	t.Helper()
	be, err := ascend.Open("cpu")
	if err != nil {
		t.Fatal(err)
	}
	c, err := be.OpenCard(id, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestExpertSetRemove(t *testing.T) {
	k := func(l, e int) model.ExpertKey { return model.ExpertKey{Layer: l, Expert: e} }
	for _, tc := range []struct {
		name    string
		add     []model.ExpertKey
		remove  []model.ExpertKey
		wantErr []bool // per remove
		keep    []model.ExpertKey
	}{
		{"one of two", []model.ExpertKey{k(1, 0), k(1, 1)}, []model.ExpertKey{k(1, 0)}, []bool{false}, []model.ExpertKey{k(1, 1)}},
		{"all", []model.ExpertKey{k(1, 0), k(2, 3)}, []model.ExpertKey{k(2, 3), k(1, 0)}, []bool{false, false}, nil},
		{"twice", []model.ExpertKey{k(1, 0)}, []model.ExpertKey{k(1, 0), k(1, 0)}, []bool{false, true}, nil},
		{"absent", []model.ExpertKey{k(1, 0)}, []model.ExpertKey{k(1, 1)}, []bool{true}, []model.ExpertKey{k(1, 0)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			card := esCard(t, 100)
			s := model.NewExpertSet(card, esHidden, esInter, 0)
			rng := rand.New(rand.NewPCG(1, 1))
			base := card.MemInfo().Used
			for _, key := range tc.add {
				if err := s.Add(key, esWeights(rng)); err != nil {
					t.Fatal(err)
				}
			}
			per := s.ExpertBytes(ascend.F32)
			if got := card.MemInfo().Used - base; got < per*int64(len(tc.add)) {
				t.Fatalf("%d experts use %d bytes, want >= %d", len(tc.add), got, per*int64(len(tc.add)))
			}
			for i, key := range tc.remove {
				err := s.Remove(key)
				if (err != nil) != tc.wantErr[i] || (err != nil && !errors.Is(err, model.ErrNotLoaded)) {
					t.Fatalf("Remove(%v): %v, want error %v", key, err, tc.wantErr[i])
				}
			}
			if got := s.Keys(); len(got) != len(tc.keep) || (len(got) > 0 && got[0] != tc.keep[0]) {
				t.Fatalf("keys %v, want %v", got, tc.keep)
			}
			// Memory follows what is held: freed experts give their bytes back.
			if got, want := card.MemInfo().Used-base, per*int64(len(tc.keep)); got < want || got >= want+per {
				t.Fatalf("after removal %d bytes in use, want about %d", got, want)
			}
			for _, key := range tc.remove {
				if s.Has(key) {
					continue
				}
				err := s.Compute(model.Batch{Layer: key.Layer, X: make([]float32, esHidden), RowPtr: []int32{0, 1},
					Experts: []int32{int32(key.Expert)}, Weights: []float32{1}}, false, make([]float32, esHidden))
				if !errors.Is(err, model.ErrNotLoaded) {
					t.Fatalf("computing removed expert %v: %v", key, err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if got := card.MemInfo().Used; got != base {
				t.Fatalf("after Close %d bytes in use, want %d", got, base)
			}
		})
	}
}

// Adding and removing experts while another goroutine computes is safe (run with -race),
// and the computation of a held expert keeps its result.
func TestExpertSetConcurrentChange(t *testing.T) {
	card := esCard(t, 101)
	s := model.NewExpertSet(card, esHidden, esInter, 0)
	refSet := model.NewExpertSet(esCard(t, 102), esHidden, esInter, 0)
	rng := rand.New(rand.NewPCG(2, 2))
	stable := model.ExpertKey{Layer: 1, Expert: 0}
	w := esWeights(rng)
	if err := s.Add(stable, w); err != nil {
		t.Fatal(err)
	}
	if err := refSet.Add(stable, w); err != nil {
		t.Fatal(err)
	}
	x := make([]float32, 3*esHidden)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	b := model.Batch{Layer: 1, X: x, RowPtr: []int32{0, 1, 2, 3}, Experts: []int32{0, 0, 0}, Weights: []float32{1, 0.5, 0.25}}
	want := make([]float32, len(x))
	if err := refSet.Compute(b, false, want); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		crng := rand.New(rand.NewPCG(3, 3))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			key := model.ExpertKey{Layer: 1, Expert: 1 + i%3}
			if err := s.Add(key, esWeights(crng)); err != nil {
				t.Error(err)
				return
			}
			_ = s.Keys()
			if err := s.Remove(key); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	out := make([]float32, len(x))
	for i := 0; i < 200; i++ {
		if err := s.Compute(b, false, out); err != nil {
			t.Fatal(err)
		}
		for j := range out {
			if out[j] != want[j] {
				t.Fatalf("run %d: out[%d] = %v, want %v", i, j, out[j], want[j])
			}
		}
	}
	close(stop)
	wg.Wait()
}
