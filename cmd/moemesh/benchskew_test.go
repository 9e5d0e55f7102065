package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/ascend/cpu"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/synth"
)

// An emulated card computes what a cpu card computes, and a grouped matmul lasts at least
// the modelled device time, which its busy time accounts.
func TestPacedCard(t *testing.T) {
	cfg := &model.Config{Hidden: 16, ExpertIntermediate: 8}
	p := setPacing(skewFlags{pairTime: 2 * time.Millisecond, launch: time.Millisecond}, cfg)
	be, err := ascend.Open(pacedBackendName)
	if err != nil {
		t.Fatal(err)
	}
	paced, err := be.OpenCard(7, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer paced.Close()
	plain, err := cpu.Backend{Threads: 1}.OpenCard(8, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	const rows, k, n = 5, 16, 16 // gate+up of 5 pairs: 2·5·16·16 flops, 1/3 of 5 pairs' 6·H·I
	run := func(c ascend.Card) []float32 {
		x, _ := c.Alloc(ascend.F32, rows, k)
		w, _ := c.Alloc(ascend.F32, n, k)
		out, _ := c.Alloc(ascend.F32, rows, n)
		xs, ws := make([]float32, rows*k), make([]float32, n*k)
		for i := range xs {
			xs[i] = float32(i%7) - 3
		}
		for i := range ws {
			ws[i] = float32(i%5) - 2
		}
		if err := c.WriteF32(x, 0, xs); err != nil {
			t.Fatal(err)
		}
		if err := c.WriteF32(w, 0, ws); err != nil {
			t.Fatal(err)
		}
		if err := c.GroupedMatmul(out, x, []ascend.Buffer{w}, []int64{rows}); err != nil {
			t.Fatal(err)
		}
		got := make([]float32, rows*n)
		if err := c.ReadF32(out, got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	t0 := time.Now()
	got := run(paced)
	took := time.Since(t0)
	if want := run(plain); !slices.Equal(got, want) {
		t.Fatalf("paced card computed %v, cpu card %v", got[:4], want[:4])
	}
	// 5 pairs × 2 ms × (2·16·16)/(6·16·8) = 6.67 ms, plus the 1 ms launch.
	const modelled = time.Millisecond + 6666*time.Microsecond
	if took < modelled {
		t.Errorf("grouped matmul took %v, want at least the modelled %v", took, modelled)
	}
	if busy := p.busySnapshot()[7]; busy < modelled || busy > took {
		t.Errorf("card 7 busy %v, want between %v and %v", busy, modelled, took)
	}
}

func TestBenchSkewBadFlags(t *testing.T) {
	good := skewFlags{skew: 1.2, daemons: 2, clients: 1, inflight: 1, tokens: 4, hot: 1, duration: time.Second, segment: time.Second}
	for _, c := range []struct {
		name string
		edit func(*skewFlags)
		want string
	}{
		{"one daemon", func(f *skewFlags) { f.daemons = 1 }, "--daemons"},
		{"no clients", func(f *skewFlags) { f.clients = 0 }, "positive"},
		{"warm-up too long", func(f *skewFlags) { f.warmup = 3 * time.Second }, "--warmup"},
		{"no segment", func(f *skewFlags) { f.segment = 0 }, "--segment"},
		{"negative pair time", func(f *skewFlags) { f.pairTime = -1 }, "--card-pair-time"},
		{"negative load", func(f *skewFlags) { f.load = -0.5 }, "--load"},
		{"load without calibration", func(f *skewFlags) { f.load = 0.8 }, "--calibrate"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := good
			c.edit(&f)
			err := runBenchSkew(context.Background(), slog.New(slog.DiscardHandler), f)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error naming %s", err, c.want)
			}
		})
	}
}

// A small whole run: two meshes, calibration, open-loop turns, the table and the summary
// line in its exact form.
func TestBenchSkewSmoke(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "skewed")
	if _, err := synth.Write(dir, synth.Options{Arch: "deepseek_v3", Seed: 2, Layers: 2, TopK: 2, Skew: 1.2}); err != nil {
		t.Fatal(err)
	}
	f := skewFlags{modelSpec: dir, daemons: 2, clients: 2, inflight: 4, tokens: 4, hot: 1, load: 0.5,
		calibrate: 300 * time.Millisecond, duration: 1500 * time.Millisecond, segment: 500 * time.Millisecond,
		pairTime: 200 * time.Microsecond, launch: 20 * time.Microsecond}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	out := make(chan string)
	go func() { b, _ := io.ReadAll(r); out <- string(b) }()
	err = runBenchSkew(context.Background(), slog.New(slog.DiscardHandler), f)
	os.Stdout = stdout
	w.Close()
	text := <-out
	t.Log(text)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if !regexp.MustCompile(`^skew: p99_off_ms=[0-9.]+ p99_on_ms=[0-9.]+ ratio=[0-9.]+$`).MatchString(lines[len(lines)-1]) {
		t.Errorf("last line %q is not the summary line", lines[len(lines)-1])
	}
}
