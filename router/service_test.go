package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/proto"
)

// natsURL starts an embedded server for the test.
func natsURL(t *testing.T) string {
	t.Helper()
	s, err := mesh.StartServer(mesh.ServerConfig{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s.ClientURL()
}

func dial(t *testing.T, url, name string) *nats.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, err := mesh.Connect(ctx, url, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// serveRouter runs a router service; the returned stop drains it and waits for Serve.
func serveRouter(t *testing.T, url, id string, cfg EngineConfig) (stop func() error) {
	t.Helper()
	e := newTestEngine(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	nc := dial(t, url, id)
	ready := make(chan struct{})
	go func() {
		done <- Serve(ctx, ServiceConfig{ID: id, Model: "m", Conn: nc, Engine: e, Drain: 20 * time.Second, Ready: ready})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("router %s: %v", id, err)
	}
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

func newTestEngine(t *testing.T, cfg EngineConfig) *Engine {
	l := tinyLM(t)
	cfg.Decoder, cfg.Experts = l.dec, l.experts
	e, err := NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// stream is a client's view of one generation.
type stream struct {
	accepted proto.GenerateAccepted
	sub      *nats.Subscription
	ch       chan *nats.Msg
}

// generate sends req over NATS the way a gateway does: inbox first, then the request.
func generate(t *testing.T, nc *nats.Conn, req *proto.GenerateRequest) (*stream, error) {
	t.Helper()
	req.Inbox = nc.NewRespInbox()
	s := &stream{ch: make(chan *nats.Msg, 4096)}
	var err error
	if s.sub, err = nc.ChanSubscribe(req.Inbox, s.ch); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.sub.Unsubscribe() })
	data, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reply, err := mesh.Request(ctx, nc, &nats.Msg{Subject: proto.GenSubject("m"), Data: data})
	if err != nil {
		return nil, err
	}
	if err := proto.DecodeGenerateAccepted(reply.Data, &s.accepted); err != nil {
		t.Fatal(err)
	}
	return s, nil
}

// events reads until the finish event (or onEvent returns false after sending nothing).
func (s *stream) events(t *testing.T, onEvent func(*proto.TokenEvent)) (tokens []int32, last proto.TokenEvent) {
	t.Helper()
	for seq := uint32(0); ; seq++ {
		select {
		case m := <-s.ch:
			var ev proto.TokenEvent
			if err := proto.DecodeTokenEvent(m.Data, &ev); err != nil {
				t.Fatal(err)
			}
			if ev.Seq != seq {
				t.Fatalf("event %d arrived as %d", ev.Seq, seq)
			}
			tokens = append(tokens, ev.Tokens...)
			if onEvent != nil {
				onEvent(&ev)
			}
			if ev.Finish != "" {
				return tokens, ev
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no event for 30 s")
		}
	}
}

// Two routers in the queue group share requests; each request streams its solo tokens;
// a cancel published to the accepting router ends its generation.
func TestServiceGenerateAndCancel(t *testing.T) {
	l := tinyLM(t)
	url := natsURL(t)
	serveRouter(t, url, "ra", EngineConfig{})
	serveRouter(t, url, "rb", EngineConfig{})
	nc := dial(t, url, "client")

	// The queue group picks a member at random per request: 8 requests all land on one
	// router once in 128 runs, so keep sending (up to 40) until both have served.
	routers := map[string]int{}
	for i := 0; i < 8 || (len(routers) < 2 && i < 40); i++ {
		req := request(fmt.Sprint("g", i), "t", prompt(5+i, int32(i)), 6)
		s, err := generate(t, nc, req)
		if err != nil {
			t.Fatal(err)
		}
		routers[s.accepted.Router]++
		got, last := s.events(t, nil)
		if want := l.solo(t, prompt(5+i, int32(i)), 6); !slices.Equal(got, want) || last.Finish != proto.FinishLength {
			t.Fatalf("request %d: %v (%s), solo %v", i, got, last.Finish, want)
		}
	}
	if len(routers) != 2 {
		t.Errorf("requests went to %v; want both routers", routers)
	}

	s, err := generate(t, nc, request("long", "t", prompt(5, 1), 100000))
	if err != nil {
		t.Fatal(err)
	}
	got, last := s.events(t, func(ev *proto.TokenEvent) {
		if ev.Seq == 2 {
			if err := nc.Publish(proto.CancelSubject("m", s.accepted.Router), []byte("long")); err != nil {
				t.Error(err)
			}
		}
	})
	if last.Finish != proto.FinishCancel || len(got) < 3 || len(got) > 1000 {
		t.Fatalf("cancelled request: finish %q after %d tokens", last.Finish, len(got))
	}
}

// Requests a router cannot take come back as service errors with their codes; with no
// router at all the caller gets no-responders at once.
func TestServiceErrors(t *testing.T) {
	url := natsURL(t)
	nc := dial(t, url, "client")
	_, err := generate(t, nc, request("x", "t", prompt(3, 1), 4))
	if !errors.Is(err, mesh.ErrNoResponders) {
		t.Fatalf("no router: %v", err)
	}
	serveRouter(t, url, "r1", EngineConfig{Context: 16})
	_, err = generate(t, nc, request("y", "t", prompt(20, 1), 4))
	if pe := (*proto.Error)(nil); !errors.As(err, &pe) || pe.Code != proto.CodeTooLarge {
		t.Fatalf("prompt over the context: %v", err)
	}
	// A malformed body is a 400, not a crash.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = mesh.Request(ctx, nc, &nats.Msg{Subject: proto.GenSubject("m"), Data: []byte{0x93, 1, 2}})
	if pe := (*proto.Error)(nil); !errors.As(err, &pe) || pe.Code != proto.CodeBadRequest {
		t.Fatalf("garbage: %v", err)
	}
}

// A stopping router stops taking requests but finishes what it runs.
func TestServiceDrain(t *testing.T) {
	l := tinyLM(t)
	url := natsURL(t)
	stop := serveRouter(t, url, "rd", EngineConfig{})
	nc := dial(t, url, "client")
	s, err := generate(t, nc, request("d", "t", prompt(4, 2), 40))
	if err != nil {
		t.Fatal(err)
	}
	var stopErr error
	stopped := make(chan struct{})
	got, last := s.events(t, func(ev *proto.TokenEvent) {
		if ev.Seq == 1 {
			go func() { stopErr = stop(); close(stopped) }()
		}
	})
	<-stopped
	if stopErr != nil {
		t.Fatal(stopErr)
	}
	if want := l.solo(t, prompt(4, 2), 40); !slices.Equal(got, want) || last.Finish != proto.FinishLength {
		t.Fatalf("drained request: %v (%s), solo %v", got, last.Finish, want)
	}
	if _, err := generate(t, nc, request("late", "t", prompt(3, 1), 4)); !errors.Is(err, mesh.ErrNoResponders) {
		t.Fatalf("after drain: %v", err)
	}
}
