package archtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/moemesh/moemesh"

type pkg struct {
	ImportPath string
	Dir        string
	Imports    []string
	GoFiles    []string
	CgoFiles   []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "-tags", "cann", module+"/...")
	cmd.Dir = root(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 10 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

func root(t *testing.T) string {
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func rel(path string) string { return strings.TrimPrefix(strings.TrimPrefix(path, module), "/") }

// under reports whether p is dir or inside it.
func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// rule says whether package from may import module package to (both relative paths).
type rule struct {
	name string
	bad  func(from, to string) bool
}

var rules = []rule{
	{"proto, tracing and ascend import nothing from the module", func(from, to string) bool {
		return from == "proto" || from == "tracing" || from == "ascend"
	}},
	{"gateway, router and expertd never import each other", func(from, to string) bool {
		svc := func(p string) string {
			for _, s := range []string{"gateway", "router", "expertd"} {
				if under(p, s) {
					return s
				}
			}
			return ""
		}
		a, b := svc(from), svc(to)
		return a != "" && b != "" && a != b
	}},
	{"model never imports a service or mesh", func(from, to string) bool {
		if !under(from, "model") {
			return false
		}
		for _, s := range []string{"gateway", "router", "expertd", "mesh", "internal"} {
			if under(to, s) {
				return true
			}
		}
		return false
	}},
	{"model imports no architecture or tool below it except safetensors, tokenizer and nn", func(from, to string) bool {
		return from == "model" && under(to, "model") && to != "model/safetensors" && to != "model/tokenizer" && to != "model/nn"
	}},
	{"model/nn and model/safetensors stay leaves (ascend at most)", func(from, to string) bool {
		return (under(from, "model/nn") || under(from, "model/safetensors")) && to != "ascend" && !under(to, from)
	}},
	{"model/quant is a leaf (number formats only)", func(from, to string) bool {
		return under(from, "model/quant") && !under(to, "model/quant")
	}},
	{"ascend backends import only ascend", func(from, to string) bool {
		return under(from, "ascend") && from != "ascend" && !under(to, "ascend")
	}},
	{"mesh imports only proto and tracing", func(from, to string) bool {
		return under(from, "mesh") && to != "proto" && to != "tracing" && !under(to, "mesh")
	}},
	{"only cmd and tests compose services (internal/stack, internal/meshtest)", func(from, to string) bool {
		return (under(to, "internal/stack") || under(to, "internal/meshtest")) &&
			!under(from, "cmd") && !under(from, "internal")
	}},
}

func TestImportRules(t *testing.T) {
	for _, p := range listPackages(t) {
		from := rel(p.ImportPath)
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			to := rel(imp)
			for _, r := range rules {
				if r.bad(from, to) {
					t.Errorf("%s imports %s: %s", from, to, r.name)
				}
			}
		}
	}
}

func TestRulesCatchViolations(t *testing.T) {
	// The rules must be able to fail: known-bad edges are flagged, known-good ones are not.
	bad := [][2]string{{"proto", "ascend"}, {"router", "expertd"}, {"gateway/http", "router"},
		{"model", "router"}, {"model", "model/qwen3moe"}, {"ascend/cpu", "model"}, {"mesh", "model"},
		{"router", "internal/stack"}, {"model/quant", "model"}, {"model/quant", "ascend"}}
	good := [][2]string{{"router", "mesh"}, {"expertd", "model"}, {"model/qwen3moe", "model"},
		{"model", "model/safetensors"}, {"ascend/cpu", "ascend"}, {"cmd/moemesh", "internal/stack"},
		{"model/deepseek4", "model/quant"}, {"model/deepseek4", "model"}}
	flag := func(e [2]string) bool {
		for _, r := range rules {
			if r.bad(e[0], e[1]) {
				return true
			}
		}
		return false
	}
	for _, e := range bad {
		if !flag(e) {
			t.Errorf("%s → %s not flagged", e[0], e[1])
		}
	}
	for _, e := range good {
		if flag(e) {
			t.Errorf("%s → %s flagged", e[0], e[1])
		}
	}
}

// TestOnlyCmdReadsEnvironment: libraries take a Config; flags and the environment are read in
// cmd/ only.
func TestOnlyCmdReadsEnvironment(t *testing.T) {
	forEachFile(t, func(relPath string, src []byte, f func() []string) {
		if under(filepath.ToSlash(filepath.Dir(relPath)), "cmd") || strings.HasSuffix(relPath, "_test.go") {
			return
		}
		for _, call := range []string{"os.Getenv(", "os.LookupEnv(", "os.Environ(", "flag.Parse("} {
			if bytes.Contains(src, []byte(call)) {
				t.Errorf("%s calls %s outside cmd/", relPath, strings.TrimSuffix(call, "("))
			}
		}
	})
}

// TestOnlyProtoBuildsSubjects: subjects are built in proto/subject.go only.
func TestOnlyProtoBuildsSubjects(t *testing.T) {
	forEachFile(t, func(relPath string, src []byte, _ func() []string) {
		if strings.HasPrefix(relPath, "proto/") || strings.HasSuffix(relPath, "_test.go") {
			return
		}
		sc := bufio.NewScanner(bytes.NewReader(src))
		for n := 1; sc.Scan(); n++ {
			if strings.Contains(sc.Text(), `"moe.v1`) {
				t.Errorf("%s:%d spells a subject; build it in proto/subject.go", relPath, n)
			}
		}
	})
}

// TestOnlyACLUsesCgo: the one `import "C"` lives in ascend/cann/acl.
func TestOnlyACLUsesCgo(t *testing.T) {
	forEachFile(t, func(relPath string, _ []byte, imports func() []string) {
		for _, imp := range imports() {
			if imp == "C" && !under(filepath.ToSlash(filepath.Dir(relPath)), "ascend/cann/acl") {
				t.Errorf("%s imports C outside ascend/cann/acl", relPath)
			}
		}
	})
}

func TestLayoutHasDocPerPackage(t *testing.T) {
	for _, p := range listPackages(t) {
		if _, err := os.Stat(filepath.Join(p.Dir, "doc.go")); err != nil {
			t.Errorf("package %s has no doc.go saying its role and imports", rel(p.ImportPath))
		}
	}
}

func forEachFile(t *testing.T, fn func(rel string, src []byte, imports func() []string)) {
	t.Helper()
	top := root(t)
	count := 0
	err := filepath.WalkDir(top, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "tools") && path != top {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		r, _ := filepath.Rel(top, path)
		count++
		fn(filepath.ToSlash(r), src, func() []string {
			f, err := parser.ParseFile(token.NewFileSet(), path, src, parser.ImportsOnly)
			if err != nil {
				t.Errorf("%s: %v", r, err)
				return nil
			}
			var out []string
			for _, is := range f.Imports {
				p, _ := strconv.Unquote(is.Path.Value)
				out = append(out, p)
			}
			return out
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if count < 20 {
		t.Fatalf("walked only %d Go files", count)
	}
}
