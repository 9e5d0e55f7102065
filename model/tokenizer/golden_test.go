package tokenizer

import (
	"bufio"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// readGz returns the decompressed contents of a testdata file.
func readGz(t testing.TB, name string) []byte {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if _, err := bufio.NewReader(zr).WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return []byte(b.String())
}

// goldenToks caches loaded tokenizers: parsing the real files takes ~0.5 s.
var (
	goldenMu   sync.Mutex
	goldenToks = map[string]*Tokenizer{}
)

// loadGolden unpacks testdata/<name>/*.json.gz into a temp dir and Loads it,
// so the test also covers Load and tokenizer_config.json handling.
func loadGolden(t testing.TB, name string) *Tokenizer {
	t.Helper()
	goldenMu.Lock()
	defer goldenMu.Unlock()
	if tok, ok := goldenToks[name]; ok {
		return tok
	}
	dir := t.TempDir()
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
		if err := os.WriteFile(filepath.Join(dir, f), readGz(t, filepath.Join("testdata", name, f+".gz")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	tok, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: Load took %v", name, time.Since(start))
	goldenToks[name] = tok
	return tok
}

func readLines(t testing.TB, name string) []string {
	t.Helper()
	return strings.Split(strings.TrimSuffix(string(readGz(t, name)), "\n"), "\n")
}

type goldenRow struct {
	IDs     []int32 `json:"ids"`
	Dec     string  `json:"dec"`
	DecSkip string  `json:"dec_skip"`
	RT      bool    `json:"rt"`
}

// TestGoldenParity checks ids and decoded text against transformers.js
// (tools/goldens/gen.mjs) on every corpus line, for both tokenizers.
func TestGoldenParity(t *testing.T) {
	corpus := readCorpus(t)
	if len(corpus) < 2000 {
		t.Fatalf("corpus has %d lines, want >= 2000", len(corpus))
	}
	for _, name := range []string{"qwen3", "deepseek_v3"} {
		t.Run(name, func(t *testing.T) {
			tok := loadGolden(t, name)
			rows := readLines(t, filepath.Join("testdata", name, "golden.jsonl.gz"))
			if len(rows) != len(corpus) {
				t.Fatalf("%d golden rows for %d corpus lines", len(rows), len(corpus))
			}
			start := time.Now()
			fails, rt := 0, 0
			for i, l := range rows {
				var g goldenRow
				if err := json.Unmarshal([]byte(l), &g); err != nil {
					t.Fatalf("row %d: %v", i, err)
				}
				text := corpus[i]
				ids, err := tok.Encode(text, false)
				if err != nil {
					t.Fatalf("line %d %q: %v", i, text, err)
				}
				if !slices.Equal(ids, g.IDs) {
					if fails++; fails <= 10 {
						t.Errorf("line %d %q:\n got  %v\n want %v", i, text, ids, g.IDs)
					}
					continue
				}
				for _, skip := range []bool{false, true} {
					want := g.Dec
					if skip {
						want = g.DecSkip
					}
					got, err := tok.Decode(ids, skip)
					if err != nil || got != want {
						if fails++; fails <= 10 {
							t.Errorf("line %d decode(skip=%v) = %q, %v; want %q", i, skip, got, err, want)
						}
					}
				}
				if g.RT {
					rt++
					if sanitize(text) != g.Dec {
						t.Errorf("line %d: golden says round-trip but text differs", i)
					}
				}
			}
			if fails > 0 {
				t.Fatalf("%d/%d lines differ", fails, len(rows))
			}
			t.Logf("%s: %d lines identical (%d round-trip exactly) in %v", name, len(rows), rt, time.Since(start))
		})
	}
}

func readCorpus(t testing.TB) []string {
	t.Helper()
	var out []string
	for i, l := range readLines(t, "testdata/corpus.jsonl.gz") {
		var row struct {
			B string `json:"b"`
		}
		if err := json.Unmarshal([]byte(l), &row); err != nil {
			t.Fatalf("corpus line %d: %v", i, err)
		}
		b, err := base64.StdEncoding.DecodeString(row.B)
		if err != nil {
			t.Fatalf("corpus line %d: %v", i, err)
		}
		out = append(out, string(b))
	}
	return out
}

// TestStreamingDecode feeds every corpus line's ids one at a time: each Add
// result must be valid UTF-8 and their concatenation must equal Decode.
func TestStreamingDecode(t *testing.T) {
	corpus := readCorpus(t)
	for _, name := range []string{"qwen3", "deepseek_v3"} {
		tok := loadGolden(t, name)
		held := 0 // tokens whose bytes were held back: proves the split case is exercised
		for _, skip := range []bool{false, true} {
			for i, text := range corpus {
				ids, err := tok.Encode(text, false)
				if err != nil {
					t.Fatal(err)
				}
				d := NewDecoder(tok)
				if skip {
					d = NewDecoderSkipSpecial(tok)
				}
				var b strings.Builder
				for _, id := range ids {
					s, err := d.Add(id)
					if err != nil {
						t.Fatal(err)
					}
					if !utf8.ValidString(s) {
						t.Fatalf("%s line %d: Add returned broken UTF-8 %q", name, i, s)
					}
					if s == "" && !tok.IsSpecial(id) {
						held++
					}
					b.WriteString(s)
				}
				b.WriteString(d.Flush())
				want, _ := tok.Decode(ids, skip)
				if b.String() != want {
					t.Fatalf("%s line %d skip=%v: stream %q != Decode %q", name, i, skip, b.String(), want)
				}
			}
		}
		if held == 0 {
			t.Errorf("%s: no token was ever held back; the corpus no longer splits characters", name)
		}
		t.Logf("%s: %d tokens held back for incomplete UTF-8", name, held)
	}
}

// TestAddSpecial: DeepSeek-V3 gets BOS from add_bos_token (HF behaviour, see
// applyConfig), Qwen3 adds nothing.
func TestAddSpecial(t *testing.T) {
	for name, prefix := range map[string][]int32{"deepseek_v3": {0}, "qwen3": nil} {
		tok := loadGolden(t, name)
		plain, _ := tok.Encode("Hello world", false)
		with, err := tok.Encode("Hello world", true)
		if err != nil || !slices.Equal(with, append(slices.Clone(prefix), plain...)) {
			t.Errorf("%s: Encode(addSpecial) = %v, %v; want %v + %v", name, with, err, prefix, plain)
		}
	}
	q := loadGolden(t, "qwen3")
	if q.VocabSize() != 151669 {
		t.Errorf("qwen3 VocabSize = %d; want 151669", q.VocabSize())
	}
	if q.EOS() != 151645 || q.BOS() != -1 {
		t.Errorf("qwen3 BOS/EOS = %d/%d; want -1/151645", q.BOS(), q.EOS())
	}
	if id, ok := q.TokenID("<|im_start|>"); !ok || id != 151644 || !q.IsSpecial(id) {
		t.Errorf("qwen3 <|im_start|> = %d, %v", id, ok)
	}
}

func BenchmarkEncodeQwen3(b *testing.B) {
	tok := loadGolden(b, "qwen3")
	corpus := readCorpus(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := tok.Encode(corpus[i%len(corpus)], false); err != nil {
			b.Fatal(err)
		}
	}
}

// TestConcurrentEncode shares one Tokenizer (and its BPE cache) between
// goroutines; run with -race to check the locking.
func TestConcurrentEncode(t *testing.T) {
	tok := loadGolden(t, "qwen3")
	corpus := readCorpus(t)[:400]
	want := make([][]int32, len(corpus))
	for i, s := range corpus {
		want[i], _ = tok.Encode(s, false)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := len(corpus) - 1; i >= 0; i-- {
				if got, _ := tok.Encode(corpus[i], false); !slices.Equal(got, want[i]) {
					t.Errorf("line %d differs under concurrency", i)
					return
				}
			}
		}()
	}
	wg.Wait()
}
