package router

import (
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
)

// cardState is what the router knows of one card.
type cardState struct {
	id       string
	subject  string
	status   proto.CardStatus
	inflight atomic.Int64 // rows sent and not yet answered by this router
	sent     atomic.Int64 // batches answered successfully, for stats and tests
	// suspectUntil: after a no-responders or timeout the card is skipped until its lease
	// shows a heartbeat newer than the failure, or the lease lapses.
	suspectSince atomic.Int64
	stats        cardStats     // dispatch metrics, read at scrape time
	recent       latencyWindow // answer times, for the adaptive hedge delay
}

// load is the work ahead of the card as this router sees it.
func (c *cardState) load() int64 { return c.inflight.Load() + int64(c.status.Queue) }

func (c *cardState) usable() bool {
	s := c.suspectSince.Load()
	return !c.status.Draining && (s == 0 || c.status.Beat > s)
}

// table maps experts to the cards holding a ready replica. It is rebuilt from the
// registry watch; lookups take a read lock.
type table struct {
	mu       sync.RWMutex
	cards    map[string]*cardState
	replicas map[model.ExpertKey][]*cardState
	changed  chan struct{} // closed and replaced on every update
}

func newTable() *table {
	return &table{cards: map[string]*cardState{}, replicas: map[model.ExpertKey][]*cardState{}, changed: make(chan struct{})}
}

// update applies one registry event (st nil: the card is gone).
func (t *table) update(model_ string, id string, st *proto.CardStatus) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if st == nil {
		delete(t.cards, id)
	} else {
		c, ok := t.cards[id]
		if !ok {
			c = &cardState{id: id, subject: proto.CardSubject(model_, id)}
			t.cards[id] = c
		}
		c.status = *st
	}
	t.rebuild()
	close(t.changed)
	t.changed = make(chan struct{})
}

func (t *table) rebuild() {
	clear(t.replicas)
	ids := make([]string, 0, len(t.cards))
	for id := range t.cards {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		c := t.cards[id]
		for _, e := range c.status.Experts {
			if e.State == proto.StateReady {
				k := model.ExpertKey{Layer: int(e.Layer), Expert: int(e.Expert)}
				t.replicas[k] = append(t.replicas[k], c)
			}
		}
	}
}

// markSuspect records a failure so the card is skipped until it heartbeats again.
func (t *table) markSuspect(c *cardState) {
	c.suspectSince.Store(time.Now().UnixNano())
}

// pick chooses a replica of k not in exclude: the less loaded of two random usable
// replicas (power of two choices), or nil when there is none.
func (t *table) pick(k model.ExpertKey, exclude map[*cardState]bool, rng *rand.Rand) *cardState {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var cand [16]*cardState
	n := 0
	var all []*cardState
	for _, c := range t.replicas[k] {
		if exclude[c] || !c.usable() {
			continue
		}
		if n < len(cand) {
			cand[n] = c
		} else {
			if all == nil {
				all = append([]*cardState{}, cand[:]...)
			}
			all = append(all, c)
		}
		n++
	}
	if n == 0 {
		return nil
	}
	list := cand[:min(n, len(cand))]
	if all != nil {
		list = all
	}
	if len(list) == 1 {
		return list[0]
	}
	a, b := list[rng.IntN(len(list))], list[rng.IntN(len(list))]
	if b.load() < a.load() {
		return b
	}
	return a
}

// waitChange returns a channel closed at the next update.
func (t *table) waitChange() <-chan struct{} {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.changed
}

// missing lists the keys with no ready, usable replica.
func (t *table) missing(keys []model.ExpertKey) []model.ExpertKey {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []model.ExpertKey
	for _, k := range keys {
		ok := false
		for _, c := range t.replicas[k] {
			if c.usable() {
				ok = true
				break
			}
		}
		if !ok {
			out = append(out, k)
		}
	}
	return out
}

// tableView is a consistent copy of what the table knows, for metrics and snapshots.
type tableView struct {
	cards    []*cardState            // sorted by id
	states   map[string]int          // cards by state: usable, suspect, draining
	replicas map[model.ExpertKey]int // usable ready replicas per expert
}

// view copies the table's current state.
func (t *table) view() tableView {
	t.mu.RLock()
	defer t.mu.RUnlock()
	v := tableView{states: map[string]int{"usable": 0, "suspect": 0, "draining": 0}, replicas: make(map[model.ExpertKey]int, len(t.replicas))}
	for _, c := range t.cards {
		v.cards = append(v.cards, c)
		switch {
		case c.status.Draining:
			v.states["draining"]++
		case !c.usable():
			v.states["suspect"]++
		default:
			v.states["usable"]++
		}
	}
	slices.SortFunc(v.cards, func(a, b *cardState) int { return strings.Compare(a.id, b.id) })
	for k, cs := range t.replicas {
		n := 0
		for _, c := range cs {
			if c.usable() {
				n++
			}
		}
		v.replicas[k] = n
	}
	return v
}
