package deepseek4

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/moemesh/moemesh/model/safetensors"
)

func tensorMap(t *testing.T, dir string, mtp bool) (*Config, map[string]Tensor) {
	t.Helper()
	c, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]Tensor{}
	for _, x := range c.Tensors(mtp) {
		if _, dup := m[x.Name]; dup {
			t.Fatalf("duplicate tensor %s", x.Name)
		}
		m[x.Name] = x
	}
	return c, m
}

// The first 18 entries are shapes (and, but for ape, dtypes) read from the headers of the
// published V4-Flash shards as quoted by loaders of the real checkpoint (see
// docs/models/deepseek-v4.md, decision 18); the rest follow from model.py's modules.
func TestFlashTensorsMatchShippedHeaders(t *testing.T) {
	_, m := tensorMap(t, "testdata/flash", true)
	for _, w := range []struct {
		name, dt string
		shape    []int64
	}{
		{"layers.0.ffn.gate.tid2eid", "I64", []int64{129280, 6}},
		{"layers.0.ffn.gate.weight", "BF16", []int64{256, 4096}},
		{"layers.0.attn.wo_a.scale", "F8_E8M0", []int64{64, 32}},
		{"layers.0.attn.wq_a.scale", "F8_E8M0", []int64{8, 32}},
		{"layers.0.ffn.experts.0.w1.scale", "F8_E8M0", []int64{2048, 128}},
		{"layers.0.attn.wo_a.weight", "F8_E4M3", []int64{8192, 4096}},
		{"layers.0.attn.wq_a.weight", "F8_E4M3", []int64{1024, 4096}},
		{"layers.0.ffn.experts.0.w1.weight", "I8", []int64{2048, 2048}},
		{"layers.2.attn.indexer.compressor.wkv.weight", "BF16", []int64{256, 4096}},
		{"layers.2.attn.indexer.compressor.wgate.weight", "BF16", []int64{256, 4096}},
		{"layers.2.attn.indexer.compressor.ape", "F32", []int64{4, 256}},
		{"layers.2.attn.indexer.compressor.norm.weight", "BF16", []int64{128}},
		{"layers.2.attn.indexer.weights_proj.weight", "BF16", []int64{64, 4096}},
		{"layers.2.attn.indexer.wq_b.weight", "F8_E4M3", []int64{8192, 1024}},
		{"layers.2.attn.compressor.wkv.weight", "BF16", []int64{1024, 4096}},
		{"layers.2.attn.compressor.ape", "F32", []int64{4, 1024}},
		{"layers.3.attn.compressor.ape", "F32", []int64{128, 512}},
		{"layers.3.attn.compressor.wkv.weight", "BF16", []int64{512, 4096}},
		{"layers.10.hc_attn_fn", "F32", []int64{24, 16384}},
		{"layers.10.hc_attn_scale", "F32", []int64{3}},
		{"hc_head_fn", "F32", []int64{4, 16384}},
		{"layers.5.ffn.gate.bias", "F32", []int64{256}},
		{"layers.5.ffn.experts.255.w2.weight", "I8", []int64{4096, 1024}},
		{"layers.5.ffn.experts.255.w2.scale", "F8_E8M0", []int64{4096, 64}},
		{"layers.5.ffn.shared_experts.w2.weight", "F8_E4M3", []int64{4096, 2048}},
		{"mtp.0.e_proj.weight", "F8_E4M3", []int64{4096, 4096}},
		{"mtp.0.ffn.gate.bias", "F32", []int64{256}},
	} {
		got, ok := m[w.name]
		if !ok {
			t.Errorf("%s missing", w.name)
			continue
		}
		if got.DType != w.dt || !slices.Equal(got.Shape, w.shape) {
			t.Errorf("%s: %s %v, want %s %v", w.name, got.DType, got.Shape, w.dt, w.shape)
		}
	}
	for _, absent := range []string{"layers.0.attn.compressor.ape", "layers.3.attn.indexer.wq_b.weight", "layers.3.ffn.gate.tid2eid", "layers.2.ffn.gate.bias", "mtp.0.ffn.gate.tid2eid", "mtp.0.attn.compressor.ape"} {
		if _, ok := m[absent]; ok {
			t.Errorf("%s must not exist", absent)
		}
	}
}

// Published sizes: Flash 284B parameters (without the MTP block) and about 160 GB as
// shipped; Pro 1.6T.
func TestTotalsMatchPublishedSizes(t *testing.T) {
	for _, c := range []struct {
		dir          string
		lo, hi       float64 // parameters without MTP
		bytesLo, bHi float64
	}{
		{"testdata/flash", 283.5e9, 285e9, 155e9, 165e9},
		{"testdata/pro", 1.55e12, 1.65e12, 820e9, 900e9},
	} {
		_, m := tensorMap(t, c.dir, true)
		var params, bytes float64
		for _, x := range m {
			bytes += float64(x.Bytes())
			if x.MTP || strings.HasSuffix(x.Name, ".scale") {
				continue
			}
			n := float64(x.Bytes())
			switch x.DType {
			case "I8":
				n *= 2
			case "BF16":
				n /= 2
			case "F32":
				n /= 4
			case "I64":
				n /= 8
			}
			params += n
		}
		if params < c.lo || params > c.hi || bytes < c.bytesLo || bytes > c.bHi {
			t.Errorf("%s: %.4g parameters (want %.4g..%.4g), %.4g bytes (want %.4g..%.4g)", c.dir, params, c.lo, c.hi, bytes, c.bytesLo, c.bHi)
		}
	}
}

func TestHFNames(t *testing.T) {
	for native, want := range map[string]string{
		"embed.weight":                                 "model.embed_tokens.weight",
		"head.weight":                                  "lm_head.weight",
		"norm.weight":                                  "model.norm.weight",
		"hc_head_fn":                                   "model.hc_head.hc_fn",
		"layers.3.attn_norm.weight":                    "model.layers.3.input_layernorm.weight",
		"layers.3.ffn_norm.weight":                     "model.layers.3.post_attention_layernorm.weight",
		"layers.3.hc_ffn_scale":                        "model.layers.3.ffn_hc.scale",
		"layers.3.attn.attn_sink":                      "model.layers.3.self_attn.sinks",
		"layers.3.attn.wq_a.weight":                    "model.layers.3.self_attn.q_a_proj.weight",
		"layers.3.attn.q_norm.weight":                  "model.layers.3.self_attn.q_a_norm.weight",
		"layers.3.attn.wo_b.scale":                     "model.layers.3.self_attn.o_b_proj.scale",
		"layers.3.attn.compressor.ape":                 "model.layers.3.self_attn.compressor.position_bias",
		"layers.3.attn.compressor.wgate.weight":        "model.layers.3.self_attn.compressor.gate_proj.weight",
		"layers.2.attn.indexer.wq_b.weight":            "model.layers.2.self_attn.compressor.indexer.q_b_proj.weight",
		"layers.2.attn.indexer.compressor.norm.weight": "model.layers.2.self_attn.compressor.indexer.kv_norm.weight",
		"layers.2.attn.indexer.compressor.ape":         "model.layers.2.self_attn.compressor.indexer.position_bias",
		"layers.2.attn.indexer.compressor.wkv.weight":  "model.layers.2.self_attn.compressor.indexer.kv_proj.weight",
		"layers.2.attn.indexer.weights_proj.weight":    "model.layers.2.self_attn.compressor.indexer.weights_proj.weight",
		"layers.4.ffn.gate.bias":                       "model.layers.4.mlp.gate.e_score_correction_bias",
		"layers.0.ffn.gate.tid2eid":                    "model.layers.0.mlp.gate.tid2eid",
		"layers.4.ffn.shared_experts.w3.weight":        "model.layers.4.mlp.shared_experts.up_proj.weight",
		"layers.4.ffn.experts.17.w1.weight":            "model.layers.4.mlp.experts.gate_up_proj",
		"layers.4.ffn.experts.17.w2.weight":            "model.layers.4.mlp.experts.down_proj",
	} {
		if got, ok := HFName(native); !ok || got != want {
			t.Errorf("HFName(%s) = %q, %v; want %q", native, got, ok, want)
		}
	}
	for _, none := range []string{"mtp.0.e_proj.weight", "layers.4.ffn.experts.17.w1.scale", "something.else"} {
		if got, ok := HFName(none); ok {
			t.Errorf("HFName(%s) = %q, want none", none, got)
		}
	}
	// Every native tensor outside MTP and the expert scales has a distinct HF name.
	_, m := tensorMap(t, "testdata/flash", false)
	seen := map[string]string{}
	for n := range m {
		hf, ok := HFName(n)
		if strings.Contains(n, ".experts.") {
			continue
		}
		if !ok {
			t.Errorf("%s has no HF name", n)
			continue
		}
		if prev, dup := seen[hf]; dup {
			t.Errorf("%s and %s both map to %s", prev, n, hf)
		}
		seen[hf] = n
	}
}

// The tiny fixture's index (used by `moemesh plan` tests) lists exactly the tensors of its
// config, and its total_size is their sum.
func TestTinyFixtureIndexMatchesLayout(t *testing.T) {
	c, m := tensorMap(t, "testdata/tiny", true)
	data, err := os.ReadFile("testdata/tiny/model.safetensors.index.json")
	if err != nil {
		t.Fatal(err)
	}
	var idx struct {
		Metadata struct {
			TotalSize int64 `json:"total_size"`
		} `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatal(err)
	}
	var total int64
	for n, x := range m {
		if _, ok := idx.WeightMap[n]; !ok {
			t.Errorf("index lacks %s", n)
		}
		total += x.Bytes()
	}
	if len(idx.WeightMap) != len(m) || idx.Metadata.TotalSize != total {
		t.Errorf("index: %d tensors, total_size %d; layout: %d tensors, %d bytes", len(idx.WeightMap), idx.Metadata.TotalSize, len(m), total)
	}
	if c.Kind(2) != KindCSA || c.Kind(3) != KindHCA || c.Kind(4) != KindWindow || !c.IsHashLayer(0) || c.IsHashLayer(1) {
		t.Errorf("tiny fixture kinds/hash layers changed")
	}
}

// layoutLister serves the Tensors table as checkpoint headers.
type layoutLister map[string]Tensor

func (l layoutLister) Info(name string) (safetensors.TensorInfo, bool) {
	t, ok := l[name]
	if !ok {
		return safetensors.TensorInfo{}, false
	}
	return safetensors.TensorInfo{Name: name, DType: safetensors.DType(t.DType), Shape: t.Shape}, true
}

// The shared loader's naming (model/names.go) finds the routed experts (MXFP4, stored
// [out, in/2]), the shared expert, the gate, the bias and the hash table in the
// published layout.
func TestSharedLoaderResolvesPublishedLayout(t *testing.T) {
	c, m := tensorMap(t, "testdata/flash", false)
	ts := layoutLister(m)
	for _, layer := range []int{0, 2, 42} {
		w, bias, hash, err := c.GateRefs(ts, layer)
		if err != nil {
			t.Fatalf("layer %d gate: %v", layer, err)
		}
		p := fmt.Sprintf("layers.%d.ffn.", layer)
		if w.Name != p+"gate.weight" || (layer < 3) != (hash != nil) || (layer < 3) == (bias != nil) {
			t.Errorf("layer %d: gate %v bias %v hash %v", layer, w, bias, hash)
		}
		if hash != nil && hash.Name != p+"gate.tid2eid" || bias != nil && bias.Name != p+"gate.bias" {
			t.Errorf("layer %d: bias %v hash %v", layer, bias, hash)
		}
		refs, err := c.ExpertRefs(ts, layer, 255)
		if err != nil {
			t.Fatalf("layer %d expert: %v", layer, err)
		}
		if refs.Gate.Name != p+"experts.255.w1.weight" || refs.Up.Name != p+"experts.255.w3.weight" || refs.Down.Name != p+"experts.255.w2.weight" {
			t.Errorf("layer %d: expert refs %+v", layer, refs)
		}
		sh, _, ok, err := c.SharedRefs(ts, layer)
		if err != nil || !ok || sh.Gate.Name != p+"shared_experts.w1.weight" || sh.Down.Name != p+"shared_experts.w2.weight" {
			t.Errorf("layer %d: shared %+v, %v, %v", layer, sh, ok, err)
		}
	}
}
