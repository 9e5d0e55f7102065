package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moemesh/moemesh/mesh"
)

// The probes answer what the orchestrator acts on: liveness whatever the readiness,
// readiness following the check's answer from one request to the next, and no /readyz at
// all when the caller gave no check.
func TestMetricsProbes(t *testing.T) {
	var state atomic.Pointer[error]
	ready := func() error {
		if p := state.Load(); p != nil {
			return *p
		}
		return nil
	}
	notYet := errors.New("card c0 is loading 3 experts")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	withReady, err := listenMetrics(ctx, "127.0.0.1:0", log, ready)
	if err != nil {
		t.Fatal(err)
	}
	without, err := listenMetrics(ctx, "127.0.0.1:0", log, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	get := func(t *testing.T, url string) (int, string) {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(body)
	}
	for _, tc := range []struct {
		name     string
		base     string
		path     string
		notReady bool
		code     int
		body     string
	}{
		{"live while not ready", withReady.String(), "/healthz", true, 200, "ok"},
		{"not ready", withReady.String(), "/readyz", true, 503, notYet.Error()},
		{"ready", withReady.String(), "/readyz", false, 200, "ready"},
		{"metrics", withReady.String(), "/metrics", false, 200, "go_goroutines"},
		{"no check, no readyz", without.String(), "/readyz", false, 404, ""},
		{"no check, still live", without.String(), "/healthz", false, 200, "ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.notReady {
				state.Store(&notYet)
			} else {
				state.Store(nil)
			}
			code, body := get(t, "http://"+tc.base+tc.path)
			if code != tc.code || !strings.Contains(body, tc.body) {
				t.Fatalf("GET %s = %d %q, want %d containing %q", tc.path, code, body, tc.code, tc.body)
			}
		})
	}
}

// An empty address serves nothing and is not an error: --metrics is optional.
func TestServeMetricsProbesOff(t *testing.T) {
	if err := serveMetricsProbes(context.Background(), "", slog.New(slog.DiscardHandler), func() error { return nil }); err != nil {
		t.Fatal(err)
	}
}

// A router is ready while its NATS connection is up, and says so when it is not.
func TestNATSReady(t *testing.T) {
	srv, err := mesh.StartServer(mesh.ServerConfig{Host: "127.0.0.1", Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, err := mesh.Connect(ctx, srv.ClientURL(), t.Name())
	if err != nil {
		t.Fatal(err)
	}
	ready := natsReady(nc)
	if err := ready(); err != nil {
		t.Fatalf("connected: %v", err)
	}
	nc.Close()
	if err := ready(); err == nil || !strings.Contains(err.Error(), "NATS not connected") {
		t.Fatalf("closed: %v, want NATS not connected", err)
	}
}
