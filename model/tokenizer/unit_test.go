package tokenizer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// tinyByteLevel is a byte-level BPE with merges in the given encoding.
func tinyByteLevel(merges string, added string) string {
	return `{"added_tokens":[` + added + `],
	"normalizer":{"type":"NFC"},
	"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"use_regex":true},
	"post_processor":{"type":"ByteLevel"},
	"decoder":{"type":"ByteLevel"},
	"model":{"type":"BPE","vocab":{"a":0,"b":1,"c":2,"ab":3,"abc":4,"Ġ":5,"Ġa":6,"Ġab":7,"é":8,"Ã":9,"©":10,"Ã©":11},
	"merges":` + merges + `}}`
}

func mustParse(t *testing.T, js string) *Tokenizer {
	t.Helper()
	tok, err := Parse([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestMergesBothEncodings(t *testing.T) {
	legacy := mustParse(t, tinyByteLevel(`["a b","ab c","Ġ a","Ġa b","Ã ©"]`, ""))
	pairs := mustParse(t, tinyByteLevel(`[["a","b"],["ab","c"],["Ġ","a"],["Ġa","b"],["Ã","©"]]`, ""))
	for _, tc := range []struct {
		in   string
		want []int32
	}{
		{"abc", []int32{4}},
		{"ab ab", []int32{3, 5, 3}}, // "a b" (rank 0) beats "Ġ a", so "Ġab" is never reached
		{" a", []int32{6}},
		{"abab", []int32{3, 3}},
		{"cab", []int32{2, 3}},
		{"é", []int32{11}}, // U+00E9 is bytes C3 A9 -> "Ã©"
	} {
		for name, tok := range map[string]*Tokenizer{"legacy": legacy, "pairs": pairs} {
			got, err := tok.Encode(tc.in, false)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("%s Encode(%q) = %v, %v; want %v", name, tc.in, got, err, tc.want)
			}
			if dec, _ := tok.Decode(got, false); dec != tc.in {
				t.Errorf("%s Decode(%v) = %q; want %q", name, got, dec, tc.in)
			}
		}
	}
}

// The merge rank, not the position, decides: "b c" outranks "a b" here.
func TestMergeRankOrder(t *testing.T) {
	tok := mustParse(t, `{"model":{"type":"BPE","vocab":{"a":0,"b":1,"c":2,"ab":3,"bc":4,"abc":5},
		"merges":["b c","a b"]}}`)
	got, err := tok.Encode("abc", false)
	if err != nil || !slices.Equal(got, []int32{0, 4}) {
		t.Fatalf("Encode(abc) = %v, %v; want [0 4]", got, err)
	}
}

func TestAddedTokens(t *testing.T) {
	added := `{"id":20,"content":"<m>","lstrip":true,"rstrip":true,"special":true},
	{"id":21,"content":"<|x","special":false},{"id":22,"content":"<|x|>","special":true}`
	js := strings.Replace(tinyByteLevel(`["a b"]`, added), `"ab":3`, `"ab":3,"<":12,"|":13,"x":14`, 1)
	tok := mustParse(t, js)
	for _, tc := range []struct {
		in   string
		want []int32
	}{
		{"a <m> b", []int32{0, 20, 1}}, // lstrip/rstrip eat the spaces around <m>
		{"a<m>b", []int32{0, 20, 1}},   // nothing to strip
		{"<|x|>ab", []int32{22, 3}},    // longest match wins over "<|x"
		{"<|xa", []int32{21, 0}},       // shorter added token still matches
		{"<|b", []int32{12, 13, 1}},    // no added token matches
	} {
		got, err := tok.Encode(tc.in, false)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("Encode(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	if s, _ := tok.Decode([]int32{0, 20, 22, 21}, true); s != "a<|x" {
		t.Errorf("Decode skipSpecial = %q; want %q", s, "a<|x")
	}
	if s, _ := tok.Decode([]int32{0, 20, 22, 21}, false); s != "a<m><|x|><|x" {
		t.Errorf("Decode = %q", s)
	}
}

// mixtralLike mirrors the SentencePiece-converted layout (Prepend/Replace
// normalisers, no pre-tokenizer, byte_fallback, Replace/ByteFallback/Fuse/Strip).
func mixtralLike() string {
	var v strings.Builder
	v.WriteString(`"<unk>":0,"<s>":1,"</s>":2`)
	for i := 0; i < 256; i++ {
		fmt.Fprintf(&v, `,"<0x%02X>":%d`, i, 3+i)
	}
	v.WriteString(`,"▁":259,"h":260,"i":261,"▁h":262,"▁hi":263`)
	return `{"added_tokens":[{"id":0,"content":"<unk>","special":true},{"id":1,"content":"<s>","special":true},{"id":2,"content":"</s>","special":true}],
	"normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]},
	"pre_tokenizer":null,
	"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],
		"special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}},
	"decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},
	"model":{"type":"BPE","unk_token":"<unk>","byte_fallback":true,"vocab":{` + v.String() + `},"merges":["▁ h","▁h i"]}}`
}

func TestByteFallbackAndStrip(t *testing.T) {
	tok := mustParse(t, mixtralLike())
	got, err := tok.Encode("hi 😀", true)
	want := []int32{1, 263, 259, 3 + 0xF0, 3 + 0x9F, 3 + 0x98, 3 + 0x80}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("Encode = %v, %v; want %v", got, err, want)
	}
	if tok.BOS() != 1 {
		t.Errorf("BOS = %d; want 1 from TemplateProcessing", tok.BOS())
	}
	for skip, want := range map[bool]string{true: "hi 😀", false: "<s> hi 😀"} {
		if s, _ := tok.Decode(got, skip); s != want {
			t.Errorf("Decode(skip=%v) = %q; want %q", skip, s, want)
		}
	}
	// Streaming: the emoji's four byte tokens produce nothing until complete.
	d := NewDecoderSkipSpecial(tok)
	var outs []string
	for _, id := range got {
		s, err := d.Add(id)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, s)
	}
	if !slices.Equal(outs, []string{"", "hi", " ", "", "", "", "😀"}) {
		t.Errorf("Add outputs = %q", outs)
	}
}

func TestMetaspacePreTokenizer(t *testing.T) {
	js := strings.Replace(mixtralLike(), `"pre_tokenizer":null`,
		`"pre_tokenizer":{"type":"Metaspace","replacement":"▁","prepend_scheme":"first","split":true}`, 1)
	js = strings.Replace(js, `{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]}`, `null`, 1)
	js = strings.Replace(js, `{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]}`,
		`{"type":"Metaspace","replacement":"▁","prepend_scheme":"first"}`, 1)
	tok := mustParse(t, js)
	got, err := tok.Encode("hi hi", false)
	if err != nil || !slices.Equal(got, []int32{263, 263}) {
		t.Fatalf("Encode = %v, %v; want [263 263]", got, err)
	}
	if s, _ := tok.Decode(got, false); s != "hi hi" {
		t.Errorf("Decode = %q", s)
	}
}

func TestSplitBehaviors(t *testing.T) {
	p := &pattern{lit: "-"}
	for b, want := range map[behavior][]string{
		isolated:   {"the", "-", "final", "-", "-", "countdown"},
		removed:    {"the", "final", "countdown"},
		mergedPrev: {"the-", "final-", "-", "countdown"},
		mergedNext: {"the", "-final", "-", "-countdown"},
		contiguous: {"the", "-", "final", "--", "countdown"},
	} {
		got := splitPre{p: p, behavior: b}.preTokenize([]string{"the-final--countdown"}, true)
		if !slices.Equal(got, want) {
			t.Errorf("behavior %d: %q; want %q", b, got, want)
		}
	}
}

func TestDigitsAndGPT2Regex(t *testing.T) {
	if got := (digitsPre{false}).preTokenize([]string{"abc123d4"}, true); !slices.Equal(got, []string{"abc", "123", "d", "4"}) {
		t.Errorf("Digits = %q", got)
	}
	if got := (digitsPre{true}).preTokenize([]string{"a12"}, true); !slices.Equal(got, []string{"a", "1", "2"}) {
		t.Errorf("Digits individual = %q", got)
	}
	pt, err := parsePreTokenizer("t", "p", []byte(`{"type":"ByteLevel","add_prefix_space":false}`))
	if err != nil {
		t.Fatal(err)
	}
	got := pt.preTokenize([]string{"Hello world's  x"}, true)
	if want := []string{"Hello", "Ġworld", "'s", "Ġ", "Ġx"}; !slices.Equal(got, want) {
		t.Errorf("ByteLevel = %q; want %q", got, want)
	}
}

func TestRepairUTF8(t *testing.T) {
	for in, want := range map[string]string{
		"a\x80b":       "a\uFFFDb",
		"\xe2\x82A":    "\uFFFDA", // one U+FFFD for the maximal subpart, as WHATWG
		"\xed\xa0\x80": "\uFFFD\uFFFD\uFFFD",
		"\xf0\x9f\x98": "\uFFFD",
		"\xc0\xaf":     "\uFFFD\uFFFD",
		"ok é 😀":       "ok é 😀",
	} {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q; want %q", in, got, want)
		}
	}
	out, rest := repairUTF8(nil, []byte("x\xf0\x9f"), false)
	if string(out) != "x" || string(rest) != "\xf0\x9f" {
		t.Errorf("streaming repair = %q, rest %q", out, rest)
	}
}

func TestMalformed(t *testing.T) {
	for _, tc := range []struct{ js, path string }{
		{`{`, "$"},
		{`{"added_tokens":[]}`, "model"},
		{`{"model":{"type":"BPE"}}`, "model.vocab"},
		{`{"model":{"vocab":{"a":-1}}}`, "model.vocab"},
		{`{"model":{"vocab":{"a":0},"merges":["a b","ab"]}}`, "model.merges[1]"},
		{`{"model":{"vocab":{"a":0},"merges":[["a"]]}}`, "model.merges[0]"},
		{`{"model":{"vocab":{"a":0},"unk_token":"<unk>"}}`, "model.unk_token"},
		{`{"model":{"vocab":{}},"pre_tokenizer":{"type":"Split","pattern":{"Regex":"("},"behavior":"Isolated"}}`, "pre_tokenizer.pattern.Regex"},
		{`{"model":{"vocab":{}},"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"String":"x"},"behavior":"Sideways"}]}}`, "pre_tokenizer.pretokenizers[0].behavior"},
		{`{"model":{"vocab":{}},"added_tokens":[{"id":1,"content":""}]}`, "added_tokens[0].content"},
		{`{"model":{"vocab":{}},"decoder":{"type":"Strip","content":"ab"}}`, "decoder.content"},
		{`{"model":{"vocab":{}},"normalizer":{"type":"Replace","pattern":{}}}`, "normalizer.pattern"},
	} {
		_, err := Parse([]byte(tc.js))
		if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "tokenizer.json: "+tc.path+":") {
			t.Errorf("Parse(%s) = %v; want ErrFormat at %s", tc.js, err, tc.path)
		}
	}
	_, err := Parse([]byte(`{"model":{"type":"WordPiece","vocab":{}}}`))
	if !errors.Is(err, ErrUnsupported) {
		t.Errorf("WordPiece: %v; want ErrUnsupported", err)
	}
	if _, err := Load(t.TempDir()); err == nil {
		t.Error("Load of an empty dir succeeded")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(tinyByteLevel(`["a b","ab c"]`, `{"id":20,"content":"<m>","lstrip":true}`)))
	f.Add([]byte(mixtralLike()))
	f.Add([]byte(`{"model":{"vocab":{"a":0},"merges":[["a","a"]]},"decoder":{"type":"Strip","content":" ","start":1}}`))
	f.Add([]byte(`{"model":{"vocab":{}},"pre_tokenizer":{"type":"Split","pattern":{"Regex":"\\s+(?!\\S)|\\p{L}+"},"behavior":"Contiguous","invert":true}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := Parse(data)
		if err != nil {
			if strings.Contains(err.Error(), "internal error") {
				t.Fatalf("parser panicked: %v", err)
			}
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error wraps neither sentinel: %v", err)
			}
			return
		}
		ids, err := tok.Encode("ab c <m> hé\xff😀  x", true)
		if err != nil {
			return // e.g. no unk_token for an unknown character
		}
		s, err := tok.Decode(ids, false)
		if err == nil && !utf8.ValidString(s) {
			t.Fatalf("Decode returned invalid UTF-8 %q", s)
		}
	})
}

func TestSingleWordAndFuseUnk(t *testing.T) {
	tok := mustParse(t, `{"added_tokens":[{"id":9,"content":"ab","single_word":true}],
		"model":{"type":"BPE","unk_token":"<unk>","fuse_unk":true,"vocab":{"<unk>":0,"a":1,"b":2," ":3},"merges":[]}}`)
	for in, want := range map[string][]int32{
		"ab":    {9},
		"a ab":  {1, 3, 9},
		"xab":   {0, 1, 2}, // glued to a word character: not the added token
		"xyzab": {0, 1, 2}, // three unknown characters fuse into one unk
	} {
		got, err := tok.Encode(in, false)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("Encode(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}
