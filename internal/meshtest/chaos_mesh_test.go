package meshtest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
)

// The chaos tests run the real binary: a `moemesh nats` server, a `moemesh router
// --controller` and `moemesh expertd` processes started empty, so that the placement
// controller places every expert; a client streams generations while a test disturbs the
// mesh. The short versions run in `make test`; MOEMESH_CHAOS=long (`make chaos`) runs
// them longer.

// chaosProc is a child process of the test; it is killed at cleanup.
type chaosProc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{} // closed once Wait returned
	err  error         // Wait's result, after done
}

func startChaosProc(t *testing.T, name string, args ...string) *chaosProc {
	t.Helper()
	p := &chaosProc{name: name, cmd: exec.Command(Binary(t), args...), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out.String())
		}
	})
	return p
}

func (p *chaosProc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
}

// wait waits for the process to exit, at most d, and returns its exit error.
func (p *chaosProc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		t.Fatalf("%s did not exit within %v", p.name, d)
		return nil
	}
}

// chaosMesh is a mesh of processes for one test.
type chaosMesh struct {
	t        *testing.T
	name     string
	dir      string
	url      string
	port     int
	store    string // JetStream store of the server; "" = a fresh one on every start
	nats     *chaosProc
	router   *chaosProc
	daemons  map[string]*chaosProc
	nc       *nats.Conn
	reg      *mesh.Registry
	cfg      *model.Config
	deadline time.Duration // per request
	metrics  string        // the router's /metrics address
	prompts  int           // > 0: the load cycles through this many prompts (see startLoad)
}

// newChaosMesh starts the server, the router with the controller and one empty daemon
// per id, and waits until a generation succeeds.
func newChaosMesh(t *testing.T, name string, minReplicas int, daemons ...string) *chaosMesh {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: builds and runs the binary")
	}
	Binary(t) // built once per test binary; not part of the timings below
	t0 := time.Now()
	m := &chaosMesh{t: t, name: name, dir: Checkpoint(t, "qwen3_moe", "bf16"), daemons: map[string]*chaosProc{}, deadline: 20 * time.Second}
	var err error
	if m.cfg, err = model.LoadConfig(m.dir); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	_, port, _ := splitHostPort(addr)
	m.port, m.store = port, filepath.Join(t.TempDir(), "js")
	m.url = fmt.Sprintf("nats://127.0.0.1:%d", port)
	m.startNATS()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if m.nc, err = mesh.Connect(ctx, m.url, "chaos-client"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.nc.Close)
	if m.reg, err = mesh.OpenRegistry(ctx, m.nc, name, 0); err != nil {
		t.Fatal(err)
	}
	for _, id := range daemons {
		m.startDaemon(id)
	}
	m.metrics = freeAddr(t)
	m.router = startChaosProc(t, "router", "router", "--nats", m.url, "--model", m.dir, "--name", name, "--id", "r1",
		"--controller", "--min-replicas", strconv.Itoa(minReplicas), "--metrics", m.metrics, "--log-level", "warn")
	WaitFor(t, time.Minute, func() error {
		r := m.generate(context.Background(), "probe", 0, 2, 5*time.Second, nil)
		return r.err()
	})
	t.Logf("mesh of %d daemons serving %v after start", len(daemons), time.Since(t0).Round(time.Millisecond))
	return m
}

func splitHostPort(addr string) (string, int, error) {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			p, err := strconv.Atoi(addr[i+1:])
			return addr[:i], p, err
		}
	}
	return "", 0, fmt.Errorf("no port in %q", addr)
}

// startNATS starts (or restarts) the `moemesh nats` process on the mesh's port and store
// and waits until it accepts connections.
func (m *chaosMesh) startNATS() {
	m.t.Helper()
	args := []string{"nats", "--port", strconv.Itoa(m.port), "--log-level", "warn"}
	if m.store != "" {
		args = append(args, "--store", m.store)
	}
	m.nats = startChaosProc(m.t, "nats", args...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nc, err := mesh.Connect(ctx, m.url, "chaos-probe")
	if err != nil {
		m.t.Fatalf("nats server: %v\n%s", err, m.nats.out.String())
	}
	nc.Close()
}

func (m *chaosMesh) startDaemon(id string) *chaosProc {
	m.t.Helper()
	p := startChaosProc(m.t, "daemon "+id, "expertd", "--nats", m.url, "--model", m.dir, "--name", m.name, "--id", id,
		"--experts", "none", "--heartbeat", "200ms", "--log-level", "info")
	m.daemons[id] = p
	return p
}

// leases returns the current card leases by card id.
func (m *chaosMesh) leases() (map[string]proto.CardStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	cards, err := m.reg.Cards(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]proto.CardStatus{}
	for _, c := range cards {
		out[c.Card] = c
	}
	return out, nil
}

// covered returns nil once every expert is ready on one of the given cards.
func (m *chaosMesh) covered(cards ...string) error {
	leases, err := m.leases()
	if err != nil {
		return err
	}
	ready := map[model.ExpertKey]bool{}
	for _, id := range cards {
		st, ok := leases[id]
		if !ok || st.Draining {
			continue
		}
		for _, e := range st.Experts {
			if e.State == proto.StateReady {
				ready[model.ExpertKey{Layer: int(e.Layer), Expert: int(e.Expert)}] = true
			}
		}
	}
	for _, l := range m.cfg.MoELayers() {
		for e := range m.cfg.Experts {
			if !ready[model.ExpertKey{Layer: l, Expert: e}] {
				return fmt.Errorf("expert %d/%d is ready on none of %v", l, e, cards)
			}
		}
	}
	return nil
}

// soleHolder lists the experts ready on card and on no other card.
func (m *chaosMesh) soleHolder(leases map[string]proto.CardStatus, card string) []model.ExpertKey {
	others := map[model.ExpertKey]bool{}
	for id, st := range leases {
		if id == card {
			continue
		}
		for _, e := range st.Experts {
			if e.State == proto.StateReady {
				others[model.ExpertKey{Layer: int(e.Layer), Expert: int(e.Expert)}] = true
			}
		}
	}
	var only []model.ExpertKey
	for _, e := range leases[card].Experts {
		k := model.ExpertKey{Layer: int(e.Layer), Expert: int(e.Expert)}
		if e.State == proto.StateReady && !others[k] {
			only = append(only, k)
		}
	}
	return only
}

// outcome is one streamed generation as the client saw it.
type outcome struct {
	id         string
	i          int // the prompt's index (see generate): one index, one prompt
	start, end time.Time
	times      []time.Time // arrival of each token event
	tokens     int
	toks       []int32 // the tokens streamed
	last       proto.TokenEvent
	failure    error // the client's own failure: no accept, gap, idle, ...
}

func (o *outcome) err() error {
	if o.failure != nil {
		return o.failure
	}
	return o.last.Err()
}

// generate streams one request of n tokens for prompt index i; idle bounds the wait for
// each event.
func (m *chaosMesh) generate(ctx context.Context, id string, i, n int, idle time.Duration, onEvent func(*proto.TokenEvent)) *outcome {
	o := &outcome{id: id, i: i, start: time.Now()}
	defer func() { o.end = time.Now() }()
	req := &proto.GenerateRequest{V: proto.Version, ID: id, Tenant: "t", Prompt: proto.I32s{int32(3 + i%50), int32(40 + 7*(i%30)), 100},
		MaxTokens: int32(n), IgnoreEOS: true, Inbox: m.nc.NewRespInbox(), Deadline: time.Now().Add(m.deadline).UnixNano()}
	ch := make(chan *nats.Msg, 1024)
	sub, err := m.nc.ChanSubscribe(req.Inbox, ch)
	if err != nil {
		o.failure = err
		return o
	}
	defer func() { _ = sub.Unsubscribe() }()
	data, err := proto.Marshal(req)
	if err != nil {
		o.failure = err
		return o
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	reply, err := mesh.Request(actx, m.nc, &nats.Msg{Subject: proto.GenSubject(m.name), Data: data})
	cancel()
	if err != nil {
		o.failure = fmt.Errorf("not accepted: %w", err)
		return o
	}
	var acc proto.GenerateAccepted
	if err := proto.DecodeGenerateAccepted(reply.Data, &acc); err != nil {
		o.failure = err
		return o
	}
	timer := time.NewTimer(idle)
	defer timer.Stop()
	for seq := uint32(0); ; seq++ {
		select {
		case msg := <-ch:
			var ev proto.TokenEvent
			if err := proto.DecodeTokenEvent(msg.Data, &ev); err != nil {
				o.failure = err
				return o
			}
			if ev.Seq != seq {
				o.failure = fmt.Errorf("event %d arrived as %d: events were lost", ev.Seq, seq)
				return o
			}
			o.times = append(o.times, time.Now())
			o.tokens += len(ev.Tokens)
			o.toks = append(o.toks, ev.Tokens...)
			if onEvent != nil {
				onEvent(&ev)
			}
			if ev.Finish != "" {
				o.last = ev
				return o
			}
			timer.Reset(idle)
		case <-timer.C:
			o.failure = fmt.Errorf("no event for %v after %d", idle, seq)
			return o
		case <-ctx.Done():
			o.failure = ctx.Err()
			return o
		}
	}
}

// load streams requests from workers concurrent clients until stop.
type load struct {
	m       *chaosMesh
	mu      sync.Mutex
	done    []*outcome
	running map[string]time.Time
	stopCh  chan struct{}
	wg      sync.WaitGroup
}

func (m *chaosMesh) startLoad(workers, tokens int, idle time.Duration) *load {
	l := &load{m: m, running: map[string]time.Time{}, stopCh: make(chan struct{})}
	for w := range workers {
		l.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-l.stopCh:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				l.mu.Lock()
				l.running[id] = time.Now()
				l.mu.Unlock()
				idx := w*1000 + i
				if m.prompts > 0 {
					// Few prompts, each asked many times: every answer can be checked
					// against an undisturbed run of its prompt.
					idx %= m.prompts
				}
				o := m.generate(context.Background(), id, idx, tokens, idle, nil)
				l.mu.Lock()
				delete(l.running, id)
				l.done = append(l.done, o)
				l.mu.Unlock()
				if o.err() != nil {
					// Pace the retries: a request refused at once (no server) would spin.
					select {
					case <-l.stopCh:
					case <-time.After(50 * time.Millisecond):
					}
				}
			}
		})
	}
	m.t.Cleanup(l.stop)
	return l
}

// stop ends the load after the requests running finish (each is bounded by its idle
// timeout and deadline); it may be called more than once.
func (l *load) stop() {
	select {
	case <-l.stopCh:
	default:
		close(l.stopCh)
	}
	l.wg.Wait()
}

func (l *load) outcomes() []*outcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.done)
}

// finishedAfter waits until n requests that started after t have completed without error.
func (l *load) finishedAfter(t time.Time, n int) func() error {
	return func() error {
		ok := 0
		for _, o := range l.outcomes() {
			if o.start.After(t) && o.err() == nil {
				ok++
			}
		}
		if ok < n {
			return fmt.Errorf("%d of %d requests started after the disturbance completed", ok, n)
		}
		return nil
	}
}

// gaps returns the inter-event gaps of every request, for events in [from, to].
func gaps(outs []*outcome, from, to time.Time) []time.Duration {
	var g []time.Duration
	for _, o := range outs {
		for i := 1; i < len(o.times); i++ {
			if o.times[i-1].Before(from) || o.times[i].After(to) {
				continue
			}
			g = append(g, o.times[i].Sub(o.times[i-1]))
		}
	}
	sort.Slice(g, func(i, j int) bool { return g[i] < g[j] })
	return g
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// idleRouter returns nil once the router holds no sequence's KV cache: no generation is
// left running (or leaked) inside it.
func (m *chaosMesh) idleRouter() error {
	body, err := scrapeErr(m.metrics)
	if err != nil {
		return err
	}
	want := fmt.Sprintf(`moemesh_router_kv_bytes{model=%q,router="r1",state="in_use"} 0`, m.name)
	if !strings.Contains(body, want+"\n") {
		return fmt.Errorf("router still holds KV cache (no %s)", want)
	}
	return nil
}

func scrapeErr(addr string) (string, error) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// chaosDuration is how long a test keeps its load up after a disturbance settled.
func chaosDuration() time.Duration {
	if os.Getenv("MOEMESH_CHAOS") == "long" {
		return 30 * time.Second
	}
	return 3 * time.Second
}

// codeOf returns the wire code of a failed outcome (0 for a client-side failure).
func codeOf(o *outcome) proto.Code {
	if o.failure != nil {
		return proto.CodeOf(o.failure)
	}
	return o.last.ErrCode
}
