package deepseek4

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/nn"
)

func readFixture(t *testing.T, dir string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(dir + "/config.json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func parseMap(t *testing.T, m map[string]any) (*Config, error) {
	t.Helper()
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return Parse(data)
}

func TestLoadPublishedConfigs(t *testing.T) {
	for _, c := range []struct {
		dir                       string
		hidden, layers, e, groups int
		kinds                     map[int]string
		scale                     float32
		ratios                    int
		qlora, topk               int
	}{
		{"testdata/flash", 4096, 43, 256, 8, map[int]string{0: KindWindow, 1: KindWindow, 2: KindCSA, 3: KindHCA, 41: KindHCA, 42: KindCSA, 43: KindWindow}, 1.5, 44, 1024, 512},
		{"testdata/pro", 7168, 61, 384, 16, map[int]string{0: KindHCA, 1: KindHCA, 2: KindCSA, 3: KindHCA, 60: KindCSA, 61: KindWindow}, 2.5, 62, 1536, 1024},
	} {
		cfg, err := Load(c.dir)
		if err != nil {
			t.Fatalf("%s: %v", c.dir, err)
		}
		if cfg.Hidden != c.hidden || cfg.Layers != c.layers || cfg.Experts != c.e || cfg.OGroups != c.groups ||
			cfg.RoutedScaling != c.scale || len(cfg.CompressRatios) != c.ratios || cfg.QLoraRank != c.qlora || cfg.IndexTopK != c.topk {
			t.Errorf("%s: parsed %+v", c.dir, *cfg)
		}
		for i, k := range c.kinds {
			if got := cfg.Kind(i); got != k {
				t.Errorf("%s: layer %d kind %s, want %s", c.dir, i, got, k)
			}
		}
		if cfg.TopK != 6 || cfg.HashLayers != 3 || cfg.SwiGLULimit != 10 || cfg.Scoring != "sqrtsoftplus" || cfg.HeadDim != 512 ||
			cfg.RopeDim != 64 || cfg.HCMult != 4 || cfg.HCIters != 20 || cfg.HCEps != 1e-6 || cfg.Window != 128 ||
			cfg.ExpertDType != "fp4" || cfg.MTPLayers != 1 || cfg.MixWidth() != 24 {
			t.Errorf("%s: V4 constants wrong: %+v", c.dir, *cfg)
		}
		if !cfg.IsHashLayer(2) || cfg.IsHashLayer(3) || cfg.HasIndexer(3) || !cfg.HasIndexer(2) {
			t.Errorf("%s: hash/indexer layers wrong", c.dir)
		}
		w := cfg.LayerRope(0)
		if cfg.Kind(0) == KindWindow && (w.Theta != 10000 || w.YaRN) {
			t.Errorf("%s: window layer rope %+v, want theta 10000 without YaRN", c.dir, w)
		}
		if r := cfg.LayerRope(2); r.Theta != 160000 || !r.YaRN || r.Factor != 16 || r.OriginalLen != 65536 || r.BetaFast != 32 || r.BetaSlow != 1 {
			t.Errorf("%s: compressed layer rope %+v", c.dir, r)
		}
		if got, want := cfg.SoftmaxScale(), float32(1/math.Sqrt(512)); got != want {
			t.Errorf("%s: softmax scale %v, want %v", c.dir, got, want)
		}
	}
}

// The v5 spelling (layer_types, rope_parameters {main, compress}, partial_rotary_factor,
// mlp_layer_types) must give the same config as the release spelling.
func TestV5Spelling(t *testing.T) {
	m := readFixture(t, "testdata/flash")
	want, err := parseMap(t, m)
	if err != nil {
		t.Fatal(err)
	}
	types := make([]string, 43)
	for i := range types {
		types[i] = want.Kind(i)
	}
	mlp := make([]string, 43)
	for i := range mlp {
		mlp[i] = "moe"
		if i < 3 {
			mlp[i] = "hash_moe"
		}
	}
	for _, k := range []string{"compress_ratios", "rope_scaling", "rope_theta", "qk_rope_head_dim", "num_hash_layers", "compress_rope_theta"} {
		delete(m, k)
	}
	m["layer_types"] = types
	m["mlp_layer_types"] = mlp
	m["partial_rotary_factor"] = 0.125
	m["rope_parameters"] = map[string]any{
		"main":     map[string]any{"rope_type": "default", "rope_theta": 10000},
		"compress": map[string]any{"rope_type": "yarn", "rope_theta": 160000, "factor": 16, "original_max_position_embeddings": 65536, "beta_fast": 32, "beta_slow": 1},
	}
	got, err := parseMap(t, m)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 43 {
		if got.Kind(i) != want.Kind(i) || got.LayerRope(i) != want.LayerRope(i) || got.IsHashLayer(i) != want.IsHashLayer(i) {
			t.Errorf("layer %d: v5 %s %+v, release %s %+v", i, got.Kind(i), got.LayerRope(i), want.Kind(i), want.LayerRope(i))
		}
	}
	if got.RopeDim != 64 || got.RopeTheta != 10000 {
		t.Errorf("rope dim %d theta %v", got.RopeDim, got.RopeTheta)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(m map[string]any)
		want string
	}{
		{"odd rope dim", func(m map[string]any) { m["qk_rope_head_dim"] = 63 }, "qk_rope_head_dim"},
		{"rope dim too big", func(m map[string]any) { m["qk_rope_head_dim"] = 512 }, "qk_rope_head_dim"},
		{"groups", func(m map[string]any) { m["o_groups"] = 7 }, "o_groups"},
		{"kv heads", func(m map[string]any) { m["num_key_value_heads"] = 2 }, "num_key_value_heads"},
		{"shared", func(m map[string]any) { m["n_shared_experts"] = 2 }, "n_shared_experts"},
		{"expert groups", func(m map[string]any) { m["n_group"] = 8; m["topk_group"] = 4 }, "n_group"},
		{"short ratios", func(m map[string]any) { m["compress_ratios"] = []int{0, 0, 4} }, "compress_ratios"},
		{"ratio 1", func(m map[string]any) { r := m["compress_ratios"].([]any); r[5] = 1 }, "compress_ratios[5]"},
		{"no ratios", func(m map[string]any) { delete(m, "compress_ratios") }, "compress_ratios"},
		{"bad layer type", func(m map[string]any) { delete(m, "compress_ratios"); m["layer_types"] = []string{"full_attention"} }, "layer_types[0]"},
		{"wrong type", func(m map[string]any) { m["hc_mult"] = "four" }, "hc_mult"},
		{"hc iters", func(m map[string]any) { m["hc_sinkhorn_iters"] = 0 }, "hc_sinkhorn_iters"},
		{"hc eps", func(m map[string]any) { m["hc_eps"] = -1 }, "hc_eps"},
		{"window", func(m map[string]any) { m["sliding_window"] = 0 }, "sliding_window"},
		{"expert dtype", func(m map[string]any) { m["expert_dtype"] = "int4" }, "expert_dtype"},
		{"fp4 width", func(m map[string]any) { m["moe_intermediate_size"] = 2040 }, "multiples of 32"},
		{"rope type", func(m map[string]any) { m["rope_scaling"] = map[string]any{"type": "linear", "factor": 2} }, "rope_scaling"},
		{"index dim", func(m map[string]any) { m["index_head_dim"] = 32 }, "index_head_dim"},
	} {
		m := readFixture(t, "testdata/flash")
		c.edit(m)
		_, err := parseMap(t, m)
		if err == nil || !errors.Is(err, model.ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want ErrConfig naming %q", c.name, err, c.want)
		}
	}
	if _, err := FromModel(&model.Config{Arch: "deepseek_v3"}); !errors.Is(err, ErrConfig) {
		t.Errorf("another family: err = %v", err)
	}
}

// refFreqs transcribes model.py precompute_freqs_cis's frequencies.
func refFreqs(dim int, orig int, base, factor, fast, slow float64) []float64 {
	corrDim := func(rot float64) float64 {
		return float64(dim) * math.Log(float64(orig)/(rot*2*math.Pi)) / (2 * math.Log(base))
	}
	freqs := make([]float64, dim/2)
	for i := range freqs {
		freqs[i] = 1 / math.Pow(base, float64(2*i)/float64(dim))
	}
	if orig > 0 {
		low := math.Max(math.Floor(corrDim(fast)), 0)
		high := math.Min(math.Ceil(corrDim(slow)), float64(dim-1))
		if low == high {
			high += 0.001
		}
		for i := range freqs {
			ramp := math.Min(math.Max((float64(i)-low)/(high-low), 0), 1)
			smooth := 1 - ramp
			freqs[i] = freqs[i]/factor*(1-smooth) + freqs[i]*smooth
		}
	}
	return freqs
}

func TestRopePerLayerMatchesReference(t *testing.T) {
	cfg, err := Load("testdata/flash")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		layer int
		theta float64
		orig  int
	}{{0, 10000, 0}, {1, 10000, 0}, {2, 160000, 65536}, {3, 160000, 65536}} {
		r, err := nn.NewRope(cfg.RopeConfig(c.layer))
		if err != nil {
			t.Fatal(err)
		}
		want := refFreqs(64, c.orig, c.theta, 16, 32, 1)
		got := r.InvFreq()
		for i := range want {
			if !near(float64(got[i]), want[i], 1e-6) {
				t.Errorf("layer %d: inv_freq[%d] = %v, reference %v", c.layer, i, got[i], want[i])
			}
		}
		if r.AttentionFactor() != 1 {
			t.Errorf("layer %d: cos/sin scaled by %v; the reference does not scale", c.layer, r.AttentionFactor())
		}
	}
	// YaRN must actually change the compressed layers' low frequencies.
	if a, b := refFreqs(64, 65536, 160000, 16, 32, 1), refFreqs(64, 0, 160000, 16, 32, 1); a[31] == b[31] || a[0] != b[0] {
		t.Errorf("YaRN ramp: first %v/%v, last %v/%v", a[0], b[0], a[31], b[31])
	}
}
