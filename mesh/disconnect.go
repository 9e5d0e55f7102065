package mesh

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
)

// A request waiting for its reply when the connection drops can never be answered: the
// reply subscription is gone with the connection, and nothing is buffered for replay
// (ReconnectBufSize -1). Left alone it would wait out its whole deadline (a router's
// layer step then stalls for an attempt timeout after a NATS restart). So Request
// registers its cancel with its connection's watch, which cancels every waiting request
// as soon as the connection is lost, and Request reports ErrNotConnected at once.

// connWatch follows one connection's status for the requests waiting on it.
type connWatch struct {
	mu      sync.Mutex
	waiting map[*waiter]struct{}
}

// waiter is one Request waiting on a connection.
type waiter struct {
	cancel context.CancelFunc
	lost   atomic.Bool // the connection dropped while it waited
}

// watches maps a *nats.Conn to its *connWatch. Each watch runs one goroutine, owned by
// the connection: it ends when the connection is closed.
var watches sync.Map

// watchOf returns nc's watch, starting it on first use.
func watchOf(nc *nats.Conn) *connWatch {
	if w, ok := watches.Load(nc); ok {
		return w.(*connWatch)
	}
	w := &connWatch{waiting: map[*waiter]struct{}{}}
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

// dropAll cancels every waiting request.
func (w *connWatch) dropAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for r := range w.waiting {
		r.lost.Store(true)
		r.cancel()
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
