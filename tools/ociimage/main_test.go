package main

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// staticBinary builds a tiny static Go program to stand in for moemesh.
func staticBinary(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte("package main\nfunc main() { println(\"hi\") }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "moemesh")
	cmd := exec.Command("go", "build", "-o", bin, src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=-trimpath")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the stand-in binary: %v\n%s", err, out)
	}
	return bin
}

// The tarball reads back as an image whose single layer holds /moemesh byte for byte and
// whose config runs it as the non-root user: what `docker load` and `docker run` use.
func TestWriteReadsBack(t *testing.T) {
	bin := staticBinary(t)
	want, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "image.tar")
	if err := Write(out, Options{Binary: bin, Tags: []string{"moemesh:local", "moemesh:v1"}, Version: "v1"}); err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"moemesh:local", "moemesh:v1"} {
		ref, err := name.NewTag(tag)
		if err != nil {
			t.Fatal(err)
		}
		img, err := tarball.ImageFromPath(out, &ref)
		if err != nil {
			t.Fatalf("%s: %v", tag, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(cf.Config.Entrypoint, []string{"/moemesh"}) || cf.Config.User != "65532:65532" || cf.OS != "linux" || cf.Architecture == "" {
			t.Fatalf("%s: config entrypoint %q user %q os %q arch %q", tag, cf.Config.Entrypoint, cf.Config.User, cf.OS, cf.Architecture)
		}
		if cf.Config.Labels["org.opencontainers.image.version"] != "v1" {
			t.Fatalf("%s: labels %v", tag, cf.Config.Labels)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		if len(layers) != 1 {
			t.Fatalf("%s: %d layers, want 1 (FROM scratch + the binary)", tag, len(layers))
		}
		rc, err := layers[0].Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		files := map[string]*tar.Header{}
		var got []byte
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = h
			if h.Name == "moemesh" {
				if got, err = io.ReadAll(tr); err != nil {
					t.Fatal(err)
				}
			}
		}
		rc.Close()
		if h := files["moemesh"]; h == nil || h.Mode&0o111 == 0 || string(got) != string(want) {
			t.Fatalf("%s: layer lacks an executable /moemesh equal to the binary (entries %v)", tag, keys(files))
		}
		if h := files["data/"]; h == nil || h.Typeflag != tar.TypeDir || h.Uid != 65532 {
			t.Fatalf("%s: layer lacks /data owned by 65532 (entries %v)", tag, keys(files))
		}
	}
}

// Two builds of the same binary give the same image digest (fixed times), so CI can cache
// and compare images.
func TestBuildReproducible(t *testing.T) {
	bin := staticBinary(t)
	var digests []string
	for range 2 {
		img, err := Build(Options{Binary: bin, Tags: []string{"moemesh:local"}})
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d.String())
	}
	if digests[0] != digests[1] {
		t.Fatalf("digests differ: %v", digests)
	}
}

// What cannot run in a scratch image is refused with a message naming the fix.
func TestBuildRefuses(t *testing.T) {
	text := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(text, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, bin, want string
	}{
		{"missing", filepath.Join(t.TempDir(), "nope"), "no such file"},
		{"not ELF", text, "not an ELF"},
	}
	// A dynamically linked binary of the system, when the system has one (every glibc
	// distribution does; a test machine without one still runs the other cases).
	for _, p := range []string{"/bin/true", "/usr/bin/true"} {
		if isDynamic(p) {
			cases = append(cases, struct{ name, bin, want string }{"dynamic", p, "CGO_ENABLED=0"})
			break
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(Options{Binary: tc.bin, Tags: []string{"moemesh:local"}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build(%s) = %v, want an error containing %q", tc.bin, err, tc.want)
			}
		})
	}
}

func isDynamic(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	_, err = staticArch(b)
	return err != nil && strings.Contains(err.Error(), "dynamically")
}

func keys(m map[string]*tar.Header) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	slices.Sort(k)
	return k
}
