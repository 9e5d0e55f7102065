//go:build cann

package meshtest

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moemesh/moemesh/ascend"
	_ "github.com/moemesh/moemesh/ascend/cann"
	"github.com/moemesh/moemesh/ascend/cann/acl"
	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/deepseek"
	"github.com/moemesh/moemesh/model/gqa"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/router"
)

// tolCANNLogits bounds how far the logits of a mesh with a cann (emulated) card may stray
// from the all-cpu mesh's, relative to max |logit|. The backends agree to rounding, not
// bit for bit: the emulator's grouped matmul accumulates in float64 and rounds once, the
// cpu kernels accumulate in float32 in their own order (both inside the conformance
// suite's tolerance), so expert outputs differ in the last bits and that difference flows
// through the layers. Greedy tokens must still be identical; observed differences are
// around 1e-6 of max |logit|.
const tolCANNLogits = 1e-4

// TestCANNMixedMesh: a mesh of one cpu daemon and one cann daemon (over the ACL emulator)
// serving halves of a model's experts generates the same greedy tokens as the all-cpu mesh,
// with logits within tolCANNLogits; the mixed run also puts the router's dense path on a
// cann card (Linears through aclnnGroupedMatmulV5, norms/attention/gating on the host).
func TestCANNMixedMesh(t *testing.T) {
	t.Run("qwen3_moe", func(t *testing.T) { checkCANNMixed(t, "qwen3_moe", gqa.Load) })
	t.Run("deepseek_v3", func(t *testing.T) { checkCANNMixed(t, "deepseek_v3", deepseek.Load) })
}

func checkCANNMixed[S any, M forwarder[S]](t *testing.T, arch string, load func(*safetensors.Checkpoint, *model.Config, ascend.Card) (M, error)) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := Checkpoint(t, arch, "bf16")
	srv, err := stack.Start(ctx, stack.Config{ModelDir: dir, Placement: [][]int{}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cfg := srv.Model
	halves := stack.Spread(cfg.Experts, 2, 0)
	allCPU, mixed := "cann-cpu-"+arch, "cann-mixed-"+arch
	for _, d := range []stack.Config{
		{Model: allCPU, Placement: halves},
		{Model: mixed, Placement: halves[:1]},
		{Model: mixed, Placement: halves[1:], Backend: "cann"},
	} {
		d.ModelDir, d.NATSURL = dir, srv.URL
		st, err := stack.Start(ctx, d)
		if err != nil {
			t.Fatalf("daemons of %s on %s: %v", d.Model, d.Backend, err)
		}
		defer st.Close()
	}

	ck, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	run := func(backend, name string) ([][]int32, [][][]float32) {
		t.Helper()
		be, err := ascend.Open(backend)
		if err != nil {
			t.Fatal(err)
		}
		card, err := be.OpenCard(3, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer card.Close()
		m, err := load(ck, cfg, card)
		if err != nil {
			t.Fatalf("dense model on a %s card: %v", backend, err)
		}
		defer m.Close()
		nc, err := srv.Connect(ctx, "router-"+name)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		experts, err := router.NewMesh(ctx, nc, router.MeshConfig{Model: name, Experts: cfg.Experts, Mode: proto.ModePairs, Wire: proto.F32})
		if err != nil {
			t.Fatal(err)
		}
		defer experts.Close()
		var keys []model.ExpertKey
		for _, l := range cfg.MoELayers() {
			for e := 0; e < cfg.Experts; e++ {
				keys = append(keys, model.ExpertKey{Layer: l, Expert: e})
			}
		}
		if err := experts.WaitFor(ctx, keys); err != nil {
			t.Fatal(err)
		}
		prompts := make([][]int32, 3)
		for i := range prompts {
			for j := 0; j < 3+4*i; j++ {
				prompts[i] = append(prompts[i], int32((5*i+11*j+2)%cfg.Vocab))
			}
		}
		tok, logits, err := greedy(ctx, m, experts, prompts, 12)
		if err != nil {
			t.Fatalf("%s mesh: %v", name, err)
		}
		return tok, logits
	}
	wantTok, wantLogits := run("cpu", allCPU)
	gotTok, gotLogits := run("cann", mixed)
	if fmt.Sprint(gotTok) != fmt.Sprint(wantTok) {
		t.Fatalf("mixed cpu+cann mesh tokens %v, all-cpu mesh %v", gotTok, wantTok)
	}
	worst := 0.0
	for s := range wantLogits {
		for step := range wantLogits[s] {
			d, m := stack.Diff(gotLogits[s][step], wantLogits[s][step])
			if rel := d / math.Max(m, 1e-30); rel > worst {
				worst = rel
			}
		}
	}
	if worst > tolCANNLogits {
		t.Fatalf("logits differ by %.3g of max |logit| (tolerance %g)", worst, tolCANNLogits)
	}
	t.Logf("%s: %d sequences × %d tokens equal; logits within %.3g of max |logit|", arch, len(wantTok), len(wantTok[0]), worst)
}

// TestCANNExpertdLoadUnloadNoLeaks: an expert daemon on a cann (emulated) card follows 100
// assignment changes, each unloading one half of a layer's experts and loading the other
// (200 expert-set changes through the daemon's own reconcile path: drain, remove on the
// card's worker, read and upload). Afterwards it has no more goroutines than after the
// first change, its card accounts exactly the experts it holds, the emulator holds no more
// device blocks than then (the allocator's cache is reused, not grown), and once the daemon
// stops the emulator holds no device or pinned memory, executor or tensor at all.
func TestCANNExpertdLoadUnloadNoLeaks(t *testing.T) {
	if !acl.Emulated {
		t.Skip("needs the emulator's allocation counters")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := Checkpoint(t, "qwen3_moe", "bf16")
	const name = "cann-leak"
	st, err := stack.Start(ctx, stack.Config{ModelDir: dir, Model: name, Backend: "cann", Placement: [][]int{{}},
		Heartbeat: 40 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			st.Close()
		}
	}()
	nc, err := st.Connect(ctx, "assigner")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := mesh.OpenRegistry(ctx, nc, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	card := st.CardIDs()[0]
	layer := st.Model.MoELayers()[0]
	halves := stack.Spread(st.Model.Experts, 2, 0)
	var perExpert int64
	// assign makes the card hold half h of the layer's experts and waits until its lease
	// shows exactly those, all ready.
	assign := func(round int) {
		t.Helper()
		h := halves[round%2]
		a := &proto.Assignment{V: proto.Version, Card: card, Epoch: int64(round + 1), Leader: "test"}
		want := map[int32]bool{}
		for _, e := range h {
			a.Experts = append(a.Experts, proto.ExpertRef{Layer: int32(layer), Expert: int32(e)})
			want[int32(e)] = true
		}
		if err := reg.PutAssign(ctx, a); err != nil {
			t.Fatal(err)
		}
		WaitFor(t, 10*time.Second, func() error {
			leases, err := reg.Cards(ctx)
			if err != nil {
				return err
			}
			for _, c := range leases {
				if c.Card != card {
					continue
				}
				n := 0
				for _, e := range c.Experts {
					if e.State != proto.StateReady || int(e.Layer) != layer || !want[e.Expert] {
						return fmt.Errorf("round %d: card lists %d/%d in state %d", round, e.Layer, e.Expert, e.State)
					}
					n++
				}
				if n != len(h) {
					return fmt.Errorf("round %d: %d of %d experts ready", round, n, len(h))
				}
				if perExpert == 0 {
					perExpert = c.MemUsed / int64(n)
				}
				if c.MemUsed != perExpert*int64(n) {
					return fmt.Errorf("round %d: card accounts %d bytes for %d experts of %d", round, c.MemUsed, n, perExpert)
				}
				return nil
			}
			return fmt.Errorf("round %d: no lease of card %s", round, card)
		})
	}
	assign(0)
	assign(1)
	baseG, baseS := runtime.NumGoroutine(), acl.Stats()
	for round := 2; round < 102; round++ {
		assign(round)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseG && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > baseG {
		t.Errorf("%d goroutines after 100 load/unload rounds, %d after the first", n, baseG)
	}
	if s := acl.Stats(); s.DevAllocs > baseS.DevAllocs || s.HostAllocs > baseS.HostAllocs || s.Executors != 0 {
		t.Errorf("emulator after 100 rounds %+v, after the first %+v: device memory or executors grew", s, baseS)
	}
	st.Close()
	closed = true
	if s := acl.Stats(); s != (acl.EmuStats{}) {
		t.Errorf("after the daemon stopped the emulator still holds %+v", s)
	}
	t.Logf("100 rounds: %d goroutines (%d before), emulator at the end of the rounds %+v", runtime.NumGoroutine(), baseG, baseS)
}

var (
	cannBinOnce sync.Once
	cannBinPath string
	cannBinErr  error
)

// cannBinary builds cmd/moemesh with -tags cann (linked against the emulator) once per
// test binary.
func cannBinary(t *testing.T) string {
	t.Helper()
	cannBinOnce.Do(func() {
		// Under the package's temp root, which TestMain's Cleanup removes.
		ckMu.Lock()
		if root == "" {
			root, cannBinErr = os.MkdirTemp("", "moemesh-ck-")
		}
		cannBinPath = filepath.Join(root, "bin-cann", "moemesh")
		ckMu.Unlock()
		if cannBinErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-tags", "cann", "-o", cannBinPath, "github.com/moemesh/moemesh/cmd/moemesh")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			cannBinErr = fmt.Errorf("go build -tags cann: %v\n%s", err, out)
		}
	})
	if cannBinErr != nil {
		t.Fatal(cannBinErr)
	}
	return cannBinPath
}

// noLibraryPath is the environment without LD_LIBRARY_PATH: the binary must find the
// emulator through the run path the build baked in.
func noLibraryPath() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LD_LIBRARY_PATH=") {
			env = append(env, kv)
		}
	}
	return env
}

// TestCANNProcesses runs the real binary built with -tags cann: `expertd --device cann`
// serves a model over the emulator, `generate` through it gives the tokens of `generate
// --local` on the cpu backend, and `router --device cann` (dense path on an emulated card)
// comes up against that daemon and stops cleanly on SIGTERM.
func TestCANNProcesses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := cannBinary(t)
	dir := Checkpoint(t, "qwen3_moe", "bf16")
	const name = "cann-proc"
	srv, err := stack.Start(ctx, stack.Config{ModelDir: dir, Model: name, Placement: [][]int{}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	start := func(args ...string) (*exec.Cmd, *syncBuffer) {
		t.Helper()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = noLibraryPath()
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			if t.Failed() {
				t.Logf("%s output:\n%s", args[0], out.String())
			}
		})
		return cmd, out
	}
	_, dout := start("expertd", "--device", "cann", "--nats", srv.URL, "--model", dir, "--name", name, "--id", "cannproc",
		"--heartbeat", "200ms")
	WaitFor(t, time.Minute, func() error {
		if !strings.Contains(dout.String(), "expert daemon serving") {
			return fmt.Errorf("expertd --device cann not serving yet")
		}
		return nil
	})

	generate := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, bin, append([]string{"generate", "--model", dir, "--name", name, "--ids", "3,14,15,92,65",
			"--greedy", "--max-tokens", "12", "--log-level", "warn"}, args...)...)
		cmd.Env = noLibraryPath()
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("generate %v: %v\n%s", args, err, stderr)
		}
		return string(out)
	}
	local := generate("--local")
	meshed := generate("--nats", srv.URL, "--exact")
	if meshed != local || strings.TrimSpace(local) == "" {
		t.Fatalf("generate over expertd --device cann gave %q, --local on cpu %q", meshed, local)
	}

	rcmd, rout := start("router", "--device", "cann", "--nats", srv.URL, "--model", dir, "--name", name, "--id", "cannrouter",
		"--drain", "2s")
	WaitFor(t, time.Minute, func() error {
		if !strings.Contains(rout.String(), "router serving") {
			return fmt.Errorf("router --device cann not serving yet")
		}
		return nil
	})
	if err := rcmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := rcmd.Wait(); err != nil {
		t.Fatalf("router --device cann exited with %v after SIGTERM:\n%s", err, rout.String())
	}
}
