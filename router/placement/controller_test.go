package placement

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/proto"
)

func waitFor(t *testing.T, d time.Duration, fn func() error) {
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

// The controller moves experts make-before-break: a card keeps an expert it is to lose
// until the expert is ready on its new card.
func TestControllerMakeBeforeBreak(t *testing.T) {
	s, err := mesh.StartServer(mesh.ServerConfig{Host: "127.0.0.1", Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := mesh.Connect(ctx, s.ClientURL(), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	daemon, err := mesh.OpenRegistry(ctx, nc, "m", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	const experts = 8
	lease := func(id string, ready ...int) {
		t.Helper()
		st := &proto.CardStatus{V: proto.Version, Card: id, Daemon: "d-" + id, Beat: time.Now().UnixNano()}
		for _, e := range ready {
			st.Experts = append(st.Experts, proto.ExpertState{Layer: 1, Expert: int32(e), State: proto.StateReady})
		}
		if err := daemon.PutCard(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	all := []int{0, 1, 2, 3, 4, 5, 6, 7}
	lease("a", all...) // static: every expert
	lease("b")         // empty

	var mu sync.Mutex
	assigned := map[string][]int{}
	if err := daemon.WatchAssigns(ctx, func(id string, a *proto.Assignment) {
		mu.Lock()
		defer mu.Unlock()
		var es []int
		if a != nil {
			for _, e := range a.Experts {
				es = append(es, int(e.Expert))
			}
		}
		assigned[id] = es
	}); err != nil {
		t.Fatal(err)
	}
	get := func(id string) []int {
		mu.Lock()
		defer mu.Unlock()
		return assigned[id]
	}

	ctl, err := NewController(ControllerConfig{Model: "m", ID: "ctl", Layers: []int{1}, Experts: experts, ExpertBytes: 100,
		Interval: 200 * time.Millisecond, Settle: 50 * time.Millisecond}, nc)
	if err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ctl.Run(cctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	}()

	// b is given half; a keeps all until b serves them.
	waitFor(t, 5*time.Second, func() error {
		if a, b := get("a"), get("b"); len(a) != experts || len(b) != experts/2 {
			return fmt.Errorf("assignments a %v, b %v", a, b)
		}
		return nil
	})
	// Several rounds later nothing has changed: b's experts are not ready yet.
	a0 := get("a")
	time.Sleep(3 * 200 * time.Millisecond) // rounds pass; there is no event to wait on
	if a := get("a"); len(a) != experts {
		t.Fatalf("a dropped experts before b served them: %v (was %v)", a, a0)
	}
	// b reports them ready: a drops them.
	lease("b", get("b")...)
	waitFor(t, 5*time.Second, func() error {
		a, b := get("a"), get("b")
		if len(a) != experts/2 || len(b) != experts/2 {
			return fmt.Errorf("assignments a %v, b %v", a, b)
		}
		for _, e := range a {
			for _, f := range b {
				if e == f {
					return fmt.Errorf("expert %d on both a %v and b %v", e, a, b)
				}
			}
		}
		return nil
	})
}

// A card whose lease says leaving is planned out: its experts are assigned to the cards
// that stay, while its own assignment is left alone (it keeps serving until it drains).
func TestControllerEvacuatesLeavingCard(t *testing.T) {
	s, err := mesh.StartServer(mesh.ServerConfig{Host: "127.0.0.1", Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := mesh.Connect(ctx, s.ClientURL(), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	daemon, err := mesh.OpenRegistry(ctx, nc, "m", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	const experts = 8
	lease := func(id string, leaving bool, ready ...int) {
		t.Helper()
		st := &proto.CardStatus{V: proto.Version, Card: id, Daemon: "d-" + id, Beat: time.Now().UnixNano(), Leaving: leaving}
		for _, e := range ready {
			st.Experts = append(st.Experts, proto.ExpertState{Layer: 1, Expert: int32(e), State: proto.StateReady})
		}
		if err := daemon.PutCard(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	lease("a", false, 0, 1, 2, 3)
	lease("b", false, 4, 5, 6, 7)
	var mu sync.Mutex
	assigned := map[string][]int{}
	if err := daemon.WatchAssigns(ctx, func(id string, a *proto.Assignment) {
		mu.Lock()
		defer mu.Unlock()
		var es []int
		if a != nil {
			for _, e := range a.Experts {
				es = append(es, int(e.Expert))
			}
		}
		assigned[id] = es
	}); err != nil {
		t.Fatal(err)
	}
	get := func(id string) []int {
		mu.Lock()
		defer mu.Unlock()
		return assigned[id]
	}
	ctl, err := NewController(ControllerConfig{Model: "m", ID: "ctl", Layers: []int{1}, Experts: experts, ExpertBytes: 100,
		Interval: 200 * time.Millisecond, Settle: 50 * time.Millisecond}, nc)
	if err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ctl.Run(cctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	}()
	waitFor(t, 5*time.Second, func() error {
		if a, b := get("a"), get("b"); len(a) != experts/2 || len(b) != experts/2 {
			return fmt.Errorf("assignments a %v, b %v", a, b)
		}
		return nil
	})
	aBefore := get("a")
	lease("a", true, 0, 1, 2, 3)
	waitFor(t, 5*time.Second, func() error {
		if b := get("b"); len(b) != experts {
			return fmt.Errorf("b is assigned %v, want every expert", b)
		}
		return nil
	})
	if a := get("a"); fmt.Sprint(a) != fmt.Sprint(aBefore) {
		t.Fatalf("the leaving card's assignment changed from %v to %v", aBefore, a)
	}
}
