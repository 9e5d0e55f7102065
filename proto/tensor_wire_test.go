package proto

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"testing"
)

// randomBatch makes a batch with the given rows and pairs per row; nil* leave that field
// nil, which the encoders write as msgpack nil.
func randomBatch(rng *rand.Rand, rows, perRow, hidden int, dt DType, nilTokens bool) *ExpertBatch {
	b := &ExpertBatch{V: Version, Layer: int32(rng.IntN(60)), Mode: Mode(rng.IntN(2)), OutDType: dt, RowPtr: I32s{0}}
	x := make([]float32, rows*hidden)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	for r := 0; r < rows; r++ {
		for k := 0; k < perRow; k++ {
			b.Experts = append(b.Experts, int32(rng.IntN(16)))
			b.Weights = append(b.Weights, rng.Float32())
		}
		b.RowPtr = append(b.RowPtr, int32(len(b.Experts)))
		if !nilTokens {
			b.Tokens = append(b.Tokens, int32(rng.IntN(1000)))
		}
	}
	if err := b.X.SetF32(dt, x, int64(rows), int64(hidden)); err != nil {
		panic(err)
	}
	return b
}

// wireCases are batches whose bins span bin8, bin16 and bin32 lengths, with empty and nil
// fields.
func wireCases() []*ExpertBatch {
	rng := rand.New(rand.NewPCG(8, 8))
	empty := &ExpertBatch{V: Version, OutDType: F32, RowPtr: I32s{0}}
	_ = empty.X.SetF32(F16, nil, 0, 4)
	nilShape := &ExpertBatch{V: 7, Layer: -3, Mode: 9, OutDType: 0}
	return []*ExpertBatch{
		randomBatch(rng, 1, 1, 8, BF16, false),
		randomBatch(rng, 3, 2, 16, F32, true),
		randomBatch(rng, 64, 2, 1024, BF16, false),    // bin32 rows, bin16 pairs
		randomBatch(rng, 300, 4, 64, F16, false),      // bin32 rows and pairs
		randomBatch(rng, 0, 0, 8, BF16, false),        // no rows: empty bins
		{V: Version, RowPtr: I32s{}, Experts: I32s{}}, // empty, non-nil arrays; nil tensor
		empty,
		nilShape,
	}
}

// TestAppendMatchesMsgpack: the hand-written encoders write the generic encoder's bytes,
// so the wire format does not depend on which side uses which.
func TestAppendMatchesMsgpack(t *testing.T) {
	for i, b := range wireCases() {
		want, err := Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		prefix := []byte("junk")
		if got := AppendExpertBatch(prefix, b); !bytes.Equal(got[len(prefix):], want) {
			t.Fatalf("batch %d:\n got %x\nwant %x", i, got[len(prefix):], want)
		}
		res := &ExpertResult{V: b.V, Layer: b.Layer, Y: b.X, QueueNanos: -int64(i), ComputeNanos: int64(i) << 40}
		if want, err = Marshal(res); err != nil {
			t.Fatal(err)
		}
		if got := AppendExpertResult(nil, res); !bytes.Equal(got, want) {
			t.Fatalf("result %d:\n got %x\nwant %x", i, got, want)
		}
	}
}

// genericBatch decodes data the way DecodeExpertBatch did before the fast path.
func genericBatch(data []byte, b *ExpertBatch) error { return unmarshal(data, b) }

// checkFastBatch: whenever the fast path takes a body, it decodes it to exactly what the
// generic decoder gives, into a fresh value and into one that held another batch.
func checkFastBatch(t *testing.T, data []byte, prev *ExpertBatch) {
	t.Helper()
	var fast ExpertBatch
	if !decodeBatchFast(data, &fast) {
		return
	}
	var gen ExpertBatch
	if err := genericBatch(data, &gen); err != nil {
		t.Fatalf("fast path took %x, the generic decoder rejects it: %v", data, err)
	}
	if !reflect.DeepEqual(&fast, &gen) {
		t.Fatalf("fresh: fast %+v, generic %+v", fast, gen)
	}
	if prev != nil {
		reused, genReused := cloneBatch(prev), cloneBatch(prev)
		if !decodeBatchFast(data, reused) {
			t.Fatal("the fast path depends on the destination")
		}
		if err := genericBatch(data, genReused); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(AppendExpertBatch(nil, reused), AppendExpertBatch(nil, genReused)) {
			t.Fatalf("reused: fast %+v, generic %+v", reused, genReused)
		}
	}
}

func cloneBatch(b *ExpertBatch) *ExpertBatch {
	var c ExpertBatch
	if err := unmarshal(AppendExpertBatch(nil, b), &c); err != nil {
		panic(err)
	}
	return &c
}

func TestFastDecodeMatchesGeneric(t *testing.T) {
	cases := wireCases()
	for i, b := range cases {
		data := AppendExpertBatch(nil, b)
		prev := cases[(i+2)%len(cases)]
		// Every batch the router sends (no nil field) must take the fast path.
		full := b.X.Shape != nil && b.X.Data != nil && b.RowPtr != nil && b.Experts != nil && b.Weights != nil && b.Tokens != nil
		if full && !decodeBatchFast(data, new(ExpertBatch)) {
			t.Fatalf("batch %d has every field set and does not take the fast path", i)
		}
		checkFastBatch(t, data, prev)
		// Truncations and single-byte changes: the fast path must refuse or agree.
		for n := 0; n < len(data) && n < 200; n++ {
			checkFastBatch(t, data[:n], prev)
			mut := bytes.Clone(data)
			mut[n] ^= 0x5a
			checkFastBatch(t, mut, prev)
		}
		res := &ExpertResult{V: Version, Layer: b.Layer, Y: b.X, QueueNanos: 3, ComputeNanos: 4}
		rd := AppendExpertResult(nil, res)
		var fast, gen ExpertResult
		if ok := decodeResultFast(rd, &fast); ok {
			if err := unmarshal(rd, &gen); err != nil || !reflect.DeepEqual(&fast, &gen) {
				t.Fatalf("result %d: fast %+v, generic %+v (%v)", i, fast, gen, err)
			}
		}
	}
}

// FuzzFastDecodeBatch checks the fast path against the generic decoder on any input.
func FuzzFastDecodeBatch(f *testing.F) {
	for _, b := range wireCases()[:2] {
		f.Add(AppendExpertBatch(nil, b))
	}
	prev := wireCases()[0]
	f.Fuzz(func(t *testing.T, data []byte) { checkFastBatch(t, data, prev) })
}

// TestDecodeReusesStorage: decoding a batch of the same size again into the same value
// allocates nothing (the mesh's steady state).
func TestDecodeReusesStorage(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 9))
	src := randomBatch(rng, 16, 2, 256, BF16, false)
	data := AppendExpertBatch(nil, src)
	res := &ExpertResult{V: Version, Layer: src.Layer, QueueNanos: 1}
	if err := res.Y.SetF32(BF16, make([]float32, 16*256), 16, 256); err != nil {
		t.Fatal(err)
	}
	if src.Mode == ModePairs {
		res.Y.Shape[0] = int64(len(src.Experts))
		res.Y.Data = make([]byte, len(src.Experts)*256*2)
	}
	rdata := AppendExpertResult(nil, res)
	var b ExpertBatch
	var r ExpertResult
	buf := make([]byte, 0, len(data))
	allocs := testing.AllocsPerRun(20, func() {
		if err := DecodeExpertBatch(data, &b, 16); err != nil {
			t.Fatal(err)
		}
		if err := DecodeExpertResult(rdata, &r, &b); err != nil {
			t.Fatal(err)
		}
		buf = AppendExpertBatch(buf[:0], &b)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per decode+encode, want 0", allocs)
	}
	if !bytes.Equal(buf, data) {
		t.Fatal("decoded batch does not re-encode to its body")
	}
}

func TestSetRowsF32(t *testing.T) {
	x := []float32{0, 1, 2, 3, 4, 5, 6, 7.5}
	for _, dt := range []DType{F32, BF16, F16} {
		var got, want Tensor
		if err := got.SetRowsF32(dt, x, 2, []int32{3, 0, 3}); err != nil {
			t.Fatal(err)
		}
		if err := want.SetF32(dt, []float32{6, 7.5, 0, 1, 6, 7.5}, 3, 2); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%v: %+v, want %+v", dt, got, want)
		}
	}
	var tt Tensor
	for name, err := range map[string]error{
		"row out of range": tt.SetRowsF32(F32, x, 2, []int32{4}),
		"negative row":     tt.SetRowsF32(F32, x, 2, []int32{-1}),
		"ragged":           tt.SetRowsF32(F32, x, 3, nil),
		"dtype":            tt.SetRowsF32(9, x, 2, nil),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
