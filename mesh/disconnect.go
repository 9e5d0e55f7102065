package mesh

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
)

// A request waiting for its reply when the connection drops can never be answered: the
// reply subscription is gone with the connection, and nothing is buffered for replay
// (ReconnectBufSize -1). Left alone it would wait out its whole deadline (a router's
// layer step then stalls for an attempt timeout after a NATS restart). So Request
// registers with its connection's watch, which signals every waiting request as soon as
// the connection is lost, and Request reports ErrNotConnected at once. The watch also
// owns the connection's reply mux (request.go): one subscription on a private inbox
// whose replies it hands to the waiting Requests by token.

// connWatch follows one connection's status for the requests waiting on it.
type connWatch struct {
	mu      sync.Mutex
	waiting map[uint64]*reqWaiter // by token
	next    uint64                // the last token given out
	prefix  string                // the mux's reply subjects are prefix + token
	sub     *nats.Subscription    // the mux; nil until the first Request
}

// waiter is what the watch signals when the connection drops.
type waiter struct {
	lost   atomic.Bool   // the connection dropped while it waited
	lostCh chan struct{} // capacity 1: wakes the wait
}

// watches maps a *nats.Conn to its *connWatch. Each watch runs one goroutine, owned by
// the connection: it ends when the connection is closed.
var watches sync.Map

// watchOf returns nc's watch, starting it on first use.
func watchOf(nc *nats.Conn) *connWatch {
	if w, ok := watches.Load(nc); ok {
		return w.(*connWatch)
	}
	w := &connWatch{waiting: map[uint64]*reqWaiter{}}
	if actual, loaded := watches.LoadOrStore(nc, w); loaded {
		return actual.(*connWatch)
	}
	ch := nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	if nc.IsClosed() { // closed before the listener was in place: no event will come
		nc.RemoveStatusListener(ch)
		watches.Delete(nc)
		return w
	}
	go w.run(nc, ch)
	return w
}

func (w *connWatch) run(nc *nats.Conn, ch chan nats.Status) {
	defer nc.RemoveStatusListener(ch)
	for st := range ch {
		w.dropAll()
		if st == nats.CLOSED {
			watches.Delete(nc)
			return
		}
	}
}

// dropAll wakes every waiting request.
func (w *connWatch) dropAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.waiting {
		w.drop(r)
	}
}

// drop marks r's connection lost and wakes its wait.
func (w *connWatch) drop(r *reqWaiter) {
	r.lost.Store(true)
	select {
	case r.lostCh <- struct{}{}:
	default:
	}
}

// muxOf returns the prefix of nc's reply subjects, subscribing the mux on first use. The
// subscription lives as long as the connection (nats.go resubscribes it after a
// reconnect); its pending limits are off because what it can hold is bounded by the
// Requests waiting, each taking one reply.
func (w *connWatch) muxOf(nc *nats.Conn) (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sub != nil {
		return w.prefix, nil
	}
	prefix := nc.NewInbox() + "."
	sub, err := nc.Subscribe(prefix+"*", func(m *nats.Msg) { w.deliver(prefix, m) })
	if err != nil {
		return "", err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return "", err
	}
	w.prefix, w.sub = prefix, sub
	return prefix, nil
}

// deliver hands a reply to the Request waiting for its token; a reply nobody waits for
// any more (its Request timed out or was cancelled) is dropped.
func (w *connWatch) deliver(prefix string, m *nats.Msg) {
	token, err := strconv.ParseUint(strings.TrimPrefix(m.Subject, prefix), 10, 64)
	if err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if r := w.waiting[token]; r != nil {
		select {
		case r.reply <- m:
		default: // a second reply to one request: the first one counts
		}
	}
}

// WaitConnected returns nil once nc is connected, at once if it is; it fails with
// ErrNotConnected when ctx ends first or the connection is closed for good. A router step
// that meets a NATS restart waits here for the reconnect rather than spending its retries
// on sends that cannot leave.
func WaitConnected(ctx context.Context, nc *nats.Conn) error {
	if nc.IsConnected() {
		return nil
	}
	ch := nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	defer nc.RemoveStatusListener(ch)
	for {
		// Checked after registering, so a reconnect between the two cannot be missed.
		switch {
		case nc.IsConnected():
			return nil
		case nc.IsClosed():
			return fmt.Errorf("%w: connection closed", ErrNotConnected)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: still reconnecting: %w", ErrNotConnected, ctx.Err())
		case <-ch:
		}
	}
}
