package meshtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/deepseek4"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/router"
)

// TestDeepseekV4MeshExpertsPacked: the three daemons of a tiny V4 mesh hold their MXFP4
// experts packed — each card's lease accounts exactly its experts × the packed size (4.25
// bits a weight), as does the in-process reference's card — and greedy generation over the
// mesh gives the tokens and logits, bit for bit, of the in-process experts both packed and
// dequantised to bf16 (the path of before; E2M1·2^k values are exact in bf16).
func TestDeepseekV4MeshExpertsPacked(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const name = "packed-v4"
	dir := Checkpoint(t, "deepseek_v4", "bf16")
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := stack.Start(ctx, stack.Config{ModelDir: dir, Model: name, Placement: stack.Spread(cfg.Experts, 3, 2),
		Heartbeat: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	per, err := model.ExpertStorageBytes(ascend.MXFP4, cfg.Hidden, cfg.ExpertIntermediate)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := st.Connect(ctx, "router")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := mesh.OpenRegistry(ctx, nc, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 20*time.Second, func() error {
		cards, err := reg.Cards(ctx)
		if err != nil {
			return err
		}
		if len(cards) != 3 {
			return fmt.Errorf("%d cards in the registry, want 3", len(cards))
		}
		for _, c := range cards {
			n := 0
			for _, e := range c.Experts {
				if e.State == proto.StateReady {
					n++
				}
			}
			if n == 0 || c.MemUsed != int64(n)*per {
				return fmt.Errorf("card %s holds %d experts in %d bytes, want %d × %d (packed mxfp4)", c.Card, n, c.MemUsed, n, per)
			}
		}
		return nil
	})

	ck, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	be, err := ascend.Open("cpu")
	if err != nil {
		t.Fatal(err)
	}
	var cards []ascend.Card
	for i := range 3 {
		c, err := be.OpenCard(2100+i, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cards = append(cards, c)
	}
	m, err := deepseek4.LoadModel(ck, cfg, cards[0])
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	layers := cfg.MoELayers()
	held := int64(len(layers) * cfg.Experts)
	packed, err := model.LoadLocal(ck, cfg, cards[1], layers)
	if err != nil {
		t.Fatal(err)
	}
	bf16, err := model.LoadLocal(ck, cfg, cards[2], layers, model.WithExpertDType(ascend.BF16))
	if err != nil {
		t.Fatal(err)
	}
	if got := cards[1].MemInfo().Used; got != held*per {
		t.Fatalf("local packed experts use %d bytes, want %d × %d", got, held, per)
	}
	if got, want := cards[2].MemInfo().Used, held*int64(3*cfg.Hidden*cfg.ExpertIntermediate*2); got != want {
		t.Fatalf("local bf16 experts use %d bytes, want %d", got, want)
	}
	meshExperts, err := router.NewMesh(ctx, nc, router.MeshConfig{Model: name, Experts: cfg.Experts, Mode: proto.ModePairs, Wire: proto.F32})
	if err != nil {
		t.Fatal(err)
	}
	defer meshExperts.Close()
	var keys []model.ExpertKey
	for _, l := range layers {
		for e := range cfg.Experts {
			keys = append(keys, model.ExpertKey{Layer: l, Expert: e})
		}
	}
	if err := meshExperts.WaitFor(ctx, keys); err != nil {
		t.Fatal(err)
	}
	prompts := [][]int32{{1, 17, 33, 5, 200, 9, 41}}
	const n = 24
	wantTok, wantLogits, err := greedy(ctx, m, packed, prompts, n)
	if err != nil {
		t.Fatal(err)
	}
	for _, other := range []struct {
		name string
		ex   model.Experts
	}{{"mesh (packed)", meshExperts}, {"local bf16", bf16}} {
		tok, logits, err := greedy(ctx, m, other.ex, prompts, n)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(tok) != fmt.Sprint(wantTok) {
			t.Fatalf("%s tokens %v, local packed %v", other.name, tok, wantTok)
		}
		for s := range wantLogits[0] {
			if d, _ := stack.Diff(logits[0][s], wantLogits[0][s]); d != 0 {
				t.Fatalf("%s step %d: logits differ from local packed by %g", other.name, s, d)
			}
		}
	}
	t.Logf("%d greedy tokens equal over the mesh, local packed and local bf16; experts %d bytes packed (%.2f bits a weight)",
		n, per, 8*float64(per)/float64(3*cfg.Hidden*cfg.ExpertIntermediate))
}
