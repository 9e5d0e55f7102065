package mesh

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Connection defaults (see Connect).
const (
	DefaultConnectWait = 10 * time.Second // first-connect wait when ctx has no deadline
	reconnectWait      = 250 * time.Millisecond
	reconnectJitter    = 100 * time.Millisecond
	// reconnectMaxWait caps the backoff: a service comes back at most this long (plus
	// jitter) after its server, well inside the 5 s the mesh promises after a restart.
	reconnectMaxWait = time.Second
	dialTimeout      = 2 * time.Second
	pingInterval     = 5 * time.Second
	maxPingsOut      = 3 // a dead server is noticed within ~15 s even without a TCP error
)

// ErrConnect: no connection to NATS could be made.
var ErrConnect = errors.New("mesh: cannot connect to NATS")

// ReconnectDelay is the wait after the attempts-th failed round of reconnects (1 after
// the first): 250 ms doubling up to 1 s, plus jitter (ns, the caller's random share of
// up to 100 ms).
func ReconnectDelay(attempts int, jitter int64) time.Duration {
	d := reconnectWait
	for i := 1; i < attempts && d < reconnectMaxWait; i++ {
		d *= 2
	}
	return min(d, reconnectMaxWait) + time.Duration(max(0, jitter))
}

// Connect dials NATS at url (a comma-separated list is fine) with the defaults every
// moemesh service wants, and waits until the first connection is up: until ctx's deadline,
// or DefaultConnectWait when it has none.
//
// Defaults, each overridable by opts (they are applied last):
//   - RetryOnFailedConnect: a service may start before its server; the first connection is
//     retried like a reconnect during the wait above.
//   - MaxReconnects(-1) with an exponential backoff (ReconnectDelay): never give up, come
//     back within a fraction of a second from a short outage, poll a long one only every
//     second, and (with the jitter) do not let a fleet reconnect in lockstep.
//   - ReconnectBufSize(-1): while disconnected, publishes and requests fail at once instead
//     of being buffered and replayed late (stale tensors, deadlines long gone).
//   - PingInterval 5 s, MaxPingsOut 3; a 2 s dial timeout.
func Connect(ctx context.Context, url, name string, opts ...nats.Option) (*nats.Conn, error) {
	if url == "" {
		url = nats.DefaultURL
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w at %s: %w", ErrConnect, url, err)
	}
	wait := DefaultConnectWait
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	all := append([]nats.Option{
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.ReconnectJitter(reconnectJitter, reconnectJitter),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			return ReconnectDelay(attempts, rand.Int64N(int64(reconnectJitter)+1))
		}),
		nats.ReconnectBufSize(-1),
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
		nats.Timeout(dialTimeout),
	}, opts...)
	// Keep the last dial error for our own message: with RetryOnFailedConnect nats.go
	// reports it only to ReconnectErrCB (which we wrap, keeping the caller's).
	var dialErr atomic.Pointer[error]
	all = append(all, func(o *nats.Options) error {
		next := o.ReconnectErrCB
		o.ReconnectErrCB = func(nc *nats.Conn, err error) {
			dialErr.Store(&err)
			if next != nil {
				next(nc, err)
			}
		}
		return nil
	})
	lastErr := func(nc *nats.Conn) error {
		if err := nc.LastError(); err != nil {
			return err
		}
		if err := dialErr.Load(); err != nil {
			return *err
		}
		return errors.New("no server answered")
	}
	nc, err := nats.Connect(url, all...)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %w", ErrConnect, url, err)
	}
	// A status listener rather than ConnectHandler, which the caller's options may own.
	status := nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	defer nc.RemoveStatusListener(status)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		switch nc.Status() {
		case nats.CONNECTED:
			return nc, nil
		case nats.CLOSED:
			return nil, fmt.Errorf("%w at %s: connection closed: %w", ErrConnect, url, lastErr(nc))
		}
		select {
		case <-status:
		case <-timer.C:
			err := lastErr(nc)
			nc.Close()
			return nil, fmt.Errorf("%w at %s within %v: %w", ErrConnect, url, wait.Round(time.Millisecond), err)
		case <-ctx.Done():
			err := lastErr(nc)
			nc.Close()
			return nil, fmt.Errorf("%w at %s: %w (last: %w)", ErrConnect, url, ctx.Err(), err)
		}
	}
}
