package placement

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/moemesh/moemesh/model"
)

func k(l, e int) model.ExpertKey { return model.ExpertKey{Layer: l, Expert: e} }

func cards(n int, capacity int64) []Card {
	out := make([]Card, n)
	for i := range out {
		out[i] = Card{ID: fmt.Sprintf("c%d", i), Capacity: capacity}
	}
	return out
}

// zipf is a load of s^-1.2 over the experts of each layer (expert 0 hottest).
func zipf(layers []int, experts int, scale float64) map[model.ExpertKey]float64 {
	m := map[model.ExpertKey]float64{}
	for _, l := range layers {
		for e := 0; e < experts; e++ {
			m[k(l, e)] = scale / math.Pow(float64(e+1), 1.2)
		}
	}
	return m
}

// check verifies what every plan must hold and returns per-card expert counts.
func check(t *testing.T, in Input, p *Plan) map[string]int {
	t.Helper()
	counts := map[string]int{}
	replicas := map[model.ExpertKey]int{}
	byID := map[string]Card{}
	for _, c := range in.Cards {
		byID[c.ID] = c
	}
	for id, ks := range p.Assign {
		c, ok := byID[id]
		if !ok {
			t.Fatalf("plan assigns to unknown card %s", id)
		}
		if !slices.IsSortedFunc(ks, keyCmp) || len(slices.CompactFunc(slices.Clone(ks), func(a, b model.ExpertKey) bool { return a == b })) != len(ks) {
			t.Fatalf("card %s: experts not sorted and unique: %v", id, ks)
		}
		if c.Capacity > 0 && int64(len(ks))*in.ExpertBytes > c.Capacity {
			t.Fatalf("card %s holds %d experts of %d bytes, capacity %d", id, len(ks), in.ExpertBytes, c.Capacity)
		}
		counts[id] = len(ks)
		for _, x := range ks {
			replicas[x]++
		}
	}
	minR := max(in.MinReplicas, 1)
	for _, l := range in.Layers {
		for e := 0; e < in.Experts; e++ {
			x := k(l, e)
			if replicas[x] != p.Replicas[x] {
				t.Fatalf("expert %v: %d replicas assigned, plan says %d", x, replicas[x], p.Replicas[x])
			}
			if replicas[x] < minR && !slices.Contains(p.Unplaced, x) {
				t.Fatalf("expert %v has %d replicas (< %d) and is not reported unplaced", x, replicas[x], minR)
			}
		}
	}
	return counts
}

func current(p *Plan, in []Card) []Card {
	out := slices.Clone(in)
	for i := range out {
		out[i].Current = p.Assign[out[i].ID]
	}
	return out
}

func spread(counts map[string]int) int {
	lo, hi := math.MaxInt, 0
	for _, n := range counts {
		lo, hi = min(lo, n), max(hi, n)
	}
	return hi - lo
}

func TestComputeInitial(t *testing.T) {
	for _, tc := range []struct {
		name       string
		in         Input
		maxSpread  int // of expert counts per card
		unplaced   int
		minPerExp  int
		hotGetMore bool
	}{
		{"balanced, no load", Input{Cards: cards(3, 0), Layers: []int{1, 2}, Experts: 8, ExpertBytes: 100}, 1, 0, 1, false},
		{"min replicas 2", Input{Cards: cards(3, 0), Layers: []int{1}, Experts: 8, ExpertBytes: 100, MinReplicas: 2}, 1, 0, 2, false},
		{"memory bound fits exactly", Input{Cards: cards(3, 400), Layers: []int{0}, Experts: 12, ExpertBytes: 100}, 0, 0, 1, false},
		{"memory too small", Input{Cards: cards(2, 350), Layers: []int{0}, Experts: 8, ExpertBytes: 100}, 0, 2, 0, false},
		{"zipf load", Input{Cards: cards(4, 0), Layers: []int{1}, Experts: 16, ExpertBytes: 100, Load: zipf([]int{1}, 16, 1000)}, 3, 0, 1, true},
		{"zipf load, memory bound", Input{Cards: cards(4, 600), Layers: []int{1}, Experts: 16, ExpertBytes: 100, Load: zipf([]int{1}, 16, 1000)}, 1, 0, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Compute(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			counts := check(t, tc.in, p)
			if s := spread(counts); s > tc.maxSpread {
				t.Errorf("expert counts per card %v: spread %d > %d", counts, s, tc.maxSpread)
			}
			if len(p.Unplaced) != tc.unplaced {
				t.Errorf("unplaced %v, want %d", p.Unplaced, tc.unplaced)
			}
			for x, r := range p.Replicas {
				if r < tc.minPerExp {
					t.Errorf("expert %v: %d replicas, want >= %d", x, r, tc.minPerExp)
				}
			}
			if tc.hotGetMore {
				hot, cold := p.Replicas[k(1, 0)], p.Replicas[k(1, 15)]
				if hot <= cold || hot < 2 {
					t.Errorf("hottest expert has %d replicas, coldest %d", hot, cold)
				}
				// Load per card is balanced within a factor of 2.
				w := map[string]float64{}
				for id, ks := range p.Assign {
					for _, x := range ks {
						w[id] += tc.in.Load[x] / float64(p.Replicas[x])
					}
				}
				lo, hi := math.Inf(1), 0.0
				for _, v := range w {
					lo, hi = min(lo, v), max(hi, v)
				}
				if hi > 2*lo {
					t.Errorf("card loads %v: max over min %.2f", w, hi/lo)
				}
			}
		})
	}
}

func TestComputeStableAndHysteresis(t *testing.T) {
	layers := []int{1}
	in := Input{Cards: cards(3, 0), Layers: layers, Experts: 16, ExpertBytes: 100, Load: zipf(layers, 16, 1000)}
	p1, err := Compute(in)
	if err != nil {
		t.Fatal(err)
	}
	check(t, in, p1)
	// The same input with the plan as current: nothing changes.
	in.Cards = current(p1, in.Cards)
	for _, jitter := range []float64{1, 1.1, 0.9} {
		in2 := in
		in2.Load = map[model.ExpertKey]float64{}
		for x, v := range in.Load {
			if x.Expert%2 == 0 {
				v *= jitter
			} else {
				v /= jitter
			}
			in2.Load[x] = v
		}
		p2, err := Compute(in2)
		if err != nil {
			t.Fatal(err)
		}
		check(t, in2, p2)
		for id := range p1.Assign {
			if !slices.Equal(p1.Assign[id], p2.Assign[id]) {
				t.Errorf("load jitter %.1f moved experts on %s: %v → %v", jitter, id, p1.Assign[id], p2.Assign[id])
			}
		}
	}
	// A big shift of load (the coldest expert becomes the hottest) does change the plan.
	in3 := in
	in3.Load = zipf(layers, 16, 1000)
	in3.Load[k(1, 15)] = 5000
	p3, _ := Compute(in3)
	check(t, in3, p3)
	if p3.Replicas[k(1, 15)] < 2 {
		t.Errorf("newly hot expert has %d replicas", p3.Replicas[k(1, 15)])
	}
}

func TestComputeCardLost(t *testing.T) {
	in := Input{Cards: cards(3, 0), Layers: []int{1, 2}, Experts: 8, ExpertBytes: 100}
	p1, err := Compute(in)
	if err != nil {
		t.Fatal(err)
	}
	survivors := current(p1, in.Cards)[:2]
	in2 := Input{Cards: survivors, Layers: in.Layers, Experts: 8, ExpertBytes: 100}
	p2, err := Compute(in2)
	if err != nil {
		t.Fatal(err)
	}
	counts := check(t, in2, p2)
	if len(p2.Unplaced) != 0 {
		t.Fatalf("unplaced after losing a card: %v", p2.Unplaced)
	}
	// Survivors keep what they had; the lost card's experts are spread over them.
	for _, c := range survivors {
		for _, x := range c.Current {
			if !slices.Contains(p2.Assign[c.ID], x) {
				t.Errorf("card %s lost expert %v it held", c.ID, x)
			}
		}
	}
	if s := spread(counts); s > 1 {
		t.Errorf("counts %v after re-placing", counts)
	}
	// A new card joining an unbalanced mesh takes a share (bounded by MaxMoves per round).
	in3 := Input{Cards: append(current(p2, survivors), Card{ID: "new"}), Layers: in.Layers, Experts: 8, ExpertBytes: 100}
	p3, _ := Compute(in3)
	check(t, in3, p3)
	if len(p3.Assign["new"]) < 4 {
		t.Errorf("a joining card got %d experts", len(p3.Assign["new"]))
	}
}

func TestComputeErrors(t *testing.T) {
	for name, in := range map[string]Input{
		"no cards":     {Layers: []int{0}, Experts: 2, ExpertBytes: 1},
		"no experts":   {Cards: cards(1, 0), Layers: []int{0}, ExpertBytes: 1},
		"no size":      {Cards: cards(1, 0), Layers: []int{0}, Experts: 2},
		"card twice":   {Cards: append(cards(1, 0), cards(1, 0)...), Layers: []int{0}, Experts: 2, ExpertBytes: 1},
		"layers empty": {Cards: cards(1, 0), Experts: 2, ExpertBytes: 1},
	} {
		if _, err := Compute(in); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
