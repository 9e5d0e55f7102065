package meshtest

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
)

// TestProcessGenerateSurvivesKill: a router process streams concurrent requests with every
// expert on two of three expertd processes (exact mode); kill -9 of one daemon in the middle
// fails no request, and every request's tokens equal its undisturbed run.
func TestProcessGenerateSurvivesKill(t *testing.T) {
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
	const name = "killgen"
	dir := Checkpoint(t, "qwen3_moe", "bf16")
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	sets := make([][]string, 3)
	for e := range cfg.Experts {
		for _, d := range []int{e % 3, (e + 1) % 3} {
			sets[d] = append(sets[d], fmt.Sprint(e))
		}
	}
	var daemons []*daemonProc
	for i, set := range sets {
		daemons = append(daemons, startDaemon(t, url, dir, name, fmt.Sprint("kg", i), strings.Join(set, ",")))
	}
	rt := exec.Command(Binary(t), "router", "--nats", url, "--model", dir, "--name", name, "--id", "kgr", "--exact", "--log-level", "warn")
	out := &syncBuffer{}
	rt.Stdout, rt.Stderr = out, out
	if err := rt.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = rt.Process.Kill()
		_ = rt.Wait()
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

	const n, tokens = 6, 48
	prompt := func(i int) proto.I32s { return proto.I32s{int32(3 + i), int32(40 + 7*i), int32(100 + i)} }
	run := func(tag string, onEvent func(i int, ev *proto.TokenEvent)) []genResult {
		res := make([]genResult, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				res[i] = c.generate(ctx, &proto.GenerateRequest{ID: fmt.Sprint(tag, i), Tenant: "t", Prompt: prompt(i), MaxTokens: tokens, IgnoreEOS: true},
					func(ev *proto.TokenEvent) {
						if onEvent != nil {
							onEvent(i, ev)
						}
					})
			})
		}
		wg.Wait()
		return res
	}
	calm := run("calm", nil)
	var once sync.Once
	killed := make(chan struct{})
	storm := run("storm", func(i int, ev *proto.TokenEvent) {
		if i == 0 && ev.Seq == 5 {
			once.Do(func() { daemons[1].kill(t); close(killed) })
		}
	})
	select {
	case <-killed:
	default:
		t.Fatal("the daemon was never killed: the requests ended too soon")
	}
	for i := range n {
		a, b := calm[i], storm[i]
		if a.err != nil || b.err != nil || b.last.Finish == proto.FinishError {
			t.Fatalf("request %d: calm %v, storm %v %s", i, a.err, b.err, b.last.ErrMsg)
		}
		if !slices.Equal(a.tokens, b.tokens) {
			t.Fatalf("request %d differs after the kill:\n%v\n%v", i, a.tokens, b.tokens)
		}
	}
	t.Logf("%d concurrent requests of %d tokens: none failed or changed around kill -9 of a daemon", n, tokens)
}
