package mesh

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/moemesh/moemesh/proto"
)

// echoService serves "svc.<name>" endpoints on nc: "echo" replies with the request's body
// and its deadline header, "fail.<code>" answers with that service error, "wrapped" with a
// wrapped 404, "plain" with a non-wire error. "sink" takes requests and never answers.
func echoService(t *testing.T, nc *nats.Conn) {
	t.Helper()
	svc, err := AddService(nc, "test-echo", "0.1.0", "echo for tests", map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	add := func(name, subject string, h micro.HandlerFunc) {
		if err := svc.AddEndpoint(name, h, micro.WithEndpointSubject(subject)); err != nil {
			t.Fatal(err)
		}
	}
	add("echo", "svc.echo", func(req micro.Request) {
		_ = req.Respond(req.Data(), micro.WithHeaders(micro.Headers{proto.HeaderDeadline: {req.Headers().Get(proto.HeaderDeadline)}}))
	})
	for _, c := range []proto.Code{proto.CodeBadRequest, proto.CodeNotFound, proto.CodeUnavailable} {
		add("fail"+strconv.Itoa(int(c)), "svc.fail."+strconv.Itoa(int(c)), func(req micro.Request) {
			RespondError(req, proto.Errorf(c, "asked to fail"))
		})
	}
	add("wrapped", "svc.wrapped", func(req micro.Request) {
		RespondError(req, fmt.Errorf("card c0:\n%w", proto.Errorf(proto.CodeNotFound, "expert 3/7")))
	})
	add("plain", "svc.plain", func(req micro.Request) { RespondError(req, errors.New("device on fire")) })
	if _, err := nc.Subscribe("svc.sink", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestRequest(t *testing.T) {
	s := startServer(t, ServerConfig{})
	echoService(t, connect(t, s.ClientURL()))
	nc := connect(t, s.ClientURL())

	t.Run("ok", func(t *testing.T) {
		ctx := timeout(t, 2*time.Second)
		dl, _ := ctx.Deadline()
		m := nats.NewMsg("svc.echo")
		m.Data = []byte("hello")
		reply, err := Request(ctx, nc, m)
		if err != nil {
			t.Fatal(err)
		}
		if string(reply.Data) != "hello" {
			t.Fatalf("reply %q", reply.Data)
		}
		if got := reply.Header.Get(proto.HeaderDeadline); got != strconv.FormatInt(dl.UnixNano(), 10) {
			t.Fatalf("responder saw deadline header %q, want %d", got, dl.UnixNano())
		}
	})

	t.Run("no responders", func(t *testing.T) {
		start := time.Now()
		_, err := Request(timeout(t, 2*time.Second), nc, nats.NewMsg("svc.nobody"))
		if !errors.Is(err, ErrNoResponders) || !errors.Is(err, nats.ErrNoResponders) || !Retryable(err) {
			t.Fatalf("err = %v: want ErrNoResponders, retryable", err)
		}
		if !errors.Is(err, proto.ErrUnavailable) || proto.CodeOf(err) != proto.CodeUnavailable {
			t.Fatalf("code %v, want 503", proto.CodeOf(err))
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Fatalf("no responders took %v: should be immediate", d)
		}
		if !strings.Contains(err.Error(), "svc.nobody") {
			t.Fatalf("error does not name the subject: %v", err)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		start := time.Now()
		_, err := Request(timeout(t, 200*time.Millisecond), nc, nats.NewMsg("svc.sink"))
		d := time.Since(start)
		if !errors.Is(err, ErrTimeout) || !Retryable(err) || proto.CodeOf(err) != proto.CodeDeadline {
			t.Fatalf("err = %v (code %v): want a retryable ErrTimeout with code 504", err, proto.CodeOf(err))
		}
		if d < 150*time.Millisecond || d > time.Second {
			t.Fatalf("timed out after %v, deadline 200ms", d)
		}
	})

	t.Run("within", func(t *testing.T) {
		// The bound is the tighter of ctx's deadline and the timeout, and the responder is
		// told that one.
		ctx := timeout(t, 5*time.Second)
		start := time.Now()
		_, err := RequestBy(ctx, nc, nats.NewMsg("svc.sink"), time.Now().Add(200*time.Millisecond))
		d := time.Since(start)
		if !errors.Is(err, ErrTimeout) || !Retryable(err) || ctx.Err() != nil {
			t.Fatalf("err = %v: want a retryable ErrTimeout with ctx still live", err)
		}
		if d < 150*time.Millisecond || d > 2*time.Second {
			t.Fatalf("timed out after %v, bound 200ms", d)
		}
		before := time.Now()
		reply, err := RequestBy(ctx, nc, nats.NewMsg("svc.echo"), time.Now().Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got, err := strconv.ParseInt(reply.Header.Get(proto.HeaderDeadline), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		if stamped := time.Unix(0, got); stamped.Before(before.Add(time.Second)) || stamped.After(time.Now().Add(time.Second)) {
			t.Fatalf("stamped deadline %v, want about 1s from the send (%v)", stamped, before)
		}
		dl, _ := ctx.Deadline()
		if reply, err = RequestBy(ctx, nc, nats.NewMsg("svc.echo"), time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if got := reply.Header.Get(proto.HeaderDeadline); got != strconv.FormatInt(dl.UnixNano(), 10) {
			t.Fatalf("a timeout past ctx's deadline stamped %q, want ctx's %d", got, dl.UnixNano())
		}
	})

	t.Run("late reply", func(t *testing.T) {
		// A reply that comes after its Request gave up is dropped: the next Request, which
		// reuses the same waiter, gets its own reply.
		slow, err := nc.Subscribe("svc.slow", func(m *nats.Msg) {
			time.Sleep(150 * time.Millisecond)
			_ = m.Respond([]byte("late"))
		})
		if err != nil {
			t.Fatal(err)
		}
		defer slow.Unsubscribe()
		for i := range 3 {
			if _, err := Request(timeout(t, 50*time.Millisecond), nc, nats.NewMsg("svc.slow")); !errors.Is(err, ErrTimeout) {
				t.Fatalf("slow request: err = %v, want ErrTimeout", err)
			}
			deadline := time.Now().Add(300 * time.Millisecond)
			for time.Now().Before(deadline) { // spans the late reply's arrival
				m := nats.NewMsg("svc.echo")
				m.Data = []byte(fmt.Sprint("echo ", i))
				reply, err := Request(timeout(t, 2*time.Second), nc, m)
				if err != nil {
					t.Fatal(err)
				}
				if string(reply.Data) != string(m.Data) {
					t.Fatalf("request %q got reply %q", m.Data, reply.Data)
				}
			}
		}
	})

	t.Run("service errors", func(t *testing.T) {
		for _, c := range []struct {
			subject   string
			code      proto.Code
			msg       string
			retryable bool
		}{
			{"svc.fail.404", proto.CodeNotFound, "asked to fail", true},
			{"svc.fail.503", proto.CodeUnavailable, "asked to fail", true},
			{"svc.fail.400", proto.CodeBadRequest, "asked to fail", false},
			{"svc.wrapped", proto.CodeNotFound, "card c0: expert 3/7", true},
			{"svc.plain", proto.CodeInternal, "device on fire", true},
		} {
			_, err := Request(timeout(t, 2*time.Second), nc, nats.NewMsg(c.subject))
			var pe *proto.Error
			if !errors.As(err, &pe) || pe.Code != c.code || pe.Msg != c.msg {
				t.Errorf("%s: err = %v, want *proto.Error %d %q", c.subject, err, c.code, c.msg)
				continue
			}
			if Retryable(err) != c.retryable {
				t.Errorf("%s: Retryable = %v", c.subject, !c.retryable)
			}
		}
	})

	t.Run("no deadline", func(t *testing.T) {
		_, err := Request(context.Background(), nc, nats.NewMsg("svc.echo"))
		if !errors.Is(err, ErrNoDeadline) || Retryable(err) {
			t.Fatalf("err = %v, want permanent ErrNoDeadline", err)
		}
	})

	t.Run("too large", func(t *testing.T) {
		m := nats.NewMsg("svc.echo")
		m.Data = make([]byte, DefaultMaxPayload+1)
		_, err := Request(timeout(t, 2*time.Second), nc, m)
		if !errors.Is(err, nats.ErrMaxPayload) || Retryable(err) || proto.CodeOf(err) != proto.CodeTooLarge {
			t.Fatalf("err = %v (code %v), want permanent 413", err, proto.CodeOf(err))
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		cancel()
		_, err := Request(ctx, nc, nats.NewMsg("svc.echo"))
		if !errors.Is(err, context.Canceled) || Retryable(err) {
			t.Fatalf("err = %v, want permanent context.Canceled", err)
		}
	})

	t.Run("closed connection", func(t *testing.T) {
		closed := connect(t, s.ClientURL())
		closed.Close()
		_, err := Request(timeout(t, time.Second), closed, nats.NewMsg("svc.echo"))
		if !errors.Is(err, ErrNotConnected) || Retryable(err) || proto.CodeOf(err) != proto.CodeUnavailable {
			t.Fatalf("err = %v, want permanent ErrNotConnected (503)", err)
		}
	})
}

func TestRetryOtherReplica(t *testing.T) {
	s := startServer(t, ServerConfig{})
	echoService(t, connect(t, s.ClientURL()))
	nc := connect(t, s.ClientURL())

	// Replica 0 is gone (no responders), replica 1 hangs, replica 2 answers: attempt n goes
	// to replica n, each attempt bounded by PerAttempt.
	replicas := []string{"svc.gone", "svc.sink", "svc.echo"}
	var notified []int
	r := Retry{Attempts: 3, PerAttempt: 150 * time.Millisecond, Notify: func(err error, attempt int) {
		if !Retryable(err) {
			t.Errorf("attempt %d: notified of a permanent error %v", attempt, err)
		}
		notified = append(notified, attempt)
	}}
	var reply *nats.Msg
	start := time.Now()
	err := r.Do(timeout(t, 5*time.Second), func(ctx context.Context, attempt int) error {
		if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > 150*time.Millisecond {
			return fmt.Errorf("attempt %d: deadline %v, want a 150ms sub-deadline", attempt, dl)
		}
		m, err := Request(ctx, nc, nats.NewMsg(replicas[attempt]))
		reply = m
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if reply == nil || fmt.Sprint(notified) != "[0 1]" {
		t.Fatalf("reply %v, failed attempts %v, want [0 1]", reply, notified)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("three attempts took %v", d)
	}
}

func TestRetryStops(t *testing.T) {
	s := startServer(t, ServerConfig{})
	echoService(t, connect(t, s.ClientURL()))
	nc := connect(t, s.ClientURL())

	t.Run("permanent error", func(t *testing.T) {
		calls := 0
		err := Retry{Attempts: 5}.Do(timeout(t, 2*time.Second), func(ctx context.Context, attempt int) error {
			calls++
			_, err := Request(ctx, nc, nats.NewMsg("svc.fail.400"))
			return err
		})
		var pe *proto.Error
		if calls != 1 || !errors.As(err, &pe) || pe.Code != proto.CodeBadRequest || !strings.Contains(err.Error(), "after 1 attempt:") {
			t.Fatalf("%d calls, err = %v: want one call and the 400", calls, err)
		}
	})

	t.Run("attempts spent", func(t *testing.T) {
		var attempts []int
		err := Retry{}.Do(timeout(t, 2*time.Second), func(ctx context.Context, attempt int) error {
			attempts = append(attempts, attempt)
			_, err := Request(ctx, nc, nats.NewMsg("svc.gone"))
			return err
		})
		if fmt.Sprint(attempts) != "[0 1 2]" || !errors.Is(err, ErrNoResponders) || !strings.Contains(err.Error(), "after 3 attempts:") {
			t.Fatalf("attempts %v, err = %v", attempts, err)
		}
	})

	t.Run("no deadline", func(t *testing.T) {
		called := false
		err := Retry{}.Do(context.Background(), func(context.Context, int) error { called = true; return nil })
		if !errors.Is(err, ErrNoDeadline) || called {
			t.Fatalf("err = %v, op called %v", err, called)
		}
		// PerAttempt alone bounds every wait: allowed.
		if err := (Retry{PerAttempt: time.Second}).Do(context.Background(), func(context.Context, int) error { return nil }); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ctx ends during backoff", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var once sync.Once
		start := time.Now()
		err := Retry{Attempts: 10, Initial: time.Second, Max: time.Second}.Do(ctx, func(ctx context.Context, attempt int) error {
			_, err := Request(ctx, nc, nats.NewMsg("svc.gone"))
			once.Do(cancel) // the caller gives up while Do waits to retry
			return err
		})
		if !errors.Is(err, ErrNoResponders) || !errors.Is(err, context.Canceled) || time.Since(start) > 500*time.Millisecond {
			t.Fatalf("err = %v after %v: want the last error and the cancellation, at once", err, time.Since(start))
		}
	})
}

func TestRespondErrorDescription(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{proto.Errorf(proto.CodeNotFound, "expert 1/2"), "expert 1/2"},
		{fmt.Errorf("card c1: %w", proto.Errorf(proto.CodeNotFound, "expert 1/2")), "card c1: expert 1/2"},
		{errors.New("line one\r\nline two"), "line one line two"},
		{errors.New(strings.Repeat("é", 1000)), strings.Repeat("é", 510) + "..."},
		{proto.ErrUnavailable, "unavailable"},
	} {
		if got := errorDesc(c.err); got != c.want {
			t.Errorf("errorDesc(%q) = %q, want %q", c.err, got, c.want)
		}
	}
}

// TestRequestAddsNoAllocations: a Request in steady state allocates no more than nats.go's
// own request on the caller's context: the waiter, its registration, the reply subject,
// the deadline header, the timer and the lost-connection signal cost nothing per send.
// Both sides count the responder and the embedded server too, which is why this compares
// rather than pins 0.
func TestRequestAddsNoAllocations(t *testing.T) {
	nc := echoConns(t)
	ctx := timeout(t, time.Minute)
	msg := &nats.Msg{Subject: "bench.echo", Data: []byte("x"), Header: nats.Header{}}
	request := func() {
		if _, err := Request(ctx, nc, msg); err != nil {
			t.Fatal(err)
		}
	}
	raw := func() {
		if _, err := nc.RequestMsgWithContext(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	for range 10 { // warm: the waiter pool, the reply subscription, the server's buffers
		request()
		raw()
	}
	ours := testing.AllocsPerRun(300, request)
	theirs := testing.AllocsPerRun(300, raw)
	// Request's arenas allocate once per ~100 sends, so its average may exceed by 0.02.
	if ours > theirs+0.5 {
		t.Fatalf("Request allocates %v per send, nats.go's request %v: Request adds %v", ours, theirs, ours-theirs)
	}
}

func TestStampArena(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
	}{
		{"one", 1},
		{"across a chunk", slotChunk + 3},
		{"across several", 4*stampChunk/20 + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := new(reqWaiter)
			var got [][]string
			for i := range tc.n {
				got = append(got, r.stamp(int64(i)*1_000_000_007-int64(i%3)))
			}
			// A caller appending to one header value must not reach the next.
			got[0] = append(got[0], "appended")
			for i, v := range got {
				want := strconv.FormatInt(int64(i)*1_000_000_007-int64(i%3), 10)
				if v[0] != want {
					t.Fatalf("stamp %d reads %q later, want %q: a value was overwritten", i, v[0], want)
				}
			}
		})
	}
}
