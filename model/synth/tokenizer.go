package synth

import (
	"bytes"
	"compress/gzip"
	"embed"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// tokdata holds small tokenizer bases derived from the real Qwen3 and DeepSeek-V3
// tokenizers, and the real chat templates. Regenerate with `make synth-tokenizers`
// (go run ./model/synth/internal/tokgen); they are embedded so mkmodel and the
// built-in model work offline from the binary alone.
//
//go:embed tokdata
var tokdata embed.FS

// tokBase is one file of tokdata: the tokenizer.json sections of the source and an
// ordered token list whose prefixes are valid BPE vocabularies. Tokens[:Alphabet] are
// the single-symbol tokens (the 256 byte-level runes, or <0x00>..<0xFF> for
// SentencePiece); every later token is the result of one merge, in rank order, with its
// parts earlier in the list, or (SentencePiece) a one-character piece placed just before
// the first merge that uses it. So any prefix of Tokens, with the merges whose results
// it holds, is a valid BPE.
type tokBase struct {
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

var (
	baseMu    sync.Mutex
	baseCache = map[string]*tokBase{}
)

// loadBase reads and caches tokdata/<name>.json.gz.
func loadBase(name string) (*tokBase, error) {
	baseMu.Lock()
	defer baseMu.Unlock()
	if b, ok := baseCache[name]; ok {
		return b, nil
	}
	path := "tokdata/" + name + ".json.gz"
	f, err := tokdata.Open(path)
	if err != nil {
		return nil, fmt.Errorf("synth: embedded %s: %w", path, err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("synth: embedded %s: %w", path, err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("synth: embedded %s: %w", path, err)
	}
	var b tokBase
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("synth: embedded %s: %w", path, err)
	}
	if b.Alphabet <= 0 || b.Alphabet > len(b.Tokens) || len(b.Merges) > len(b.Tokens)-b.Alphabet {
		return nil, fmt.Errorf("synth: embedded %s: %d tokens, alphabet %d, %d merges do not fit together",
			path, len(b.Tokens), b.Alphabet, len(b.Merges))
	}
	baseCache[name] = &b
	return &b, nil
}

// addedTok is a special/added token of a family's tokenizer. fromBase tokens are the
// source tokenizer's own added tokens: their flags are taken from it, and building
// fails if the base does not have them (so they stay real).
type addedTok struct {
	content             string
	special, normalized bool
	fromBase            bool
}

// tokSpec is how a family's tokenizer is laid out on a base: head tokens take ids
// 0..len(head)-1 (DeepSeek-V3's <｜begin▁of▁sentence｜> is 0, Mixtral's <s> is 1), then
// the alphabet and as many merges as fit, then tail tokens at the top ids (Qwen's
// <|endoftext|> follows its last merge). The tokenizer then has exactly vocab_size ids:
// a decoder meets no id without a token, whatever a random-weight model samples.
type tokSpec struct {
	base       string
	head, tail []addedTok
	// Token contents for tokenizer_config.json ("" writes null).
	bos, eos, pad, unk string
	// stops are generation_config.json's eos_token_id, first the tokenizer's eos.
	stops    []string
	template string // chat template source, or "file:<name>" in tokdata
	// objTokens writes bos/eos/pad as {"__type": "AddedToken", ...} objects (DeepSeek).
	objTokens bool
	config    map[string]any // further tokenizer_config.json keys
}

// id returns the id of a head or tail token in a vocabulary of vocab ids; the token
// must be one of the spec's (a missing one is a bug in this package).
func (s *tokSpec) id(content string, vocab int) int {
	for i, a := range s.head {
		if a.content == content {
			return i
		}
	}
	for i, a := range s.tail {
		if a.content == content {
			return vocab - len(s.tail) + i
		}
	}
	panic(fmt.Sprintf("synth: token %q is not a special token of the %s tokenizer", content, s.base))
}

// tokenizerFiles renders tokenizer.json and tokenizer_config.json for a vocabulary of
// vocab ids.
func (s *tokSpec) tokenizerFiles(vocab int) (tokJSON, cfgJSON []byte, err error) {
	b, err := loadBase(s.base)
	if err != nil {
		return nil, nil, err
	}
	n := vocab - len(s.head) - len(s.tail) // tokens taken from the base
	if n < b.Alphabet || n > len(b.Tokens) {
		return nil, nil, fmt.Errorf("%w: vocab_size %d does not fit the %s tokenizer (%d special tokens, %d..%d base tokens)",
			ErrOptions, vocab, s.base, len(s.head)+len(s.tail), b.Alphabet, len(b.Tokens))
	}
	baseFlags := map[string]map[string]any{}
	for i, raw := range b.Added {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, nil, fmt.Errorf("synth: embedded tokdata/%s.json.gz: added[%d]: %w", s.base, i, err)
		}
		c, _ := m["content"].(string)
		baseFlags[c] = m
	}
	type entry struct {
		ID         int    `json:"id"`
		Content    string `json:"content"`
		SingleWord bool   `json:"single_word"`
		LStrip     bool   `json:"lstrip"`
		RStrip     bool   `json:"rstrip"`
		Normalized bool   `json:"normalized"`
		Special    bool   `json:"special"`
	}
	var added []entry
	addTok := func(a addedTok, id int) error {
		e := entry{ID: id, Content: a.content, Special: a.special, Normalized: a.normalized}
		if a.fromBase {
			m, ok := baseFlags[a.content]
			if !ok {
				return fmt.Errorf("synth: %s tokenizer: %q is not an added token of %s", s.base, a.content, b.Source)
			}
			e.Special, _ = m["special"].(bool)
			e.Normalized, _ = m["normalized"].(bool)
			e.LStrip, _ = m["lstrip"].(bool)
			e.RStrip, _ = m["rstrip"].(bool)
			e.SingleWord, _ = m["single_word"].(bool)
		}
		added = append(added, e)
		return nil
	}
	// Head tokens are in the model vocab as well, as in the real DeepSeek-V3 and
	// Llama/Mistral files; tail tokens only in added_tokens, as in Qwen's.
	vocabMap := make(map[string]int, vocab)
	for i, a := range s.head {
		if err := addTok(a, i); err != nil {
			return nil, nil, err
		}
		vocabMap[a.content] = i
	}
	for i, t := range b.Tokens[:n] {
		vocabMap[t] = len(s.head) + i
	}
	// Merges come in the order of their results, so the kept ones are a prefix.
	merges := 0
	for merges < len(b.Merges) {
		if _, ok := vocabMap[b.Merges[merges][0]+b.Merges[merges][1]]; !ok {
			break
		}
		merges++
	}
	for i, a := range s.tail {
		if err := addTok(a, vocab-len(s.tail)+i); err != nil {
			return nil, nil, err
		}
	}
	var model map[string]any
	if err := json.Unmarshal(b.ModelOptions, &model); err != nil {
		return nil, nil, fmt.Errorf("synth: embedded tokdata/%s.json.gz: model_options: %w", s.base, err)
	}
	model["type"] = "BPE"
	model["vocab"] = vocabMap
	model["merges"] = b.Merges[:merges]
	post := b.PostProcessor
	if s.base == "sentencepiece" {
		// The <s> of the TemplateProcessing is the spec's head token.
		post = bytes.ReplaceAll(post, []byte(`"ids":[1]`), []byte(`"ids":[`+strconv.Itoa(s.id("<s>", vocab))+`]`))
	}
	tok := map[string]any{
		"version":        "1.0",
		"truncation":     nil,
		"padding":        nil,
		"added_tokens":   added,
		"normalizer":     b.Normalizer,
		"pre_tokenizer":  b.PreTokenizer,
		"post_processor": post,
		"decoder":        b.Decoder,
		"model":          model,
	}
	if tokJSON, err = marshal(tok); err != nil {
		return nil, nil, err
	}

	tmpl, err := s.chatTemplate()
	if err != nil {
		return nil, nil, err
	}
	dec := map[string]any{}
	for _, e := range added {
		dec[strconv.Itoa(e.ID)] = map[string]any{"content": e.Content, "lstrip": e.LStrip, "normalized": e.Normalized,
			"rstrip": e.RStrip, "single_word": e.SingleWord, "special": e.Special}
	}
	cfg := map[string]any{
		"added_tokens_decoder":         dec,
		"chat_template":                tmpl,
		"clean_up_tokenization_spaces": false,
		"model_max_length":             4096,
		"bos_token":                    s.tokenValue(s.bos),
		"eos_token":                    s.tokenValue(s.eos),
		"pad_token":                    s.tokenValue(s.pad),
		"unk_token":                    s.tokenValue(s.unk),
	}
	for k, v := range s.config {
		cfg[k] = v
	}
	if cfgJSON, err = marshal(cfg); err != nil {
		return nil, nil, err
	}
	return tokJSON, cfgJSON, nil
}

// tokenValue is a tokenizer_config.json token entry: null, a string, or an AddedToken.
func (s *tokSpec) tokenValue(content string) any {
	switch {
	case content == "":
		return nil
	case s.objTokens:
		return map[string]any{"__type": "AddedToken", "content": content, "lstrip": false,
			"normalized": true, "rstrip": false, "single_word": false}
	}
	return content
}

func (s *tokSpec) chatTemplate() (string, error) {
	name, ok := strings.CutPrefix(s.template, "file:")
	if !ok {
		return s.template, nil
	}
	data, err := tokdata.ReadFile("tokdata/" + name)
	if err != nil {
		return "", fmt.Errorf("synth: embedded chat template: %w", err)
	}
	return string(data), nil
}

// WriteTokenizer writes only tokenizer.json and tokenizer_config.json of the checkpoint
// Write would make for o (the same bytes), creating dir if needed. It exists for
// generators of tokenizer goldens (tools/goldens), which need the small preset's
// tokenizer without 0.6 GB of weights.
func WriteTokenizer(dir string, o Options) error {
	r, err := resolve(o)
	if err != nil {
		return err
	}
	tok, cfg, err := tokSpecs[r.fam.arch].tokenizerFiles(r.d.Vocab)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	for name, b := range map[string][]byte{"tokenizer.json": tok, "tokenizer_config.json": cfg} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return fmt.Errorf("synth: %w", err)
		}
	}
	return nil
}
