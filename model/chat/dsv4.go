package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// V4 ships no Jinja chat template: its release carries encoding/encoding_dsv4.py, a
// Python encoder. EncodeDSV4 is that encoder's encode_messages (without the `context`
// prefix argument) transcribed to Go: tool messages merged into user turns as
// <tool_result> blocks, tool calls written in DSML, thinking kept or dropped per turn,
// the quick-instruction task tokens. Decisions and sources: docs/models/deepseek-v4.md.

// Special tokens of the V4 chat format.
const (
	DSV4BOS        = "<｜begin▁of▁sentence｜>"
	DSV4EOS        = "<｜end▁of▁sentence｜>"
	chatUser       = "<｜User｜>"
	chatAssistant  = "<｜Assistant｜>"
	chatReminder   = "<｜latest_reminder｜>"
	chatThinkStart = "<think>"
	chatThinkEnd   = "</think>"
	chatDSML       = "｜DSML｜"
)

// chatTasks are the quick-instruction task tokens (DS_TASK_SP_TOKENS).
var chatTasks = map[string]string{"action": "<｜action｜>", "query": "<｜query｜>", "authority": "<｜authority｜>",
	"domain": "<｜domain｜>", "title": "<｜title｜>", "read_url": "<｜read_url｜>"}

// reasoningEffortMax is REASONING_EFFORT_MAX, prepended in thinking mode at effort "max".
const reasoningEffortMax = "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n" +
	"You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial scenarios.\n" +
	"Explicitly write out your entire deliberation process, documenting every intermediate step, considered alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n"

// toolsTemplate is TOOLS_TEMPLATE with the DSML and thinking tokens filled in; %s is the
// tool schemas, one JSON line each.
var toolsTemplate = strings.NewReplacer("{dsml_token}", chatDSML, "{thinking_start_token}", chatThinkStart,
	"{thinking_end_token}", chatThinkEnd).Replace(`## Tools

You have access to a set of tools to help answer the user's question. You can invoke tools by writing a "<{dsml_token}tool_calls>" block like the following:

<{dsml_token}tool_calls>
<{dsml_token}invoke name="$TOOL_NAME">
<{dsml_token}parameter name="$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE</{dsml_token}parameter>
...
</{dsml_token}invoke>
<{dsml_token}invoke name="$TOOL_NAME2">
...
</{dsml_token}invoke>
</{dsml_token}tool_calls>

String parameters should be specified as is and set ` + "`string=\"true\"`" + `. For all other types (numbers, booleans, arrays, objects), pass the value in JSON format and set ` + "`string=\"false\"`" + `.

If thinking_mode is enabled (triggered by {thinking_start_token}), you MUST output your complete reasoning inside {thinking_start_token}...{thinking_end_token} BEFORE any tool calls or final response.

Otherwise, output directly after {thinking_end_token} with tool calls or final response.

### Available Tool Schemas

%s

You MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.
`)

// DSV4Message is one OpenAI-style message. Role is system, developer, user, tool,
// assistant or latest_reminder.
type DSV4Message struct {
	Role             string
	Content          string
	ReasoningContent string         // assistant
	ToolCalls        []DSV4ToolCall // assistant
	ToolCallID       string         // tool: the call it answers (orders merged results)
	// Tools are OpenAI tool entries ({"type": "function", "function": {...}}) on a system
	// or developer message; ResponseFormat a JSON schema object. Both raw JSON, re-written
	// as Python's json.dumps would (key order kept).
	Tools          []json.RawMessage
	ResponseFormat json.RawMessage
	Task           string // quick-instruction task on a user/developer message: see chatTasks
	NoEOS          bool   // wo_eos: an assistant turn left open
}

// DSV4ToolCall is one function call of an assistant turn; Arguments is a JSON object text.
type DSV4ToolCall struct {
	ID, Name, Arguments string
}

// DSV4Options are encode_messages' switches.
type DSV4Options struct {
	Thinking        bool   // thinking_mode "thinking" (else "chat")
	KeepThinking    bool   // drop_thinking=False: keep every turn's reasoning
	ReasoningEffort string // "", "high" (renders as ""), or "max"
	NoBOS           bool   // add_default_bos_token=False
}

// ErrDSV4: a conversation the V4 encoder rejects.
var ErrDSV4 = errors.New("chat: invalid DeepSeek-V4 conversation")

// block is a merged user turn's part: text, or a tool result.
type block struct {
	tool       bool
	text, id   string
	toolResult string
}

// cmsg is a message after merge_tool_messages.
type cmsg struct {
	DSV4Message
	blocks []block // user turns only
}

// EncodeDSV4 renders messages as the V4 prompt text.
func EncodeDSV4(messages []DSV4Message, o DSV4Options) (string, error) {
	switch o.ReasoningEffort {
	case "", "high", "max":
	default:
		return "", fmt.Errorf("%w: reasoning effort %q (want max, high or none)", ErrDSV4, o.ReasoningEffort)
	}
	msgs := mergeToolMessages(messages)
	sortToolResults(msgs)
	drop := !o.KeepThinking
	for _, m := range msgs {
		if len(m.Tools) > 0 {
			drop = false // with tools in the conversation every turn keeps its reasoning
		}
	}
	if o.Thinking && drop {
		msgs = dropThinking(msgs)
	}
	var b strings.Builder
	if !o.NoBOS {
		b.WriteString(DSV4BOS)
	}
	for i := range msgs {
		if err := renderMessage(&b, i, msgs, o, drop); err != nil {
			return "", fmt.Errorf("message %d (%s): %w", i, msgs[i].Role, err)
		}
	}
	return b.String(), nil
}

// mergeToolMessages folds tool messages into user turns (V4 has no tool role): a tool
// result joins the preceding user turn, consecutive user messages join one turn unless
// the earlier carries a task.
func mergeToolMessages(in []DSV4Message) []cmsg {
	var out []cmsg
	lastUser := func() *cmsg {
		if n := len(out); n > 0 && out[n-1].Role == "user" {
			return &out[n-1]
		}
		return nil
	}
	for _, m := range in {
		switch m.Role {
		case "tool":
			blk := block{tool: true, id: m.ToolCallID, toolResult: m.Content}
			if u := lastUser(); u != nil {
				u.blocks = append(u.blocks, blk)
			} else {
				out = append(out, cmsg{DSV4Message: DSV4Message{Role: "user"}, blocks: []block{blk}})
			}
		case "user":
			blk := block{text: m.Content}
			if u := lastUser(); u != nil && u.Task == "" {
				u.blocks = append(u.blocks, blk)
			} else {
				out = append(out, cmsg{DSV4Message: DSV4Message{Role: "user", Content: m.Content, Task: m.Task, NoEOS: m.NoEOS},
					blocks: []block{blk}})
			}
		default:
			out = append(out, cmsg{DSV4Message: m})
		}
	}
	return out
}

// sortToolResults orders the tool results of a user turn as the preceding assistant
// called them (stable; unknown ids count as position 0, as in the reference).
func sortToolResults(msgs []cmsg) {
	var order map[string]int
	for i := range msgs {
		m := &msgs[i]
		switch {
		case m.Role == "assistant" && len(m.ToolCalls) > 0:
			order = map[string]int{}
			for j, tc := range m.ToolCalls {
				if tc.ID != "" {
					order[tc.ID] = j
				}
			}
		case m.Role == "user" && len(order) > 0:
			var tools []block
			for _, b := range m.blocks {
				if b.tool {
					tools = append(tools, b)
				}
			}
			if len(tools) < 2 {
				continue
			}
			sort.SliceStable(tools, func(a, b int) bool { return order[tools[a].id] < order[tools[b].id] })
			k := 0
			for j := range m.blocks {
				if m.blocks[j].tool {
					m.blocks[j] = tools[k]
					k++
				}
			}
		}
	}
}

func lastUserIndex(msgs []cmsg) int {
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role == "user" || msgs[i].Role == "developer" {
			return i
		}
	}
	return -1
}

// dropThinking is _drop_thinking_messages: before the last user turn, assistant turns
// lose their reasoning and developer (and unknown-role) messages go entirely.
func dropThinking(msgs []cmsg) []cmsg {
	last := lastUserIndex(msgs)
	var out []cmsg
	for i, m := range msgs {
		switch {
		case i >= last || m.Role == "user" || m.Role == "system" || m.Role == "latest_reminder":
			out = append(out, m)
		case m.Role == "assistant":
			m.ReasoningContent = ""
			out = append(out, m)
		}
	}
	return out
}

func renderMessage(b *strings.Builder, i int, msgs []cmsg, o DSV4Options, drop bool) error {
	m := &msgs[i]
	last := lastUserIndex(msgs)
	if i == 0 && o.Thinking && o.ReasoningEffort == "max" {
		b.WriteString(reasoningEffortMax)
	}
	extras := func(s *strings.Builder) error {
		if len(m.Tools) > 0 {
			t, err := renderTools(m.Tools)
			if err != nil {
				return err
			}
			s.WriteString("\n\n" + t)
		}
		if pyTruthy(m.ResponseFormat) {
			j, err := pyJSON(m.ResponseFormat)
			if err != nil {
				return fmt.Errorf("response_format: %w", err)
			}
			s.WriteString("\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n" + j)
		}
		return nil
	}
	switch m.Role {
	case "system":
		b.WriteString(m.Content)
		if err := extras(b); err != nil {
			return err
		}
	case "developer":
		if m.Content == "" {
			return fmt.Errorf("%w: a developer message needs content", ErrDSV4)
		}
		b.WriteString(chatUser + m.Content)
		if err := extras(b); err != nil {
			return err
		}
	case "user":
		b.WriteString(chatUser)
		for j, blk := range m.blocks {
			if j > 0 {
				b.WriteString("\n\n")
			}
			if blk.tool {
				b.WriteString("<tool_result>" + blk.toolResult + "</tool_result>")
			} else {
				b.WriteString(blk.text)
			}
		}
	case "latest_reminder":
		b.WriteString(chatReminder + m.Content)
	case "assistant":
		if o.Thinking && !(i > 0 && msgs[i-1].Task != "") && (!drop || i > last) {
			b.WriteString(m.ReasoningContent + chatThinkEnd)
		}
		b.WriteString(m.Content)
		if len(m.ToolCalls) > 0 {
			calls := make([]string, len(m.ToolCalls))
			for j, tc := range m.ToolCalls {
				args, err := dsmlArguments(tc.Arguments)
				if err != nil {
					return fmt.Errorf("tool call %q: %w", tc.Name, err)
				}
				calls[j] = "<" + chatDSML + `invoke name="` + tc.Name + "\">\n" + args + "\n</" + chatDSML + "invoke>"
			}
			b.WriteString("\n\n<" + chatDSML + "tool_calls>\n" + strings.Join(calls, "\n") + "\n</" + chatDSML + "tool_calls>")
		}
		if !m.NoEOS {
			b.WriteString(DSV4EOS)
		}
	default:
		return fmt.Errorf("%w: unknown role %q", ErrDSV4, m.Role)
	}
	// What follows decides the transition: nothing before a user/system turn; a task
	// token or the assistant prefix (with the thinking switch) otherwise.
	if i+1 < len(msgs) && msgs[i+1].Role != "assistant" && msgs[i+1].Role != "latest_reminder" {
		return nil
	}
	switch {
	case m.Task != "":
		tok, ok := chatTasks[m.Task]
		if !ok {
			return fmt.Errorf("%w: task %q", ErrDSV4, m.Task)
		}
		if m.Task != "action" {
			b.WriteString(tok)
			break
		}
		b.WriteString(chatAssistant)
		if o.Thinking {
			b.WriteString(chatThinkStart)
		} else {
			b.WriteString(chatThinkEnd)
		}
		b.WriteString(tok)
	case m.Role == "user" || m.Role == "developer":
		b.WriteString(chatAssistant)
		if o.Thinking && (!drop || i >= last) {
			b.WriteString(chatThinkStart)
		} else {
			b.WriteString(chatThinkEnd)
		}
	}
	return nil
}

// pyTruthy is Python's truth value of the parsed JSON: the reference writes a
// response_format only `if response_format:`, so {} or null adds nothing. Text
// that is not JSON counts as true, so that pyJSON reports it.
func pyTruthy(raw json.RawMessage) bool {
	if len(bytes.TrimSpace(raw)) == 0 {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return true
	}
	switch v := v.(type) {
	case nil:
		return false
	case bool:
		return v
	case string:
		return v != ""
	case json.Number:
		f, err := strconv.ParseFloat(v.String(), 64)
		return err != nil || f != 0
	case map[string]any:
		return len(v) > 0
	case []any:
		return len(v) > 0
	}
	return true
}

// renderTools is render_tools: each entry's "function" object as one JSON line.
func renderTools(tools []json.RawMessage) (string, error) {
	lines := make([]string, len(tools))
	for i, t := range tools {
		var entry struct {
			Function json.RawMessage `json:"function"`
		}
		if err := json.Unmarshal(t, &entry); err != nil || len(entry.Function) == 0 {
			return "", fmt.Errorf("%w: tool %d is not {\"function\": {...}}", ErrDSV4, i)
		}
		j, err := pyJSON(entry.Function)
		if err != nil {
			return "", fmt.Errorf("tool %d: %w", i, err)
		}
		lines[i] = j
	}
	return fmt.Sprintf(toolsTemplate, strings.Join(lines, "\n")), nil
}

// dsmlArguments is encode_arguments_to_dsml: one DSML parameter per argument in the
// object's own key order, strings as is (string="true"), other values as JSON. Text that
// is not JSON becomes a single "arguments" string parameter, as in the reference.
func dsmlArguments(args string) (string, error) {
	param := func(k, v string, isStr bool) string {
		return "<" + chatDSML + `parameter name="` + k + `" string="` + strconv.FormatBool(isStr) + `">` + v + "</" + chatDSML + "parameter>"
	}
	if !json.Valid([]byte(args)) {
		return param("arguments", args, true), nil
	}
	keys, vals, err := orderedObject([]byte(args))
	if err != nil {
		return "", err
	}
	out := make([]string, len(keys))
	for i, k := range keys {
		if v := vals[i]; len(v) > 0 && v[0] == '"' {
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return "", fmt.Errorf("%w: argument %q: %w", ErrDSV4, k, err)
			}
			out[i] = param(k, s, true)
			continue
		}
		j, err := pyJSON(vals[i])
		if err != nil {
			return "", err
		}
		out[i] = param(k, j, false)
	}
	return strings.Join(out, "\n"), nil
}

// orderedObject splits a JSON object into its keys and raw values, in order. A repeated
// key keeps its first position and last value (Python dict semantics).
func orderedObject(data []byte) ([]string, []json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, nil, fmt.Errorf("%w: tool arguments are not a JSON object", ErrDSV4)
	}
	var keys []string
	var vals []json.RawMessage
	at := map[string]int{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrDSV4, err)
		}
		k, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrDSV4, err)
		}
		if j, dup := at[k]; dup {
			vals[j] = v
			continue
		}
		at[k] = len(keys)
		keys, vals = append(keys, k), append(vals, v)
	}
	return keys, vals, nil
}

// pyJSON re-writes JSON text as Python's json.dumps(json.loads(text), ensure_ascii=False)
// does: ", " and ": " separators, key order kept, non-ASCII unescaped, integers as
// written and other numbers in Python's float repr.
func pyJSON(data []byte) (string, error) {
	var b strings.Builder
	if err := pyValue(&b, json.RawMessage(bytes.TrimSpace(data))); err != nil {
		return "", err
	}
	return b.String(), nil
}

func pyValue(b *strings.Builder, v json.RawMessage) error {
	if len(v) == 0 {
		return fmt.Errorf("%w: empty JSON value", ErrDSV4)
	}
	switch c := v[0]; {
	case c == '{':
		keys, vals, err := orderedObject(v)
		if err != nil {
			return err
		}
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteString(", ")
			}
			pyString(b, k)
			b.WriteString(": ")
			if err := pyValue(b, vals[i]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	case c == '[':
		var items []json.RawMessage
		if err := json.Unmarshal(v, &items); err != nil {
			return fmt.Errorf("%w: %w", ErrDSV4, err)
		}
		b.WriteByte('[')
		for i, it := range items {
			if i > 0 {
				b.WriteString(", ")
			}
			if err := pyValue(b, it); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case c == '"':
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("%w: %w", ErrDSV4, err)
		}
		pyString(b, s)
	case c == 't' || c == 'f' || c == 'n':
		b.Write(v)
	default:
		n, err := pyNumber(string(v))
		if err != nil {
			return err
		}
		b.WriteString(n)
	}
	return nil
}

// pyString writes s as json.dumps(ensure_ascii=False): only ", \ and control characters
// are escaped (\n, \r, \t, \b, \f by name, the rest as \u00XX).
func pyString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			if r < 0x20 {
				fmt.Fprintf(b, `\u%04x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
}

// pyNumber is how Python prints a parsed JSON number: an integer literal as an int, any
// other as repr(float) — the shortest round-trip digits, positional for decimal
// exponents −4 ≤ e < 16 (with ".0" when integral), else d.ddde±XX.
func pyNumber(lit string) (string, error) {
	if !json.Valid([]byte(lit)) {
		return "", fmt.Errorf("%w: number %q", ErrDSV4, lit)
	}
	if !strings.ContainsAny(lit, ".eE") { // Python ints have arbitrary precision
		if lit == "-0" {
			return "0", nil
		}
		return lit, nil
	}
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil {
		return "", fmt.Errorf("%w: number %q: %w", ErrDSV4, lit, err)
	}
	if f == 0 {
		if strings.HasPrefix(lit, "-") {
			return "-0.0", nil
		}
		return "0.0", nil
	}
	sign := ""
	if f < 0 {
		sign, f = "-", -f
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // d.ddde±XX, shortest digits
	mant, exp, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	x, _ := strconv.Atoi(exp) // value = 0.d1d2… × 10^(x+1)
	if x >= -4 && x < 16 {
		point := x + 1
		switch {
		case point <= 0:
			return sign + "0." + strings.Repeat("0", -point) + digits, nil
		case point >= len(digits):
			return sign + digits + strings.Repeat("0", point-len(digits)) + ".0", nil
		}
		return sign + digits[:point] + "." + digits[point:], nil
	}
	es := fmt.Sprintf("%+03d", x)
	if len(digits) == 1 {
		return sign + digits + "e" + es, nil
	}
	return sign + digits[:1] + "." + digits[1:] + "e" + es, nil
}

// renderDSV4 is a Template's Render for DeepSeek-V4: OpenAI roles and reasoning map onto
// the encoder's messages; extra["thinking"] = true selects thinking mode (the encoder's
// default is chat mode). The encoder always ends a user turn with the assistant prefix.
func renderDSV4(msgs []Message, extra map[string]any) (string, error) {
	in := make([]DSV4Message, len(msgs))
	for i, m := range msgs {
		in[i] = DSV4Message{Role: m.Role, Content: m.Content, ReasoningContent: m.ReasoningContent}
	}
	thinking, _ := extra["thinking"].(bool)
	return EncodeDSV4(in, DSV4Options{Thinking: thinking})
}
