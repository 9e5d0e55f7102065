package emu

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestExportsTheHeader builds the emulator and checks that every function the header
// declares is exported, so a binary linked against it also links against the toolkit.
func TestExportsTheHeader(t *testing.T) {
	for _, tool := range []string{"gcc", "nm", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	lib := filepath.Join(t.TempDir(), "libmoemesh_aclemu.so")
	if out, err := exec.Command("sh", "build.sh", lib).CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, out)
	}
	if out, _ := exec.Command("sh", "build.sh", lib).CombinedOutput(); strings.Contains(string(out), "warning") {
		t.Errorf("the emulator builds with warnings:\n%s", out)
	}
	hdr, err := os.ReadFile("../acl/include/acl_subset.h")
	if err != nil {
		t.Fatal(err)
	}
	decl := regexp.MustCompile(`(?m)^(?:const )?\w+ \*?(acl\w+)\(`)
	want := map[string]bool{}
	for _, m := range decl.FindAllStringSubmatch(string(hdr), -1) {
		want[m[1]] = true
	}
	if len(want) < 30 {
		t.Fatalf("found only %d declarations in the header: %v", len(want), want)
	}
	out, err := exec.Command("nm", "-D", "--defined-only", lib).Output()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[1] == "T" {
			have[f[2]] = true
		}
	}
	for name := range want {
		if !have[name] {
			t.Errorf("header declares %s, the emulator does not export it", name)
		}
	}
	for name := range have {
		if !want[name] && name != "moemeshEmuStats" {
			t.Errorf("the emulator exports %s, which the header does not declare", name)
		}
	}
}
