package deepseek

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/moemesh/moemesh/ascend"
	_ "github.com/moemesh/moemesh/ascend/cpu"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/nn"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/model/synth"
)

var arches = []string{"deepseek_v3", "deepseek_v2"}

// fixture is one tiny f32 synth checkpoint, loaded: the dense side on one card, the
// routed experts in process on another (as a router and an expert daemon would be).
type fixture struct {
	ck      *safetensors.Checkpoint
	cfg     *model.Config
	m       *Model
	experts *model.Local
}

// writeSynth writes arch's tiny f32 checkpoint to a fresh temporary directory.
func writeSynth(t testing.TB, arch string) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := synth.Write(dir, synth.Options{Arch: arch, Seed: 11, DType: "f32"}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// editConfig rewrites dir/config.json through edit.
func editConfig(t testing.TB, dir string, edit func(map[string]any)) {
	t.Helper()
	path := filepath.Join(dir, "config.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	edit(c)
	if data, err = json.Marshal(c); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// open opens the config and checkpoint in dir and a CPU card.
func open(t testing.TB, dir string, card int) (*model.Config, *safetensors.Checkpoint, ascend.Card) {
	t.Helper()
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	be, err := ascend.Open("cpu")
	if err != nil {
		t.Fatal(err)
	}
	c, err := be.OpenCard(card, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return cfg, ck, c
}

func loadFixture(t testing.TB, dir string) *fixture {
	t.Helper()
	cfg, ck, c1 := open(t, dir, 0)
	be, err := ascend.Open("cpu")
	if err != nil {
		t.Fatal(err)
	}
	c2, err := be.OpenCard(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c2.Close() })
	m, err := Load(ck, cfg, c1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	ex, err := model.LoadLocal(ck, cfg, c2, cfg.MoELayers())
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{ck: ck, cfg: cfg, m: m, experts: ex}
}

func newFixture(t testing.TB, arch string) *fixture { return loadFixture(t, writeSynth(t, arch)) }

// prompt is a deterministic token sequence of length n within vocab.
func prompt(n, vocab, salt int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32((i*131 + salt*17 + 5) % vocab)
	}
	return out
}

// run feeds chunks into a fresh sequence and returns the logits after each chunk.
func (f *fixture) run(t testing.TB, capacity int, chunks ...[]int32) [][]float32 {
	t.Helper()
	s, err := f.m.NewSequence(capacity)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]float32
	for _, c := range chunks {
		lg := make([]float32, f.cfg.Vocab)
		if err := f.m.Forward(context.Background(), []*Sequence{s}, [][]int32{c}, f.experts, [][]float32{lg}); err != nil {
			t.Fatal(err)
		}
		out = append(out, lg)
	}
	if s.Len() != len(slices.Concat(chunks...)) {
		t.Fatalf("sequence holds %d tokens after %d", s.Len(), len(slices.Concat(chunks...)))
	}
	return out
}

func maxRelErr(got []float32, want []float64) (rel, scale float64) {
	var diff float64
	for i, w := range want {
		scale = math.Max(scale, math.Abs(w))
		diff = math.Max(diff, math.Abs(float64(got[i])-w))
	}
	return diff / scale, scale
}

// TestAgainstReference: a 7-token prompt's last logits, and every prefix of it decoded
// one token at a time, agree with the float64 reference within 1e-4 of max |logit|.
// Variants cover synth's own YaRN (V3 mscale 1, V2 mscale 0.707), no rope_scaling, and
// YaRN with mscale ≠ mscale_all_dim so the cos/sin multiplier is not 1.
func TestAgainstReference(t *testing.T) {
	variants := []struct {
		name string
		edit func(map[string]any)
	}{
		{"synth", nil},
		{"no-rope-scaling", func(c map[string]any) { delete(c, "rope_scaling") }},
		{"yarn-v3-keys", func(c map[string]any) {
			c["rope_scaling"] = map[string]any{"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
				"beta_fast": 32, "beta_slow": 1, "mscale": 1, "mscale_all_dim": 1}
		}},
		{"yarn-mscale-ratio", func(c map[string]any) {
			c["rope_scaling"] = map[string]any{"rope_type": "yarn", "factor": 8, "original_max_position_embeddings": 16,
				"beta_fast": 4, "beta_slow": 1, "mscale": 1, "mscale_all_dim": 0.5}
		}},
	}
	for _, arch := range arches {
		for _, v := range variants {
			t.Run(arch+"/"+v.name, func(t *testing.T) {
				dir := writeSynth(t, arch)
				if v.edit != nil {
					editConfig(t, dir, v.edit)
				}
				f := loadFixture(t, dir)
				ref := newRef(t, f)
				ids := prompt(7, f.cfg.Vocab, 1)
				var chunks [][]int32
				for _, id := range ids {
					chunks = append(chunks, []int32{id})
				}
				steps := f.run(t, 16, chunks...)
				prefill := f.run(t, 16, ids)[0]
				for n := 1; n <= len(ids); n++ {
					want := ref.forward(ids[:n])
					rel, scale := maxRelErr(steps[n-1], want)
					if rel > 1e-4 || scale == 0 {
						t.Errorf("decode step %d: max error %.3g of max |logit| %.3g", n, rel, scale)
					}
					if n == len(ids) {
						rel, _ := maxRelErr(prefill, want)
						t.Logf("7-token prefill: max error %.2g of max |logit| %.3g", rel, scale)
						if rel > 1e-4 {
							t.Errorf("7-token prefill: max error %.3g of max |logit| %.3g", rel, scale)
						}
					}
				}
			})
		}
	}
}

// TestIncrementalDecode: prefill in one chunk, in uneven chunks and one token at a time
// give bit-identical last logits (every kernel is row-independent and attention sums in
// a fixed order).
func TestIncrementalDecode(t *testing.T) {
	for _, arch := range arches {
		t.Run(arch, func(t *testing.T) {
			f := newFixture(t, arch)
			ids := prompt(9, f.cfg.Vocab, 2)
			full := f.run(t, 9, ids)[0]
			chunked := f.run(t, 9, ids[:4], ids[4:5], ids[5:])
			var single [][]int32
			for _, id := range ids {
				single = append(single, []int32{id})
			}
			steps := f.run(t, 9, single...)
			if !slices.Equal(full, chunked[2]) {
				t.Error("chunked prefill differs from one-chunk prefill")
			}
			if !slices.Equal(full, steps[len(ids)-1]) {
				t.Error("token-by-token decode differs from prefill")
			}
			if slices.Equal(steps[0], steps[1]) {
				t.Error("logits do not change between steps")
			}
		})
	}
}

// TestBatchIndependence: three sequences of different lengths (one mid-decode) in one
// Forward get exactly the logits each gets alone.
func TestBatchIndependence(t *testing.T) {
	for _, arch := range arches {
		t.Run(arch, func(t *testing.T) {
			f := newFixture(t, arch)
			V := f.cfg.Vocab
			a, b, c := prompt(5, V, 3), prompt(2, V, 4), prompt(7, V, 5)
			alone := [][]float32{f.run(t, 16, a)[0], f.run(t, 16, b)[0], f.run(t, 16, c[:4], c[4:])[1]}

			seqs := make([]*Sequence, 3)
			for i := range seqs {
				var err error
				if seqs[i], err = f.m.NewSequence(16); err != nil {
					t.Fatal(err)
				}
			}
			// The third sequence is already 4 tokens in, so the batch mixes a cached
			// sequence's continuation with fresh prefills.
			warm := make([]float32, V)
			if err := f.m.Forward(context.Background(), seqs[2:], [][]int32{c[:4]}, f.experts, [][]float32{warm}); err != nil {
				t.Fatal(err)
			}
			lg := [][]float32{make([]float32, V), make([]float32, V), make([]float32, V)}
			if err := f.m.Forward(context.Background(), seqs, [][]int32{a, b, c[4:]}, f.experts, lg); err != nil {
				t.Fatal(err)
			}
			for i := range lg {
				if !slices.Equal(lg[i], alone[i]) {
					t.Errorf("sequence %d: batched logits differ from alone", i)
				}
			}
			if seqs[0].Len() != 5 || seqs[1].Len() != 2 || seqs[2].Len() != 7 {
				t.Errorf("lengths %d %d %d, want 5 2 7", seqs[0].Len(), seqs[1].Len(), seqs[2].Len())
			}
		})
	}
}

// counting wraps an Experts and records every call's layer and row count.
type counting struct {
	inner model.Experts
	mu    sync.Mutex
	calls map[int][]int // layer → rows of each call
}

func (c *counting) Forward(ctx context.Context, layer int, x []float32, hidden int, r model.Routing, out []float32) error {
	c.mu.Lock()
	c.calls[layer] = append(c.calls[layer], len(x)/hidden)
	c.mu.Unlock()
	return c.inner.Forward(ctx, layer, x, hidden, r, out)
}

// TestExpertsSeam: each step calls experts.Forward exactly once per MoE layer with every
// new token of the step, never for the dense prefix layers.
func TestExpertsSeam(t *testing.T) {
	for _, arch := range arches {
		t.Run(arch, func(t *testing.T) {
			f := newFixture(t, arch)
			if f.cfg.FirstDense < 1 || len(f.cfg.MoELayers()) < 1 {
				t.Fatalf("synth %s has first_k_dense_replace %d and MoE layers %v; the test needs both kinds", arch, f.cfg.FirstDense, f.cfg.MoELayers())
			}
			V := f.cfg.Vocab
			seqs := []*Sequence{}
			for range 3 {
				s, err := f.m.NewSequence(8)
				if err != nil {
					t.Fatal(err)
				}
				seqs = append(seqs, s)
			}
			lg := [][]float32{make([]float32, V), make([]float32, V), make([]float32, V)}
			for step, toks := range [][][]int32{
				{prompt(3, V, 1), prompt(5, V, 2), prompt(1, V, 3)}, // prefill: 9 rows
				{{1}, {2}, {3}}, // decode: 3 rows
			} {
				c := &counting{inner: f.experts, calls: map[int][]int{}}
				if err := f.m.Forward(context.Background(), seqs, toks, c, lg); err != nil {
					t.Fatal(err)
				}
				rows := len(slices.Concat(toks...))
				for li := range f.cfg.Layers {
					got := c.calls[li]
					if f.cfg.IsMoELayer(li) {
						if !slices.Equal(got, []int{rows}) {
							t.Errorf("step %d MoE layer %d: calls with rows %v, want one call with %d", step, li, got, rows)
						}
					} else if len(got) != 0 {
						t.Errorf("step %d dense layer %d: %d expert calls", step, li, len(got))
					}
				}
			}
		})
	}
}

// failing is an Experts that always fails.
type failing struct{}

func (failing) Forward(context.Context, int, []float32, int, model.Routing, []float32) error {
	return errors.New("expert daemon gone")
}

// TestBadInputs: invalid arguments are errors (never panics) and change nothing; a failed
// step breaks its sequences until Reset.
func TestBadInputs(t *testing.T) {
	f := newFixture(t, "deepseek_v3")
	V := f.cfg.Vocab
	ctx := context.Background()
	s, err := f.m.NewSequence(4)
	if err != nil {
		t.Fatal(err)
	}
	other, err := f.m.NewSequence(4)
	if err != nil {
		t.Fatal(err)
	}
	lg := make([]float32, V)
	one := [][]float32{lg}
	cases := []struct {
		name    string
		seqs    []*Sequence
		tokens  [][]int32
		experts model.Experts
		logits  [][]float32
		want    error
	}{
		{"token = vocab", []*Sequence{s}, [][]int32{{1, int32(V)}}, f.experts, one, nn.ErrInvalid},
		{"negative token", []*Sequence{s}, [][]int32{{-1}}, f.experts, one, nn.ErrInvalid},
		{"cache full", []*Sequence{s}, [][]int32{prompt(5, V, 1)}, f.experts, one, nn.ErrCacheFull},
		{"more token lists than sequences", []*Sequence{s}, [][]int32{{1}, {2}}, f.experts, one, nn.ErrShape},
		{"fewer logit rows", []*Sequence{s, other}, [][]int32{{1}, {2}}, f.experts, one, nn.ErrShape},
		{"short logits", []*Sequence{s}, [][]int32{{1}}, f.experts, [][]float32{make([]float32, V-1)}, nn.ErrShape},
		{"no tokens", []*Sequence{s}, [][]int32{{}}, f.experts, one, nn.ErrInvalid},
		{"same sequence twice", []*Sequence{s, s}, [][]int32{{1}, {2}}, f.experts, [][]float32{lg, make([]float32, V)}, nn.ErrInvalid},
		{"nil sequence", []*Sequence{nil}, [][]int32{{1}}, f.experts, one, nn.ErrInvalid},
		{"no sequences", nil, nil, f.experts, nil, nn.ErrInvalid},
		{"nil experts", []*Sequence{s}, [][]int32{{1}}, nil, one, nn.ErrInvalid},
	}
	for _, c := range cases {
		err := f.m.Forward(ctx, c.seqs, c.tokens, c.experts, c.logits)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: error %v, want %v", c.name, err, c.want)
		}
	}
	if s.Len() != 0 || other.Len() != 0 {
		t.Fatalf("rejected steps changed lengths to %d, %d", s.Len(), other.Len())
	}
	// Fill the cache exactly, then one more token is ErrCacheFull.
	if err := f.m.Forward(ctx, []*Sequence{s}, [][]int32{prompt(4, V, 1)}, f.experts, one); err != nil {
		t.Fatal(err)
	}
	if err := f.m.Forward(ctx, []*Sequence{s}, [][]int32{{1}}, f.experts, one); !errors.Is(err, nn.ErrCacheFull) {
		t.Errorf("append to a full sequence: %v, want ErrCacheFull", err)
	}
	if _, err := f.m.NewSequence(0); err == nil {
		t.Error("NewSequence(0) succeeded")
	}

	// A failing experts seam fails the step and breaks the sequence until Reset.
	if err := f.m.Forward(ctx, []*Sequence{other}, [][]int32{{1}}, failing{}, one); err == nil {
		t.Fatal("step with failing experts succeeded")
	}
	if err := f.m.Forward(ctx, []*Sequence{other}, [][]int32{{1}}, f.experts, one); err == nil {
		t.Error("broken sequence stepped again")
	}
	other.Reset()
	if err := f.m.Forward(ctx, []*Sequence{other}, [][]int32{prompt(4, V, 1)}, f.experts, one); err != nil {
		t.Errorf("after Reset: %v", err)
	}

	// Cancelled context.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	other.Reset()
	if err := f.m.Forward(cctx, []*Sequence{other}, [][]int32{{1}}, f.experts, one); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}

	if err := f.m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.m.Forward(ctx, []*Sequence{other}, [][]int32{{1}}, f.experts, one); !errors.Is(err, ascend.ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

// TestBadCheckpoints: configs that disagree with the tensors, or ask for what is not
// supported, fail Load with the right sentinel and the tensor's name, and leave nothing
// on the card.
func TestBadCheckpoints(t *testing.T) {
	cases := []struct {
		name    string
		arch    string
		edit    func(map[string]any)
		want    error
		mention string
	}{
		{"q_lora_rank null on a q_a/q_b checkpoint", "deepseek_v3", func(c map[string]any) { c["q_lora_rank"] = nil },
			model.ErrMissing, "q_proj.weight"},
		{"q_lora_rank set on a q_proj checkpoint", "deepseek_v2", func(c map[string]any) { c["q_lora_rank"] = 16 },
			model.ErrMissing, "q_a_proj.weight"},
		{"kv_lora_rank wrong", "deepseek_v3", func(c map[string]any) { c["kv_lora_rank"] = 24 },
			model.ErrShape, "kv_a_proj_with_mqa.weight"},
		{"v_head_dim wrong", "deepseek_v2", func(c map[string]any) { c["v_head_dim"] = 8 },
			model.ErrShape, "kv_b_proj.weight"},
		{"rope_scaling dynamic", "deepseek_v3", func(c map[string]any) {
			c["rope_scaling"] = map[string]any{"type": "dynamic", "factor": 2}
		}, model.ErrUnsupported, "dynamic"},
		{"yarn without original_max_position_embeddings", "deepseek_v3", func(c map[string]any) {
			c["rope_scaling"] = map[string]any{"type": "yarn", "factor": 4}
		}, model.ErrConfig, "original_max_position_embeddings"},
		{"odd rope dim", "deepseek_v3", func(c map[string]any) { c["qk_rope_head_dim"] = 7 },
			model.ErrConfig, "qk_rope_head_dim"},
		{"fewer kv heads", "deepseek_v3", func(c map[string]any) { c["num_key_value_heads"] = 2 },
			model.ErrUnsupported, "num_key_value_heads"},
		{"more dense layers than dense weights", "deepseek_v3", func(c map[string]any) { c["first_k_dense_replace"] = 2 },
			model.ErrMissing, "model.layers.1.mlp.gate_proj.weight"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := writeSynth(t, c.arch)
			editConfig(t, dir, c.edit)
			cfg, ck, card := open(t, dir, 0)
			before := card.MemInfo().Used
			m, err := Load(ck, cfg, card)
			if used := card.MemInfo().Used; err != nil && used != before {
				t.Errorf("failed Load left %d bytes on the card", used-before)
			}
			if err == nil {
				m.Close()
				t.Fatal("Load succeeded")
			}
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.mention) {
				t.Errorf("error %q, want %v naming %q", err, c.want, c.mention)
			}
		})
	}
	t.Run("wrong arch", func(t *testing.T) {
		cfg, ck, card := open(t, writeSynth(t, "mixtral"), 0)
		if _, err := Load(ck, cfg, card); !errors.Is(err, model.ErrUnsupported) {
			t.Errorf("mixtral: %v, want ErrUnsupported", err)
		}
	})
}
