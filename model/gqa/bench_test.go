package gqa

import (
	"context"
	"testing"
)

// BenchmarkDecode measures batch-1 decode steps (one token each) of the tiny models, the
// context kept between 16 and 128 tokens; tokens/s is 1e9 / ns/op.
func BenchmarkDecode(b *testing.B) {
	for _, arch := range Arches {
		b.Run(arch, func(b *testing.B) {
			f := newFixture(b, arch)
			s, err := f.m.NewSequence(128)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			lg := [][]float32{make([]float32, f.cfg.Vocab)}
			prefill := prompt(16, f.cfg.Vocab, 1)
			if err := f.m.Forward(ctx, []*Sequence{s}, [][]int32{prefill}, f.experts, lg); err != nil {
				b.Fatal(err)
			}
			tok := []int32{3}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if s.Len() == s.Cap() {
					b.StopTimer()
					s.Reset()
					if err := f.m.Forward(ctx, []*Sequence{s}, [][]int32{prefill}, f.experts, lg); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				if err := f.m.Forward(ctx, []*Sequence{s}, [][]int32{tok}, f.experts, lg); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}
