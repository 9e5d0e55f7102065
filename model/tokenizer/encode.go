package tokenizer

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// trieNode is a byte trie over added-token contents. Matching on bytes is
// safe: text is valid UTF-8 by then and contents start with a lead byte, so a
// match can only begin on a character boundary.
type trieNode struct {
	next map[byte]*trieNode
	end  bool
}

func (n *trieNode) insert(s string) {
	for i := 0; i < len(s); i++ {
		if n.next == nil {
			n.next = map[byte]*trieNode{}
		}
		c, ok := n.next[s[i]]
		if !ok {
			c = &trieNode{}
			n.next[s[i]] = c
		}
		n = c
	}
	n.end = true
}

// longest returns the length of the longest added token starting at s[0]
// that ok accepts, or 0.
func (n *trieNode) longest(s string, ok func(n int) bool) int {
	var ends []int
	for i := 0; i < len(s) && n.next != nil; i++ {
		n = n.next[s[i]]
		if n == nil {
			break
		}
		if n.end {
			ends = append(ends, i+1)
		}
	}
	for k := len(ends) - 1; k >= 0; k-- {
		if ok(ends[k]) {
			return ends[k]
		}
	}
	return 0
}

// isWordRune is the Rust crate's word character for single_word (\w).
func isWordRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r) }

type section struct {
	text  string
	added int // index into Tokenizer.added, or -1
}

// splitAdded cuts text at added tokens, scanning left to right and taking the
// longest match at each position (transformers.js DictionarySplitter; the Rust
// crate uses leftmost-longest Aho-Corasick, which agrees).
func (t *Tokenizer) splitAdded(text string) []section {
	var out []section
	last := 0
	for i := 0; i < len(text); {
		// single_word tokens only match when not glued to a word character
		// (Rust semantics; transformers.js ignores the flag, and neither
		// golden tokenizer sets it).
		n := t.trie.longest(text[i:], func(n int) bool {
			if !t.added[t.addedStr[text[i:i+n]]].SingleWord {
				return true
			}
			before, _ := utf8.DecodeLastRuneInString(text[:i])
			after, _ := utf8.DecodeRuneInString(text[i+n:])
			return !(i > 0 && isWordRune(before)) && !(i+n < len(text) && isWordRune(after))
		})
		if n == 0 {
			i++
			continue
		}
		if i > last {
			out = append(out, section{text[last:i], -1})
		}
		out = append(out, section{text[i : i+n], t.addedStr[text[i:i+n]]})
		i += n
		last = i
	}
	if last < len(text) {
		out = append(out, section{text[last:], -1})
	}
	// lstrip/rstrip eat whitespace of the neighbouring text sections.
	for i, s := range out {
		if s.added < 0 {
			continue
		}
		a := t.added[s.added]
		if a.LStrip && i > 0 && out[i-1].added < 0 {
			out[i-1].text = strings.TrimRightFunc(out[i-1].text, isJSSpace)
		}
		if a.RStrip && i+1 < len(out) && out[i+1].added < 0 {
			out[i+1].text = strings.TrimLeftFunc(out[i+1].text, isJSSpace)
		}
	}
	return out
}

// Encode returns the ids of text. Added tokens found in text are always
// emitted as their ids (the JS and HF default, split_special_tokens=false).
// With addSpecial the post-processor's ids (e.g. BOS) are added around it.
// Invalid UTF-8 is replaced by U+FFFD first (see package doc).
func (t *Tokenizer) Encode(text string, addSpecial bool) ([]int32, error) {
	text = sanitize(text)
	var ids []int32
	if addSpecial {
		ids = append(ids, t.prefix...)
	}
	for si, s := range t.splitAdded(text) {
		if s.added >= 0 {
			ids = append(ids, t.added[s.added].ID)
			continue
		}
		x := s.text
		if x == "" {
			continue
		}
		if t.norm != nil {
			x = t.norm.normalize(x)
		}
		if x == "" {
			continue
		}
		pieces := []string{x}
		if t.pre != nil {
			pieces = t.pre.preTokenize(pieces, si == 0)
		}
		var err error
		for _, p := range pieces {
			if ids, err = t.model.encodePiece(ids, p); err != nil {
				return nil, err
			}
		}
	}
	if addSpecial {
		ids = append(ids, t.suffix...)
	}
	return ids, nil
}

// Decode returns the text of ids. With skipSpecial, tokens marked special
// (added_tokens[].special or the config's additional_special_tokens) are
// dropped. Invalid byte sequences across tokens become U+FFFD.
func (t *Tokenizer) Decode(ids []int32, skipSpecial bool) (string, error) {
	var st decodeState
	var buf []byte
	for _, id := range ids {
		var err error
		if buf, err = t.tokenBytes(buf, id, skipSpecial, &st); err != nil {
			return "", err
		}
	}
	out, _ := repairUTF8(nil, buf, true)
	s := t.dec.stripStream(string(out), &st)
	if t.dec.stripStop > 0 {
		s = stripRight(s, t.dec.stripContent, t.dec.stripStop)
	}
	if t.cleanup {
		s = cleanUp(s)
	}
	return s, nil
}

func stripRight(s string, c rune, n int) string {
	for ; n > 0; n-- {
		r, size := utf8.DecodeLastRuneInString(s)
		if size == 0 || r != c {
			break
		}
		s = s[:len(s)-size]
	}
	return s
}

// cleanUp is transformers' clean_up_tokenization (spaces before punctuation
// and contractions), applied when clean_up_tokenization_spaces is set.
func cleanUp(s string) string {
	return strings.NewReplacer(" .", ".", " ?", "?", " !", "!", " ,", ",", " ' ", "'",
		" n't", "n't", " 'm", "'m", " 's", "'s", " 've", "'ve", " 're", "'re").Replace(s)
}

// Decoder turns a stream of ids into text incrementally. Add returns only
// complete UTF-8: bytes of a character split across tokens are held until the
// character completes (or Flush). Concatenating every Add result and Flush
// equals Decode of all ids, except that clean_up_tokenization_spaces and
// trailing Strip are not applied (they need look-ahead; Qwen3, DeepSeek-V3
// and Mixtral disable or do not use them).
type Decoder struct {
	t           *Tokenizer
	skipSpecial bool
	st          decodeState
	pending     []byte
}

// NewDecoder returns a streaming decoder that keeps special tokens
// (like Decode(ids, false)).
func NewDecoder(t *Tokenizer) *Decoder { return &Decoder{t: t} }

// NewDecoderSkipSpecial returns a streaming decoder that drops special tokens
// (like Decode(ids, true)), the usual choice for showing a completion.
func NewDecoderSkipSpecial(t *Tokenizer) *Decoder { return &Decoder{t: t, skipSpecial: true} }

// Add appends id and returns the text that became complete.
func (d *Decoder) Add(id int32) (string, error) {
	var err error
	if d.pending, err = d.t.tokenBytes(d.pending, id, d.skipSpecial, &d.st); err != nil {
		return "", err
	}
	out, rest := repairUTF8(nil, d.pending, false)
	d.pending = append(d.pending[:0], rest...)
	return d.t.dec.stripStream(string(out), &d.st), nil
}

// Flush returns held-back bytes (as U+FFFD if incomplete) and resets the
// decoder for a new sequence.
func (d *Decoder) Flush() string {
	out, _ := repairUTF8(nil, d.pending, true)
	s := d.t.dec.stripStream(string(out), &d.st)
	d.pending = d.pending[:0]
	d.st = decodeState{}
	return s
}

// tokenBytes appends the bytes id contributes to the decoded stream.
func (t *Tokenizer) tokenBytes(dst []byte, id int32, skipSpecial bool, st *decodeState) ([]byte, error) {
	tok, ok := t.idToToken[id]
	if !ok {
		return dst, fmt.Errorf("tokenizer: decode: unknown id %d", id)
	}
	if skipSpecial && t.special[tok] {
		return dst, nil
	}
	first := !st.seenToken
	st.seenToken = true
	if _, isAdded := t.addedStr[tok]; isAdded {
		// Decoders pass added tokens through verbatim (transformers.js
		// ByteLevelDecoder; the Rust crate decodes them separately too).
		return append(dst, tok...), nil
	}
	return t.dec.token(dst, tok, first), nil
}
