package proto

import (
	"math/rand/v2"
	"testing"
)

// The benchmarks run the hand-written path ("append", "fast") beside the generic msgpack
// path it replaced ("msgpack") on a batch of one card in a layer step of the small preset
// at T=64: 64 rows of 1024 bf16 values, two experts per row.

func benchBatch() *ExpertBatch {
	return randomBatch(rand.New(rand.NewPCG(64, 1024)), 64, 2, 1024, BF16, false)
}

func benchResult(b *ExpertBatch) *ExpertResult {
	r := &ExpertResult{V: Version, Layer: b.Layer, QueueNanos: 1000, ComputeNanos: 2000}
	rows := int64(b.Rows())
	if b.Mode == ModePairs {
		rows = int64(len(b.Experts))
	}
	if err := r.Y.SetF32(BF16, make([]float32, rows*b.X.Shape[1]), rows, b.X.Shape[1]); err != nil {
		panic(err)
	}
	return r
}

func BenchmarkEncodeExpertBatch(b *testing.B) {
	batch := benchBatch()
	b.Run("append", func(b *testing.B) {
		buf := AppendExpertBatch(nil, batch)
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		for b.Loop() {
			buf = AppendExpertBatch(buf[:0], batch)
		}
	})
	b.Run("msgpack", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Marshal(batch); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDecodeExpertBatch(b *testing.B) {
	data := AppendExpertBatch(nil, benchBatch())
	b.Run("fast", func(b *testing.B) {
		var got ExpertBatch
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			if err := DecodeExpertBatch(data, &got, 16); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("msgpack", func(b *testing.B) {
		var got ExpertBatch
		b.ReportAllocs()
		for b.Loop() {
			if err := unmarshal(data, &got); err != nil {
				b.Fatal(err)
			}
			if err := got.Validate(16); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkEncodeExpertResult(b *testing.B) {
	res := benchResult(benchBatch())
	b.Run("append", func(b *testing.B) {
		buf := AppendExpertResult(nil, res)
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		for b.Loop() {
			buf = AppendExpertResult(buf[:0], res)
		}
	})
	b.Run("msgpack", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Marshal(res); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDecodeExpertResult(b *testing.B) {
	batch := benchBatch()
	data := AppendExpertResult(nil, benchResult(batch))
	b.Run("fast", func(b *testing.B) {
		var got ExpertResult
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			if err := DecodeExpertResult(data, &got, batch); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("msgpack", func(b *testing.B) {
		var got ExpertResult
		b.ReportAllocs()
		for b.Loop() {
			if err := unmarshal(data, &got); err != nil {
				b.Fatal(err)
			}
			if err := got.Validate(batch); err != nil {
				b.Fatal(err)
			}
		}
	})
}
