package expertd

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/synth"
	"github.com/moemesh/moemesh/proto"
)

// leaseLog records every lease of one card a watch saw.
type leaseLog struct {
	mu     sync.Mutex
	last   *proto.CardStatus
	states map[[2]int32][]uint8 // per (layer, expert): the distinct states seen, in order
}

func (l *leaseLog) fn(_ string, st *proto.CardStatus) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = st
	if st == nil {
		return
	}
	for _, e := range st.Experts {
		k := [2]int32{e.Layer, e.Expert}
		if s := l.states[k]; len(s) == 0 || s[len(s)-1] != e.State {
			l.states[k] = append(s, e.State)
		}
	}
}

// ready returns a waitFor condition: the lease lists exactly experts of layer, all ready.
func (l *leaseLog) ready(layer int, experts ...int) func() error {
	return func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.last == nil {
			return fmt.Errorf("no lease")
		}
		var got []int
		for _, e := range l.last.Experts {
			if e.State != proto.StateReady || int(e.Layer) != layer {
				return fmt.Errorf("lease lists %d/%d in state %d", e.Layer, e.Expert, e.State)
			}
			got = append(got, int(e.Expert))
		}
		slices.Sort(got)
		if !slices.Equal(got, experts) {
			return fmt.Errorf("lease lists experts %v of layer %d, want %v", got, layer, experts)
		}
		return nil
	}
}

func waitCond(t *testing.T, d time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type reconcileEnv struct {
	nc    *nats.Conn
	reg   *mesh.Registry
	dir   string
	mcfg  *model.Config
	layer int
}

func newReconcileEnv(t *testing.T) *reconcileEnv {
	t.Helper()
	s, err := mesh.StartServer(mesh.ServerConfig{Host: "127.0.0.1", Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, err := mesh.Connect(ctx, s.ClientURL(), t.Name())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	dir := t.TempDir()
	if _, err := synth.Write(dir, synth.Options{Arch: "qwen3_moe", Preset: "tiny", Seed: 3, DType: "f32"}); err != nil {
		t.Fatal(err)
	}
	mcfg, err := model.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := mesh.OpenRegistry(ctx, nc, "m", 0)
	if err != nil {
		t.Fatal(err)
	}
	return &reconcileEnv{nc: nc, reg: reg, dir: dir, mcfg: mcfg, layer: mcfg.MoELayers()[0]}
}

// start runs a daemon with one card holding experts (of the env's layer) statically.
func (e *reconcileEnv) start(t *testing.T, id string, budget int64, experts ...int) *leaseLog {
	t.Helper()
	be, err := ascend.Open("cpu")
	if err != nil {
		t.Fatal(err)
	}
	var keys []model.ExpertKey
	for _, x := range experts {
		keys = append(keys, model.ExpertKey{Layer: e.layer, Expert: x})
	}
	d, err := New(Config{Model: "m", ModelDir: e.dir, Daemon: id, Backend: be,
		Cards:     []CardConfig{{ID: id + "-c0", Device: 10 + len(id), Budget: budget, Experts: keys}},
		Heartbeat: 200 * time.Millisecond, Logger: discard()}, e.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("daemon %s: %v", id, err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("daemon %s did not stop", id)
		}
	})
	select {
	case <-d.Ready():
	case err := <-done:
		t.Fatalf("daemon %s stopped: %v", id, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("daemon %s not ready", id)
	}
	l := &leaseLog{states: map[[2]int32][]uint8{}}
	wctx, wcancel := context.WithCancel(context.Background())
	t.Cleanup(wcancel)
	if err := e.reg.WatchCards(wctx, func(cid string, st *proto.CardStatus) {
		if cid == id+"-c0" {
			l.fn(cid, st)
		}
	}); err != nil {
		t.Fatal(err)
	}
	return l
}

func (e *reconcileEnv) assign(t *testing.T, card string, experts ...int) {
	t.Helper()
	a := &proto.Assignment{Card: card, Experts: proto.ExpertRefs{}}
	for _, x := range experts {
		a.Experts = append(a.Experts, proto.ExpertRef{Layer: int32(e.layer), Expert: int32(x)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := e.reg.PutAssign(ctx, a); err != nil {
		t.Fatal(err)
	}
}

// ask sends a one-row batch for expert x to card and returns the error code (0: success).
func (e *reconcileEnv) ask(t *testing.T, card string, x int) proto.Code {
	t.Helper()
	b := proto.ExpertBatch{V: proto.Version, Layer: int32(e.layer), Mode: proto.ModeReduce, OutDType: proto.F32,
		RowPtr: proto.I32s{0, 1}, Experts: proto.I32s{int32(x)}, Weights: proto.F32s{1}}
	if err := b.X.SetF32(proto.F32, make([]float32, e.mcfg.Hidden), 1, int64(e.mcfg.Hidden)); err != nil {
		t.Fatal(err)
	}
	data, err := proto.Marshal(&b)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	msg := nats.NewMsg(proto.CardSubject("m", card))
	msg.Data = data
	msg.Header.Set(proto.HeaderDeadline, strconv.FormatInt(time.Now().Add(3*time.Second).UnixNano(), 10))
	if _, err := mesh.Request(ctx, e.nc, msg); err != nil {
		return proto.CodeOf(err)
	}
	return 0
}

func TestReconcileFollowsAssignment(t *testing.T) {
	e := newReconcileEnv(t)
	l := e.start(t, "r1", 0, 0, 1)
	// Static mode: no assignment, the flags' experts.
	waitCond(t, 3*time.Second, l.ready(e.layer, 0, 1))
	if c := e.ask(t, "r1-c0", 0); c != 0 {
		t.Fatalf("static expert 0: code %v", c)
	}

	e.assign(t, "r1-c0", 1, 2, 3)
	waitCond(t, 10*time.Second, l.ready(e.layer, 1, 2, 3))
	for x, want := range map[int]proto.Code{0: proto.CodeNotFound, 1: 0, 2: 0, 3: 0} {
		if c := e.ask(t, "r1-c0", x); c != want {
			t.Errorf("expert %d after reconcile: code %v, want %v", x, c, want)
		}
	}
	l.mu.Lock()
	removed := l.states[[2]int32{int32(e.layer), 0}]
	kept := l.states[[2]int32{int32(e.layer), 1}]
	l.mu.Unlock()
	// The removed expert was announced draining before it went; the kept one never was.
	if !slices.Equal(removed, []uint8{proto.StateReady, proto.StateDraining}) {
		t.Errorf("removed expert went through states %v, want ready then draining", removed)
	}
	if !slices.Equal(kept, []uint8{proto.StateReady}) {
		t.Errorf("kept expert went through states %v, want ready only", kept)
	}

	// An empty assignment empties the card.
	e.assign(t, "r1-c0")
	waitCond(t, 10*time.Second, l.ready(e.layer))
	l.mu.Lock()
	mem := l.last.MemUsed
	l.mu.Unlock()
	if mem != 0 {
		t.Errorf("an empty card uses %d bytes", mem)
	}
}

func TestReconcileRespectsBudget(t *testing.T) {
	e := newReconcileEnv(t)
	per := 3 * int64(e.mcfg.ExpertIntermediate) * int64(e.mcfg.Hidden) * 4 // f32
	l := e.start(t, "r2", per*5/2, 0)
	waitCond(t, 3*time.Second, l.ready(e.layer, 0))
	// Three more than fit: experts in (layer, expert) order until the budget is used up.
	e.assign(t, "r2-c0", 0, 4, 5, 6)
	waitCond(t, 10*time.Second, l.ready(e.layer, 0, 4))
	// The daemon keeps serving and does not retry on its own; a new assignment that fits
	// is applied.
	e.assign(t, "r2-c0", 5, 6)
	waitCond(t, 10*time.Second, l.ready(e.layer, 5, 6))
	if c := e.ask(t, "r2-c0", 6); c != 0 {
		t.Fatalf("expert 6: code %v", c)
	}
}
