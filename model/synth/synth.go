package synth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/moemesh/moemesh/model"
)

// Sentinel errors, wrapped with detail.
var (
	// ErrOptions: the Options are invalid (unknown arch, preset or dtype, bad sizes).
	ErrOptions = errors.New("synth: bad options")
	// ErrExists: the output directory holds something that is not a synth checkpoint.
	ErrExists = errors.New("synth: output directory is not empty")
)

// MarkerFile is written into every synth checkpoint (the Options that made it, as JSON).
// Write replaces an existing non-empty directory only if it holds this file, so it never
// overwrites a real downloaded checkpoint or unrelated files.
const MarkerFile = "moemesh-synth.json"

// Presets.
const (
	// Tiny: hidden 64, 2–3 layers, 8–16 experts, vocab 512; MB-sized, for tests.
	Tiny = "tiny"
	// Small: hidden 1024, 8 layers, 16 experts, top-k 4, expert width 704, vocab 4096;
	// a benchmark model (~0.6 GB in bf16).
	Small = "small"
)

// Options select the checkpoint to write. Zero values take the defaults noted.
type Options struct {
	Arch   string // model_type: see Arches
	Preset string // Tiny (default) or Small
	Seed   int64  // weights are a function of Seed and tensor name only
	DType  string // "bf16" (default) or "f32"; "bfloat16", "float32" and "fp32" are accepted
	Shards int    // safetensors files; default 2

	// Optional overrides of the preset (0 keeps the preset's value). Dependent sizes follow
	// (head_dim from Hidden, DeepSeek groups and shared width from Experts and
	// ExpertIntermediate).
	Layers, Experts, TopK, Hidden, ExpertIntermediate int

	// Skew > 0 fits the gate's selection bias so that expert popularity follows Zipf(Skew)
	// over a per-layer permutation of the experts (see ZipfTargets and SkewRanks). It needs
	// a family whose gate has a bias (deepseek_v3); 0 leaves routing about uniform.
	Skew float64 `json:",omitempty"`
}

// Arches lists the supported architectures (model_type values), sorted.
func Arches() []string { return slices.Sorted(maps.Keys(families)) }

// Presets lists the presets.
func Presets() []string { return []string{Tiny, Small} }

// Limits that keep a mistyped override from trying to allocate terabytes or overflowing
// shape arithmetic. Generation holds one shard in memory at a time.
const (
	maxLayers  = 1024
	maxExperts = 1024
	maxDim     = 1 << 16
	maxBytes   = 64 << 30
	maxShards  = 99999 // the file name has five digits
)

// resolved are validated Options with every size filled in.
type resolved struct {
	opts   Options // normalised: defaults applied
	fam    *family
	d      dims
	f32    bool
	shards int
}

func resolve(o Options) (*resolved, error) {
	f, ok := families[o.Arch]
	if !ok {
		return nil, fmt.Errorf("%w: unknown arch %q (supported: %s)", ErrOptions, o.Arch, strings.Join(Arches(), ", "))
	}
	r := &resolved{fam: f, shards: o.Shards}
	switch o.Preset {
	case "", Tiny:
		o.Preset, r.d = Tiny, f.tiny
	case Small:
		r.d = f.small
	default:
		return nil, fmt.Errorf("%w: unknown preset %q (supported: %s)", ErrOptions, o.Preset, strings.Join(Presets(), ", "))
	}
	switch strings.ToLower(o.DType) {
	case "", "bf16", "bfloat16":
		o.DType = "bf16"
	case "f32", "fp32", "float32":
		o.DType, r.f32 = "f32", true
	default:
		return nil, fmt.Errorf("%w: unknown dtype %q (supported: bf16, f32)", ErrOptions, o.DType)
	}
	if o.Shards == 0 {
		o.Shards, r.shards = 2, 2
	}
	if o.Shards < 1 || o.Shards > maxShards {
		return nil, fmt.Errorf("%w: shards %d (want 1..%d)", ErrOptions, o.Shards, maxShards)
	}
	for _, ov := range []struct {
		name string
		v    int
		max  int
		dst  *int
	}{
		{"layers", o.Layers, maxLayers, &r.d.Layers},
		{"experts", o.Experts, maxExperts, &r.d.Experts},
		{"top-k", o.TopK, maxExperts, &r.d.TopK},
		{"hidden", o.Hidden, maxDim, &r.d.Hidden},
		{"expert intermediate size", o.ExpertIntermediate, maxDim, &r.d.ExpertI},
	} {
		if ov.v < 0 || ov.v > ov.max {
			return nil, fmt.Errorf("%w: %s %d (want 0 for the preset, or 1..%d)", ErrOptions, ov.name, ov.v, ov.max)
		}
		if ov.v > 0 {
			*ov.dst = ov.v
		}
	}
	if math.IsNaN(o.Skew) || o.Skew < 0 || o.Skew > maxSkew {
		return nil, fmt.Errorf("%w: skew %g (want 0 for none, or up to %d)", ErrOptions, o.Skew, maxSkew)
	}
	if o.Skew > 0 && !f.gateBias {
		return nil, fmt.Errorf("%w: skew needs a gate with a selection bias; %s has none (use deepseek_v3)", ErrOptions, f.arch)
	}
	d := &r.d
	if d.TopK > d.Experts {
		return nil, fmt.Errorf("%w: top-k %d exceeds %d experts", ErrOptions, d.TopK, d.Experts)
	}
	if !f.mla {
		if d.Hidden%d.Heads != 0 || (d.Hidden/d.Heads)%2 != 0 {
			return nil, fmt.Errorf("%w: hidden %d must split into %d heads of even size (RoPE rotates pairs)", ErrOptions, d.Hidden, d.Heads)
		}
		d.HeadDim = f.headDim(*d)
	}
	if f.derive != nil {
		if err := f.derive(d); err != nil {
			return nil, fmt.Errorf("%s: %w", f.arch, err)
		}
	}
	if o.Skew > 0 {
		// Group-limited routing keeps a group by the sum of its two best experts, so one
		// expert's popularity could not be set apart from its group's: route ungrouped.
		d.NGroup, d.TopKGroup = 1, 1
	}
	r.opts = o
	return r, nil
}

// configJSON renders config.json and generation_config.json. Keys are sorted (as
// transformers writes them), which also makes the bytes deterministic.
func (r *resolved) configJSON() (cfg, gen []byte, err error) {
	m := r.fam.config(r.d)
	if r.f32 {
		m["torch_dtype"] = "float32"
	}
	if cfg, err = marshal(m); err != nil {
		return nil, nil, err
	}
	if gen, err = marshal(generationConfig(r.fam, r.d, m)); err != nil {
		return nil, nil, err
	}
	return cfg, gen, nil
}

// buildPlan lists every tensor of the model in forward order.
func (r *resolved) buildPlan() *plan {
	d, f := r.d, r.fam
	p := &plan{}
	std := float32(1)
	if f.embedStd != nil {
		std = f.embedStd(d)
	}
	// Embedding rows of std 1 give O(1) hidden states (pre-norm layers rescale anyway).
	p.add(tspec{name: "model.embed_tokens.weight", shape: []int64{int64(d.Vocab), int64(d.Hidden)}, std: std})
	for i := 0; i < d.Layers; i++ {
		p.norm(layerPrefix(i)+"input_layernorm.weight", d.Hidden)
		p.norm(layerPrefix(i)+"post_attention_layernorm.weight", d.Hidden)
		f.layer(p, d, i)
	}
	p.norm("model.norm.weight", d.Hidden)
	if !f.tied {
		p.linear("lm_head.weight", d.Vocab, d.Hidden)
	}
	return p
}

// marker is the content of MarkerFile.
type marker struct {
	Generator string  `json:"generator"`
	Version   int     `json:"version"`
	Options   Options `json:"options"`
}

// marshal writes indented JSON with "<" and ">" left as they are (tokenizer files are
// full of them; transformers writes them unescaped too).
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("synth: encode json: %w", err)
	}
	return buf.Bytes(), nil
}

// Write writes a random-weight checkpoint of o.Arch to dir and returns its parsed config.
//
// The checkpoint is built in a temporary directory next to dir and renamed into place, so
// a failure leaves dir as it was. dir may be missing, empty, or a previous synth
// checkpoint (it holds MarkerFile), which is replaced as a whole; anything else fails with
// ErrExists. Concurrent Writes to the same dir are not supported.
func Write(dir string, o Options) (*model.Config, error) {
	if o.Arch == ArchDeepseekV4 {
		return writeDeepseek4(dir, o) // native names and shipped dtypes: deepseek4.go
	}
	r, err := resolve(o)
	if err != nil {
		return nil, err
	}
	cfgJSON, genJSON, err := r.configJSON()
	if err != nil {
		return nil, err
	}
	// Parse with the project's reader before writing anything: a config it cannot read is
	// a bug here, and the caller gets the same *Config a loader would build.
	cfg, err := model.ParseConfig(cfgJSON)
	if err != nil {
		return nil, fmt.Errorf("synth: generated %s config does not parse: %w", r.fam.arch, err)
	}
	p := r.buildPlan()
	if err := applySkew(p, cfg, r.opts, r.f32); err != nil {
		return nil, err
	}
	if total := p.bytes(r.f32); total > maxBytes {
		return nil, fmt.Errorf("%w: checkpoint would be %d bytes (limit %d)", ErrOptions, total, int64(maxBytes))
	}
	shards, err := p.split(r.shards, r.f32)
	if err != nil {
		return nil, err
	}
	mk, err := marshal(marker{Generator: "moemesh/synth", Version: 2, Options: r.opts})
	if err != nil {
		return nil, err
	}
	tokJSON, tokCfgJSON, err := tokSpecs[r.fam.arch].tokenizerFiles(r.d.Vocab)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"config.json":            cfgJSON,
		"generation_config.json": genJSON,
		"tokenizer.json":         tokJSON,
		"tokenizer_config.json":  tokCfgJSON,
		MarkerFile:               mk,
	}
	err = atomicDir(dir, func(tmp string) error {
		for name, b := range files {
			if err := writeFileSync(tmp, name, b); err != nil {
				return err
			}
		}
		return writeShards(tmp, shards, r.opts.Seed, r.f32)
	})
	if err != nil {
		return nil, err
	}
	return cfg, nil
}
