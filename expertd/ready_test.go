package expertd

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
)

// CheckReady is what a Kubernetes readiness probe sees: each state a daemon passes through
// must give its own answer, and only a serving, connected daemon with its leases written
// and nothing loading is ready.
func TestCheckReady(t *testing.T) {
	e := newReconcileEnv(t)
	be, err := ascend.Open("cpu")
	if err != nil {
		t.Fatal(err)
	}
	// Its own connection, so that closing it (the last case) leaves the env's alone.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, err := mesh.Connect(ctx, e.nc.ConnectedUrl(), t.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	d, err := New(Config{Model: "m", ModelDir: e.dir, Daemon: "rdy", Backend: be,
		Cards:     []CardConfig{{ID: "rdy-c0", Device: 40, Experts: []model.ExpertKey{{Layer: e.layer, Expert: 0}}}},
		Heartbeat: 200 * time.Millisecond, Logger: discard()}, nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.CheckReady(); err == nil || !strings.Contains(err.Error(), "not serving") {
		t.Fatalf("before Run: CheckReady = %v, want not serving", err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	defer func() {
		stop()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("daemon did not stop")
		}
	}()
	select {
	case <-d.Ready():
	case err := <-done:
		t.Fatalf("daemon stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("daemon not ready")
	}
	c := d.cards[0]
	set := func(beats int64, states map[model.ExpertKey]uint8) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.beats, c.states = beats, states
	}
	for _, tc := range []struct {
		name   string
		beats  int64
		states map[model.ExpertKey]uint8
		want   string // "" = ready
	}{
		{"serving", 1, map[model.ExpertKey]uint8{}, ""},
		{"no lease yet", 0, map[model.ExpertKey]uint8{}, "no lease"},
		{"loading", 3, map[model.ExpertKey]uint8{{Layer: e.layer, Expert: 1}: proto.StateLoading}, "loading 1 experts"},
		{"draining one", 3, map[model.ExpertKey]uint8{{Layer: e.layer, Expert: 0}: proto.StateDraining}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The heartbeat goroutine counts beats up concurrently, which only helps the
			// ready cases; "no lease yet" can lose that race, so it gets a few tries (a
			// CheckReady that ignores leases fails every one).
			var err error
			for try := 0; try < 10; try++ {
				set(tc.beats, tc.states)
				if err = d.CheckReady(); err != nil || tc.beats > 0 {
					break
				}
			}
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckReady = %v, want ready", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckReady = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	set(1, map[model.ExpertKey]uint8{})
	nc.Close()
	if err := d.CheckReady(); err == nil || !strings.Contains(err.Error(), "NATS not connected") {
		t.Fatalf("after the connection closed: CheckReady = %v, want NATS not connected", err)
	}
}
