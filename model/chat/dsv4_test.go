package chat

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The expected strings below are worked out by hand from encoding_dsv4.py
// (render_message, merge_tool_messages, _drop_thinking_messages, encode_messages). The
// release's own gold files (encoding/tests/test_output_{1..4}.txt) and expectations
// another project rendered with the Python encoder are checked in dsv4_gold_test.go.

const (
	bos, eos  = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
	usr, asst = "<｜User｜>", "<｜Assistant｜>"
)

func TestEncodeChatConversations(t *testing.T) {
	weather := json.RawMessage(`{"type":"function","function":{"name":"get_weather","description":"Get weather","parameters":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}}}`)
	schema := `{"name": "get_weather", "description": "Get weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}`
	for _, c := range []struct {
		name string
		msgs []DSV4Message
		o    DSV4Options
		want string
	}{
		{"chat", []DSV4Message{{Role: "system", Content: "S"}, {Role: "user", Content: "hi"}}, DSV4Options{},
			bos + "S" + usr + "hi" + asst + "</think>"},
		{"thinking drops earlier reasoning", []DSV4Message{{Role: "user", Content: "hello"},
			{Role: "assistant", ReasoningContent: "The user said hello", Content: "Hi!"}, {Role: "user", Content: "capital of France?"}},
			DSV4Options{Thinking: true},
			bos + usr + "hello" + asst + "</think>Hi!" + eos + usr + "capital of France?" + asst + "<think>"},
		{"thinking keeps reasoning", []DSV4Message{{Role: "user", Content: "hello"},
			{Role: "assistant", ReasoningContent: "R1", Content: "Hi!"}, {Role: "user", Content: "q"}},
			DSV4Options{Thinking: true, KeepThinking: true},
			bos + usr + "hello" + asst + "<think>R1</think>Hi!" + eos + usr + "q" + asst + "<think>"},
		{"tools keep reasoning; DSML calls; tool result merged", []DSV4Message{
			{Role: "system", Content: "S", Tools: []json.RawMessage{weather}},
			{Role: "user", Content: "Weather in Beijing?"},
			{Role: "assistant", ReasoningContent: "Need tool.", ToolCalls: []DSV4ToolCall{{ID: "c1", Name: "get_weather",
				Arguments: `{"location": "Beijing", "unit": "celsius", "days": 3}`}}},
			{Role: "tool", ToolCallID: "c1", Content: "22°C"},
			{Role: "assistant", ReasoningContent: "Got it.", Content: "It is 22°C."}},
			DSV4Options{Thinking: true},
			bos + "S\n\n" + strings.Replace(toolsTemplate, "%s", schema, 1) + usr + "Weather in Beijing?" + asst + "<think>Need tool.</think>" +
				"\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n" +
				"<｜DSML｜parameter name=\"location\" string=\"true\">Beijing</｜DSML｜parameter>\n" +
				"<｜DSML｜parameter name=\"unit\" string=\"true\">celsius</｜DSML｜parameter>\n" +
				"<｜DSML｜parameter name=\"days\" string=\"false\">3</｜DSML｜parameter>\n" +
				"</｜DSML｜invoke>\n</｜DSML｜tool_calls>" + eos +
				usr + "<tool_result>22°C</tool_result>" + asst + "<think>Got it.</think>It is 22°C." + eos},
		{"action task, chat", []DSV4Message{{Role: "user", Content: "Open settings", Task: "action"}}, DSV4Options{},
			bos + usr + "Open settings" + asst + "</think><｜action｜>"},
		{"task output has no thinking", []DSV4Message{{Role: "user", Content: "Open settings", Task: "action"},
			{Role: "assistant", Content: "click"}}, DSV4Options{Thinking: true},
			bos + usr + "Open settings" + asst + "<think><｜action｜>click" + eos},
		{"query task token", []DSV4Message{{Role: "user", Content: "find", Task: "query"}}, DSV4Options{},
			bos + usr + "find<｜query｜>"},
		{"reasoning effort max", []DSV4Message{{Role: "user", Content: "hi"}}, DSV4Options{Thinking: true, ReasoningEffort: "max"},
			bos + reasoningEffortMax + usr + "hi" + asst + "<think>"},
		{"effort high renders nothing", []DSV4Message{{Role: "user", Content: "hi"}}, DSV4Options{Thinking: true, ReasoningEffort: "high", NoBOS: true},
			usr + "hi" + asst + "<think>"},
		{"developer dropped before the last user; reminder", []DSV4Message{{Role: "developer", Content: "D"},
			{Role: "assistant", ReasoningContent: "x", Content: "a"}, {Role: "user", Content: "u"}, {Role: "latest_reminder", Content: "r"}},
			DSV4Options{Thinking: true},
			bos + "a" + eos + usr + "u" + asst + "<think><｜latest_reminder｜>r"},
		{"consecutive users merge; results in call order", []DSV4Message{{Role: "user", Content: "a"}, {Role: "user", Content: "b"},
			{Role: "assistant", ToolCalls: []DSV4ToolCall{{ID: "x", Name: "f", Arguments: `{}`}, {ID: "y", Name: "g", Arguments: `{}`}}},
			{Role: "tool", ToolCallID: "y", Content: "Y"}, {Role: "tool", ToolCallID: "x", Content: "X"}},
			DSV4Options{},
			bos + usr + "a\n\nb" + asst + "</think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n\n</｜DSML｜invoke>\n" +
				"<｜DSML｜invoke name=\"g\">\n\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>" + eos +
				usr + "<tool_result>X</tool_result>\n\n<tool_result>Y</tool_result>" + asst + "</think>"},
		{"open assistant turn", []DSV4Message{{Role: "user", Content: "hi"}, {Role: "assistant", Content: "partial", NoEOS: true}},
			DSV4Options{}, bos + usr + "hi" + asst + "</think>partial"},
		{"empty response_format adds nothing", []DSV4Message{{Role: "system", Content: "S", ResponseFormat: json.RawMessage(` {} `)},
			{Role: "developer", Content: "D", ResponseFormat: json.RawMessage(`null`)}}, DSV4Options{},
			bos + "S" + usr + "D" + asst + "</think>"},
	} {
		got, err := EncodeDSV4(c.msgs, c.o)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}

func TestEncodeChatRejects(t *testing.T) {
	for _, c := range []struct {
		msgs []DSV4Message
		o    DSV4Options
	}{
		{[]DSV4Message{{Role: "robot", Content: "x"}}, DSV4Options{}},
		{[]DSV4Message{{Role: "user", Content: "x"}}, DSV4Options{ReasoningEffort: "low"}},
		{[]DSV4Message{{Role: "user", Content: "x", Task: "dance"}}, DSV4Options{}},
		{[]DSV4Message{{Role: "developer"}}, DSV4Options{}},
		{[]DSV4Message{{Role: "assistant", ToolCalls: []DSV4ToolCall{{Name: "f", Arguments: `[1, 2]`}}}}, DSV4Options{}},
		{[]DSV4Message{{Role: "system", Tools: []json.RawMessage{json.RawMessage(`{"type":"function"}`)}}}, DSV4Options{}},
	} {
		if _, err := EncodeDSV4(c.msgs, c.o); !errors.Is(err, ErrDSV4) {
			t.Errorf("%+v: err %v, want ErrDSV4", c.msgs, err)
		}
	}
}

func TestPyTruthy(t *testing.T) {
	for _, c := range []struct {
		raw  string
		want bool
	}{
		{"", false}, {"null", false}, {"false", false}, {"true", true}, {`""`, false}, {`"x"`, true},
		{"0", false}, {"-0.0", false}, {"0e5", false}, {"1e400", true}, {"2", true},
		{"{}", false}, {" { } ", false}, {`{"a": null}`, true}, {"[]", false}, {"[0]", true},
		{"{not json", true}, // left to pyJSON to refuse
	} {
		if got := pyTruthy(json.RawMessage(c.raw)); got != c.want {
			t.Errorf("pyTruthy(%q) = %v, want %v", c.raw, got, c.want)
		}
	}
}

func TestDSMLArgumentsNotJSON(t *testing.T) {
	got, err := dsmlArguments("ls -la")
	if want := `<｜DSML｜parameter name="arguments" string="true">ls -la</｜DSML｜parameter>`; err != nil || got != want {
		t.Errorf("got %q, %v; want %q", got, err, want)
	}
	got, _ = dsmlArguments(`{"a": {"z": 1, "b": [1.5, "s"]}, "a2": null}`)
	if want := `<｜DSML｜parameter name="a" string="false">{"z": 1, "b": [1.5, "s"]}</｜DSML｜parameter>` + "\n" +
		`<｜DSML｜parameter name="a2" string="false">null</｜DSML｜parameter>`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestPyJSON(t *testing.T) {
	for _, c := range [][2]string{
		{`{"b":1,"a":["x",true,null,{"k":"é\n\"/\u0001"}]}`, `{"b": 1, "a": ["x", true, null, {"k": "é\n\"/\u0001"}]}`},
		{`{"a":1,"a":2,"c":3}`, `{"a": 2, "c": 3}`}, // Python dicts keep the first position, last value
		{`[]`, `[]`}, {`{}`, `{}`}, {`"\u2028<>&"`, "\"\u2028<>&\""},
	} {
		got, err := pyJSON([]byte(c[0]))
		if err != nil || got != c[1] {
			t.Errorf("pyJSON(%s) = %s, %v; want %s", c[0], got, err, c[1])
		}
	}
	// Python: json.dumps(json.loads(lit)) for each literal.
	for _, c := range [][2]string{
		{"1", "1"}, {"-0", "0"}, {"123456789012345678901", "123456789012345678901"}, {"1.0", "1.0"}, {"-2.50", "-2.5"},
		{"1e5", "100000.0"}, {"1.5e-5", "1.5e-05"}, {"0.0001", "0.0001"}, {"0.00001", "1e-05"}, {"1e16", "1e+16"},
		{"1234567.0", "1234567.0"}, {"9999999999999998.0", "9999999999999998.0"}, {"1e22", "1e+22"}, {"3.14159", "3.14159"},
		{"-0.0", "-0.0"}, {"2.5e-300", "2.5e-300"}, {"1.7976931348623157e308", "1.7976931348623157e+308"},
	} {
		got, err := pyNumber(c[0])
		if err != nil || got != c[1] {
			t.Errorf("pyNumber(%s) = %s, %v; want %s", c[0], got, err, c[1])
		}
	}
}

// A deepseek_v4 checkpoint without a Jinja template renders with the built-in encoder,
// and keeps its eos ids; other models without one are still refused, and a template in
// the directory wins over the built-in encoder.
func TestLoadDSV4(t *testing.T) {
	write := func(dir, name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	write(dir, ModelConfigFile, `{"model_type": "deepseek_v4", "eos_token_id": 1}`)
	write(dir, TokenizerConfigFile, `{"bos_token": "<｜begin▁of▁sentence｜>"}`)
	tmpl, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	msgs := []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"},
		{Role: "assistant", Content: "Hello.", ReasoningContent: "greet"}, {Role: "user", Content: "Bye"}}
	for _, thinking := range []bool{false, true} {
		got, err := tmpl.Render(msgs, true, map[string]any{"thinking": thinking})
		if err != nil {
			t.Fatal(err)
		}
		want, err := EncodeDSV4([]DSV4Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"},
			{Role: "assistant", Content: "Hello.", ReasoningContent: "greet"}, {Role: "user", Content: "Bye"}}, DSV4Options{Thinking: thinking})
		if err != nil {
			t.Fatal(err)
		}
		if got != want || !strings.HasPrefix(got, bos) || !strings.HasSuffix(got, asst+map[bool]string{false: "</think>", true: "<think>"}[thinking]) {
			t.Errorf("thinking %v: %q, want %q", thinking, got, want)
		}
	}
	if len(tmpl.StopIDs) != 1 || tmpl.StopIDs[0] != 1 {
		t.Errorf("stop ids %v, want [1]", tmpl.StopIDs)
	}

	write(dir, ModelConfigFile, `{"model_type": "deepseek_v3"}`)
	if _, err := Load(dir); err == nil {
		t.Error("a deepseek_v3 directory without a template loaded")
	}
	write(dir, ModelConfigFile, `{"model_type": "deepseek_v4"}`)
	write(dir, TemplateFile, `{{ messages[0].content }}`)
	if tmpl, err := Load(dir); err != nil {
		t.Fatal(err)
	} else if got, _ := tmpl.Render(msgs, true, nil); got != "Be brief." {
		t.Errorf("with a template file: %q", got)
	}
}
