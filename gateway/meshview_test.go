package gateway

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/moemesh/moemesh/gateway/tenant"
	"github.com/moemesh/moemesh/internal/meshtest"
	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/mesh"
)

const keyAdmin = "sk-admin-op"

// TestMeshEndpoint: /v1/mesh over a real mesh (two expert daemons on the env's server,
// serving model "tiny") shows their cards, experts and replica counts to an admin key,
// and refuses everyone else with OpenAI-style errors.
func TestMeshEndpoint(t *testing.T) {
	path := writeTenants(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "tenants.yaml")
	if err := os.WriteFile(path, append([]byte("admin_keys: [\""+tenant.HashKey(keyAdmin)+"\"]\n"), data...), 0o644); err != nil {
		t.Fatal(err)
	}
	e := startEnv(t, path)
	st, err := stack.Start(ctx(t), stack.Config{ModelDir: meshtest.Checkpoint(t, "qwen3_moe", "bf16"), NATSURL: e.natsURL,
		Model: "tiny", Daemons: 2, Replicated: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })

	get := func(key, query string, v any) int {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx(t), http.MethodGet, e.url+"/v1/mesh"+query, nil)
		if err != nil {
			t.Fatal(err)
		}
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("%s: body: %v", query, err)
		}
		return resp.StatusCode
	}
	for _, c := range []struct {
		name, key, query string
		status           int
		typ, code        string
	}{
		{"no key", "", "", http.StatusUnauthorized, "invalid_request_error", "invalid_api_key"},
		{"unknown key", "sk-nobody", "", http.StatusUnauthorized, "invalid_request_error", "invalid_api_key"},
		{"tenant key", keyAlice, "", http.StatusForbidden, "permission_error", "admin_required"},
		{"unknown model", keyAdmin, "?model=nope", http.StatusNotFound, "invalid_request_error", "model_not_found"},
	} {
		var body errorBody
		if got := get(c.key, c.query, &body); got != c.status || body.Error.Type != c.typ || body.Error.Code == nil || *body.Error.Code != c.code {
			t.Errorf("%s: %d %+v, want %d %s %s", c.name, got, body.Error, c.status, c.typ, c.code)
		}
	}

	var one struct {
		Object string          `json:"object"`
		Data   []mesh.Snapshot `json:"data"`
	}
	if got := get(keyAdmin, "?model=tiny", &one); got != http.StatusOK || one.Object != "list" || len(one.Data) != 1 {
		t.Fatalf("admin: %d %+v", got, one)
	}
	snap := one.Data[0]
	var cards []string
	for _, c := range snap.Cards {
		cards = append(cards, c.Card)
		if c.Experts == 0 || len(c.Ready) == 0 || c.Daemon == "" || c.Device == "" {
			t.Errorf("card %+v: no experts or identity", c)
		}
	}
	if want := st.CardIDs(); !slices.Equal(cards, want) {
		t.Errorf("cards %v, want %v", cards, want)
	}
	moe := st.Model.MoELayers()
	if len(snap.Replicas) != len(moe) {
		t.Fatalf("replicas of %d layers, want %d", len(snap.Replicas), len(moe))
	}
	for _, lr := range snap.Replicas {
		// Spread over 2 daemons with expert 0 replicated: 2 replicas of expert 0, 1 of the rest.
		want := make([]int, st.Model.Experts)
		for i := range want {
			want[i] = 1
		}
		want[0] = 2
		if !slices.Equal(lr.Replicas, want) || len(lr.Missing) != 0 {
			t.Errorf("layer %d replicas %v missing %v, want %v", lr.Layer, lr.Replicas, lr.Missing, want)
		}
	}

	// Without ?model, every served model is listed; those without daemons have no cards.
	var all struct {
		Data []mesh.Snapshot `json:"data"`
	}
	if got := get(keyAdmin, "", &all); got != http.StatusOK || len(all.Data) != len(e.g.names) {
		t.Fatalf("all models: %d, %d snapshots", got, len(all.Data))
	}
	for _, s := range all.Data {
		if (s.Model == "tiny") != (len(s.Cards) == 2) {
			t.Errorf("model %s: %d cards", s.Model, len(s.Cards))
		}
	}
}
