package gateway

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the gateway's Prometheus series, in a registry of its own so several
// gateways (tests) can live in one process.
type metrics struct {
	reg                *prometheus.Registry
	prompt, completion *prometheus.CounterVec
	requests           *prometheus.CounterVec
	inflight           *prometheus.GaugeVec
	ttft, duration     *prometheus.HistogramVec
	tpot               *prometheus.HistogramVec
	handler            http.Handler
}

// ttftBuckets are upper bounds in seconds: interactive first tokens take tens of
// milliseconds, a long CPU prefill tens of seconds.
var ttftBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// durationBuckets reach further than ttftBuckets: a whole long generation takes minutes.
var durationBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// tpotBuckets: a decode step is milliseconds on a card, up to a second on a loaded CPU.
var tpotBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}

func newMetrics(extra ...prometheus.Collector) (*metrics, error) {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		prompt: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moemesh_gateway_prompt_tokens_total",
			Help: "Prompt tokens of requests a router accepted, by tenant."}, []string{"tenant"}),
		completion: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moemesh_gateway_completion_tokens_total",
			Help: "Completion tokens streamed back, by tenant."}, []string{"tenant"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moemesh_gateway_requests_total",
			Help: "Requests by tenant and HTTP status."}, []string{"tenant", "code"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "moemesh_gateway_inflight_requests",
			Help: "Requests being served, by tenant."}, []string{"tenant"}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "moemesh_gateway_time_to_first_token_seconds",
			Help: "Time from receiving a request to its first token, by tenant.", Buckets: ttftBuckets}, []string{"tenant"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "moemesh_gateway_request_duration_seconds",
			Help: "Time from receiving a request a router accepted to its last byte, by tenant and HTTP status.", Buckets: durationBuckets}, []string{"tenant", "code"}),
		tpot: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "moemesh_gateway_time_per_output_token_seconds",
			Help: "Mean time between output tokens after the first, per finished request, by tenant.", Buckets: tpotBuckets}, []string{"tenant"}),
	}
	cs := []prometheus.Collector{m.prompt, m.completion, m.requests, m.inflight, m.ttft, m.duration, m.tpot,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})}
	for _, c := range append(cs, extra...) {
		if err := m.reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return m, nil
}

func (m *metrics) tokens(tenant string, prompt, completion int) {
	m.prompt.WithLabelValues(tenant).Add(float64(prompt))
	m.completion.WithLabelValues(tenant).Add(float64(completion))
}

func (m *metrics) request(tenant string, status int) {
	m.requests.WithLabelValues(tenant, strconv.Itoa(status)).Inc()
}

// finished counts a request that reached a router, with how long it took; first is when
// its first token arrived (zero if none did) and completion how many tokens it produced.
func (m *metrics) finished(tenant string, status int, start, first time.Time, completion int) {
	m.request(tenant, status)
	now := time.Now()
	m.duration.WithLabelValues(tenant, strconv.Itoa(status)).Observe(now.Sub(start).Seconds())
	if status == http.StatusOK && completion > 1 && !first.IsZero() {
		m.tpot.WithLabelValues(tenant).Observe(now.Sub(first).Seconds() / float64(completion-1))
	}
}

func (m *metrics) addInflight(tenant string, d float64) { m.inflight.WithLabelValues(tenant).Add(d) }

func (m *metrics) firstToken(tenant string, d time.Duration) {
	m.ttft.WithLabelValues(tenant).Observe(d.Seconds())
}

// ServeHTTP serves the registry.
func (m *metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) { m.handler.ServeHTTP(w, r) }
