package mesh

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestConnectDefaults(t *testing.T) {
	s := startServer(t, ServerConfig{})
	nc := connect(t, s.ClientURL(), nats.PingInterval(7*time.Second)) // caller's options win
	o := nc.Opts
	checks := []struct {
		name      string
		got, want any
	}{
		{"name", o.Name, t.Name()},
		{"retry on failed connect", o.RetryOnFailedConnect, true},
		{"max reconnects", o.MaxReconnect, -1},
		{"reconnect wait", o.ReconnectWait, 250 * time.Millisecond},
		{"reconnect buffer", o.ReconnectBufSize, -1},
		{"reconnect backoff", o.CustomReconnectDelayCB != nil, true},
		{"max pings out", o.MaxPingsOut, 3},
		{"dial timeout", o.Timeout, 2 * time.Second},
		{"ping interval (overridden)", o.PingInterval, 7 * time.Second},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if !nc.IsConnected() {
		t.Fatal("Connect returned an unconnected client")
	}
}

func TestConnectFailsWithinDeadline(t *testing.T) {
	url := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t)) // nobody listens
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	nc, err := Connect(ctx, url, "nobody")
	if err == nil {
		nc.Close()
		t.Fatal("connected to nothing")
	}
	if !errors.Is(err, ErrConnect) || !strings.Contains(err.Error(), url) {
		t.Fatalf("err = %v, want ErrConnect naming %s", err, url)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("gave up after %v, deadline was 300ms", d)
	}
	t.Logf("%v", err)
}

// A service may start before its server: Connect keeps trying until the server is up.
func TestConnectBeforeServer(t *testing.T) {
	port := freePort(t)
	type result struct {
		nc  *nats.Conn
		err error
	}
	res := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		nc, err := Connect(ctx, fmt.Sprintf("nats://127.0.0.1:%d", port), "early")
		res <- result{nc, err}
	}()
	// Let Connect fail its first dial before the server exists.
	time.Sleep(100 * time.Millisecond) // sets up the scenario; nothing is asserted on it
	startServer(t, ServerConfig{Port: port})
	select {
	case r := <-res:
		if r.err != nil {
			t.Fatal(r.err)
		}
		r.nc.Close()
	case <-time.After(6 * time.Second):
		t.Fatal("Connect did not return")
	}
}

func TestReconnectDelay(t *testing.T) {
	for _, tc := range []struct {
		attempts int
		jitter   int64
		want     time.Duration
	}{
		{1, 0, 250 * time.Millisecond},
		{2, 0, 500 * time.Millisecond},
		{3, 0, time.Second},
		{4, 0, time.Second},
		{1000, 0, time.Second},
		{0, 0, 250 * time.Millisecond},
		{2, int64(40 * time.Millisecond), 540 * time.Millisecond},
		{4, -5, time.Second},
	} {
		if got := ReconnectDelay(tc.attempts, tc.jitter); got != tc.want {
			t.Errorf("ReconnectDelay(%d, %d) = %v, want %v", tc.attempts, tc.jitter, got, tc.want)
		}
	}
}
