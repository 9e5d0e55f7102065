package synth

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/moemesh/moemesh/model/deepseek4"
	"github.com/moemesh/moemesh/model/safetensors"
)

func TestDeepseekV4TinyMatchesTensorTable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "v4")
	if _, err := Write(dir, Options{Arch: ArchDeepseekV4, Preset: Tiny, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	cfg, err := deepseek4.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if _, err := os.Stat(filepath.Join(dir, safetensors.IndexFile)); err != nil {
		t.Errorf("no index: %v", err)
	}
	table := cfg.Tensors(true)
	var want []string
	kinds := map[string]int{}
	for _, tt := range table {
		want = append(want, tt.Name)
		info, ok := ck.Info(tt.Name)
		if !ok {
			t.Errorf("%s missing", tt.Name)
			continue
		}
		kinds[tt.DType]++
		if string(info.DType) != tt.DType || !slices.Equal(info.Shape, tt.Shape) {
			t.Errorf("%s: %s %v, table %s %v", tt.Name, info.DType, info.Shape, tt.DType, tt.Shape)
		}
	}
	got := ck.Names()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("checkpoint has %d tensors, table %d", len(got), len(want))
	}
	for _, dt := range []string{"F8_E4M3", "F8_E8M0", "I8", "BF16", "F32", "I64"} {
		if kinds[dt] == 0 {
			t.Errorf("no %s tensor written", dt)
		}
	}
	// Every attention kind is present: window-only, CSA (with indexer), HCA.
	seen := map[string]bool{}
	for i := range cfg.Layers {
		seen[cfg.Kind(i)] = true
	}
	if len(seen) != 3 {
		t.Errorf("layer kinds %v, want all three", seen)
	}
	// The quantised weights dequantise (through the generic safetensors path) to the
	// drawn spread: FP8 wq_a std 1/√hidden, MXFP4 expert w1 std 1/√hidden.
	for _, name := range []string{"layers.1.attn.wq_a.weight", "layers.0.ffn.experts.3.w1.weight"} {
		v, err := ck.F32(name)
		if err != nil {
			t.Fatal(err)
		}
		ss := 0.0
		for _, x := range v {
			ss += float64(x) * float64(x)
		}
		std, want := math.Sqrt(ss/float64(len(v))), 1/math.Sqrt(float64(cfg.Hidden))
		if math.Abs(std-want) > 0.25*want {
			t.Errorf("%s: std %.4f, want ≈ %.4f", name, std, want)
		}
	}
	// tid2eid rows hold K distinct experts in range.
	ids, err := ck.F32("layers.0.ffn.gate.tid2eid")
	if err != nil {
		t.Fatal(err)
	}
	for row := range cfg.Vocab {
		r := ids[row*cfg.TopK : (row+1)*cfg.TopK]
		for j, e := range r {
			if e < 0 || int(e) >= cfg.Experts || slices.Contains(r[:j], e) {
				t.Fatalf("tid2eid row %d = %v", row, r)
			}
		}
	}
	if _, err := cfg.LayerGate(0, nil, make([]int32, cfg.Vocab*cfg.TopK)); err != nil {
		t.Errorf("layer 0 hash gate: %v", err)
	}
}

func TestDeepseekV4Deterministic(t *testing.T) {
	a, b := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	for _, d := range []string{a, b} {
		if _, err := Write(d, Options{Arch: ArchDeepseekV4, Seed: 9, Shards: 1}); err != nil {
			t.Fatal(err)
		}
	}
	x, _ := os.ReadFile(filepath.Join(a, safetensors.SingleFile))
	y, _ := os.ReadFile(filepath.Join(b, safetensors.SingleFile))
	if len(x) == 0 || !slices.Equal(x, y) {
		t.Errorf("same seed gave different bytes (%d vs %d)", len(x), len(y))
	}
}

func TestDeepseekV4RejectsOptions(t *testing.T) {
	for _, o := range []Options{
		{Preset: Small}, {DType: "f32"}, {Hidden: 128}, {Skew: 1}, {TopK: 9}, {Layers: -1},
	} {
		o.Arch = ArchDeepseekV4
		if _, err := Write(filepath.Join(t.TempDir(), "x"), o); !errors.Is(err, ErrOptions) {
			t.Errorf("%+v: err %v, want ErrOptions", o, err)
		}
	}
}
