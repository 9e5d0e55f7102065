package router

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
)

// signalHandler closes ch at the first record whose message is msg.
type signalHandler struct {
	slog.Handler
	msg string
	ch  chan struct{}
}

func (h *signalHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *signalHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		select {
		case <-h.ch:
		default:
			close(h.ch)
		}
	}
	return nil
}

// TestForwardWaitsForReplica: with a placement controller holding the leader lease, a step
// needing an expert with no replica waits for one to appear (as the controller re-places a
// lost expert) and then completes; with none appearing it fails with ErrNoReplica at the
// layer deadline. Without a controller nobody will place it: the step fails at once.
func TestForwardWaitsForReplica(t *testing.T) {
	fm := startFakeMesh(t, fakeCard{id: "a", experts: []int{1, 2, 3, 4, 5, 6, 7}})
	waiting := &signalHandler{msg: "waiting for a replica", ch: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// No controller: ErrNoReplica at once.
	static, err := NewMesh(ctx, dial(t, fm.url, "static"), MeshConfig{Model: fm.model, Experts: 8,
		Mode: proto.ModePairs, Wire: proto.F32, LayerTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(static.Close)
	if err := static.WaitFor(ctx, []model.ExpertKey{{Layer: 1, Expert: 1}}); err != nil {
		t.Fatal(err)
	}
	const hidden = 8
	x, r := testRouting(5, 4, hidden)
	r.Experts[0] = 0 // expert 0 has no replica yet
	out := make([]float32, len(x))
	start := time.Now()
	if err := static.Forward(ctx, 1, x, hidden, r, out); !errors.Is(err, ErrNoReplica) || time.Since(start) > 2*time.Second {
		t.Fatalf("without a controller: %v after %v, want ErrNoReplica at once", err, time.Since(start))
	}

	// A controller holds the leader lease from here on.
	reg, err := mesh.OpenRegistry(ctx, dial(t, fm.url, "controller"), fm.model, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	lctx, stopLeader := context.WithCancel(context.Background())
	elected, campaigned := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(campaigned)
		_ = reg.Campaign(lctx, "ctl", 5*time.Second, func(c context.Context) { close(elected); <-c.Done() })
	}()
	t.Cleanup(func() { stopLeader(); <-campaigned })
	select {
	case <-elected:
	case <-ctx.Done():
		t.Fatal("never elected")
	}
	m, err := NewMesh(ctx, dial(t, fm.url, "router"), MeshConfig{Model: fm.model, Experts: 8,
		Mode: proto.ModePairs, Wire: proto.F32, LayerTimeout: 5 * time.Second, Logger: slog.New(waiting)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	if err := m.WaitFor(ctx, []model.ExpertKey{{Layer: 1, Expert: 1}}); err != nil {
		t.Fatal(err)
	}
	want := wantOutput(t, x, r, hidden)
	done := make(chan error, 1)
	go func() { done <- m.Forward(ctx, 1, x, hidden, r, out) }()
	select {
	case <-waiting.ch:
	case err := <-done:
		t.Fatalf("Forward returned %v before a replica of expert 0 existed", err)
	case <-ctx.Done():
		t.Fatal("Forward never waited for a replica")
	}
	fm.add(t, fakeCard{id: "b", experts: []int{0}})
	if err := <-done; err != nil {
		t.Fatalf("Forward after the replica appeared: %v", err)
	}
	if !slices.EqualFunc(out, want, func(a, b float32) bool { return a == b }) {
		t.Fatalf("output differs from the reference:\n got %v\nwant %v", out, want)
	}

	// Expert 0 on no card at all, and a short deadline: ErrNoReplica once it passes.
	r.Experts[0] = 0
	m2, err := NewMesh(ctx, dial(t, fm.url, "router2"), MeshConfig{Model: fm.model, Experts: 8,
		Mode: proto.ModePairs, Wire: proto.F32, LayerTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m2.Close)
	if err := m2.WaitFor(ctx, []model.ExpertKey{{Layer: 1, Expert: 1}}); err != nil {
		t.Fatal(err)
	}
	m2.tab.update(fm.model, "b", status("b", nil, 0)) // b dropped expert 0
	start = time.Now()
	err = m2.Forward(ctx, 1, x, hidden, r, out)
	if !errors.Is(err, ErrNoReplica) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrNoReplica at the deadline", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("failed after %v, before the 200ms layer deadline", d)
	}
}
