package router

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moemesh/moemesh/mesh"
)

// SetHedgeAfter changes MeshConfig.HedgeAfter while the mesh runs (d <= 0: no hedging).
func (m *Mesh) SetHedgeAfter(d time.Duration) { m.hedgeAfter.Store(int64(max(d, 0))) }

// SetHedgeFactor changes MeshConfig.HedgeFactor while the mesh runs (f <= 0: a fixed
// delay, HedgeAfter).
func (m *Mesh) SetHedgeFactor(f float64) {
	if !(f > 0) {
		f = 0
	}
	m.hedgeFactor.Store(math.Float64bits(f))
}

// hedgeDelay is how long a send waits for its card before it is hedged (0: never).
func (m *Mesh) hedgeDelay() time.Duration {
	d := time.Duration(m.hedgeAfter.Load())
	if f := math.Float64frombits(m.hedgeFactor.Load()); f > 0 {
		base := m.tab.fastestMedian()
		if base <= 0 {
			return d // too few answers yet to know what slow means
		}
		d = max(d, time.Duration(f*float64(base)))
	}
	return d
}

// fastestMedian is the lowest median answer time of the cards that have one (0: none).
func (t *table) fastestMedian() time.Duration {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var best time.Duration
	for _, c := range t.cards {
		if m := c.recent.median(); m > 0 && (best == 0 || m < best) {
			best = m
		}
	}
	return best
}

// latencyWindow keeps the last answer times of a card and their median, recomputed every
// few answers so that reading it costs an atomic load.
type latencyWindow struct {
	mu  sync.Mutex
	buf [64]time.Duration
	n   int
	med atomic.Int64 // nanoseconds; 0 until minSamples answers
}

const (
	minSamples   = 16 // answers before the median is trusted
	medianEveryN = 16 // answers between two recomputations
)

func (w *latencyWindow) add(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf[w.n%len(w.buf)] = d
	w.n++
	if w.n >= minSamples && w.n%medianEveryN == 0 {
		k := min(w.n, len(w.buf))
		tmp := make([]time.Duration, k)
		copy(tmp, w.buf[:k])
		slices.Sort(tmp)
		w.med.Store(int64(tmp[k/2]))
	}
}

func (w *latencyWindow) median() time.Duration { return time.Duration(w.med.Load()) }

// SetExpertMetrics changes MeshConfig.ExpertMetrics while the mesh runs.
func (m *Mesh) SetExpertMetrics(n int) { m.expertMetrics.Store(int64(n)) }

// MeshOf returns the Mesh an engine's experts run on, or nil when they run in process.
// Services built by a helper (internal/stack) reach their mesh's knobs and metrics with it.
func MeshOf(e *Engine) *Mesh {
	m, _ := e.cfg.Experts.(*Mesh)
	return m
}

// Hedge outcomes, the result label of moemesh_router_dispatch_hedges_total.
const (
	hedgeWon       = "won"        // the hedge answered first; the slow card's answer is dropped
	hedgeLost      = "lost"       // the slow card answered first after all; the hedge is cancelled
	hedgeFailed    = "failed"     // both failed; the step re-sends as without hedging
	hedgeNoReplica = "no_replica" // an expert of the card's batch has no other ready replica
)

// dispatch sends s. With hedging on, if s's card has not answered after the hedge delay,
// s's slots are re-planned onto other ready replicas and sent there too; whichever side
// answers completely first wins, the other is cancelled and waited for. The winner's
// replies are the only ones combined (s.answers), so nothing is added twice. Every replica
// computes a row alike (the backend contract), so in pairs mode the step's result is the
// same bit for bit whoever wins; in reduce mode a hedge spread over other cards changes
// the order of the partial sums, as any other placement would.
func (m *Mesh) dispatch(ctx context.Context, st *step, s *send) {
	d := m.hedgeDelay()
	if d <= 0 {
		s.err = m.request(ctx, s)
		return
	}
	pctx, cancelPrimary := context.WithCancel(ctx)
	defer cancelPrimary()
	primary := make(chan error, 1)
	go func() { primary <- m.request(pctx, s) }()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case s.err = <-primary:
		return
	case <-timer.C:
	}
	hedges, err := m.hedgePlan(st, s)
	if err != nil {
		m.stats.hedged(hedgeNoReplica)
		hedgeEvent(ctx, s, nil, d, hedgeNoReplica)
		s.err = <-primary
		return
	}
	for _, h := range hedges {
		h.deadline = st.deadline
	}
	hedgeEvent(ctx, s, hedges, d, "")
	hctx, cancelHedge := context.WithCancel(ctx)
	defer cancelHedge()
	hedged := make(chan error, 1)
	go func() { hedged <- m.sendAll(hctx, hedges) }()

	var perr, herr error
	pending := 2
	for pending > 0 {
		select {
		case perr = <-primary:
			pending--
			if perr == nil {
				cancelHedge()
				if pending > 0 {
					<-hedged
				}
				m.stats.hedged(hedgeLost)
				hedgeResult(ctx, s, hedgeLost)
				return
			}
		case herr = <-hedged:
			pending--
			if herr == nil {
				cancelPrimary()
				if pending > 0 {
					perr = <-primary
				}
				// A card that went silent is suspect whether or not a hedge covered it.
				if errors.Is(perr, mesh.ErrNoResponders) || errors.Is(perr, mesh.ErrTimeout) {
					m.tab.markSuspect(s.card)
				}
				s.hedge = hedges
				m.stats.hedged(hedgeWon)
				hedgeResult(ctx, s, hedgeWon)
				return
			}
		}
	}
	m.stats.hedged(hedgeFailed)
	hedgeResult(ctx, s, hedgeFailed)
	// The step retries on the primary's error, exactly as without hedging.
	m.cfg.Logger.Debug("hedge failed too", "layer", st.layer, "card", s.card.id, "hedge_cards", cardIDs(hedges), "err", herr)
	s.err = perr
}

// hedgePlan places s's slots on replicas other than s's card and the step's failed cards.
func (m *Mesh) hedgePlan(st *step, s *send) ([]*send, error) {
	avoid := map[*cardState]bool{s.card: true}
	for c := range st.avoid {
		avoid[c] = true
	}
	slots := append([]int32(nil), s.slots...)
	return m.plan(st.layer, st.x, st.hidden, st.r, slots, avoid, nil)
}

// cardIDs lists the cards of sends, for events and logs.
func cardIDs(sends []*send) string {
	ids := make([]string, len(sends))
	for i, s := range sends {
		ids[i] = s.card.id
	}
	return strings.Join(ids, ",")
}
