package synth

import (
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/moemesh/moemesh/model/chat"
	"github.com/moemesh/moemesh/model/tokenizer"
)

// roundTrip texts: multilingual, emoji, code, odd whitespace. None starts with a space:
// a Metaspace "first" pre-tokenizer (Mixtral) does not prepend ▁ to text that already
// starts with one, so the decoder's Strip would eat it (as in the Rust crate).
var roundTrip = []string{
	"Hello, world! The quick brown fox jumps over the lazy dog.",
	"Grüße aus Köln — ça va? Ñandú, 東京タワー, 北京欢迎你, Привет, мир! مرحبا שלום 안녕하세요",
	"Emoji: 👋🏽 🧑‍🚀 🇯🇵 ❤️ and a family 👨‍👩‍👧‍👦.",
	"func main() {\n\tfmt.Println(\"hi\")\t// tab\n}\n\n    indented   spaces  \r\nend",
	"x = [1, 22, 333, 4444]; y = {'a': 0xFF} # 3.14159e-10",
	"<|im_start|> as text, [INST] and <s> too",
}

// writeTokenizerDir writes the config and tokenizer files of arch/preset (no weights,
// so the small preset stays cheap) and returns the directory and vocab_size.
func writeTokenizerDir(t *testing.T, arch, preset string) (string, int) {
	t.Helper()
	r, err := resolve(Options{Arch: arch, Preset: preset})
	if err != nil {
		t.Fatal(err)
	}
	cfg, gen, err := r.configJSON()
	if err != nil {
		t.Fatal(err)
	}
	tok, tokCfg, err := tokSpecs[arch].tokenizerFiles(r.d.Vocab)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, b := range map[string][]byte{"config.json": cfg, "generation_config.json": gen,
		"tokenizer.json": tok, "tokenizer_config.json": tokCfg} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, r.d.Vocab
}

// ids reads a token id field that may be absent, null, an int or a list.
func ids(t *testing.T, m map[string]any, key string) []int32 {
	t.Helper()
	switch v := m[key].(type) {
	case nil:
		return nil
	case float64:
		return []int32{int32(v)}
	case []any:
		var out []int32
		for _, x := range v {
			out = append(out, int32(x.(float64)))
		}
		return out
	default:
		t.Fatalf("%s: unexpected %T", key, v)
		return nil
	}
}

func TestTokenizerPerFamily(t *testing.T) {
	for _, arch := range Arches() {
		for _, preset := range Presets() {
			t.Run(arch+"/"+preset, func(t *testing.T) {
				t.Parallel()
				dir, vocab := writeTokenizerDir(t, arch, preset)
				spec := tokSpecs[arch]
				tk, err := tokenizer.Load(dir)
				if err != nil {
					t.Fatal(err)
				}
				// Exactly vocab_size ids: every id a model can emit decodes.
				if tk.VocabSize() != vocab {
					t.Fatalf("tokenizer covers %d ids, config.json vocab_size %d", tk.VocabSize(), vocab)
				}
				for id := int32(0); id < int32(vocab); id++ {
					if _, ok := tk.Token(id); !ok {
						t.Fatalf("id %d has no token", id)
					}
				}
				// Every vocab token past the alphabet is a merge result and every merge joins
				// vocab tokens: the cut kept merges and tokens in step.
				var raw struct {
					Model struct {
						Vocab  map[string]int32 `json:"vocab"`
						Merges [][2]string      `json:"merges"`
					} `json:"model"`
				}
				if err := json.Unmarshal(readFile(t, filepath.Join(dir, "tokenizer.json")), &raw); err != nil {
					t.Fatal(err)
				}
				results := map[string]bool{}
				for _, m := range raw.Model.Merges {
					if !hasKey(raw.Model.Vocab, m[0]) || !hasKey(raw.Model.Vocab, m[1]) || !hasKey(raw.Model.Vocab, m[0]+m[1]) {
						t.Fatalf("merge %q: part or result not in the vocab", m)
					}
					results[m[0]+m[1]] = true
				}
				b, err := loadBase(spec.base)
				if err != nil {
					t.Fatal(err)
				}
				unmerged := 0
				for s, id := range raw.Model.Vocab {
					if int(id) >= len(spec.head)+b.Alphabet && !results[s] {
						unmerged++ // SentencePiece one-character pieces
					}
				}
				if spec.base != "sentencepiece" && unmerged > 0 {
					t.Errorf("%d vocab tokens are not produced by any merge", unmerged)
				}
				// Special tokens encode to exactly their ids.
				for _, a := range append(slices.Clone(spec.head), spec.tail...) {
					want := int32(spec.id(a.content, vocab))
					got, err := tk.Encode(a.content, false)
					if err != nil || len(got) != 1 || got[0] != want {
						t.Errorf("Encode(%q) = %v, %v; want [%d]", a.content, got, err, want)
					}
				}
				for _, text := range roundTrip {
					got, err := tk.Encode(text, false)
					if err != nil {
						t.Fatal(err)
					}
					for _, id := range got {
						if id < 0 || int(id) >= vocab {
							t.Fatalf("Encode(%q): id %d outside vocab %d", text, id, vocab)
						}
					}
					back, err := tk.Decode(got, false)
					if err != nil || back != text {
						t.Errorf("round trip of %q: got %q, %v", text, back, err)
					}
				}

				// config.json, generation_config.json and the tokenizer agree.
				cfg := readJSON(t, filepath.Join(dir, "config.json"))
				gen := readJSON(t, filepath.Join(dir, "generation_config.json"))
				stops := ids(t, gen, "eos_token_id")
				if tk.EOS() < 0 || len(stops) == 0 || stops[0] != tk.EOS() {
					t.Errorf("generation_config eos_token_id %v, tokenizer eos %d", stops, tk.EOS())
				}
				if c := ids(t, cfg, "eos_token_id"); len(c) != 1 || !slices.Contains(stops, c[0]) {
					t.Errorf("config.json eos_token_id %v not among generation_config's %v", c, stops)
				}
				for _, key := range []string{"bos_token_id", "eos_token_id", "pad_token_id"} {
					for _, f := range []map[string]any{cfg, gen} {
						for _, id := range ids(t, f, key) {
							if !tk.IsSpecial(id) && !slices.ContainsFunc(spec.head, func(a addedTok) bool { return a.content == mustToken(t, tk, id) }) {
								t.Errorf("%s %d (%q) is not a special token", key, id, mustToken(t, tk, id))
							}
						}
					}
				}
				// OLMoE's config.json has no bos_token_id although its tokenizer has one.
				if c := ids(t, cfg, "bos_token_id"); spec.bos != "" && len(c) > 0 {
					if len(c) != 1 || c[0] != tk.BOS() {
						t.Errorf("config.json bos_token_id %v, tokenizer bos %d", c, tk.BOS())
					}
				}

				tmpl, err := chat.Load(dir)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(tmpl.StopIDs[:len(stops)], stops) {
					t.Errorf("chat stop ids %v, generation_config %v", tmpl.StopIDs, stops)
				}
				msgs := []chat.Message{{Role: "user", Content: "Hi there! 你好"}, {Role: "assistant", Content: "Hello. 👋"},
					{Role: "user", Content: "Write x = 1 + 2 in Go."}}
				prompt, err := tmpl.Render(msgs, true, nil)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(prompt, "Write x = 1 + 2 in Go.") {
					t.Fatalf("prompt lacks the last message: %q", prompt)
				}
				got, err := tk.Encode(prompt, false)
				if err != nil {
					t.Fatal(err)
				}
				for _, id := range got {
					if int(id) >= vocab {
						t.Fatalf("prompt id %d outside vocab %d", id, vocab)
					}
				}
				// The markers the template writes are single special ids, not text.
				for _, a := range append(slices.Clone(spec.head), spec.tail...) {
					if strings.Contains(prompt, a.content) && !slices.Contains(got, int32(spec.id(a.content, vocab))) {
						t.Errorf("prompt has %q but its ids lack %d", a.content, spec.id(a.content, vocab))
					}
				}
				if back, err := tk.Decode(got, false); err != nil || back != prompt {
					t.Errorf("prompt round trip: %q, %v; want %q", back, err, prompt)
				}
			})
		}
	}
}

func mustToken(t *testing.T, tk *tokenizer.Tokenizer, id int32) string {
	t.Helper()
	s, ok := tk.Token(id)
	if !ok {
		t.Fatalf("id %d has no token", id)
	}
	return s
}

// TestWrittenTokenizer checks Write puts the tokenizer files into the checkpoint and a
// model with a BOS gets it when asked for special tokens.
func TestWrittenTokenizer(t *testing.T) {
	for _, tc := range []struct {
		arch string
		bos  int32 // first id of Encode(text, true); -1: no BOS added
	}{{"qwen3_moe", -1}, {"mixtral", 1}, {"deepseek_v3", 0}, {"granitemoe", -1}} {
		t.Run(tc.arch, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "ckpt")
			if _, err := Write(dir, Options{Arch: tc.arch, Seed: 3}); err != nil {
				t.Fatal(err)
			}
			tk, err := tokenizer.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tk.Encode("Hello", true)
			if err != nil {
				t.Fatal(err)
			}
			if tc.bos >= 0 && got[0] != tc.bos {
				t.Errorf("Encode with special tokens = %v, want BOS %d first", got, tc.bos)
			}
			if tc.bos < 0 && tk.IsSpecial(got[0]) {
				t.Errorf("Encode with special tokens = %v, want no BOS", got)
			}
			if _, err := chat.Load(dir); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// realTok is the vocabulary and merge list of a real tokenizer.json in
// model/tokenizer/testdata. Only these two are decoded (not a full tokenizer.Parse):
// with -race a full parse of a 150k-token file takes tens of seconds.
type realTok struct {
	vocab  map[string]int32
	merges [][2]string
}

var (
	realMu    sync.Mutex
	realCache = map[string]*realTok{}
)

func loadReal(t *testing.T, name string) *realTok {
	t.Helper()
	realMu.Lock()
	defer realMu.Unlock()
	if r, ok := realCache[name]; ok {
		return r
	}
	f, err := os.Open(filepath.Join("..", "tokenizer", "testdata", name, "tokenizer.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Model struct {
			Vocab  map[string]int32 `json:"vocab"`
			Merges json.RawMessage  `json:"merges"`
		} `json:"model"`
	}
	if err := json.NewDecoder(zr).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	r := &realTok{vocab: raw.Model.Vocab}
	if json.Unmarshal(raw.Model.Merges, &r.merges) != nil {
		var strs []string
		if err := json.Unmarshal(raw.Model.Merges, &strs); err != nil {
			t.Fatal(err)
		}
		for _, s := range strs {
			a, b, _ := strings.Cut(s, " ")
			r.merges = append(r.merges, [2]string{a, b})
		}
	}
	realCache[name] = r
	return r
}

// TestBasesArePrefixes checks the embedded byte-level bases are genuine cut-downs of
// the real tokenizers: every token is a real token, the merges are real merges in the
// real rank order, and ASCII text tokenised by the small tokenizers decodes back, each
// of its tokens being a real token.
func TestBasesArePrefixes(t *testing.T) {
	if testing.Short() {
		t.Skip("decodes the real 150k-token vocabularies")
	}
	for _, tc := range []struct{ base, real, arch string }{
		{"qwen", "qwen3", "qwen3_moe"}, {"deepseek", "deepseek_v3", "deepseek_v3"},
	} {
		t.Run(tc.base, func(t *testing.T) {
			t.Parallel()
			real := loadReal(t, tc.real)
			b, err := loadBase(tc.base)
			if err != nil {
				t.Fatal(err)
			}
			for _, tok := range b.Tokens {
				if _, ok := real.vocab[tok]; !ok {
					t.Fatalf("base token %q is not in the real vocabulary", tok)
				}
			}
			rank := map[[2]string]int{}
			for i, p := range real.merges {
				if _, dup := rank[p]; !dup {
					rank[p] = i
				}
			}
			last := -1
			for i, p := range b.Merges {
				r, ok := rank[p]
				if !ok || r <= last {
					t.Fatalf("merge %d %q: real rank %d (found %v), previous %d", i, p, r, ok, last)
				}
				last = r
				if _, ok := real.vocab[p[0]+p[1]]; !ok {
					t.Fatalf("merge %d %q: result not a real token", i, p)
				}
			}
			for _, preset := range Presets() {
				dir, _ := writeTokenizerDir(t, tc.arch, preset)
				small, err := tokenizer.Load(dir)
				if err != nil {
					t.Fatal(err)
				}
				text := "The quick brown fox, 42 times: func f(x int) { return x*x }\n\tDone!  "
				got, err := small.Encode(text, false)
				if err != nil {
					t.Fatal(err)
				}
				if back, err := small.Decode(got, false); err != nil || back != text {
					t.Errorf("%s: small round trip %q, %v", preset, back, err)
				}
				for _, id := range got {
					if s := mustToken(t, small, id); !hasKey(real.vocab, s) {
						t.Fatalf("%s: token %q not in the real vocabulary", preset, s)
					}
				}
				// The small preset keeps thousands of merges: common words are one token.
				if n := len(got); preset == Small && n > 30 {
					t.Errorf("small preset needs %d tokens for %q: merges missing?", n, text)
				}
			}
		})
	}
}

// TestSentencePieceBase checks the Mixtral base: ids 0..255 of the base are the byte
// tokens, every piece is real Qwen text (▁ for space), and every merge joins two pieces
// into a piece.
func TestSentencePieceBase(t *testing.T) {
	if testing.Short() {
		t.Skip("decodes the real 150k-token vocabularies")
	}
	t.Parallel()
	b, err := loadBase("sentencepiece")
	if err != nil {
		t.Fatal(err)
	}
	real := loadReal(t, "qwen3")
	if b.Alphabet != 256 || b.Tokens[0] != "<0x00>" || b.Tokens[255] != "<0xFF>" {
		t.Fatalf("alphabet %d, %q..%q", b.Alphabet, b.Tokens[0], b.Tokens[255])
	}
	// GPT-2's bytes_to_unicode, to spell a piece's text the byte-level way.
	var runes [256]rune
	n := 0
	for c := 0; c < 256; c++ {
		if (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF) {
			runes[c] = rune(c)
		} else {
			runes[c] = rune(256 + n)
			n++
		}
	}
	seen := map[string]bool{}
	for _, p := range b.Tokens[b.Alphabet:] {
		seen[p] = true
		var bl strings.Builder
		for _, c := range []byte(strings.ReplaceAll(p, "▁", " ")) {
			bl.WriteRune(runes[c])
		}
		if _, ok := real.vocab[bl.String()]; !ok {
			t.Fatalf("piece %q (%q) is not a Qwen3 token", p, bl.String())
		}
	}
	for i, m := range b.Merges {
		if !seen[m[0]] || !seen[m[1]] || !seen[m[0]+m[1]] {
			t.Fatalf("merge %d %q: parts or result not pieces", i, m)
		}
	}
	if !seen["▁the"] {
		t.Error(`no "▁the" piece: the pieces are not text`)
	}
}

func hasKey[K comparable, V any](m map[K]V, k K) bool {
	_, ok := m[k]
	return ok
}
