package tokgen

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"
)

var (
	update   = flag.Bool("update", false, "rewrite model/synth/tokdata instead of comparing with it")
	families = flag.String("families", "", "TestWriteFamilies writes every family's tokenizer files under this directory")
)

var (
	root    = filepath.Join("..", "..", "..")
	tokdata = filepath.Join("..", "..", "tokdata")
)

// TestCommittedUpToDate regenerates the bases and templates and compares them with
// model/synth/tokdata (or, with -update, writes them there): a change to the generator
// or its inputs must come with a rerun of `make synth-tokenizers`.
func TestCommittedUpToDate(t *testing.T) {
	src, chatSrc := filepath.Join(root, "tokenizer", "testdata"), filepath.Join(root, "chat", "testdata")
	if *update {
		if err := Run(src, chatSrc, tokdata, os.Stdout); err != nil {
			t.Fatal(err)
		}
		return
	}
	if testing.Short() {
		t.Skip("reads the real tokenizers (~4 MB gzip)")
	}
	out := t.TempDir()
	if err := Run(src, chatSrc, out, io.Discard); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadDir(tokdata)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(committed) {
		t.Errorf("generator writes %d files, tokdata has %d", len(entries), len(committed))
	}
	for _, e := range entries {
		got, err := os.ReadFile(filepath.Join(out, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(tokdata, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("tokdata/%s is stale: run make synth-tokenizers", e.Name())
		}
	}
}

// TestWriteFamilies writes every family's tokenizer files into -families (for
// tools/goldens/gen.mjs), or into a temporary directory to check that it works.
func TestWriteFamilies(t *testing.T) {
	dir := *families
	if dir == "" {
		dir = t.TempDir()
	}
	if err := WriteFamilies(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "mixtral-small", "tokenizer_config.json")); err != nil {
		t.Fatal(err)
	}
}
