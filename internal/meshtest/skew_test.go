package meshtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/model/synth"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/router"
	"github.com/moemesh/moemesh/router/placement"
)

// Skew (issue 5): routing that is Zipf(1.2)-skewed by the model's own gate, a controller
// with its default interval and window, and the two hottest experts of the layer are
// ready on at least two cards within 10 s of the load starting, while every call through
// the mesh keeps succeeding.
func TestSkewHotExpertsGainReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const name, seed, hot = "skew", 5, 2
	dir := filepath.Join(t.TempDir(), "skewed")
	cfg, err := synth.Write(dir, synth.Options{Arch: "deepseek_v3", Seed: seed, Layers: 2, TopK: 2, Skew: 1.2})
	if err != nil {
		t.Fatal(err)
	}
	layer := cfg.MoELayers()[0]
	hottest := synth.SkewRanks(seed, layer, cfg.Experts)[:hot]

	st, err := stack.Start(ctx, stack.Config{ModelDir: dir, Model: name, Daemons: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	size, err := placement.ExpertBytes(dir, st.Model)
	if err != nil {
		t.Fatal(err)
	}
	cnc, err := st.Connect(ctx, "controller")
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := placement.NewController(placement.ControllerConfig{Model: name, ID: "ctl", Layers: st.Model.MoELayers(),
		Experts: st.Model.Experts, ExpertBytes: size}, cnc)
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

	rnc, err := st.Connect(ctx, "router")
	if err != nil {
		t.Fatal(err)
	}
	m, err := router.NewMesh(ctx, rnc, router.MeshConfig{Model: name, Experts: cfg.Experts})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	keys := make([]model.ExpertKey, cfg.Experts)
	for e := range keys {
		keys[e] = model.ExpertKey{Layer: layer, Expert: e}
	}
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	if err := m.WaitFor(wctx, keys); err != nil {
		t.Fatal(err)
	}
	reg, err := mesh.OpenRegistry(ctx, rnc, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	ready := func() (map[int]int, error) {
		leases, err := reg.Cards(ctx)
		if err != nil {
			return nil, err
		}
		n := map[int]int{}
		for _, c := range leases {
			for _, e := range c.Experts {
				if e.State == proto.StateReady && int(e.Layer) == layer {
					n[int(e.Expert)]++
				}
			}
		}
		return n, nil
	}
	before, err := ready()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range hottest {
		if before[e] != 1 {
			t.Fatalf("before any load, hot expert %d has %d replicas, want the static 1", e, before[e])
		}
	}

	// The load: two clients route random hidden states through the layer's gate and
	// send them to the mesh, back to back, until the check below is done.
	ck, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	be, err := ascend.Open("cpu")
	if err != nil {
		t.Fatal(err)
	}
	lctx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	pairs := make([]int, cfg.Experts)
	loadErrs := make([]error, 2)
	for i := range loadErrs {
		card, err := be.OpenCard(3000+i, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer card.Close()
		gate, err := model.LoadMoELayer(ck, cfg, layer, card)
		if err != nil {
			t.Fatal(err)
		}
		defer gate.Close()
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			out := make([]float32, 16*cfg.Hidden)
			for lctx.Err() == nil {
				x := stack.RandomInput(rng, 16, cfg.Hidden)
				r, err := gate.Route(x, nil)
				if err == nil {
					mu.Lock()
					for _, e := range r.Experts {
						pairs[e]++
					}
					mu.Unlock()
					err = m.Forward(lctx, layer, x, cfg.Hidden, r, out)
				}
				if err != nil && lctx.Err() == nil {
					loadErrs[i] = err
					return
				}
			}
		})
	}
	defer func() { stopLoad(); wg.Wait() }()

	start := time.Now()
	WaitFor(t, 10*time.Second, func() error {
		for _, err := range loadErrs {
			if err != nil {
				return fmt.Errorf("a call failed: %w", err)
			}
		}
		n, err := ready()
		if err != nil {
			return err
		}
		for _, e := range hottest {
			if n[e] < 2 {
				return fmt.Errorf("hot expert %d has %d ready replicas (all: %v)", e, n[e], n)
			}
		}
		return nil
	})
	t.Logf("the %d hottest experts %v have 2+ ready replicas %v after the load began", hot, hottest, time.Since(start).Round(time.Millisecond))
	stopLoad()
	wg.Wait()
	if err := errors.Join(loadErrs...); err != nil {
		t.Fatal(err)
	}
	// The routed load really was skewed the way the model says: its hottest experts are
	// the two most chosen.
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for _, n := range pairs {
		total += n
	}
	for _, e := range hottest {
		for o, n := range pairs {
			if !slices.Contains(hottest, o) && n >= pairs[e] {
				t.Errorf("expert %d was chosen %d times, as often as hot expert %d (%d)", o, n, e, pairs[e])
			}
		}
	}
	t.Logf("pairs routed: %d; hottest %v took %d and %d", total, hottest, pairs[hottest[0]], pairs[hottest[1]])
}
