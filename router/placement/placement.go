package placement

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/moemesh/moemesh/model"
)

// Card is one card as Plan sees it.
type Card struct {
	ID string
	// Capacity is how many bytes of experts the card may hold (its budget less what it
	// uses besides experts); 0 means unlimited.
	Capacity int64
	// Current is what the card holds or was last assigned; Plan keeps it where it can.
	Current []model.ExpertKey
}

// Input is everything Plan decides from.
type Input struct {
	Cards       []Card
	Layers      []int // the MoE layers
	Experts     int   // routed experts per layer
	ExpertBytes int64 // memory of one expert's weights on a card
	// Load is each expert's dispatched tokens over the recent window (absent: 0).
	Load map[model.ExpertKey]float64
	// MinReplicas is the fewest cards each expert is on (default 1).
	MinReplicas int
	// MaxReplicas caps a hot expert's replicas (default: the number of cards).
	MaxReplicas int
	// Share is the largest fraction of a card's fair share of the load one replica should
	// carry; an expert hotter than that gets more replicas (default 0.5).
	Share float64
	// Hysteresis is the relative load change below which replica counts and placements
	// stay as they are (default 0.25).
	Hysteresis float64
	// MaxMoves bounds how many replicas a plan moves between cards for balance (default
	// 1/8 of the replicas, at least 4).
	MaxMoves int
}

// Plan is a desired assignment.
type Plan struct {
	Assign   map[string][]model.ExpertKey // card id → experts, sorted
	Replicas map[model.ExpertKey]int      // replicas placed per expert
	// Unplaced lists experts with fewer than MinReplicas replicas for want of memory.
	Unplaced []model.ExpertKey
	Moves    int // replicas moved for balance
}

// ErrNoCards: there is no card to place experts on.
var ErrNoCards = errors.New("placement: no cards")

func keyCmp(a, b model.ExpertKey) int {
	if c := cmp.Compare(a.Layer, b.Layer); c != 0 {
		return c
	}
	return cmp.Compare(a.Expert, b.Expert)
}

type cardState struct {
	id    string
	slots int // experts it may hold; -1 unlimited
	held  map[model.ExpertKey]bool
	w     float64 // sum of the weights of the replicas it holds
}

func (c *cardState) full() bool { return c.slots >= 0 && len(c.held) >= c.slots }

// Compute returns the desired assignment for in.
func Compute(in Input) (*Plan, error) {
	if len(in.Cards) == 0 {
		return nil, ErrNoCards
	}
	if in.Experts <= 0 || len(in.Layers) == 0 {
		return nil, fmt.Errorf("placement: %d layers of %d experts", len(in.Layers), in.Experts)
	}
	if in.ExpertBytes <= 0 {
		return nil, fmt.Errorf("placement: expert size %d bytes", in.ExpertBytes)
	}
	if in.MinReplicas <= 0 {
		in.MinReplicas = 1
	}
	if in.MaxReplicas <= 0 || in.MaxReplicas > len(in.Cards) {
		in.MaxReplicas = len(in.Cards)
	}
	in.MinReplicas = min(in.MinReplicas, in.MaxReplicas)
	if in.Share <= 0 {
		in.Share = 0.5
	}
	if in.Hysteresis <= 0 {
		in.Hysteresis = 0.25
	}

	// The experts and their load.
	var keys []model.ExpertKey
	total := 0.0
	for _, l := range in.Layers {
		for e := 0; e < in.Experts; e++ {
			k := model.ExpertKey{Layer: l, Expert: e}
			keys = append(keys, k)
			total += max(0, in.Load[k])
		}
	}
	load := func(k model.ExpertKey) float64 { return max(0, in.Load[k]) }

	// Cards, sorted by id so the plan does not depend on input order.
	cards := make([]*cardState, 0, len(in.Cards))
	byID := map[string]*cardState{}
	totalSlots := 0
	for _, c := range in.Cards {
		if _, dup := byID[c.ID]; dup {
			return nil, fmt.Errorf("placement: card %q listed twice", c.ID)
		}
		cs := &cardState{id: c.ID, slots: -1, held: map[model.ExpertKey]bool{}}
		if c.Capacity > 0 {
			cs.slots = int(c.Capacity / in.ExpertBytes)
			totalSlots += cs.slots
		} else {
			totalSlots += len(keys)
		}
		cards = append(cards, cs)
		byID[c.ID] = cs
	}
	slices.SortFunc(cards, func(a, b *cardState) int { return cmp.Compare(a.id, b.id) })

	// Current placements on live cards.
	current := map[model.ExpertKey][]*cardState{}
	valid := map[model.ExpertKey]bool{}
	for _, k := range keys {
		valid[k] = true
	}
	for _, c := range in.Cards {
		for _, k := range c.Current {
			if valid[k] && !slices.Contains(current[k], byID[c.ID]) {
				current[k] = append(current[k], byID[c.ID])
			}
		}
	}

	// Replica counts: a replica should carry at most Share of a card's fair share of the
	// load; with the hysteresis band, a count only moves when the load has moved enough.
	unit := in.Share * total / float64(len(cards))
	replicas := map[model.ExpertKey]int{}
	sum := 0
	for _, k := range keys {
		r := in.MinReplicas
		if unit > 0 {
			// Keep the current count while each replica carries at most (1+h)·unit and
			// one replica fewer would not do with (1+h) of headroom.
			need := int(math.Ceil(load(k) / (unit * (1 + in.Hysteresis))))
			down := int(math.Ceil(load(k) * (1 + in.Hysteresis) / unit))
			cur := len(current[k])
			switch {
			case cur < need:
				r = int(math.Ceil(load(k) / unit))
			case cur > down:
				r = down
			default:
				r = cur
			}
		}
		r = min(max(r, in.MinReplicas), in.MaxReplicas)
		replicas[k] = r
		sum += r
	}
	// Not enough memory for every extra replica: take extras from the coolest experts first.
	if sum > totalSlots {
		byCool := slices.Clone(keys)
		slices.SortStableFunc(byCool, func(a, b model.ExpertKey) int {
			return cmp.Compare(load(a)/float64(replicas[a]), load(b)/float64(replicas[b]))
		})
		for changed := true; sum > totalSlots && changed; {
			changed = false
			for _, k := range byCool {
				if sum <= totalSlots {
					break
				}
				if replicas[k] > in.MinReplicas {
					replicas[k]--
					sum--
					changed = true
				}
			}
		}
	}

	// A replica's weight: its share of the expert's load, plus a small constant so that
	// with no load the experts' count is balanced.
	base := 1.0
	if total > 0 {
		base = 0.05 * total / float64(sum)
	}
	weight := func(k model.ExpertKey) float64 { return load(k)/float64(replicas[k]) + base }
	place := func(c *cardState, k model.ExpertKey) {
		c.held[k] = true
		c.w += weight(k)
	}
	unplace := func(c *cardState, k model.ExpertKey) {
		delete(c.held, k)
		c.w -= weight(k)
	}

	// Hot experts first: they are the ones that most need a place.
	order := slices.Clone(keys)
	slices.SortStableFunc(order, func(a, b model.ExpertKey) int { return cmp.Compare(load(b), load(a)) })

	// 1. Keep current replicas (up to the count), on the least loaded of their cards.
	for _, k := range order {
		cs := slices.Clone(current[k])
		slices.SortFunc(cs, func(a, b *cardState) int { return cmp.Compare(a.w, b.w) })
		kept := 0
		for _, c := range cs {
			if kept < replicas[k] && !c.full() {
				place(c, k)
				kept++
			}
		}
	}
	// 2. Place the missing replicas on the least loaded cards with room.
	plan := &Plan{Assign: map[string][]model.ExpertKey{}, Replicas: map[model.ExpertKey]int{}}
	for _, k := range order {
		have := 0
		for _, c := range cards {
			if c.held[k] {
				have++
			}
		}
		for ; have < replicas[k]; have++ {
			var best *cardState
			for _, c := range cards {
				if c.held[k] || c.full() {
					continue
				}
				if best == nil || c.w < best.w || (c.w == best.w && len(c.held) < len(best.held)) {
					best = c
				}
			}
			if best == nil {
				break
			}
			place(best, k)
		}
		if have < in.MinReplicas {
			plan.Unplaced = append(plan.Unplaced, k)
		}
		plan.Replicas[k] = have
	}
	// 3. Balance: move replicas from the heaviest card to the lightest while the spread
	// exceeds the hysteresis band and a move narrows it.
	maxMoves := in.MaxMoves
	if maxMoves <= 0 {
		maxMoves = max(4, sum/8)
	}
	mean := 0.0
	for _, c := range cards {
		mean += c.w
	}
	mean /= float64(len(cards))
	for plan.Moves < maxMoves {
		hi, lo := cards[0], cards[0]
		for _, c := range cards {
			if c.w > hi.w {
				hi = c
			}
			if c.w < lo.w {
				lo = c
			}
		}
		gap := hi.w - lo.w
		if gap <= in.Hysteresis*mean || lo.full() {
			break
		}
		// The replica whose weight is closest to half the gap, and below the gap.
		var pick model.ExpertKey
		found, bestDist := false, math.Inf(1)
		for k := range hi.held {
			if lo.held[k] {
				continue
			}
			w := weight(k)
			if w >= gap {
				continue
			}
			d := math.Abs(w - gap/2)
			if d < bestDist || (d == bestDist && keyCmp(k, pick) < 0) {
				pick, found, bestDist = k, true, d
			}
		}
		if !found {
			break
		}
		unplace(hi, pick)
		place(lo, pick)
		plan.Moves++
	}
	for _, c := range cards {
		ks := make([]model.ExpertKey, 0, len(c.held))
		for k := range c.held {
			ks = append(ks, k)
		}
		slices.SortFunc(ks, keyCmp)
		plan.Assign[c.id] = ks
	}
	slices.SortFunc(plan.Unplaced, keyCmp)
	return plan, nil
}
