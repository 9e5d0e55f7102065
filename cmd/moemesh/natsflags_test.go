package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/moemesh/moemesh/internal/testpki"
	"github.com/moemesh/moemesh/mesh"
)

const testSecret = "s3cret-pa55" // must never show in an error or a log

func TestNATSFlagsResolve(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pw := write("pw", testSecret+"\n")
	crlf := write("crlf", testSecret+"\r\n")
	bare := write("bare", testSecret)
	twoNL := write("two", testSecret+"\n\n")
	empty := write("empty", "\n")
	pki := testpki.New(t)
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		role     mesh.Role // the command's
		wantUser string
		wantRole mesh.Role // inbox role; "" = default inbox
		wantPW   mesh.Secret
		wantRepl int
		// wantOpen is the count the registry is opened with: 0 unless given, so that no
		// daemon started without the flag rescales an R3 registry to the default.
		wantOpen int
		bad      string // part of the error
	}{
		{name: "nothing: open server", role: mesh.RoleGateway, wantRepl: 1},
		{name: "file, newline trimmed", args: []string{"--nats-user", "gateway", "--nats-password-file", pw}, role: mesh.RoleGateway,
			wantUser: "gateway", wantRole: mesh.RoleGateway, wantPW: testSecret, wantRepl: 1},
		{name: "file, CRLF trimmed", args: []string{"--nats-user", "router", "--nats-password-file", crlf}, role: mesh.RoleRouter,
			wantUser: "router", wantRole: mesh.RoleRouter, wantPW: testSecret, wantRepl: 1},
		{name: "file without newline", args: []string{"--nats-user", "expertd", "--nats-password-file", bare}, role: mesh.RoleExpertd,
			wantUser: "expertd", wantRole: mesh.RoleExpertd, wantPW: testSecret, wantRepl: 1},
		{name: "env user and file", env: map[string]string{envNATSUser: "expertd", envNATSPasswordFile: pw}, role: mesh.RoleExpertd,
			wantUser: "expertd", wantRole: mesh.RoleExpertd, wantPW: testSecret, wantRepl: 1},
		{name: "env password", env: map[string]string{envNATSUser: "router", envNATSPassword: testSecret}, role: mesh.RoleRouter,
			wantUser: "router", wantRole: mesh.RoleRouter, wantPW: testSecret, wantRepl: 1},
		{name: "flag beats env", args: []string{"--nats-user", "admin"}, env: map[string]string{envNATSUser: "router", envNATSPassword: testSecret},
			role: mesh.RoleAdmin, wantUser: "admin", wantRole: mesh.RoleAdmin, wantPW: testSecret, wantRepl: 1},
		{name: "user naming a role keeps its inbox", args: []string{"--nats-user", "admin", "--nats-password-file", pw}, role: mesh.RoleGateway,
			wantUser: "admin", wantRole: mesh.RoleAdmin, wantPW: testSecret, wantRepl: 1},
		{name: "other user name: the command's inbox", args: []string{"--nats-user", "gw-eu", "--nats-password-file", pw}, role: mesh.RoleGateway,
			wantUser: "gw-eu", wantRole: mesh.RoleGateway, wantPW: testSecret, wantRepl: 1},
		{name: "replicas flag", args: []string{"--registry-replicas", "3"}, wantRepl: 3, wantOpen: 3},
		{name: "replicas env", env: map[string]string{envRegistryReplicas: "3"}, wantRepl: 3, wantOpen: 3},
		{name: "replicas 1 given", args: []string{"--registry-replicas", "1"}, wantRepl: 1, wantOpen: 1},
		{name: "TLS files", args: []string{"--nats-ca", pki.CA, "--nats-cert", pki.Cert, "--nats-key", pki.Key}, wantRepl: 1},
		{name: "TLS from env", env: map[string]string{envNATSCA: pki.CA}, wantRepl: 1},

		{name: "file and env password", args: []string{"--nats-user", "router", "--nats-password-file", pw}, env: map[string]string{envNATSPassword: testSecret}, bad: "both set"},
		{name: "missing file", args: []string{"--nats-user", "router", "--nats-password-file", filepath.Join(dir, "nope")}, bad: "--nats-password-file"},
		{name: "empty file", args: []string{"--nats-user", "router", "--nats-password-file", empty}, bad: "is empty"},
		{name: "two trailing newlines", args: []string{"--nats-user", "router", "--nats-password-file", twoNL}, bad: "control character"},
		{name: "user without password", args: []string{"--nats-user", "router"}, bad: "needs a password"},
		{name: "password without user", env: map[string]string{envNATSPassword: testSecret}, bad: "needs --nats-user"},
		{name: "cert without key", args: []string{"--nats-cert", pki.Cert}, bad: "go together"},
		{name: "CA not PEM", args: []string{"--nats-ca", pw}, bad: "--nats-ca"},
		{name: "CA missing", args: []string{"--nats-ca", filepath.Join(dir, "ca.none")}, bad: "--nats-ca"},
		{name: "key of another cert", args: []string{"--nats-cert", pki.Cert, "--nats-key", pki.ClientKey}, bad: "--nats-cert/--nats-key"},
		{name: "replicas 0", args: []string{"--registry-replicas", "0"}, bad: "want 1 to 5"},
		{name: "replicas 7", args: []string{"--registry-replicas", "7"}, bad: "want 1 to 5"},
		{name: "replicas env not a number", env: map[string]string{envRegistryReplicas: "three"}, bad: envRegistryReplicas},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var nf natsFlags
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			role := tc.role
			if role == "" {
				role = mesh.RoleAdmin
			}
			nf.register(fs, role, true, func(k string) string { return tc.env[k] })
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			s, err := nf.resolve()
			if tc.bad != "" {
				if err == nil || !strings.Contains(err.Error(), tc.bad) {
					t.Fatalf("err %v, want one with %q", err, tc.bad)
				}
				if strings.Contains(err.Error(), testSecret) {
					t.Fatalf("the error shows the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := s.registryReplicas(); got != tc.wantOpen {
				t.Fatalf("registry opened with %d replicas, want %d", got, tc.wantOpen)
			}
			if s.user != tc.wantUser || s.role != tc.wantRole || s.password != tc.wantPW || s.replicas != tc.wantRepl {
				t.Fatalf("user %q role %q replicas %d (password right: %v), want %q %q %d", s.user, s.role, s.replicas,
					s.password == tc.wantPW, tc.wantUser, tc.wantRole, tc.wantRepl)
			}
			if strings.Contains(fmt.Sprintf("%v %+v %#v", s, *s, *s), testSecret) {
				t.Fatal("the settings print the password")
			}
		})
	}
}

// TestNATSFlagsConnect dials a server with authorization and mutual TLS through the flags:
// the right user gets in and can use its inbox; a wrong password fails fast with an error
// naming the user and the flags, never the password.
func TestNATSFlagsConnect(t *testing.T) {
	pki := testpki.New(t)
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "gw.pw")
	if err := os.WriteFile(pwFile, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	auth, err := mesh.NewAuthConfig(map[mesh.Role]mesh.Secret{mesh.RoleGateway: testSecret, mesh.RoleRouter: "router-pw"}, "m")
	if err != nil {
		t.Fatal(err)
	}
	authFile := filepath.Join(dir, "auth.conf")
	if err := writeNATSConfig(authFile, auth); err != nil {
		t.Fatal(err)
	}
	srv, err := mesh.StartServer(mesh.ServerConfig{Port: -1, AuthFile: authFile, TLSCert: pki.Cert, TLSKey: pki.Key, TLSCA: pki.CA})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()

	dial := func(args ...string) (string, error) {
		var nf natsFlags
		fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
		nf.register(fs, mesh.RoleGateway, true, func(string) string { return "" })
		if err := fs.Parse(append([]string{"--nats-ca", pki.CA, "--nats-cert", pki.Cert, "--nats-key", pki.Key}, args...)); err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		nc, _, err := nf.connect(ctx, srv.ClientURL(), "test", slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			return logs.String(), err
		}
		defer nc.Close()
		// A request through the role's inbox: the server refuses any other prefix.
		sub, err := nc.SubscribeSync(nc.NewInbox())
		if err != nil {
			return logs.String(), err
		}
		if err := nc.Flush(); err != nil {
			return logs.String(), err
		}
		if !strings.HasPrefix(sub.Subject, mesh.InboxPrefix(mesh.RoleGateway)+".") || !nc.TLSRequired() {
			return logs.String(), fmt.Errorf("inbox %s, TLS %v", sub.Subject, nc.TLSRequired())
		}
		return logs.String(), nc.LastError()
	}
	logs, err := dial("--nats-user", "gateway", "--nats-password-file", pwFile)
	if err != nil {
		t.Fatalf("right password: %v", err)
	}
	if !strings.Contains(logs, "user=gateway") || strings.Contains(logs, testSecret) {
		t.Fatalf("log %q: want the user, never the password", logs)
	}
	start := time.Now()
	wrong := filepath.Join(dir, "wrong.pw")
	if err := os.WriteFile(wrong, []byte("router-pw"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = dial("--nats-user", "gateway", "--nats-password-file", wrong)
	if err == nil || !strings.Contains(err.Error(), `user "gateway"`) || !strings.Contains(err.Error(), "--nats-password-file") {
		t.Fatalf("wrong password: %v", err)
	}
	// Refused at once, not retried until the 20 s deadline like an unreachable server.
	if strings.Contains(err.Error(), "router-pw") || time.Since(start) > 10*time.Second {
		t.Fatalf("wrong password: %v after %v", err, time.Since(start))
	}
	t.Logf("wrong password: %v", err)
}

func TestCertReloader(t *testing.T) {
	a, b := testpki.New(t), testpki.New(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	install := func(p testpki.PKI, mt time.Time) {
		for src, dst := range map[string]string{p.Cert: cert, p.Key: key} {
			data, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dst, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(dst, mt, mt); err != nil {
				t.Fatal(err)
			}
		}
	}
	serial := func(c *tls.Certificate) string {
		x, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return x.Issuer.CommonName
	}
	t0 := time.Now().Add(-time.Hour)
	install(a, t0)
	r, err := newCertReloader(cert, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := serial(r.get())
	for _, step := range []struct {
		name   string
		change func()
		want   string
	}{
		{"unchanged", func() {}, first},
		{"renewed", func() { install(b, t0.Add(time.Minute)) }, serial(mustPair(t, b))},
		{"half-written renewal keeps the last good", func() {
			_ = os.WriteFile(cert, []byte("garbage"), 0o600)
			_ = os.Chtimes(cert, t0.Add(2*time.Minute), t0.Add(2*time.Minute))
		}, serial(mustPair(t, b))},
		{"completed renewal", func() { install(a, t0.Add(3*time.Minute)) }, first},
	} {
		step.change()
		r.mu.Lock()
		r.checked = time.Time{} // past the check interval
		r.mu.Unlock()
		if got := serial(r.get()); got != step.want {
			t.Fatalf("%s: certificate of %s, want %s", step.name, got, step.want)
		}
	}
	if _, err := newCertReloader(filepath.Join(dir, "none"), key, nil); err == nil {
		t.Fatal("missing certificate accepted")
	}
}

func mustPair(t *testing.T, p testpki.PKI) *tls.Certificate {
	c, err := tls.LoadX509KeyPair(p.Cert, p.Key)
	if err != nil {
		t.Fatal(err)
	}
	return &c
}
