package gateway

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzDecodeBody: any body gives a request or a 400/413 error object, never a panic.
func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":["a"],"max_tokens":3}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}`,
		`{"model":"m","prompt":[[1,2,3]],"stop":"x"}`, `{"prompt":["a","b"]}`, `{"prompt":[1,"a"]}`,
		`[]`, `null`, `{"stream":"yes"}`, `{"messages":[{"content":{}}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, v := range []any{&chatRequest{}, &completionRequest{}} {
			r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
			if e := decodeBody(httptest.NewRecorder(), r, 1<<16, v); e != nil && e.Status != 400 && e.Status != 413 {
				t.Errorf("status %d for %q", e.Status, body)
			}
		}
	})
}
