package mesh

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// A request waiting for a reply when its connection drops fails at once with
// ErrNotConnected instead of waiting out its deadline; a closed connection's watch ends.
func TestRequestFailsFastOnDisconnect(t *testing.T) {
	port := freePort(t)
	s := startServer(t, ServerConfig{Port: port})
	silent := connect(t, s.ClientURL())
	got := make(chan struct{}, 1)
	if _, err := silent.Subscribe("svc.silent", func(*nats.Msg) { got <- struct{}{} }); err != nil { // never answers
		t.Fatal(err)
	}
	if err := silent.Flush(); err != nil {
		t.Fatal(err)
	}
	nc := connect(t, s.ClientURL())
	errc := make(chan error, 1)
	go func() {
		_, err := Request(timeout(t, 20*time.Second), nc, nats.NewMsg("svc.silent"))
		errc <- err
	}()
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not reach the responder")
	}
	dropped := time.Now()
	s.Shutdown()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrNotConnected) || Retryable(err) {
			t.Fatalf("err = %v, want ErrNotConnected (not retryable)", err)
		}
		if took := time.Since(dropped); took > 2*time.Second {
			t.Fatalf("failed %v after the drop", took)
		}
		t.Logf("failed %v after the drop: %v", time.Since(dropped).Round(time.Millisecond), err)
	case <-time.After(10 * time.Second):
		t.Fatal("the request still waits 10 s after its connection dropped")
	}
	// While disconnected, a request fails at once too.
	t0 := time.Now()
	if _, err := Request(timeout(t, 5*time.Second), nc, nats.NewMsg("svc.silent")); !errors.Is(err, ErrNotConnected) || time.Since(t0) > time.Second {
		t.Fatalf("request while disconnected: %v after %v", err, time.Since(t0))
	}
	nc.Close()
	waitFor(t, 5*time.Second, func() error {
		if _, ok := watches.Load(nc); ok {
			return fmt.Errorf("the closed connection's watch still runs")
		}
		return nil
	})
}

// WaitConnected returns at once while connected, fails with ErrNotConnected at its deadline
// while the server is away, and returns once the connection is back.
func TestWaitConnected(t *testing.T) {
	port := freePort(t)
	s := startServer(t, ServerConfig{Port: port})
	nc := connect(t, s.ClientURL())
	if err := WaitConnected(timeout(t, time.Second), nc); err != nil {
		t.Fatalf("connected: %v", err)
	}
	s.Shutdown()
	waitFor(t, 5*time.Second, func() error {
		if nc.IsConnected() {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	if err := WaitConnected(timeout(t, 100*time.Millisecond), nc); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("server away: %v, want ErrNotConnected", err)
	}
	back := make(chan error, 1)
	go func() { back <- WaitConnected(timeout(t, 20*time.Second), nc) }()
	startServer(t, ServerConfig{Port: port})
	if err := <-back; err != nil || !nc.IsConnected() {
		t.Fatalf("after the server's return: %v (connected %v)", err, nc.IsConnected())
	}
	nc.Close()
	if err := WaitConnected(timeout(t, time.Second), nc); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("closed: %v, want ErrNotConnected", err)
	}
}
