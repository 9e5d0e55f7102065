package mesh

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/moemesh/moemesh/proto"
)

// Registry timings.
const (
	// DefaultSyncWait bounds WatchCards' initial sync when ctx has no earlier deadline.
	DefaultSyncWait = 10 * time.Second
	// markerTTL is how long a removal marker (lease expiry or DeleteCard) stays in the bucket.
	// A watcher whose consumer is recreated after a gap resumes from its last sequence and
	// must still find the markers of what was removed meanwhile; minutes is ample.
	markerTTL = 5 * time.Minute
	// ClusterLeaseFloor is the shortest lease a replicated registry (WithReplicas above 1)
	// writes. When the node leading the bucket's stream dies, the stream accepts no write
	// until a JetStream election ends (4 to 9 s), and the new leader then expires at once
	// every lease older than its TTL: with shorter leases every card would vanish from the
	// mesh after such an election, all daemons alive (TestChaosNATSCluster). A dead daemon
	// is still noticed at once by the requests it fails; only its lease stays longer.
	ClusterLeaseFloor = 12 * time.Second
	// opTimeout bounds registry calls whose ctx has no deadline.
	opTimeout = 5 * time.Second
	// drainTimeout bounds the wait for a stopped KV watcher to close its channel.
	drainTimeout = 2 * time.Second
)

var (
	// ErrBadLease: a card lease in the registry does not decode (corrupt, or written by a
	// build speaking another protocol version). Such leases are skipped.
	ErrBadLease = errors.New("mesh: undecodable card lease")
	// ErrWatch: a registry watch could not start or complete its initial sync.
	ErrWatch = errors.New("mesh: registry watch")

	errReconnected = errors.New("reconnected to NATS: restarting the watch")
	errWatchClosed = errors.New("watch closed by the client (consumer lost)")
)

// Registry is a model's registry: the JetStream KV bucket proto.Bucket(model) holding card
// leases under proto.CardKey (and, later, assignments and the controller lease).
//
// Leases carry a per-message TTL rather than a bucket-wide one: the bucket also holds keys
// that must not expire (assignments), and each daemon's own TTL then governs its leases
// whatever TTL other services open the registry with. With LimitMarkerTTL set, the server
// leaves a marker when a lease lapses, which watchers see as a purge.
//
// The bucket is file-backed so that leases survive a restart of a server that keeps its
// store; if the bucket disappears anyway, PutCard and WatchCards recreate it (WatchCards
// only where its user may create streams; see OpenRegistry).
type Registry struct {
	nc        *nats.Conn
	js        jetstream.JetStream
	kv        jetstream.KeyValue
	cfg       jetstream.KeyValueConfig
	stream    string // the bucket's stream, "KV_<bucket>"
	putPrefix string // "$KV.<bucket>.": a lease is published straight to its key's subject
	ttl       time.Duration
	log       *slog.Logger
	watchers  sync.WaitGroup // running watch goroutines
	// createDenied: the server refused this user the stream create (a reader without the
	// right); from then on the reader only looks the bucket up.
	createDenied atomic.Bool
	replicas     atomic.Int32 // the bucket's replicas, as a writer last created or updated it
}

// RegistryOption configures OpenRegistry.
type RegistryOption func(*Registry)

// WithLogger sets where the registry reports skipped leases and watch restarts
// (default slog.Default()).
func WithLogger(l *slog.Logger) RegistryOption {
	return func(r *Registry) {
		if l != nil {
			r.log = l
		}
	}
}

// WithReplicas sets how many servers of a NATS cluster hold the bucket (JetStream
// replicas; 1 = the default, 3 for a registry that survives the loss of a node). A
// standalone server accepts only 1. A writer (OpenRegistry with a lease TTL) applies it to a
// new bucket or as an update, and without it keeps the bucket's replicas; a reader applies
// it only to a bucket it creates. The leases of a replicated registry last at least
// ClusterLeaseFloor.
func WithReplicas(n int) RegistryOption {
	return func(r *Registry) {
		if n > 0 {
			r.cfg.Replicas = n
		}
	}
}

// OpenRegistry opens the bucket of model and returns its registry. ttl is the lifetime of
// the leases PutCard writes (about 3 heartbeats); JetStream counts message TTLs in whole
// seconds, so it is rounded up to them (at least 1 s).
//
// A writer (ttl > 0: expertd) creates the bucket or updates its configuration, which needs
// the right to create and update the stream. A ttl of 0 opens the registry for reading
// leases (gateway, router, status; the controller too, which writes assignments and the
// leader key to an existing bucket): PutCard then refuses, and the bucket is bound as it
// is. A reader creates a missing bucket only if its NATS user may (no authorization, or
// the admin); one that may not waits for a writer to create it, until ctx's deadline
// (opTimeout when it has none). So readers need no right to change a stream.
func OpenRegistry(ctx context.Context, nc *nats.Conn, model string, ttl time.Duration, opts ...RegistryOption) (*Registry, error) {
	if ttl < 0 {
		return nil, fmt.Errorf("mesh: registry of %s: lease TTL %v is negative", model, ttl)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("mesh: registry of %s: %w", model, err)
	}
	bucket := proto.Bucket(model)
	r := &Registry{
		nc: nc,
		js: js,
		cfg: jetstream.KeyValueConfig{
			Bucket:         bucket,
			Description:    "moemesh registry of model " + model,
			History:        1,
			Storage:        jetstream.FileStorage,
			LimitMarkerTTL: markerTTL,
		},
		stream:    "KV_" + bucket,
		putPrefix: "$KV." + bucket + ".",
		ttl:       time.Duration(math.Ceil(ttl.Seconds())) * time.Second,
		log:       slog.Default(),
	}
	for _, o := range opts {
		o(r)
	}
	if r.kv, err = r.openBucket(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Bucket is the registry's KV bucket name.
func (r *Registry) Bucket() string { return r.cfg.Bucket }

// LeaseTTL is the lifetime of the leases PutCard writes: the ttl of OpenRegistry, raised
// to ClusterLeaseFloor when the bucket is replicated.
func (r *Registry) LeaseTTL() time.Duration {
	if r.ttl > 0 && r.replicas.Load() > 1 {
		return max(r.ttl, ClusterLeaseFloor)
	}
	return r.ttl
}

// createAttempt bounds one stream create by a reader. The server drops a publish it
// refuses for want of permission, so such a create gets no reply and only a timeout ends
// it; the refusal itself reaches the connection as an asynchronous error (see refused).
const createAttempt = 2 * time.Second

// openBucket opens the bucket as OpenRegistry describes: a writer creates or updates it, a
// reader binds to it.
func (r *Registry) openBucket(ctx context.Context) (jetstream.KeyValue, error) {
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()
	if r.ttl > 0 {
		return r.createOrUpdate(ctx)
	}
	return r.bind(ctx)
}

// createOrUpdate creates the bucket or brings its configuration up to date.
func (r *Registry) createOrUpdate(ctx context.Context) (jetstream.KeyValue, error) {
	cfg := r.cfg
	s, err := r.js.Stream(ctx, r.stream)
	switch {
	case err == nil:
		have := s.CachedInfo().Config.Replicas
		if cfg.Replicas == 0 {
			// A writer started without WithReplicas must not scale an R3 registry down to 1.
			cfg.Replicas = have
		} else if cfg.Replicas != have {
			r.log.Info("changing the registry bucket's replicas", "bucket", cfg.Bucket, "from", have, "to", cfg.Replicas)
		}
	case errors.Is(err, jetstream.ErrStreamNotFound):
	default:
		return nil, r.bucketErr(fmt.Errorf("looking the bucket up: %w", err), "STREAM.INFO")
	}
	kv, err := r.js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		var apiErr *jetstream.APIError
		if cfg.Replicas > 1 && errors.As(err, &apiErr) {
			return nil, fmt.Errorf("mesh: registry bucket %s with %d replicas: %w (more than 1 needs a NATS cluster with JetStream on at least as many servers)",
				cfg.Bucket, cfg.Replicas, err)
		}
		return nil, r.bucketErr(err, "STREAM.UPDATE", "STREAM.CREATE")
	}
	r.replicas.Store(int32(max(cfg.Replicas, 1)))
	return kv, nil
}

// bind looks the bucket up until it exists or ctx is done. A missing bucket is created if
// the server lets this user; if it refuses, bind waits for a writer to create it.
func (r *Registry) bind(ctx context.Context) (jetstream.KeyValue, error) {
	bo := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(50*time.Millisecond),
		backoff.WithMaxInterval(time.Second),
		backoff.WithMaxElapsedTime(0))
	var last error
	for {
		kv, err := r.js.KeyValue(ctx, r.cfg.Bucket)
		switch {
		case err == nil:
			return kv, nil
		case errors.Is(err, jetstream.ErrBadBucket), errors.Is(err, jetstream.ErrInvalidBucketName),
			errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
			return nil, fmt.Errorf("mesh: registry bucket %s: %w", r.cfg.Bucket, err) // waiting will not help
		case !errors.Is(err, jetstream.ErrBucketNotFound):
			// Not found is the only answer that says the bucket is missing; the rest (no
			// JetStream meta leader yet in a forming cluster, a timeout) may pass.
			if perr := r.refused("STREAM.INFO"); perr != nil {
				return nil, r.bucketErr(err, "STREAM.INFO")
			}
			last = fmt.Errorf("looking the bucket up: %w", err)
		case r.createDenied.Load():
			last = jetstream.ErrBucketNotFound
		default:
			if kv, err = r.tryCreate(ctx); err == nil {
				return kv, nil
			}
			last = err
		}
		t := time.NewTimer(bo.NextBackOff())
		select {
		case <-ctx.Done():
			t.Stop()
			if r.createDenied.Load() {
				return nil, fmt.Errorf("mesh: registry bucket %s does not exist yet: start an expertd (which creates it) or grant this NATS user $JS.API.STREAM.CREATE.%s: %w",
					r.cfg.Bucket, r.stream, ctx.Err())
			}
			return nil, fmt.Errorf("mesh: registry bucket %s: %w (last: %w)", r.cfg.Bucket, ctx.Err(), last)
		case <-t.C:
		}
	}
}

// tryCreate makes one attempt at creating the missing bucket with the reader's config.
func (r *Registry) tryCreate(ctx context.Context) (jetstream.KeyValue, error) {
	cctx, cancel := context.WithTimeout(ctx, createAttempt)
	defer cancel()
	kv, err := r.js.CreateKeyValue(cctx, r.cfg)
	if err == nil {
		return kv, nil
	}
	if perr := r.refused("STREAM.CREATE"); perr != nil {
		if !r.createDenied.Swap(true) {
			r.log.Info("registry bucket missing, and this NATS user may not create it: waiting for an expertd to",
				"bucket", r.cfg.Bucket)
		}
		return nil, perr
	}
	// ErrBucketExists included: another service created it meanwhile (perhaps with
	// another config); the next lookup binds it.
	return nil, fmt.Errorf("creating the bucket: %w", err)
}

// refused returns the connection's last error if it is the server refusing this user a
// publish to the bucket's JetStream API call op (e.g. "STREAM.CREATE"), else nil. A
// refused request gets no reply; this is how to tell a missing right from a slow server.
func (r *Registry) refused(op string) error {
	err := r.nc.LastError()
	if err != nil && errors.Is(err, nats.ErrPermissionViolation) &&
		strings.Contains(err.Error(), `"$JS.API.`+op+"."+r.stream+`"`) {
		return err
	}
	return nil
}

// bucketErr wraps err, naming the right to grant when the server refused one of ops.
func (r *Registry) bucketErr(err error, ops ...string) error {
	for _, op := range ops {
		if perr := r.refused(op); perr != nil {
			return fmt.Errorf("mesh: registry bucket %s: %w: grant this NATS user $JS.API.%s.%s (%w)", r.cfg.Bucket, perr, op, r.stream, err)
		}
	}
	return fmt.Errorf("mesh: registry bucket %s: %w", r.cfg.Bucket, err)
}

// PutCard validates st and writes it as the card's lease, alive for LeaseTTL from now.
func (r *Registry) PutCard(ctx context.Context, st *proto.CardStatus) error {
	if st == nil {
		return errors.New("mesh: PutCard: nil status")
	}
	if r.ttl == 0 {
		return errors.New("mesh: PutCard: registry opened for reading (no lease TTL)")
	}
	if err := st.Validate(); err != nil {
		return fmt.Errorf("mesh: card lease: %w", err)
	}
	data, err := proto.Marshal(st)
	if err != nil {
		return err
	}
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()
	key := proto.CardKey(st.Card)
	err = r.putLease(ctx, key, data)
	if errors.Is(err, jetstream.ErrNoStreamResponse) {
		// No stream took the message: the bucket is gone (a server restarted without its
		// store). Recreate it and try once more.
		if _, cerr := r.openBucket(ctx); cerr != nil {
			return fmt.Errorf("mesh: lease %s: %w (recreating the bucket: %w)", key, err, cerr)
		}
		err = r.putLease(ctx, key, data)
	}
	if err != nil {
		return fmt.Errorf("mesh: lease %s: %w", key, err)
	}
	return nil
}

// putLease publishes a KV value with a per-message TTL, which jetstream.KeyValue.Put
// cannot set. WithExpectStream makes sure the bucket's stream, and nothing else, stores it.
func (r *Registry) putLease(ctx context.Context, key string, data []byte) error {
	m := nats.NewMsg(r.putPrefix + key)
	m.Data = data
	_, err := r.js.PublishMsg(ctx, m, jetstream.WithMsgTTL(r.LeaseTTL()), jetstream.WithExpectStream(r.stream))
	return err
}

// DeleteCard removes a card's lease at once (a clean shutdown), leaving a marker that
// watchers see as a purge.
func (r *Registry) DeleteCard(ctx context.Context, cardID string) error {
	if err := proto.ValidToken(cardID); err != nil {
		return fmt.Errorf("mesh: DeleteCard: %w", err)
	}
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()
	if err := r.kv.Purge(ctx, proto.CardKey(cardID), jetstream.PurgeTTL(markerTTL)); err != nil {
		return fmt.Errorf("mesh: delete lease of %s: %w", cardID, err)
	}
	return nil
}

// Cards returns the current leases, sorted by card id. Leases that do not decode are
// skipped and reported: the error then wraps ErrBadLease (one joined error per lease) and
// the good cards are still returned. Any other error comes with nil cards.
func (r *Registry) Cards(ctx context.Context) ([]proto.CardStatus, error) {
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()
	wctx, stop := context.WithCancel(ctx) // the watch's lifetime (see stopWatch)
	w, err := r.kv.Watch(wctx, proto.CardKeys(), jetstream.IgnoreDeletes())
	if err != nil {
		stop()
		return nil, fmt.Errorf("mesh: listing cards in %s: %w", r.cfg.Bucket, err)
	}
	defer stopWatch(stop, w)
	var (
		cards []proto.CardStatus
		bad   []error
	)
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("mesh: listing cards in %s: %w", r.cfg.Bucket, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("mesh: listing cards in %s: %w", r.cfg.Bucket, errWatchClosed)
			}
			if e == nil { // all current values delivered
				slices.SortFunc(cards, func(a, b proto.CardStatus) int { return cmp.Compare(a.Card, b.Card) })
				return cards, errors.Join(bad...)
			}
			if _, ok := proto.CardIDFromKey(e.Key()); !ok {
				continue
			}
			st, err := decodeLease(e)
			if err != nil {
				bad = append(bad, err)
				continue
			}
			cards = append(cards, *st)
		}
	}
}

// WatchCards follows the card leases: fn(id, st) for every lease written (initial values,
// then each heartbeat), fn(id, nil) once a known card is gone (deleted, purged, its lease
// lapsed, or no longer decodable). fn runs on one goroutine, never concurrently, and must
// not block for long: it holds up the watch.
//
// WatchCards returns once the current leases have been delivered, so the caller's view is
// complete, or with an error wrapping ErrWatch if that takes longer than ctx's deadline or
// DefaultSyncWait, whichever is earlier. ctx is the watch's lifetime (a deadline on it ends
// the watch too): the watch runs until ctx is done or the connection is closed. It
// survives NATS reconnects and server restarts: it restarts from a fresh snapshot and
// reports (fn(id, nil)) the cards that vanished meanwhile.
func (r *Registry) WatchCards(ctx context.Context, fn func(cardID string, st *proto.CardStatus)) error {
	if fn == nil {
		return fmt.Errorf("%w: nil callback", ErrWatch)
	}
	return r.startWatch(ctx, &keyWatch{
		filter: proto.CardKeys(),
		idOf:   proto.CardIDFromKey,
		decode: func(e jetstream.KeyValueEntry) (any, error) { return decodeLease(e) },
		put:    func(id string, v any) { fn(id, v.(*proto.CardStatus)) },
		del:    func(id string) { fn(id, nil) },
	})
}

// startWatch runs w until ctx is done, returning once its initial sync is complete (see
// WatchCards).
func (r *Registry) startWatch(ctx context.Context, w *keyWatch) error {
	wait := DefaultSyncWait
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
		wait = time.Until(dl)
	}
	wctx, cancel := context.WithCancel(ctx)
	w.r, w.known, w.synced, w.done = r, map[string]bool{}, make(chan struct{}), make(chan struct{})
	r.watchers.Add(1)
	go func() {
		defer r.watchers.Done()
		defer close(w.done)
		defer cancel()
		w.run(wctx)
	}()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-w.synced:
		return nil
	case <-w.done: // w.err is safe to read: close(w.done) happens after the last write
		return fmt.Errorf("%w %s: stopped before the initial sync: %w", ErrWatch, r.cfg.Bucket, w.err)
	case <-timer.C:
		cancel()
		<-w.done
		return fmt.Errorf("%w %s: initial sync not done within %v: %w", ErrWatch, r.cfg.Bucket, wait.Round(time.Millisecond), w.err)
	}
}

// keyWatch is the state of one watch goroutine over the keys matching filter.
type keyWatch struct {
	filter string
	idOf   func(key string) (string, bool)            // the id a key names, false for other keys
	decode func(jetstream.KeyValueEntry) (any, error) // a value, or an error (then it counts as gone)
	put    func(id string, v any)
	del    func(id string)

	r      *Registry
	known  map[string]bool // ids reported to put and not yet reported gone
	synced chan struct{}   // closed after the first initial sync
	once   sync.Once
	done   chan struct{} // closed when run has returned
	err    error         // why the last generation ended; read only after done
}

// run restarts the KV watch (a generation) until ctx is done or the connection is closed.
func (w *keyWatch) run(ctx context.Context) {
	// A reconnect usually means the server restarted and our ordered consumer is gone;
	// nats.go would notice only after two missed idle heartbeats (~10 s). So a reconnect
	// restarts the watch at once, and cuts short a backoff wait.
	reconnected := w.r.nc.StatusChanged(nats.CONNECTED)
	defer w.r.nc.RemoveStatusListener(reconnected)
	bo := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(100*time.Millisecond),
		backoff.WithMaxInterval(2*time.Second),
		backoff.WithMaxElapsedTime(0))
	for gen := 0; ; gen++ {
		synced, err := w.generation(ctx, gen, reconnected)
		if ctx.Err() != nil {
			if w.err == nil { // keep the last real failure: it says why the sync timed out
				w.err = ctx.Err()
			}
			return
		}
		w.err = err
		if w.r.nc.IsClosed() {
			w.err = fmt.Errorf("%w: %w", err, nats.ErrConnectionClosed)
			w.r.log.Info("registry watch stopped: connection closed", "bucket", w.r.cfg.Bucket)
			return
		}
		if synced {
			bo.Reset()
		}
		if errors.Is(err, errReconnected) {
			w.r.log.Info("registry watch restarting", "bucket", w.r.cfg.Bucket, "reason", err)
			continue // the server is back: resync at once
		}
		delay := bo.NextBackOff()
		w.r.log.Warn("registry watch restarting", "bucket", w.r.cfg.Bucket, "err", err, "in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-reconnected:
			t.Stop()
		case <-t.C:
		}
	}
}

// generation runs one KV watch: a snapshot of the current leases, then live changes, until
// ctx is done, the client reconnects, or the watch breaks. synced says whether the snapshot
// was complete.
func (w *keyWatch) generation(ctx context.Context, gen int, reconnected <-chan nats.Status) (synced bool, err error) {
	if gen > 0 {
		if _, err := w.r.openBucket(ctx); err != nil {
			return false, err
		}
	}
	// gctx is the KV watch's lifetime: this generation (see stopWatch).
	gctx, cancel := context.WithCancel(ctx)
	// kv.Watch creates the consumer with gctx, which has no deadline: bound it by hand.
	create := time.AfterFunc(opTimeout, cancel)
	kw, err := w.r.kv.Watch(gctx, w.filter)
	if !create.Stop() {
		if err == nil {
			stopWatch(cancel, kw)
		}
		return false, fmt.Errorf("creating the watch took over %v: %w", opTimeout, context.DeadlineExceeded)
	}
	if err != nil {
		cancel()
		return false, fmt.Errorf("creating the watch: %w", err)
	}
	defer stopWatch(cancel, kw)

	seen := map[string]bool{} // ids in this generation's snapshot
	for {
		select {
		case <-ctx.Done():
			return synced, nil
		case <-reconnected:
			return synced, errReconnected
		case e, ok := <-kw.Updates():
			switch {
			case !ok:
				return synced, errWatchClosed
			case e == nil: // snapshot complete
				if !synced {
					synced = true
					for id := range w.known {
						if !seen[id] {
							w.gone(id)
						}
					}
					w.once.Do(func() { close(w.synced) })
				}
			default:
				if id := w.apply(e); id != "" && !synced {
					seen[id] = true
				}
			}
		}
	}
}

// apply reports one KV entry and returns its id if the entry is (still) present.
func (w *keyWatch) apply(e jetstream.KeyValueEntry) string {
	id, ok := w.idOf(e.Key())
	if !ok {
		return ""
	}
	if e.Operation() != jetstream.KeyValuePut {
		w.gone(id)
		return ""
	}
	v, err := w.decode(e)
	if err != nil {
		w.r.log.Warn("skipping registry entry", "bucket", w.r.cfg.Bucket, "err", err)
		w.gone(id)
		return ""
	}
	w.known[id] = true
	w.put(id, v)
	return id
}

// gone reports a known id as gone, once.
func (w *keyWatch) gone(id string) {
	if w.known[id] {
		delete(w.known, id)
		w.del(id)
	}
}

func decodeLease(e jetstream.KeyValueEntry) (*proto.CardStatus, error) {
	id, _ := proto.CardIDFromKey(e.Key())
	var st proto.CardStatus
	if err := proto.DecodeCardStatus(e.Value(), &st); err != nil {
		return nil, fmt.Errorf("%w %s (revision %d): %w", ErrBadLease, e.Key(), e.Revision(), err)
	}
	if st.Card != id {
		return nil, fmt.Errorf("%w %s (revision %d): it holds card %q", ErrBadLease, e.Key(), e.Revision(), st.Card)
	}
	return &st, nil
}

// stopWatch ends a KV watch by cancelling the context it was created with: nats.go then
// unsubscribes and deletes the consumer on its own goroutine. (KeyWatcher.Stop would do the
// same on ours, and the delete is a request that waits out a 5 s timeout when the server
// has just gone.) Meanwhile the channel is drained until nats.go closes it, because the
// watcher's delivery callback blocks on a full channel and would pin the subscription's
// goroutine.
func stopWatch(cancel context.CancelFunc, w jetstream.KeyWatcher) {
	cancel()
	t := time.NewTimer(drainTimeout)
	defer t.Stop()
	for {
		select {
		case _, ok := <-w.Updates():
			if !ok {
				return
			}
		case <-t.C:
			return
		}
	}
}

// withDefaultDeadline gives ctx a deadline of opTimeout if it has none.
func withDefaultDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, opTimeout)
}
