package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// serveMetrics serves /metrics (and /healthz) on addr with the given collectors (and the
// Go runtime's) until ctx ends. An empty addr serves nothing.
func serveMetrics(ctx context.Context, addr string, log *slog.Logger, cs ...prometheus.Collector) error {
	return serveMetricsProbes(ctx, addr, log, nil, cs...)
}

// serveMetricsProbes is serveMetrics plus the probes an orchestrator polls: /healthz
// answers 200 while the process can serve HTTP at all (liveness), /readyz 200 while
// ready() returns nil and 503 with its error otherwise (readiness). A nil ready serves no
// /readyz, so a probe pointed at a service that has none fails loudly with 404 instead of
// passing. The probes share the metrics address because a scratch image has no shell or
// curl: the kubelet and Prometheus both reach the service over HTTP, on one port.
func serveMetricsProbes(ctx context.Context, addr string, log *slog.Logger, ready func() error, cs ...prometheus.Collector) error {
	if addr == "" {
		return nil
	}
	_, err := listenMetrics(ctx, addr, log, ready, cs...)
	return err
}

// listenMetrics does the work of serveMetricsProbes and returns the bound address (tests
// listen on port 0).
func listenMetrics(ctx context.Context, addr string, log *slog.Logger, ready func() error, cs ...prometheus.Collector) (net.Addr, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	if ready != nil {
		mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			if err := ready(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, err.Error()+"\n")
				return
			}
			_, _ = io.WriteString(w, "ready\n")
		})
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics server", "err", err)
		}
	}()
	log.Info("metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return ln.Addr(), nil
}

// natsReady is a readiness check for services whose only dependency is their NATS
// connection (the router, once it serves).
func natsReady(nc *nats.Conn) func() error {
	return func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("NATS not connected (%v)", nc.Status())
		}
		return nil
	}
}

// natsCollector exports what operators watch of a service's NATS connection: reconnects
// (a flapping link or a restarted server) and whether it is connected now.
func natsCollector(nc *nats.Conn, labels prometheus.Labels) prometheus.Collector {
	return natsStats{
		nc: nc,
		reconnects: prometheus.NewDesc("moemesh_nats_reconnects_total",
			"Times this service's NATS connection was re-established.", nil, labels),
		connected: prometheus.NewDesc("moemesh_nats_connected",
			"1 while this service's NATS connection is up.", nil, labels),
	}
}

type natsStats struct {
	nc                    *nats.Conn
	reconnects, connected *prometheus.Desc
}

func (s natsStats) Describe(ch chan<- *prometheus.Desc) { ch <- s.reconnects; ch <- s.connected }

func (s natsStats) Collect(ch chan<- prometheus.Metric) {
	up := 0.0
	if s.nc.IsConnected() {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(s.reconnects, prometheus.CounterValue, float64(s.nc.Stats().Reconnects))
	ch <- prometheus.MustNewConstMetric(s.connected, prometheus.GaugeValue, up)
}
