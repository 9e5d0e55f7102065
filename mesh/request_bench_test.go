package mesh

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// echoConns is an embedded server, a connection answering "bench.echo" with the request's
// body, and a second connection to send on.
func echoConns(tb testing.TB) *nats.Conn {
	tb.Helper()
	s := startServer(tb, ServerConfig{})
	resp := connect(tb, s.ClientURL())
	if _, err := resp.Subscribe("bench.echo", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
		tb.Fatal(err)
	}
	if err := resp.Flush(); err != nil {
		tb.Fatal(err)
	}
	return connect(tb, s.ClientURL())
}

// BenchmarkRequest: one Request round trip to an echo responder in this process. allocs/op
// counts nats.go (both sides), the embedded server and Request's own, which is nothing
// (its reply mux, waiter and arenas are reused); "nats" is nats.go's request on a derived
// context, which is what Request used to be, "nats-no-cancel" on the caller's. Run each
// alone (-bench 'Request/mesh$'): in one process the later ones count differently.
func BenchmarkRequest(b *testing.B) {
	nc := echoConns(b)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	msg := &nats.Msg{Subject: "bench.echo", Data: make([]byte, 256), Header: nats.Header{}}
	b.Run("mesh", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Request(ctx, nc, msg); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("nats", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			wctx, wcancel := context.WithCancel(ctx)
			_, err := nc.RequestMsgWithContext(wctx, msg)
			wcancel()
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	// What the derived context costs: nats.go's request on the caller's context itself.
	b.Run("nats-no-cancel", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := nc.RequestMsgWithContext(ctx, msg); err != nil {
				b.Fatal(err)
			}
		}
	})
}
