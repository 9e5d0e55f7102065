package chat

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRenderVariables(t *testing.T) {
	tm, err := Parse("{{ bos_token }}|{{ eos_token }}|{{ tools is none }}|{{ add_generation_prompt }}|{{ enable_thinking is defined }}|{{ messages|length }}", "<s>", "</s>")
	if err != nil {
		t.Fatal(err)
	}
	out, err := tm.Render(hello, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := "<s>|</s>|True|True|False|1"; out != want {
		t.Fatalf("got %q want %q", out, want)
	}
	out, err = tm.Render(hello, false, map[string]any{"enable_thinking": false, "eos_token": "<x>"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "<s>|<x>|True|False|True|1"; out != want {
		t.Fatalf("with extra: got %q want %q", out, want)
	}
}

// Unset special tokens must be undefined, as in transformers, not "" (a
// template may test `bos_token is defined`).
func TestUnsetTokensUndefined(t *testing.T) {
	tm, err := Parse("{{ bos_token is defined }}{{ eos_token is defined }}", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if out := mustRender(t, tm, nil, false); out != "FalseFalse" {
		t.Fatalf("got %q", out)
	}
}

func TestReasoningContentOnlyWhenSet(t *testing.T) {
	tm, err := Parse("{% for m in messages %}{{ m.reasoning_content is defined }}{% endfor %}", "", "")
	if err != nil {
		t.Fatal(err)
	}
	out := mustRender(t, tm, []Message{{Role: "assistant"}, {Role: "assistant", ReasoningContent: "r"}}, false)
	if out != "FalseTrue" {
		t.Fatalf("got %q", out)
	}
}

func TestRenderExtraErrors(t *testing.T) {
	tm, err := Parse("x", "", "")
	if err != nil {
		t.Fatal(err)
	}
	for key, v := range map[string]any{"messages": nil, "add_generation_prompt": true, "odd": int32(1)} {
		if _, err := tm.Render(nil, false, map[string]any{key: v}); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("extra %q: err = %v", key, err)
		}
	}
	var nilT *Template
	if _, err := nilT.Render(nil, false, nil); err == nil {
		t.Error("nil Template rendered")
	}
}

func TestRaiseException(t *testing.T) {
	tm, err := Parse("a{{ raise_exception('Only user and assistant roles are supported!') }}b", "", "")
	if err != nil {
		t.Fatal(err)
	}
	out, err := tm.Render(hello, false, nil)
	var ex *ExceptionError
	if !errors.As(err, &ex) || ex.Message != "Only user and assistant roles are supported!" {
		t.Fatalf("got %q, %v", out, err)
	}
	if !strings.Contains(err.Error(), "<string>") {
		t.Fatalf("error %q does not name the template", err)
	}
	// Other failures are not template rejections.
	tm, err = Parse("{{ none.startswith('a') }}", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tm.Render(nil, false, nil); err == nil || errors.As(err, &ex) {
		t.Fatalf("engine error = %v, want a non-ExceptionError", err)
	}
}

func TestStrftimeNow(t *testing.T) {
	tm, err := Parse(`{{ strftime_now("%d %b %Y") }}|{{ strftime_now("%A %B %e %j %I:%M:%S %p %y %% %Q") }}`, "", "")
	if err != nil {
		t.Fatal(err)
	}
	tm.now = func() time.Time { return time.Date(2026, 7, 4, 15, 4, 5, 0, time.UTC) }
	// Expected strings are Python's datetime.strftime output for that time.
	want := "04 Jul 2026|Saturday July  4 185 03:04:05 PM 26 % %Q"
	if out := mustRender(t, tm, nil, false); out != want {
		t.Fatalf("got %q want %q", out, want)
	}
}

// TestEngineGaps pins where ardanlabs/jinja v1.8.0 differs from Python
// Jinja2 + transformers. None of these is reached by the Qwen3/DeepSeek-V3
// templates as Render calls them (tools is None, contents are strings); if
// one starts failing, the engine changed and the doc comment on Render must
// be updated (and a template relying on it may now match Python).
func TestEngineGaps(t *testing.T) {
	for _, tc := range []struct{ src, engine, python string }{
		{"{{ 1.0|tojson }}", "1", "1.0"},
		{"{{ {'b': 1, 'a': 2}|tojson(indent=1) }}", "{\n \"a\": 2,\n \"b\": 1\n}", "{\n \"b\": 1,\n \"a\": 2\n}"},
		{"{{ '\u2028'|tojson }}", `"\u2028"`, "\"\u2028\""},
		// Python raises UndefinedError for these; the engine is lenient.
		{"{{ messages[0].role }}", "", "<UndefinedError>"},
		{"{{ 'a' + 1 }}", "a1", "<TypeError>"},
	} {
		tm, err := Parse(tc.src, "", "")
		if err != nil {
			t.Fatalf("%s: %v", tc.src, err)
		}
		out, err := tm.Render(nil, false, nil)
		if err != nil || out != tc.engine {
			t.Errorf("%s: got %q, %v; pinned engine output %q (Python: %q)", tc.src, out, err, tc.engine, tc.python)
		}
	}
}
