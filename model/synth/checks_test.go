package synth

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/safetensors"
)

// Checks shared by the tests: a written checkpoint against config.json, the resolved
// sizes, the project's readers and an independent parse of the safetensors framing.

// checkCheckpoint verifies a checkpoint written with o against its config.json, the
// resolved sizes, and the project's loaders.
func checkCheckpoint(t *testing.T, dir string, cfg *model.Config, o Options) {
	t.Helper()
	arch, f32 := o.Arch, o.DType == "f32"
	raw := readJSON(t, filepath.Join(dir, "config.json"))
	if raw["model_type"] != arch {
		t.Fatalf("model_type %v, want %s", raw["model_type"], arch)
	}
	cfgBytes := readFile(t, filepath.Join(dir, "config.json"))
	again, err := model.ParseConfig(cfgBytes)
	if err != nil {
		t.Fatalf("ParseConfig(config.json): %v", err)
	}
	if !reflect.DeepEqual(cfg, again) {
		t.Errorf("Write returned %+v, config.json parses to %+v", cfg, again)
	}
	checkConfigNumbers(t, cfg, o)

	// Every tensor is in the index, in the shard the index names, with a valid framing.
	index := readJSON(t, filepath.Join(dir, "model.safetensors.index.json"))
	wm, _ := index["weight_map"].(map[string]any)
	onDisk := map[string]shardEntry{}
	shardFiles, _ := filepath.Glob(filepath.Join(dir, "model-*-of-*.safetensors"))
	if want := max(o.Shards, 2); len(shardFiles) != want {
		t.Fatalf("%d shards, want %d", len(shardFiles), want)
	}
	var total int64
	for _, f := range shardFiles {
		for name, e := range parseShard(t, f) {
			if got := wm[name]; got != filepath.Base(f) {
				t.Errorf("%s is in %s, index says %v", name, filepath.Base(f), got)
			}
			onDisk[name] = e
			total += e.size
		}
	}
	if len(wm) != len(onDisk) {
		t.Errorf("index lists %d tensors, shards hold %d", len(wm), len(onDisk))
	}
	if ts, _ := index["metadata"].(map[string]any)["total_size"].(float64); int64(ts) != total {
		t.Errorf("index total_size %v, tensors hold %d bytes", ts, total)
	}

	ck, err := safetensors.Open(dir)
	if err != nil {
		t.Fatalf("safetensors.Open: %v", err)
	}
	defer ck.Close()
	names := checkpointNames(ck)
	if len(names) != len(onDisk) {
		t.Errorf("reader lists %d tensors, shards hold %d", len(names), len(onDisk))
	}

	// Shapes follow from config.json alone.
	want := expectedShapes(t, cfg, raw)
	for name, shape := range want {
		e, ok := onDisk[name]
		if !ok {
			t.Errorf("missing tensor %s", name)
			continue
		}
		if !slices.Equal(e.shape, shape) {
			t.Errorf("%s shape %v, want %v", name, e.shape, shape)
		}
		wantDT := "BF16"
		if f32 || strings.HasSuffix(name, "e_score_correction_bias") {
			wantDT = "F32"
		}
		if e.dtype != wantDT {
			t.Errorf("%s dtype %s, want %s", name, e.dtype, wantDT)
		}
		dt, shp, data := readTensor(t, ck, name)
		if string(dt) != e.dtype || !slices.Equal(shp, e.shape) || int64(len(data)) != e.size {
			t.Errorf("reader gives %s %v %d bytes for %s, shard header %s %v %d", dt, shp, len(data), name, e.dtype, e.shape, e.size)
		}
	}
	for name := range onDisk {
		if _, ok := want[name]; !ok {
			t.Errorf("unexpected tensor %s", name)
		}
	}
	checkLoaders(t, ck, cfg)
	if _, err := os.Stat(filepath.Join(dir, "generation_config.json")); err != nil {
		t.Error(err)
	}
	// Nothing left beside the checkpoint (temporary or old directories).
	if entries, _ := os.ReadDir(filepath.Dir(dir)); len(entries) != 1 {
		t.Errorf("parent holds %d entries, want only the checkpoint", len(entries))
	}
}

// expectedShapes lists every tensor of the model with its shape, derived from config.json
// (raw) and the tensor names model.Config gives for experts, gates and shared experts.
func expectedShapes(t *testing.T, cfg *model.Config, raw map[string]any) map[string][]int64 {
	t.Helper()
	num := func(k string) int64 {
		v, ok := raw[k].(float64)
		if !ok {
			t.Fatalf("config.json %s = %v, want a number", k, raw[k])
		}
		return int64(v)
	}
	arch := raw["model_type"].(string)
	h, v, layers := num("hidden_size"), num("vocab_size"), int(num("num_hidden_layers"))
	heads, kv := num("num_attention_heads"), num("num_key_value_heads")
	hd := h / heads
	if _, ok := raw["head_dim"]; ok {
		hd = num("head_dim")
	}
	var experts, inter int64
	switch arch {
	case "mixtral", "granitemoe":
		experts, inter = num("num_local_experts"), num("intermediate_size")
	case "olmoe":
		experts, inter = num("num_experts"), num("intermediate_size")
	case "deepseek_v2", "deepseek_v3":
		experts, inter = num("n_routed_experts"), num("moe_intermediate_size")
	default:
		experts, inter = num("num_experts"), num("moe_intermediate_size")
	}
	s := map[string][]int64{
		"model.embed_tokens.weight": {v, h},
		"model.norm.weight":         {h},
	}
	if raw["tie_word_embeddings"] != true {
		s["lm_head.weight"] = []int64{v, h}
	}
	for i := 0; i < layers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		s[p+"input_layernorm.weight"] = []int64{h}
		s[p+"post_attention_layernorm.weight"] = []int64{h}
		a := p + "self_attn."
		if strings.HasPrefix(arch, "deepseek") {
			nope, rope, vd, kvl := num("qk_nope_head_dim"), num("qk_rope_head_dim"), num("v_head_dim"), num("kv_lora_rank")
			if raw["q_lora_rank"] == nil {
				s[a+"q_proj.weight"] = []int64{heads * (nope + rope), h}
			} else {
				ql := num("q_lora_rank")
				s[a+"q_a_proj.weight"] = []int64{ql, h}
				s[a+"q_a_layernorm.weight"] = []int64{ql}
				s[a+"q_b_proj.weight"] = []int64{heads * (nope + rope), ql}
			}
			s[a+"kv_a_proj_with_mqa.weight"] = []int64{kvl + rope, h}
			s[a+"kv_a_layernorm.weight"] = []int64{kvl}
			s[a+"kv_b_proj.weight"] = []int64{heads * (nope + vd), kvl}
			s[a+"o_proj.weight"] = []int64{h, heads * vd}
		} else {
			s[a+"q_proj.weight"] = []int64{heads * hd, h}
			s[a+"k_proj.weight"] = []int64{kv * hd, h}
			s[a+"v_proj.weight"] = []int64{kv * hd, h}
			s[a+"o_proj.weight"] = []int64{h, heads * hd}
		}
		switch arch {
		case "qwen2_moe":
			s[a+"q_proj.bias"] = []int64{heads * hd}
			s[a+"k_proj.bias"] = []int64{kv * hd}
			s[a+"v_proj.bias"] = []int64{kv * hd}
		case "qwen3_moe":
			s[a+"q_norm.weight"] = []int64{hd}
			s[a+"k_norm.weight"] = []int64{hd}
		case "olmoe":
			s[a+"q_norm.weight"] = []int64{heads * hd}
			s[a+"k_norm.weight"] = []int64{kv * hd}
		}
		if !cfg.IsMoELayer(i) {
			if !strings.HasPrefix(arch, "deepseek") || i >= int(num("first_k_dense_replace")) {
				t.Errorf("layer %d is not a MoE layer", i)
			}
			di := num("intermediate_size")
			s[p+"mlp.gate_proj.weight"] = []int64{di, h}
			s[p+"mlp.up_proj.weight"] = []int64{di, h}
			s[p+"mlp.down_proj.weight"] = []int64{h, di}
			continue
		}
		s[cfg.GateTensorName(i)] = []int64{experts, h}
		if arch == "granitemoe" {
			// Fused on disk: one [E, 2I, H] and one [E, H, I] tensor per layer.
			gate, up, down := cfg.ExpertTensorNames(i, 0)
			if gate != up {
				t.Errorf("granite expert gate %q and up %q should name the fused input_linear", gate, up)
			}
			s[gate] = []int64{experts, 2 * inter, h}
			s[down] = []int64{experts, h, inter}
		} else {
			seen := map[string]bool{}
			for e := 0; e < int(experts); e++ {
				gate, up, down := cfg.ExpertTensorNames(i, e)
				for _, n := range []string{gate, up, down} {
					if seen[n] {
						t.Errorf("layer %d expert %d: tensor name %s repeats", i, e, n)
					}
					seen[n] = true
				}
				s[gate] = []int64{inter, h}
				s[up] = []int64{inter, h}
				s[down] = []int64{h, inter}
			}
		}
		sg, su, sd := cfg.SharedTensorNames(i)
		bias, _, sgate := cfg.RouterTensorNames(i)
		if (bias != "") != (arch == "deepseek_v3") || (sgate != "") != (arch == "qwen2_moe") {
			t.Errorf("%s layer %d: router tensors bias %q shared gate %q", arch, i, bias, sgate)
		}
		switch arch {
		case "qwen2_moe":
			si := num("shared_expert_intermediate_size")
			s[sg], s[su], s[sd] = []int64{si, h}, []int64{si, h}, []int64{h, si}
			s[sgate] = []int64{1, h}
		case "deepseek_v2", "deepseek_v3":
			si := inter * num("n_shared_experts")
			s[sg], s[su], s[sd] = []int64{si, h}, []int64{si, h}, []int64{h, si}
			if arch == "deepseek_v3" {
				s[bias] = []int64{experts}
			}
		default:
			if sg != "" || su != "" || sd != "" {
				t.Errorf("%s layer %d: shared expert names %q %q %q, want none", arch, i, sg, su, sd)
			}
		}
	}
	return s
}

type shardEntry struct {
	dtype string
	shape []int64
	size  int64
}

// parseShard reads a safetensors header independently of package safetensors and checks
// the framing rules of models.md §5.1: header length, data offsets tiling the buffer in
// order, the file ending at the last tensor, and byte sizes matching dtype × shape.
func parseShard(t *testing.T, path string) map[string]shardEntry {
	t.Helper()
	b := readFile(t, path)
	if len(b) < 8 {
		t.Fatalf("%s: %d bytes", path, len(b))
	}
	n := binary.LittleEndian.Uint64(b)
	if n > uint64(len(b)-8) {
		t.Fatalf("%s: header length %d exceeds file", path, n)
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &hdr); err != nil {
		t.Fatalf("%s: header: %v", path, err)
	}
	var spans [][2]int64
	out := map[string]shardEntry{}
	for name, msg := range hdr {
		if name == "__metadata__" {
			continue
		}
		var e struct {
			DType   string   `json:"dtype"`
			Shape   []int64  `json:"shape"`
			Offsets [2]int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(msg, &e); err != nil {
			t.Fatalf("%s: %s: %v", path, name, err)
		}
		elems := int64(1)
		for _, d := range e.Shape {
			elems *= d
		}
		size := map[string]int64{"BF16": 2, "F32": 4}[e.DType] * elems
		if size == 0 || e.Offsets[1]-e.Offsets[0] != size {
			t.Errorf("%s: %s %s %v spans %v", path, name, e.DType, e.Shape, e.Offsets)
		}
		spans = append(spans, e.Offsets)
		out[name] = shardEntry{e.DType, e.Shape, size}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i][0] < spans[j][0] })
	var end int64
	for _, s := range spans {
		if s[0] != end {
			t.Errorf("%s: gap or overlap at %d", path, s[0])
		}
		end = s[1]
	}
	if 8+int64(n)+end != int64(len(b)) {
		t.Errorf("%s: data ends at %d, file has %d bytes", path, 8+int64(n)+end, len(b))
	}
	return out
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(readFile(t, path), &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// dirFiles maps file name to content for every file in dir.
func dirFiles(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]byte{}
	for _, e := range entries {
		m[e.Name()] = readFile(t, filepath.Join(dir, e.Name()))
	}
	return m
}

// checkConfigNumbers compares the parsed config with the sizes synth resolved from o.
func checkConfigNumbers(t *testing.T, cfg *model.Config, o Options) {
	t.Helper()
	r, err := resolve(o)
	if err != nil {
		t.Fatal(err)
	}
	d := r.d
	shared := d.SharedI + d.NShared*d.ExpertI
	got := []int{cfg.Layers, cfg.Hidden, cfg.Vocab, cfg.Heads, cfg.KVHeads, cfg.Experts, cfg.TopK,
		cfg.ExpertIntermediate, cfg.SharedIntermediate, cfg.FirstDense, cfg.Groups, cfg.TopKGroups}
	want := []int{d.Layers, d.Hidden, d.Vocab, d.Heads, d.KVHeads, d.Experts, d.TopK,
		d.ExpertI, shared, d.FirstDense, d.NGroup, d.TopKGroup}
	if r.fam.mla {
		got = append(got, cfg.QLoraRank, cfg.KVLoraRank, cfg.QKNopeHeadDim, cfg.QKRopeHeadDim, cfg.VHeadDim)
		want = append(want, d.QLora, d.KVLora, d.QKNope, d.QKRope, d.VHead)
	} else {
		got, want = append(got, cfg.HeadDim), append(want, d.HeadDim)
	}
	if !slices.Equal(got, want) {
		t.Errorf("config sizes %v, synth resolved %v", got, want)
	}
	for i := 0; i < d.Layers; i++ {
		if cfg.IsMoELayer(i) != r.fam.moe(d, i) {
			t.Errorf("layer %d: IsMoELayer %v, synth wrote MoE=%v", i, cfg.IsMoELayer(i), r.fam.moe(d, i))
		}
	}
	if cfg.TieEmbeddings != r.fam.tied {
		t.Errorf("tie_word_embeddings %v", cfg.TieEmbeddings)
	}
	if err := cfg.GateSpec().Validate(); err != nil {
		t.Errorf("gate spec: %v", err)
	}
}

// checkLoaders runs the project's tensor locators and expert reader on every MoE layer.
func checkLoaders(t *testing.T, ck *safetensors.Checkpoint, cfg *model.Config) {
	t.Helper()
	for _, l := range cfg.MoELayers() {
		if _, bias, _, err := cfg.GateRefs(ck, l); err != nil || (bias != nil) != (cfg.TopKMethod == "noaux_tc") {
			t.Errorf("layer %d GateRefs: bias %v, %v", l, bias, err)
		}
		if _, _, ok, err := cfg.SharedRefs(ck, l); err != nil || ok != cfg.HasSharedExpert() {
			t.Errorf("layer %d SharedRefs: ok %v, %v", l, ok, err)
		}
		for e := 0; e < cfg.Experts; e++ {
			if _, err := cfg.ExpertRefs(ck, l, e); err != nil {
				t.Errorf("layer %d expert %d: %v", l, e, err)
			}
		}
		w, err := model.ReadExpert(ck, cfg, model.ExpertKey{Layer: l, Expert: cfg.Experts - 1})
		if err != nil {
			t.Errorf("layer %d ReadExpert: %v", l, err)
			continue
		}
		n := cfg.ExpertIntermediate * cfg.Hidden * w.DType.Size()
		if len(w.Gate) != n || len(w.Up) != n || len(w.Down) != n {
			t.Errorf("layer %d ReadExpert: %d/%d/%d bytes, want %d each", l, len(w.Gate), len(w.Up), len(w.Down), n)
		}
	}
}

func checkpointNames(ck *safetensors.Checkpoint) []string { return ck.Names() }

// readTensor reads one tensor through the project's reader.
func readTensor(t *testing.T, ck *safetensors.Checkpoint, name string) (safetensors.DType, []int64, []byte) {
	t.Helper()
	info, ok := ck.Info(name)
	if !ok {
		t.Fatalf("reader has no %s", name)
	}
	b, err := ck.Raw(name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return info.DType, info.Shape, b
}
