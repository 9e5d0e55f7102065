package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/dlclark/regexp2"
	"golang.org/x/text/unicode/norm"
)

type normalizer interface{ normalize(string) string }

type normForm struct{ f norm.Form }

func (n normForm) normalize(s string) string { return n.f.String(s) }

type prependNorm struct{ p string }

// Prepend only ever applies to non-empty input (HF NormalizedString::prepend).
func (n prependNorm) normalize(s string) string {
	if s == "" {
		return s
	}
	return n.p + s
}

type replaceNorm struct{ p *pattern }

func (n replaceNorm) normalize(s string) string { return n.p.replaceAll(s) }

type lowerNorm struct{}

func (lowerNorm) normalize(s string) string { return strings.ToLower(s) }

type stripNorm struct{ left, right bool }

func (n stripNorm) normalize(s string) string {
	if n.left {
		s = strings.TrimLeftFunc(s, isJSSpace)
	}
	if n.right {
		s = strings.TrimRightFunc(s, isJSSpace)
	}
	return s
}

type seqNorm []normalizer

func (n seqNorm) normalize(s string) string {
	for _, x := range n {
		s = x.normalize(s)
	}
	return s
}

// pattern is a Split/Replace pattern: a literal ({"String": ...}) or a regex
// ({"Regex": ...}) compiled with regexp2 for look-ahead support.
type pattern struct {
	lit     string
	re      *regexp2.Regexp
	content string // replacement, for Replace
}

type rawPattern struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

func parsePattern(file, path string, m json.RawMessage) (*pattern, error) {
	var rp rawPattern
	if err := json.Unmarshal(m, &rp); err != nil {
		return nil, perr(file, path, "%v", err)
	}
	switch {
	case rp.String != nil:
		if *rp.String == "" {
			return nil, perr(file, path, "empty String pattern")
		}
		return &pattern{lit: *rp.String}, nil
	case rp.Regex != nil:
		re, err := compileJS(*rp.Regex)
		if err != nil {
			return nil, perr(file, path+".Regex", "%v", err)
		}
		return &pattern{re: re}, nil
	}
	return nil, perr(file, path, "want {\"String\": ...} or {\"Regex\": ...}")
}

// jsRewrites mirrors transformers.js createPattern, which rewrites constructs
// JS RegExp lacks; applying the same rewrite keeps matching identical (e.g.
// (?i:...) would also fold U+017F to "s", the rewritten form does not).
var jsRewrites = strings.NewReplacer(
	`(?i:'s|'t|'re|'ve|'m|'ll|'d)`, `(?:'([sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))`,
	` ?[^(\s|[.,!?…。，、।۔،])]+`, ` ?[^\s.,!?…。，、।۔،]+`,
	`\#`, `#`, `\&`, `&`, `\~`, `~`,
)

// compileJS compiles an Oniguruma-style tokenizer regex so that it matches
// like the JS reference: \s and \S become explicit JS whitespace classes
// (regexp2's .NET \s differs in U+0085/U+FEFF).
func compileJS(src string) (*regexp2.Regexp, error) {
	src = jsRewrites.Replace(src)
	var b strings.Builder
	inClass := false
	for i := 0; i < len(src); i++ {
		c := src[i]
		if c == '\\' && i+1 < len(src) {
			n := src[i+1]
			i++
			switch {
			case n == 's' && inClass:
				b.WriteString(jsSpaceClass)
			case n == 's':
				b.WriteString("[" + jsSpaceClass + "]")
			case n == 'S' && !inClass:
				b.WriteString("[^" + jsSpaceClass + "]")
			case n == 'S':
				return nil, fmt.Errorf("\\S inside a character class is not supported")
			default:
				b.WriteByte('\\')
				b.WriteByte(n)
			}
			continue
		}
		if c == '[' && !inClass {
			inClass = true
			b.WriteByte(c)
			continue
		}
		if c == ']' && inClass {
			inClass = false
		}
		b.WriteByte(c)
	}
	return regexp2.Compile(b.String(), regexp2.None)
}

// matches returns the [start,end) byte offsets of all non-overlapping matches.
func (p *pattern) matches(s string) [][2]int {
	var out [][2]int
	if p.re == nil {
		for i := 0; i <= len(s)-len(p.lit); {
			j := strings.Index(s[i:], p.lit)
			if j < 0 {
				break
			}
			out = append(out, [2]int{i + j, i + j + len(p.lit)})
			i += j + len(p.lit)
		}
		return out
	}
	runes := []rune(s)
	// regexp2 reports rune offsets; map them back to byte offsets.
	off := make([]int, len(runes)+1)
	for i, r := range runes {
		off[i+1] = off[i] + len(string(r))
	}
	m, err := p.re.FindRunesMatch(runes)
	for err == nil && m != nil {
		if m.Length > 0 {
			out = append(out, [2]int{off[m.Index], off[m.Index+m.Length]})
		}
		m, err = p.re.FindNextMatch(m)
	}
	return out
}

func (p *pattern) replaceAll(s string) string {
	var b strings.Builder
	last := 0
	for _, m := range p.matches(s) {
		b.WriteString(s[last:m[0]])
		b.WriteString(p.content)
		last = m[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

type rawNorm struct {
	Type        string            `json:"type"`
	Normalizers []json.RawMessage `json:"normalizers"`
	Prepend     string            `json:"prepend"`
	Pattern     json.RawMessage   `json:"pattern"`
	Content     string            `json:"content"`
	StripLeft   bool              `json:"strip_left"`
	StripRight  bool              `json:"strip_right"`
}

func parseNormalizer(file, path string, m json.RawMessage) (normalizer, error) {
	if isNull(m) {
		return nil, nil
	}
	var r rawNorm
	if err := json.Unmarshal(m, &r); err != nil {
		return nil, perr(file, path, "%v", err)
	}
	switch r.Type {
	case "NFC":
		return normForm{norm.NFC}, nil
	case "NFD":
		return normForm{norm.NFD}, nil
	case "NFKC":
		return normForm{norm.NFKC}, nil
	case "NFKD":
		return normForm{norm.NFKD}, nil
	case "Lowercase":
		return lowerNorm{}, nil
	case "Strip":
		return stripNorm{r.StripLeft, r.StripRight}, nil
	case "Prepend":
		return prependNorm{r.Prepend}, nil
	case "Replace":
		p, err := parsePattern(file, path+".pattern", r.Pattern)
		if err != nil {
			return nil, err
		}
		p.content = r.Content
		return replaceNorm{p}, nil
	case "Sequence":
		var seq seqNorm
		for i, sub := range r.Normalizers {
			n, err := parseNormalizer(file, fmt.Sprintf("%s.normalizers[%d]", path, i), sub)
			if err != nil {
				return nil, err
			}
			if n != nil {
				seq = append(seq, n)
			}
		}
		if len(seq) == 0 {
			return nil, nil
		}
		return seq, nil
	case "":
		return nil, perr(file, path+".type", "missing")
	}
	return nil, fmt.Errorf("%w: %s: %s: normalizer type %q", ErrUnsupported, file, path, r.Type)
}
