package chat

import (
	"os"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary template text and config bytes through the
// parsing half of Load. Parse recovers engine panics into errors, so what
// this catches is a panic in our own config handling, a nil Template without
// an error, or an error that does not name its source. Rendering is left
// out on purpose: a template can legitimately loop for ever or recurse
// without bound (`{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}`), which
// no recover can turn into an error.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"qwen3.jinja", "deepseek_v3.jinja", "reject_fixture.jinja"} {
		src, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(src), []byte(`{"chat_template": "x", "eos_token": {"__type": "AddedToken", "content": "</s>"}}`), []byte(`{"eos_token_id": [1, 2]}`))
	}
	f.Add("{{ messages | }}", []byte(`{"chat_template": [{"name": "default", "template": "y"}]}`), []byte(`{"eos_token_id": 1}`))
	f.Add("{% for m in messages %}", []byte(`{"bos_token": 5}`), []byte(`{"eos_token_id": "1"}`))
	f.Add("{{ ((((", []byte(`[`), []byte(`{"eos_token_id": [1.5]}`))
	f.Fuzz(func(t *testing.T, src string, cfg, gen []byte) {
		tm, err := Parse(src, "<s>", "</s>")
		if (tm == nil) == (err == nil) {
			t.Fatalf("Parse returned %v, %v", tm, err)
		}
		if err != nil && !strings.Contains(err.Error(), "<string>") {
			t.Fatalf("error does not name the source: %v", err)
		}
		c, err := parseTokenizerConfig("tc.json", cfg)
		if err != nil && !strings.Contains(err.Error(), "tc.json") {
			t.Fatalf("error does not name the file: %v", err)
		}
		if err == nil && c.hasTemplate {
			if _, err := parse("tc.json", c.template, c.bos, c.eos); err != nil && !strings.Contains(err.Error(), "tc.json") {
				t.Fatalf("error does not name the file: %v", err)
			}
		}
		if _, err := parseStopIDs("gc.json", gen); err != nil && !strings.Contains(err.Error(), "gc.json") {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}
