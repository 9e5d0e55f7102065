package router

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
)

func status(id string, experts []int, queue int32) *proto.CardStatus {
	st := &proto.CardStatus{V: proto.Version, Card: id, Queue: queue, Beat: time.Now().UnixNano()}
	for _, e := range experts {
		st.Experts = append(st.Experts, proto.ExpertState{Layer: 1, Expert: int32(e), State: proto.StateReady})
	}
	return st
}

func testMesh(t *testing.T, cards map[string][]int) *Mesh {
	t.Helper()
	m := &Mesh{cfg: MeshConfig{Model: "m", Experts: 8}, tab: newTable(), rng: rand.New(rand.NewPCG(1, 1))}
	if err := m.cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	for id, ex := range cards {
		m.tab.update("m", id, status(id, ex, 0))
	}
	return m
}

func TestSplitRows(t *testing.T) {
	// 6 tokens × top-2 = 12 slots; a token's row costs hidden*2 + 2*8 + 8 bytes.
	slots := []int32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
	row := int64(100*2 + 2*8 + 8)
	cases := []struct {
		limit int64
		want  string
	}{
		{1 << 20, "[[0 1 2 3 4 5 6 7 8 9 10 11]]"},
		{2 * row, "[[0 1 2 3] [4 5 6 7] [8 9 10 11]]"},
		{row, "[[0 1] [2 3] [4 5] [6 7] [8 9] [10 11]]"},
		{1, "[[0 1] [2 3] [4 5] [6 7] [8 9] [10 11]]"}, // a token never splits, however small the limit
	}
	for _, c := range cases {
		if got := fmt.Sprint(splitRows(slots, 2, 100, 2, c.limit)); got != c.want {
			t.Errorf("limit %d: %s, want %s", c.limit, got, c.want)
		}
	}
	// A token's pairs stay together even when only some of its slots are on the card.
	if got := fmt.Sprint(splitRows([]int32{1, 2, 3, 5}, 2, 100, 2, row)); got != "[[1] [2 3] [5]]" {
		t.Errorf("partial tokens: %s", got)
	}
}

func TestPlanBuildsCSRBatchesPerCard(t *testing.T) {
	m := testMesh(t, map[string][]int{"a": {0, 1, 2, 3}, "b": {4, 5, 6, 7}})
	const hidden = 3
	x := []float32{0, 0, 0, 1, 1, 1, 2, 2, 2}
	r := model.Routing{TopK: 2, Experts: []int32{5, 1, 2, 3, 6, 4}, Weights: []float32{.1, .2, .3, .4, .5, .6}}
	sends, err := m.plan(1, x, hidden, r, []int32{5, 4, 3, 2, 1, 0}, map[*cardState]bool{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, s := range sends {
		b := s.batch
		if err := b.Validate(8); err != nil {
			t.Fatal(err)
		}
		xs, _ := b.X.F32(nil)
		got[s.card.id] = fmt.Sprint(b.RowPtr, b.Experts, b.Weights, b.Tokens, xs, s.slots)
	}
	want := map[string]string{
		// Card a: token 0 uses expert 1, token 1 uses 2 and 3; token 2 has nothing here.
		"a": "[0 1 3] [1 2 3] [0.2 0.3 0.4] [0 1] [0 0 0 1 1 1] [1 2 3]",
		"b": "[0 1 3] [5 6 4] [0.1 0.5 0.6] [0 2] [0 0 0 2 2 2] [0 4 5]",
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("card %s:\n got %s\nwant %s", id, got[id], w)
		}
	}
}

func TestPlanNoReplica(t *testing.T) {
	m := testMesh(t, map[string][]int{"a": {0, 1}})
	r := model.Routing{TopK: 1, Experts: []int32{0, 5}, Weights: []float32{1, 1}}
	_, err := m.plan(1, make([]float32, 4), 2, r, []int32{0, 1}, map[*cardState]bool{}, nil)
	if err == nil || !isNoReplica(err) {
		t.Fatalf("err = %v, want ErrNoReplica", err)
	}
}

func isNoReplica(err error) bool { return errors.Is(err, ErrNoReplica) }

func TestPickAvoidsFailedSuspectDrainingAndLoad(t *testing.T) {
	m := testMesh(t, map[string][]int{"a": {0}, "b": {0}, "c": {0}})
	k := model.ExpertKey{Layer: 1, Expert: 0}
	byID := func(id string) *cardState { return m.tab.cards[id] }

	// Power of two choices: with a heavily loaded, it is chosen far less than its third.
	byID("a").inflight.Store(1000)
	counts := map[string]int{}
	for i := 0; i < 3000; i++ {
		counts[m.tab.pick(k, nil, m.rng).id]++
	}
	if counts["a"] > 500 {
		t.Errorf("loaded card picked %d of 3000 times (%v)", counts["a"], counts)
	}
	byID("a").inflight.Store(0)

	failed := map[*cardState]bool{byID("a"): true}
	m.tab.markSuspect(byID("b"))
	for i := 0; i < 50; i++ {
		if c := m.tab.pick(k, failed, m.rng); c.id != "c" {
			t.Fatalf("picked %s with a failed and b suspect", c.id)
		}
	}
	// A newer heartbeat clears suspicion; draining excludes.
	fresh := status("b", []int{0}, 0)
	fresh.Beat = byID("b").suspectSince.Load() + 1
	m.tab.update("m", "b", fresh)
	st := status("c", []int{0}, 0)
	st.Draining = true
	m.tab.update("m", "c", st)
	for i := 0; i < 50; i++ {
		if c := m.tab.pick(k, failed, m.rng); c.id != "b" {
			t.Fatalf("picked %s, want b (a failed, c draining)", c.id)
		}
	}
	m.tab.update("m", "b", nil)
	if c := m.tab.pick(k, failed, m.rng); c != nil {
		t.Fatalf("picked %s with no usable replica", c.id)
	}
	// missing knows leases, not one step's failures: a still counts for expert 0.
	if miss := m.tab.missing([]model.ExpertKey{k, {Layer: 1, Expert: 1}}); fmt.Sprint(miss) != "[1/1]" {
		t.Fatalf("missing = %v", miss)
	}
}

// TestPlanBusyFallback: a busy replica (503/507) is avoided while another exists, and used
// again when only busy ones are left; a failed (silent) one never is within the step.
func TestPlanBusyFallback(t *testing.T) {
	m := testMesh(t, map[string][]int{"a": {0}, "b": {0}})
	a, b := m.tab.cards["a"], m.tab.cards["b"]
	r := model.Routing{TopK: 1, Experts: []int32{0}, Weights: []float32{1}}
	pickOnce := func(failed, busy map[*cardState]bool) (string, error) {
		sends, err := m.plan(1, make([]float32, 2), 2, r, []int32{0}, failed, busy)
		if err != nil {
			return "", err
		}
		return sends[0].card.id, nil
	}
	for i := 0; i < 20; i++ {
		if id, err := pickOnce(map[*cardState]bool{}, map[*cardState]bool{a: true}); err != nil || id != "b" {
			t.Fatalf("a busy: picked %q, %v", id, err)
		}
		if id, err := pickOnce(map[*cardState]bool{b: true}, map[*cardState]bool{a: true}); err != nil || id != "a" {
			t.Fatalf("a busy, b failed: picked %q, %v; want the busy one again", id, err)
		}
	}
	if _, err := pickOnce(map[*cardState]bool{a: true, b: true}, map[*cardState]bool{}); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("both failed: %v", err)
	}
}
