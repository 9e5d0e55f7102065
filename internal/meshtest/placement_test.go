package meshtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/router/placement"
)

// With a controller, daemons started with no experts get a balanced assignment, a layer
// step through the mesh equals the in-process one, and when a daemon stops its experts are
// re-placed on the survivors within 10 s and the step works again.
func TestControllerPlacesAndReplaces(t *testing.T) {
	for _, how := range []string{"stop", "kill"} {
		t.Run(how, func(t *testing.T) { testControllerPlacesAndReplaces(t, how) })
	}
}

func testControllerPlacesAndReplaces(t *testing.T, how string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := Checkpoint(t, "qwen3_moe", "f32")
	st, err := stack.Start(ctx, stack.Config{ModelDir: dir, Model: "elastic-" + how, Placement: [][]int{{}, {}, {}}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	layers := st.Model.MoELayers()
	size, err := placement.ExpertBytes(dir, st.Model)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := st.Connect(ctx, "controller")
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := placement.NewController(placement.ControllerConfig{Model: "elastic-" + how, ID: "ctl", Layers: layers,
		Experts: st.Model.Experts, ExpertBytes: size, MinReplicas: 1, Interval: time.Second, Settle: 200 * time.Millisecond}, nc)
	if err != nil {
		t.Fatal(err)
	}
	cctx, stopCtl := context.WithCancel(ctx)
	ctlDone := make(chan error, 1)
	go func() { ctlDone <- ctl.Run(cctx) }()
	defer func() {
		stopCtl()
		if err := <-ctlDone; err != nil {
			t.Errorf("controller: %v", err)
		}
	}()

	rnc, err := st.Connect(ctx, "reader")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := mesh.OpenRegistry(ctx, rnc, "elastic-"+how, 0)
	if err != nil {
		t.Fatal(err)
	}
	total := len(layers) * st.Model.Experts
	// placed checks that every expert is ready on a live card and, if balanced, that the
	// given cards hold between floor and ceil of total/len(cards) experts.
	placed := func(cards []string, balanced bool) func() error {
		return func() error {
			leases, err := reg.Cards(ctx)
			if err != nil {
				return err
			}
			ready := map[model.ExpertKey]int{}
			per := map[string]int{}
			for _, c := range leases {
				if !slices.Contains(cards, c.Card) {
					continue // a dead card's lease may not have lapsed yet
				}
				for _, e := range c.Experts {
					if e.State == proto.StateReady {
						ready[model.ExpertKey{Layer: int(e.Layer), Expert: int(e.Expert)}]++
						per[c.Card]++
					}
				}
			}
			for _, l := range layers {
				for e := 0; e < st.Model.Experts; e++ {
					if ready[model.ExpertKey{Layer: l, Expert: e}] == 0 {
						return fmt.Errorf("expert %d/%d has no ready replica (cards %v)", l, e, per)
					}
				}
			}
			lo, hi := total/len(cards), (total+len(cards)-1)/len(cards)
			for _, id := range cards {
				if !balanced {
					if per[id] == 0 {
						return fmt.Errorf("card %s holds no expert (all: %v)", id, per)
					}
					continue
				}
				if per[id] < lo || per[id] > hi {
					return fmt.Errorf("card %s holds %d experts, want %d to %d (all: %v)", id, per[id], lo, hi, per)
				}
			}
			return nil
		}
	}
	cards := st.CardIDs()
	t0 := time.Now()
	WaitFor(t, 20*time.Second, placed(cards, true))
	t.Logf("balanced assignment of %d experts over %d cards ready after %v", total, len(cards), time.Since(t0).Round(time.Millisecond))

	l, err := st.NewLayer(ctx, -1, proto.ModePairs, proto.F32)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	step := func(when string) {
		t.Helper()
		x := stack.RandomInput(rng, 32, st.Model.Hidden)
		res, err := l.Run(ctx, x, 1)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if res.MaxDiff != 0 {
			t.Fatalf("%s: mesh differs from local by %g", when, res.MaxDiff)
		}
	}
	step("after the initial placement")

	// Skew: the routers' load reports make one expert hot; it gains replicas.
	hot := model.ExpertKey{Layer: l.Index, Expert: 3}
	pub := time.NewTicker(200 * time.Millisecond)
	defer pub.Stop()
	skewed := time.Now()
	WaitFor(t, 10*time.Second, func() error {
		select {
		case <-pub.C:
			r := proto.LoadReport{V: proto.Version, Router: "test", Nanos: int64(200 * time.Millisecond)}
			for e := 0; e < st.Model.Experts; e++ {
				n := int32(10)
				if e == hot.Expert {
					n = 1000
				}
				r.Layers, r.Experts, r.Tokens = append(r.Layers, int32(hot.Layer)), append(r.Experts, int32(e)), append(r.Tokens, n)
			}
			data, err := proto.Marshal(&r)
			if err != nil {
				return err
			}
			if err := rnc.Publish(proto.LoadSubject("elastic-"+how), data); err != nil {
				return err
			}
		default:
		}
		leases, err := reg.Cards(ctx)
		if err != nil {
			return err
		}
		n := 0
		for _, c := range leases {
			for _, e := range c.Experts {
				if e.State == proto.StateReady && int(e.Layer) == hot.Layer && int(e.Expert) == hot.Expert {
					n++
				}
			}
		}
		if n < 2 {
			return fmt.Errorf("hot expert %v has %d ready replicas", hot, n)
		}
		return nil
	})
	t.Logf("hot expert replicated %v after the skew began", time.Since(skewed).Round(time.Millisecond))
	step("with the hot expert replicated")

	stopped := time.Now()
	sctx, scancel := context.WithTimeout(ctx, 15*time.Second)
	defer scancel()
	if how == "kill" {
		err = st.KillDaemon(sctx, 0) // its lease lapses by TTL
	} else {
		err = st.StopDaemon(sctx, 0) // it drains and removes its lease
	}
	if err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 10*time.Second-time.Since(stopped), placed(cards[1:], false))
	t.Logf("experts re-placed on the survivors %v after the daemon's %s", time.Since(stopped).Round(time.Millisecond), how)
	keys := make([]model.ExpertKey, st.Model.Experts)
	for e := range keys {
		keys[e] = model.ExpertKey{Layer: l.Index, Expert: e}
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := l.Mesh.WaitFor(wctx, keys); err != nil {
		t.Fatal(err)
	}
	step("after re-placement")
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("test deadline")
	}
}
