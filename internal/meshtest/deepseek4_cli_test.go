package meshtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
)

// TestCLIGenerateDeepseekV4: `moemesh mkmodel --arch deepseek_v4` writes a checkpoint that
// `moemesh generate --local` runs, and three expertd processes serving its MXFP4 experts
// (dequantised to bf16 at load) give the same greedy tokens and, with --exact, the same
// logits bytes.
func TestCLIGenerateDeepseekV4(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs the binary")
	}
	dir := filepath.Join(t.TempDir(), "v4")
	if out, err := run(t, "mkmodel", "--arch", "deepseek_v4", "--preset", "tiny", "--out", dir, "--seed", "3"); err != nil {
		t.Fatalf("mkmodel: %v\n%s", err, out)
	}
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := mesh.StartServer(mesh.ServerConfig{Host: "127.0.0.1", Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	const name = "cligen-dsv4"
	for i, set := range stack.Spread(cfg.Experts, 3, 2) {
		var parts []string
		for _, e := range set {
			parts = append(parts, fmt.Sprint(e))
		}
		startDaemon(t, srv.ClientURL(), dir, name, fmt.Sprintf("gdsv4%d", i), strings.Join(parts, ","))
	}
	tmp := t.TempDir()
	args := []string{"generate", "--model", dir, "--ids", "5,17,3,99,250,7,7,1,400,12", "--greedy", "--max-tokens", "24", "--log-level", "warn"}
	local, err := run(t, append(args, "--local", "--logits-out", filepath.Join(tmp, "local.bin"))...)
	if err != nil {
		t.Fatalf("generate --local: %v\n%s", err, local)
	}
	meshOut, err := run(t, append(args, "--nats", srv.ClientURL(), "--name", name, "--exact", "--logits-out", filepath.Join(tmp, "mesh.bin"))...)
	if err != nil {
		t.Fatalf("generate --nats: %v\n%s", err, meshOut)
	}
	var ids []int32
	if err := json.Unmarshal([]byte(strings.TrimSpace(local)), &ids); err != nil || len(ids) != 24 {
		t.Fatalf("local printed %q (%v)", local, err)
	}
	if meshOut != local {
		t.Fatalf("mesh printed %q, local %q", meshOut, local)
	}
	a, _ := os.ReadFile(filepath.Join(tmp, "local.bin"))
	b, _ := os.ReadFile(filepath.Join(tmp, "mesh.bin"))
	if _, raw, ok := bytes.Cut(a, []byte("\n")); !ok || len(raw) != len(ids)*cfg.Vocab*4 {
		t.Fatalf("logits file holds %d bytes of data", len(raw))
	}
	if !bytes.Equal(a, b) {
		t.Fatal("mesh logits differ from local in exact mode")
	}
	t.Logf("deepseek_v4: %d tokens equal over 3 expertd processes, logits byte-identical", len(ids))
}
