package mesh

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"

	"github.com/moemesh/moemesh/proto"
)

// Request errors. Besides its sentinel, an error from Request carries a *proto.Error, so
// proto.CodeOf maps it to a wire (and HTTP) code: no responders and not connected → 503,
// timeout → 504, payload too large → 413.
var (
	// ErrNoDeadline: a network wait was asked for without a deadline. Permanent.
	ErrNoDeadline = errors.New("mesh: no deadline")
	// ErrNoResponders: nobody subscribes to the subject (the card is gone). Retryable.
	ErrNoResponders = errors.New("mesh: no responders")
	// ErrTimeout: the attempt's deadline passed without a reply. Retryable: after churn a
	// request can be routed to a departing responder.
	ErrTimeout = errors.New("mesh: timeout")
	// ErrNotConnected: the connection is closed, draining or reconnecting. Permanent for
	// this call: a retry milliseconds later on the same connection would fail the same way.
	ErrNotConnected = errors.New("mesh: not connected to NATS")
)

// requestError is what Request returns for transport failures. Unwrap exposes the mesh
// sentinel, a *proto.Error for proto.CodeOf, and the nats.go cause.
type requestError struct {
	kind    error
	subject string
	wire    *proto.Error
	cause   error
}

func (e *requestError) Error() string {
	return fmt.Sprintf("%v on %s: %v", e.kind, e.subject, e.cause)
}

func (e *requestError) Unwrap() []error {
	errs := []error{e.kind, e.wire, e.cause}
	out := errs[:0]
	for _, err := range errs {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// Request sends msg and waits for one reply until ctx's deadline; a ctx without a deadline
// is refused (ErrNoDeadline). If the connection drops meanwhile, it fails at once with
// ErrNotConnected: the reply could no longer arrive. It stamps msg with proto.HeaderDeadline, so the responder can
// drop work whose caller has given up.
//
// A reply carrying a service error (proto.HeaderErrorCode, as written by RespondError or
// micro's Request.Error) becomes an error wrapping a *proto.Error; transport failures
// wrap ErrNoResponders, ErrTimeout, ErrNotConnected or the nats.go error. Retryable tells
// which are worth another attempt.
func Request(ctx context.Context, nc *nats.Conn, msg *nats.Msg) (*nats.Msg, error) {
	return RequestBy(ctx, nc, msg, time.Time{})
}

// RequestBy is Request bounded also by the time by (zero: only ctx's deadline); a bound
// already past fails with ErrTimeout, as a reply that did not come in time. The bound is
// the waiter's timer, so unlike a context.WithTimeout it costs nothing per attempt.
func RequestBy(ctx context.Context, nc *nats.Conn, msg *nats.Msg, by time.Time) (*nats.Msg, error) {
	if msg == nil {
		return nil, errors.New("mesh: Request: nil message")
	}
	dl, ok := ctx.Deadline()
	if !by.IsZero() && (!ok || by.Before(dl)) {
		dl, ok = by, true
	}
	if !ok {
		return nil, fmt.Errorf("%w: request on %s", ErrNoDeadline, msg.Subject)
	}
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}

	w := watchOf(nc)
	r, err := w.enter(nc, dl, msg.Header)
	if err != nil {
		return nil, classify(msg.Subject, err)
	}
	msg.Reply = r.inbox
	var reply *nats.Msg
	if err = nc.PublishMsg(msg); err == nil {
		reply, err = r.wait(ctx, dl)
	}
	msg.Reply = ""
	if lost := w.leave(r); err != nil {
		if lost && ctx.Err() == nil {
			// The connection dropped while we waited: the reply cannot come (disconnect.go).
			err = fmt.Errorf("%w: the connection was lost while waiting for the reply", nats.ErrDisconnected)
		}
		return nil, classify(msg.Subject, err)
	}
	if perr, ok := proto.ParseError(reply.Header.Get(proto.HeaderErrorCode), reply.Header.Get(proto.HeaderError)); ok {
		return nil, fmt.Errorf("mesh: %s answered: %w", msg.Subject, perr)
	}
	return reply, nil
}

// classify maps a nats.go request error to the package's errors.
func classify(subject string, err error) error {
	re := &requestError{subject: subject, cause: err}
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		re.kind = ErrNoResponders
		re.wire = proto.Errorf(proto.CodeUnavailable, "no responders on %s", subject)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		re.kind = ErrTimeout
		re.wire = proto.Errorf(proto.CodeDeadline, "no reply on %s before the deadline", subject)
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionDraining),
		errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrReconnectBufExceeded),
		errors.Is(err, nats.ErrInvalidConnection):
		re.kind = ErrNotConnected
		re.wire = proto.Errorf(proto.CodeUnavailable, "not connected to NATS")
	case errors.Is(err, nats.ErrMaxPayload):
		return fmt.Errorf("mesh: request on %s: %w: %w", subject, proto.Errorf(proto.CodeTooLarge, "message exceeds the server's max payload"), err)
	default:
		// context.Canceled, bad subject, ...: the caller's decision or a bug; permanent.
		return fmt.Errorf("mesh: request on %s: %w", subject, err)
	}
	return re
}

// Retryable reports whether another attempt (on another replica, or a little later) may
// succeed: no responders, timeouts and a lapsed attempt deadline are retryable; service
// errors follow proto.Code.Retryable; a missing deadline, a cancelled context and a lost
// connection are not. Callers still check their own context before retrying.
func Retryable(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, context.Canceled), errors.Is(err, ErrNoDeadline), errors.Is(err, ErrNotConnected):
		return false
	case errors.Is(err, ErrNoResponders), errors.Is(err, ErrTimeout),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return true
	}
	var pe *proto.Error
	if errors.As(err, &pe) {
		return pe.Code.Retryable()
	}
	return false
}

// Retry runs an idempotent operation up to Attempts times with exponential backoff and
// jitter between attempts. The zero value is usable.
type Retry struct {
	Attempts int           // total attempts; 0 = 3
	Initial  time.Duration // first backoff; 0 = 5 ms
	Max      time.Duration // backoff cap; 0 = 100 ms
	// PerAttempt bounds each attempt (within ctx's deadline); 0 = the rest of ctx, which
	// then must have a deadline.
	PerAttempt time.Duration
	// Notify, if set, is called after every failed attempt (attempt counts from 0), before
	// any wait: the hook for a tracing event.
	Notify func(err error, attempt int)
}

// Retry defaults: three tries within a few tens of milliseconds suit a layer step, whose
// whole budget is a fraction of a second.
const (
	defaultAttempts       = 3
	defaultInitialBackoff = 5 * time.Millisecond
	defaultMaxBackoff     = 100 * time.Millisecond
)

// Do calls op until it succeeds, fails with an error Retryable rejects, the attempts are
// spent, or ctx is done. Each call gets its own sub-deadline and its attempt number
// (0, 1, ...), so op can pick another replica. The returned error wraps op's last error
// (and ctx's error if that is what stopped the retries) with the attempt count.
func (r Retry) Do(ctx context.Context, op func(ctx context.Context, attempt int) error) error {
	if r.Attempts <= 0 {
		r.Attempts = defaultAttempts
	}
	if r.Initial <= 0 {
		r.Initial = defaultInitialBackoff
	}
	if r.Max <= 0 {
		r.Max = defaultMaxBackoff
	}
	if _, ok := ctx.Deadline(); !ok && r.PerAttempt <= 0 {
		return fmt.Errorf("%w: Retry.Do needs a ctx deadline or PerAttempt", ErrNoDeadline)
	}
	eb := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(r.Initial),
		backoff.WithMaxInterval(r.Max),
		backoff.WithMultiplier(2),
		backoff.WithMaxElapsedTime(0), // the budget is ctx's deadline, not the backoff's
	)
	b := backoff.WithContext(backoff.WithMaxRetries(eb, uint64(r.Attempts-1)), ctx)

	attempts := 0
	var last error
	err := backoff.Retry(func() error {
		if err := ctx.Err(); err != nil {
			return backoff.Permanent(err)
		}
		attempt := attempts
		attempts++
		actx, cancel := ctx, context.CancelFunc(func() {})
		if r.PerAttempt > 0 {
			actx, cancel = context.WithTimeout(ctx, r.PerAttempt)
		}
		err := op(actx, attempt)
		cancel()
		if err == nil {
			return nil
		}
		last = err
		if r.Notify != nil {
			r.Notify(err, attempt)
		}
		if !Retryable(err) || ctx.Err() != nil {
			return backoff.Permanent(err)
		}
		return err
	}, b)
	if err == nil {
		return nil
	}
	if last == nil { // ctx was done before the first attempt
		return fmt.Errorf("mesh: no attempt made: %w", err)
	}
	if cerr := ctx.Err(); cerr != nil && !errors.Is(last, cerr) {
		// Stopped by ctx (during a backoff wait, or op ignored its deadline).
		return fmt.Errorf("mesh: after %d %s: %w (gave up: %w)", attempts, plural(attempts), last, cerr)
	}
	return fmt.Errorf("mesh: after %d %s: %w", attempts, plural(attempts), last)
}

func plural(n int) string {
	if n == 1 {
		return "attempt"
	}
	return "attempts"
}

// A Request used to allocate its waiter, the waiter's map entry, a closure to unregister
// it, and the deadline header's string and slice, on every send; then a derived context
// for nats.go's request to wait on (the caller's cancel, the attempt's deadline, a lost
// connection), and nats.go's own per-request channel and token. Now each connection has
// one reply subscription (its watch's inbox mux): a Request takes a reused waiter, cuts
// its reply subject and deadline header from the waiter's arenas, publishes, and waits in
// one select on the reply, the caller's ctx, the waiter's timer and a lost connection.
// Nothing of that allocates per send (issue 8).

// reqWaiter is one Request's state. Reused: one Request holds it at a time; the
// connection's watch reaches it only while it is registered, and then only through reply
// and lost (buffered, sent to without blocking) and the lost flag.
type reqWaiter struct {
	waiter
	token uint64         // this Request's key in the watch's mux
	inbox string         // reply subject: the mux's prefix and token
	reply chan *nats.Msg // capacity 1: the reply, delivered by the mux
	timer *time.Timer    // the deadline; stopped between Requests
	// stamps and slots are arenas for the deadline header and the reply subject: each value
	// is cut from the unused end of the current chunk and never written again, so a header
	// or subject a Request leaves in the caller's message stays valid however long it is
	// kept. A full chunk is dropped, not reused; it lives on only while something still
	// points into it.
	stamps []byte
	slots  []string
}

// Arena chunk sizes: a deadline is at most 20 bytes, so both last about 100 Requests.
const (
	stampChunk = 2048
	slotChunk  = 128
)

// freeWaiters keeps waiters between Requests. A plain list rather than a sync.Pool, which
// empties at every other GC and, under -race, drops Puts at random: either would make the
// steady state allocate again. maxFreeWaiters bounds what it keeps (each waiter holds up
// to 4 KiB of arenas) to more than a process has Requests in flight at once.
var freeWaiters struct {
	sync.Mutex
	list []*reqWaiter
}

const maxFreeWaiters = 256

func getWaiter() *reqWaiter {
	freeWaiters.Lock()
	defer freeWaiters.Unlock()
	n := len(freeWaiters.list)
	if n == 0 {
		return new(reqWaiter)
	}
	r := freeWaiters.list[n-1]
	freeWaiters.list[n-1] = nil
	freeWaiters.list = freeWaiters.list[:n-1]
	return r
}

func putWaiter(r *reqWaiter) {
	freeWaiters.Lock()
	defer freeWaiters.Unlock()
	if len(freeWaiters.list) < maxFreeWaiters {
		freeWaiters.list = append(freeWaiters.list, r)
	}
}

// enter registers a Request about to wait on nc until dl, which it stamps into h
// (proto.HeaderDeadline, replacing any value), and gives it a reply subject on nc's mux;
// leave unregisters it.
func (w *connWatch) enter(nc *nats.Conn, dl time.Time, h nats.Header) (*reqWaiter, error) {
	prefix, err := w.muxOf(nc)
	if err != nil {
		return nil, err
	}
	r := getWaiter()
	if r.reply == nil {
		r.reply, r.lostCh = make(chan *nats.Msg, 1), make(chan struct{}, 1)
		r.timer = time.NewTimer(time.Hour)
		r.timer.Stop()
	}
	h[proto.HeaderDeadline] = r.stamp(dl.UnixNano())
	r.lost.Store(false)
	w.mu.Lock()
	w.next++
	r.token = w.next
	w.waiting[r.token] = r
	w.mu.Unlock()
	r.inbox = r.subject(prefix, r.token)
	// A drop just before registering sent its event already: look at the status itself.
	if !nc.IsConnected() {
		w.drop(r)
	}
	return r, nil
}

// wait waits for r's reply until dl, ctx's end or a lost connection.
func (r *reqWaiter) wait(ctx context.Context, dl time.Time) (*nats.Msg, error) {
	r.timer.Reset(time.Until(dl))
	defer r.timer.Stop()
	select {
	case m := <-r.reply:
		if len(m.Data) == 0 && m.Header.Get(statusHeader) == noResponders {
			return nil, nats.ErrNoResponders
		}
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-r.timer.C:
		return nil, context.DeadlineExceeded
	case <-r.lostCh:
		return nil, nats.ErrDisconnected
	}
}

// The status a NATS server sends to a request's reply subject when nobody subscribes to
// its subject (nats.go names them statusHdr and noResponders, unexported).
const (
	statusHeader = "Status"
	noResponders = "503"
)

// leave unregisters r, which the caller must not use again, and says whether the
// connection dropped while it waited.
func (w *connWatch) leave(r *reqWaiter) (lost bool) {
	w.mu.Lock()
	delete(w.waiting, r.token)
	w.mu.Unlock()
	// Unregistered: neither the mux nor dropAll reaches r any more. A reply or drop that came
	// after the wait ended is drained here, so the next Request starts clean.
	select {
	case <-r.reply:
	default:
	}
	select {
	case <-r.lostCh:
	default:
	}
	lost = r.lost.Load()
	putWaiter(r)
	return lost
}

// subject returns prefix followed by token in decimal, cut from r's arena.
func (r *reqWaiter) subject(prefix string, token uint64) string {
	if cap(r.stamps)-len(r.stamps) < len(prefix)+20 {
		r.stamps = make([]byte, 0, max(stampChunk, len(prefix)+20))
	}
	start := len(r.stamps)
	r.stamps = append(r.stamps, prefix...)
	r.stamps = strconv.AppendUint(r.stamps, token, 10)
	b := r.stamps[start:]
	return unsafe.String(&b[0], len(b))
}

// stamp returns v in decimal as a one-value header, cut from r's arenas.
func (r *reqWaiter) stamp(v int64) []string {
	if cap(r.stamps)-len(r.stamps) < 20 {
		r.stamps = make([]byte, 0, stampChunk)
	}
	start := len(r.stamps)
	r.stamps = strconv.AppendInt(r.stamps, v, 10)
	b := r.stamps[start:]
	if len(r.slots) == 0 {
		r.slots = make([]string, slotChunk)
	}
	// Capacity 1: a caller appending to the header gets a copy, never the next slot.
	slot := r.slots[:1:1]
	r.slots = r.slots[1:]
	slot[0] = unsafe.String(&b[0], len(b))
	return slot
}
