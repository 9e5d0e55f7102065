package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/tracing"
)

// ErrNoReplica: an expert a step needs has no live replica anywhere.
var ErrNoReplica = errors.New("router: no live replica")

// MeshConfig configures the mesh side of the Experts seam.
type MeshConfig struct {
	Model   string // model name in subjects
	Experts int    // routed experts per layer
	// Mode: proto.ModeReduce (default; cards sum per token, fewest bytes) or proto.ModePairs
	// (cards return each pair; the router sums in routing order, bit-identical to Local).
	Mode proto.Mode
	// Wire is the activation dtype on the wire (default bf16).
	Wire proto.DType
	// LayerTimeout bounds one layer step, retries included (default 10s); a shorter deadline
	// on the caller's context wins.
	LayerTimeout time.Duration
	// AttemptTimeout bounds one request to one card (default 3s).
	AttemptTimeout time.Duration
	// Rounds is how many times a step re-plans failed batches onto other replicas (default 4).
	Rounds int
	// ID names this router in its load reports (default: a random id).
	ID string
	// LoadInterval is how often the router publishes its per-(layer, expert) dispatch
	// counts on proto.LoadSubject for the placement controller (default 1s; < 0: never).
	LoadInterval time.Duration
	// HedgeAfter: when a card has not answered a batch after this long, the same rows go to
	// other ready replicas too and the first complete answer wins (0: no hedging). See
	// SetHedgeAfter.
	HedgeAfter time.Duration
	// HedgeFactor > 0 adapts the hedge delay to the mesh: HedgeFactor × the median answer
	// time of the fastest card (each card's median over its recent batches), never less
	// than HedgeAfter. A straggler is then measured against a healthy replica, and when
	// every card is slow (overload) the baseline rises with them and hedges, which would
	// only add load, stop firing. See SetHedgeFactor.
	HedgeFactor float64
	// ExpertMetrics caps the per-(layer, expert) series the Collector exports: 0 none,
	// N > 0 the N most routed experts, < 0 all of them. See ParseExpertMetrics.
	ExpertMetrics int
	Logger        *slog.Logger
}

func (c *MeshConfig) defaults() error {
	if c.Model == "" || c.Experts <= 0 {
		return errors.New("router: mesh needs a model name and its expert count")
	}
	if c.Mode != proto.ModeReduce && c.Mode != proto.ModePairs {
		return fmt.Errorf("router: mode %d unknown", c.Mode)
	}
	if c.Wire == 0 {
		c.Wire = proto.BF16
	}
	if c.Wire.Size() == 0 {
		return fmt.Errorf("router: wire dtype %d unknown", c.Wire)
	}
	if c.LayerTimeout <= 0 {
		c.LayerTimeout = 10 * time.Second
	}
	if c.AttemptTimeout <= 0 {
		c.AttemptTimeout = 3 * time.Second
	}
	if c.Rounds <= 0 {
		c.Rounds = 4
	}
	if c.ID == "" {
		c.ID = "router-" + strconv.FormatUint(rand.Uint64(), 36)
	}
	if c.LoadInterval == 0 {
		c.LoadInterval = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.HedgeAfter < 0 {
		return fmt.Errorf("router: hedge-after %v < 0", c.HedgeAfter)
	}
	if !(c.HedgeFactor >= 0 && c.HedgeFactor <= 1000) {
		return fmt.Errorf("router: hedge factor %g, want 0 (off) to 1000", c.HedgeFactor)
	}
	return nil
}

// Mesh runs routed experts on the cards of the mesh. It implements model.Experts.
type Mesh struct {
	nc   *nats.Conn
	reg  *mesh.Registry
	cfg  MeshConfig
	tab  *table
	stop context.CancelFunc
	load *loadCounter
	wg   sync.WaitGroup // the load publisher

	// Knobs an operator may change while the mesh runs (see SetHedgeAfter).
	hedgeAfter    atomic.Int64  // nanoseconds; 0 off
	hedgeFactor   atomic.Uint64 // float64 bits; 0 off
	expertMetrics atomic.Int64
	stats         meshStats

	rngMu sync.Mutex
	rng   *rand.Rand

	// free holds the scratch of finished Forwards (see scratch).
	freeMu sync.Mutex
	free   []*scratch
}

var _ model.Experts = (*Mesh)(nil)

// NewMesh follows the registry of cfg.Model; it returns once the current leases are known.
// Close stops following.
func NewMesh(ctx context.Context, nc *nats.Conn, cfg MeshConfig) (*Mesh, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	reg, err := mesh.OpenRegistry(octx, nc, cfg.Model, 0) // the router reads leases, writes none
	if err != nil {
		return nil, fmt.Errorf("router: registry: %w", err)
	}
	m := &Mesh{nc: nc, reg: reg, cfg: cfg, tab: newTable(), load: newLoadCounter(), rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))}
	m.hedgeAfter.Store(int64(cfg.HedgeAfter))
	m.SetHedgeFactor(cfg.HedgeFactor)
	m.expertMetrics.Store(int64(cfg.ExpertMetrics))
	wctx, stop := context.WithCancel(context.Background())
	m.stop = stop
	if err := reg.WatchCards(wctx, func(id string, st *proto.CardStatus) { m.tab.update(cfg.Model, id, st) }); err != nil {
		stop()
		return nil, fmt.Errorf("router: watching cards: %w", err)
	}
	if cfg.LoadInterval > 0 {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			publishLoad(wctx, nc, proto.LoadSubject(cfg.Model), cfg.ID, cfg.LoadInterval, m.load)
		}()
	}
	return m, nil
}

// Close stops following the registry and publishing load.
func (m *Mesh) Close() {
	m.stop()
	m.wg.Wait()
}

// WaitFor blocks until every key has a ready replica, or ctx is done.
func (m *Mesh) WaitFor(ctx context.Context, keys []model.ExpertKey) error {
	for {
		ch := m.tab.waitChange()
		miss := m.tab.missing(keys)
		if len(miss) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %d experts still without a replica (first %v): %w", ErrNoReplica, len(miss), miss[0], ctx.Err())
		case <-ch:
		}
	}
}

// Cards lists the card ids the router currently knows, sorted.
func (m *Mesh) Cards() []string {
	m.tab.mu.RLock()
	defer m.tab.mu.RUnlock()
	ids := make([]string, 0, len(m.tab.cards))
	for id := range m.tab.cards {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Sent reports, per card id, how many batches this router had answered by each card.
func (m *Mesh) Sent() map[string]int64 {
	m.tab.mu.RLock()
	defer m.tab.mu.RUnlock()
	out := make(map[string]int64, len(m.tab.cards))
	for id, c := range m.tab.cards {
		out[id] = c.sent.Load()
	}
	return out
}

// send is one ExpertBatch to one card and what came of it.
type send struct {
	card  *cardState
	slots []int32 // routing slots (t·K+k) in the batch's pair order
	rows  []int32 // token of each row
	batch proto.ExpertBatch
	y     []float32
	err   error
	// hedge, when set, answered s's slots first (on other cards): its replies count
	// instead of s's, which are ignored.
	hedge []*send

	// Kept for the next step that reuses this send (see scratch): the encoded body, the
	// message carrying it and the decoded reply.
	body []byte
	msg  *nats.Msg
	res  proto.ExpertResult

	// deadline bounds the send's requests (its step's deadline).
	deadline time.Time
	// run dispatches the send on its own goroutine in an exchange, with runCtx, runStep and
	// runWG set for that exchange; made once per send (see exchange).
	run     func()
	runCtx  context.Context
	runStep *step
	runWG   *sync.WaitGroup
}

// reset readies a reused send for another batch, keeping its storage.
func (s *send) reset(c *cardState) {
	s.card, s.err, s.hedge = c, nil, nil
	s.slots, s.rows = s.slots[:0], s.rows[:0]
}

// scratch is what one Forward reuses from an earlier one: the step's bookkeeping and its
// sends, each with its batch, body, message and reply storage, so that a step in steady
// state allocates nothing of its own. A Forward takes a scratch from the mesh's free list
// and returns it when every send of the step has finished (exchange waits for them, hedges
// included), so two concurrent Forwards never share one. Within a step a send is handed
// out once: a batch re-sent after a failure gets a new one while the failed one may still
// be referenced.
type scratch struct {
	pending      []int32
	failed, busy map[*cardState]bool
	st           step
	done         []*send
	pairs        []float32 // pairs-mode replies in slot order
	plan         planScratch
	wg           sync.WaitGroup
}

// planScratch is plan's reusable state; a nil *planScratch allocates afresh (hedges and
// tests, which plan outside a step's scratch).
type planScratch struct {
	chosen  []*cardState // card per expert of the layer in this plan, nil: not chosen yet
	groups  []*send      // one per card: its slots, before splitting
	ngroups int
	sends   []*send // handed out in order during one Forward, never twice
	nsends  int
	out     []*send
	chunks  [][]int32
}

func (p *planScratch) send(c *cardState) *send {
	if p == nil {
		return &send{card: c}
	}
	return takeSend(&p.sends, &p.nsends, c)
}

func (p *planScratch) group(c *cardState) *send {
	if p == nil {
		return &send{card: c}
	}
	return takeSend(&p.groups, &p.ngroups, c)
}

// takeSend hands out the next send of list (n of them are taken), growing it when all
// are, reset for card c.
func takeSend(list *[]*send, n *int, c *cardState) *send {
	if *n == len(*list) {
		*list = append(*list, &send{})
	}
	s := (*list)[*n]
	*n++
	s.reset(c)
	return s
}

func (m *Mesh) getScratch() *scratch {
	m.freeMu.Lock()
	defer m.freeMu.Unlock()
	if n := len(m.free); n > 0 {
		sc := m.free[n-1]
		m.free = m.free[:n-1]
		return sc
	}
	return &scratch{failed: map[*cardState]bool{}, busy: map[*cardState]bool{}}
}

// putScratch returns sc once nothing of its step runs any more.
func (m *Mesh) putScratch(sc *scratch) {
	clear(sc.failed)
	clear(sc.busy)
	clear(sc.done) // no stale pointers into an old step's hedges
	sc.done = sc.done[:0]
	sc.st = step{}
	sc.plan.nsends = 0
	m.freeMu.Lock()
	m.free = append(m.free, sc)
	m.freeMu.Unlock()
}

// answers returns the sends whose replies hold s's slots.
func (s *send) answers() []*send {
	if s.hedge != nil {
		return s.hedge
	}
	return []*send{s}
}

// step is one Forward's input, what a hedge needs to re-plan a card's slots.
type step struct {
	layer  int
	x      []float32
	hidden int
	r      model.Routing
	// avoid holds the cards that failed earlier in the step; read-only during an exchange.
	avoid map[*cardState]bool
	// wg waits for an exchange's sends (the scratch's, so that it is not allocated per step).
	wg *sync.WaitGroup
	// deadline bounds the step (LayerTimeout, or the caller's deadline if sooner). Requests
	// take it as a bound; only the rare waits that select on it derive a context (waitCtx),
	// so a step in steady state makes none.
	deadline time.Time
	parent   context.Context
	wctx     context.Context
	wcancel  context.CancelFunc
}

// waitCtx is the step's context bounded by its deadline, derived on first use.
func (st *step) waitCtx() context.Context {
	if st.wctx == nil {
		st.wctx, st.wcancel = context.WithDeadline(st.parent, st.deadline)
	}
	return st.wctx
}

// live reports whether the step may still send: its caller has not given up and its
// deadline has not passed.
func (st *step) live() bool {
	return st.parent.Err() == nil && time.Now().Before(st.deadline)
}

// end releases what waitCtx derived and what the step held of its caller.
func (st *step) end() {
	if st.wcancel != nil {
		st.wcancel()
	}
	st.parent, st.wctx, st.wcancel = nil, nil, nil
}

// expired is the error of a step whose deadline or caller ended it.
func (st *step) expired() error {
	if err := st.parent.Err(); err != nil {
		return err
	}
	return context.DeadlineExceeded
}

// Forward implements model.Experts.
func (m *Mesh) Forward(ctx context.Context, layer int, x []float32, hidden int, r model.Routing, out []float32) error {
	if hidden <= 0 || len(x)%hidden != 0 || len(out) != len(x) {
		return fmt.Errorf("%w: %d inputs, %d outputs, hidden %d", model.ErrRouting, len(x), len(out), hidden)
	}
	t := len(x) / hidden
	if err := r.Validate(t, m.cfg.Experts); err != nil {
		return err
	}
	m.load.add(layer, r.Experts)
	m.stats.pairs.Add(int64(len(r.Experts)))
	if m.expertMetrics.Load() != 0 {
		m.stats.route(layer, r.Experts)
	}
	deadline := time.Now().Add(m.cfg.LayerTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}

	sc := m.getScratch()
	defer m.putScratch(sc)
	pending := slices.Grow(sc.pending[:0], len(r.Experts))[:len(r.Experts)]
	sc.pending = pending
	for i := range pending {
		pending[i] = int32(i)
	}
	done := sc.done[:0]
	st := &sc.st
	*st = step{layer: layer, x: x, hidden: hidden, r: r, deadline: deadline, parent: ctx}
	defer st.end()
	// failed: cards that did not answer (gone or hung), skipped for the rest of the step.
	// busy: cards that answered 503/507 (queue full, out of memory): alive, so they are
	// avoided while another replica exists and retried after a backoff when none does.
	failed, busy := sc.failed, sc.busy
	st.wg = &sc.wg
	var lastErr error
	lost, round := 0, 0
	var wait, backoff time.Duration
	for len(pending) > 0 {
		round++
		if lost >= m.cfg.Rounds {
			return fmt.Errorf("layer %d: %d pairs still unserved after %d re-sends: %w", layer, len(pending), lost, lastErr)
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			wctx := st.waitCtx()
			select {
			case <-wctx.Done():
				t.Stop()
				return fmt.Errorf("layer %d: cards busy until the deadline: %w (last: %w)", layer, wctx.Err(), lastErr)
			case <-t.C:
			}
		}
		// A NATS restart: wait for the reconnect (up to the layer deadline) instead of
		// failing sends that cannot leave.
		if !m.nc.IsConnected() {
			if err := mesh.WaitConnected(st.waitCtx(), m.nc); err != nil {
				return fmt.Errorf("layer %d: %w", layer, err)
			}
		}
		changed := m.tab.waitChange()
		sends, err := m.planInto(&sc.plan, layer, x, hidden, r, pending, failed, busy)
		if errors.Is(err, ErrNoReplica) && m.placed(st.waitCtx()) {
			// An expert lost its last replica (a card died, the registry is refilling after a
			// NATS restart): the controller re-places it within seconds, so the step waits for
			// the table to change, up to the layer deadline, instead of failing at once.
			// Without a controller (static placement) nobody will, and the step fails at once.
			m.cfg.Logger.DebugContext(ctx, "waiting for a replica", "layer", layer, "err", err)
			wctx := st.waitCtx()
			select {
			case <-wctx.Done():
				if lastErr != nil {
					err = fmt.Errorf("%w (after: %w)", err, lastErr)
				}
				return fmt.Errorf("%w; waited until the deadline: %w", err, wctx.Err())
			case <-changed:
			}
			// A card that failed earlier in this step may have been the only replica; the
			// table skips it until it heartbeats again (markSuspect), so the step may try it
			// once more rather than wait out the deadline for a card that is alive.
			clear(failed)
			wait = 0
			continue
		}
		if err != nil {
			if lastErr != nil {
				err = fmt.Errorf("%w (after: %w)", err, lastErr)
			}
			return err
		}
		st.avoid = failed
		m.exchange(ctx, st, sends)
		pending = pending[:0]
		sawBusy, sawLost := false, false
		for _, s := range sends {
			switch {
			case s.err == nil:
				if s.hedge != nil { // s.answers() without allocating a one-send slice
					done = append(done, s.hedge...)
				} else {
					done = append(done, s)
				}
			case errors.Is(s.err, mesh.ErrNotConnected) && st.live():
				// Our connection dropped, not the card: send again once it is back.
				pending = append(pending, s.slots...)
			case mesh.Retryable(s.err) && st.live():
				m.cfg.Logger.DebugContext(ctx, "re-sending a card's batch", "layer", layer, "card", s.card.id, "err", s.err)
				m.retried(ctx, s, round)
				lastErr = s.err
				if code := proto.CodeOf(s.err); code == proto.CodeUnavailable || code == proto.CodeOutOfMemory {
					busy[s.card], sawBusy = true, true
				} else {
					failed[s.card], sawLost = true, true
				}
				if errors.Is(s.err, mesh.ErrNoResponders) || errors.Is(s.err, mesh.ErrTimeout) {
					m.tab.markSuspect(s.card)
				}
				pending = append(pending, s.slots...)
			default:
				return fmt.Errorf("layer %d, card %s: %w", layer, s.card.id, s.err)
			}
		}
		sc.done = done
		if sawLost {
			lost++
		}
		wait = 0
		if sawBusy {
			backoff = min(2*max(backoff, time.Millisecond/2), 50*time.Millisecond)
			wait = backoff
		}
	}
	return m.combine(sc, done, r, hidden, out)
}

// placed reports whether a placement controller holds the leader lease, i.e. whether an
// expert that lost its last replica will be placed again.
func (m *Mesh) placed(ctx context.Context) bool {
	leader, err := m.reg.Leader(ctx)
	return err == nil && leader != ""
}

// plan groups the pending slots by the card chosen for each expert: every pair of an expert
// goes to the same replica in one step, and a token is sent once per card.
func (m *Mesh) plan(layer int, x []float32, hidden int, r model.Routing, pending []int32, failed, busy map[*cardState]bool) ([]*send, error) {
	return m.planInto(nil, layer, x, hidden, r, pending, failed, busy)
}

// planInto is plan with its storage taken from p (nil: allocated). The sends it returns
// are valid until p's step ends.
func (m *Mesh) planInto(p *planScratch, layer int, x []float32, hidden int, r model.Routing, pending []int32, failed, busy map[*cardState]bool) ([]*send, error) {
	avoid := failed
	if len(busy) > 0 {
		avoid = maps.Clone(failed)
		maps.Copy(avoid, busy)
	}
	slices.Sort(pending) // token order, k ascending: what CSR rows need
	var chosen []*cardState
	var order []*send
	var chunks [][]int32
	if p != nil {
		chosen, order, chunks = p.chosen, p.out[:0], p.chunks[:0]
		p.ngroups = 0
	}
	chosen = slices.Grow(chosen[:0], m.cfg.Experts)[:m.cfg.Experts]
	clear(chosen)
	m.rngMu.Lock()
	defer m.rngMu.Unlock()
	for _, s := range pending {
		e := r.Experts[s]
		c := chosen[e]
		if c == nil {
			k := model.ExpertKey{Layer: layer, Expert: int(e)}
			if c = m.tab.pick(k, avoid, m.rng); c == nil && len(busy) > 0 {
				c = m.tab.pick(k, failed, m.rng) // only busy replicas left: try one again
			}
			if c == nil {
				return nil, fmt.Errorf("%w: layer %d expert %d (%d cards known, %d failed in this step)",
					ErrNoReplica, layer, e, len(m.Cards()), len(failed))
			}
			chosen[e] = c
		}
		// Cards per step are few: a scan beats a map and allocates nothing.
		var sd *send
		for _, g := range order {
			if g.card == c {
				sd = g
				break
			}
		}
		if sd == nil {
			sd = p.group(c)
			order = append(order, sd)
		}
		sd.slots = append(sd.slots, s)
	}
	limit := m.payloadLimit()
	ngroups := len(order)
	for gi := 0; gi < ngroups; gi++ {
		sd := order[gi]
		chunks = appendSplitRows(chunks[:0], sd.slots, r.TopK, hidden, m.cfg.Wire.Size(), limit)
		for _, chunk := range chunks {
			s := p.send(sd.card)
			s.slots = append(s.slots, chunk...)
			if err := m.fill(s, layer, x, hidden, r); err != nil {
				return nil, err
			}
			order = append(order, s)
		}
	}
	sends := order[ngroups:]
	if p != nil {
		p.chosen, p.out, p.chunks = chosen, order, chunks
	}
	return sends, nil
}

// payloadLimit is the most a batch body may hold: the server's max payload less headroom for
// the envelope and headers.
func (m *Mesh) payloadLimit() int64 {
	max := int64(8 << 20)
	if m.nc != nil {
		max = m.nc.MaxPayload()
	}
	return max - 64<<10
}

// splitRows cuts a card's slots (token order) into runs whose batches stay under limit
// bytes, never splitting one token's pairs.
func splitRows(slots []int32, topK, hidden, dsize int, limit int64) [][]int32 {
	return appendSplitRows(nil, slots, topK, hidden, dsize, limit)
}

// appendSplitRows is splitRows appending the runs to out.
func appendSplitRows(out [][]int32, slots []int32, topK, hidden, dsize int, limit int64) [][]int32 {
	start, size := 0, int64(0)
	for i := 0; i < len(slots); {
		tok := slots[i] / int32(topK)
		j := i
		for j < len(slots) && slots[j]/int32(topK) == tok {
			j++
		}
		row := int64(hidden*dsize) + int64(j-i)*8 + 8
		if size+row > limit && i > start {
			out = append(out, slots[start:i])
			start, size = i, 0
		}
		size += row
		i = j
	}
	return append(out, slots[start:])
}

// fill builds the ExpertBatch of s. Slots come in token order, k ascending within a token:
// exactly CSR order.
func (m *Mesh) fill(s *send, layer int, x []float32, hidden int, r model.Routing) error {
	b := &s.batch
	b.V, b.Layer, b.Mode, b.OutDType = proto.Version, int32(layer), m.cfg.Mode, m.cfg.Wire
	b.RowPtr, b.Experts, b.Weights = append(b.RowPtr[:0], 0), b.Experts[:0], b.Weights[:0]
	s.rows = s.rows[:0]
	last := int32(-1)
	for _, sl := range s.slots {
		tok := sl / int32(r.TopK)
		if tok != last {
			if last >= 0 {
				b.RowPtr = append(b.RowPtr, int32(len(b.Experts)))
			}
			s.rows = append(s.rows, tok)
			last = tok
		}
		b.Experts = append(b.Experts, r.Experts[sl])
		b.Weights = append(b.Weights, r.Weights[sl])
	}
	b.RowPtr = append(b.RowPtr, int32(len(b.Experts)))
	b.Tokens = proto.I32s(s.rows)
	// Rows go from x to the wire dtype in one pass: no f32 copy of them first.
	return b.X.SetRowsF32(m.cfg.Wire, x, hidden, s.rows)
}

// exchange sends every batch concurrently and waits for all of them (each bounded by
// ctx and the attempt timeout), hedging the slow ones when hedging is on.
func (m *Mesh) exchange(ctx context.Context, st *step, sends []*send) {
	if len(sends) == 0 {
		return
	}
	// The first batch goes from this goroutine: one goroutine fewer per step.
	wg := st.wg
	if wg == nil {
		wg = new(sync.WaitGroup)
	}
	for _, s := range sends {
		s.deadline = st.deadline
	}
	for _, s := range sends[1:] {
		// A goroutine per extra card, started from a function the send keeps: a closure
		// made here would be allocated on every step.
		if s.run == nil {
			s.run = func() {
				defer s.runWG.Done()
				m.dispatch(s.runCtx, s.runStep, s)
			}
		}
		s.runCtx, s.runStep, s.runWG = ctx, st, wg
		wg.Add(1)
		go s.run()
	}
	m.dispatch(ctx, st, sends[0])
	wg.Wait()
	for _, s := range sends[1:] {
		s.runCtx, s.runStep = nil, nil // the step's caller must not outlive it
	}
}

// sendAll sends every batch concurrently, without hedging, and returns the first error.
func (m *Mesh) sendAll(ctx context.Context, sends []*send) error {
	var wg sync.WaitGroup
	for _, s := range sends {
		wg.Go(func() { s.err = m.request(ctx, s) })
	}
	wg.Wait()
	for _, s := range sends {
		if s.err != nil {
			return fmt.Errorf("card %s: %w", s.card.id, s.err)
		}
	}
	return nil
}

func (m *Mesh) request(ctx context.Context, s *send) error {
	s.body = proto.AppendExpertBatch(s.body[:0], &s.batch)
	data := s.body
	if max := m.nc.MaxPayload(); int64(len(data)) > max-1024 {
		return proto.Errorf(proto.CodeTooLarge, "batch of %d rows is %d bytes, the server takes %d", s.batch.Rows(), len(data), max)
	}
	// The message is reused with the send; its headers start empty (a trace context or
	// tenant list of an earlier step must not ride along). mesh.Request sets the deadline.
	if s.msg == nil {
		s.msg = &nats.Msg{Header: nats.Header{}}
	}
	msg := s.msg
	msg.Subject, msg.Data = s.card.subject, data
	clear(msg.Header)
	tenants := tenantHeader(ctx, &s.batch, s.rows)
	if tenants != "" {
		msg.Header.Set(proto.HeaderTenant, tenants)
	}
	rows := int64(s.batch.Rows())
	// The attempt's timeout and the step's deadline bound the request (mesh.RequestBy).
	actx, span := m.startAttempt(ctx, s, msg, tenants)
	s.card.inflight.Add(rows)
	s.card.stats.sent.Add(int64(len(data)))
	start := time.Now()
	by := time.Now().Add(m.cfg.AttemptTimeout)
	if !s.deadline.IsZero() && s.deadline.Before(by) {
		by = s.deadline
	}
	reply, err := mesh.RequestBy(actx, m.nc, msg, by)
	s.card.inflight.Add(-rows)
	if span != nil {
		endSpan(span, err)
	}
	if err != nil {
		return err
	}
	took := time.Since(start)
	s.card.stats.observe(took, len(reply.Data))
	s.card.recent.add(took)
	// Decoded into the send's own storage: nothing keeps a reference to the reply's data.
	if err := proto.DecodeExpertResult(reply.Data, &s.res, &s.batch); err != nil {
		return err
	}
	if s.y, err = s.res.Y.F32(s.y); err != nil {
		return err
	}
	s.card.sent.Add(1)
	return nil
}

// combine assembles the step's output from the cards' replies.
func (m *Mesh) combine(sc *scratch, done []*send, r model.Routing, hidden int, out []float32) error {
	if m.cfg.Mode == proto.ModePairs {
		sc.pairs = slices.Grow(sc.pairs[:0], len(r.Experts)*hidden)[:len(r.Experts)*hidden]
		y := sc.pairs
		for _, s := range done {
			for i, slot := range s.slots {
				copy(y[int(slot)*hidden:int(slot+1)*hidden], s.y[i*hidden:(i+1)*hidden])
			}
		}
		return model.CombinePairs(out, y, r, hidden)
	}
	// Partial sums, added in card-id order so a step's result does not depend on which
	// reply came first.
	slices.SortFunc(done, func(a, b *send) int {
		if a.card.id != b.card.id {
			if a.card.id < b.card.id {
				return -1
			}
			return 1
		}
		return int(a.slots[0] - b.slots[0])
	})
	clear(out)
	for _, s := range done {
		for i, tok := range s.rows {
			o := out[int(tok)*hidden : int(tok+1)*hidden]
			for j, v := range s.y[i*hidden : (i+1)*hidden] {
				o[j] += v
			}
		}
	}
	return nil
}

// startAttempt starts the CLIENT span of one batch sent to one card (one per attempt:
// re-sends get their own) and injects its context into msg's headers; the card's daemon
// continues the trace. Outside a recording trace (detail below layer, or not sampled) it
// does nothing and returns a nil span.
func (m *Mesh) startAttempt(ctx context.Context, s *send, msg *nats.Msg, tenants string) (context.Context, trace.Span) {
	if !tracing.Recording(ctx) {
		return ctx, nil
	}
	ctx, span := tracing.Tracer().Start(ctx, "send "+msg.Subject, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(tracing.System, tracing.Destination.String(msg.Subject), tracing.Operation.String("send"),
			tracing.BodySize.Int(len(msg.Data)), tracing.Layer.Int(int(s.batch.Layer)), tracing.Card.String(s.card.id),
			tracing.Rows.Int(s.batch.Rows()), tracing.Pairs.Int(len(s.batch.Experts)), tracing.Tenant.String(tenants)))
	tracing.Inject(ctx, msg.Header)
	return ctx, span
}
