package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// serveMetrics serves /metrics on addr with the given collectors (and the Go runtime's)
// until ctx ends. An empty addr serves nothing.
func serveMetrics(ctx context.Context, addr string, log *slog.Logger, cs ...prometheus.Collector) error {
	if addr == "" {
		return nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
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
	return nil
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
