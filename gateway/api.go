package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"unicode/utf8"
)

// The request bodies of the OpenAI API, as far as the gateway honours them. Unknown fields
// are ignored (clients send many the gateway has no use for); a known field of the wrong
// JSON type is a 400 naming the field.

// common holds the sampling and streaming fields both endpoints share.
type common struct {
	Model               string         `json:"model"`
	Stream              bool           `json:"stream"`
	StreamOptions       *streamOptions `json:"stream_options"`
	N                   *int           `json:"n"`
	MaxTokens           *int           `json:"max_tokens"`
	MaxCompletionTokens *int           `json:"max_completion_tokens"`
	Temperature         *float64       `json:"temperature"`
	TopP                *float64       `json:"top_p"`
	TopK                *int           `json:"top_k"` // an extension (vLLM, llama.cpp have it too)
	Seed                *int64         `json:"seed"`
	Stop                stopList       `json:"stop"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatRequest struct {
	common
	Messages []chatMessage `json:"messages"`
}

type chatMessage struct {
	Role             string      `json:"role"`
	Content          textContent `json:"content"`
	ReasoningContent string      `json:"reasoning_content"`
}

type completionRequest struct {
	common
	Prompt promptInput `json:"prompt"`
	Echo   bool        `json:"echo"`
	Suffix *string     `json:"suffix"`
}

// stopList is OpenAI's stop: null, a string, or an array of strings.
type stopList []string

func (s *stopList) UnmarshalJSON(b []byte) error {
	switch firstByte(b) {
	case 'n':
		*s = nil
		return nil
	case '"':
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = stopList{one}
		return nil
	case '[':
		var many []string
		if err := json.Unmarshal(b, &many); err != nil {
			return typeError(b, "string or array of strings")
		}
		*s = many
		return nil
	}
	return typeError(b, "string or array of strings")
}

// textContent is a message's content: a string, null, or an array of content parts of
// which only text parts are supported.
type textContent string

func (c *textContent) UnmarshalJSON(b []byte) error {
	switch firstByte(b) {
	case 'n':
		*c = ""
		return nil
	case '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*c = textContent(s)
		return nil
	case '[':
		var parts []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		}
		if err := json.Unmarshal(b, &parts); err != nil {
			return typeError(b, "string or array of text parts")
		}
		var sb strings.Builder
		for _, p := range parts {
			if p.Type != "text" {
				return &json.UnmarshalTypeError{Value: "content part of type " + p.Type, Type: textType}
			}
			sb.WriteString(p.Text)
		}
		*c = textContent(sb.String())
		return nil
	}
	return typeError(b, "string or array of text parts")
}

// promptInput is the completions prompt: a string, or an array holding one string or
// token ids (one prompt per request, since n and batching are not supported).
type promptInput struct {
	Text  string
	IDs   []int32
	IsIDs bool
	Set   bool
}

func (p *promptInput) UnmarshalJSON(b []byte) error {
	switch firstByte(b) {
	case 'n':
		*p = promptInput{}
		return nil
	case '"':
		p.Set = true
		return json.Unmarshal(b, &p.Text)
	case '[':
		var raw []json.RawMessage
		if err := json.Unmarshal(b, &raw); err != nil {
			return err
		}
		p.Set = true
		if len(raw) == 0 {
			return nil
		}
		switch firstByte(raw[0]) {
		case '"':
			if len(raw) != 1 {
				return &json.UnmarshalTypeError{Value: fmt.Sprintf("array of %d prompts", len(raw)), Type: textType}
			}
			return json.Unmarshal(raw[0], &p.Text)
		case '[':
			if len(raw) != 1 {
				return &json.UnmarshalTypeError{Value: fmt.Sprintf("array of %d prompts", len(raw)), Type: textType}
			}
			b = raw[0]
		}
		p.IsIDs = true
		if err := json.Unmarshal(b, &p.IDs); err != nil {
			return typeError(b, "string, array of one string, or array of token ids")
		}
		return nil
	}
	return typeError(b, "string, array of one string, or array of token ids")
}

var textType = reflect.TypeFor[string]()

// typeError reports b as the wrong JSON type; encoding/json adds the field's path.
func typeError(b []byte, want string) error {
	kind := "value"
	switch firstByte(b) {
	case '{':
		kind = "object"
	case '[':
		kind = "array"
	case '"':
		kind = "string"
	case 't', 'f':
		kind = "bool"
	case 'n':
		kind = "null"
	default:
		kind = "number"
	}
	return &json.UnmarshalTypeError{Value: kind + " (want " + want + ")", Type: textType}
}

func firstByte(b []byte) byte {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

// decodeBody reads r's JSON body into v, at most limit bytes. Errors are client errors:
// 413 for a body over the limit, 400 naming the field for a wrong type.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any) *apiError {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return badRequest("", "Content-Type %q, want application/json", ct)
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error",
				Message: fmt.Sprintf("request body larger than %d bytes", mbe.Limit)}
		}
		return badRequest("", "reading the request body: %v", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return badRequest("", "empty request body, want a JSON object")
	}
	// encoding/json would replace invalid UTF-8 in strings with U+FFFD and run a prompt
	// the client never wrote; JSON text is UTF-8 (RFC 8259), so say so instead.
	if !utf8.Valid(data) {
		return badRequest("", "the request body is not valid UTF-8 (byte %d); JSON must be UTF-8", invalidUTF8(data))
	}
	if err := json.Unmarshal(data, v); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te) && te.Field != "":
			te.Field = strings.TrimPrefix(te.Field, "common.") // the embedded struct's name is ours, not the API's
			if strings.Contains(te.Value, "(want ") {          // our own unmarshalers say what they want
				return badRequest(te.Field, "invalid type for %s: got %s", te.Field, te.Value)
			}
			return badRequest(te.Field, "invalid type for %s: got %s, want %s", te.Field, te.Value, jsonKind(te))
		case errors.As(err, &te):
			return badRequest("", "the request body is a JSON %s, want an object", te.Value)
		case errors.As(err, &se):
			return badRequest("", "malformed JSON at byte %d: %v", se.Offset, err)
		}
		return badRequest("", "invalid request body: %v", err)
	}
	return nil
}

// invalidUTF8 is the offset of the first byte that is not UTF-8, or -1.
func invalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		if b[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return -1
}

// jsonKind names what a field wants in JSON terms rather than Go's.
func jsonKind(te *json.UnmarshalTypeError) string {
	switch te.Type.Kind().String() {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "bool":
		return "a boolean"
	case "string":
		return "a string"
	case "slice":
		return "an array"
	case "struct", "map":
		return "an object"
	}
	return te.Type.String()
}
