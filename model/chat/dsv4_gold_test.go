package chat

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// The release's own encoder tests (encoding/test_encoding_dsv4.py with
// encoding/tests/, copied to testdata/dsv4 with their provenance in its README)
// are the one expectation not written by whoever wrote the port, so these tests
// run them exactly as the release does and compare byte for byte.

// dsv4GoldDir holds the release's fixtures.
var dsv4GoldDir = filepath.Join("testdata", "dsv4")

// dsv4GoldSHA256 pins the fixtures to the release's bytes (sums published by a
// third party for the same revision): a fixture edited to match the encoder,
// or re-saved with a newline added, must not pass as gold.
var dsv4GoldSHA256 = map[string]string{
	"test_input_1.json": "10e0c074c977c3a80daab758af28219c6b1c2bd7f3f5cf2890c84b361cc32897",
	"test_input_2.json": "c44ae0db20fafff38a6021e8068d7ed6e28605d76cafd20be80b03398509f447",
	"test_input_3.json": "37bf8ef95e0411ea5f411be0b02fbafec7363438b6ccefddca0c52ec9aeaf69a",
	"test_input_4.json": "c45bbd0a1b7a2f75033d8db4ba74ee5b7653bd01114045a52f79d3b387663465",
	"test_output_1.txt": "9b366d9d2eac842a6e890594aac0b58648e5623717202b33497afadf03e26540",
	"test_output_2.txt": "ca66b01a1ac3a204bb032c928fb607d4877171e998a50f7f89f39fa821b75665",
	"test_output_3.txt": "b3b1cd8748b7b90d3c6be6da3f786f12e4d70be073bd445ea162dfad4dc01a64",
	"test_output_4.txt": "60e1643840ba9e4aeede450feb7b0498fa66ee24e4a939d48855ce04ec6fc375",
}

func TestDSV4GoldFixturesAreUpstream(t *testing.T) {
	for name, want := range dsv4GoldSHA256 {
		data, err := os.ReadFile(filepath.Join(dsv4GoldDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != want {
			t.Errorf("%s: sha256 %x, want %s (not the release's bytes)", name, sum, want)
		}
	}
}

// dsv4GoldMessage is one message of a fixture, in the release's (OpenAI) shape.
// Unknown keys are refused, so a renamed field (vllm's copies say "reasoning")
// cannot silently drop its text.
type dsv4GoldMessage struct {
	Role             string            `json:"role"`
	Content          string            `json:"content"`
	ReasoningContent string            `json:"reasoning_content"`
	ToolCalls        []dsv4GoldCall    `json:"tool_calls"`
	ToolCallID       string            `json:"tool_call_id"`
	Tools            []json.RawMessage `json:"tools"`
	ResponseFormat   json.RawMessage   `json:"response_format"`
	Task             string            `json:"task"`
	WoEOS            bool              `json:"wo_eos"`
	Mask             json.RawMessage   `json:"mask"` // a training loss mask: the encoder never reads it
}

type dsv4GoldCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// loadDSV4Gold reads a fixture: a bare message list, or {"tools", "messages"}
// whose tools the release's test attaches to the first message.
func loadDSV4Gold(data []byte) ([]DSV4Message, error) {
	strict := func(b []byte, v any) error {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		return dec.Decode(v)
	}
	var msgs []dsv4GoldMessage
	if b := bytes.TrimSpace(data); len(b) > 0 && b[0] == '{' {
		var wrapped struct {
			Tools    []json.RawMessage `json:"tools"`
			Messages []dsv4GoldMessage `json:"messages"`
		}
		if err := strict(b, &wrapped); err != nil {
			return nil, err
		}
		if len(wrapped.Messages) == 0 {
			return nil, fmt.Errorf("fixture has no messages")
		}
		msgs = wrapped.Messages
		msgs[0].Tools = wrapped.Tools
	} else if err := strict(b, &msgs); err != nil {
		return nil, err
	}
	out := make([]DSV4Message, len(msgs))
	for i, m := range msgs {
		out[i] = DSV4Message{Role: m.Role, Content: m.Content, ReasoningContent: m.ReasoningContent,
			ToolCallID: m.ToolCallID, Tools: m.Tools, ResponseFormat: m.ResponseFormat, Task: m.Task, NoEOS: m.WoEOS}
		for _, c := range m.ToolCalls {
			out[i].ToolCalls = append(out[i].ToolCalls, DSV4ToolCall{ID: c.ID, Name: c.Function.Name, Arguments: c.Function.Arguments})
		}
	}
	return out, nil
}

// firstDiff describes where got and want part, with some text either side.
func firstDiff(got, want string) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	around := func(s string) string {
		lo, hi := max(i-40, 0), min(i+40, len(s))
		return fmt.Sprintf("%q", s[lo:hi])
	}
	return fmt.Sprintf("first difference at byte %d (got %d bytes, want %d):\n got  …%s…\n want …%s…",
		i, len(got), len(want), around(got), around(want))
}

// TestEncodeDSV4Gold is test_encoding_dsv4.py's four cases.
func TestEncodeDSV4Gold(t *testing.T) {
	for _, c := range []struct {
		n    int
		o    DSV4Options
		what string
	}{
		{1, DSV4Options{Thinking: true}, "tools on the system message, a DSML call, its result merged into a user turn"},
		{2, DSV4Options{Thinking: true}, "no tools: the earlier turn's reasoning is dropped"},
		{3, DSV4Options{Thinking: true}, "latest_reminder, a developer turn with tools, a call without an id"},
		{4, DSV4Options{}, "chat mode, latest_reminder, the action task; mask is ignored"},
	} {
		t.Run(fmt.Sprintf("case%d", c.n), func(t *testing.T) {
			in, err := os.ReadFile(filepath.Join(dsv4GoldDir, fmt.Sprintf("test_input_%d.json", c.n)))
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join(dsv4GoldDir, fmt.Sprintf("test_output_%d.txt", c.n)))
			if err != nil {
				t.Fatal(err)
			}
			msgs, err := loadDSV4Gold(in)
			if err != nil {
				t.Fatalf("test_input_%d.json: %v", c.n, err)
			}
			got, err := EncodeDSV4(msgs, c.o)
			if err != nil {
				t.Fatalf("%s: %v", c.what, err)
			}
			if got != string(want) {
				t.Errorf("%s: %s", c.what, firstDiff(got, string(want)))
			}
		})
	}
}

// TestEncodeDSV4Independent checks expectations another project produced by
// running the release's encoding_dsv4.py (revision 60d8d707…) over its own
// conversations: the Swift tests of github swissarmyhammer/mlx-swift-lm (MIT,
// Copyright © 2026 Osaurus AI), Tests/MLXLMTests/DeepSeekV4ToolEncodingTests.swift
// @4cf251415a12b2528ac1020974e4881aac3f4cc9 and DeepSeekV4ChatEncoderTests.swift
// @1782ce803e13a43a4f5a1d1d6da617f70ba67a02; each row names its Swift test. They
// reach what the four gold cases do not: call-order sorting, non-string and
// non-JSON arguments, response_format, reasoning effort, the other tasks, wo_eos.
// That file's tests of its own deviations (think-end already in the content, the
// blank line before a call block) are not Python's behaviour and are left out.
func TestEncodeDSV4Independent(t *testing.T) {
	const sys = "You are a helpful assistant."
	const effortMax = "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n" +
		"You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial scenarios.\n" +
		"Explicitly write out your entire deliberation process, documenting every intermediate step, considered alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n"
	call := func(id, name, args string) DSV4ToolCall { return DSV4ToolCall{ID: id, Name: name, Arguments: args} }
	block := func(invokes ...string) string {
		s := "\n\n<｜DSML｜tool_calls>"
		for _, inv := range invokes {
			s += "\n" + inv
		}
		return s + "\n</｜DSML｜tool_calls>"
	}
	nInvoke := func(name, n string) string {
		return "<｜DSML｜invoke name=\"" + name + "\">\n<｜DSML｜parameter name=\"n\" string=\"true\">" + n +
			"</｜DSML｜parameter>\n</｜DSML｜invoke>"
	}
	three := []DSV4Message{{Role: "system", Content: sys}, {Role: "user", Content: "One"},
		{Role: "assistant", Content: "First answer.", ReasoningContent: "First reasoning."}, {Role: "user", Content: "Two"},
		{Role: "assistant", Content: "Second answer.", ReasoningContent: "Second reasoning."}, {Role: "user", Content: "Three"}}
	hello := []DSV4Message{{Role: "system", Content: sys}, {Role: "user", Content: "Hello"}}
	thinking := DSV4Options{Thinking: true}
	for _, c := range []struct {
		swift string
		msgs  []DSV4Message
		o     DSV4Options
		want  string
	}{
		{"testToolResultsSortByCallOrderAndNotByReturnOrder", []DSV4Message{{Role: "system", Content: "S"}, {Role: "user", Content: "Q"},
			{Role: "assistant", ReasoningContent: "R", ToolCalls: []DSV4ToolCall{call("call_A", "alpha", `{"n": "1"}`), call("call_B", "beta", `{"n": "2"}`)}},
			{Role: "tool", Content: "B result", ToolCallID: "call_B"}, {Role: "tool", Content: "A result", ToolCallID: "call_A"}}, thinking,
			bos + "S" + usr + "Q" + asst + "</think>" + block(nInvoke("alpha", "1"), nInvoke("beta", "2")) + eos +
				usr + "<tool_result>A result</tool_result>\n\n<tool_result>B result</tool_result>" + asst + "<think>"},
		{"testToolsAbsentDropsTheReasoningOfEveryEarlierTurn", []DSV4Message{{Role: "system", Content: "S"}, {Role: "user", Content: "One"},
			{Role: "assistant", Content: "First answer.", ReasoningContent: "First reasoning."}, {Role: "user", Content: "Two"}}, thinking,
			bos + "S" + usr + "One" + asst + "</think>First answer." + eos + usr + "Two" + asst + "<think>"},
		{"testNonStringArgumentsRenderAsJSONWithStringFalse", []DSV4Message{{Role: "user", Content: "Q"},
			{Role: "assistant", ReasoningContent: "R", ToolCalls: []DSV4ToolCall{call("call_1", "mixed",
				`{"name": "a/b", "count": 7, "flag": false, "list": [1, "two"], "nested": {"k": -1}, "nothing": null}`)}}}, thinking,
			bos + usr + "Q" + asst + "<think>R</think>" + block("<｜DSML｜invoke name=\"mixed\">\n"+
				"<｜DSML｜parameter name=\"name\" string=\"true\">a/b</｜DSML｜parameter>\n"+
				"<｜DSML｜parameter name=\"count\" string=\"false\">7</｜DSML｜parameter>\n"+
				"<｜DSML｜parameter name=\"flag\" string=\"false\">false</｜DSML｜parameter>\n"+
				"<｜DSML｜parameter name=\"list\" string=\"false\">[1, \"two\"]</｜DSML｜parameter>\n"+
				"<｜DSML｜parameter name=\"nested\" string=\"false\">{\"k\": -1}</｜DSML｜parameter>\n"+
				"<｜DSML｜parameter name=\"nothing\" string=\"false\">null</｜DSML｜parameter>\n</｜DSML｜invoke>") + eos},
		{"testArgumentsThatAreNotJSONRenderAsOneStringParameter", []DSV4Message{{Role: "user", Content: "Q"},
			{Role: "assistant", ReasoningContent: "R", ToolCalls: []DSV4ToolCall{call("call_1", "broken", "not json")}}}, thinking,
			bos + usr + "Q" + asst + "<think>R</think>" + block("<｜DSML｜invoke name=\"broken\">\n"+
				"<｜DSML｜parameter name=\"arguments\" string=\"true\">not json</｜DSML｜parameter>\n</｜DSML｜invoke>") + eos},
		{"testTwoCallsInOneAssistantTurnRenderInTheOrderTheyWereMade", []DSV4Message{{Role: "user", Content: "Q"},
			{Role: "assistant", ReasoningContent: "R", ToolCalls: []DSV4ToolCall{call("call_1", "alpha", `{"n": "1"}`), call("call_2", "beta", `{"n": "2"}`)}}},
			thinking, bos + usr + "Q" + asst + "<think>R</think>" + block(nInvoke("alpha", "1"), nInvoke("beta", "2")) + eos},
		{"testResponseFormatRendersAfterTheSystemMessage", []DSV4Message{{Role: "system", Content: "S",
			ResponseFormat: json.RawMessage("{\n  \"type\": \"json_object\",\n  \"path\": \"a/b\"\n}")}, {Role: "user", Content: "Q"}}, DSV4Options{},
			bos + "S\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n{\"type\": \"json_object\", \"path\": \"a/b\"}" +
				usr + "Q" + asst + "</think>"},
		{"testATextBlockFollowsAToolResultAfterABlankLine", []DSV4Message{{Role: "user", Content: "Q"},
			{Role: "assistant", ReasoningContent: "R", ToolCalls: []DSV4ToolCall{call("call_1", "alpha", `{"n": "1"}`)}},
			{Role: "tool", Content: "result", ToolCallID: "call_1"}, {Role: "user", Content: "And now this."}}, thinking,
			bos + usr + "Q" + asst + "</think>" + block(nInvoke("alpha", "1")) + eos +
				usr + "<tool_result>result</tool_result>\n\nAnd now this." + asst + "<think>"},
		{"testChatModeEndsWithClosedThinkTail", hello, DSV4Options{}, bos + sys + usr + "Hello" + asst + "</think>"},
		{"testThinkingModeEndsWithOpenThinkTail", hello, thinking, bos + sys + usr + "Hello" + asst + "<think>"},
		{"testReasoningEffortMaxPrefacesTheFirstMessage", hello, DSV4Options{Thinking: true, ReasoningEffort: "max"},
			bos + effortMax + sys + usr + "Hello" + asst + "<think>"},
		{"testReasoningEffortHighAddsNoPreface", hello, DSV4Options{Thinking: true, ReasoningEffort: "high"},
			bos + sys + usr + "Hello" + asst + "<think>"},
		{"testReasoningEffortMaxAddsNoPrefaceInChatMode", hello, DSV4Options{ReasoningEffort: "max"},
			bos + sys + usr + "Hello" + asst + "</think>"},
		{"testDropEarlierReasoningRemovesEveryEarlierThinkBlock", three, thinking,
			bos + sys + usr + "One" + asst + "</think>First answer." + eos + usr + "Two" + asst + "</think>Second answer." + eos +
				usr + "Three" + asst + "<think>"},
		{"testKeepEarlierReasoningRendersEveryThinkBlock", three, DSV4Options{Thinking: true, KeepThinking: true},
			bos + sys + usr + "One" + asst + "<think>First reasoning.</think>First answer." + eos +
				usr + "Two" + asst + "<think>Second reasoning.</think>Second answer." + eos + usr + "Three" + asst + "<think>"},
		{"testChatModeRendersNoThinkBlockOnAnyTurn", three, DSV4Options{},
			bos + sys + usr + "One" + asst + "</think>First answer." + eos + usr + "Two" + asst + "</think>Second answer." + eos +
				usr + "Three" + asst + "</think>"},
		{"testDeveloperRoleRendersWithTheUserMarker", []DSV4Message{{Role: "system", Content: sys},
			{Role: "developer", Content: "Answer in one word."}}, thinking, bos + sys + usr + "Answer in one word." + asst + "<think>"},
		{"testDeveloperMessageBeforeTheLastUserIsRemoved", []DSV4Message{{Role: "system", Content: sys},
			{Role: "developer", Content: "Answer in one word."}, {Role: "assistant", Content: "Yes.", ReasoningContent: "Earlier reasoning."},
			{Role: "user", Content: "Again?"}}, thinking, bos + sys + "Yes." + eos + usr + "Again?" + asst + "<think>"},
		{"testLatestReminderRendersWithItsOwnMarker", []DSV4Message{{Role: "system", Content: sys},
			{Role: "latest_reminder", Content: "2026-08-11, London"}, {Role: "user", Content: "Hello"}}, thinking,
			bos + sys + "<｜latest_reminder｜>2026-08-11, London" + usr + "Hello" + asst + "<think>"},
		{"testActionTaskRendersAssistantMarkerThenTaskToken", []DSV4Message{{Role: "system", Content: sys},
			{Role: "user", Content: "Weather?", Task: "action"}}, DSV4Options{}, bos + sys + usr + "Weather?" + asst + "</think><｜action｜>"},
		{"testQueryTaskRendersOnlyTheTaskToken", []DSV4Message{{Role: "system", Content: sys},
			{Role: "user", Content: "Weather?", Task: "query"}}, DSV4Options{}, bos + sys + usr + "Weather?<｜query｜>"},
		{"testAssistantWithoutEndOfSentenceAndWithoutBeginOfSentence", []DSV4Message{{Role: "system", Content: sys},
			{Role: "user", Content: "Hello"}, {Role: "assistant", Content: "Hi", NoEOS: true}}, DSV4Options{NoBOS: true},
			sys + usr + "Hello" + asst + "</think>Hi"},
		{"testConsecutiveUserMessagesJoinIntoOneTurn", []DSV4Message{{Role: "system", Content: sys},
			{Role: "user", Content: "One"}, {Role: "user", Content: "Two"}}, DSV4Options{}, bos + sys + usr + "One\n\nTwo" + asst + "</think>"},
	} {
		got, err := EncodeDSV4(c.msgs, c.o)
		if err != nil {
			t.Errorf("%s: %v", c.swift, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s: %s", c.swift, firstDiff(got, c.want))
		}
	}
}
