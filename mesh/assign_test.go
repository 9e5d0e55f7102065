package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moemesh/moemesh/proto"
)

// assignView records what a WatchAssign callback was told.
type assignView struct {
	mu   sync.Mutex
	last *proto.Assignment
	n    int
}

func (v *assignView) fn(a *proto.Assignment) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.last, v.n = a, v.n+1
}

// holds returns a waitFor condition: the latest value lists exactly experts (nil: deleted).
func (v *assignView) holds(experts ...proto.ExpertRef) func() error {
	return func() error {
		v.mu.Lock()
		defer v.mu.Unlock()
		switch {
		case experts == nil && v.last == nil:
			return nil
		case experts == nil:
			return fmt.Errorf("assignment %+v, want none", v.last.Experts)
		case v.last == nil:
			return fmt.Errorf("no assignment, want %+v", experts)
		case !slices.Equal(v.last.Experts, experts):
			return fmt.Errorf("assignment %+v, want %+v", v.last.Experts, experts)
		}
		return nil
	}
}

func ref(l, e int32) proto.ExpertRef { return proto.ExpertRef{Layer: l, Expert: e} }

func TestAssignPutGetWatch(t *testing.T) {
	s := startServer(t, ServerConfig{})
	nc := connect(t, s.ClientURL())
	r := openRegistry(t, nc, "m", 0) // the controller writes assignments from a read-only registry

	if a, err := r.GetAssign(timeout(t, 2*time.Second), "c1"); a != nil || err != nil {
		t.Fatalf("no assignment yet: got %+v, %v", a, err)
	}
	v := &assignView{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := r.WatchAssign(ctx, "c1", v.fn); err != nil {
		t.Fatal(err)
	}
	if v.n != 0 {
		t.Fatalf("callback ran %d times without an assignment", v.n)
	}
	// Stored sorted and deduplicated; another card's key is not seen.
	if err := r.PutAssign(timeout(t, 2*time.Second), &proto.Assignment{Card: "c1", Experts: proto.ExpertRefs{ref(2, 1), ref(1, 5), ref(1, 5)}}); err != nil {
		t.Fatal(err)
	}
	if err := r.PutAssign(timeout(t, 2*time.Second), &proto.Assignment{Card: "c2", Experts: proto.ExpertRefs{ref(9, 9)}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, v.holds(ref(1, 5), ref(2, 1)))
	got, err := r.GetAssign(timeout(t, 2*time.Second), "c1")
	if err != nil || got == nil || len(got.Experts) != 2 {
		t.Fatalf("GetAssign: %+v, %v", got, err)
	}
	// A second watcher starting now is given the current value before WatchAssign returns.
	v2 := &assignView{}
	if err := r.WatchAssign(ctx, "c2", v2.fn); err != nil {
		t.Fatal(err)
	}
	if err := v2.holds(ref(9, 9))(); err != nil {
		t.Fatalf("after the initial sync: %v", err)
	}
	// An empty assignment is a value, not a deletion.
	if err := r.PutAssign(timeout(t, 2*time.Second), &proto.Assignment{Card: "c1"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, v.holds([]proto.ExpertRef{}...))
	if err := r.DeleteAssign(timeout(t, 2*time.Second), "c1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, v.holds())
	if err := r.PutAssign(timeout(t, 2*time.Second), &proto.Assignment{Card: "bad.id"}); err == nil {
		t.Fatal("PutAssign took an invalid card id")
	}
	// A lease under the card key does not disturb the assignment watch and vice versa.
	all := map[string]int{}
	var mu sync.Mutex
	if err := r.WatchAssigns(ctx, func(id string, a *proto.Assignment) {
		mu.Lock()
		defer mu.Unlock()
		if a == nil {
			delete(all, id)
		} else {
			all[id] = len(a.Experts)
		}
	}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if !reflect.DeepEqual(all, map[string]int{"c2": 1}) {
		t.Errorf("WatchAssigns saw %v, want c2 only", all)
	}
	mu.Unlock()
}

func TestWatchAssignSurvivesRestart(t *testing.T) {
	port, dir := freePort(t), t.TempDir()
	s := startServer(t, ServerConfig{Port: port, StoreDir: dir})
	nc := connect(t, s.ClientURL())
	r := openRegistry(t, nc, "restart", 0, WithLogger(slog.New(slog.DiscardHandler)))
	v := &assignView{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := r.WatchAssign(ctx, "c1", v.fn); err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	startServer(t, ServerConfig{Port: port, StoreDir: dir})
	waitFor(t, 10*time.Second, func() error {
		return r.PutAssign(timeout(t, time.Second), &proto.Assignment{Card: "c1", Experts: proto.ExpertRefs{ref(0, 3)}})
	})
	waitFor(t, 10*time.Second, v.holds(ref(0, 3)))
}

func TestCampaign(t *testing.T) {
	s := startServer(t, ServerConfig{})
	type campaigner struct {
		id      string
		cancel  context.CancelFunc
		done    chan error
		leading atomic.Bool
		terms   atomic.Int32
	}
	var both atomic.Int32 // leaders at once, at most 1
	start := func(id string) *campaigner {
		nc := connect(t, s.ClientURL())
		r := openRegistry(t, nc, "lead", 0, WithLogger(slog.New(slog.DiscardHandler)))
		c := &campaigner{id: id, done: make(chan error, 1)}
		ctx, cancel := context.WithCancel(context.Background())
		c.cancel = cancel
		t.Cleanup(cancel)
		go func() {
			for {
				err := r.Campaign(ctx, id, time.Second, func(lctx context.Context) {
					if both.Add(1) > 1 {
						t.Errorf("%s leads while another does", id)
					}
					c.leading.Store(true)
					c.terms.Add(1)
					<-lctx.Done()
					c.leading.Store(false)
					both.Add(-1)
				})
				if err != nil {
					c.done <- err
					return
				}
			}
		}()
		return c
	}
	a := start("a")
	waitFor(t, 3*time.Second, func() error {
		if !a.leading.Load() {
			return errors.New("a does not lead")
		}
		return nil
	})
	reader := openRegistry(t, connect(t, s.ClientURL()), "lead", 0, WithLogger(slog.New(slog.DiscardHandler)))
	leader := func() string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		id, err := reader.Leader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	if id := leader(); id != "a" {
		t.Fatalf("Leader() = %q while a leads", id)
	}
	b := start("b")
	// b must not take over while a renews: the lease TTL is 1 s, wait several.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if b.leading.Load() || !a.leading.Load() {
			t.Fatalf("leadership moved while a renewed: a %v, b %v", a.leading.Load(), b.leading.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// a resigns: b takes over within a renewal period.
	resigned := time.Now()
	a.cancel()
	if err := <-a.done; !errors.Is(err, context.Canceled) {
		t.Fatalf("a's campaign ended with %v", err)
	}
	waitFor(t, 3*time.Second, func() error {
		if !b.leading.Load() {
			return errors.New("b does not lead")
		}
		return nil
	})
	t.Logf("b took over %v after a resigned", time.Since(resigned).Round(time.Millisecond))
	if id := leader(); id != "b" {
		t.Fatalf("Leader() = %q while b leads", id)
	}
	b.cancel()
	<-b.done
	if id := leader(); id != "" {
		t.Fatalf("Leader() = %q after every campaigner resigned", id)
	}
}

// A leader whose connection dies loses the lease to its TTL; another campaigner takes over.
func TestCampaignLeaderDies(t *testing.T) {
	s := startServer(t, ServerConfig{})
	ncA := connect(t, s.ClientURL())
	rA := openRegistry(t, ncA, "lead", 0, WithLogger(slog.New(slog.DiscardHandler)))
	rB := openRegistry(t, connect(t, s.ClientURL()), "lead", 0, WithLogger(slog.New(slog.DiscardHandler)))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	aLeads := make(chan struct{})
	aDone := make(chan error, 1)
	go func() {
		aDone <- rA.Campaign(ctx, "a", time.Second, func(lctx context.Context) { close(aLeads); <-lctx.Done() })
	}()
	select {
	case <-aLeads:
	case <-time.After(3 * time.Second):
		t.Fatal("a not elected")
	}
	ncA.Close() // a can no longer renew
	bLeads := make(chan struct{})
	died := time.Now()
	go func() {
		_ = rB.Campaign(ctx, "b", time.Second, func(lctx context.Context) { close(bLeads); <-lctx.Done() })
	}()
	select {
	case <-bLeads:
		t.Logf("b elected %v after a's connection closed", time.Since(died).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("b not elected within 5 s of a's death")
	}
	select {
	case err := <-aDone:
		if err != nil {
			t.Fatalf("a's campaign: %v, want nil (lost)", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a's campaign did not notice the lost lease")
	}
}
