package meshtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/moemesh/moemesh/model/synth"
)

var (
	ckMu  sync.Mutex
	ckDir = map[string]string{}
	root  string
)

// Checkpoint returns the directory of a tiny synthetic checkpoint of arch in dtype,
// written once per test binary and shared by the tests that ask for the same one.
func Checkpoint(t testing.TB, arch, dtype string) string {
	t.Helper()
	ckMu.Lock()
	defer ckMu.Unlock()
	key := arch + "-" + dtype
	if dir, ok := ckDir[key]; ok {
		return dir
	}
	if root == "" {
		var err error
		if root, err = os.MkdirTemp("", "moemesh-ck-"); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(root, key)
	if _, err := synth.Write(dir, synth.Options{Arch: arch, Preset: "tiny", Seed: 11, DType: dtype}); err != nil {
		t.Fatalf("writing %s checkpoint: %v", key, err)
	}
	ckDir[key] = dir
	return dir
}

// Cleanup removes what the package wrote; call it from TestMain.
func Cleanup() {
	if root != "" {
		os.RemoveAll(root)
	}
}

// WaitFor polls fn every few milliseconds until it returns nil or timeout passes, then fails
// the test with fn's last error.
func WaitFor(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary builds cmd/moemesh once per test binary and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "moemesh-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "moemesh")
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/moemesh/moemesh/cmd/moemesh")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}
