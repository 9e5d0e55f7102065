package gateway

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestMalformedBodies pins the documented error of each kind of oversize or malformed
// body (DESIGN §5: OpenAI's error object, 400 bad input, 413 too large): the status, the
// error's type, param and code, and a word of the message that says what is wrong.
func TestMalformedBodies(t *testing.T) {
	const limit = 1 << 20
	e := newFuzzEnv(t, limit)
	chat := func(extra string) string {
		return `{"model":"tiny",` + extra + `"messages":[{"role":"user","content":"hi"}]}`
	}
	deep := strings.Repeat("[", 10001) + strings.Repeat("]", 10001)
	for _, tc := range []struct {
		name, path, auth, ctype, body string
		status                        int
		typ, param, code, msg         string
	}{
		{name: "2 MiB body over a 1 MiB limit", body: `{"model":"tiny","x":"` + strings.Repeat("a", 2<<20) + `"}`,
			status: 413, typ: "invalid_request_error", msg: "larger than 1048576 bytes"},
		{name: "prompt over the tenant's limit", auth: keySmall, body: `{"model":"tiny","prompt":"` + strings.Repeat("word ", 100) + `"}`, path: "/v1/completions",
			status: 413, typ: "invalid_request_error", param: "messages", code: "context_length_exceeded", msg: "limit of 5"},
		{name: "invalid UTF-8 in a string", body: "{\"model\":\"tiny\",\"messages\":[{\"role\":\"user\",\"content\":\"a\xff\xfeb\"}]}",
			status: 400, typ: "invalid_request_error", msg: "UTF-8"},
		{name: "invalid UTF-8 outside strings", body: "{\"model\":\"tiny\"\xff}", status: 400, typ: "invalid_request_error", msg: "UTF-8"},
		{name: "nesting deeper than 10000", body: `{"model":"tiny","x":` + deep + `}`, status: 400, typ: "invalid_request_error", msg: "max depth"},
		{name: "max_tokens beyond int64", body: chat(`"max_tokens":9223372036854775808,`), status: 400, typ: "invalid_request_error", param: "max_tokens", msg: "integer"},
		{name: "max_tokens 1e400", body: chat(`"max_tokens":1e400,`), status: 400, typ: "invalid_request_error", param: "max_tokens"},
		{name: "max_tokens fractional", body: chat(`"max_tokens":1.5,`), status: 400, typ: "invalid_request_error", param: "max_tokens"},
		{name: "temperature beyond float64", body: chat(`"temperature":1e400,`), status: 400, typ: "invalid_request_error", param: "temperature"},
		{name: "top_k beyond int32", body: chat(`"top_k":4294967296,`), status: 400, typ: "invalid_request_error", param: "top_k"},
		{name: "seed beyond int64", body: chat(`"seed":18446744073709551616,`), status: 400, typ: "invalid_request_error", param: "seed"},
		{name: "prompt token beyond int32", path: "/v1/completions", body: `{"model":"tiny","prompt":[2147483648]}`, status: 400, typ: "invalid_request_error", param: "prompt"},
		{name: "prompt token beyond the vocabulary", path: "/v1/completions", body: `{"model":"tiny","prompt":[151936]}`, status: 400, typ: "invalid_request_error", param: "prompt"},
		{name: "NaN literal", body: chat(`"temperature":NaN,`), status: 400, typ: "invalid_request_error", msg: "malformed JSON"},
		{name: "trailing data", body: chat(``) + ` {}`, status: 400, typ: "invalid_request_error", msg: "malformed JSON"},
		{name: "raw control character in a string", body: "{\"model\":\"ti\nny\"}", status: 400, typ: "invalid_request_error", msg: "malformed JSON"},
		{name: "byte order mark", body: "\ufeff" + chat(``), status: 400, typ: "invalid_request_error", msg: "malformed JSON"},
		{name: "empty body", body: "", status: 400, typ: "invalid_request_error", msg: "empty"},
		{name: "JSON null", body: "null", status: 400, typ: "invalid_request_error", param: "model", msg: "model is required"},
		{name: "an array", body: "[]", status: 400, typ: "invalid_request_error", msg: "want an object"},
		{name: "not JSON content type", ctype: "text/plain", body: chat(``), status: 400, typ: "invalid_request_error", msg: "Content-Type"},
		{name: "messages an object", body: `{"model":"tiny","messages":{}}`, status: 400, typ: "invalid_request_error", param: "messages"},
		{name: "no key", auth: "-", body: chat(``), status: 401, typ: "invalid_request_error", code: "invalid_api_key"},
		// Duplicate keys: the last one wins, as in encoding/json and Python's json module
		// (what OpenAI's own server parses with); "nope" would be a 404.
		{name: "duplicate keys: the last wins", body: `{"model":"nope","model":"tiny","messages":[{"role":"user","content":"hi"}]}`, status: 200},
		{name: "unknown fields are ignored", body: chat(`"logit_bias":{"1":2},"user":"u",`), status: 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, auth, ctype := tc.path, "Bearer "+keyAlice, "application/json"
			if path == "" {
				path = "/v1/chat/completions"
			}
			switch tc.auth {
			case "-":
				auth = ""
			case "":
			default:
				auth = "Bearer " + tc.auth
			}
			if tc.ctype != "" {
				ctype = tc.ctype
			}
			w := e.post(path, auth, ctype, []byte(tc.body))
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %.300s", w.Code, tc.status, w.Body)
			}
			checkResponse(t, w, path == "/v1/chat/completions")
			if tc.status == 200 {
				return
			}
			var body errorBody
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			got := body.Error
			str := func(p *string) string {
				if p == nil {
					return ""
				}
				return *p
			}
			if got.Type != tc.typ || str(got.Param) != tc.param || str(got.Code) != tc.code || !strings.Contains(got.Message, tc.msg) {
				t.Fatalf("error %q param %q code %q: %q; want %q param %q code %q with %q", got.Type, str(got.Param), str(got.Code), got.Message,
					tc.typ, tc.param, tc.code, tc.msg)
			}
		})
	}
	if w := e.post("/v1/chat/completions", "Bearer "+keyAlice, "", []byte(`{"model":"tiny","messages":[{"role":"user","content":"hi"}]}`)); w.Code != http.StatusOK {
		t.Errorf("no Content-Type: %d, want 200 (curl -d sends none that matters)", w.Code)
	}
}
