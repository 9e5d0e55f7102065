package stack

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"time"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/router"
)

// Layer runs one MoE layer of the stack's model both ways: routed experts in this process
// (model.Local) and through the mesh (router.Mesh), over the same gate and shared expert.
type Layer struct {
	Index int
	Mesh  *router.Mesh
	Local *model.Local
	moe   *model.MoELayer
	cards []ascend.Card
}

// NewLayer prepares layer index (-1: the first MoE layer) with the given combine mode and
// wire dtype, and waits until the mesh has a replica of each of its experts.
// opts adjust the router's mesh configuration (timeouts, rounds).
func (s *Stack) NewLayer(ctx context.Context, index int, mode proto.Mode, wire proto.DType, opts ...func(*router.MeshConfig)) (_ *Layer, err error) {
	cfg := s.Model
	if index < 0 {
		moe := cfg.MoELayers()
		if len(moe) == 0 {
			return nil, fmt.Errorf("stack: %s has no MoE layer", cfg.Arch)
		}
		index = moe[0]
	}
	be, err := ascend.Open(s.Config.Backend)
	if err != nil {
		return nil, err
	}
	l := &Layer{Index: index}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	ck, err := safetensors.Open(s.Config.ModelDir)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	// Card ids far above the daemons' keep the emulated devices apart.
	routerCard, err := be.OpenCard(1000, 0)
	if err != nil {
		return nil, err
	}
	l.cards = append(l.cards, routerCard)
	if l.moe, err = model.LoadMoELayer(ck, cfg, index, routerCard); err != nil {
		return nil, err
	}
	localCard, err := be.OpenCard(1001, 0)
	if err != nil {
		return nil, err
	}
	l.cards = append(l.cards, localCard)
	if l.Local, err = model.LoadLocal(ck, cfg, localCard, []int{index}); err != nil {
		return nil, err
	}
	nc, err := s.Connect(ctx, "router")
	if err != nil {
		return nil, err
	}
	mc := router.MeshConfig{Model: s.Config.Model, Experts: cfg.Experts,
		Mode: mode, Wire: wire, Logger: s.Config.Logger}
	for _, o := range opts {
		o(&mc)
	}
	if l.Mesh, err = router.NewMesh(ctx, nc, mc); err != nil {
		return nil, err
	}
	keys := make([]model.ExpertKey, cfg.Experts)
	for e := range keys {
		keys[e] = model.ExpertKey{Layer: index, Expert: e}
	}
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := l.Mesh.WaitFor(wctx, keys); err != nil {
		return nil, err
	}
	return l, nil
}

// Close releases the layer's cards and stops following the registry.
func (l *Layer) Close() {
	if l.Mesh != nil {
		l.Mesh.Close()
	}
	if l.moe != nil {
		_ = l.moe.Close()
	}
	for _, c := range l.cards {
		_ = c.Close()
	}
}

// Forward runs the layer over x with the given experts.
func (l *Layer) Forward(ctx context.Context, x []float32, experts model.Experts) ([]float32, error) {
	out := make([]float32, len(x))
	return out, l.moe.Forward(ctx, x, nil, experts, out)
}

// Routes reports whether any token of x is routed to expert e.
func (l *Layer) Routes(x []float32, e int) bool {
	r, err := l.moe.Route(x, nil)
	if err != nil {
		return false
	}
	for _, got := range r.Experts {
		if int(got) == e {
			return true
		}
	}
	return false
}

// Result compares the two ways over the same input.
type Result struct {
	MaxDiff     float64       // max |mesh − local| over the output
	MaxAbs      float64       // max |local|, for scale
	Local, Mesh time.Duration // median time of one layer step
}

// Run computes the layer locally and through the mesh iters times each (interleaved, so a
// noisy neighbour hits both alike) and compares the outputs.
func (l *Layer) Run(ctx context.Context, x []float32, iters int) (Result, error) {
	var res Result
	var lt, mt []time.Duration
	var lo, mo []float32
	for i := 0; i < max(iters, 1); i++ {
		t0 := time.Now()
		o, err := l.Forward(ctx, x, l.Local)
		if err != nil {
			return res, fmt.Errorf("local: %w", err)
		}
		lt = append(lt, time.Since(t0))
		lo = o
		t0 = time.Now()
		o, err = l.Forward(ctx, x, l.Mesh)
		if err != nil {
			return res, fmt.Errorf("mesh: %w", err)
		}
		mt = append(mt, time.Since(t0))
		mo = o
	}
	res.MaxDiff, res.MaxAbs = Diff(mo, lo)
	res.Local, res.Mesh = median(lt), median(mt)
	return res, nil
}

// Diff returns max |a−b| and max |b|.
func Diff(a, b []float32) (maxDiff, maxAbs float64) {
	for i := range a {
		maxDiff = math.Max(maxDiff, math.Abs(float64(a[i])-float64(b[i])))
		maxAbs = math.Max(maxAbs, math.Abs(float64(b[i])))
	}
	return maxDiff, maxAbs
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// RandomInput is T rows of normal values, the scale of a normalised hidden state.
func RandomInput(rng *rand.Rand, tokens, hidden int) []float32 {
	x := make([]float32, tokens*hidden)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}
