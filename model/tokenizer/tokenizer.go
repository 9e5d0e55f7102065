package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// ErrFormat is wrapped by every error caused by a malformed tokenizer.json or
// tokenizer_config.json; the message names the file and the JSON path.
var ErrFormat = errors.New("tokenizer: malformed file")

// ErrUnsupported is wrapped when a well-formed file uses a component this
// package does not implement (e.g. a WordPiece model or a Punctuation
// pre-tokenizer), so callers can tell "broken file" from "not yet supported".
var ErrUnsupported = errors.New("tokenizer: unsupported component")

// AddedToken is an entry of tokenizer.json's added_tokens.
type AddedToken struct {
	ID         int32  `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// Tokenizer encodes text to ids and back. It is immutable after Load/Parse
// and safe for concurrent use.
type Tokenizer struct {
	added     []AddedToken
	addedByID map[int32]int   // id -> index in added
	addedStr  map[string]int  // content -> index in added
	trie      *trieNode       // added-token contents, for longest match
	special   map[string]bool // contents dropped by skipSpecial
	norm      normalizer      // nil: identity
	pre       preTokenizer    // nil: whole section is one piece
	model     *bpe
	prefix    []int32 // post-processor ids before the text when addSpecial
	suffix    []int32 // post-processor ids after the text when addSpecial
	dec       decoderSpec
	idToToken map[int32]string
	bos, eos  int32
	cleanup   bool // clean_up_tokenization_spaces
	vocabSize int
}

// Load reads dir/tokenizer.json and, if present, dir/tokenizer_config.json
// (add_bos_token, add_eos_token, bos_token, eos_token,
// clean_up_tokenization_spaces, additional_special_tokens).
func Load(dir string) (*Tokenizer, error) {
	name := filepath.Join(dir, "tokenizer.json")
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	cfgName := filepath.Join(dir, "tokenizer_config.json")
	cfg, err := os.ReadFile(cfgName)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
		cfg = nil
	}
	return parse(name, data, cfgName, cfg)
}

// Parse builds a Tokenizer from the bytes of a tokenizer.json alone (no
// tokenizer_config.json: BOS/EOS come only from the post-processor).
func Parse(data []byte) (*Tokenizer, error) {
	return parse("tokenizer.json", data, "", nil)
}

type rawFile struct {
	AddedTokens   []AddedToken    `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         json.RawMessage `json:"model"`
}

type rawConfig struct {
	AddBOS     *bool           `json:"add_bos_token"`
	AddEOS     *bool           `json:"add_eos_token"`
	BOS        json.RawMessage `json:"bos_token"`
	EOS        json.RawMessage `json:"eos_token"`
	Cleanup    *bool           `json:"clean_up_tokenization_spaces"`
	Additional json.RawMessage `json:"additional_special_tokens"`
}

// perr builds an ErrFormat error naming the file and JSON path.
func perr(file, path, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s: %s", ErrFormat, file, path, fmt.Sprintf(format, args...))
}

func isNull(m json.RawMessage) bool {
	m = bytes.TrimSpace(m)
	return len(m) == 0 || string(m) == "null"
}

func parse(file string, data []byte, cfgFile string, cfgData []byte) (t *Tokenizer, err error) {
	// The parser is fuzzed; a panic in some corner must still surface as an error.
	defer func() {
		if r := recover(); r != nil {
			t, err = nil, perr(file, "$", "internal error: %v", r)
		}
	}()
	var raw rawFile
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, perr(file, "$", "%v", err)
	}
	if isNull(raw.Model) {
		return nil, perr(file, "model", "missing")
	}
	t = &Tokenizer{addedByID: map[int32]int{}, addedStr: map[string]int{}, special: map[string]bool{},
		trie: &trieNode{}, bos: -1, eos: -1}
	if t.model, err = parseBPE(file, raw.Model); err != nil {
		return nil, err
	}
	t.idToToken = make(map[int32]string, len(t.model.vocab)+len(raw.AddedTokens))
	for s, id := range t.model.vocab {
		t.idToToken[id] = s
	}
	for i, a := range raw.AddedTokens {
		if a.Content == "" {
			return nil, perr(file, fmt.Sprintf("added_tokens[%d].content", i), "empty")
		}
		if a.ID < 0 {
			return nil, perr(file, fmt.Sprintf("added_tokens[%d].id", i), "negative id %d", a.ID)
		}
		t.addedByID[a.ID] = len(t.added)
		t.addedStr[a.Content] = len(t.added)
		t.added = append(t.added, a)
		t.trie.insert(a.Content)
		t.idToToken[a.ID] = a.Content
		if a.Special {
			t.special[a.Content] = true
		}
	}
	if t.norm, err = parseNormalizer(file, "normalizer", raw.Normalizer); err != nil {
		return nil, err
	}
	if t.pre, err = parsePreTokenizer(file, "pre_tokenizer", raw.PreTokenizer); err != nil {
		return nil, err
	}
	if err := t.parsePost(file, "post_processor", raw.PostProcessor); err != nil {
		return nil, err
	}
	if t.dec, err = parseDecoder(file, "decoder", raw.Decoder); err != nil {
		return nil, err
	}
	// Without tokenizer_config.json there is no clean-up step, as in the Rust
	// crate; applyConfig switches it on only when the config asks (or is silent).
	t.cleanup = false
	for id := range t.idToToken {
		t.vocabSize = max(t.vocabSize, int(id)+1)
	}
	if cfgData != nil {
		if err := t.applyConfig(cfgFile, cfgData); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// tokenName accepts a token given as a string or as {"content": ...}.
func tokenName(file, path string, m json.RawMessage) (string, error) {
	if isNull(m) {
		return "", nil
	}
	var s string
	if json.Unmarshal(m, &s) == nil {
		return s, nil
	}
	var o struct {
		Content string `json:"content"`
	}
	if err := json.Unmarshal(m, &o); err != nil {
		return "", perr(file, path, "want string or {\"content\": ...}: %v", err)
	}
	return o.Content, nil
}

func (t *Tokenizer) applyConfig(file string, data []byte) error {
	var c rawConfig
	if err := json.Unmarshal(data, &c); err != nil {
		return perr(file, "$", "%v", err)
	}
	// transformers.js defaults clean_up_tokenization_spaces to true when the
	// key is absent, as older Python transformers did.
	t.cleanup = c.Cleanup == nil || *c.Cleanup
	bos, err := tokenName(file, "bos_token", c.BOS)
	if err != nil {
		return err
	}
	eos, err := tokenName(file, "eos_token", c.EOS)
	if err != nil {
		return err
	}
	if id, ok := t.TokenID(bos); ok && bos != "" {
		t.bos = id
	}
	if id, ok := t.TokenID(eos); ok && eos != "" {
		t.eos = id
	}
	if !isNull(c.Additional) {
		var list []json.RawMessage
		if err := json.Unmarshal(c.Additional, &list); err != nil {
			return perr(file, "additional_special_tokens", "%v", err)
		}
		for i, m := range list {
			s, err := tokenName(file, fmt.Sprintf("additional_special_tokens[%d]", i), m)
			if err != nil {
				return err
			}
			t.special[s] = true
		}
	}
	// HF's Llama-style fast tokenizers rebuild the post-processor from
	// add_bos_token/add_eos_token (DeepSeek-V3 relies on this: its
	// post_processor is a plain ByteLevel). transformers.js ignores the flags;
	// we follow the Python/Rust behaviour because that is what the models saw.
	if c.AddBOS != nil {
		t.prefix = setEdge(t.prefix, t.bos, *c.AddBOS, true)
	}
	if c.AddEOS != nil {
		t.suffix = setEdge(t.suffix, t.eos, *c.AddEOS, false)
	}
	return nil
}

// setEdge makes ids start (front) or end with id when want, and removes it otherwise.
func setEdge(ids []int32, id int32, want, front bool) []int32 {
	if id < 0 {
		return ids
	}
	has := len(ids) > 0 && ((front && ids[0] == id) || (!front && ids[len(ids)-1] == id))
	switch {
	case want && !has && front:
		return append([]int32{id}, ids...)
	case want && !has:
		return append(append([]int32(nil), ids...), id)
	case !want && has && front:
		return ids[1:]
	case !want && has:
		return ids[:len(ids)-1]
	}
	return ids
}

func (t *Tokenizer) parsePost(file, path string, m json.RawMessage) error {
	if isNull(m) {
		return nil
	}
	var p struct {
		Type       string            `json:"type"`
		Processors []json.RawMessage `json:"processors"`
		Single     []struct {
			SpecialToken *struct {
				ID string `json:"id"`
			} `json:"SpecialToken"`
			Sequence *struct {
				ID string `json:"id"`
			} `json:"Sequence"`
		} `json:"single"`
		SpecialTokens map[string]struct {
			IDs []int32 `json:"ids"`
		} `json:"special_tokens"`
	}
	if err := json.Unmarshal(m, &p); err != nil {
		return perr(file, path, "%v", err)
	}
	switch p.Type {
	case "ByteLevel":
		return nil // offsets only; ids unchanged
	case "Sequence":
		for i, sub := range p.Processors {
			if err := t.parsePost(file, fmt.Sprintf("%s.processors[%d]", path, i), sub); err != nil {
				return err
			}
		}
		return nil
	case "TemplateProcessing":
		seen := false
		for i, it := range p.Single {
			switch {
			case it.Sequence != nil:
				seen = true
			case it.SpecialToken != nil:
				st, ok := p.SpecialTokens[it.SpecialToken.ID]
				if !ok {
					return perr(file, fmt.Sprintf("%s.single[%d]", path, i), "special token %q not in special_tokens", it.SpecialToken.ID)
				}
				if seen {
					t.suffix = append(t.suffix, st.IDs...)
				} else {
					t.prefix = append(t.prefix, st.IDs...)
				}
			default:
				return perr(file, fmt.Sprintf("%s.single[%d]", path, i), "want SpecialToken or Sequence")
			}
		}
		if len(t.prefix) > 0 && t.bos < 0 {
			t.bos = t.prefix[0]
		}
		return nil
	}
	return fmt.Errorf("%w: %s: %s: type %q", ErrUnsupported, file, path, p.Type)
}

// TokenID returns the id of a vocabulary or added token.
func (t *Tokenizer) TokenID(s string) (int32, bool) {
	if i, ok := t.addedStr[s]; ok {
		return t.added[i].ID, true
	}
	id, ok := t.model.vocab[s]
	return id, ok
}

// Token returns the vocabulary string of id (byte-level alphabet, not text).
func (t *Tokenizer) Token(id int32) (string, bool) {
	s, ok := t.idToToken[id]
	return s, ok
}

// VocabSize returns one more than the largest id (model vocab and added tokens).
func (t *Tokenizer) VocabSize() int { return t.vocabSize }

// AddedTokens returns a copy of the added tokens, sorted by id.
func (t *Tokenizer) AddedTokens() []AddedToken {
	out := append([]AddedToken(nil), t.added...)
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// BOS returns the beginning-of-sequence id, or -1.
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS returns the end-of-sequence id, or -1.
func (t *Tokenizer) EOS() int32 { return t.eos }

// IsSpecial reports whether id is dropped by Decode's skipSpecial.
func (t *Tokenizer) IsSpecial(id int32) bool {
	s, ok := t.idToToken[id]
	return ok && t.special[s]
}
