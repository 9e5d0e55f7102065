package chat

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeDir creates a model directory holding files (name -> content).
func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func mustRender(t *testing.T, tm *Template, msgs []Message, agp bool) string {
	t.Helper()
	out, err := tm.Render(msgs, agp, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var hello = []Message{{Role: "user", Content: "hi"}}

func TestLoadDeepSeekStyleConfig(t *testing.T) {
	dir := writeDir(t, map[string]string{
		TokenizerConfigFile: `{
			"bos_token": {"__type": "AddedToken", "content": "<B>", "lstrip": false},
			"eos_token": {"__type": "AddedToken", "content": "<E>"},
			"chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}"
		}`,
		GenerationConfigFile: `{"bos_token_id": 0, "eos_token_id": 1}`,
	})
	tm, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if tm.BOS != "<B>" || tm.EOS != "<E>" {
		t.Fatalf("bos/eos = %q/%q", tm.BOS, tm.EOS)
	}
	if !slices.Equal(tm.StopIDs, []int32{1}) {
		t.Fatalf("StopIDs = %v", tm.StopIDs)
	}
	if got := mustRender(t, tm, hello, false); got != "<B>hi<E>" {
		t.Fatalf("render = %q", got)
	}
	if !strings.HasSuffix(tm.Origin, TokenizerConfigFile) {
		t.Fatalf("Origin = %q", tm.Origin)
	}
}

// Qwen3's generation_config lists two eos ids; config.json adds one of them
// again plus another, and the union keeps generation_config's order.
func TestLoadEOSListUnion(t *testing.T) {
	dir := writeDir(t, map[string]string{
		TokenizerConfigFile:  `{"bos_token": null, "eos_token": "<|im_end|>", "chat_template": "x"}`,
		GenerationConfigFile: `{"eos_token_id": [151645, 151643]}`,
		ModelConfigFile:      `{"eos_token_id": 151643, "model_type": "qwen3_moe"}`,
	})
	tm, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tm.StopIDs, []int32{151645, 151643}) {
		t.Fatalf("StopIDs = %v", tm.StopIDs)
	}
	if tm.BOS != "" {
		t.Fatalf("null bos_token gave %q", tm.BOS)
	}
}

func TestParseStopIDs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int32
		err  string
	}{
		{`{}`, nil, ""},
		{`{"eos_token_id": null}`, nil, ""},
		{`{"eos_token_id": 2}`, []int32{2}, ""},
		{`{"eos_token_id": [3, 4, 3]}`, []int32{3, 4}, ""},
		{`{"eos_token_id": []}`, []int32{}, ""},
		{`{"eos_token_id": "2"}`, nil, "found a string"},
		{`{"eos_token_id": [1, "2"]}`, nil, "found a string"},
		{`{"eos_token_id": 1.5}`, nil, "1.5 is not a token id"},
		{`{"eos_token_id": -1}`, nil, "-1 is not a token id"},
		{`{"eos_token_id": 4294967296}`, nil, "is not a token id"},
		{`{"eos_token_id": {"a": 1}}`, nil, "found an object"},
		{`[1]`, nil, "invalid JSON"},
		{`null`, nil, "expected a JSON object"},
		{`{"eos_token_id": 1`, nil, "invalid JSON"},
	} {
		got, err := parseStopIDs("gen.json", []byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "gen.json") {
				t.Errorf("%s: err = %v, want one naming gen.json and containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// chat_template.jinja wins over the config's key, and the tokens still come
// from tokenizer_config.json.
func TestLoadPrefersJinjaFile(t *testing.T) {
	dir := writeDir(t, map[string]string{
		TokenizerConfigFile: `{"eos_token": "</s>", "chat_template": "from-config"}`,
		TemplateFile:        "from-file{{ eos_token }}",
	})
	tm, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := mustRender(t, tm, hello, false); got != "from-file</s>" {
		t.Fatalf("render = %q", got)
	}
}

func TestLoadNamedTemplateList(t *testing.T) {
	dir := writeDir(t, map[string]string{
		TokenizerConfigFile: `{"chat_template": [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "plain"}]}`,
	})
	tm, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := mustRender(t, tm, hello, false); got != "plain" {
		t.Fatalf("render = %q", got)
	}
}

func TestLoadErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		files map[string]string
		want  []string // substrings of the error
	}{
		"empty dir":           {nil, []string{"no chat_template.jinja or tokenizer_config.json"}},
		"no chat_template":    {map[string]string{TokenizerConfigFile: `{"eos_token": "x"}`}, []string{TokenizerConfigFile, "no chat_template key"}},
		"null chat_template":  {map[string]string{TokenizerConfigFile: `{"chat_template": null}`}, []string{TokenizerConfigFile, "no chat_template key"}},
		"bad json":            {map[string]string{TokenizerConfigFile: `{"chat_template": `}, []string{TokenizerConfigFile, "invalid JSON"}},
		"template not string": {map[string]string{TokenizerConfigFile: `{"chat_template": 7}`}, []string{TokenizerConfigFile, "chat_template: expected a string or a list", "got a number"}},
		"no default":          {map[string]string{TokenizerConfigFile: `{"chat_template": [{"name": "rag", "template": "x"}]}`}, []string{TokenizerConfigFile, `no template named "default"`, "rag"}},
		"list entry missing":  {map[string]string{TokenizerConfigFile: `{"chat_template": [{"name": "default"}]}`}, []string{"chat_template[0]"}},
		"bad eos token":       {map[string]string{TokenizerConfigFile: `{"eos_token": {"__type": "AddedToken"}, "chat_template": "x"}`}, []string{TokenizerConfigFile, "eos_token", "AddedToken"}},
		"bad bos token":       {map[string]string{TokenizerConfigFile: `{"bos_token": 5, "chat_template": "x"}`}, []string{"bos_token", "got a number"}},
		"empty template":      {map[string]string{TokenizerConfigFile: `{"chat_template": "  "}`}, []string{TokenizerConfigFile, "template is empty"}},
		"bad generation cfg":  {map[string]string{TokenizerConfigFile: `{"chat_template": "x"}`, GenerationConfigFile: `{"eos_token_id": "1"}`}, []string{GenerationConfigFile, "eos_token_id"}},
		"bad model cfg":       {map[string]string{TokenizerConfigFile: `{"chat_template": "x"}`, ModelConfigFile: `{`}, []string{ModelConfigFile, "invalid JSON"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Load(writeDir(t, tc.files))
			if err == nil {
				t.Fatal("Load succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// A syntax error must name the file and, where the engine knows it, the line,
// so a broken model directory can be fixed without bisecting the template.
func TestLoadMalformedTemplate(t *testing.T) {
	for name, tc := range map[string]struct {
		src  string
		want []string
	}{
		"unclosed tag":  {"line one\nline two {{ messages", []string{"syntax error", "unclosed", "line 2"}},
		"unknown stmt":  {"a\nb\n{% frobnicate %}", []string{"syntax error", "line 3", "frobnicate"}},
		"unclosed for":  {"{% for m in messages %}{{ m.content }}", []string{"syntax error", "unclosed for"}},
		"bad for":       {"\n{% for in messages %}{% endfor %}", []string{"syntax error", "line 2"}},
		"bad set":       {"{% set x %}", []string{"syntax error", "set"}},
		"stray endif":   {"x{% endif %}", []string{"syntax error"}},
		"dangling pipe": {"{{ messages | }}", []string{"syntax error"}},
	} {
		t.Run(name, func(t *testing.T) {
			dir := writeDir(t, map[string]string{TemplateFile: tc.src})
			_, err := Load(dir)
			if err == nil {
				t.Fatal("Load accepted a malformed template")
			}
			want := append([]string{filepath.Join(dir, TemplateFile)}, tc.want...)
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
