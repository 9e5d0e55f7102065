package tenant

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var hashA = HashKey("sk-a")

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, err string
	}{
		{"ok", "tenants:\n  - id: a\n    api_keys: [" + hashA + "]\n    models: [m]\n    priority: batch\n    limits: {requests_per_minute: 3}\n", ""},
		{"plain key", "tenants:\n  - id: a\n    api_keys: [sk-a]\n", "sha256:<hex>"},
		{"short hash", "tenants:\n  - id: a\n    api_keys: [\"sha256:abcd\"]\n", "hex digits"},
		{"no keys", "tenants:\n  - id: a\n", "api_keys is empty"},
		{"duplicate id", "tenants:\n  - id: a\n    api_keys: [" + hashA + "]\n  - id: a\n    api_keys: [" + HashKey("b") + "]\n", "duplicate id"},
		{"shared key", "tenants:\n  - id: a\n    api_keys: [" + hashA + "]\n  - id: b\n    api_keys: [" + hashA + "]\n", "also a key of tenant \"a\""},
		{"bad priority", "tenants:\n  - id: a\n    api_keys: [" + hashA + "]\n    priority: urgent\n", "priority \"urgent\""},
		{"negative limit", "tenants:\n  - id: a\n    api_keys: [" + hashA + "]\n    limits: {max_tokens: -1}\n", "limits.max_tokens"},
		{"unknown field", "tenants:\n  - id: a\n    api_keys: [" + hashA + "]\n    wieght: 2\n", "wieght"},
		{"empty", "tenants: []\n", "no tenants"},
		{"not yaml", "tenants: [ {id: ", "tenants.yaml"},
		{"tag on a list", "admin_keys: !x\n", "YAML parser failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse("tenants.yaml", []byte(tc.yaml))
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				a, ok := s.Lookup("sk-a")
				if !ok || a.ID != "a" || a.Weight != 1 || a.Priority != Batch || !a.Allows("m") || a.Allows("n") || a.Limits.RequestsPerMinute != 3 {
					t.Errorf("tenant %+v, %v", a, ok)
				}
				if _, ok := s.Lookup("sk-b"); ok {
					t.Error("an unknown key found a tenant")
				}
				return
			}
			if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("error %v, want ErrConfig mentioning %q", err, tc.err)
			}
		})
	}
}

func TestStoreKeepsLastGood(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tenants.yaml")
	// Replace the file by a rename, as config management does: writing in place lets a
	// poll read it empty, half written.
	write := func(s string) {
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("tenants:\n  - id: a\n    api_keys: [" + hashA + "]\n")
	st, err := Load(path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	reloads := make(chan error, 16)
	st.onReload = func(err error) { reloads <- err }
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { st.Watch(ctx, 5*time.Millisecond) })
	defer func() { cancel(); wg.Wait() }()
	next := func() error {
		select {
		case err := <-reloads:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("no reload within 5s")
			return nil
		}
	}

	write("tenants: [ {id: ")
	if err := next(); err == nil {
		t.Fatal("a broken file reloaded without error")
	}
	if _, ok := st.Set().Lookup("sk-a"); !ok {
		t.Fatal("a broken file replaced the good tenants")
	}
	write("tenants:\n  - id: b\n    api_keys: [" + HashKey("sk-b") + "]\n")
	if err := next(); err != nil {
		t.Fatal(err)
	}
	if _, ok := st.Set().Lookup("sk-b"); !ok {
		t.Error("the new tenant is missing")
	}
	if _, ok := st.Set().Lookup("sk-a"); ok {
		t.Error("the removed tenant is still there")
	}
}

func TestOpen(t *testing.T) {
	s := Open()
	if d, ok := s.Lookup(""); !ok || d.ID != DefaultID || !d.Allows("anything") || !s.IsOpen() {
		t.Errorf("open set: %+v %v", d, ok)
	}
}

func TestAdminKeys(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, err string
		admins          map[string]bool // key → IsAdmin
	}{
		{"separate key", "admin_keys: [" + HashKey("sk-op") + "]\ntenants:\n  - id: a\n    api_keys: [" + hashA + "]\n", "",
			map[string]bool{"sk-op": true, "sk-a": false, "": false, "sk-x": false}},
		{"tenant key is admin too", "admin_keys: [" + hashA + "]\ntenants:\n  - id: a\n    api_keys: [" + hashA + "]\n", "",
			map[string]bool{"sk-a": true}},
		{"none", "tenants:\n  - id: a\n    api_keys: [" + hashA + "]\n", "", map[string]bool{"sk-a": false}},
		{"plain admin key", "admin_keys: [sk-op]\ntenants:\n  - id: a\n    api_keys: [" + hashA + "]\n", "admin_keys[0]", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse("tenants.yaml", []byte(tc.yaml))
			if tc.err != "" {
				if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("error %v, want ErrConfig mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for k, want := range tc.admins {
				if got := s.IsAdmin(k); got != want {
					t.Errorf("IsAdmin(%q) = %v, want %v", k, got, want)
				}
			}
		})
	}
	if !Open().IsAdmin("") {
		t.Error("an open set refuses the admin endpoints")
	}
}
