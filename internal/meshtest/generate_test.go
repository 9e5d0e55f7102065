package meshtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/deepseek"
	"github.com/moemesh/moemesh/model/gqa"
	"github.com/moemesh/moemesh/model/nn"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/router"
)

// forwarder is what an architecture package's model offers (gqa, deepseek).
type forwarder[S any] interface {
	Config() *model.Config
	NewSequence(capacity int) (S, error)
	ForwardSplit(ctx context.Context, seqs []S, tokens [][]int32, experts model.Experts, logits [][]float32, split int) error
	Close() error
}

// greedy generates n tokens after prompt, one decode step at a time, and returns the
// tokens and the logits of every generated step.
func greedy[S any, M forwarder[S]](ctx context.Context, m M, experts model.Experts, prompts [][]int32, n int) ([][]int32, [][][]float32, error) {
	return greedySplit(ctx, m, experts, prompts, n, 0)
}

// greedySplit is greedy with every step cut into two micro-batches after sequence split.
func greedySplit[S any, M forwarder[S]](ctx context.Context, m M, experts model.Experts, prompts [][]int32, n, split int) ([][]int32, [][][]float32, error) {
	vocab := m.Config().Vocab
	seqs := make([]S, len(prompts))
	step := make([][]int32, len(prompts))
	logits := make([][]float32, len(prompts))
	out := make([][]int32, len(prompts))
	all := make([][][]float32, len(prompts))
	for i, p := range prompts {
		s, err := m.NewSequence(len(p) + n + 1)
		if err != nil {
			return nil, nil, err
		}
		seqs[i], step[i], logits[i] = s, p, make([]float32, vocab)
	}
	for t := 0; t < n; t++ {
		if err := m.ForwardSplit(ctx, seqs, step, experts, logits, split); err != nil {
			return nil, nil, fmt.Errorf("step %d: %w", t, err)
		}
		for i := range seqs {
			next := nn.Argmax(logits[i])
			out[i] = append(out[i], next)
			all[i] = append(all[i], append([]float32(nil), logits[i]...))
			step[i] = []int32{next}
		}
	}
	return out, all, nil
}

// TestGenerateMeshEqualsLocal: greedy generation of 32 tokens with the routed experts on a
// mesh of three daemons gives exactly the tokens (and, in exact mode, the logits bit for bit)
// of the same model with experts in process — for 8 sequences of different lengths batched
// together, each also equal to its solo run.
func TestGenerateMeshEqualsLocal(t *testing.T) {
	for _, arch := range gqa.Arches {
		t.Run(arch, func(t *testing.T) { checkGenerate(t, arch, gqa.Load) })
	}
	for _, arch := range deepseek.Arches {
		t.Run(arch, func(t *testing.T) { checkGenerate(t, arch, deepseek.Load) })
	}
}

func checkGenerate[S any, M forwarder[S]](t *testing.T, arch string, load func(*safetensors.Checkpoint, *model.Config, ascend.Card) (M, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := Checkpoint(t, arch, "bf16")
	st, err := stack.Start(ctx, stack.Config{ModelDir: dir, Model: "gen-" + arch, Placement: [][]int{}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := st.Model
	daemons, err := stack.Start(ctx, stack.Config{ModelDir: dir, Model: "gen-" + arch, NATSURL: st.URL,
		Placement: stack.Spread(cfg.Experts, 3, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer daemons.Close()

	ck, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	be, _ := ascend.Open("cpu")
	routerCard, _ := be.OpenCard(2000, 0)
	localCard, _ := be.OpenCard(2001, 0)
	defer routerCard.Close()
	defer localCard.Close()
	m, err := load(ck, cfg, routerCard)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	local, err := model.LoadLocal(ck, cfg, localCard, cfg.MoELayers())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := st.Connect(ctx, "router")
	if err != nil {
		t.Fatal(err)
	}
	meshExperts, err := router.NewMesh(ctx, nc, router.MeshConfig{Model: "gen-" + arch, Experts: cfg.Experts, Mode: proto.ModePairs, Wire: proto.F32})
	if err != nil {
		t.Fatal(err)
	}
	defer meshExperts.Close()
	var keys []model.ExpertKey
	for _, l := range cfg.MoELayers() {
		for e := 0; e < cfg.Experts; e++ {
			keys = append(keys, model.ExpertKey{Layer: l, Expert: e})
		}
	}
	if err := meshExperts.WaitFor(ctx, keys); err != nil {
		t.Fatal(err)
	}

	prompts := make([][]int32, 8)
	for i := range prompts {
		for j := 0; j < 2+3*i; j++ {
			prompts[i] = append(prompts[i], int32((7*i+13*j+1)%cfg.Vocab))
		}
	}
	const n = 32
	wantTok, wantLogits, err := greedy(ctx, m, local, prompts[:1], n)
	if err != nil {
		t.Fatal(err)
	}
	gotTok, gotLogits, err := greedy(ctx, m, meshExperts, prompts[:1], n)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(gotTok) != fmt.Sprint(wantTok) {
		t.Fatalf("mesh tokens %v, local %v", gotTok, wantTok)
	}
	for s := range wantLogits[0] {
		if d, _ := stack.Diff(gotLogits[0][s], wantLogits[0][s]); d != 0 {
			t.Fatalf("step %d: logits differ by %g in exact mode", s, d)
		}
	}
	// Eight sequences of different lengths batched through the mesh: each equals its
	// solo local run, with steps whole and cut into two micro-batches (two mesh calls of
	// a layer in flight at once).
	batchTok, _, err := greedy(ctx, m, meshExperts, prompts, n)
	if err != nil {
		t.Fatal(err)
	}
	splitTok, splitLogits, err := greedySplit(ctx, m, meshExperts, prompts, n, 3)
	if err != nil {
		t.Fatal(err)
	}
	_, batchLogits, err := greedy(ctx, m, local, prompts, n)
	if err != nil {
		t.Fatal(err)
	}
	for i := range prompts {
		for s := range batchLogits[i] {
			if d, _ := stack.Diff(splitLogits[i][s], batchLogits[i][s]); d != 0 {
				t.Fatalf("sequence %d step %d: micro-batched mesh logits differ from local by %g", i, s, d)
			}
		}
	}
	if fmt.Sprint(splitTok) != fmt.Sprint(batchTok) {
		t.Fatalf("micro-batched mesh tokens %v, whole steps %v", splitTok, batchTok)
	}
	for i, p := range prompts {
		solo, _, err := greedy(ctx, m, local, [][]int32{p}, n)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(batchTok[i]) != fmt.Sprint(solo[0]) {
			t.Fatalf("sequence %d in a batch of 8: %v, solo %v", i, batchTok[i], solo[0])
		}
	}
	distinct := map[int32]bool{}
	for _, tok := range wantTok[0] {
		distinct[tok] = true
	}
	t.Logf("%s: 32 tokens equal (%d distinct), 8 batched sequences equal their solo runs", arch, len(distinct))
}
