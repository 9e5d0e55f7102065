package decoder_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/decoder"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/model/synth"
)

// remote stands for experts that run on other hosts' cards: a call takes a fixed time
// (round trip plus the remote compute) and uses none of this process's cores. Its output
// is zeros, which changes the logits but not the router's work.
type remote struct{ d time.Duration }

func (r remote) Forward(ctx context.Context, _ int, _ []float32, _ int, _ model.Routing, out []float32) error {
	if r.d == 0 {
		clear(out)
		return nil
	}
	t := time.NewTimer(r.d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	clear(out)
	return nil
}

// BenchmarkForwardSplit times steps of the small qwen3_moe preset (8 layers), with
// experts that take a fixed time elsewhere, whole and cut into two micro-batches: decode
// steps of 16 and 64 sequences (one row each, after 64-token prompts) and prefill steps of 4
// sequences × 64 rows (the sequences are reset before each). Each round times both ways
// back to back in alternating order and reports the median of the per-round ratios
// split/whole, so the machine's drift cancels:
//
//	go test -run '^$' -bench ForwardSplit -benchtime 20x ./model/decoder/
func BenchmarkForwardSplit(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "small")
	cfg, err := synth.Write(dir, synth.Options{Arch: "qwen3_moe", Preset: synth.Small, Seed: 3})
	if err != nil {
		b.Fatal(err)
	}
	ck, err := safetensors.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer ck.Close()
	be, err := ascend.Open("cpu")
	if err != nil {
		b.Fatal(err)
	}
	card, err := be.OpenCard(0, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer card.Close()
	dec, err := decoder.Load(ck, cfg, card)
	if err != nil {
		b.Fatal(err)
	}
	defer dec.Close()
	cases := []struct {
		name       string
		seqs, rows int // sequences and rows each of a step
		d          time.Duration
	}{
		{"decode16/experts=0", 16, 1, 0},
		{"decode16/experts=2ms", 16, 1, 2 * time.Millisecond},
		{"decode16/experts=5ms", 16, 1, 5 * time.Millisecond},
		{"decode64/experts=0", 64, 1, 0},
		{"decode64/experts=5ms", 64, 1, 5 * time.Millisecond},
		{"prefill4x64/experts=0", 4, 64, 0},
		{"prefill4x64/experts=15ms", 4, 64, 15 * time.Millisecond},
		{"prefill4x64/experts=30ms", 4, 64, 30 * time.Millisecond},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			ex := remote{c.d}
			decode := c.rows == 1
			const prompt = 64
			ways := [2][]decoder.Sequence{}
			logits := make([][]float32, c.seqs)
			for i := range logits {
				logits[i] = make([]float32, cfg.Vocab)
			}
			tok := make([][]int32, c.seqs)
			for i := range tok {
				for j := range max(c.rows, prompt) {
					tok[i] = append(tok[i], int32((i*31+j*7)%cfg.Vocab))
				}
			}
			for w := range ways {
				for range c.seqs {
					s, err := dec.NewSequence(nil, prompt+b.N+1)
					if err != nil {
						b.Fatal(err)
					}
					defer s.Close()
					ways[w] = append(ways[w], s)
				}
				if decode {
					if err := dec.Forward(context.Background(), ways[w], tok, ex, logits); err != nil {
						b.Fatal(err)
					}
				}
			}
			if decode {
				for i := range tok {
					tok[i] = tok[i][:1]
				}
			}
			split := model.SplitRows(slices.Repeat([]int{c.rows}, c.seqs), 2)
			var ratios []float64
			var whole, cut time.Duration
			b.ResetTimer()
			for r := range b.N {
				var t [2]time.Duration
				for k := range 2 {
					w := (r + k) % 2 // alternate which way goes first
					if !decode {
						for _, s := range ways[w] {
							s.Reset()
						}
					}
					start := time.Now()
					if err := dec.ForwardSplit(context.Background(), ways[w], tok, ex, logits, w*split); err != nil {
						b.Fatal(err)
					}
					t[w] = time.Since(start)
				}
				whole += t[0]
				cut += t[1]
				ratios = append(ratios, float64(t[1])/float64(t[0]))
			}
			slices.Sort(ratios)
			b.ReportMetric(float64(whole.Microseconds())/float64(b.N), "whole-µs/step")
			b.ReportMetric(float64(cut.Microseconds())/float64(b.N), "split-µs/step")
			b.ReportMetric(ratios[len(ratios)/2], "split/whole")
		})
	}
}
