package meshtest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/model/tokenizer"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, Binary(t), args...).CombinedOutput()
	return string(out), err
}

func TestCLIMkmodel(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs the binary")
	}
	a, b := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	for _, dir := range []string{a, b} {
		if out, err := run(t, "mkmodel", "--arch", "deepseek_v3", "--preset", "tiny", "--out", dir, "--seed", "3", "--dtype", "f32"); err != nil {
			t.Fatalf("mkmodel: %v\n%s", err, out)
		}
	}
	cfg, err := model.LoadConfig(a)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Arch != "deepseek_v3" || len(cfg.MoELayers()) == 0 {
		t.Fatalf("config: %+v", cfg)
	}
	ck, err := safetensors.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if n := len(ck.Files()); n < 2 {
		t.Fatalf("%d shards, want 2+", n)
	}
	for _, f := range ck.Files() {
		x, _ := os.ReadFile(f)
		y, _ := os.ReadFile(filepath.Join(b, filepath.Base(f)))
		if !bytes.Equal(x, y) {
			t.Fatalf("same seed, different %s", filepath.Base(f))
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"mkmodel", "--arch", "gpt2", "--out", filepath.Join(t.TempDir(), "x")}, "qwen3_moe"},
		{[]string{"mkmodel", "--arch", "mixtral", "--dtype", "int3", "--out", filepath.Join(t.TempDir(), "x")}, "int3"},
		{[]string{"mkmodel", "--arch", "mixtral"}, "--out is required"},
		{[]string{"expertd", "--model", a, "--experts", "0-99", "--nats", "nats://127.0.0.1:1"}, "outside 0-15"},
		{[]string{"expertd", "--model", a, "--layers", "0", "--nats", "nats://127.0.0.1:1"}, "not a MoE layer"},
		{[]string{"expertd", "--model", filepath.Join(t.TempDir(), "none")}, "not a model directory"},
		{[]string{"bench", "layer", "--model", a, "--tokens", "0"}, "positive number"},
	} {
		out, err := run(t, c.args...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("%v: err %v, output %q; want a failure mentioning %q", c.args, err, out, c.want)
		}
	}
}

func TestCLIBenchLayer(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs the binary")
	}
	dir := Checkpoint(t, "mixtral", "f32")
	out, err := run(t, "bench", "layer", "--model", dir, "--tokens", "1,8", "--daemons", "3", "--iters", "2", "--wire", "f32", "--mode", "pairs", "--log-level", "warn")
	if err != nil {
		t.Fatalf("bench layer: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	if !regexp.MustCompile(`^layer: maxdiff=0 mesh/local=[0-9]+\.[0-9]+$`).MatchString(last) {
		t.Fatalf("summary line %q (exact mode must give maxdiff=0)\n%s", last, out)
	}
	if !strings.Contains(out, "mesh/local") || len(lines) < 4 {
		t.Fatalf("no table:\n%s", out)
	}
}

func TestCLINATS(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs the binary")
	}
	cmd := exec.Command(Binary(t), "nats", "--port", "-1", "--log-level", "warn")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var url string
	select {
	case url = <-lines:
	case <-time.After(20 * time.Second):
		t.Fatal("moemesh nats printed no URL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := mesh.Connect(ctx, url, "cli-test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// JetStream is on: the registry opens.
	if _, err := mesh.OpenRegistry(ctx, nc, "cli", time.Second); err != nil {
		t.Fatalf("registry on moemesh nats: %v", err)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("moemesh nats after SIGINT: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("moemesh nats did not stop on SIGINT")
	}
}

// TestCLIExpertdOverBudget: experts that do not fit the card's budget stop the daemon with a
// clear error instead of a crash or a half-loaded card.
func TestCLIExpertdOverBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs the binary")
	}
	srv, err := mesh.StartServer(mesh.ServerConfig{Host: "127.0.0.1", Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	dir := Checkpoint(t, "qwen3_moe", "bf16")
	out, err := run(t, "expertd", "--nats", srv.ClientURL(), "--model", dir, "--card-memory", "20KiB", "--experts", "all")
	if err == nil || !strings.Contains(out, "out of memory") || !strings.Contains(out, "expert 0/1") {
		t.Fatalf("err %v, output:\n%s", err, out)
	}
}

func TestCLITokenize(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs the binary")
	}
	dir := t.TempDir()
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json"} {
		gz, err := os.ReadFile(filepath.Join("..", "..", "model", "tokenizer", "testdata", "qwen3", name+".gz"))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	lines := []string{"Hello, world!", "你好，世界 🌍", "  two  spaces\tand a tab", "<|im_start|>user"}
	var want []string
	for _, l := range lines {
		ids, err := tok.Encode(l, false)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(ids)
		want = append(want, string(b))
	}
	cmd := exec.Command(Binary(t), "tokenize", "--model", dir)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tokenize: %v", err)
	}
	if got := strings.Split(strings.TrimSpace(string(out)), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("tokenize printed\n%s\nwant\n%s", out, strings.Join(want, "\n"))
	}
	dec := exec.Command(Binary(t), "tokenize", "--model", dir, "--decode", "--special")
	dec.Stdin = bytes.NewReader(out)
	back, err := dec.Output()
	if err != nil {
		t.Fatalf("tokenize --decode: %v", err)
	}
	if strings.TrimSuffix(string(back), "\n") != strings.Join(lines, "\n") {
		t.Fatalf("decode gave %q", back)
	}
	bad := exec.Command(Binary(t), "tokenize", "--model", dir, "--decode")
	bad.Stdin = strings.NewReader("[1, 2\n")
	if msg, err := bad.CombinedOutput(); err == nil || !strings.Contains(string(msg), "line 1") {
		t.Fatalf("bad decode input: %v %s", err, msg)
	}
}

// TestCLIGenerate: `moemesh generate` with the routed experts on three `moemesh expertd`
// processes (exact mode) prints the same 32 greedy tokens as --local and writes byte-identical
// logits, for a tiny checkpoint of every family.
func TestCLIGenerate(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs the binary")
	}
	srv, err := mesh.StartServer(mesh.ServerConfig{Host: "127.0.0.1", Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	var dir string
	for _, arch := range []string{"qwen3_moe", "qwen2_moe", "mixtral", "olmoe", "granitemoe", "deepseek_v2", "deepseek_v3"} {
		dir = Checkpoint(t, arch, "bf16")
		cfg, err := model.LoadConfig(dir)
		if err != nil {
			t.Fatal(err)
		}
		name := "cligen-" + arch
		for i, set := range stack.Spread(cfg.Experts, 3, 2) {
			var parts []string
			for _, e := range set {
				parts = append(parts, fmt.Sprint(e))
			}
			startDaemon(t, srv.ClientURL(), dir, name, fmt.Sprintf("g%s%d", strings.ReplaceAll(arch, "_", ""), i), strings.Join(parts, ","))
		}
		tmp := t.TempDir()
		args := []string{"generate", "--model", dir, "--ids", "5,17,3,99", "--greedy", "--max-tokens", "32", "--log-level", "warn"}
		local, err := run(t, append(args, "--local", "--logits-out", filepath.Join(tmp, "local.bin"))...)
		if err != nil {
			t.Fatalf("%s: generate --local: %v\n%s", arch, err, local)
		}
		meshOut, err := run(t, append(args, "--nats", srv.ClientURL(), "--name", name, "--exact", "--logits-out", filepath.Join(tmp, "mesh.bin"))...)
		if err != nil {
			t.Fatalf("%s: generate --nats: %v\n%s", arch, err, meshOut)
		}
		var ids []int32
		if err := json.Unmarshal([]byte(strings.TrimSpace(local)), &ids); err != nil || len(ids) == 0 {
			t.Fatalf("%s: local printed %q (%v)", arch, local, err)
		}
		if meshOut != local {
			t.Fatalf("%s: mesh printed %q, local %q", arch, meshOut, local)
		}
		a, _ := os.ReadFile(filepath.Join(tmp, "local.bin"))
		b, _ := os.ReadFile(filepath.Join(tmp, "mesh.bin"))
		hdr, raw, ok := bytes.Cut(a, []byte("\n"))
		if !ok || len(raw) != len(ids)*cfg.Vocab*4 || !bytes.Contains(hdr, []byte(fmt.Sprintf(`"steps":%d`, len(ids)))) {
			t.Fatalf("%s: logits file: header %q, %d bytes of data", arch, hdr, len(raw))
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("%s: mesh logits differ from local in exact mode", arch)
		}
		t.Logf("%s: %d tokens equal over 3 expertd processes, logits byte-identical", arch, len(ids))
	}
	if out, err := run(t, "generate", "--model", dir, "--ids", "5", "--local", "--nats", srv.ClientURL()); err == nil || !strings.Contains(out, "choose one") {
		t.Fatalf("--local with --nats: %v %s", err, out)
	}
	if out, err := run(t, "generate", "--model", dir, "--ids", "999999", "--local"); err == nil || !strings.Contains(out, "not a token id") {
		t.Fatalf("bad id: %v %s", err, out)
	}
}
