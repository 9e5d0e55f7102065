package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"time"
)

func main() {
	root := flag.String("root", ".", "the moemesh checkout")
	bin := flag.String("bin", "", "moemesh binary whose --help the flags are checked against (default: built from -root into a temporary directory)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *root, *bin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// run checks everything and reports every problem found, not only the first.
func run(ctx context.Context, root, bin string, out io.Writer) error {
	root, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	if bin == "" {
		dir, err := os.MkdirTemp("", "deploycheck-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if bin, err = buildMoemesh(ctx, root, dir); err != nil {
			return err
		}
	}
	res, err := check(ctx, root, func(cmds []string) (CLI, error) { return helpCLI(ctx, bin, cmds) })
	if err != nil {
		return err
	}
	if len(res.problems) > 0 {
		for _, p := range res.problems {
			fmt.Fprintln(out, "deploycheck:", p)
		}
		return fmt.Errorf("deploycheck: %d problems in the deployment files", len(res.problems))
	}
	fmt.Fprintf(out, "deploycheck: compose.yaml (%d services), %d Kubernetes objects in %d kustomizations, %d moemesh command lines: ok\n",
		res.services, res.objects, res.builds, res.invocations)
	return nil
}

// result of a check: the problems, and what was looked at (for the summary line).
type result struct {
	problems                               []error
	services, objects, builds, invocations int
}

// check loads and checks compose.yaml, deploy/prometheus and deploy/k8s under root. An
// error is returned for what stops the check (a file that does not parse); problems are
// what it found wrong.
func check(ctx context.Context, root string, cliFor func([]string) (CLI, error)) (*result, error) {
	composeFile := filepath.Join(root, "compose.yaml")
	content, err := os.ReadFile(composeFile)
	if err != nil {
		return nil, err
	}
	p, err := loadCompose(ctx, composeFile, content)
	if err != nil {
		return nil, err
	}
	res := &result{services: len(p.Services)}
	res.problems = append(res.problems, checkCompose(p, root)...)
	invs := composeInvocations(p)

	k8sDir := filepath.Join(root, "deploy", "k8s")
	base, err := buildDir(k8sDir)
	if err != nil {
		return nil, err
	}
	ascend, err := buildDir(filepath.Join(k8sDir, "ascend"))
	if err != nil {
		return nil, err
	}
	if err := allFilesBuilt(k8sDir); err != nil {
		return nil, err
	}
	res.builds = 2
	for _, b := range []*build{base, ascend} {
		res.objects += len(b.objects)
		res.problems = append(res.problems, checkWorkloads(b)...)
		invs = append(invs, k8sInvocations(b)...)
	}
	res.problems = append(res.problems, checkBase(base)...)
	res.problems = append(res.problems, checkAscend(ascend)...)

	var cmds []string
	for _, inv := range invs {
		if len(inv.Args) > 0 {
			cmds = append(cmds, inv.Args[0])
		}
	}
	cli, err := cliFor(cmds)
	if err != nil {
		return nil, err
	}
	res.invocations = len(invs)
	res.problems = append(res.problems, checkFlags(cli, invs)...)
	// The base's objects are in the overlay too: report each problem once.
	seen := map[string]bool{}
	res.problems = slices.DeleteFunc(res.problems, func(e error) bool {
		dup := seen[e.Error()]
		seen[e.Error()] = true
		return dup
	})
	return res, nil
}

// allFilesBuilt: every directory holding YAML under deploy/k8s has a kustomization
// (buildDir then checks each file is used), and only the two known builds exist, so a new
// overlay cannot go unchecked.
func allFilesBuilt(dir string) error {
	return filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		yamls, _ := filepath.Glob(filepath.Join(p, "*.y*ml"))
		if len(yamls) == 0 {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		if rel != "." && rel != "ascend" {
			return fmt.Errorf("%s: a kustomization deploycheck does not know; add its checks to tools/deploycheck", p)
		}
		if _, err := os.Stat(filepath.Join(p, "kustomization.yaml")); err != nil {
			return fmt.Errorf("%s: YAML without a kustomization.yaml", p)
		}
		return nil
	})
}

// buildMoemesh builds the checkout's binary: the flags are checked against the code as it
// is, not against a bin/moemesh that may be stale.
func buildMoemesh(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "moemesh")
	cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, "go", "build", "-o", bin, "./cmd/moemesh")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", errors.Join(fmt.Errorf("building moemesh for its --help: %w", err), errors.New(string(out)))
	}
	return bin, nil
}
