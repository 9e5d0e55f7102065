package meshtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
)

// routerClient sends GenerateRequests over NATS the way the gateway does and gathers the
// events.
type routerClient struct {
	nc    *nats.Conn
	model string
}

type genResult struct {
	tokens []int32
	text   string
	last   proto.TokenEvent
	router string
	err    error
}

func (c routerClient) generate(ctx context.Context, req *proto.GenerateRequest, onEvent func(*proto.TokenEvent)) genResult {
	req.V, req.Inbox = proto.Version, c.nc.NewRespInbox()
	ch := make(chan *nats.Msg, 1024)
	sub, err := c.nc.ChanSubscribe(req.Inbox, ch)
	if err != nil {
		return genResult{err: err}
	}
	defer sub.Unsubscribe()
	data, err := proto.Marshal(req)
	if err != nil {
		return genResult{err: err}
	}
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	reply, err := mesh.Request(actx, c.nc, &nats.Msg{Subject: proto.GenSubject(c.model), Data: data})
	cancel()
	if err != nil {
		return genResult{err: err}
	}
	var acc proto.GenerateAccepted
	if err := proto.DecodeGenerateAccepted(reply.Data, &acc); err != nil {
		return genResult{err: err}
	}
	res := genResult{router: acc.Router}
	for seq := uint32(0); ; seq++ {
		select {
		case m := <-ch:
			var ev proto.TokenEvent
			if err := proto.DecodeTokenEvent(m.Data, &ev); err != nil {
				return genResult{err: err}
			}
			if ev.Seq != seq {
				return genResult{err: fmt.Errorf("event %d arrived as %d", ev.Seq, seq)}
			}
			res.tokens = append(res.tokens, ev.Tokens...)
			res.text += ev.Text
			if onEvent != nil {
				onEvent(&ev)
			}
			if ev.Finish != "" {
				res.last = ev
				return res
			}
		case <-time.After(30 * time.Second):
			return genResult{err: errors.New("no event for 30 s")}
		case <-ctx.Done():
			return genResult{err: ctx.Err()}
		}
	}
}

// TestCLIRouter: a `moemesh router` process with its experts on three `moemesh expertd`
// processes serves eight concurrent requests over NATS; each streams exactly the greedy
// tokens of `moemesh generate --local` for its prompt. SIGTERM mid-generation drains: the
// running request completes and the router exits 0.
func TestCLIRouter(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs the binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv, err := mesh.StartServer(mesh.ServerConfig{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	url := srv.ClientURL()
	const arch, name = "qwen3_moe", "clirouter"
	dir := Checkpoint(t, arch, "bf16")
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	daemonMetrics, routerMetrics := freeAddr(t), freeAddr(t)
	for i, set := range stack.Spread(cfg.Experts, 3, 2) {
		var parts []string
		for _, e := range set {
			parts = append(parts, fmt.Sprint(e))
		}
		var extra []string
		if i == 0 {
			extra = []string{"--metrics", daemonMetrics}
		}
		startDaemon(t, url, dir, name, fmt.Sprint("rd", i), strings.Join(parts, ","), extra...)
	}
	rt := exec.Command(Binary(t), "router", "--nats", url, "--model", dir, "--name", name, "--id", "rt1", "--exact",
		"--metrics", routerMetrics, "--log-level", "warn")
	out := &syncBuffer{}
	rt.Stdout, rt.Stderr = out, out
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- rt.Wait() }()
	defer func() {
		_ = rt.Process.Kill()
		if t.Failed() {
			t.Logf("router output:\n%s", out.String())
		}
	}()

	nc, err := mesh.Connect(ctx, url, "client")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := routerClient{nc: nc, model: name}
	WaitFor(t, time.Minute, func() error {
		return c.generate(ctx, &proto.GenerateRequest{ID: "probe", Prompt: proto.I32s{1}, MaxTokens: 1}, nil).err
	})

	prompts := [][]int32{{5, 17, 3, 99}, {7}, {100, 200, 300, 400, 5, 6, 7, 8, 9, 10, 11}, {42, 43}, {1, 2, 3, 4, 5, 6}, {300}, {12, 13, 14}, {9, 8, 7, 6, 5, 4, 3, 2, 1}}
	results := make([]genResult, len(prompts))
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Go(func() {
			results[i] = c.generate(ctx, &proto.GenerateRequest{ID: fmt.Sprint("req", i), Tenant: "t", Prompt: p, MaxTokens: 24}, nil)
		})
	}
	wg.Wait()
	for i, p := range prompts {
		r := results[i]
		if r.err != nil {
			t.Fatalf("request %d: %v", i, r.err)
		}
		ids := make([]string, len(p))
		for k, id := range p {
			ids[k] = fmt.Sprint(id)
		}
		local, err := run(t, "generate", "--model", dir, "--ids", strings.Join(ids, ","), "--greedy", "--max-tokens", "24", "--local", "--log-level", "warn")
		if err != nil {
			t.Fatalf("generate --local: %v\n%s", err, local)
		}
		var want []int32
		if err := json.Unmarshal([]byte(strings.TrimSpace(local)), &want); err != nil {
			t.Fatalf("generate printed %q", local)
		}
		if !slices.Equal(r.tokens, want) {
			t.Fatalf("request %d via the router: %v; generate --local: %v", i, r.tokens, want)
		}
		if r.last.Usage.Prompt != int32(len(p)) || r.last.Usage.Completion != int32(len(want)) || r.router != "rt1" {
			t.Fatalf("request %d: usage %+v, router %q", i, r.last.Usage, r.router)
		}
	}

	// Both processes export what operators watch: the daemon its expert pairs of tenant t,
	// the router its finished requests and an empty KV cache once idle.
	for _, want := range []struct{ addr, series string }{
		{daemonMetrics, `moemesh_expertd_tenant_expert_pairs_total{daemon="rd0",tenant="t"}`},
		{routerMetrics, `moemesh_router_finished_total{model="clirouter",reason="length",router="rt1"}`},
		{routerMetrics, `moemesh_router_kv_bytes{model="clirouter",router="rt1",state="in_use"} 0`},
		{routerMetrics, `moemesh_nats_connected{router="rt1",service="router"} 1`},
	} {
		body := scrape(t, want.addr)
		if !strings.Contains(body, want.series) {
			t.Fatalf("%s has no %s:\n%s", want.addr, want.series, body)
		}
	}

	// The daemon's cards computed, so their busy time moved.
	if m := regexp.MustCompile(`(?m)^moemesh_expertd_card_busy_seconds_total\{[^}]*\} (\S+)$`).FindStringSubmatch(scrape(t, daemonMetrics)); m == nil {
		t.Fatal("no moemesh_expertd_card_busy_seconds_total")
	} else if v, err := strconv.ParseFloat(m[1], 64); err != nil || !(v > 0) {
		t.Fatalf("card busy seconds %q after serving requests, want > 0", m[1])
	}

	// SIGTERM while a request runs: it still completes, then the router exits cleanly.
	var once sync.Once
	r := c.generate(ctx, &proto.GenerateRequest{ID: "drain", Tenant: "t", Prompt: proto.I32s{3, 4}, MaxTokens: 40}, func(ev *proto.TokenEvent) {
		once.Do(func() { _ = rt.Process.Signal(syscall.SIGTERM) })
	})
	if r.err != nil || r.last.Finish == proto.FinishError || r.last.Finish == proto.FinishCancel {
		t.Fatalf("request during drain: %v, finish %q %s", r.err, r.last.Finish, r.last.ErrMsg)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("router exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("router did not exit after SIGTERM")
	}
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// scrape fetches a /metrics page.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
