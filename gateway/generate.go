package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/tracing"
)

// generation is one GenerateRequest a router accepted, read event by event from the
// gateway's inbox. Its owner calls close exactly once.
type generation struct {
	nc       *nats.Conn
	model    string
	id       string
	router   string
	sub      *nats.Subscription
	seq      uint32 // the Seq the next event must have
	idle     time.Duration
	deadline time.Time
	finished bool // the last event arrived: nothing to cancel
}

// newID returns a request id: prefix and 24 random hex digits.
func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail
	return prefix + hex.EncodeToString(b[:])
}

// submit subscribes a fresh inbox, then sends req to the model's routers and waits for one
// to accept it. The subscription comes first so no event can precede it: NATS handles one
// connection's SUB and PUB in order.
func (g *Gateway) submit(ctx context.Context, model string, req *proto.GenerateRequest) (*generation, error) {
	deadline := time.Now().Add(g.cfg.RequestTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	req.V = proto.Version
	req.Inbox = g.nc.NewInbox()
	req.Deadline = deadline.UnixNano()
	body, err := proto.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("gateway: encoding request %s: %w", req.ID, err)
	}
	sub, err := g.nc.SubscribeSync(req.Inbox)
	if err != nil {
		return nil, errUnavailable("subscribing the reply inbox: %v", err)
	}
	// A long stream must not be cut by the client library's default pending limits; the
	// router's events are small and the request deadline bounds them.
	_ = sub.SetPendingLimits(-1, 64<<20)

	msg := nats.NewMsg(proto.GenSubject(model))
	msg.Data = body
	msg.Header.Set(proto.HeaderTenant, req.Tenant)
	msg.Header.Set(proto.HeaderRequest, req.ID)
	tracing.Inject(ctx, msg.Header) // the generation span is the router's parent
	actx, cancel := context.WithTimeout(ctx, g.cfg.AcceptTimeout)
	defer cancel()
	if dl := time.Unix(0, req.Deadline); dl.Before(time.Now().Add(g.cfg.AcceptTimeout)) {
		actx, cancel = context.WithDeadline(actx, dl)
		defer cancel()
	}
	reply, err := g.request(actx, msg)
	if err != nil {
		_ = sub.Unsubscribe()
		if ctx.Err() != nil {
			return nil, ctx.Err() // the client left; nothing was accepted, nothing to cancel
		}
		return nil, fmt.Errorf("gateway: sending request %s: %w", req.ID, err)
	}
	var acc proto.GenerateAccepted
	if err := proto.DecodeGenerateAccepted(reply.Data, &acc); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("gateway: request %s: bad acceptance: %w", req.ID, err)
	}
	return &generation{nc: g.nc, model: model, id: req.ID, router: acc.Router, sub: sub,
		idle: g.cfg.IdleTimeout, deadline: deadline}, nil
}

// request sends a generate request, re-sending it while no router answers for up to
// RouterWait (within ctx): no responders and a dropped connection mean no router got it,
// so the re-send is safe, unlike after a timeout.
func (g *Gateway) request(ctx context.Context, msg *nats.Msg) (*nats.Msg, error) {
	giveUp := time.Now().Add(g.cfg.RouterWait)
	wait := 100 * time.Millisecond
	for {
		reply, err := mesh.Request(ctx, g.nc, msg)
		if err == nil || !(errors.Is(err, mesh.ErrNoResponders) || errors.Is(err, mesh.ErrNotConnected)) ||
			!time.Now().Add(wait).Before(giveUp) {
			return reply, err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		wait = min(2*wait, 400*time.Millisecond)
	}
}

// errIdle is what next returns when the router went silent for longer than IdleTimeout.
var errIdle = errors.New("no token event within the idle timeout")

// next returns the next event. Errors: ctx's (the client left), a 504 apiError for an
// idle router or the request deadline, a lost or malformed event.
func (gn *generation) next(ctx context.Context) (*proto.TokenEvent, error) {
	wait := min(gn.idle, time.Until(gn.deadline))
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	msg, err := gn.sub.NextMsgWithContext(wctx)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.Is(err, context.DeadlineExceeded) && !time.Now().Before(gn.deadline):
			return nil, errTimeout("request %s passed its deadline", gn.id)
		case errors.Is(err, context.DeadlineExceeded):
			return nil, errTimeout("request %s: router %s sent no token for %v", gn.id, gn.router, gn.idle)
		}
		return nil, fmt.Errorf("gateway: request %s: reading events: %w", gn.id, err)
	}
	var ev proto.TokenEvent
	if err := proto.DecodeTokenEvent(msg.Data, &ev); err != nil {
		return nil, fmt.Errorf("gateway: request %s: event from router %s: %w", gn.id, gn.router, err)
	}
	if ev.Seq != gn.seq {
		return nil, fmt.Errorf("gateway: request %s: event %d lost (got %d)", gn.id, gn.seq, ev.Seq)
	}
	gn.seq++
	if ev.Finish != "" {
		gn.finished = true
	}
	return &ev, nil
}

// close releases the inbox. A generation that did not finish (the client left, the router
// went silent, the deadline passed, the stream could not be written) is cancelled at its
// router so it frees the sequence's slot and KV cache.
func (gn *generation) close() {
	_ = gn.sub.Unsubscribe()
	if gn.finished {
		return
	}
	msg := nats.NewMsg(proto.CancelSubject(gn.model, gn.router))
	msg.Data = []byte(gn.id)
	msg.Header.Set(proto.HeaderRequest, gn.id)
	// Fire and forget: the router also gives up at the request's deadline.
	_ = gn.nc.PublishMsg(msg)
}
