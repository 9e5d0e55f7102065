package gqa

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"testing"

	"github.com/moemesh/moemesh/ascend"
	_ "github.com/moemesh/moemesh/ascend/cpu"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/nn"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/model/synth"
)

// fixture is one family's tiny f32 synth checkpoint, loaded: the dense side on one card,
// the routed experts in process on another (as a router and an expert daemon would be).
type fixture struct {
	ck      *safetensors.Checkpoint
	cfg     *model.Config
	m       *Model
	experts *model.Local
}

func newFixture(t testing.TB, arch string) *fixture {
	t.Helper()
	return loadFixture(t, writeSynth(t, arch))
}

// writeSynth writes arch's tiny f32 checkpoint to a fresh temporary directory.
func writeSynth(t testing.TB, arch string) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := synth.Write(dir, synth.Options{Arch: arch, Seed: 7, DType: "f32"}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// loadFixture loads the checkpoint in dir.
func loadFixture(t testing.TB, dir string) *fixture {
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
	c1, err := be.OpenCard(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := be.OpenCard(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c1.Close(); c2.Close() })
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
	return out
}

func maxRelErr(got []float32, want []float64) (float64, float64) {
	var scale, diff float64
	for i, w := range want {
		scale = math.Max(scale, math.Abs(w))
		diff = math.Max(diff, math.Abs(float64(got[i])-w))
	}
	return diff / scale, scale
}

// TestAgainstReference: a 7-token prefill's last logits, and each step of a one-token-at-
// a-time decode of the same prompt, agree with the float64 reference within 1e-4 of the
// largest |logit|.
func TestAgainstReference(t *testing.T) {
	for _, arch := range Arches {
		t.Run(arch, func(t *testing.T) {
			f := newFixture(t, arch)
			ids := prompt(7, f.cfg.Vocab, 1)
			ref := (&refModel{t: t, ck: f.ck, cfg: f.cfg, tc: map[string][]float64{}}).forward(ids)
			got := f.run(t, 16, ids)[0]
			rel, scale := maxRelErr(got, ref[6])
			t.Logf("prefill: max |logit| %.4g, max error %.3g relative", scale, rel)
			if rel > 1e-4 || scale == 0 {
				t.Fatalf("prefill logits differ from reference: %.3g relative (max |logit| %g)", rel, scale)
			}
			chunks := make([][]int32, len(ids))
			for i := range ids {
				chunks[i] = ids[i : i+1]
			}
			for pos, lg := range f.run(t, 16, chunks...) {
				if rel, _ := maxRelErr(lg, ref[pos]); rel > 1e-4 {
					t.Fatalf("decode position %d differs from reference: %.3g relative", pos, rel)
				}
			}
		})
	}
}

// TestIncrementalDecode: prefill n then three single-token decodes give bit-identical
// last logits to one prefill of n+3 (every kernel is row-independent).
func TestIncrementalDecode(t *testing.T) {
	for _, arch := range Arches {
		t.Run(arch, func(t *testing.T) {
			f := newFixture(t, arch)
			ids := prompt(9, f.cfg.Vocab, 2)
			whole := f.run(t, 9, ids)[0]
			steps := f.run(t, 9, ids[:6], ids[6:7], ids[7:8], ids[8:9])
			if !slices.Equal(whole, steps[3]) {
				t.Fatalf("decode after prefill differs from full prefill: first logits %v vs %v", whole[:4], steps[3][:4])
			}
			// A different chunking of the prefill must agree too.
			chunked := f.run(t, 9, ids[:2], ids[2:7], ids[7:])
			if !slices.Equal(whole, chunked[2]) {
				t.Fatal("chunked prefill differs from full prefill")
			}
		})
	}
}

// TestBatchIndependence: three sequences of different lengths (one decoding, two
// prefilling) in one Forward get exactly the logits each gets alone.
func TestBatchIndependence(t *testing.T) {
	for _, arch := range Arches {
		t.Run(arch, func(t *testing.T) {
			f := newFixture(t, arch)
			a, b, c := prompt(5, f.cfg.Vocab, 3), prompt(2, f.cfg.Vocab, 4), prompt(8, f.cfg.Vocab, 5)
			// Alone: a is prefilled with 4 tokens then decodes its 5th; b and c prefill.
			wantA := f.run(t, 16, a[:4], a[4:])[1]
			wantB := f.run(t, 16, b)[0]
			wantC := f.run(t, 16, c)[0]
			sa, _ := f.m.NewSequence(16)
			sb, _ := f.m.NewSequence(16)
			sc, _ := f.m.NewSequence(16)
			lg := [][]float32{make([]float32, f.cfg.Vocab)}
			if err := f.m.Forward(context.Background(), []*Sequence{sa}, [][]int32{a[:4]}, f.experts, lg); err != nil {
				t.Fatal(err)
			}
			out := [][]float32{make([]float32, f.cfg.Vocab), make([]float32, f.cfg.Vocab), make([]float32, f.cfg.Vocab)}
			if err := f.m.Forward(context.Background(), []*Sequence{sb, sa, sc}, [][]int32{b, a[4:], c}, f.experts, out); err != nil {
				t.Fatal(err)
			}
			for i, want := range [][]float32{wantB, wantA, wantC} {
				if !slices.Equal(out[i], want) {
					t.Errorf("sequence %d: batched logits differ from alone", i)
				}
			}
			if sa.Len() != 5 || sb.Len() != 2 || sc.Len() != 8 {
				t.Errorf("lengths %d %d %d, want 5 2 8", sa.Len(), sb.Len(), sc.Len())
			}
		})
	}
}

// counting records every Forward call reaching the experts.
type counting struct {
	inner model.Experts
	mu    sync.Mutex
	calls [][2]int // layer, rows
}

func (c *counting) Forward(ctx context.Context, layer int, x []float32, hidden int, r model.Routing, out []float32) error {
	c.mu.Lock()
	c.calls = append(c.calls, [2]int{layer, len(x) / hidden})
	c.mu.Unlock()
	return c.inner.Forward(ctx, layer, x, hidden, r, out)
}

// TestExpertsSeam: each step reaches the experts once per MoE layer, in layer order, with
// all rows of the step; and the results equal those of the bare Local.
func TestExpertsSeam(t *testing.T) {
	for _, arch := range Arches {
		t.Run(arch, func(t *testing.T) {
			f := newFixture(t, arch)
			cnt := &counting{inner: f.experts}
			s1, _ := f.m.NewSequence(16)
			s2, _ := f.m.NewSequence(16)
			out := [][]float32{make([]float32, f.cfg.Vocab), make([]float32, f.cfg.Vocab)}
			steps := [][][]int32{{prompt(3, f.cfg.Vocab, 6), prompt(4, f.cfg.Vocab, 7)}, {{1}, {2}}}
			for _, toks := range steps {
				cnt.calls = nil
				if err := f.m.Forward(context.Background(), []*Sequence{s1, s2}, toks, cnt, out); err != nil {
					t.Fatal(err)
				}
				rows := len(toks[0]) + len(toks[1])
				var want [][2]int
				for _, l := range f.cfg.MoELayers() {
					want = append(want, [2]int{l, rows})
				}
				if !slices.Equal(cnt.calls, want) {
					t.Fatalf("expert calls %v, want %v", cnt.calls, want)
				}
			}
			if want := f.run(t, 16, steps[0][1], steps[1][1]); !slices.Equal(out[1], want[1]) {
				t.Fatal("logits through the counting seam differ from the bare experts")
			}
		})
	}
}

// failing is an Experts that always fails.
type failing struct{}

func (failing) Forward(context.Context, int, []float32, int, model.Routing, []float32) error {
	return errors.New("expert daemon down")
}

// TestBadInputs: invalid arguments are errors (no panic) and leave sequences usable; a
// failed step leaves its sequences refusing further steps until Reset.
func TestBadInputs(t *testing.T) {
	f := newFixture(t, "qwen3_moe")
	V := f.cfg.Vocab
	ctx := context.Background()
	s, err := f.m.NewSequence(4)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := f.m.NewSequence(4)
	lg := func(n int) [][]float32 {
		out := make([][]float32, n)
		for i := range out {
			out[i] = make([]float32, V)
		}
		return out
	}
	for _, c := range []struct {
		name   string
		seqs   []*Sequence
		tokens [][]int32
		logits [][]float32
		want   error
	}{
		{"token id = vocab", []*Sequence{s}, [][]int32{{1, int32(V)}}, lg(1), nn.ErrInvalid},
		{"negative token id", []*Sequence{s}, [][]int32{{-1}}, lg(1), nn.ErrInvalid},
		{"past capacity", []*Sequence{s}, [][]int32{{1, 2, 3, 4, 5}}, lg(1), nn.ErrCacheFull},
		{"fewer token lists", []*Sequence{s, other}, [][]int32{{1}}, lg(2), nn.ErrShape},
		{"fewer logit rows", []*Sequence{s, other}, [][]int32{{1}, {2}}, lg(1), nn.ErrShape},
		{"short logits", []*Sequence{s}, [][]int32{{1}}, [][]float32{make([]float32, V-1)}, nn.ErrShape},
		{"no tokens", []*Sequence{s}, [][]int32{{}}, lg(1), nn.ErrInvalid},
		{"nil sequence", []*Sequence{nil}, [][]int32{{1}}, lg(1), nn.ErrInvalid},
		{"same sequence twice", []*Sequence{s, s}, [][]int32{{1}, {2}}, lg(2), nn.ErrInvalid},
	} {
		err := f.m.Forward(ctx, c.seqs, c.tokens, f.experts, c.logits)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: error %v, want %v", c.name, err, c.want)
		}
	}
	if s.Len() != 0 {
		t.Fatalf("rejected steps changed the sequence: len %d", s.Len())
	}
	// The sequence is still usable up to its capacity, and not past it.
	if err := f.m.Forward(ctx, []*Sequence{s}, [][]int32{{1, 2, 3}}, f.experts, lg(1)); err != nil {
		t.Fatal(err)
	}
	if err := f.m.Forward(ctx, []*Sequence{s}, [][]int32{{4, 5}}, f.experts, lg(1)); !errors.Is(err, nn.ErrCacheFull) {
		t.Fatalf("past capacity after prefill: %v", err)
	}
	if err := f.m.Forward(ctx, []*Sequence{s}, [][]int32{{4}}, f.experts, lg(1)); err != nil || s.Len() != 4 {
		t.Fatalf("last slot: %v, len %d", err, s.Len())
	}
	// A failing expert seam fails the step and breaks the sequence until Reset.
	if err := f.m.Forward(ctx, []*Sequence{other}, [][]int32{{1}}, failing{}, lg(1)); err == nil {
		t.Fatal("failing experts: no error")
	}
	if err := f.m.Forward(ctx, []*Sequence{other}, [][]int32{{1}}, f.experts, lg(1)); err == nil {
		t.Fatal("broken sequence stepped again")
	}
	other.Reset()
	if err := f.m.Forward(ctx, []*Sequence{other}, [][]int32{{1}}, f.experts, lg(1)); err != nil {
		t.Fatalf("after Reset: %v", err)
	}
	// Another model's sequence and a cancelled context are refused.
	g := newFixture(t, "qwen3_moe")
	foreign, _ := g.m.NewSequence(4)
	if err := f.m.Forward(ctx, []*Sequence{foreign}, [][]int32{{1}}, f.experts, lg(1)); !errors.Is(err, nn.ErrInvalid) {
		t.Errorf("foreign sequence: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	fresh, _ := f.m.NewSequence(4)
	if err := f.m.Forward(cctx, []*Sequence{fresh}, [][]int32{{1}}, f.experts, lg(1)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if _, err := f.m.NewSequence(0); err == nil {
		t.Error("capacity 0 accepted")
	}
}
