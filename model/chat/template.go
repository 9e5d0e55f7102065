package chat

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ardanlabs/jinja"
)

// Message is one turn of a conversation in the shape HF chat templates read
// (the OpenAI-style dict transformers passes as messages[i]).
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	// ReasoningContent is the assistant's thinking text. It is passed to the
	// template only when non-empty: Qwen3 tests `reasoning_content is
	// defined`, and a defined-but-empty value would stop it from splitting
	// <think>...</think> out of Content, changing the prompt.
	ReasoningContent string `json:"reasoning_content,omitempty"`
}

// Template is a compiled chat template plus the special tokens and stop ids
// that came with it. It is safe for concurrent Render calls.
type Template struct {
	// Source is the Jinja text, kept for diagnostics and hashing.
	Source string
	// Origin names where Source came from (a file path, or "<string>" for
	// Parse); every error mentions it so a bad model directory is obvious.
	Origin string
	// BOS and EOS are bos_token / eos_token; empty means unset, and then the
	// variable is undefined in the template, as with transformers.
	BOS, EOS string
	// StopIDs are the eos token ids from generation_config.json and
	// config.json (union, in that order, without duplicates). Parse leaves
	// it nil.
	StopIDs []int32

	tmpl *jinja.Template
	// native renders instead of tmpl for models that ship a Python encoder rather than a
	// Jinja template (DeepSeek-V4).
	native func(msgs []Message, extra map[string]any) (string, error)
	// now is the clock behind strftime_now; tests pin it.
	now func() time.Time
}

// ExceptionError is returned (wrapped) by Render when the template calls
// raise_exception, i.e. the template itself rejects the conversation.
// Message is the template's text, which is what Python Jinja2's TemplateError
// carries, so callers can show it to the client unchanged.
type ExceptionError struct {
	Message string
}

func (e *ExceptionError) Error() string { return "template raised exception: " + e.Message }

// Parse compiles a chat template from source. bos and eos are the special
// token strings (empty = unset).
func Parse(src, bos, eos string) (*Template, error) {
	return parse("<string>", src, bos, eos)
}

func parse(origin, src, bos, eos string) (t *Template, err error) {
	// The engine has no recover of its own; a panic on hostile template
	// text must not take down a server that loads user-supplied models.
	defer func() {
		if r := recover(); r != nil {
			t, err = nil, fmt.Errorf("chat template %s: engine panic while parsing: %v", origin, r)
		}
	}()
	if strings.TrimSpace(src) == "" {
		return nil, fmt.Errorf("chat template %s: template is empty", origin)
	}
	compiled, err := jinja.Compile(src)
	if err != nil {
		// The engine's messages carry "line N" for most syntax errors.
		return nil, fmt.Errorf("chat template %s: syntax error: %w", origin, err)
	}
	return &Template{Source: src, Origin: origin, BOS: bos, EOS: eos, tmpl: compiled, now: time.Now}, nil
}

// reserved are the variables Render sets itself; letting extra replace them
// would silently render a different conversation (transformers rejects them
// as duplicate keyword arguments).
var reserved = map[string]bool{"messages": true, "add_generation_prompt": true}

// Render produces the prompt for msgs, with the variables transformers'
// apply_chat_template passes: messages, add_generation_prompt, tools (None),
// bos_token / eos_token when set, and extra (e.g. "enable_thinking": false),
// which may override tools and the special tokens as kwargs do in HF.
// Extra values must be what jinja.FromGoValue converts (nil, bool, int,
// int64, float64, string, json.Number, slices and string-keyed maps of
// those) or a jinja.Value; an unsupported top-level type is an error, one
// nested inside a slice or map becomes undefined.
//
// Engine gaps (ardanlabs/jinja v1.8.0), none reached by the Qwen3 and
// DeepSeek-V3 templates as Render calls them; TestEngineGaps pins the tojson
// and undefined ones so an engine upgrade that changes them is noticed:
//   - the tojson filter is built in and cannot be replaced (builtin filters
//     shadow user ones); it prints 1.0 as "1", escapes U+2028/U+2029, and
//     with indent= sorts keys; sort_keys= is not supported;
//   - undefined values are lenient: messages[0].role on an empty list, or a
//     missing key's attribute, render "" where Python raises UndefinedError,
//     and 'a' + 1 concatenates where Python raises TypeError; so a
//     conversation Python rejects with an engine error (not raise_exception)
//     may render here (Qwen3 with no messages renders just the generation
//     prompt);
//   - HF's {% generation %} tag is accepted but no assistant mask is built.
func (t *Template) Render(msgs []Message, addGenerationPrompt bool, extra map[string]any) (out string, err error) {
	if t != nil && t.native != nil {
		return t.native(msgs, extra)
	}
	if t == nil || t.tmpl == nil {
		return "", errors.New("chat: Render on a nil Template")
	}
	data := make(map[string]jinja.Value, 8+len(extra))
	data["tools"] = jinja.None()
	if t.BOS != "" {
		data["bos_token"] = jinja.NewString(t.BOS)
	}
	if t.EOS != "" {
		data["eos_token"] = jinja.NewString(t.EOS)
	}
	for k, v := range extra {
		if reserved[k] {
			return "", fmt.Errorf("chat template %s: extra variable %q is set by Render itself", t.Origin, k)
		}
		jv, ok := v.(jinja.Value)
		if !ok {
			jv = jinja.FromGoValue(v)
			// FromGoValue maps unknown types to Undefined without a word;
			// an `is defined` test would then quietly take the other branch.
			if v != nil && jv.IsUndefined() {
				return "", fmt.Errorf("chat template %s: extra variable %q has unsupported type %T", t.Origin, k, v)
			}
		}
		data[k] = jv
	}
	data["messages"] = messageValues(msgs)
	data["add_generation_prompt"] = jinja.NewBool(addGenerationPrompt)
	// Override the engine's globals: raise_exception so callers can tell a
	// template rejection from an engine failure, strftime_now for the full
	// set of directives and a clock tests can pin.
	data["raise_exception"] = jinja.NewCallable("raise_exception", raiseException)
	now := t.now
	if now == nil {
		now = time.Now
	}
	data["strftime_now"] = jinja.NewCallable("strftime_now", func(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
		if len(args) != 1 || !args[0].IsString() {
			return jinja.Undefined(), errors.New("strftime_now: expected one string argument")
		}
		return jinja.NewString(strftime(args[0].AsString(), now())), nil
	})

	defer func() {
		if r := recover(); r != nil {
			out, err = "", fmt.Errorf("chat template %s: engine panic while rendering: %v", t.Origin, r)
		}
	}()
	out, err = t.tmpl.RenderValues(data)
	if err != nil {
		return "", fmt.Errorf("chat template %s: render: %w", t.Origin, err)
	}
	return out, nil
}

// messageValues builds the messages list with keys in the order an
// OpenAI-style client sends them, since dict order is visible to templates
// that iterate or tojson a message.
func messageValues(msgs []Message) jinja.Value {
	items := make([]jinja.Value, len(msgs))
	for i, m := range msgs {
		d := jinja.NewDict()
		dict := d.AsDict()
		dict.Set("role", jinja.NewString(m.Role))
		dict.Set("content", jinja.NewString(m.Content))
		if m.ReasoningContent != "" {
			dict.Set("reasoning_content", jinja.NewString(m.ReasoningContent))
		}
		items[i] = d
	}
	return jinja.NewList(items)
}

func raiseException(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
	if len(args) == 0 {
		return jinja.Undefined(), &ExceptionError{Message: "raise_exception called without a message"}
	}
	msg := args[0].String()
	if args[0].IsString() {
		msg = args[0].AsString()
	}
	return jinja.Undefined(), &ExceptionError{Message: msg}
}

// strftime implements the C/Python strftime directives templates use for
// dates in system prompts (e.g. Llama 3.1's "%d %b %Y"), in the C locale.
// Unknown directives are copied through, as glibc does.
func strftime(format string, tm time.Time) string {
	var b strings.Builder
	pad2 := func(n int) { b.WriteString(fmt.Sprintf("%02d", n)) }
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i+1 == len(format) {
			b.WriteByte(c)
			continue
		}
		i++
		switch format[i] {
		case 'Y':
			b.WriteString(strconv.Itoa(tm.Year()))
		case 'y':
			pad2(tm.Year() % 100)
		case 'm':
			pad2(int(tm.Month()))
		case 'd':
			pad2(tm.Day())
		case 'e':
			b.WriteString(fmt.Sprintf("%2d", tm.Day()))
		case 'H':
			pad2(tm.Hour())
		case 'I':
			h := tm.Hour() % 12
			if h == 0 {
				h = 12
			}
			pad2(h)
		case 'M':
			pad2(tm.Minute())
		case 'S':
			pad2(tm.Second())
		case 'p':
			if tm.Hour() < 12 {
				b.WriteString("AM")
			} else {
				b.WriteString("PM")
			}
		case 'B':
			b.WriteString(tm.Month().String())
		case 'b', 'h':
			b.WriteString(tm.Month().String()[:3])
		case 'A':
			b.WriteString(tm.Weekday().String())
		case 'a':
			b.WriteString(tm.Weekday().String()[:3])
		case 'j':
			b.WriteString(fmt.Sprintf("%03d", tm.YearDay()))
		case 'Z':
			name, _ := tm.Zone()
			b.WriteString(name)
		case 'z':
			b.WriteString(tm.Format("-0700"))
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(format[i])
		}
	}
	return b.String()
}
