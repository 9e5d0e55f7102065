package meshtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/router"
)

// daemonProc is a `moemesh expertd` process.
type daemonProc struct {
	id  string
	cmd *exec.Cmd
	out *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startDaemon runs the real binary as an expert daemon; the test kills it at cleanup.
func startDaemon(t *testing.T, url, dir, name, id, experts string, args ...string) *daemonProc {
	t.Helper()
	cmd := exec.Command(Binary(t), append([]string{"expertd", "--nats", url, "--model", dir, "--name", name,
		"--id", id, "--experts", experts, "--heartbeat", "200ms", "--log-level", "warn"}, args...)...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &daemonProc{id: id, cmd: cmd, out: out}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("daemon %s output:\n%s", id, out.String())
		}
	})
	return p
}

func (p *daemonProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
}

// TestProcessMeshKill runs one MoE layer through three expert daemon processes: the result
// equals the in-process layer bit for bit; killing (-9) a daemon whose experts are all
// replicated elsewhere, while steps are running, fails no step and changes no bit; once an
// expert has no live replica left, a step fails with ErrNoReplica well within its deadline.
func TestProcessMeshKill(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs the binary")
	}
	t0start := time.Now()
	Binary(t)
	t.Logf("%v: binary built", time.Since(t0start))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv, err := mesh.StartServer(mesh.ServerConfig{Host: "127.0.0.1", Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	dir := Checkpoint(t, "qwen3_moe", "f32")
	const name = "proc"
	st, err := stack.Start(ctx, stack.Config{ModelDir: dir, Model: name, NATSURL: srv.ClientURL(), Placement: [][]int{}, Heartbeat: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e := st.Model.Experts
	half := fmt.Sprintf("0-%d", e/2-1)
	other := fmt.Sprintf("%d-%d", e/2, e-1)
	// pd0 holds every expert (the replicas); pd1 and pd2 hold disjoint halves.
	pd0 := startDaemon(t, srv.ClientURL(), dir, name, "pd0", "all")
	pd1 := startDaemon(t, srv.ClientURL(), dir, name, "pd1", half)
	pd2 := startDaemon(t, srv.ClientURL(), dir, name, "pd2", other)

	const layerTimeout = 5 * time.Second
	l, err := st.NewLayer(ctx, -1, proto.ModePairs, proto.F32, func(c *router.MeshConfig) {
		c.LayerTimeout = layerTimeout
		c.AttemptTimeout = time.Second
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	WaitFor(t, 20*time.Second, func() error {
		if n := len(l.Mesh.Cards()); n != 3 {
			return fmt.Errorf("router sees %d cards", n)
		}
		return nil
	})

	rng := rand.New(rand.NewPCG(7, 8))
	inputs := make([][]float32, 8)
	wants := make([][]float32, len(inputs))
	for i := range inputs {
		inputs[i] = stack.RandomInput(rng, 32, st.Model.Hidden)
		if wants[i], err = l.Forward(ctx, inputs[i], l.Local); err != nil {
			t.Fatal(err)
		}
	}
	check := func(i int) error {
		got, err := l.Forward(ctx, inputs[i%len(inputs)], l.Mesh)
		if err != nil {
			return err
		}
		if d, _ := stack.Diff(got, wants[i%len(inputs)]); d != 0 {
			return fmt.Errorf("step %d differs from in-process by %g", i, d)
		}
		return nil
	}
	for i := range inputs {
		if err := check(i); err != nil {
			t.Fatal(err)
		}
	}
	for id, n := range l.Mesh.Sent() {
		if n == 0 {
			t.Fatalf("card %s took no batch before the kill", id)
		}
	}
	t.Logf("%v: daemons up, mesh equals local", time.Since(t0start))
	checkDiscovery(t, st, name, []string{"pd0", "pd1", "pd2"})

	// Steps run continuously while pd2 is killed.
	killT := time.Now()
	steps, killedAt, errs := underLoad(t, check, func() { pd2.kill(t) })
	if len(errs) > 0 {
		t.Fatalf("%d of %d steps failed around the kill; first: %v", len(errs), steps, errs[0])
	}
	t.Logf("%d steps, pd2 killed after step %d, none failed or differed (%v)", steps, killedAt, time.Since(killT))

	// A hung daemon (SIGSTOP): a step waits one attempt timeout, then goes to the replica; the
	// hung card is skipped after that, so only one step pays.
	if err := pd1.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var slow []time.Duration
	for i := 0; i < 6; i++ {
		t1 := time.Now()
		if err := check(i); err != nil {
			t.Fatalf("step %d with a hung daemon: %v", i, err)
		}
		slow = append(slow, time.Since(t1))
	}
	if err := pd1.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	paid := 0
	for _, d := range slow {
		if d > 500*time.Millisecond {
			paid++
		}
	}
	if paid > 1 {
		t.Fatalf("%d steps waited for the hung card: %v", paid, slow)
	}
	t.Logf("hung daemon: step times %v", slow)

	// SIGTERM drains pd1 under load: no step fails, it exits 0 and its lease goes.
	steps, at, errs := underLoad(t, check, func() {
		if err := pd1.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := pd1.cmd.Wait(); err != nil {
			t.Errorf("pd1 after SIGTERM: %v\n%s", err, pd1.out.String())
		}
	})
	if len(errs) > 0 {
		t.Fatalf("%d of %d steps failed while pd1 drained; first: %v", len(errs), steps, errs[0])
	}
	WaitFor(t, 10*time.Second, func() error {
		for _, id := range l.Mesh.Cards() {
			if id == "pd1-c0" {
				return fmt.Errorf("pd1's lease is still there")
			}
		}
		return nil
	})
	t.Logf("pd1 drained after step %d of %d, none failed", at, steps)

	// Now kill the last holder of the upper half: a step needing it fails fast and clearly.
	pd0.kill(t)
	needs := -1
	for i, x := range inputs {
		if l.Routes(x, e-1) {
			needs = i
			break
		}
	}
	if needs < 0 {
		t.Fatalf("no input routes to expert %d", e-1)
	}
	t0 := time.Now()
	_, err = l.Forward(ctx, inputs[needs], l.Mesh)
	took := time.Since(t0)
	if !errors.Is(err, router.ErrNoReplica) {
		t.Fatalf("after losing every replica: err = %v, want ErrNoReplica", err)
	}
	if took >= layerTimeout {
		t.Fatalf("failing took %v, the layer deadline is %v", took, layerTimeout)
	}
	if !strings.Contains(err.Error(), fmt.Sprint(e-1)) && !strings.Contains(err.Error(), "expert") {
		t.Fatalf("error does not name the expert: %v", err)
	}
	t.Logf("no replica left: %v (after %v)", err, took)
}

// chaosSteps is how many steps run after a disturbance: 20 in `make test`, 300 in
// `make chaos` (MOEMESH_CHAOS=long).
func chaosSteps() int {
	if os.Getenv("MOEMESH_CHAOS") == "long" {
		return 300
	}
	return 20
}

// underLoad runs check in a loop on its own goroutine, calls disturb after 5 steps, and
// stops chaosSteps() steps later; it returns the step count, the step disturb came at, and
// failures.
func underLoad(t *testing.T, check func(int) error, disturb func()) (steps, at int, errs []error) {
	t.Helper()
	var mu sync.Mutex
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			err := check(i)
			mu.Lock()
			steps++
			if err != nil {
				errs = append(errs, err)
			}
			mu.Unlock()
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-done
	}()
	reached := func(n int) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			if steps < n {
				return fmt.Errorf("%d steps so far", steps)
			}
			return nil
		}
	}
	WaitFor(t, 30*time.Second, reached(5))
	disturb()
	mu.Lock()
	at = steps
	mu.Unlock()
	WaitFor(t, 2*time.Minute, reached(at+chaosSteps()))
	close(stop)
	<-done
	return steps, at, errs
}

// checkDiscovery asks nats micro's INFO verb (what `nats micro info` does) for the expert
// daemons and checks that each one shows its card endpoint on the card's subject.
func checkDiscovery(t *testing.T, st *stack.Stack, model string, daemons []string) {
	t.Helper()
	nc, err := st.Connect(context.Background(), "discovery")
	if err != nil {
		t.Fatal(err)
	}
	subj, err := micro.ControlSubject(micro.InfoVerb, proto.ServiceExpertd, "")
	if err != nil {
		t.Fatal(err)
	}
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(subj, inbox, nil); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	deadline := time.Now().Add(5 * time.Second)
	for len(seen) < len(daemons) && time.Now().Before(deadline) {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			break
		}
		var info micro.Info
		if err := json.Unmarshal(m.Data, &info); err != nil {
			t.Fatalf("info reply: %v", err)
		}
		d := info.Metadata["daemon"]
		if len(info.Endpoints) != 1 || info.Endpoints[0].Subject != proto.CardSubject(model, d+"-c0") {
			t.Fatalf("daemon %s advertises %+v", d, info.Endpoints)
		}
		seen[d] = true
	}
	for _, d := range daemons {
		if !seen[d] {
			t.Fatalf("daemon %s did not answer micro INFO (seen %v)", d, seen)
		}
	}
}
