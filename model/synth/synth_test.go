package synth

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/safetensors"
)

var dtypes = []string{"bf16", "f32"}

// TestWriteTiny writes every arch in both dtypes and checks the result with the
// project's own readers (safetensors.Open, model.ParseConfig) and a minimal independent
// parse of each shard's framing.
func TestWriteTiny(t *testing.T) {
	for _, arch := range Arches() {
		for _, dt := range dtypes {
			t.Run(arch+"/"+dt, func(t *testing.T) {
				t.Parallel()
				dir := filepath.Join(t.TempDir(), "ckpt")
				o := Options{Arch: arch, Seed: 7, DType: dt}
				cfg, err := Write(dir, o)
				if err != nil {
					t.Fatal(err)
				}
				checkCheckpoint(t, dir, cfg, o)
			})
		}
	}
}

// TestTinyQwen3Names pins the exact tensor list of the tiny qwen3_moe model (per layer).
func TestTinyQwen3Names(t *testing.T) {
	r, err := resolve(Options{Arch: "qwen3_moe"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range r.buildPlan().specs {
		if strings.Contains(s.name, ".experts.") && !strings.Contains(s.name, ".experts.0.") && !strings.Contains(s.name, ".experts.7.") {
			continue
		}
		if strings.HasPrefix(s.name, "model.layers.1.") {
			continue
		}
		got = append(got, fmt.Sprintf("%s %v", s.name, s.shape))
	}
	want := []string{
		"model.embed_tokens.weight [512 64]",
		"model.layers.0.input_layernorm.weight [64]",
		"model.layers.0.post_attention_layernorm.weight [64]",
		"model.layers.0.self_attn.q_proj.weight [128 64]",
		"model.layers.0.self_attn.k_proj.weight [64 64]",
		"model.layers.0.self_attn.v_proj.weight [64 64]",
		"model.layers.0.self_attn.o_proj.weight [64 128]",
		"model.layers.0.self_attn.q_norm.weight [32]",
		"model.layers.0.self_attn.k_norm.weight [32]",
		"model.layers.0.mlp.gate.weight [8 64]",
		"model.layers.0.mlp.experts.0.gate_proj.weight [32 64]",
		"model.layers.0.mlp.experts.0.up_proj.weight [32 64]",
		"model.layers.0.mlp.experts.0.down_proj.weight [64 32]",
		"model.layers.0.mlp.experts.7.gate_proj.weight [32 64]",
		"model.layers.0.mlp.experts.7.up_proj.weight [32 64]",
		"model.layers.0.mlp.experts.7.down_proj.weight [64 32]",
		"model.norm.weight [64]",
		"lm_head.weight [512 64]",
	}
	if !slices.Equal(got, want) {
		t.Errorf("tiny qwen3_moe tensors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := len(r.buildPlan().specs); n != 1+2*(2+4+2+1+8*3)+2 {
		t.Errorf("%d tensors", n)
	}
}

// TestDeterministic: the same options give byte-identical directories; another seed
// changes every shard but not the config.
func TestDeterministic(t *testing.T) {
	for _, arch := range []string{"qwen3_moe", "deepseek_v3", "granitemoe"} {
		t.Run(arch, func(t *testing.T) {
			t.Parallel()
			base := t.TempDir()
			o := Options{Arch: arch, Seed: 42}
			a, b, c := filepath.Join(base, "a"), filepath.Join(base, "b"), filepath.Join(base, "c")
			for _, d := range []string{a, b} {
				if _, err := Write(d, o); err != nil {
					t.Fatal(err)
				}
			}
			o.Seed = 43
			if _, err := Write(c, o); err != nil {
				t.Fatal(err)
			}
			fa, fb, fc := dirFiles(t, a), dirFiles(t, b), dirFiles(t, c)
			if len(fa) != len(fb) || len(fa) != len(fc) {
				t.Fatalf("file sets differ: %d %d %d", len(fa), len(fb), len(fc))
			}
			for name, data := range fa {
				if !bytes.Equal(data, fb[name]) {
					t.Errorf("same seed: %s differs", name)
				}
				same := bytes.Equal(data, fc[name])
				switch {
				case strings.HasSuffix(name, ".safetensors") && same:
					t.Errorf("different seed: %s is identical", name)
				case name == "config.json" && !same:
					t.Errorf("different seed: config.json differs")
				}
			}
		})
	}
}

// TestDTypes: the bf16 checkpoint is the bf16 rounding of the f32 one (same seed).
func TestDTypes(t *testing.T) {
	base := t.TempDir()
	dirs := map[string]string{}
	for _, dt := range dtypes {
		dirs[dt] = filepath.Join(base, dt)
		if _, err := Write(dirs[dt], Options{Arch: "deepseek_v3", Seed: 3, DType: dt}); err != nil {
			t.Fatal(err)
		}
	}
	if got := readJSON(t, filepath.Join(dirs["f32"], "config.json"))["torch_dtype"]; got != "float32" {
		t.Errorf("f32 torch_dtype %v", got)
	}
	if got := readJSON(t, filepath.Join(dirs["bf16"], "config.json"))["torch_dtype"]; got != "bfloat16" {
		t.Errorf("bf16 torch_dtype %v", got)
	}
	ckF, err := safetensors.Open(dirs["f32"])
	if err != nil {
		t.Fatal(err)
	}
	defer ckF.Close()
	ckB, err := safetensors.Open(dirs["bf16"])
	if err != nil {
		t.Fatal(err)
	}
	defer ckB.Close()
	for _, name := range checkpointNames(ckF) {
		_, _, f := readTensor(t, ckF, name)
		dt, _, b := readTensor(t, ckB, name)
		if dt == safetensors.F32 {
			if !bytes.Equal(f, b) {
				t.Errorf("%s: F32 in both, bytes differ", name)
			}
			continue
		}
		if len(b)*2 != len(f) {
			t.Fatalf("%s: %d bf16 bytes for %d f32 bytes", name, len(b), len(f))
		}
		for i := 0; i < len(b)/2; i++ {
			want := bf16(math.Float32frombits(binary.LittleEndian.Uint32(f[4*i:])))
			if got := binary.LittleEndian.Uint16(b[2*i:]); got != want {
				t.Fatalf("%s[%d]: bf16 %#04x, want rounding of f32 %#04x", name, i, got, want)
			}
		}
	}
}

// TestWeightScale: weights have the documented statistics and a chain of expert FFNs with
// residuals keeps hidden states O(1).
func TestWeightScale(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	cfg, err := Write(dir, Options{Arch: "qwen3_moe", Seed: 1, DType: "f32", Layers: 3})
	if err != nil {
		t.Fatal(err)
	}
	ck, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	load := func(name string) []float32 {
		_, _, b := readTensor(t, ck, name)
		v := make([]float32, len(b)/4)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		return v
	}
	meanStd := func(v []float32) (float64, float64) {
		var s, ss float64
		for _, x := range v {
			s += float64(x)
		}
		m := s / float64(len(v))
		for _, x := range v {
			ss += (float64(x) - m) * (float64(x) - m)
		}
		return m, math.Sqrt(ss / float64(len(v)))
	}
	if m, sd := meanStd(load("model.norm.weight")); math.Abs(m-1) > 0.05 || sd > 0.1 {
		t.Errorf("norm weight mean %.3f std %.3f, want ~1", m, sd)
	}
	const h, inter = 64, 32
	gate, _, down := cfg.ExpertTensorNames(0, 0)
	if _, sd := meanStd(load(gate)); math.Abs(sd-1/math.Sqrt(h)) > 0.02 {
		t.Errorf("expert gate std %.4f, want %.4f", sd, 1/math.Sqrt(h))
	}
	if _, sd := meanStd(load(down)); math.Abs(sd-1/math.Sqrt(inter)) > 0.02 {
		t.Errorf("expert down std %.4f, want %.4f", sd, 1/math.Sqrt(inter))
	}
	// x ← x + E_0(rmsnorm(x)) over the layers, from an embedding row.
	x := load("model.embed_tokens.weight")[5*h : 6*h]
	rms := func(v []float32) float64 {
		var s float64
		for _, a := range v {
			s += float64(a) * float64(a)
		}
		return math.Sqrt(s / float64(len(v)))
	}
	for l := 0; l < 3; l++ {
		g, u, d := cfg.ExpertTensorNames(l, l)
		wg, wu, wd := load(g), load(u), load(d)
		r := rms(x)
		xn := make([]float32, h)
		for i := range x {
			xn[i] = float32(float64(x[i]) / r)
		}
		act := make([]float32, inter)
		for j := 0; j < inter; j++ {
			var a, b float32
			for i := 0; i < h; i++ {
				a += wg[j*h+i] * xn[i]
				b += wu[j*h+i] * xn[i]
			}
			act[j] = a / (1 + float32(math.Exp(float64(-a)))) * b
		}
		for i := 0; i < h; i++ {
			var o float32
			for j := 0; j < inter; j++ {
				o += wd[i*inter+j] * act[j]
			}
			x[i] += o
		}
		if r := rms(x); r < 0.3 || r > 5 {
			t.Errorf("after layer %d hidden rms %.3f, want O(1)", l, r)
		}
	}
}

// TestOverwrite: only missing, empty or previous synth directories are written.
func TestOverwrite(t *testing.T) {
	base := t.TempDir()
	o := Options{Arch: "mixtral", Seed: 1}

	foreign := filepath.Join(base, "foreign")
	if err := os.MkdirAll(foreign, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(foreign, "config.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(foreign, o); !errors.Is(err, ErrExists) {
		t.Errorf("non-empty foreign dir: err %v, want ErrExists", err)
	}
	if got := string(readFile(t, filepath.Join(foreign, "config.json"))); got != "{}" {
		t.Errorf("foreign config.json changed to %q", got)
	}

	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(file, o); !errors.Is(err, ErrExists) {
		t.Errorf("path is a file: err %v, want ErrExists", err)
	}

	empty := filepath.Join(base, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(empty, o); err != nil {
		t.Errorf("empty dir: %v", err)
	}

	// A previous synth checkpoint is replaced as a whole (stale files go too).
	if err := os.WriteFile(filepath.Join(empty, "stale.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := dirFiles(t, empty)
	o.Seed = 2
	if _, err := Write(empty, o); err != nil {
		t.Fatalf("replace synth checkpoint: %v", err)
	}
	after := dirFiles(t, empty)
	if _, ok := after["stale.txt"]; ok {
		t.Error("stale file survived the replacement")
	}
	if bytes.Equal(before["model-00001-of-00002.safetensors"], after["model-00001-of-00002.safetensors"]) {
		t.Error("checkpoint not replaced")
	}

	// A failed write leaves the old checkpoint and no litter.
	o.Shards = 100000
	if _, err := Write(empty, o); !errors.Is(err, ErrOptions) {
		t.Errorf("bad shards: err %v", err)
	}
	entries, _ := os.ReadDir(base)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"empty", "file", "foreign"}; !slices.Equal(names, want) {
		t.Errorf("base holds %v, want %v", names, want)
	}
}

// TestBadOptions: invalid options fail with ErrOptions and a message naming the problem,
// before anything is written.
func TestBadOptions(t *testing.T) {
	cases := []struct {
		o    Options
		want string
	}{
		{Options{Arch: "llama"}, "supported: deepseek_v2, deepseek_v3, granitemoe, mixtral, olmoe, qwen2_moe, qwen3_moe"},
		{Options{}, "unknown arch"},
		{Options{Arch: "mixtral", Preset: "huge"}, `unknown preset "huge"`},
		{Options{Arch: "mixtral", DType: "fp8"}, `unknown dtype "fp8"`},
		{Options{Arch: "mixtral", Shards: -1}, "shards -1"},
		{Options{Arch: "mixtral", Shards: 1000}, "1000 shards"},
		{Options{Arch: "mixtral", Layers: -2}, "layers -2"},
		{Options{Arch: "mixtral", Experts: 1 << 20}, "experts 1048576"},
		{Options{Arch: "mixtral", TopK: 9}, "top-k 9 exceeds 8 experts"},
		{Options{Arch: "qwen3_moe", Hidden: 66}, "hidden 66"},
		{Options{Arch: "deepseek_v3", TopK: 9}, "top-k 9 exceeds the 8 experts of the 2 kept groups"},
		{Options{Arch: "qwen3_moe", Preset: Small, Hidden: 65536, Layers: 1024}, "would be"},
	}
	if _, err := Write("", Options{Arch: "mixtral"}); !errors.Is(err, ErrOptions) {
		t.Errorf("empty dir: %v", err)
	}
	for _, c := range cases {
		dir := filepath.Join(t.TempDir(), "x")
		_, err := Write(dir, c.o)
		if !errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err %v, want ErrOptions containing %q", c.o, err, c.want)
		}
		if _, serr := os.Stat(dir); serr == nil {
			t.Errorf("%+v: directory created", c.o)
		}
	}
}

// TestOverrides: overrides reach config.json and the tensors, dependent sizes follow.
func TestOverrides(t *testing.T) {
	for _, arch := range Arches() {
		t.Run(arch, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "m")
			o := Options{Arch: arch, Layers: 4, Experts: 12, TopK: 3, Hidden: 96, ExpertIntermediate: 40, Shards: 3, DType: "f32"}
			cfg, err := Write(dir, o)
			if err != nil {
				t.Fatal(err)
			}
			raw := readJSON(t, filepath.Join(dir, "config.json"))
			if raw["hidden_size"] != 96.0 || raw["num_hidden_layers"] != 4.0 || raw["num_experts_per_tok"] != 3.0 {
				t.Errorf("config %v", raw)
			}
			if arch == "deepseek_v3" && (raw["n_group"] != 4.0 || raw["topk_group"] != 2.0) {
				t.Errorf("12 experts: n_group %v topk_group %v, want 4, 2", raw["n_group"], raw["topk_group"])
			}
			checkCheckpoint(t, dir, cfg, o)
		})
	}
}

// TestSingleShard: one shard is model.safetensors without an index, as transformers saves.
func TestSingleShard(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := Write(dir, Options{Arch: "olmoe", Shards: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "model.safetensors.index.json")); err == nil {
		t.Error("index written for a single shard")
	}
	entries := parseShard(t, filepath.Join(dir, "model.safetensors"))
	ck, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if n := len(checkpointNames(ck)); n != len(entries) {
		t.Errorf("reader lists %d tensors, file holds %d", n, len(entries))
	}
}

// TestSplit: shards are non-empty, contiguous and balanced.
func TestSplit(t *testing.T) {
	r, err := resolve(Options{Arch: "deepseek_v3"})
	if err != nil {
		t.Fatal(err)
	}
	p := r.buildPlan()
	for _, n := range []int{1, 2, 3, 7, len(p.specs)} {
		shards, err := p.split(n, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(shards) != n {
			t.Fatalf("%d shards, want %d", len(shards), n)
		}
		var flat []tspec
		var largest int64
		for _, s := range shards {
			if len(s) == 0 {
				t.Fatalf("n=%d: empty shard", n)
			}
			flat = append(flat, s...)
			largest = max(largest, (&plan{specs: s}).bytes(false))
		}
		if len(flat) != len(p.specs) || flat[0].name != p.specs[0].name || flat[len(flat)-1].name != p.specs[len(p.specs)-1].name {
			t.Errorf("n=%d: shards do not cover the plan in order", n)
		}
		if n <= 3 && float64(largest) > 1.3*float64(p.bytes(false))/float64(n) {
			t.Errorf("n=%d: largest shard %d bytes of %d total", n, largest, p.bytes(false))
		}
	}
	if _, err := p.split(len(p.specs)+1, false); !errors.Is(err, ErrOptions) {
		t.Errorf("more shards than tensors: %v", err)
	}
}

// TestSmallPreset checks the benchmark preset's sizes without writing ~600 MB.
func TestSmallPreset(t *testing.T) {
	for _, arch := range Arches() {
		r, err := resolve(Options{Arch: arch, Preset: Small})
		if err != nil {
			t.Fatal(err)
		}
		cfg, _, err := r.configJSON()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := model.ParseConfig(cfg); err != nil {
			t.Errorf("%s small: %v", arch, err)
		}
		d := r.d
		if d.Hidden < 1024 || d.Experts < 16 || d.Layers < 8 || d.TopK != 4 || d.ExpertI != 704 || d.Vocab != 4096 {
			t.Errorf("%s small: %+v", arch, d)
		}
		if b := r.buildPlan().bytes(false); b < 400<<20 || b > 1<<30 {
			t.Errorf("%s small: %d bytes", arch, b)
		}
	}
}

// TestRelativeDir: relative paths (including ".") resolve against the working directory.
func TestRelativeDir(t *testing.T) {
	base := t.TempDir()
	t.Chdir(base)
	if _, err := Write("rel/m/", Options{Arch: "olmoe"}); err != nil {
		t.Fatal(err)
	}
	t.Chdir(filepath.Join(base, "rel", "m"))
	if _, err := Write(".", Options{Arch: "olmoe", Seed: 9}); err != nil {
		t.Fatalf("replace the working directory's checkpoint: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(base, "rel")); len(entries) != 1 {
		t.Errorf("rel holds %d entries, want only m", len(entries))
	}
}
