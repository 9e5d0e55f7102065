package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// decodeStep is one per-token transformation of a decoder chain.
type decodeStep struct {
	kind        string // "ByteLevel", "Replace", "ByteFallback", "Metaspace", "Strip"
	pat         *pattern
	repl        string // Metaspace replacement
	prefixSpace bool   // Metaspace: drop the first token's leading space
	content     rune   // Strip (per token)
	start, stop int
}

// decoderSpec is a flattened decoder chain. Tokens pass through the per-token
// steps and become bytes; the byte stream is repaired as UTF-8 as a whole,
// which equals the JS per-group decoding because every group boundary falls
// on a complete token. Strip after Fuse applies to the whole text.
type decoderSpec struct {
	steps        []decodeStep
	fused        bool
	stripContent rune
	stripStart   int // leading content runes to strip from the text
	stripStop    int // trailing ones (Decode only)
}

type decodeState struct {
	seenToken bool // a (non-skipped) token was decoded: Metaspace first-token rule
	stripped  bool // the stream-level leading Strip is done
	nStripped int  // leading runes stripped so far
}

type rawDec struct {
	Type           string            `json:"type"`
	Decoders       []json.RawMessage `json:"decoders"`
	Pattern        json.RawMessage   `json:"pattern"`
	Content        json.RawMessage   `json:"content"`
	Start          int               `json:"start"`
	Stop           int               `json:"stop"`
	Replacement    string            `json:"replacement"`
	AddPrefixSpace *bool             `json:"add_prefix_space"`
	PrependScheme  string            `json:"prepend_scheme"`
}

func parseDecoder(file, path string, m json.RawMessage) (decoderSpec, error) {
	var d decoderSpec
	if isNull(m) {
		return d, nil
	}
	return d, d.add(file, path, m)
}

func (d *decoderSpec) add(file, path string, m json.RawMessage) error {
	var r rawDec
	if err := json.Unmarshal(m, &r); err != nil {
		return perr(file, path, "%v", err)
	}
	switch r.Type {
	case "Sequence":
		for i, sub := range r.Decoders {
			if err := d.add(file, fmt.Sprintf("%s.decoders[%d]", path, i), sub); err != nil {
				return err
			}
		}
	case "ByteLevel", "ByteFallback":
		d.steps = append(d.steps, decodeStep{kind: r.Type})
	case "Fuse":
		d.fused = true
	case "Replace":
		p, err := parsePattern(file, path+".pattern", r.Pattern)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(r.Content, &p.content); err != nil {
			return perr(file, path+".content", "want a string: %v", err)
		}
		d.steps = append(d.steps, decodeStep{kind: "Replace", pat: p})
	case "Metaspace":
		s := decodeStep{kind: "Metaspace", repl: r.Replacement, prefixSpace: true}
		if s.repl == "" {
			s.repl = "\u2581"
		}
		if r.PrependScheme == "never" || (r.PrependScheme == "" && r.AddPrefixSpace != nil && !*r.AddPrefixSpace) {
			s.prefixSpace = false
		}
		d.steps = append(d.steps, s)
	case "Strip":
		var c string
		if err := json.Unmarshal(r.Content, &c); err != nil || utf8.RuneCountInString(c) != 1 {
			return perr(file, path+".content", "want a one-character string")
		}
		if r.Start < 0 || r.Stop < 0 {
			return perr(file, path, "negative start/stop")
		}
		cr, _ := utf8.DecodeRuneInString(c)
		if d.fused {
			d.stripContent, d.stripStart, d.stripStop = cr, r.Start, r.Stop
		} else {
			d.steps = append(d.steps, decodeStep{kind: "Strip", content: cr, start: r.Start, stop: r.Stop})
		}
	case "":
		return perr(file, path+".type", "missing")
	default:
		return fmt.Errorf("%w: %s: %s: decoder type %q", ErrUnsupported, file, path, r.Type)
	}
	return nil
}

// token appends the bytes of one model token.
func (d *decoderSpec) token(dst []byte, tok string, first bool) []byte {
	for _, s := range d.steps {
		switch s.kind {
		case "ByteLevel":
			var b []byte
			for _, r := range tok {
				if c, ok := runeToByte[r]; ok {
					b = append(b, c)
				} else {
					b = utf8.AppendRune(b, r)
				}
			}
			// The result is raw bytes: no later step may treat it as text.
			return append(dst, b...)
		case "ByteFallback":
			if len(tok) == 6 && strings.HasPrefix(tok, "<0x") && tok[5] == '>' {
				if v, ok := hexByte(tok[3:5]); ok {
					return append(dst, v)
				}
			}
		case "Replace":
			tok = s.pat.replaceAll(tok)
		case "Metaspace":
			tok = strings.ReplaceAll(tok, s.repl, " ")
			if first && s.prefixSpace {
				tok = strings.TrimPrefix(tok, " ")
			}
		case "Strip":
			for n := s.start; n > 0 && tok != ""; n-- {
				r, size := utf8.DecodeRuneInString(tok)
				if r != s.content {
					break
				}
				tok = tok[size:]
			}
			tok = stripRight(tok, s.content, s.stop)
		}
	}
	return append(dst, tok...)
}

func hexByte(s string) (byte, bool) {
	var v byte
	for i := 0; i < 2; i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | (c - '0')
		case c >= 'A' && c <= 'F':
			v = v<<4 | (c - 'A' + 10)
		case c >= 'a' && c <= 'f':
			v = v<<4 | (c - 'a' + 10)
		default:
			return 0, false
		}
	}
	return v, true
}

// stripStream removes up to stripStart leading content runes from the start
// of the decoded text, across calls, stopping at the first other rune.
func (d *decoderSpec) stripStream(s string, st *decodeState) string {
	if d.stripStart == 0 || st.stripped || s == "" {
		return s
	}
	for ; st.nStripped < d.stripStart; st.nStripped++ {
		r, size := utf8.DecodeRuneInString(s)
		if size == 0 {
			// Text ran out while still stripping: continue on the next call.
			return s
		}
		if r != d.stripContent {
			break
		}
		s = s[size:]
	}
	st.stripped = true
	return s
}
