package meshtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
)

// TestChaosNATSCluster: a 3-node NATS cluster of `moemesh nats` processes on loopback,
// each with its own store, holds an R3 registry; an expertd is connected to each node, the
// router to n2, the client to n3, every expert on two of the three daemons (router in
// exact mode). Under a streamed load, kill -9 of n1 (where daemon e0 is connected), leading
// the registry's stream when it dies, fails no request and changes no token: each request
// streams exactly what its prompt streams undisturbed. n1 then restarts on its store and
// rejoins (routes to both peers, JetStream healthy, its replica of the registry current),
// still under the load, and a client connected to it alone is served.
func TestChaosNATSCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs the binary")
	}
	Binary(t)
	t0 := time.Now()
	c := startNATSCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const name = "natscluster"

	// The cluster has formed once its JetStream meta group places an R3 stream: the
	// registry bucket, with what the services will ask (--registry-replicas 3).
	admin, err := mesh.Connect(ctx, c.urls(), "chaos-admin")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	WaitFor(t, 30*time.Second, func() error {
		octx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := mesh.OpenRegistry(octx, admin, name, time.Minute, mesh.WithReplicas(3))
		return err
	})
	for i := range c.nodes {
		WaitFor(t, 20*time.Second, func() error { return c.joined(ctx, admin, name, i) })
	}
	t.Logf("cluster of 3 formed, R3 registry placed, %v after start", time.Since(t0).Round(time.Millisecond))

	m := &chaosMesh{t: t, name: name, dir: Checkpoint(t, "qwen3_moe", "bf16"), daemons: map[string]*chaosProc{}, deadline: 20 * time.Second, prompts: 8}
	if m.cfg, err = model.LoadConfig(m.dir); err != nil {
		t.Fatal(err)
	}
	// Every expert on two daemons: any one daemon's card may drop out for a moment.
	sets := make([][]string, 3)
	for e := range m.cfg.Experts {
		for _, d := range []int{e % 3, (e + 1) % 3} {
			sets[d] = append(sets[d], strconv.Itoa(e))
		}
	}
	// Each service gets its own node's URL alone: nats.go shuffles a URL list (mesh.Connect
	// does not set DontRandomize), so a list would not pin a service to its node. The
	// servers tell their clients the other nodes' URLs, which is what a service fails over to.
	var cards []string
	for i, set := range sets {
		id := fmt.Sprint("e", i)
		cards = append(cards, id+"-c0")
		m.daemons[id] = startChaosProc(t, "daemon "+id, "expertd", "--nats", c.url(i), "--model", m.dir, "--name", name,
			"--id", id, "--experts", strings.Join(set, ","), "--heartbeat", "200ms", "--registry-replicas", "3", "--log-level", "info")
	}
	m.metrics = freeAddr(t)
	m.router = startChaosProc(t, "router", "router", "--nats", c.url(1), "--model", m.dir, "--name", name, "--id", "r1",
		"--exact", "--registry-replicas", "3", "--metrics", m.metrics, "--log-level", "info")
	if m.nc, err = mesh.Connect(ctx, c.url(2), "chaos-client"); err != nil {
		t.Fatal(err)
	}
	defer m.nc.Close()
	if m.reg, err = mesh.OpenRegistry(ctx, m.nc, name, 0); err != nil {
		t.Fatal(err)
	}
	// Every daemon holds a lease: none is still opening the registry when n1 goes.
	WaitFor(t, time.Minute, func() error {
		leases, err := m.leases()
		if err != nil {
			return err
		}
		for _, id := range cards {
			if _, ok := leases[id]; !ok {
				return fmt.Errorf("no lease of %s", id)
			}
		}
		return m.covered(cards...)
	})
	WaitFor(t, time.Minute, func() error { return m.generate(ctx, "probe", 0, 2, 5*time.Second, nil).err() })
	// The services sit where the test put them: e0 on n1, the router on n2.
	WaitFor(t, 10*time.Second, func() error { return c.hasConn(0, "moemesh-expertd-e0") })
	WaitFor(t, 10*time.Second, func() error { return c.hasConn(1, "moemesh-router-r1") })
	t.Logf("mesh serving %v after start", time.Since(t0).Round(time.Millisecond))

	const tokens, idle = 16, 10 * time.Second
	l := m.startLoad(4, tokens, idle)
	WaitFor(t, 30*time.Second, l.finishedAfter(time.Time{}, 4))
	var kills []time.Time
	// The registry's stream leader is moved to the node first, the worst case: its
	// JetStream leader election (seconds) while the daemons' leases are due. Not killed
	// here: the router's node (n2) and the client's (n3). Core NATS delivers at most once,
	// so a token event the router published just before its server died is lost in that
	// server's buffers, and the client sees a gap in the sequence (about one run in five
	// fails one request); a client's own server takes its requests in flight with it. The
	// daemons' node is safe because the router retries expert calls elsewhere.
	for _, v := range []struct {
		node int
		svc  string // the service connected to it, which must fail over
	}{{0, "moemesh-expertd-e0"}} {
		kills = append(kills, c.killAndRejoin(ctx, m, l, admin, v.node, v.svc))
	}
	l.stop()

	outs := l.outcomes()
	failed := 0
	for _, o := range outs {
		if err := o.err(); err != nil {
			failed++
			t.Errorf("request %s (started %v after the first kill) failed: %v", o.id, o.start.Sub(kills[0]).Round(time.Millisecond), err)
		}
	}
	// Tokens against an undisturbed run of each prompt, on the healed cluster.
	refs := map[int][]int32{} // by prompt index
	for _, o := range outs {
		if _, ok := refs[o.i]; ok || o.err() != nil {
			continue
		}
		r := m.generate(ctx, fmt.Sprint("ref-", o.i), o.i, tokens, idle, nil)
		if err := r.err(); err != nil {
			t.Fatalf("undisturbed run of prompt %d: %v", o.i, err)
		}
		refs[o.i] = r.toks
	}
	for _, o := range outs {
		if o.err() == nil && !slices.Equal(o.toks, refs[o.i]) {
			t.Errorf("request %s streamed %v, undisturbed %v", o.id, o.toks, refs[o.i])
		}
	}
	t.Logf("%d requests, %d failed, %d prompts checked against undisturbed runs, in %v",
		len(outs), failed, len(refs), time.Since(t0).Round(time.Millisecond))
}

// killAndRejoin kills -9 node i under the load l, once the registry's stream leader is
// there: svc, a service connected to it, fails over to another node and the load goes on
// on two nodes; then the node restarts on its store and rejoins, and a client connected
// to it alone is served.
// It returns the time of the kill.
func (c *natsCluster) killAndRejoin(ctx context.Context, m *chaosMesh, l *load, admin *nats.Conn, i int, svc string) time.Time {
	t := c.t
	t.Helper()
	nd := c.nodes[i]
	WaitFor(t, 10*time.Second, func() error { return c.hasConn(i, svc) })
	c.leadOn(ctx, admin, m.name, i)
	var jz struct {
		Meta struct {
			Leader string `json:"leader"`
		} `json:"meta_cluster"`
	}
	if err := c.monitorGet((i+1)%len(c.nodes), "/jsz", &jz); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 30*time.Second, l.finishedAfter(time.Now(), 4))

	l.mu.Lock()
	inFlight := len(l.running)
	l.mu.Unlock()
	killed := time.Now()
	nd.proc.signal(t, syscall.SIGKILL)
	_ = nd.proc.wait(t, 10*time.Second) // killed: the exit error is expected
	if inFlight == 0 {
		t.Errorf("no request was in flight at the kill of %s", nd.name)
	}
	// The service fails over to a node it learnt from the cluster, and serves from there.
	WaitFor(t, 15*time.Second, func() error {
		for j := range c.nodes {
			if j != i && c.hasConn(j, svc) == nil {
				return nil
			}
		}
		return fmt.Errorf("%s is connected to no other node", svc)
	})
	t.Logf("kill -9 of %s (registry stream leader; JetStream meta leader %s) with %d requests in flight: %s reconnected after %v",
		nd.name, jz.Meta.Leader, inFlight, svc, time.Since(killed).Round(time.Millisecond))
	WaitFor(t, 30*time.Second, l.finishedAfter(time.Now(), 4))
	time.Sleep(chaosDuration()) // the load runs on two nodes

	restarted := time.Now()
	c.start(i)
	WaitFor(t, 30*time.Second, func() error { return c.joined(ctx, admin, m.name, i) })
	t.Logf("%s rejoined %v after its restart", nd.name, time.Since(restarted).Round(time.Millisecond))
	// A client of the node alone is served: its request and the router's events cross it.
	solo, err := mesh.Connect(ctx, c.url(i), "chaos-solo")
	if err != nil {
		t.Fatal(err)
	}
	defer solo.Close()
	sm := *m
	sm.nc = solo
	WaitFor(t, 10*time.Second, func() error { return sm.generate(ctx, "via-"+nd.name, 7, 4, 5*time.Second, nil).err() })
	WaitFor(t, 30*time.Second, l.finishedAfter(time.Now(), 4))
	return killed
}

// natsNode is one `moemesh nats` process of a cluster.
type natsNode struct {
	name                     string
	client, cluster, monitor int // ports
	store                    string
	proc                     *chaosProc
}

// natsCluster runs `moemesh nats` processes as one NATS cluster on loopback.
type natsCluster struct {
	t      *testing.T
	routes string // every node's cluster URL, the node's own included
	nodes  []*natsNode
}

// startNATSCluster starts n nodes (n1, n2, ...), each with its own ports and store, and
// returns once each accepts clients; the JetStream cluster may still be forming.
func startNATSCluster(t *testing.T, n int) *natsCluster {
	t.Helper()
	c := &natsCluster{t: t}
	var routes []string
	for i := range n {
		nd := &natsNode{name: fmt.Sprint("n", i+1), client: freeTCPPort(t), cluster: freeTCPPort(t), monitor: freeTCPPort(t),
			store: filepath.Join(t.TempDir(), "js")}
		c.nodes = append(c.nodes, nd)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", nd.cluster))
	}
	c.routes = strings.Join(routes, ",")
	for i := range c.nodes {
		c.start(i)
	}
	return c
}

// freeTCPPort returns a loopback port that was free a moment ago.
func freeTCPPort(t *testing.T) int {
	_, p, err := splitHostPort(freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// start starts (or restarts) node i on its ports and store and waits until it accepts
// connections.
func (c *natsCluster) start(i int) {
	c.t.Helper()
	nd := c.nodes[i]
	nd.proc = startChaosProc(c.t, "nats "+nd.name, "nats", "--name", nd.name, "--port", strconv.Itoa(nd.client),
		"--store", nd.store, "--cluster", "moemesh", "--cluster-port", strconv.Itoa(nd.cluster), "--routes", c.routes,
		"--monitor", fmt.Sprintf("127.0.0.1:%d", nd.monitor), "--log-level", "warn")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nc, err := mesh.Connect(ctx, c.url(i), "chaos-probe")
	if err != nil {
		c.t.Fatalf("nats %s: %v\n%s", nd.name, err, nd.proc.out.String())
	}
	nc.Close()
}

// url is node i's client URL. A service given it alone still fails over: the server
// tells its clients the other nodes' URLs.
func (c *natsCluster) url(i int) string {
	return fmt.Sprintf("nats://127.0.0.1:%d", c.nodes[i].client)
}

// urls lists every node's client URL.
func (c *natsCluster) urls() string {
	var u []string
	for i := range c.nodes {
		u = append(u, c.url(i))
	}
	return strings.Join(u, ",")
}

// monitorGet decodes the JSON of a monitoring endpoint of node i.
func (c *natsCluster) monitorGet(i int, path string, v any) error {
	hc := http.Client{Timeout: 3 * time.Second}
	resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d%s", c.nodes[i].monitor, path))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", c.nodes[i].name, path, resp.Status, strings.TrimSpace(string(body)))
	}
	return json.Unmarshal(body, v)
}

// joined returns nil once node i is a full member again: routed to every other node,
// healthy by its JetStream health check (meta group and its streams current), and its
// replica of model's registry current.
func (c *natsCluster) joined(ctx context.Context, admin *nats.Conn, model string, i int) error {
	nd := c.nodes[i]
	var rz struct {
		Routes []struct {
			RemoteName string `json:"remote_name"`
		} `json:"routes"`
	}
	if err := c.monitorGet(i, "/routez", &rz); err != nil {
		return err
	}
	peers := map[string]bool{}
	for _, r := range rz.Routes {
		peers[r.RemoteName] = true
	}
	if len(peers) != len(c.nodes)-1 {
		return fmt.Errorf("%s is routed to %v, want the %d other nodes", nd.name, peers, len(c.nodes)-1)
	}
	var hz struct {
		Status string `json:"status"`
	}
	if err := c.monitorGet(i, "/healthz", &hz); err != nil {
		return err
	}
	js, err := jetstream.New(admin)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	st, err := js.Stream(sctx, "KV_"+proto.Bucket(model))
	if err != nil {
		return err
	}
	cl := st.CachedInfo().Cluster
	if cl == nil {
		return fmt.Errorf("registry stream has no cluster info")
	}
	if cl.Leader == nd.name {
		return nil
	}
	for _, p := range cl.Replicas {
		if p.Name == nd.name && p.Current && !p.Offline {
			return nil
		}
	}
	return fmt.Errorf("%s's replica of the registry is not current: leader %s, replicas %+v", nd.name, cl.Leader, cl.Replicas)
}

// leadOn moves the leadership of model's registry stream to node i.
func (c *natsCluster) leadOn(ctx context.Context, admin *nats.Conn, model string, i int) {
	c.t.Helper()
	js, err := jetstream.New(admin)
	if err != nil {
		c.t.Fatal(err)
	}
	stream, want := "KV_"+proto.Bucket(model), c.nodes[i].name
	WaitFor(c.t, 30*time.Second, func() error {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		st, err := js.Stream(sctx, stream)
		if err != nil {
			return err
		}
		if cl := st.CachedInfo().Cluster; cl != nil && cl.Leader == want {
			return nil
		}
		body := fmt.Sprintf(`{"placement":{"preferred":%q}}`, want)
		reply, err := admin.RequestWithContext(sctx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, []byte(body))
		if err != nil {
			return err
		}
		return fmt.Errorf("leader not on %s yet (step-down: %s)", want, reply.Data)
	})
}

// hasConn returns nil if a client named name is connected to node i.
func (c *natsCluster) hasConn(i int, name string) error {
	var cz struct {
		Conns []struct {
			Name string `json:"name"`
		} `json:"connections"`
	}
	if err := c.monitorGet(i, "/connz?limit=1024", &cz); err != nil {
		return err
	}
	var names []string
	for _, cn := range cz.Conns {
		if cn.Name == name {
			return nil
		}
		names = append(names, cn.Name)
	}
	return fmt.Errorf("%s is not connected to %s (%v)", name, c.nodes[i].name, names)
}
