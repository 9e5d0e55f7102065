package tenant

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// FuzzParse: the tenants file is operator input read at start and on every change. Any
// bytes give a Set or an error wrapping ErrConfig, never a panic (a panic would take the
// gateway down on a hot reload). A Set holds only tenants the checks allow, each reachable
// by id, and parsing is deterministic.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"tenants:\n  - id: a\n    api_keys: [" + hashA + "]\n    models: [m, \"*\"]\n    priority: batch\n    weight: 2.5\n" +
			"    limits: {requests_per_minute: 3, tokens_per_minute: 100, max_concurrent: 2, max_tokens: 9, max_prompt_tokens: 7}\n" +
			"  - id: b\n    api_keys: [\"" + HashKey("sk-b") + "\"]\nadmin_keys: [" + HashKey("admin") + "]\n",
		"tenants:\n  - id: a\n    api_keys: [sk-a]\n",
		"tenants:\n  - {id: a, api_keys: [" + hashA + "], weight: .nan}\n",
		"tenants:\n  - &x {id: a, api_keys: [" + hashA + "]}\n  - *x\n",
		"tenants: [ {id: ",
		"tenants:\n  - id: a\n    api_keys: [" + hashA + "]\n    limits: {max_tokens: 99999999999999999999}\n",
		"{\"tenants\": [{\"id\": \"a\", \"api_keys\": [\"" + hashA + "\"]}]}",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse("tenants.yaml", data)
		if err != nil {
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "tenants.yaml") {
				t.Fatalf("%v: does not wrap ErrConfig or name the file", err)
			}
			return
		}
		ids := s.IDs()
		if len(ids) == 0 || !slices.IsSorted(ids) {
			t.Fatalf("ids %q", ids)
		}
		for _, id := range ids {
			tn, ok := s.Get(id)
			l := tn.Limits
			switch {
			case !ok || tn.ID != id || id == "" || len(id) > maxID || strings.ContainsAny(id, " \t\r\n"):
				t.Fatalf("tenant %q", id)
			case !(tn.Weight > 0 && tn.Weight <= 1e6) || (tn.Priority != Interactive && tn.Priority != Batch):
				t.Fatalf("tenant %q: weight %g priority %q", id, tn.Weight, tn.Priority)
			case len(tn.APIKeys) == 0 || min(l.RequestsPerMinute, l.TokensPerMinute, l.MaxConcurrent, l.MaxTokens, l.MaxPromptTokens) < 0:
				t.Fatalf("tenant %q: %d keys, limits %+v", id, len(tn.APIKeys), l)
			}
		}
		again, err := Parse("tenants.yaml", data)
		if err != nil || !slices.Equal(again.IDs(), ids) {
			t.Fatalf("a second parse gave %q, %v", again.IDs(), err)
		}
	})
}
