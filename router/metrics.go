package router

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/moemesh/moemesh/model"
)

// Collector exposes an engine's state to Prometheus, read at scrape time. When the
// engine's experts run on a Mesh, the mesh's dispatch series come with it.
type Collector struct {
	e      *Engine
	mesh   *Mesh // nil: experts in process
	labels prometheus.Labels

	queued, resident, kv, steps, express, split, tokens, finished, tenant, lastRows *prometheus.Desc
	// mesh series
	latency, bytes, inflight, retries, hedges, pairs, expertTokens, cards, byReplicas, replicas *prometheus.Desc
}

// NewCollector makes a collector for e; constLabels (e.g. router id, model) go on every series.
func NewCollector(e *Engine, constLabels prometheus.Labels) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("moemesh_router_"+name, help, labels, constLabels)
	}
	return &Collector{e: e, mesh: MeshOf(e), labels: constLabels,
		queued:   d("queued_requests", "Requests waiting for admission."),
		resident: d("resident_sequences", "Sequences admitted and holding KV cache."),
		kv:       d("kv_bytes", "KV cache bytes: budget (0 unlimited), reserved by resident sequences, in use in blocks.", "state"),
		steps:    d("steps_total", "Forward steps run."),
		express:  d("express_steps_total", "Steps that ran only new interactive prompts (express steps), counted in steps_total too."),
		split:    d("split_steps_total", "Steps run as two micro-batches (--micro-batch-rows), counted in steps_total too."),
		tokens:   d("tokens_total", "Tokens: prompt tokens of finished prefills and generated tokens.", "kind"),
		finished: d("finished_total", "Requests finished, by reason.", "reason"),
		tenant:   d("tenant_tokens_total", "Tokens processed (prompt and generated) per tenant.", "tenant"),
		lastRows: d("step_rows", "Token rows in the last step."),

		latency:      d("dispatch_seconds", "Time from sending a batch to a card to its answer, per card (answered attempts).", "card"),
		bytes:        d("dispatch_bytes_total", "Batch bytes sent to and answers received from each card.", "card", "direction"),
		inflight:     d("dispatch_inflight_rows", "Token rows sent to a card and not yet answered.", "card"),
		retries:      d("dispatch_retries_total", "Card batches re-sent to another replica, by reason.", "reason"),
		hedges:       d("dispatch_hedges_total", "Hedged sends (a slow card's rows sent to other replicas too), by result.", "result"),
		pairs:        d("routed_pairs_total", "Routed (token, expert) pairs dispatched, all experts together."),
		expertTokens: d("expert_tokens_total", "Tokens routed per (layer, expert), capped by --expert-metrics.", "layer", "expert"),
		cards:        d("cards", "Cards known from the registry, by state.", "state"),
		byReplicas:   d("experts_by_replicas", "Experts (layer, expert) by their number of usable ready replicas.", "replicas"),
		replicas:     d("expert_replicas", "Usable ready replicas per (layer, expert), capped by --expert-metrics.", "layer", "expert"),
	}
}

func (c *Collector) descs() []*prometheus.Desc {
	ds := []*prometheus.Desc{c.queued, c.resident, c.kv, c.steps, c.express, c.split, c.tokens, c.finished, c.tenant, c.lastRows}
	if c.mesh != nil {
		ds = append(ds, c.latency, c.bytes, c.inflight, c.retries, c.hedges, c.pairs, c.expertTokens, c.cards, c.byReplicas, c.replicas)
	}
	return ds
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.e.Stats()
	g := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	n := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	g(c.queued, float64(s.Queued))
	g(c.resident, float64(s.Resident))
	g(c.kv, float64(s.KV.Budget), "budget")
	g(c.kv, float64(s.KV.Reserved), "reserved")
	g(c.kv, float64(s.KV.InUse), "in_use")
	g(c.lastRows, float64(s.LastStepRows))
	n(c.steps, float64(s.Steps))
	n(c.express, float64(s.ExpressSteps))
	n(c.split, float64(s.SplitSteps))
	n(c.tokens, float64(s.PromptTokens), "prompt")
	n(c.tokens, float64(s.GenTokens), "generated")
	for r, v := range s.Finished {
		n(c.finished, float64(v), r)
	}
	for t, v := range s.Tenants {
		n(c.tenant, float64(v), t)
	}
	if c.mesh != nil {
		c.collectMesh(ch, g, n)
	}
}

func (c *Collector) collectMesh(ch chan<- prometheus.Metric, g, n func(*prometheus.Desc, float64, ...string)) {
	m := c.mesh
	view := m.tab.view()
	for _, cs := range view.cards {
		st := &cs.stats
		// Buckets before the count: observe adds to the count first, so no bucket can
		// exceed the count read after it.
		var cum uint64
		buckets := make(map[float64]uint64, len(dispatchBuckets))
		for i, b := range dispatchBuckets {
			cum += st.buckets[i].Load()
			buckets[b] = cum
		}
		count := st.count.Load()
		sum := time.Duration(st.sumNanos.Load()).Seconds()
		ch <- prometheus.MustNewConstHistogram(c.latency, count, sum, buckets, cs.id)
		n(c.bytes, float64(st.sent.Load()), cs.id, "sent")
		n(c.bytes, float64(st.recv.Load()), cs.id, "received")
		g(c.inflight, float64(cs.inflight.Load()), cs.id)
	}
	for state, v := range view.states {
		g(c.cards, float64(v), state)
	}
	retries, hedges, routed := m.stats.snapshot()
	for r, v := range retries {
		n(c.retries, float64(v), r)
	}
	for r, v := range hedges {
		n(c.hedges, float64(v), r)
	}
	n(c.pairs, float64(m.stats.pairs.Load()))

	// Replica counts over every expert of every layer the router has seen.
	layers := map[int]bool{}
	for k := range view.replicas {
		layers[k.Layer] = true
	}
	for k := range routed {
		layers[k.Layer] = true
	}
	hist := map[int]int{}
	for l := range layers {
		for e := range m.cfg.Experts {
			hist[view.replicas[model.ExpertKey{Layer: l, Expert: e}]]++
		}
	}
	for r, v := range hist {
		g(c.byReplicas, float64(v), strconv.Itoa(r))
	}
	for _, k := range capKeys(routed, m.cfg.Experts, layers, int(m.expertMetrics.Load())) {
		l, e := strconv.Itoa(k.Layer), strconv.Itoa(k.Expert)
		n(c.expertTokens, float64(routed[k]), l, e)
		g(c.replicas, float64(view.replicas[k]), l, e)
	}
}

// capKeys chooses the (layer, expert) series to export: none (limit 0), the limit most
// routed (ties: lower key first), or every expert of every seen layer (limit < 0).
func capKeys(routed map[model.ExpertKey]int64, experts int, layers map[int]bool, limit int) []model.ExpertKey {
	if limit == 0 {
		return nil
	}
	var keys []model.ExpertKey
	if limit < 0 {
		for l := range layers {
			for e := range experts {
				keys = append(keys, model.ExpertKey{Layer: l, Expert: e})
			}
		}
	} else {
		for k := range routed {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b model.ExpertKey) int {
		if limit > 0 {
			if c := cmp.Compare(routed[b], routed[a]); c != 0 {
				return c
			}
		}
		return cmp.Or(cmp.Compare(a.Layer, b.Layer), cmp.Compare(a.Expert, b.Expert))
	})
	if limit > 0 && len(keys) > limit {
		keys = keys[:limit]
	}
	return keys
}

// ParseExpertMetrics reads the --expert-metrics value: "off", "all" or "top-N" (N > 0),
// as MeshConfig.ExpertMetrics holds it.
func ParseExpertMetrics(s string) (int, error) {
	switch s {
	case "off", "0":
		return 0, nil
	case "all":
		return -1, nil
	}
	if v, ok := strings.CutPrefix(s, "top-"); ok {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			return n, nil
		}
	}
	return 0, fmt.Errorf("expert metrics %q: want off, all or top-N with N > 0", s)
}

// dispatchBuckets (seconds) run from a loopback round trip (~0.1 ms) to a card stalled
// near the attempt timeout.
var dispatchBuckets = [...]float64{.00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// cardStats are one card's dispatch counters, updated without locks on the send path.
type cardStats struct {
	sent, recv atomic.Int64 // bytes
	count      atomic.Uint64
	sumNanos   atomic.Int64
	buckets    [len(dispatchBuckets)]atomic.Uint64 // per bucket, not cumulative
}

// observe records one answered attempt.
func (s *cardStats) observe(d time.Duration, recvBytes int) {
	s.recv.Add(int64(recvBytes))
	s.count.Add(1)
	s.sumNanos.Add(int64(d))
	sec := d.Seconds()
	if i, _ := slices.BinarySearch(dispatchBuckets[:], sec); i < len(dispatchBuckets) {
		s.buckets[i].Add(1)
	}
}

// meshStats are a Mesh's counters that are not per card.
type meshStats struct {
	pairs  atomic.Int64
	mu     sync.Mutex
	retry  map[string]int64
	hedge  map[string]int64
	routed map[model.ExpertKey]int64 // since start, only while expert metrics are on
}

func (s *meshStats) retried(reason string) { s.inc(&s.retry, reason) }
func (s *meshStats) hedged(result string)  { s.inc(&s.hedge, result) }

func (s *meshStats) inc(m *map[string]int64, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if *m == nil {
		*m = map[string]int64{}
	}
	(*m)[key]++
}

// route counts a step's routed experts of one layer.
func (s *meshStats) route(layer int, experts []int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.routed == nil {
		s.routed = map[model.ExpertKey]int64{}
	}
	for _, e := range experts {
		s.routed[model.ExpertKey{Layer: layer, Expert: int(e)}]++
	}
}

func (s *meshStats) snapshot() (retry, hedge map[string]int64, routed map[model.ExpertKey]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	clone := func(m map[string]int64) map[string]int64 {
		out := make(map[string]int64, len(m))
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	routed = make(map[model.ExpertKey]int64, len(s.routed))
	for k, v := range s.routed {
		routed[k] = v
	}
	return clone(s.retry), clone(s.hedge), routed
}
