package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"

	"github.com/dlclark/regexp2"
)

// preTokenizer splits normalised text into pieces that BPE encodes
// independently. first reports whether the text is the first section of the
// input (Metaspace prepend_scheme "first").
type preTokenizer interface {
	preTokenize(pieces []string, first bool) []string
}

type seqPre []preTokenizer

func (s seqPre) preTokenize(p []string, first bool) []string {
	for _, x := range s {
		p = x.preTokenize(p, first)
	}
	return p
}

type behavior int

const (
	isolated behavior = iota
	removed
	mergedPrev
	mergedNext
	contiguous
)

type splitPre struct {
	p        *pattern
	behavior behavior
	invert   bool
}

// preTokenize follows the Rust crate's SplitDelimiterBehavior. transformers.js
// treats every behaviour except Removed as Isolated; Qwen3 and DeepSeek-V3 only
// use Isolated, where both agree.
func (s splitPre) preTokenize(in []string, _ bool) []string {
	var out []string
	for _, x := range in {
		type part struct {
			a, b  int
			match bool
		}
		var parts []part
		last := 0
		for _, m := range s.p.matches(x) {
			if m[0] > last {
				parts = append(parts, part{last, m[0], s.invert})
			}
			parts = append(parts, part{m[0], m[1], !s.invert})
			last = m[1]
		}
		if last < len(x) {
			parts = append(parts, part{last, len(x), s.invert})
		}
		var res []part
		switch s.behavior {
		case isolated:
			res = parts
		case removed:
			for _, p := range parts {
				if !p.match {
					res = append(res, p)
				}
			}
		case mergedPrev:
			prev := false
			for _, p := range parts {
				if p.match && !prev && len(res) > 0 {
					res[len(res)-1].b = p.b
				} else {
					res = append(res, p)
				}
				prev = p.match
			}
		case mergedNext:
			prev := false
			for i := len(parts) - 1; i >= 0; i-- {
				p := parts[i]
				if p.match && !prev && len(res) > 0 {
					res[len(res)-1].a = p.a
				} else {
					res = append(res, p)
				}
				prev = p.match
			}
			for i, j := 0, len(res)-1; i < j; i, j = i+1, j-1 {
				res[i], res[j] = res[j], res[i]
			}
		case contiguous:
			prev := false
			for _, p := range parts {
				if p.match && prev && len(res) > 0 {
					res[len(res)-1].b = p.b
				} else {
					res = append(res, p)
				}
				prev = p.match
			}
		}
		for _, p := range res {
			if p.b > p.a {
				out = append(out, x[p.a:p.b])
			}
		}
	}
	return out
}

// gpt2Pattern is the ByteLevel use_regex split, as transformers.js writes it.
var gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

type byteLevelPre struct {
	addPrefixSpace bool
	split          *splitPre // nil unless use_regex
}

func (b byteLevelPre) preTokenize(in []string, first bool) []string {
	if b.addPrefixSpace {
		for i, x := range in {
			if !strings.HasPrefix(x, " ") {
				in[i] = " " + x
			}
		}
	}
	if b.split != nil {
		in = b.split.preTokenize(in, first)
	}
	out := in[:0:0]
	for _, x := range in {
		var sb strings.Builder
		sb.Grow(len(x) * 2)
		for i := 0; i < len(x); i++ {
			sb.WriteRune(byteToRune[x[i]])
		}
		out = append(out, sb.String())
	}
	return out
}

type digitsPre struct{ individual bool }

// Digits uses Unicode numeric characters like the Rust crate (char::is_numeric).
func (d digitsPre) preTokenize(in []string, _ bool) []string {
	var out []string
	for _, x := range in {
		start, prevDigit := 0, false
		for i, r := range x {
			dig := unicode.IsNumber(r)
			if i > start && (dig != prevDigit || (dig && d.individual)) {
				out = append(out, x[start:i])
				start = i
			}
			prevDigit = dig
		}
		if start < len(x) {
			out = append(out, x[start:])
		}
	}
	return out
}

type metaspacePre struct {
	repl    string
	prepend string // "always", "first" or "never"
	split   bool
}

// Metaspace replaces spaces by the replacement rune, prepends one when the
// scheme asks for it, and (split) cuts before every replacement rune.
func (m metaspacePre) preTokenize(in []string, first bool) []string {
	var out []string
	for _, x := range in {
		x = strings.ReplaceAll(x, " ", m.repl)
		if (m.prepend == "always" || (m.prepend == "first" && first)) && !strings.HasPrefix(x, m.repl) {
			x = m.repl + x
		}
		if !m.split {
			out = append(out, x)
			continue
		}
		start := 0
		for i := 0; i < len(x); {
			j := strings.Index(x[i+1:], m.repl)
			if j < 0 {
				break
			}
			i += 1 + j
			out = append(out, x[start:i])
			start = i
		}
		if start < len(x) {
			out = append(out, x[start:])
		}
	}
	return out
}

type rawPre struct {
	Type           string            `json:"type"`
	Pretokenizers  []json.RawMessage `json:"pretokenizers"`
	Pattern        json.RawMessage   `json:"pattern"`
	Behavior       string            `json:"behavior"`
	Invert         bool              `json:"invert"`
	AddPrefixSpace *bool             `json:"add_prefix_space"`
	UseRegex       *bool             `json:"use_regex"`
	Individual     bool              `json:"individual_digits"`
	Replacement    string            `json:"replacement"`
	PrependScheme  string            `json:"prepend_scheme"`
	Split          *bool             `json:"split"`
}

var behaviors = map[string]behavior{"Isolated": isolated, "Removed": removed,
	"MergedWithPrevious": mergedPrev, "MergedWithNext": mergedNext, "Contiguous": contiguous}

func parsePreTokenizer(file, path string, m json.RawMessage) (preTokenizer, error) {
	if isNull(m) {
		return nil, nil
	}
	var r rawPre
	if err := json.Unmarshal(m, &r); err != nil {
		return nil, perr(file, path, "%v", err)
	}
	switch r.Type {
	case "Sequence":
		var seq seqPre
		for i, sub := range r.Pretokenizers {
			p, err := parsePreTokenizer(file, fmt.Sprintf("%s.pretokenizers[%d]", path, i), sub)
			if err != nil {
				return nil, err
			}
			if p != nil {
				seq = append(seq, p)
			}
		}
		return seq, nil
	case "Split":
		p, err := parsePattern(file, path+".pattern", r.Pattern)
		if err != nil {
			return nil, err
		}
		b, ok := behaviors[r.Behavior]
		if !ok {
			return nil, perr(file, path+".behavior", "unknown behavior %q", r.Behavior)
		}
		return splitPre{p: p, behavior: b, invert: r.Invert}, nil
	case "ByteLevel":
		b := byteLevelPre{addPrefixSpace: r.AddPrefixSpace == nil || *r.AddPrefixSpace}
		if r.UseRegex == nil || *r.UseRegex {
			re, err := compileJS(gpt2Pattern)
			if err != nil {
				return nil, err
			}
			b.split = &splitPre{p: &pattern{re: re}}
		}
		return b, nil
	case "Digits":
		return digitsPre{r.Individual}, nil
	case "WhitespaceSplit", "Whitespace":
		src := `\w+|[^\w\s]+`
		if r.Type == "WhitespaceSplit" {
			src = `\S+`
		}
		re := regexp2.MustCompile(src, regexp2.None)
		return splitPre{p: &pattern{re: re}, behavior: removed, invert: true}, nil
	case "Metaspace":
		mp := metaspacePre{repl: r.Replacement, prepend: r.PrependScheme, split: r.Split == nil || *r.Split}
		if mp.repl == "" {
			mp.repl = "\u2581"
		}
		if mp.prepend == "" {
			mp.prepend = "always"
			if r.AddPrefixSpace != nil && !*r.AddPrefixSpace {
				mp.prepend = "never"
			}
		}
		return mp, nil
	case "":
		return nil, perr(file, path+".type", "missing")
	}
	return nil, fmt.Errorf("%w: %s: %s: pre_tokenizer type %q", ErrUnsupported, file, path, r.Type)
}
