package expertd

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
)

// runDaemon starts a daemon with one card holding experts of the env's layer and returns
// its cancel and the channel Run's result arrives on; the test stops it by cancel.
func (e *reconcileEnv) runDaemon(t *testing.T, id string, leaveWait time.Duration, experts ...int) (context.CancelFunc, <-chan error) {
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
		Cards:     []CardConfig{{ID: id + "-c0", Device: 20 + len(id), Experts: keys}},
		Heartbeat: 200 * time.Millisecond, LeaveWait: leaveWait, Logger: discard()}, e.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() { defer close(finished); done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(30 * time.Second):
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
	return cancel, done
}

// lead holds the registry's leader lease as a stand-in controller until the test ends.
func (e *reconcileEnv) lead(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	elected := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.reg.Campaign(ctx, "ctl", time.Second, func(lctx context.Context) { close(elected); <-lctx.Done() })
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-elected:
	case <-time.After(5 * time.Second):
		t.Fatal("stand-in controller not elected")
	}
}

// A managed daemon told to stop keeps serving under a leaving lease until its experts are
// ready on a card that stays, then drains; with nobody to place them it does not wait.
func TestLeaveWaitsForReplicas(t *testing.T) {
	for _, tc := range []struct {
		name      string
		leader    bool // a controller holds the leader lease
		replicaAt time.Duration
		wantWait  bool
	}{
		{"replicas appear", true, time.Second, true},
		{"no controller", false, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newReconcileEnv(t)
			if tc.leader {
				e.lead(t)
			}
			// Another card stays, holding nothing yet.
			w, err := mesh.OpenRegistry(context.Background(), e.nc, "m", 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			other := func(experts ...int) {
				t.Helper()
				st := &proto.CardStatus{V: proto.Version, Card: "other-c0", Daemon: "other", Beat: time.Now().UnixNano()}
				for _, x := range experts {
					st.Experts = append(st.Experts, proto.ExpertState{Layer: int32(e.layer), Expert: int32(x), State: proto.StateReady})
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				if err := w.PutCard(ctx, st); err != nil {
					t.Fatal(err)
				}
			}
			other()
			stop, done := e.runDaemon(t, "lv", 20*time.Second, 0, 1)
			e.assign(t, "lv-c0", 0, 1) // managed: the controller's assignment
			l := &leaseLog{states: map[[2]int32][]uint8{}}
			wctx, wcancel := context.WithCancel(context.Background())
			defer wcancel()
			if err := e.reg.WatchCards(wctx, func(id string, st *proto.CardStatus) {
				if id == "lv-c0" {
					l.fn(id, st)
				}
			}); err != nil {
				t.Fatal(err)
			}
			waitCond(t, 5*time.Second, l.ready(e.layer, 0, 1))

			stopped := time.Now()
			stop()
			if !tc.wantWait {
				select {
				case err := <-done:
					if err != nil {
						t.Fatal(err)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("a daemon with no controller to move its experts kept waiting")
				}
				t.Logf("stopped %v after the signal", time.Since(stopped).Round(time.Millisecond))
				return
			}
			// A condition wait: a loaded machine (CI runs packages side by side) may take a
			// while to publish the lease; a passing run does not wait longer for it.
			waitCond(t, 10*time.Second, func() error {
				l.mu.Lock()
				defer l.mu.Unlock()
				if l.last == nil || !l.last.Leaving || l.last.Draining {
					return fmt.Errorf("lease %+v, want leaving and not draining", l.last)
				}
				return nil
			})
			// Still serving while it waits.
			if c := e.ask(t, "lv-c0", 1); c != 0 {
				t.Fatalf("a leaving card answered code %v", c)
			}
			select {
			case err := <-done:
				t.Fatalf("the daemon stopped (%v) before its experts were ready elsewhere", err)
			case <-time.After(tc.replicaAt):
			}
			other(0, 1)
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the daemon did not stop once its experts were ready elsewhere")
			}
			if took := time.Since(stopped); took < tc.replicaAt {
				t.Fatalf("stopped after %v, before the replicas appeared", took)
			}
			t.Logf("stopped %v after the signal, %v after the replicas appeared", time.Since(stopped).Round(time.Millisecond), (time.Since(stopped) - tc.replicaAt).Round(time.Millisecond))
		})
	}
}

// The lease reports the card's busy time: nothing before work, then the compute time of
// the batches it ran.
func TestLeaseBusyTime(t *testing.T) {
	e := newReconcileEnv(t)
	l := e.start(t, "bz", 0, 0, 1)
	waitCond(t, 3*time.Second, l.ready(e.layer, 0, 1))
	l.mu.Lock()
	before := l.last.BusyNanos
	l.mu.Unlock()
	if before != 0 {
		t.Fatalf("idle card reports %d ns busy", before)
	}
	for range 20 {
		if c := e.ask(t, "bz-c0", 1); c != 0 {
			t.Fatalf("batch: code %v", c)
		}
	}
	waitCond(t, 3*time.Second, func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.last.BusyNanos <= 0 {
			return errors.New("no busy time after 20 batches")
		}
		if l.last.Busy < 0 || l.last.Busy > 1 {
			return fmt.Errorf("busy fraction %g", l.last.Busy)
		}
		return nil
	})
}
