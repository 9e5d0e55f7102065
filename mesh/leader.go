package mesh

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/moemesh/moemesh/proto"
)

// Campaign competes for the registry's leader lease (key proto.LeaderKey) as id. The lease
// is created with a per-key TTL of ttl (rounded up to whole seconds, at least 1 s) and,
// while held, renewed every ttl/3 by a compare-and-set on its revision, so at most one
// campaigner holds it and a dead leader's lease lapses within ttl.
//
// Once elected, Campaign calls lead with a context that is cancelled when the lease is lost
// (a renewal failed or found another holder) or ctx is done, and returns after lead has
// returned: nil if the lease was lost (the caller may campaign again), ctx's error if ctx
// ended. A leader that stops because ctx ended resigns (deletes the lease) so that another
// campaigner takes over at once.
func (r *Registry) Campaign(ctx context.Context, id string, ttl time.Duration, lead func(ctx context.Context)) error {
	if err := proto.ValidToken(id); err != nil {
		return fmt.Errorf("mesh: Campaign: %w", err)
	}
	if lead == nil {
		return errors.New("mesh: Campaign: nil lead function")
	}
	ttl = max(time.Second, time.Duration(math.Ceil(ttl.Seconds()))*time.Second)
	every := ttl / 3
	for {
		rev, err := r.tryLead(ctx, id, ttl)
		if err == nil {
			return r.hold(ctx, id, ttl, every, rev, lead)
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			r.log.Warn("leader campaign", "bucket", r.cfg.Bucket, "id", id, "err", err)
		}
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (r *Registry) tryLead(ctx context.Context, id string, ttl time.Duration) (uint64, error) {
	cctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	rev, err := r.kv.Create(cctx, proto.LeaderKey, []byte(id), jetstream.KeyTTL(ttl))
	if errors.Is(err, jetstream.ErrKeyExists) {
		// Held by someone; if it is us (a restart within the TTL), take it over.
		e, gerr := r.kv.Get(cctx, proto.LeaderKey)
		if gerr == nil && string(e.Value()) == id {
			return r.renew(cctx, id, ttl, e.Revision())
		}
	}
	return rev, err
}

// renew rewrites the lease with a fresh TTL if it is still at revision rev.
func (r *Registry) renew(ctx context.Context, id string, ttl time.Duration, rev uint64) (uint64, error) {
	m := nats.NewMsg(r.putPrefix + proto.LeaderKey)
	m.Data = []byte(id)
	ack, err := r.js.PublishMsg(ctx, m, jetstream.WithMsgTTL(ttl), jetstream.WithExpectStream(r.stream),
		jetstream.WithExpectLastSequencePerSubject(rev))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

func (r *Registry) hold(ctx context.Context, id string, ttl, every time.Duration, rev uint64, lead func(context.Context)) error {
	lctx, lost := context.WithCancel(ctx)
	defer lost()
	done := make(chan struct{})
	go func() {
		defer close(done)
		lead(lctx)
	}()
	r.log.Info("elected leader", "bucket", r.cfg.Bucket, "id", id)
	tick := time.NewTicker(every)
	defer tick.Stop()
	expires := time.Now().Add(ttl)
	for {
		select {
		case <-ctx.Done():
			lost()
			<-done
			rctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			if err := r.kv.Delete(rctx, proto.LeaderKey, jetstream.LastRevision(rev)); err != nil {
				r.log.Info("resigning leadership", "bucket", r.cfg.Bucket, "err", err)
			}
			cancel()
			return ctx.Err()
		case <-done:
			// lead returned on its own: give the lease up and report it as lost.
			rctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			_ = r.kv.Delete(rctx, proto.LeaderKey, jetstream.LastRevision(rev))
			cancel()
			if ctx.Err() != nil { // lead saw ctx end first: report that, not a lost lease
				return ctx.Err()
			}
			return nil
		case <-tick.C:
			// The renewal must succeed before the lease could have lapsed.
			rctx, cancel := context.WithDeadline(ctx, expires)
			nrev, err := r.renew(rctx, id, ttl, rev)
			cancel()
			if err == nil {
				rev, expires = nrev, time.Now().Add(ttl)
				continue
			}
			if ctx.Err() != nil {
				continue // handled by the ctx.Done case
			}
			var apiErr *jetstream.APIError
			conflict := errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
			if conflict || time.Now().After(expires) {
				r.log.Warn("leadership lost", "bucket", r.cfg.Bucket, "id", id, "err", err)
				lost()
				<-done
				return nil
			}
			r.log.Warn("leader lease renewal failed; retrying", "bucket", r.cfg.Bucket, "err", err)
		}
	}
}

// Leader returns the id holding the leader lease, or "" when nobody holds it (never
// elected, resigned, or lapsed).
func (r *Registry) Leader(ctx context.Context) (string, error) {
	ctx, cancel := withDefaultDeadline(ctx)
	defer cancel()
	e, err := r.kv.Get(ctx, proto.LeaderKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("mesh: leader of %s: %w", r.cfg.Bucket, err)
	}
	return string(e.Value()), nil
}
