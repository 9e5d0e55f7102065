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
	ttft               *prometheus.HistogramVec
	handler            http.Handler
}

// ttftBuckets are upper bounds in seconds: interactive first tokens take tens of
// milliseconds, a long CPU prefill tens of seconds.
var ttftBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

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
	}
	cs := []prometheus.Collector{m.prompt, m.completion, m.requests, m.inflight, m.ttft,
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

func (m *metrics) addInflight(tenant string, d float64) { m.inflight.WithLabelValues(tenant).Add(d) }

func (m *metrics) firstToken(tenant string, d time.Duration) {
	m.ttft.WithLabelValues(tenant).Observe(d.Seconds())
}

// ServeHTTP serves the registry.
func (m *metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) { m.handler.ServeHTTP(w, r) }
