package router

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exposes an engine's state to Prometheus, read at scrape time.
type Collector struct {
	e      *Engine
	labels prometheus.Labels

	queued, resident, kv, steps, tokens, finished, tenant, lastRows *prometheus.Desc
}

// NewCollector makes a collector for e; constLabels (e.g. router id, model) go on every series.
func NewCollector(e *Engine, constLabels prometheus.Labels) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("moemesh_router_"+name, help, labels, constLabels)
	}
	return &Collector{e: e, labels: constLabels,
		queued:   d("queued_requests", "Requests waiting for admission."),
		resident: d("resident_sequences", "Sequences admitted and holding KV cache."),
		kv:       d("kv_bytes", "KV cache bytes: budget (0 unlimited), reserved by resident sequences, in use in blocks.", "state"),
		steps:    d("steps_total", "Forward steps run."),
		tokens:   d("tokens_total", "Tokens: prompt tokens of finished prefills and generated tokens.", "kind"),
		finished: d("finished_total", "Requests finished, by reason.", "reason"),
		tenant:   d("tenant_tokens_total", "Tokens processed (prompt and generated) per tenant.", "tenant"),
		lastRows: d("step_rows", "Token rows in the last step."),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.queued, c.resident, c.kv, c.steps, c.tokens, c.finished, c.tenant, c.lastRows} {
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
	n(c.tokens, float64(s.PromptTokens), "prompt")
	n(c.tokens, float64(s.GenTokens), "generated")
	for r, v := range s.Finished {
		n(c.finished, float64(v), r)
	}
	for t, v := range s.Tenants {
		n(c.tenant, float64(v), t)
	}
}
