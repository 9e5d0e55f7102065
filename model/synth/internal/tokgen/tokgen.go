package tokgen

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/moemesh/moemesh/model/synth"
)

// maxTokens bounds each base; the small preset (vocab 4096) needs fewer.
const maxTokens = 6144

type realFile struct {
	AddedTokens   []json.RawMessage          `json:"added_tokens"`
	Normalizer    json.RawMessage            `json:"normalizer"`
	PreTokenizer  json.RawMessage            `json:"pre_tokenizer"`
	PostProcessor json.RawMessage            `json:"post_processor"`
	Decoder       json.RawMessage            `json:"decoder"`
	Model         map[string]json.RawMessage `json:"model"`
}

// base mirrors synth's tokBase (model/synth/tokenizer.go); the JSON is the contract.
type base struct {
	Source        string            `json:"source"`
	Normalizer    json.RawMessage   `json:"normalizer"`
	PreTokenizer  json.RawMessage   `json:"pre_tokenizer"`
	PostProcessor json.RawMessage   `json:"post_processor"`
	Decoder       json.RawMessage   `json:"decoder"`
	ModelOptions  json.RawMessage   `json:"model_options"`
	Alphabet      int               `json:"alphabet"`
	Tokens        []string          `json:"tokens"`
	Merges        [][2]string       `json:"merges"`
	Added         []json.RawMessage `json:"added"`
}

// WriteFamilies writes the tokenizer files synth makes for every family and preset
// under dir, as <arch>-<preset>/ (tools/goldens tokenises them).
func WriteFamilies(dir string) error {
	for _, arch := range synth.Arches() {
		for _, preset := range synth.Presets() {
			if err := synth.WriteTokenizer(filepath.Join(dir, arch+"-"+preset), synth.Options{Arch: arch, Preset: preset}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Run writes the three bases and the two real chat templates into out.
func Run(src, chatSrc, out string, log io.Writer) error {
	qwen, err := readReal(filepath.Join(src, "qwen3", "tokenizer.json.gz"))
	if err != nil {
		return err
	}
	ds, err := readReal(filepath.Join(src, "deepseek_v3", "tokenizer.json.gz"))
	if err != nil {
		return err
	}
	qb, err := byteLevel("Qwen/Qwen3-30B-A3B tokenizer.json", qwen)
	if err != nil {
		return err
	}
	db, err := byteLevel("deepseek-ai/DeepSeek-V3 tokenizer.json", ds)
	if err != nil {
		return err
	}
	sp := sentencePiece(qb)
	for _, nb := range []struct {
		name string
		b    *base
	}{{"qwen", qb}, {"deepseek", db}, {"sentencepiece", sp}} {
		if err := write(filepath.Join(out, nb.name+".json.gz"), nb.b); err != nil {
			return err
		}
		fmt.Fprintf(log, "%s: %d tokens, %d merges, %d added\n", nb.name, len(nb.b.Tokens), len(nb.b.Merges), len(nb.b.Added))
	}
	// The real chat templates travel with the bases: go:embed cannot reach
	// model/chat/testdata from model/synth.
	for _, name := range []string{"qwen3.jinja", "deepseek_v3.jinja"} {
		data, err := os.ReadFile(filepath.Join(chatSrc, name))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func readReal(path string) (*realFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var r realFile
	if err := json.NewDecoder(zr).Decode(&r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// merges decodes both merge encodings ("a b" and ["a","b"]).
func merges(path string, raw json.RawMessage) ([][2]string, error) {
	var pairs [][2]string
	if json.Unmarshal(raw, &pairs) == nil {
		return pairs, nil
	}
	var strs []string
	if err := json.Unmarshal(raw, &strs); err != nil {
		return nil, fmt.Errorf("%s: model.merges: %w", path, err)
	}
	for i, s := range strs {
		a, b, ok := strings.Cut(s, " ")
		if !ok {
			return nil, fmt.Errorf("%s: model.merges[%d]: no space in %q", path, i, s)
		}
		pairs = append(pairs, [2]string{a, b})
	}
	return pairs, nil
}

// byteLevel keeps the 256 byte tokens (in the real id order) and then each
// merge, in rank order, whose parts are already kept, up to maxTokens.
func byteLevel(source string, r *realFile) (*base, error) {
	var vocab map[string]int
	if err := json.Unmarshal(r.Model["vocab"], &vocab); err != nil {
		return nil, fmt.Errorf("%s: model.vocab: %w", source, err)
	}
	pairs, err := merges(source, r.Model["merges"])
	if err != nil {
		return nil, err
	}
	var alpha []string
	for _, c := range byteRunes() {
		s := string(c)
		if _, ok := vocab[s]; !ok {
			return nil, fmt.Errorf("%s: byte token %q not in vocab", source, s)
		}
		alpha = append(alpha, s)
	}
	sort.Slice(alpha, func(i, j int) bool { return vocab[alpha[i]] < vocab[alpha[j]] })
	b := &base{Source: source, Normalizer: r.Normalizer, PreTokenizer: r.PreTokenizer,
		PostProcessor: r.PostProcessor, Decoder: r.Decoder, Alphabet: len(alpha), Tokens: alpha}
	kept := map[string]bool{}
	for _, s := range alpha {
		kept[s] = true
	}
	for _, p := range pairs {
		if len(b.Tokens) >= maxTokens {
			break
		}
		res := p[0] + p[1]
		if !kept[p[0]] || !kept[p[1]] || kept[res] {
			continue
		}
		if _, ok := vocab[res]; !ok {
			continue
		}
		kept[res] = true
		b.Tokens = append(b.Tokens, res)
		b.Merges = append(b.Merges, p)
	}
	opts := map[string]json.RawMessage{}
	for k, v := range r.Model {
		if k != "vocab" && k != "merges" {
			opts[k] = v
		}
	}
	if b.ModelOptions, err = json.Marshal(opts); err != nil {
		return nil, err
	}
	for _, a := range r.AddedTokens {
		var t struct {
			Content string `json:"content"`
		}
		if err := json.Unmarshal(a, &t); err != nil {
			return nil, fmt.Errorf("%s: added_tokens: %w", source, err)
		}
		// DeepSeek-V3 reserves ~800 unused placeholder ids; none is ever produced.
		if !strings.Contains(t.Content, "place▁holder") {
			b.Added = append(b.Added, a)
		}
	}
	return b, nil
}

// byteRunes is GPT-2's bytes_to_unicode: the rune that stands for each byte.
func byteRunes() [256]rune {
	var m [256]rune
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			m[b] = rune(b)
		} else {
			m[b] = rune(256 + n)
			n++
		}
	}
	return m
}

// sentencePiece turns the byte-level Qwen base into SentencePiece-style pieces.
// Single-character pieces are added just before the first merge that uses
// them, so every prefix of the token list still holds the parts of its merges.
func sentencePiece(q *base) *base {
	inv := map[rune]byte{}
	for b, r := range byteRunes() {
		inv[r] = byte(b)
	}
	text := func(s string) (string, bool) {
		var buf []byte
		for _, r := range s {
			buf = append(buf, inv[r])
		}
		if !utf8.Valid(buf) {
			return "", false
		}
		t := string(buf)
		for _, r := range t {
			if unicode.IsControl(r) || (unicode.IsSpace(r) && r != ' ') {
				return "", false // newlines and tabs go through byte_fallback, as in Llama's model
			}
		}
		return strings.ReplaceAll(t, " ", "▁"), true
	}
	b := &base{Source: "SentencePiece-style pieces from " + q.Source,
		// add_prefix_space next to prepend_scheme, as tokenizers 0.15-0.18 wrote it:
		// transformers.js reads only the former, the Rust crate the latter.
		PreTokenizer: json.RawMessage(`{"type":"Metaspace","replacement":"▁","add_prefix_space":true,"prepend_scheme":"first","split":false}`),
		// What tokenizers writes for Mistral/Mixtral next to a Metaspace pre-tokenizer.
		Decoder: json.RawMessage(`{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},` +
			`{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]}`),
		PostProcessor: json.RawMessage(`{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],` +
			`"pair":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}},{"SpecialToken":{"id":"<s>","type_id":1}},{"Sequence":{"id":"B","type_id":1}}],` +
			`"special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}}`),
		ModelOptions: json.RawMessage(`{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,` +
			`"end_of_word_suffix":null,"fuse_unk":true,"byte_fallback":true,"ignore_merges":false}`),
	}
	// ids 3..258 of a Llama/Mistral vocabulary: one token per byte for byte_fallback.
	for i := 0; i < 256; i++ {
		b.Tokens = append(b.Tokens, fmt.Sprintf("<0x%02X>", i))
	}
	b.Alphabet = len(b.Tokens)
	kept := map[string]bool{}
	add := func(s string) {
		if !kept[s] {
			kept[s] = true
			b.Tokens = append(b.Tokens, s)
		}
	}
	for _, p := range q.Merges {
		if len(b.Tokens) >= maxTokens-2 {
			break
		}
		l, ok1 := text(p[0])
		r, ok2 := text(p[1])
		res, ok3 := text(p[0] + p[1])
		if !ok1 || !ok2 || !ok3 || kept[res] {
			continue
		}
		for _, part := range []string{l, r} {
			if utf8.RuneCountInString(part) == 1 {
				add(part)
			}
		}
		if !kept[l] || !kept[r] {
			continue
		}
		add(res)
		b.Merges = append(b.Merges, [2]string{l, r})
	}
	return b
}

func write(path string, b *base) error {
	data, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression) // a valid level cannot fail
	if _, err := zw.Write(data); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
