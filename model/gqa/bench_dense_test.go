package gqa

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/model/synth"
)

// The dense-path benchmarks run the `small` preset (hidden 1024, 8 layers, 16 heads / 4 kv
// heads, vocab 4096, bf16 weights) of qwen3_moe with in-process experts. Cards take their
// thread count from GOMAXPROCS when they open, and Attend reads it on every call, so
// `-cpu 1,2` compares one worker with all of them in one run:
//
//	go test -run '^$' -bench 'Small' -cpu 1,2 -count 3 ./model/gqa/
//
// The checkpoint (~0.6 GB) is written once per test binary and removed by TestMain, or
// kept in $MOEMESH_SMALL_CK if that is set; one loaded model is kept per GOMAXPROCS value.

var smallOptions = synth.Options{Arch: "qwen3_moe", Preset: synth.Small, Seed: 7, DType: "bf16"}

var small struct {
	sync.Mutex
	dir    string
	err    error
	loaded map[int]*smallModel
}

// smallModel is a loaded small checkpoint: dense side and experts on separate cards.
type smallModel struct {
	cfg     *model.Config
	m       *Model
	experts *model.Local
}

func TestMain(m *testing.M) {
	code := m.Run()
	small.Lock()
	if small.dir != "" {
		os.RemoveAll(small.dir)
	}
	small.Unlock()
	os.Exit(code)
}

// loadSmall returns the small model for the current GOMAXPROCS, writing and loading it on
// first use. The models live until the binary exits: reloading 0.6 GB per sub-benchmark
// would dominate the run.
func loadSmall(b *testing.B) *smallModel {
	b.Helper()
	small.Lock()
	defer small.Unlock()
	procs := runtime.GOMAXPROCS(0)
	if sm := small.loaded[procs]; sm != nil {
		return sm
	}
	dir := os.Getenv("MOEMESH_SMALL_CK")
	if dir != "" {
		// A kept checkpoint: written on first use, never removed, so repeated runs (and
		// binaries built from other commits) skip the ~0.6 GB write.
		if _, err := os.Stat(filepath.Join(dir, "config.json")); err != nil {
			if _, err := synth.Write(dir, smallOptions); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		if small.dir == "" && small.err == nil {
			tmp, err := os.MkdirTemp("", "moemesh-gqa-small-")
			if err == nil {
				small.dir = tmp
				_, err = synth.Write(filepath.Join(tmp, "ck"), smallOptions)
			}
			small.err = err
		}
		if small.err != nil {
			b.Fatal(small.err)
		}
		dir = filepath.Join(small.dir, "ck")
	}
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		b.Fatal(err)
	}
	ck, err := safetensors.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	be, err := ascend.Open("cpu")
	if err != nil {
		b.Fatal(err)
	}
	c1, err := be.OpenCard(0, 0)
	if err != nil {
		b.Fatal(err)
	}
	c2, err := be.OpenCard(1, 0)
	if err != nil {
		b.Fatal(err)
	}
	m, err := Load(ck, cfg, c1)
	if err != nil {
		b.Fatal(err)
	}
	ex, err := model.LoadLocal(ck, cfg, c2, cfg.MoELayers())
	if err != nil {
		b.Fatal(err)
	}
	if small.loaded == nil {
		small.loaded = map[int]*smallModel{}
	}
	sm := &smallModel{cfg: cfg, m: m, experts: ex}
	small.loaded[procs] = sm
	return sm
}

// BenchmarkSmallDecode times one decode step of B sequences, each with a context of 128 to
// 256 tokens; tokens/s counts all B.
func BenchmarkSmallDecode(b *testing.B) {
	for _, batch := range []int{1, 16} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			sm := loadSmall(b)
			const ctxLen, capacity = 128, 256
			ctx := context.Background()
			seqs := make([]*Sequence, batch)
			prefill := make([][]int32, batch)
			tok := make([][]int32, batch)
			lg := make([][]float32, batch)
			for i := range seqs {
				s, err := sm.m.NewSequence(capacity)
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				seqs[i] = s
				prefill[i] = prompt(ctxLen, sm.cfg.Vocab, i+1)
				tok[i] = []int32{int32(3 + i)}
				lg[i] = make([]float32, sm.cfg.Vocab)
			}
			fill := func() {
				for _, s := range seqs {
					s.Reset()
				}
				if err := sm.m.Forward(ctx, seqs, prefill, sm.experts, lg); err != nil {
					b.Fatal(err)
				}
			}
			fill()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if seqs[0].Len() == capacity {
					b.StopTimer()
					fill()
					b.StartTimer()
				}
				if err := sm.m.Forward(ctx, seqs, tok, sm.experts, lg); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

// BenchmarkSmallPrefill times a 128-token prefill of one fresh sequence.
func BenchmarkSmallPrefill(b *testing.B) {
	sm := loadSmall(b)
	const n = 128
	ctx := context.Background()
	s, err := sm.m.NewSequence(n)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ids := [][]int32{prompt(n, sm.cfg.Vocab, 1)}
	lg := [][]float32{make([]float32, sm.cfg.Vocab)}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.Reset()
		if err := sm.m.Forward(ctx, []*Sequence{s}, ids, sm.experts, lg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "tokens/s")
}
