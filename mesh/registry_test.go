package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/moemesh/moemesh/proto"
)

// view records what a WatchCards callback was told.
type view struct {
	mu     sync.Mutex
	cards  map[string]*proto.CardStatus
	events []string // "+id" for a lease, "-id" for gone
}

func newView() *view { return &view{cards: map[string]*proto.CardStatus{}} }

func (v *view) fn(id string, st *proto.CardStatus) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if st == nil {
		if _, ok := v.cards[id]; !ok {
			v.events = append(v.events, "-"+id+" (unknown!)")
		}
		delete(v.cards, id)
		v.events = append(v.events, "-"+id)
		return
	}
	v.cards[id] = st
	v.events = append(v.events, "+"+id)
}

func (v *view) ids() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var ids []string
	for id := range v.cards {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// has returns a waitFor condition: the view holds exactly ids.
func (v *view) has(ids ...string) func() error {
	return func() error {
		if got := v.ids(); !slices.Equal(got, ids) {
			return fmt.Errorf("view holds %v, want %v", got, ids)
		}
		return nil
	}
}

func card(id string, queue int32) *proto.CardStatus {
	return &proto.CardStatus{V: proto.Version, Card: id, Daemon: "d1", Device: "cpu:0", Queue: queue,
		Experts: []proto.ExpertState{{Layer: 1, Expert: 2, State: proto.StateReady}}, Beat: time.Now().UnixNano()}
}

func openRegistry(t *testing.T, nc *nats.Conn, model string, ttl time.Duration, opts ...RegistryOption) *Registry {
	t.Helper()
	r, err := OpenRegistry(timeout(t, 5*time.Second), nc, model, ttl, opts...)
	if err != nil {
		t.Fatal(err)
	}
	// Runs after the cleanups of the watches started later: every watch goroutine must
	// have stopped once its context ended.
	t.Cleanup(func() { waitWatchers(t, r) })
	return r
}

// watch starts WatchCards on a fresh view; the watch stops at the end of the test.
func watch(t *testing.T, r *Registry) (*view, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	v := newView()
	if err := r.WatchCards(ctx, v.fn); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return v, cancel
}

func waitWatchers(t *testing.T, r *Registry) {
	t.Helper()
	done := make(chan struct{})
	go func() { r.watchers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Errorf("watch goroutines still running 5s after their contexts ended\n%s", buf[:n])
	}
}

func TestRegistryPutListWatchDelete(t *testing.T) {
	s := startServer(t, ServerConfig{})
	nc := connect(t, s.ClientURL())
	r := openRegistry(t, nc, "org/Model-1", 30*time.Second)
	if r.Bucket() != "moemesh_org_Model-1" {
		t.Fatalf("bucket %s", r.Bucket())
	}
	// Another service opening the same registry with another TTL is fine.
	openRegistry(t, connect(t, s.ClientURL()), "org/Model-1", 3*time.Second)

	early, _ := watch(t, r) // on an empty bucket: returns at once
	ctx := timeout(t, 10*time.Second)
	for _, c := range []*proto.CardStatus{card("c1", 1), card("c0", 0)} {
		if err := r.PutCard(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 2*time.Second, early.has("c0", "c1"))

	cards, err := r.Cards(ctx)
	if err != nil || len(cards) != 2 || cards[0].Card != "c0" || cards[1].Card != "c1" || cards[1].Queue != 1 {
		t.Fatalf("Cards = %+v, %v", cards, err)
	}

	// A watch started now has the current leases by the time WatchCards returns.
	late, _ := watch(t, r)
	if err := late.has("c0", "c1")(); err != nil {
		t.Fatalf("after WatchCards returned: %v", err)
	}

	if err := r.DeleteCard(ctx, "c0"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, early.has("c1"))
	waitFor(t, 2*time.Second, late.has("c1"))
	if cards, err := r.Cards(ctx); err != nil || len(cards) != 1 || cards[0].Card != "c1" {
		t.Fatalf("Cards after delete = %+v, %v", cards, err)
	}
	// Heartbeats are repeated puts: the view is updated in place.
	if err := r.PutCard(ctx, card("c1", 9)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, func() error {
		early.mu.Lock()
		defer early.mu.Unlock()
		if q := early.cards["c1"].Queue; q != 9 {
			return fmt.Errorf("queue %d", q)
		}
		return nil
	})
	early.mu.Lock()
	t.Logf("events: %v", early.events)
	for _, e := range early.events {
		if e[0] == '-' && e != "-c0" {
			t.Errorf("unexpected removal %s", e)
		}
	}
	early.mu.Unlock()

	// What PutCard refuses.
	bad := card("c.2", 0)
	if err := r.PutCard(ctx, bad); !errors.Is(err, proto.ErrBadID) {
		t.Errorf("dotted card id: %v", err)
	}
	bad = card("c2", 0)
	bad.V = 99
	if err := r.PutCard(ctx, bad); proto.CodeOf(err) != proto.CodeVersion {
		t.Errorf("wrong version: %v", err)
	}
	if err := r.DeleteCard(ctx, "c>"); !errors.Is(err, proto.ErrBadID) {
		t.Errorf("bad id deleted: %v", err)
	}
}

// A card that stops heartbeating disappears from watchers within about its lease TTL;
// one that keeps heartbeating stays.
func TestRegistryLeaseExpiry(t *testing.T) {
	s := startServer(t, ServerConfig{})
	nc := connect(t, s.ClientURL())
	r := openRegistry(t, nc, "expiry", 1500*time.Millisecond) // rounded up to 2s
	if r.LeaseTTL() != 2*time.Second {
		t.Fatalf("lease TTL %v, want 2s", r.LeaseTTL())
	}
	v, _ := watch(t, r)

	ctx, stop := context.WithCancel(context.Background())
	var beats sync.WaitGroup
	beats.Add(1)
	go func() { // the live card's heartbeat, owned by ctx
		defer beats.Done()
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		for {
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			if err := r.PutCard(pctx, card("alive", 0)); err != nil && ctx.Err() == nil {
				t.Errorf("heartbeat: %v", err)
			}
			cancel()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { stop(); beats.Wait() }()

	if err := r.PutCard(timeout(t, time.Second), card("dead", 0)); err != nil {
		t.Fatal(err)
	}
	lastBeat := time.Now()
	waitFor(t, 2*time.Second, v.has("alive", "dead"))
	waitFor(t, 5*time.Second, v.has("alive"))
	gone := time.Since(lastBeat)
	t.Logf("lease of 2s lapsed after %v", gone.Round(10*time.Millisecond))
	if gone < 1500*time.Millisecond {
		t.Fatalf("lease lapsed after %v, before its TTL", gone)
	}
	cards, err := r.Cards(timeout(t, time.Second))
	if err != nil || len(cards) != 1 || cards[0].Card != "alive" {
		t.Fatalf("Cards = %+v, %v", cards, err)
	}
}

func TestRegistryBadLease(t *testing.T) {
	s := startServer(t, ServerConfig{})
	nc := connect(t, s.ClientURL())
	var logs syncBuffer
	r := openRegistry(t, nc, "bad", 30*time.Second, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	ctx := timeout(t, 5*time.Second)
	if err := r.PutCard(ctx, card("good", 0)); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := proto.Marshal(card("someone-else", 0))
	for key, data := range map[string][]byte{"card.junk": []byte("\x93garbage"), "card.liar": other} {
		if _, err := js.Publish(ctx, "$KV."+r.Bucket()+"."+key, data); err != nil {
			t.Fatal(err)
		}
	}
	cards, err := r.Cards(ctx)
	if len(cards) != 1 || cards[0].Card != "good" || !errors.Is(err, ErrBadLease) {
		t.Fatalf("Cards = %+v, %v: want the good card and ErrBadLease", cards, err)
	}
	t.Logf("%v", err)
	v, _ := watch(t, r)
	if err := v.has("good")(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(logs.Bytes(), []byte("card.junk")) || !bytes.Contains(logs.Bytes(), []byte("card.liar")) {
		t.Fatalf("bad leases not logged:\n%s", logs.Bytes())
	}
}

func TestWatchSyncDeadline(t *testing.T) {
	s := startServer(t, ServerConfig{})
	nc := connect(t, s.ClientURL())
	r := openRegistry(t, nc, "m", 30*time.Second, WithLogger(slog.New(slog.DiscardHandler)))
	s.Shutdown() // the registry can no longer be read
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := r.WatchCards(ctx, func(string, *proto.CardStatus) { t.Error("callback called") })
	if !errors.Is(err, ErrWatch) {
		t.Fatalf("err = %v, want ErrWatch", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("gave up after %v, deadline 300ms", d)
	}
	t.Logf("%v", err)
	waitWatchers(t, r)
}

// The server restarts on the same port and store: clients reconnect, requests succeed
// again, leases written before the restart are still there, and a watch started before
// it sees leases written after it.
func TestReconnect(t *testing.T) {
	port, dir := freePort(t), t.TempDir()
	s := startServer(t, ServerConfig{Port: port, StoreDir: dir})
	responder := connect(t, s.ClientURL())
	if _, err := responder.Subscribe("ping", func(m *nats.Msg) { _ = m.Respond([]byte("pong")) }); err != nil {
		t.Fatal(err)
	}
	if err := responder.Flush(); err != nil {
		t.Fatal(err)
	}
	nc := connect(t, s.ClientURL())
	r := openRegistry(t, nc, "restart", 30*time.Second, WithLogger(slog.New(slog.DiscardHandler)))
	ping := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := Request(ctx, nc, nats.NewMsg("ping"))
		return err
	}
	if err := ping(); err != nil {
		t.Fatal(err)
	}
	if err := r.PutCard(timeout(t, time.Second), card("before", 0)); err != nil {
		t.Fatal(err)
	}
	v, _ := watch(t, r)

	s.Shutdown()
	waitFor(t, 2*time.Second, func() error {
		if nc.IsConnected() {
			return errors.New("still connected")
		}
		return nil
	})
	// While the server is away a request fails at once: nothing is buffered for replay.
	start := time.Now()
	err := ping()
	if err == nil || time.Since(start) > 100*time.Millisecond || !errors.Is(err, ErrNotConnected) {
		t.Fatalf("request while disconnected: %v after %v, want ErrNotConnected at once", err, time.Since(start))
	}

	restarted := time.Now()
	startServer(t, ServerConfig{Port: port, StoreDir: dir})
	waitFor(t, 5*time.Second, ping)
	t.Logf("request succeeded %v after the restart", time.Since(restarted).Round(time.Millisecond))

	cards, err := r.Cards(timeout(t, 2*time.Second))
	if err != nil || len(cards) != 1 || cards[0].Card != "before" {
		t.Fatalf("leases after restart: %+v, %v", cards, err)
	}
	waitFor(t, 5*time.Second, func() error {
		return r.PutCard(timeout(t, time.Second), card("after", 0))
	})
	waitFor(t, 5*time.Second, v.has("after", "before"))
	t.Logf("watch caught up %v after the restart", time.Since(restarted).Round(time.Millisecond))
}

// A bucket that vanished (a server restarted without its store) is recreated by the next
// heartbeat.
func TestRegistryRecreatesBucket(t *testing.T) {
	s := startServer(t, ServerConfig{})
	nc := connect(t, s.ClientURL())
	r := openRegistry(t, nc, "heal", 30*time.Second)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := timeout(t, 5*time.Second)
	if err := js.DeleteKeyValue(ctx, r.Bucket()); err != nil {
		t.Fatal(err)
	}
	if err := r.PutCard(ctx, card("c0", 0)); err != nil {
		t.Fatal(err)
	}
	if cards, err := r.Cards(ctx); err != nil || len(cards) != 1 {
		t.Fatalf("Cards = %+v, %v", cards, err)
	}
}

// syncBuffer is a bytes.Buffer safe for the watch goroutine's logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

// TestRegistryReadOnly: a registry opened with no lease TTL (a router's) sees the leases
// others write and refuses to write one itself.
func TestRegistryReadOnly(t *testing.T) {
	s := startServer(t, ServerConfig{})
	writer := openRegistry(t, connect(t, s.ClientURL()), "ro", 30*time.Second)
	reader := openRegistry(t, connect(t, s.ClientURL()), "ro", 0)
	v, _ := watch(t, reader)
	if err := writer.PutCard(timeout(t, 5*time.Second), card("c0", 0)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, v.has("c0"))
	if err := reader.PutCard(timeout(t, 5*time.Second), card("c1", 0)); err == nil || !strings.Contains(err.Error(), "reading") {
		t.Fatalf("read-only PutCard: %v", err)
	}
	if _, err := OpenRegistry(timeout(t, 5*time.Second), connect(t, s.ClientURL()), "ro", -time.Second); err == nil {
		t.Fatal("negative TTL accepted")
	}
}

// TestRegistryReplicasStandalone: asking a single server for a replicated registry fails
// clearly instead of with the bare JetStream error.
func TestRegistryReplicasStandalone(t *testing.T) {
	s := startServer(t, ServerConfig{})
	_, err := OpenRegistry(timeout(t, 5*time.Second), connect(t, s.ClientURL()), "r3", 30*time.Second, WithReplicas(3))
	if err == nil || !strings.Contains(err.Error(), "3 replicas") || !strings.Contains(err.Error(), "NATS cluster") {
		t.Fatalf("R3 registry on a standalone server: %v", err)
	}
	t.Logf("%v", err)
}

// TestRegistryReplicasCluster: on a 3-node cluster a writer scales an existing R1 registry
// to R3 (keeping its leases), a writer without WithReplicas keeps R3 rather than scaling
// it back down, and a reader binds to it whatever it asks.
func TestRegistryReplicasCluster(t *testing.T) {
	ports := []int{freePort(t), freePort(t), freePort(t)}
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	var urls []string
	for i, p := range ports {
		s := startServer(t, ServerConfig{Name: fmt.Sprint("n", i), ClusterName: "reg", ClusterPort: p, Routes: routes})
		urls = append(urls, s.ClientURL())
	}
	nc := connect(t, strings.Join(urls, ","))
	replicas := func() int {
		t.Helper()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		st, err := js.Stream(timeout(t, 5*time.Second), "KV_"+proto.Bucket("rep"))
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Config.Replicas
	}
	// The cluster is formed once its JetStream meta group places an R1 stream.
	var r1 *Registry
	waitFor(t, 30*time.Second, func() error {
		var err error
		r1, err = OpenRegistry(timeout(t, 5*time.Second), nc, "rep", 30*time.Second, WithLogger(slog.New(slog.DiscardHandler)))
		return err
	})
	if got := replicas(); got != 1 || r1.LeaseTTL() != 30*time.Second {
		t.Fatalf("replicas %d, lease TTL %v: want 1, 30s", got, r1.LeaseTTL())
	}
	if err := r1.PutCard(timeout(t, 5*time.Second), card("c0", 0)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		ttl   time.Duration
		opts  []RegistryOption
		want  int
		lease time.Duration // LeaseTTL
	}{
		{"writer scales up", 3 * time.Second, []RegistryOption{WithReplicas(3)}, 3, ClusterLeaseFloor},
		{"writer without replicas keeps them", 3 * time.Second, nil, 3, ClusterLeaseFloor},
		{"reader binds as it is", 0, []RegistryOption{WithReplicas(1)}, 3, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := OpenRegistry(timeout(t, 15*time.Second), connect(t, urls[0]), "rep", tc.ttl, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if got := replicas(); got != tc.want {
				t.Fatalf("replicas %d, want %d", got, tc.want)
			}
			if got := r.LeaseTTL(); got != tc.lease {
				t.Fatalf("lease TTL %v, want %v", got, tc.lease)
			}
			cards, err := r.Cards(timeout(t, 5*time.Second))
			if err != nil || len(cards) != 1 || cards[0].Card != "c0" {
				t.Fatalf("leases: %+v, %v", cards, err)
			}
		})
	}
}

// TestRegistryBindErrors: a reader gives up at once where waiting cannot help (a stream of
// the bucket's name that is no KV bucket), and at its deadline, with the last answer, where
// it might (a server without JetStream answers as one whose JetStream is not up yet).
func TestRegistryBindErrors(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready within 10s")
	}
	s := startServer(t, ServerConfig{})
	js, err := jetstream.New(connect(t, s.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(timeout(t, 5*time.Second), jetstream.StreamConfig{Name: "KV_" + proto.Bucket("bad"), Subjects: []string{"bad.>"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, url, model string
		wait             time.Duration // the caller's deadline
		want             []error
		within           time.Duration
	}{
		{"not a KV bucket", s.ClientURL(), "bad", 10 * time.Second, []error{jetstream.ErrBadBucket}, 3 * time.Second},
		{"no JetStream", ns.ClientURL(), "m", time.Second, []error{context.DeadlineExceeded, nats.ErrNoResponders}, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := OpenRegistry(timeout(t, tc.wait), connect(t, tc.url), tc.model, 0)
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Fatalf("err = %v, want %v", err, want)
				}
			}
			if !strings.Contains(fmt.Sprint(err), proto.Bucket(tc.model)) {
				t.Fatalf("err = %v does not name the bucket", err)
			}
			if d := time.Since(start); d > tc.within {
				t.Fatalf("gave up after %v, want within %v", d, tc.within)
			}
		})
	}
}
