package expertd

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exposes a daemon's cards to Prometheus, read at scrape time.
type Collector struct {
	d                                                           *Daemon
	queue, inflight, rows, runs, busy, memUsed, memTotal, pairs *prometheus.Desc
}

// NewCollector makes a collector for d; constLabels go on every series.
func NewCollector(d *Daemon, constLabels prometheus.Labels) *Collector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("moemesh_expertd_"+name, help, labels, constLabels)
	}
	return &Collector{d: d,
		queue:    desc("queue_batches", "Batches waiting on the card.", "card"),
		inflight: desc("inflight_batches", "Batches accepted and not yet answered.", "card"),
		rows:     desc("rows_total", "Token rows computed.", "card"),
		runs:     desc("runs_total", "Grouped computations run (fewer than batches when coalescing).", "card"),
		busy:     desc("card_busy_seconds_total", "Time the card spent computing expert batches (its rate is the card's utilisation).", "card"),
		memUsed:  desc("memory_used_bytes", "Card memory in use.", "card"),
		memTotal: desc("memory_total_bytes", "Card memory budget (0: unlimited).", "card"),
		pairs:    desc("tenant_expert_pairs_total", "Expert (token, expert) pairs computed per tenant, from the Moe-Tenant header.", "tenant"),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.queue, c.inflight, c.rows, c.runs, c.busy, c.memUsed, c.memTotal, c.pairs} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	select {
	case <-c.d.ready:
	default:
		return // cards still loading
	}
	for _, k := range c.d.cards {
		mi := k.dev.MemInfo()
		ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, float64(len(k.jobs)), k.id)
		ch <- prometheus.MustNewConstMetric(c.inflight, prometheus.GaugeValue, float64(k.inflight.Load()), k.id)
		ch <- prometheus.MustNewConstMetric(c.rows, prometheus.CounterValue, float64(k.rows.Load()), k.id)
		ch <- prometheus.MustNewConstMetric(c.runs, prometheus.CounterValue, float64(k.runs.Load()), k.id)
		ch <- prometheus.MustNewConstMetric(c.busy, prometheus.CounterValue, float64(k.busy.Load())/1e9, k.id)
		ch <- prometheus.MustNewConstMetric(c.memUsed, prometheus.GaugeValue, float64(mi.Used), k.id)
		ch <- prometheus.MustNewConstMetric(c.memTotal, prometheus.GaugeValue, float64(mi.Total), k.id)
	}
	for t, n := range c.d.TenantPairs() {
		ch <- prometheus.MustNewConstMetric(c.pairs, prometheus.CounterValue, float64(n), t)
	}
}
