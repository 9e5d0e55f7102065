package synth

import (
	"bufio"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moemesh/moemesh/model/tokenizer"
)

// TestGoldenIDs compares every family's synth tokenizer (both presets) with the
// JavaScript Hugging Face tokenizers (@lenml/tokenizers, as for model/tokenizer) on the
// first lines of model/tokenizer's corpus. testdata/goldens.json.gz is made by
// `make goldens` (tools/goldens/gen.mjs); a change to the tokenizer bases or the
// family specs needs a rerun.
func TestGoldenIDs(t *testing.T) {
	var golden struct {
		Lines int                  `json:"lines"`
		IDs   map[string][][]int32 `json:"ids"`
	}
	readGz(t, filepath.Join("testdata", "goldens.json.gz"), func(f *gzip.Reader) {
		if err := json.NewDecoder(f).Decode(&golden); err != nil {
			t.Fatal(err)
		}
	})
	var corpus [][]byte
	readGz(t, filepath.Join("..", "tokenizer", "testdata", "corpus.jsonl.gz"), func(f *gzip.Reader) {
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() && len(corpus) < golden.Lines {
			var row struct {
				B string `json:"b"`
			}
			if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
				t.Fatal(err)
			}
			b, err := base64.StdEncoding.DecodeString(row.B)
			if err != nil {
				t.Fatal(err)
			}
			corpus = append(corpus, b)
		}
	})
	if len(corpus) != golden.Lines || golden.Lines == 0 {
		t.Fatalf("corpus has %d lines, goldens %d", len(corpus), golden.Lines)
	}
	var want []string
	for _, arch := range Arches() {
		for _, preset := range Presets() {
			want = append(want, arch+"-"+preset)
		}
	}
	slices.Sort(want)
	if got := slices.Sorted(maps.Keys(golden.IDs)); !slices.Equal(got, want) {
		t.Fatalf("goldens cover %v, want %v (rerun make goldens)", got, want)
	}
	for name, rows := range golden.IDs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			arch, preset, _ := strings.Cut(name, "-")
			dir := t.TempDir()
			if err := WriteTokenizer(dir, Options{Arch: arch, Preset: preset}); err != nil {
				t.Fatal(err)
			}
			tk, err := tokenizer.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			bad := 0
			for i, line := range corpus {
				got, err := tk.Encode(string(line), false)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(got, rows[i]) {
					if bad++; bad <= 3 {
						t.Errorf("line %d %q:\n got %v\nwant %v", i, line, got, rows[i])
					}
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d lines differ", bad, len(corpus))
			}
		})
	}
}

func readGz(t *testing.T, path string, fn func(*gzip.Reader)) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	fn(zr)
}
