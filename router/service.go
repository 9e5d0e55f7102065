package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/tracing"
)

// ServiceConfig configures the generation service of one router.
type ServiceConfig struct {
	ID     string // the router's id, a subject token: cancels reach it on CancelSubject(Model, ID)
	Model  string // model name in subjects
	Conn   *nats.Conn
	Engine *Engine
	// Drain is how long a stopping router keeps stepping what it runs before it fails the
	// rest (default 30 s).
	Drain  time.Duration
	Logger *slog.Logger
	// Ready, if set, is closed once the service takes requests.
	Ready chan<- struct{}
}

// Serve takes generation requests on GenSubject(Model) (queue group QueueRouters, as the
// nats micro service ServiceRouter) and cancels on CancelSubject(Model, ID), runs them on
// the engine and publishes their events to each request's inbox. It returns when ctx
// ends, after it stopped taking requests and drained the engine (bounded by Drain).
func Serve(ctx context.Context, cfg ServiceConfig) error {
	if err := proto.ValidToken(cfg.ID); err != nil {
		return fmt.Errorf("router id: %w", err)
	}
	if cfg.Conn == nil || cfg.Engine == nil {
		return errors.New("router: service needs a connection and an engine")
	}
	if cfg.Drain <= 0 {
		cfg.Drain = 30 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &service{cfg: cfg, log: log}

	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	runDone := make(chan error, 1)
	go func() { runDone <- cfg.Engine.Run(runCtx) }()

	svc, err := mesh.AddService(cfg.Conn, proto.ServiceRouter, "1.0.0", "moemesh generation", map[string]string{"router": cfg.ID, "model": cfg.Model})
	if err != nil {
		return err
	}
	defer svc.Stop()
	if err := svc.AddEndpoint("gen", micro.HandlerFunc(s.generate),
		micro.WithEndpointSubject(proto.GenSubject(cfg.Model)),
		micro.WithEndpointQueueGroup(proto.QueueRouters),
		micro.WithEndpointMetadata(map[string]string{"router": cfg.ID})); err != nil {
		return fmt.Errorf("router: gen endpoint: %w", err)
	}
	cancelSub, err := cfg.Conn.Subscribe(proto.CancelSubject(cfg.Model, cfg.ID), func(m *nats.Msg) {
		cfg.Engine.Cancel(string(m.Data))
	})
	if err != nil {
		return fmt.Errorf("router: cancel subscription: %w", err)
	}
	defer cancelSub.Unsubscribe()
	if err := cfg.Conn.FlushTimeout(5 * time.Second); err != nil {
		return fmt.Errorf("router: flush: %w", err)
	}
	if cfg.Ready != nil {
		close(cfg.Ready)
	}
	log.Info("router serving", "router", cfg.ID, "model", cfg.Model, "subject", proto.GenSubject(cfg.Model))

	select {
	case err := <-runDone:
		return fmt.Errorf("router: engine stopped: %w", err)
	case <-ctx.Done():
	}
	// Stop taking requests (other routers in the queue group get them), finish what runs.
	_ = svc.Stop()
	cfg.Engine.Close()
	select {
	case <-cfg.Engine.Idle():
	case <-time.After(cfg.Drain):
		log.Warn("router drain timed out; failing what is left", "after", cfg.Drain)
	}
	stopRun()
	<-runDone
	return nil
}

type service struct {
	cfg ServiceConfig
	log *slog.Logger
}

// generate answers one GenerateRequest with GenerateAccepted or an error.
func (s *service) generate(req micro.Request) {
	var r proto.GenerateRequest
	if err := proto.DecodeGenerateRequest(req.Data(), &r); err != nil {
		mesh.RespondError(req, err)
		return
	}
	// The Moe-Deadline header bounds this request-reply only; the generation's deadline
	// is the body's.
	inbox, id := r.Inbox, r.ID
	// The gateway's generation span, from the headers, parents the request's span.
	ctx := tracing.Extract(context.Background(), req.Headers())
	queued, err := s.cfg.Engine.SubmitContext(ctx, &r, func(ev *proto.TokenEvent) {
		data, err := proto.Marshal(ev)
		if err == nil {
			msg := &nats.Msg{Subject: inbox, Data: data, Header: nats.Header{proto.HeaderRequest: {id}}}
			err = s.cfg.Conn.PublishMsg(msg)
		}
		if err != nil {
			s.log.WarnContext(ctx, "token event lost", "request", id, "err", err)
		}
	})
	if err != nil {
		mesh.RespondError(req, err)
		return
	}
	data, err := proto.Marshal(&proto.GenerateAccepted{V: proto.Version, ID: id, Router: s.cfg.ID, Queued: int32(queued)})
	if err != nil {
		s.cfg.Engine.Cancel(id)
		mesh.RespondError(req, err)
		return
	}
	if err := req.Respond(data); err != nil {
		// The gateway will not learn where to cancel; its deadline ends the request.
		s.log.WarnContext(ctx, "accept reply lost", "request", id, "err", err)
	}
}
