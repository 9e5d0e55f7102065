package meshtest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/moemesh/moemesh/proto"
)

// Restart the NATS server (kill -9 of `moemesh nats`, then the same port) under a
// streamed load: every service reconnects, its micro service answers again, requests in
// flight at the kill end (complete or fail) without hanging, and requests succeed again
// within 5 s of the server's return. With a store directory the registry bucket
// (leases, assignments) survives the restart; without one (a fresh store) the daemons
// re-put their leases and the controller rewrites the assignments.
func TestChaosNATSRestart(t *testing.T) {
	for _, store := range []bool{true, false} {
		name := map[bool]string{true: "store", false: "fresh"}[store]
		t.Run(name, func(t *testing.T) { testNATSRestart(t, store) })
	}
}

func testNATSRestart(t *testing.T, keepStore bool) {
	m := newChaosMesh(t, "natsrestart", 1, "n1", "n2", "n3")
	if !keepStore {
		// The next start gets a fresh store: the bucket and everything in it is gone.
		m.store = ""
	}
	cards := []string{"n1-c0", "n2-c0", "n3-c0"}
	WaitFor(t, 20*time.Second, func() error { return m.covered(cards...) })
	const idle = 5 * time.Second
	l := m.startLoad(4, 32, idle)
	WaitFor(t, 30*time.Second, l.finishedAfter(time.Time{}, 4))

	killed := time.Now()
	m.nats.signal(t, syscall.SIGKILL)
	_ = m.nats.wait(t, 10*time.Second) // killed: the exit error is expected
	l.mu.Lock()
	inFlight := map[string]bool{}
	for id := range l.running {
		inFlight[id] = true
	}
	l.mu.Unlock()
	time.Sleep(time.Second) // the outage
	m.startNATS()
	back := time.Now()
	t.Logf("server back %v after the kill, %d requests were in flight", back.Sub(killed).Round(time.Millisecond), len(inFlight))

	// A probe of its own measures when service resumes: the load's clients may still be
	// waiting out the idle timeout of a request whose events were lost in the outage.
	probes := 0
	WaitFor(t, 15*time.Second, func() error {
		probes++
		return m.generate(context.Background(), fmt.Sprint("after-", probes), probes, 4, 2*time.Second, nil).err()
	})
	resumed := time.Now()
	t.Logf("a request succeeded again %v after the server's return (probe %d)", resumed.Sub(back).Round(time.Millisecond), probes)
	if resumed.Sub(back) > 5*time.Second {
		t.Errorf("service resumed %v after the server's return, want within 5 s", resumed.Sub(back))
	}
	WaitFor(t, 10*time.Second, func() error { return m.covered(cards...) })
	m.checkServices(t, 3)
	// The assignments are there: kept in the store, or rewritten by the controller.
	WaitFor(t, 10*time.Second, func() error {
		for _, c := range cards {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			a, err := m.reg.GetAssign(ctx, c)
			cancel()
			if err != nil || a == nil {
				return fmt.Errorf("assignment of %s after the restart: %v, %v", c, a, err)
			}
		}
		return nil
	})
	steady := time.Now()
	time.Sleep(chaosDuration())
	l.stop()

	ended := 0
	for _, o := range l.outcomes() {
		if inFlight[o.id] {
			ended++
			// Each ends at the latest one idle timeout after the server's return; the
			// client's idle timer is what bounds a request whose events were lost.
			if o.end.After(back.Add(idle + 2*time.Second)) {
				t.Errorf("request %s in flight at the kill ended %v after the server's return", o.id, o.end.Sub(back))
			}
			t.Logf("in flight at the kill: %s ended %v after it: %v", o.id, o.end.Sub(killed).Round(time.Millisecond), o.err())
		}
		if o.start.After(steady) && o.err() != nil {
			t.Errorf("request %s after recovery failed: %v", o.id, o.err())
		}
	}
	if ended != len(inFlight) {
		t.Errorf("%d of %d requests in flight at the kill ended", ended, len(inFlight))
	}
	// Nothing leaked inside the router: the requests it lost touch with were finished.
	WaitFor(t, 15*time.Second, m.idleRouter)
	// The router's metrics show the reconnect, and that it is connected again.
	body, err := scrapeErr(m.metrics)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, `moemesh_nats_connected{router="r1",service="router"} 1`+"\n") {
		t.Error("router metrics do not show it connected")
	}
	const series = `moemesh_nats_reconnects_total{router="r1",service="router"} `
	if i := strings.Index(body, series); i < 0 || strings.HasPrefix(body[i+len(series):], "0\n") {
		t.Errorf("router metrics do not count the reconnect (%s missing or 0)", series)
	}
}

// checkServices asks nats micro's PING verb for the expert daemons and the router and
// waits until daemons daemons and one router answer.
func (m *chaosMesh) checkServices(t *testing.T, daemons int) {
	t.Helper()
	for _, svc := range []struct {
		name string
		n    int
	}{{proto.ServiceExpertd, daemons}, {proto.ServiceRouter, 1}} {
		WaitFor(t, 10*time.Second, func() error {
			subj, err := micro.ControlSubject(micro.PingVerb, svc.name, "")
			if err != nil {
				return err
			}
			inbox := nats.NewInbox()
			sub, err := m.nc.SubscribeSync(inbox)
			if err != nil {
				return err
			}
			defer func() { _ = sub.Unsubscribe() }()
			if err := m.nc.PublishRequest(subj, inbox, nil); err != nil {
				return err
			}
			seen := map[string]bool{}
			deadline := time.Now().Add(time.Second)
			for time.Now().Before(deadline) {
				msg, err := sub.NextMsg(time.Until(deadline))
				if err != nil {
					break
				}
				var p micro.Ping
				if err := json.Unmarshal(msg.Data, &p); err != nil {
					return err
				}
				seen[p.ID] = true
			}
			if len(seen) != svc.n {
				return fmt.Errorf("%d instances of %s answered PING, want %d", len(seen), svc.name, svc.n)
			}
			return nil
		})
	}
}
