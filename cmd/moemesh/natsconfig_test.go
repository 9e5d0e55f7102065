package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/moemesh/moemesh/mesh"
)

func TestRolePasswords(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	gw := write("gw", "gw-pass\n")
	crlf := write("crlf", "r-pass\r\n")
	empty := write("empty", "\n")
	for _, tc := range []struct {
		name  string
		files []string
		env   map[string]string
		want  map[mesh.Role]mesh.Secret
		bad   string // part of the error
	}{
		{name: "file, newline dropped", files: []string{"gateway=" + gw}, want: map[mesh.Role]mesh.Secret{mesh.RoleGateway: "gw-pass"}},
		{name: "CRLF and case", files: []string{"Router=" + crlf}, want: map[mesh.Role]mesh.Secret{mesh.RoleRouter: "r-pass"}},
		{name: "env", env: map[string]string{"MOEMESH_NATS_PASSWORD_EXPERTD": "ex"}, want: map[mesh.Role]mesh.Secret{mesh.RoleExpertd: "ex"}},
		{name: "file and env", files: []string{"gateway=" + gw}, env: map[string]string{"MOEMESH_NATS_PASSWORD_ADMIN": "ad"},
			want: map[mesh.Role]mesh.Secret{mesh.RoleGateway: "gw-pass", mesh.RoleAdmin: "ad"}},
		{name: "none", bad: "no passwords"},
		{name: "both ways", files: []string{"gateway=" + gw}, env: map[string]string{"MOEMESH_NATS_PASSWORD_GATEWAY": "x"}, bad: "both"},
		{name: "twice", files: []string{"gateway=" + gw, "gateway=" + crlf}, bad: "twice"},
		{name: "unknown role", files: []string{"janitor=" + gw}, bad: "ROLE=PATH"},
		{name: "no path", files: []string{"gateway"}, bad: "ROLE=PATH"},
		{name: "missing file", files: []string{"gateway=" + filepath.Join(dir, "nope")}, bad: "no such file"},
		{name: "empty file", files: []string{"gateway=" + empty}, bad: "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := rolePasswords(tc.files, func(k string) string { return tc.env[k] })
			if tc.bad != "" {
				if err == nil || !strings.Contains(err.Error(), tc.bad) {
					t.Fatalf("err %v, want one with %q", err, tc.bad)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d roles, want %d", len(got), len(tc.want))
			}
			for r, w := range tc.want {
				if got[r] != w {
					t.Errorf("%s: wrong password", r)
				}
			}
		})
	}
}

func TestNATSConfigCommand(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "router.pw")
	if err := os.WriteFile(pwFile, []byte("router-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MOEMESH_NATS_PASSWORD_GATEWAY", "gw-secret")
	out := filepath.Join(dir, "auth.conf")
	c := newNATSConfig(&globals{logLevel: "error", logFormat: "text"})
	c.SetArgs([]string{"--model", "m1,m2", "--out", out, "--password-file", "router=" + pwFile})
	if err := c.Execute(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	opts, err := server.ProcessConfigFile(out)
	if err != nil {
		t.Fatalf("nats-server does not load the file: %v", err)
	}
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		users[u.Username] = u
	}
	if len(users) != 2 || users["router"] == nil || users["gateway"] == nil {
		t.Fatalf("users %v", users)
	}
	if users["router"].Password != "router-secret" || users["gateway"].Password != "gw-secret" {
		t.Error("passwords not as given")
	}
	if p := users["router"].Permissions; p == nil || p.Response == nil || !contains(p.Subscribe.Allow, "moe.v1.m2.gen") {
		t.Errorf("router permissions %+v", p)
	}

	// Missing --out and missing passwords are refused before anything is written.
	t.Setenv("MOEMESH_NATS_PASSWORD_GATEWAY", "")
	for _, args := range [][]string{{"--model", "m1"}, {"--out", filepath.Join(dir, "none.conf")}} {
		c := newNATSConfig(&globals{logLevel: "error", logFormat: "text"})
		c.SetArgs(args)
		c.SetErr(&strings.Builder{})
		c.SetOut(&strings.Builder{}) // cobra's usage text on a refused run
		if err := c.Execute(); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "none.conf")); !os.IsNotExist(err) {
		t.Errorf("a refused run wrote a file: %v", err)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
