package mesh

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestServerStartStop(t *testing.T) {
	s, err := StartServer(ServerConfig{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") || s.Port() <= 0 {
		t.Fatalf("ClientURL %q, port %d", s.ClientURL(), s.Port())
	}
	store := s.NATS().JetStreamConfig().StoreDir
	if _, err := os.Stat(store); err != nil {
		t.Fatalf("store dir: %v", err)
	}
	opts := s.NATS().JetStreamConfig()
	if opts.MaxMemory != DefaultJetStreamMaxMemory || opts.MaxStore != DefaultJetStreamMaxStore {
		t.Fatalf("JetStream limits %d / %d, want the bounded defaults", opts.MaxMemory, opts.MaxStore)
	}

	nc := connect(t, s.ClientURL())
	if got := nc.MaxPayload(); got != DefaultMaxPayload {
		t.Fatalf("max payload %d, want %d", got, DefaultMaxPayload)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// JetStream answers at once: a KV bucket can be made right after StartServer returns.
	if _, err := js.CreateKeyValue(timeout(t, 5*time.Second), jetstream.KeyValueConfig{Bucket: "probe"}); err != nil {
		t.Fatal(err)
	}

	s.Shutdown()
	s.Shutdown() // idempotent
	if _, err := os.Stat(store); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary store %s not removed: %v", store, err)
	}
	waitFor(t, 2*time.Second, func() error {
		if nc.IsConnected() {
			return errors.New("client still connected")
		}
		return nil
	})
}

func TestServerKeepsGivenStore(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, ServerConfig{StoreDir: dir, MaxPayload: 1 << 20, Name: "n1"})
	s.Shutdown()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("caller's store dir removed: %v", err)
	}
}

func TestServerPortInUse(t *testing.T) {
	s := startServer(t, ServerConfig{})
	start := time.Now()
	_, err := StartServer(ServerConfig{Port: s.Port()})
	if !errors.Is(err, ErrServer) {
		t.Fatalf("second server on port %d: err = %v", s.Port(), err)
	}
	// The listen failure is reported at once, not after the readiness timeout.
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v to report %v", d, err)
	}
	t.Logf("%v after %v", err, time.Since(start).Round(time.Millisecond))
}

func TestServerConfigErrors(t *testing.T) {
	for name, cfg := range map[string]ServerConfig{
		"cluster without name":   {ClusterName: "c"},
		"routes without cluster": {Routes: []string{"nats://127.0.0.1:6222"}},
		"bad route":              {Name: "n", ClusterName: "c", ClusterPort: -1, Routes: []string{"::bad"}},
	} {
		if _, err := StartServer(cfg); !errors.Is(err, ErrServer) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestServerCluster(t *testing.T) {
	// Two nodes, each given the full route list (JetStream clustering sizes its meta group
	// from it): a message crosses the route.
	pa, pb := freePort(t), freePort(t)
	routes := []string{fmt.Sprintf("nats://127.0.0.1:%d", pa), fmt.Sprintf("nats://127.0.0.1:%d", pb)}
	a := startServer(t, ServerConfig{Name: "a", ClusterName: "c", ClusterPort: pa, Routes: routes})
	b := startServer(t, ServerConfig{Name: "b", ClusterName: "c", ClusterPort: pb, Routes: routes})
	waitFor(t, 5*time.Second, func() error {
		if a.NATS().NumRoutes() == 0 || b.NATS().NumRoutes() == 0 {
			return errors.New("no route yet")
		}
		return nil
	})
	ncA, ncB := connect(t, a.ClientURL()), connect(t, b.ClientURL())
	sub, err := ncA.SubscribeSync("x")
	if err != nil {
		t.Fatal(err)
	}
	if err := ncA.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() error {
		if err := ncB.Publish("x", []byte("hi")); err != nil {
			return err
		}
		_, err := sub.NextMsg(50 * time.Millisecond)
		return err
	})
}
