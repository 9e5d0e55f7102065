package model_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

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

func esCard(t testing.TB, id int) ascend.Card {
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

// quantExpert draws an expert of width inter for hidden size hidden and returns it in dt:
// f32 as drawn, or MXFP4/I8 quantised per row (ascend's row quantisers) with the values and
// scales apart, as a checkpoint stores them.
func quantExpert(t testing.TB, rng *rand.Rand, dt ascend.DType, hidden, inter int) model.ExpertWeights {
	t.Helper()
	mat := func(rows, k int) (vals, scales []byte) {
		x := make([]float32, rows*k)
		for i := range x {
			x[i] = float32(rng.NormFloat64() / math.Sqrt(float64(k)))
		}
		switch dt {
		case ascend.F32:
			vals = make([]byte, 4*len(x))
			for i, v := range x {
				binary.LittleEndian.PutUint32(vals[4*i:], math.Float32bits(v))
			}
		case ascend.MXFP4:
			vals, scales = make([]byte, rows*k/2), make([]byte, rows*k/ascend.MXBlock)
			for r := range rows {
				if err := ascend.QuantizeMXFP4Row(vals[r*k/2:(r+1)*k/2], scales[r*k/ascend.MXBlock:(r+1)*k/ascend.MXBlock], x[r*k:(r+1)*k]); err != nil {
					t.Fatal(err)
				}
			}
		case ascend.I8:
			vals, scales = make([]byte, rows*k), make([]byte, 4*rows)
			for r := range rows {
				s, err := ascend.QuantizeI8Row(vals[r*k:(r+1)*k], x[r*k:(r+1)*k])
				if err != nil {
					t.Fatal(err)
				}
				binary.LittleEndian.PutUint32(scales[4*r:], math.Float32bits(s))
			}
		default:
			t.Fatalf("quantExpert: %v", dt)
		}
		return vals, scales
	}
	w := model.ExpertWeights{DType: dt}
	w.Gate, w.GateScale = mat(inter, hidden)
	w.Up, w.UpScale = mat(inter, hidden)
	w.Down, w.DownScale = mat(hidden, inter)
	return w
}

// noMXCard is a card without MXFP4 buffers (a backend that does not support the dtype): its
// Alloc refuses it with ErrDType.
type noMXCard struct{ ascend.Card }

func (c noMXCard) Alloc(dt ascend.DType, shape ...int) (ascend.Buffer, error) {
	if dt == ascend.MXFP4 {
		return nil, fmt.Errorf("%w: no mxfp4 here", ascend.ErrDType)
	}
	return c.Card.Alloc(dt, shape...)
}

// Add holds quantised experts in their storage (values + scales, nothing else), refuses
// malformed ones with ErrShape or ErrDType and leaves nothing on the card when it does.
func TestExpertSetAddQuantised(t *testing.T) {
	const H, I = 64, 32
	rng := rand.New(rand.NewPCG(4, 4))
	mx := quantExpert(t, rng, ascend.MXFP4, H, I)
	i8 := quantExpert(t, rng, ascend.I8, H, I)
	f32 := quantExpert(t, rng, ascend.F32, H, I)
	mxBytes := int64(3 * I * H * 17 / 32) // 4.25 bits a weight
	i8Bytes := int64(3*I*H + 4*(2*I+H))
	for _, tc := range []struct {
		name  string
		w     model.ExpertWeights
		store ascend.DType // SetWeightDType
		card  func(ascend.Card) ascend.Card
		bytes int64 // memory held; 0: Add fails
		held  ascend.DType
		err   error
	}{
		{"mxfp4 packed", mx, 0, nil, mxBytes, ascend.MXFP4, nil},
		{"i8 as given", i8, 0, nil, i8Bytes, ascend.I8, nil},
		{"mxfp4 as bf16", mx, ascend.BF16, nil, 3 * I * H * 2, ascend.BF16, nil},
		{"f32 quantised to i8", f32, ascend.I8, nil, i8Bytes, ascend.I8, nil},
		{"f32 quantised to mxfp4", f32, ascend.MXFP4, nil, mxBytes, ascend.MXFP4, nil},
		{"mxfp4 on a card without it falls back to bf16", mx, 0, func(c ascend.Card) ascend.Card { return noMXCard{c} }, 3 * I * H * 2, ascend.BF16, nil},
		{"mxfp4 forced on a card without it", f32, ascend.MXFP4, func(c ascend.Card) ascend.Card { return noMXCard{c} }, 0, 0, ascend.ErrDType},
		{"mxfp4 scale short", func() model.ExpertWeights { w := mx; w.UpScale = w.UpScale[1:]; return w }(), 0, nil, 0, 0, ascend.ErrShape},
		{"mxfp4 values long", func() model.ExpertWeights { w := mx; w.Down = append(w.Down, 0); return w }(), 0, nil, 0, 0, ascend.ErrShape},
		{"mxfp4 without scales", func() model.ExpertWeights { w := mx; w.GateScale = nil; return w }(), 0, nil, 0, 0, ascend.ErrShape},
		{"f32 with scales", func() model.ExpertWeights { w := f32; w.GateScale = mx.GateScale; return w }(), 0, nil, 0, 0, ascend.ErrShape},
		{"i8 scales of mxfp4", func() model.ExpertWeights { w := i8; w.GateScale = mx.GateScale; return w }(), 0, nil, 0, 0, ascend.ErrShape},
		{"no dtype", func() model.ExpertWeights { w := f32; w.DType = 0; return w }(), 0, nil, 0, 0, ascend.ErrDType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			card := esCard(t, 103)
			if tc.card != nil {
				card = tc.card(card)
			}
			s := model.NewExpertSet(card, H, I, 0)
			if err := s.SetWeightDType(tc.store); err != nil {
				t.Fatal(err)
			}
			base := card.MemInfo().Used
			k := model.ExpertKey{Layer: 1, Expert: 2}
			err := s.Add(k, tc.w)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Add: %v, want %v", err, tc.err)
				}
				if s.Has(k) || card.MemInfo().Used != base {
					t.Fatalf("a refused expert is held (%v) or keeps %d bytes", s.Has(k), card.MemInfo().Used-base)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := card.MemInfo().Used - base; got != tc.bytes {
				t.Fatalf("expert holds %d bytes, want %d", got, tc.bytes)
			}
			if dt, ok := s.HeldDType(k); !ok || dt != tc.held {
				t.Fatalf("held as %v (%v), want %v", dt, ok, tc.held)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
	if got, err := model.ExpertStorageBytes(ascend.MXFP4, H, I); err != nil || got != mxBytes {
		t.Errorf("ExpertStorageBytes(mxfp4) = %d, %v; want %d", got, err, mxBytes)
	}
	if got := model.NewExpertSet(esCard(t, 104), H, I, 0).ExpertBytes(ascend.MXFP4); got != mxBytes {
		t.Errorf("ExpertBytes(mxfp4) = %d, want %d", got, mxBytes)
	}
	if _, err := model.ExpertStorageBytes(ascend.MXFP4, 48, I); !errors.Is(err, ascend.ErrShape) {
		t.Errorf("mxfp4 with hidden 48 (not a multiple of 32): %v", err)
	}
	if err := model.NewExpertSet(esCard(t, 105), H, I, 0).SetWeightDType(ascend.DType(99)); !errors.Is(err, ascend.ErrDType) {
		t.Errorf("SetWeightDType(99): %v", err)
	}
}

// computeAll runs every pair (row r, expert e) of x through s, unweighted.
func computeAll(t testing.TB, s *model.ExpertSet, experts, rows, hidden int, x []float32) []float32 {
	t.Helper()
	b := model.Batch{Layer: 1, X: x, RowPtr: []int32{0}}
	for r := range rows {
		for e := range experts {
			b.Experts = append(b.Experts, int32(e))
			b.Weights = append(b.Weights, 1)
		}
		b.RowPtr = append(b.RowPtr, int32((r+1)*experts))
	}
	out := make([]float32, rows*experts*hidden)
	if err := s.Compute(b, true, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// Packed MXFP4 experts compute exactly what the same experts dequantised to bf16 compute:
// every E2M1·2^k value is exact in bf16 (2 significant bits, the f32 exponent range), the
// cpu kernels widen both exactly to f32 and sum in one fixed order, so the tolerance is 0
// (max |diff| is logged). The bf16 fallback of a card without MXFP4 gives the same bits. I8
// (W8A16) is within its quantisation error of the f32 weights it was made from.
func TestExpertSetPackedEqualsDequantised(t *testing.T) {
	const H, I, E = 64, 32, 4
	rng := rand.New(rand.NewPCG(5, 5))
	var mx, f32 []model.ExpertWeights
	for range E {
		mx = append(mx, quantExpert(t, rng, ascend.MXFP4, H, I))
		f32 = append(f32, quantExpert(t, rng, ascend.F32, H, I))
	}
	const rows = 5
	x := make([]float32, rows*H)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	load := func(card ascend.Card, ws []model.ExpertWeights, store ascend.DType, limit float32) *model.ExpertSet {
		s := model.NewExpertSet(card, H, I, limit)
		if err := s.SetWeightDType(store); err != nil {
			t.Fatal(err)
		}
		for e, w := range ws {
			if err := s.Add(model.ExpertKey{Layer: 1, Expert: e}, w); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	// One row per expert takes the kernels' single-row path (MXFP4 decoded in registers),
	// five rows the multi-row tiles (a panel decoded to f32 first).
	for _, c := range []struct {
		rows  int
		limit float32
	}{{1, 0}, {5, 0}, {1, 10}, {5, 10}} {
		rows, limit, x := c.rows, c.limit, x[:c.rows*H]
		packed := computeAll(t, load(esCard(t, 106), mx, 0, limit), E, rows, H, x)
		for _, other := range []struct {
			name string
			set  *model.ExpertSet
		}{
			{"bf16", load(esCard(t, 107), mx, ascend.BF16, limit)},
			{"f32", load(esCard(t, 108), mx, ascend.F32, limit)},
			{"bf16 fallback", load(noMXCard{esCard(t, 109)}, mx, 0, limit)},
		} {
			got := computeAll(t, other.set, E, rows, H, x)
			maxd := 0.0
			for i := range got {
				maxd = max(maxd, math.Abs(float64(got[i]-packed[i])))
			}
			t.Logf("%d rows, limit %g: packed mxfp4 vs %s: max |diff| %g over %d outputs", rows, limit, other.name, maxd, len(got))
			if maxd != 0 {
				t.Errorf("%d rows, limit %g: packed mxfp4 and %s differ by up to %g", rows, limit, other.name, maxd)
			}
		}
	}
	// I8 from f32: per-row symmetric quantisation errs by at most s/2 = max|w|/254 a
	// weight; through two matmuls and SwiGLU that stays within a few percent of max |out|.
	ref := computeAll(t, load(esCard(t, 110), f32, 0, 0), E, rows, H, x)
	i8 := computeAll(t, load(esCard(t, 111), f32, ascend.I8, 0), E, rows, H, x)
	maxd, maxv := 0.0, 0.0
	for i := range ref {
		maxd = max(maxd, math.Abs(float64(i8[i]-ref[i])))
		maxv = max(maxv, math.Abs(float64(ref[i])))
	}
	t.Logf("i8 (w8a16) vs f32: max |diff| %g, max |out| %g", maxd, maxv)
	if maxd == 0 || maxd > 0.02*maxv {
		t.Errorf("i8 vs f32: max |diff| %g, want in (0, %g]", maxd, 0.02*maxv)
	}
}

// BenchmarkExpertFFN runs one layer's expert FFN (grouped gate/up matmul, SwiGLU, down,
// scatter) with experts packed MXFP4 and dequantised to bf16, side by side: each iteration
// runs both, alternating, so a shared machine's load drifts on both alike. It reports each
// one's median time and mxfp4/bf16, the median of the per-iteration ratios. Shapes:
// DeepSeek-V4 tiny's expert and a small one; rows are token-expert pairs spread evenly over
// 8 experts (8 pairs: one row an expert, the decode case; 16: two; 256: 32).
func BenchmarkExpertFFN(b *testing.B) {
	for _, sz := range []struct {
		name           string
		hidden, inter  int
		experts, pairs int
	}{{"v4tiny-h64-i32/8pairs", 64, 32, 8, 8}, {"v4tiny-h64-i32/64pairs", 64, 32, 8, 64},
		{"small-h1024-i512/8pairs", 1024, 512, 8, 8}, {"small-h1024-i512/16pairs", 1024, 512, 8, 16},
		{"small-h1024-i512/256pairs", 1024, 512, 8, 256}} {
		b.Run(sz.name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(6, 6))
			var ws []model.ExpertWeights
			for range sz.experts {
				ws = append(ws, quantExpert(b, rng, ascend.MXFP4, sz.hidden, sz.inter))
			}
			x := make([]float32, sz.pairs*sz.hidden)
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
			bt := model.Batch{Layer: 1, X: x, RowPtr: []int32{0}}
			for r := range sz.pairs {
				bt.Experts = append(bt.Experts, int32(r%sz.experts))
				bt.Weights = append(bt.Weights, 1)
				bt.RowPtr = append(bt.RowPtr, int32(r+1))
			}
			var sets [2]*model.ExpertSet
			for i, store := range []ascend.DType{0, ascend.BF16} {
				s := model.NewExpertSet(esCard(b, 112+i), sz.hidden, sz.inter, 10)
				if err := s.SetWeightDType(store); err != nil {
					b.Fatal(err)
				}
				for e, w := range ws {
					if err := s.Add(model.ExpertKey{Layer: 1, Expert: e}, w); err != nil {
						b.Fatal(err)
					}
				}
				defer s.Close()
				sets[i] = s
			}
			outs := [2][]float32{make([]float32, len(x)), make([]float32, len(x))}
			var times [2][]float64
			var ratios []float64
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				var ns [2]float64
				for j := range 2 {
					k := (i + j) % 2 // alternate which goes first
					t0 := time.Now()
					if err := sets[k].Compute(bt, false, outs[k]); err != nil {
						b.Fatal(err)
					}
					ns[k] = float64(time.Since(t0).Nanoseconds())
				}
				times[0], times[1] = append(times[0], ns[0]), append(times[1], ns[1])
				ratios = append(ratios, ns[0]/ns[1])
			}
			b.StopTimer()
			if !slices.Equal(outs[0], outs[1]) {
				b.Fatal("packed and bf16 experts give different outputs")
			}
			b.ReportMetric(median(times[0]), "mxfp4-ns/op")
			b.ReportMetric(median(times[1]), "bf16-ns/op")
			b.ReportMetric(median(ratios), "mxfp4/bf16")
		})
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}
