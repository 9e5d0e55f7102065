package router

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
)

// fakeCard answers ExpertBatches on a card subject the way a daemon would, with a
// function of the rows simple enough to check exactly: pair (row, expert e) yields
// x·(e+1). delay holds every answer back (a straggling card); silent cards are in the
// registry but nobody listens (a dead daemon); busy ones answer 503.
type fakeCard struct {
	id      string
	experts []int
	delay   time.Duration
	silent  bool
	busy    bool
}

// fakeMesh is an embedded server, a registry holding the fake cards' leases, and their
// responders. Stop (registered as cleanup) waits for every delayed answer's goroutine.
type fakeMesh struct {
	url   string
	model string
	stop  chan struct{}
	wg    sync.WaitGroup
}

func startFakeMesh(t *testing.T, cards ...fakeCard) *fakeMesh {
	t.Helper()
	fm := &fakeMesh{url: natsURL(t), model: "m", stop: make(chan struct{})}
	t.Cleanup(func() { close(fm.stop); fm.wg.Wait() })
	fm.add(t, cards...)
	return fm
}

// add starts answering as cards and puts their leases.
func (fm *fakeMesh) add(t *testing.T, cards ...fakeCard) {
	t.Helper()
	nc := dial(t, fm.url, "fake-cards")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reg, err := mesh.OpenRegistry(ctx, nc, fm.model, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cards {
		if !c.silent {
			if _, err := nc.Subscribe(proto.CardSubject(fm.model, c.id), func(msg *nats.Msg) { fm.answer(c, msg) }); err != nil {
				t.Fatal(err)
			}
		}
		if err := reg.PutCard(ctx, status(c.id, c.experts, 0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func (fm *fakeMesh) answer(c fakeCard, msg *nats.Msg) {
	if c.busy {
		respondErr(msg, proto.Errorf(proto.CodeUnavailable, "card %s queue full", c.id))
		return
	}
	var b proto.ExpertBatch
	if err := proto.DecodeExpertBatch(msg.Data, &b, 8); err != nil {
		respondErr(msg, err)
		return
	}
	x, err := b.X.F32(nil)
	if err != nil {
		respondErr(msg, err)
		return
	}
	h := int(b.X.Shape[1])
	var y []float32
	for row := range b.Rows() {
		sum := make([]float32, h)
		for p := b.RowPtr[row]; p < b.RowPtr[row+1]; p++ {
			f := float32(b.Experts[p] + 1)
			for j := range h {
				v := x[row*h+j] * f
				if b.Mode == proto.ModePairs {
					y = append(y, v)
				} else {
					sum[j] += b.Weights[p] * v
				}
			}
		}
		if b.Mode != proto.ModePairs {
			y = append(y, sum...)
		}
	}
	res := proto.ExpertResult{V: proto.Version, Layer: b.Layer}
	rows := int64(len(y) / h)
	if err := res.Y.SetF32(b.OutDType, y, rows, int64(h)); err != nil {
		respondErr(msg, err)
		return
	}
	data, err := proto.Marshal(&res)
	if err != nil {
		respondErr(msg, err)
		return
	}
	if c.delay <= 0 {
		_ = msg.Respond(data)
		return
	}
	// Delay off the subscription's goroutine, so a straggler's answers do not queue
	// behind each other.
	fm.wg.Go(func() {
		t := time.NewTimer(c.delay)
		defer t.Stop()
		select {
		case <-t.C:
			_ = msg.Respond(data)
		case <-fm.stop:
		}
	})
}

// respondErr answers msg with a service error, as a daemon's micro endpoint would.
func respondErr(msg *nats.Msg, err error) {
	r := nats.NewMsg(msg.Reply)
	r.Header.Set(proto.HeaderErrorCode, strconv.Itoa(int(proto.CodeOf(err))))
	r.Header.Set(proto.HeaderError, err.Error())
	_ = msg.RespondMsg(r)
}

// newMesh follows the fake mesh with cfg (pairs mode over f32 unless set) and waits until
// every expert of layer 1 has a replica.
func (fm *fakeMesh) newMesh(t *testing.T, cfg MeshConfig) *Mesh {
	t.Helper()
	cfg.Model, cfg.Experts = fm.model, 8
	if cfg.Mode == 0 && cfg.Wire == 0 {
		cfg.Mode, cfg.Wire = proto.ModePairs, proto.F32
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := NewMesh(ctx, dial(t, fm.url, "router"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	var keys []model.ExpertKey
	for e := range 8 {
		keys = append(keys, model.ExpertKey{Layer: 1, Expert: e})
	}
	if err := m.WaitFor(ctx, keys); err != nil {
		t.Fatal(err)
	}
	return m
}

// testRouting is a fixed random top-2 routing of t tokens over 8 experts, with inputs.
func testRouting(seed uint64, tokens, hidden int) ([]float32, model.Routing) {
	rng := rand.New(rand.NewPCG(seed, 3))
	x := make([]float32, tokens*hidden)
	for i := range x {
		x[i] = rng.Float32()*2 - 1
	}
	r := model.Routing{TopK: 2}
	for range tokens {
		a := rng.IntN(8)
		b := (a + 1 + rng.IntN(7)) % 8
		r.Experts = append(r.Experts, int32(a), int32(b))
		w := rng.Float32()
		r.Weights = append(r.Weights, w, 1-w)
	}
	return x, r
}

// wantOutput is what the fake cards' function gives, combined like model.CombinePairs.
func wantOutput(t *testing.T, x []float32, r model.Routing, hidden int) []float32 {
	t.Helper()
	y := make([]float32, len(r.Experts)*hidden)
	for s, e := range r.Experts {
		tok := s / r.TopK
		for j := range hidden {
			y[s*hidden+j] = x[tok*hidden+j] * float32(e+1)
		}
	}
	out := make([]float32, len(x))
	if err := model.CombinePairs(out, y, r, hidden); err != nil {
		t.Fatal(err)
	}
	return out
}

// forwardTimes runs n steps through m and returns their durations, checking each output
// against want bit for bit.
func forwardTimes(t *testing.T, m *Mesh, n int, x []float32, r model.Routing, hidden int, want []float32) []time.Duration {
	t.Helper()
	var times []time.Duration
	out := make([]float32, len(x))
	for i := range n {
		start := time.Now()
		if err := m.Forward(context.Background(), 1, x, hidden, r, out); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		times = append(times, time.Since(start))
		if !slices.Equal(out, want) {
			t.Fatalf("step %d: output differs from the unhedged reference", i)
		}
	}
	slices.Sort(times)
	return times
}

func p99(ts []time.Duration) time.Duration { return ts[(len(ts)*99+99)/100-1] }

// TestHedgeCutsStragglerLatency: with one of two replicas answering 250 ms late, steps
// without hedging wait for it; with --hedge-after 10ms the other replica answers the
// same rows and the step's p99 drops several-fold (at least 2×, with room for a loaded
// machine), with outputs identical bit for bit (pairs mode over f32) to the reference and
// to the unhedged run.
func TestHedgeCutsStragglerLatency(t *testing.T) {
	all := []int{0, 1, 2, 3, 4, 5, 6, 7}
	fm := startFakeMesh(t, fakeCard{id: "fast", experts: all}, fakeCard{id: "slow", experts: all, delay: 250 * time.Millisecond})
	off := fm.newMesh(t, MeshConfig{})
	on := fm.newMesh(t, MeshConfig{HedgeAfter: 10 * time.Millisecond})
	const hidden, steps = 16, 20
	x, r := testRouting(1, 6, hidden)
	want := wantOutput(t, x, r, hidden)

	tOff := forwardTimes(t, off, steps, x, r, hidden, want)
	tOn := forwardTimes(t, on, steps, x, r, hidden, want)
	t.Logf("hedge: p50_off=%v p99_off=%v p50_on=%v p99_on=%v ratio=%.1f", tOff[steps/2], p99(tOff), tOn[steps/2], p99(tOn),
		float64(p99(tOff))/float64(p99(tOn)))
	if p99(tOff) < 250*time.Millisecond {
		t.Fatalf("unhedged p99 %v: the slow card was never used, the test proves nothing", p99(tOff))
	}
	if p99(tOn)*2 > p99(tOff) {
		t.Errorf("hedged p99 %v, unhedged %v: want at least 2× lower", p99(tOn), p99(tOff))
	}
	_, hedges, _ := on.stats.snapshot()
	if hedges[hedgeWon] == 0 {
		t.Errorf("hedges %v: none won", hedges)
	}
	if _, h, _ := off.stats.snapshot(); len(h) != 0 {
		t.Errorf("unhedged mesh hedged: %v", h)
	}
}

// TestHedgeWithoutOtherReplica: a straggler holding the only replica of some expert cannot
// be hedged; the step waits for it and is still right.
func TestHedgeWithoutOtherReplica(t *testing.T) {
	fm := startFakeMesh(t, fakeCard{id: "fast", experts: []int{1, 2, 3, 4, 5, 6, 7}},
		fakeCard{id: "slow", experts: []int{0, 1, 2, 3, 4, 5, 6, 7}, delay: 60 * time.Millisecond})
	m := fm.newMesh(t, MeshConfig{HedgeAfter: 5 * time.Millisecond})
	const hidden = 8
	x, r := testRouting(2, 4, hidden)
	r.Experts[0] = 0 // the slow card must be used
	if r.Experts[1] == 0 {
		r.Experts[1] = 1
	}
	forwardTimes(t, m, 3, x, r, hidden, wantOutput(t, x, r, hidden))
	_, hedges, _ := m.stats.snapshot()
	if len(hedges) != 1 || hedges[hedgeNoReplica] != 3 {
		t.Errorf("hedges %v: want a no_replica for each of the 3 steps, nothing else", hedges)
	}
}

// TestHedgeReduceMode: in reduce mode a hedge's partial sums replace the straggler's,
// never add to them.
func TestHedgeReduceMode(t *testing.T) {
	all := []int{0, 1, 2, 3, 4, 5, 6, 7}
	fm := startFakeMesh(t, fakeCard{id: "a", experts: all}, fakeCard{id: "b", experts: all, delay: 80 * time.Millisecond})
	m := fm.newMesh(t, MeshConfig{Mode: proto.ModeReduce, Wire: proto.F32, HedgeAfter: 5 * time.Millisecond})
	const hidden = 8
	x, r := testRouting(3, 8, hidden)
	want := wantOutput(t, x, r, hidden)
	out := make([]float32, len(x))
	for i := range 5 {
		if err := m.Forward(context.Background(), 1, x, hidden, r, out); err != nil {
			t.Fatal(err)
		}
		for j := range out {
			if d := out[j] - want[j]; d > 1e-5 || d < -1e-5 {
				t.Fatalf("step %d: out[%d] = %g, want %g", i, j, out[j], want[j])
			}
		}
	}
	if _, h, _ := m.stats.snapshot(); h[hedgeWon] == 0 {
		t.Errorf("hedges %v: none won", h)
	}
}

// TestHedgeAdaptive: with a hedge factor and no fixed delay, steps are not hedged until
// the mesh has answered enough batches to know its median; then a straggler is hedged
// after a few medians of the fast card. When every card is equally slow (overload), the
// baseline rises with them and (nearly) no hedge fires: hedges would only add load.
func TestHedgeAdaptive(t *testing.T) {
	all := []int{0, 1, 2, 3, 4, 5, 6, 7}
	const hidden = 8
	x, r := testRouting(7, 4, hidden)
	want := wantOutput(t, x, r, hidden)
	t.Run("straggler", func(t *testing.T) {
		fm := startFakeMesh(t, fakeCard{id: "fast", experts: all}, fakeCard{id: "slow", experts: all, delay: 150 * time.Millisecond})
		m := fm.newMesh(t, MeshConfig{HedgeFactor: 4})
		// Warm up until the fast card's median is known (the slow card's may come first).
		for i := 0; m.tab.fastestMedian() == 0 || m.tab.fastestMedian() > 50*time.Millisecond; i++ {
			if i == 50 {
				t.Fatal("no median after 50 steps")
			}
			if _, h, _ := m.stats.snapshot(); len(h) != 0 && m.tab.fastestMedian() == 0 {
				t.Fatalf("hedged before any median was known: %v", h)
			}
			forwardTimes(t, m, 1, x, r, hidden, want)
		}
		// Nearly every step uses the straggler: unhedged, its median would be 150ms.
		ts := forwardTimes(t, m, 20, x, r, hidden, want)
		_, h, _ := m.stats.snapshot()
		t.Logf("adaptive: p50=%v p99=%v fastest median %v hedges %v", ts[len(ts)/2], p99(ts), m.tab.fastestMedian(), h)
		if ts[len(ts)/2] > 75*time.Millisecond || h[hedgeWon] < 10 {
			t.Errorf("adaptive hedging: step median %v, %d hedges won; want under half the straggler's 150ms, most steps hedged", ts[len(ts)/2], h[hedgeWon])
		}
	})
	t.Run("all slow", func(t *testing.T) {
		fm := startFakeMesh(t, fakeCard{id: "a", experts: all, delay: 30 * time.Millisecond}, fakeCard{id: "b", experts: all, delay: 30 * time.Millisecond})
		m := fm.newMesh(t, MeshConfig{HedgeFactor: 3})
		forwardTimes(t, m, 30, x, r, hidden, want)
		if med := m.tab.fastestMedian(); med < 30*time.Millisecond {
			t.Fatalf("fastest median %v, want the cards' 30ms at least", med)
		}
		// An answer past 3 medians (90ms) on a busy machine may still hedge now and then;
		// a fixed delay below the cards' time would hedge nearly every one of ~60 sends.
		if _, h, _ := m.stats.snapshot(); h[hedgeWon]+h[hedgeLost]+h[hedgeFailed] > 5 {
			t.Errorf("hedges %v with every card equally slow", h)
		}
	})
}

// TestLayerDeadlineBoundsRequests: a card that hangs fails the step at the layer deadline,
// well before the attempt timeout, with a timeout; the step keeps its deadline as a time,
// not a context, so this is what bounds each request.
func TestLayerDeadlineBoundsRequests(t *testing.T) {
	fm := startFakeMesh(t, fakeCard{id: "hung", experts: []int{0, 1, 2, 3, 4, 5, 6, 7}, delay: time.Minute})
	m := fm.newMesh(t, MeshConfig{LayerTimeout: 300 * time.Millisecond, AttemptTimeout: 10 * time.Second})
	const hidden = 16
	x, r := testRouting(1, 4, hidden)
	out := make([]float32, len(x))
	start := time.Now()
	err := m.Forward(context.Background(), 1, x, hidden, r, out)
	took := time.Since(start)
	if err == nil || !errors.Is(err, mesh.ErrTimeout) {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if took < 250*time.Millisecond || took > 3*time.Second {
		t.Fatalf("failed after %v: want about the 300ms layer deadline (attempt timeout 10s)", took)
	}
}
