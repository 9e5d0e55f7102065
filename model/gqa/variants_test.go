package gqa

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/model/synth"
)

// editConfig sets keys of dir/config.json (a nil value writes JSON null).
func editConfig(t testing.TB, dir string, set map[string]any) {
	t.Helper()
	path := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range set {
		m[k] = v
	}
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// addDenseMLP adds random f32 mlp.gate_proj/up_proj/down_proj tensors for layer li in an
// extra shard listed in the index, as a checkpoint with mlp_only_layers has them.
func addDenseMLP(t testing.TB, dir string, li, inter, hidden int) {
	t.Helper()
	r := rand.New(rand.NewPCG(uint64(li), 99))
	mk := func(name string, out, in int) safetensors.Tensor {
		data := make([]byte, 4*out*in)
		for i := 0; i < out*in; i++ {
			binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(float32(r.NormFloat64()/math.Sqrt(float64(in)))))
		}
		return safetensors.Tensor{Name: name, DType: safetensors.F32, Shape: []int64{int64(out), int64(in)}, Data: data}
	}
	pre := "model.layers." + strconv.Itoa(li) + ".mlp."
	ts := []safetensors.Tensor{mk(pre+"gate_proj.weight", inter, hidden), mk(pre+"up_proj.weight", inter, hidden), mk(pre+"down_proj.weight", hidden, inter)}
	const shard = "extra.safetensors"
	if err := safetensors.WriteFile(filepath.Join(dir, shard), ts, nil); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "model.safetensors.index.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var idx map[string]any
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	wm := idx["weight_map"].(map[string]any)
	for _, x := range ts {
		wm[x.Name] = shard
	}
	if b, err = json.Marshal(idx); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestConfigVariants: features the synth presets leave off (OLMoE clip_qkv, linear rope
// scaling, Mixtral's sliding window, Qwen dense mlp_only_layers) agree with the
// reference, and each visibly changes the logits (so the test would notice it ignored).
func TestConfigVariants(t *testing.T) {
	for _, c := range []struct {
		name, arch string
		set        map[string]any
		dense      int // layer made dense (mlp_only_layers), −1: none
	}{
		{"olmoe clip_qkv", "olmoe", map[string]any{"clip_qkv": 0.4}, -1},
		{"mixtral linear rope", "mixtral", map[string]any{"rope_scaling": map[string]any{"type": "linear", "factor": 4.0}}, -1},
		{"mixtral sliding window", "mixtral", map[string]any{"sliding_window": 3}, -1},
		{"qwen3 dense layer", "qwen3_moe", map[string]any{"mlp_only_layers": []int{1}}, 1},
		{"qwen2 dense layer", "qwen2_moe", map[string]any{"mlp_only_layers": []int{0}}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := writeSynth(t, c.arch)
			base := loadFixture(t, dir)
			editConfig(t, dir, c.set)
			if c.dense >= 0 {
				addDenseMLP(t, dir, c.dense, base.cfg.DenseIntermediate, base.cfg.Hidden)
			}
			f := loadFixture(t, dir)
			if c.dense >= 0 && f.cfg.IsMoELayer(c.dense) {
				t.Fatalf("layer %d is still a MoE layer", c.dense)
			}
			ids := prompt(7, f.cfg.Vocab, 9)
			ref := (&refModel{t: t, ck: f.ck, cfg: f.cfg, tc: map[string][]float64{}}).forward(ids)
			got := f.run(t, 8, ids)[0]
			if rel, scale := maxRelErr(got, ref[6]); rel > 1e-4 {
				t.Fatalf("logits differ from reference: %.3g relative (max |logit| %g)", rel, scale)
			}
			if plain := base.run(t, 8, ids)[0]; maxAbsDiff(plain, got) < 1e-3 {
				t.Fatalf("%v hardly changes the logits (%.3g): the variant is not exercised", c.set, maxAbsDiff(plain, got))
			}
		})
	}
}

func maxAbsDiff(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// TestLoadErrors: unsupported features and checkpoints that disagree with config.json
// fail Load with the documented sentinel and name the tensor or key; nothing panics.
func TestLoadErrors(t *testing.T) {
	for _, c := range []struct {
		name, arch string
		set        map[string]any
		want       error
		mention    string
	}{
		{"yarn", "qwen3_moe", map[string]any{"rope_scaling": map[string]any{"rope_type": "yarn", "factor": 4.0}}, model.ErrUnsupported, "yarn"},
		{"qwen sliding window", "qwen2_moe", map[string]any{"use_sliding_window": true}, model.ErrUnsupported, "use_sliding_window"},
		{"missing bias", "qwen3_moe", map[string]any{"attention_bias": true}, model.ErrMissing, "self_attn.q_proj.bias"},
		{"missing lm_head", "granitemoe", map[string]any{"tie_word_embeddings": false}, model.ErrMissing, "lm_head.weight"},
		{"wrong head_dim", "qwen3_moe", map[string]any{"head_dim": 8}, model.ErrShape, "model.layers.0.self_attn.q_proj.weight"},
		{"wrong vocab", "mixtral", map[string]any{"vocab_size": 100}, model.ErrShape, "model.embed_tokens.weight"},
		{"dense layer without tensors", "qwen3_moe", map[string]any{"mlp_only_layers": []int{0}}, model.ErrMissing, "model.layers.0.mlp.gate_proj.weight"},
		{"bad clip_qkv", "olmoe", map[string]any{"clip_qkv": "big"}, model.ErrConfig, "clip_qkv"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := writeSynth(t, c.arch)
			editConfig(t, dir, c.set)
			cfg, err := model.LoadConfig(dir)
			if err != nil {
				t.Fatal(err)
			}
			ck, err := safetensors.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			be, _ := ascend.Open("cpu")
			card, err := be.OpenCard(0, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer card.Close()
			m, err := Load(ck, cfg, card)
			if err == nil {
				m.Close()
				t.Fatal("loaded")
			}
			if !errors.Is(err, c.want) || !contains(err.Error(), c.mention) {
				t.Fatalf("error %q, want %v naming %s", err, c.want, c.mention)
			}
			// A failed Load leaves nothing on the card.
			if used := card.MemInfo().Used; used != 0 {
				t.Fatalf("failed Load left %d bytes on the card", used)
			}
		})
	}
	t.Run("unsupported arch", func(t *testing.T) {
		cfg := &model.Config{Arch: "deepseek_v3"}
		be, _ := ascend.Open("cpu")
		card, _ := be.OpenCard(0, 0)
		defer card.Close()
		if _, err := Load(&safetensors.Checkpoint{}, cfg, card); !errors.Is(err, model.ErrUnsupported) {
			t.Fatalf("deepseek_v3: %v", err)
		}
	})
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// TestBF16Checkpoint: a bf16 checkpoint keeps its weights in bf16 on the card and the
// embedding as bf16 bits; the reference reads the same bf16 values exactly, so the 1e-4
// bound still holds (activations stay f32).
func TestBF16Checkpoint(t *testing.T) {
	for _, arch := range []string{"qwen2_moe", "granitemoe"} {
		t.Run(arch, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := synth.Write(dir, synth.Options{Arch: arch, Seed: 3, DType: "bf16"}); err != nil {
				t.Fatal(err)
			}
			f := loadFixture(t, dir)
			if info, _ := f.ck.Info("model.layers.0.self_attn.q_proj.weight"); info.DType != safetensors.BF16 {
				t.Fatalf("synth wrote %s, want BF16", info.DType)
			}
			for _, b := range f.m.bufs {
				if b.DType() != ascend.BF16 {
					t.Fatalf("a weight of shape %v is kept as %v on the card, want bf16", b.Shape(), b.DType())
				}
			}
			if len(f.m.bufs) == 0 {
				t.Fatal("no weights on the card")
			}
			ids := prompt(7, f.cfg.Vocab, 4)
			ref := (&refModel{t: t, ck: f.ck, cfg: f.cfg, tc: map[string][]float64{}}).forward(ids)
			if rel, scale := maxRelErr(f.run(t, 8, ids)[0], ref[6]); rel > 1e-4 {
				t.Fatalf("logits differ from reference: %.3g relative (max |logit| %g)", rel, scale)
			}
		})
	}
}
