//go:build cann

package meshtest

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/moemesh/moemesh/ascend"
	_ "github.com/moemesh/moemesh/ascend/cann" // registers the backend
	"github.com/moemesh/moemesh/ascend/cann/acl"
	"github.com/moemesh/moemesh/expertd"
	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/deepseek4"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/router"
)

// tolCANNI8Logits bounds how far the logits of a mesh of cann daemons holding I8 experts
// may stray from those of cpu daemons holding the same I8 experts, relative to max |logit|.
// Both cards quantise on the host with ascend.QuantizeI8Row, so they hold the same int8
// codes and scales; what differs is where the scale enters: the cpu kernel sums q·x in
// float32 and scales once, the card dequantises q·s to float32 and the emulator sums in
// float64. ascendtest's quantised-weight suite holds both to TolF32 (1e-5 of Σ|x·w|, the
// bound for f32 weights: accumulation order plus one rounding of the result), so the
// per-expert difference is of the same order as for bf16 weights and the same end-to-end
// bound as the bf16 mixed mesh applies (tolCANNLogits: 1e-4, over 200× what this test
// observes, 4.5e-7; scaling one logit of one step by 1.001 trips it at 3.8e-4).
const tolCANNI8Logits = tolCANNLogits

// TestCANNDeepseekV4: the tiny DeepSeek-V4 checkpoint (MXFP4 experts, clamped SwiGLU,
// hash-routed first layer) served by expert daemons on cann (emulated) cards.
//
//   - mxfp4: two cann daemons hold every routed expert packed as read — each lease
//     accounts exactly its experts × the MXFP4 size, and an ExpertSet on a cann card
//     reports MXFP4 for every expert (a bf16 fallback would be 3.76× the bytes and dtype
//     BF16) — and greedy generation over them gives the tokens of in-process experts on
//     a cpu card, logits within tolCANNLogits, and bit for bit those of the same experts
//     in process on a cann card (the mesh adds nothing but transport).
//   - i8: the same daemons with WeightDType I8 (expertd --weights i8) against cpu daemons
//     with I8 and in-process I8 experts on a cpu card: the cpu mesh equals the in-process
//     experts bit for bit, the cann mesh gives the same tokens with logits within
//     tolCANNI8Logits; both kinds of lease account the I8 size.
//
// The router's dense path runs on a cpu card throughout, so every difference measured is
// the experts'. Afterwards the emulator holds no more device memory, executors or tensors
// than before.
func TestCANNDeepseekV4(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := Checkpoint(t, "deepseek_v4", "bf16")
	emuBefore := acl.Stats()
	srv, err := stack.Start(ctx, stack.Config{ModelDir: dir, Placement: [][]int{}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cfg := srv.Model
	if cfg.SwiGLULimit <= 0 {
		t.Fatalf("the tiny V4 checkpoint has no swiglu_limit: the clamped SwiGLU path would go untested")
	}
	ck, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	cpu, err := ascend.Open("cpu")
	if err != nil {
		t.Fatal(err)
	}
	cann, err := ascend.Open("cann")
	if err != nil {
		t.Fatal(err)
	}
	routerCard, err := cpu.OpenCard(2200, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer routerCard.Close()
	m, err := deepseek4.LoadModel(ck, cfg, routerCard)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	nc, err := srv.Connect(ctx, "router")
	if err != nil {
		t.Fatal(err)
	}
	layers := cfg.MoELayers()
	var keys []model.ExpertKey
	for _, l := range layers {
		for e := range cfg.Experts {
			keys = append(keys, model.ExpertKey{Layer: l, Expert: e})
		}
	}
	// Two sequences; the longer one passes the 8-token window and both compressions
	// (ratios 4 and 8) within its prompt and the 16 generated tokens.
	prompts := [][]int32{{1, 17, 33, 5, 200, 9, 41}, {3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26}}
	const n = 16
	type result struct {
		tok    [][]int32
		logits [][][]float32
	}
	run := func(t *testing.T, what string, ex model.Experts) result {
		t.Helper()
		tok, logits, err := greedy(ctx, m, ex, prompts, n)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return result{tok, logits}
	}
	overMesh := func(t *testing.T, name string) result {
		t.Helper()
		ex, err := router.NewMesh(ctx, nc, router.MeshConfig{Model: name, Experts: cfg.Experts, Mode: proto.ModePairs, Wire: proto.F32})
		if err != nil {
			t.Fatal(err)
		}
		defer ex.Close()
		if err := ex.WaitFor(ctx, keys); err != nil {
			t.Fatal(err)
		}
		return run(t, name+" mesh", ex)
	}
	// local holds every routed expert on card, converted to dt (0: as read), checking
	// that the set reports each held in want and the card accounts exactly that.
	local := func(t *testing.T, card ascend.Card, dt, want ascend.DType) model.Experts {
		t.Helper()
		set := model.NewExpertSet(card, cfg.Hidden, cfg.ExpertIntermediate, cfg.SwiGLULimit)
		t.Cleanup(func() { set.Close() })
		if err := set.SetWeightDType(dt); err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			w, err := model.ReadExpert(ck, cfg, k)
			if err == nil {
				err = set.Add(k, w)
			}
			if err != nil {
				t.Fatalf("expert %v on card %d: %v", k, card.ID(), err)
			}
			if got, ok := set.HeldDType(k); !ok || got != want {
				t.Fatalf("expert %v on card %d held in %v (held %t), want %v", k, card.ID(), got, ok, want)
			}
		}
		per := expertBytes(t, want, cfg)
		if got := card.MemInfo().Used; got != int64(len(keys))*per {
			t.Fatalf("card %d holds %d experts in %d bytes, want %d × %d (%v)", card.ID(), len(keys), got, len(keys), per, want)
		}
		return model.NewLocal(set, cfg.Experts)
	}
	openCard := func(t *testing.T, be ascend.Backend, id int) ascend.Card {
		t.Helper()
		c, err := be.OpenCard(id, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	halves := stack.Spread(cfg.Experts, 2, 0)

	t.Run("mxfp4", func(t *testing.T) {
		const name = "cann-v4-mx"
		startV4Daemons(ctx, t, srv, dir, name, cann, 0, halves, 4)
		checkV4Leases(ctx, t, nc, name, cann, 2, expertBytes(t, ascend.MXFP4, cfg))
		cpuRef := run(t, "in-process cpu", local(t, openCard(t, cpu, 2201), 0, ascend.MXFP4))
		cannRef := run(t, "in-process cann", local(t, openCard(t, cann, 6), 0, ascend.MXFP4))
		got := overMesh(t, name)
		sameTokens(t, "cann mesh", got.tok, "in-process experts on a cpu card", cpuRef.tok)
		if d := maxRelDiff(got.logits, cannRef.logits); d != 0 {
			t.Fatalf("cann mesh logits differ from in-process experts on a cann card by %.3g of max |logit|, want 0", d)
		}
		worst := maxRelDiff(got.logits, cpuRef.logits)
		if worst > tolCANNLogits {
			t.Fatalf("cann mesh logits differ from in-process cpu experts by %.3g of max |logit| (tolerance %g)", worst, tolCANNLogits)
		}
		t.Logf("mxfp4: %d sequences × %d tokens equal; logits = in-process cann bit for bit, within %.3g of max |logit| of in-process cpu",
			len(prompts), n, worst)
	})

	t.Run("i8", func(t *testing.T) {
		const cannName, cpuName = "cann-v4-i8", "cpu-v4-i8"
		startV4Daemons(ctx, t, srv, dir, cannName, cann, ascend.I8, halves, 4)
		startV4Daemons(ctx, t, srv, dir, cpuName, cpu, ascend.I8, halves, 2210)
		per := expertBytes(t, ascend.I8, cfg)
		checkV4Leases(ctx, t, nc, cannName, cann, 2, per)
		checkV4Leases(ctx, t, nc, cpuName, cpu, 2, per)
		ref := run(t, "in-process cpu i8", local(t, openCard(t, cpu, 2202), ascend.I8, ascend.I8))
		cpuMesh := overMesh(t, cpuName)
		sameTokens(t, "cpu i8 mesh", cpuMesh.tok, "in-process cpu i8 experts", ref.tok)
		if d := maxRelDiff(cpuMesh.logits, ref.logits); d != 0 {
			t.Fatalf("cpu i8 mesh logits differ from in-process cpu i8 experts by %.3g of max |logit|, want 0", d)
		}
		got := overMesh(t, cannName)
		sameTokens(t, "cann i8 mesh", got.tok, "cpu i8 mesh", cpuMesh.tok)
		worst := maxRelDiff(got.logits, cpuMesh.logits)
		if worst > tolCANNI8Logits {
			t.Fatalf("cann i8 mesh logits differ from cpu i8 mesh by %.3g of max |logit| (tolerance %g)", worst, tolCANNI8Logits)
		}
		t.Logf("i8: %d sequences × %d tokens equal (cann mesh, cpu mesh, in-process cpu); cann within %.3g of max |logit| of cpu",
			len(prompts), n, worst)
	})

	// Every cann card of the subtests (daemons' and in-process) is closed by now: what the
	// dequantisation and the host-fallback SwiGLU took on the device must be back.
	if s := acl.Stats(); acl.Emulated && s != emuBefore {
		t.Errorf("emulator holds %+v after the V4 runs, %+v before", s, emuBefore)
	}
}

// expertBytes is one expert's card memory in dt, failing the test on an unknown dtype.
func expertBytes(t *testing.T, dt ascend.DType, cfg *model.Config) int64 {
	t.Helper()
	per, err := model.ExpertStorageBytes(dt, cfg.Hidden, cfg.ExpertIntermediate)
	if err != nil {
		t.Fatal(err)
	}
	return per
}

// startV4Daemons starts one expert daemon per placement entry on backend be (devices
// device, device+1, …), holding experts in wdt (expertd --weights), and waits until each
// serves. stack.Config has no WeightDType, hence the daemons are built here; they stop,
// drained, at the test's cleanup, before the stack's server.
func startV4Daemons(ctx context.Context, t *testing.T, srv *stack.Stack, dir, name string, be ascend.Backend, wdt ascend.DType, placement [][]int, device int) {
	t.Helper()
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	t.Cleanup(func() {
		stop()
		wg.Wait()
		for _, err := range errs {
			t.Errorf("daemon of %s: %v", name, err)
		}
	})
	var daemons []*expertd.Daemon
	done := make(chan struct{}, len(placement))
	for i, experts := range placement {
		var keys []model.ExpertKey
		for _, l := range srv.Model.MoELayers() {
			for _, e := range experts {
				keys = append(keys, model.ExpertKey{Layer: l, Expert: e})
			}
		}
		id := fmt.Sprintf("%s-d%d", name, i)
		dnc, err := srv.Connect(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		d, err := expertd.New(expertd.Config{Model: name, ModelDir: dir, Daemon: id, Backend: be,
			Cards:     []expertd.CardConfig{{ID: id + "-c0", Device: device + i, Experts: keys}},
			Heartbeat: 100 * time.Millisecond, WeightDType: wdt}, dnc)
		if err != nil {
			t.Fatal(err)
		}
		daemons = append(daemons, d)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { done <- struct{}{} }()
			if err := d.Run(runCtx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", id, err))
				mu.Unlock()
			}
		}()
	}
	for _, d := range daemons {
		select {
		case <-d.Ready():
		case <-done:
			t.Fatalf("a daemon of %s stopped while starting (its error follows at cleanup)", name)
		case <-ctx.Done():
			t.Fatalf("daemons of %s not serving: %v", name, ctx.Err())
		}
	}
}

// checkV4Leases waits until the model's registry lists cards leases, each on a device of
// backend be, with every expert it lists ready and its memory exactly those experts × per
// bytes: the check that experts are held in the dtype per was computed for (before any
// batch: a card's compute scratch also counts as used).
func checkV4Leases(ctx context.Context, t *testing.T, nc *nats.Conn, name string, be ascend.Backend, cards int, per int64) {
	t.Helper()
	reg, err := mesh.OpenRegistry(ctx, nc, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 10*time.Second, func() error {
		leases, err := reg.Cards(ctx)
		if err != nil {
			return err
		}
		if len(leases) != cards {
			return fmt.Errorf("%s: %d cards in the registry, want %d", name, len(leases), cards)
		}
		for _, c := range leases {
			if !strings.HasPrefix(c.Device, be.Name()+":") {
				return fmt.Errorf("%s: card %s is on device %q, want a %s device", name, c.Card, c.Device, be.Name())
			}
			held := 0
			for _, e := range c.Experts {
				if e.State != proto.StateReady {
					return fmt.Errorf("%s: card %s lists %d/%d in state %d", name, c.Card, e.Layer, e.Expert, e.State)
				}
				held++
			}
			if held == 0 || c.MemUsed != int64(held)*per {
				return fmt.Errorf("%s: card %s holds %d experts in %d bytes, want %d × %d", name, c.Card, held, c.MemUsed, held, per)
			}
		}
		return nil
	})
}

// sameTokens fails the test unless two greedy runs gave the same tokens.
func sameTokens(t *testing.T, gotName string, got [][]int32, wantName string, want [][]int32) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s tokens %v, %s %v", gotName, got, wantName, want)
	}
}

// maxRelDiff is the largest difference of two runs' logits at any sequence and step,
// relative to that step's max |logit| in want.
func maxRelDiff(got, want [][][]float32) float64 {
	worst := 0.0
	for s := range want {
		for step := range want[s] {
			d, m := stack.Diff(got[s][step], want[s][step])
			if rel := d / math.Max(m, 1e-30); rel > worst {
				worst = rel
			}
		}
	}
	return worst
}
