package mesh

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moemesh/moemesh/internal/testpki"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestServerStartStop(t *testing.T) {
	s, err := StartServer(ServerConfig{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") || s.Port() <= 0 {
		t.Fatalf("ClientURL %q, port %d", s.ClientURL(), s.Port())
	}
	store := s.NATS().JetStreamConfig().StoreDir
	if _, err := os.Stat(store); err != nil {
		t.Fatalf("store dir: %v", err)
	}
	opts := s.NATS().JetStreamConfig()
	if opts.MaxMemory != DefaultJetStreamMaxMemory || opts.MaxStore != DefaultJetStreamMaxStore {
		t.Fatalf("JetStream limits %d / %d, want the bounded defaults", opts.MaxMemory, opts.MaxStore)
	}

	nc := connect(t, s.ClientURL())
	if got := nc.MaxPayload(); got != DefaultMaxPayload {
		t.Fatalf("max payload %d, want %d", got, DefaultMaxPayload)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// JetStream answers at once: a KV bucket can be made right after StartServer returns.
	if _, err := js.CreateKeyValue(timeout(t, 5*time.Second), jetstream.KeyValueConfig{Bucket: "probe"}); err != nil {
		t.Fatal(err)
	}

	s.Shutdown()
	s.Shutdown() // idempotent
	if _, err := os.Stat(store); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary store %s not removed: %v", store, err)
	}
	waitFor(t, 2*time.Second, func() error {
		if nc.IsConnected() {
			return errors.New("client still connected")
		}
		return nil
	})
}

func TestServerKeepsGivenStore(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, ServerConfig{StoreDir: dir, MaxPayload: 1 << 20, Name: "n1"})
	s.Shutdown()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("caller's store dir removed: %v", err)
	}
}

func TestServerPortInUse(t *testing.T) {
	s := startServer(t, ServerConfig{})
	start := time.Now()
	_, err := StartServer(ServerConfig{Port: s.Port()})
	if !errors.Is(err, ErrServer) {
		t.Fatalf("second server on port %d: err = %v", s.Port(), err)
	}
	// The listen failure is reported at once, not after the readiness timeout.
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v to report %v", d, err)
	}
	t.Logf("%v after %v", err, time.Since(start).Round(time.Millisecond))
}

func TestServerConfigErrors(t *testing.T) {
	for name, cfg := range map[string]ServerConfig{
		"cluster without name":   {ClusterName: "c"},
		"routes without cluster": {Routes: []string{"nats://127.0.0.1:6222"}},
		"bad route":              {Name: "n", ClusterName: "c", ClusterPort: -1, Routes: []string{"::bad"}},
		"monitor without port":   {Port: -1, Monitor: "127.0.0.1"},
		"monitor port zero":      {Port: -1, Monitor: "127.0.0.1:0"},
		"monitor port text":      {Port: -1, Monitor: "127.0.0.1:http"},
	} {
		if _, err := StartServer(cfg); !errors.Is(err, ErrServer) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestServerCluster(t *testing.T) {
	// Two nodes, each given the full route list (JetStream clustering sizes its meta group
	// from it): a message crosses the route.
	pa, pb := freePort(t), freePort(t)
	routes := []string{fmt.Sprintf("nats://127.0.0.1:%d", pa), fmt.Sprintf("nats://127.0.0.1:%d", pb)}
	a := startServer(t, ServerConfig{Name: "a", ClusterName: "c", ClusterPort: pa, Routes: routes})
	b := startServer(t, ServerConfig{Name: "b", ClusterName: "c", ClusterPort: pb, Routes: routes})
	waitFor(t, 5*time.Second, func() error {
		if a.NATS().NumRoutes() == 0 || b.NATS().NumRoutes() == 0 {
			return errors.New("no route yet")
		}
		return nil
	})
	ncA, ncB := connect(t, a.ClientURL()), connect(t, b.ClientURL())
	sub, err := ncA.SubscribeSync("x")
	if err != nil {
		t.Fatal(err)
	}
	if err := ncA.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() error {
		if err := ncB.Publish("x", []byte("hi")); err != nil {
			return err
		}
		_, err := sub.NextMsg(50 * time.Millisecond)
		return err
	})
}

func TestServerMonitor(t *testing.T) {
	s := startServer(t, ServerConfig{Port: -1, Monitor: "127.0.0.1:-1"})
	base := s.MonitorURL()
	if !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("MonitorURL %q", base)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	// The readiness probe of the k8s manifests and the cluster test.
	for _, path := range []string{"/healthz?js-enabled-only=true", "/healthz", "/varz", "/jsz"} {
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", path, resp.Status)
		}
	}
	if off := startServer(t, ServerConfig{Port: -1}); off.MonitorURL() != "" {
		t.Fatalf("monitoring on without Monitor: %q", off.MonitorURL())
	}
}

// writeAuthFile writes the authorization of NewAuthConfig(authPasswords()) to a file.
func writeAuthFile(t *testing.T) string {
	t.Helper()
	cfg, err := NewAuthConfig(authPasswords(), "m")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := cfg.WriteAuthConfig(&b); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "auth.conf")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestServerAuthFile(t *testing.T) {
	s := startServer(t, ServerConfig{AuthFile: writeAuthFile(t)})
	if got := s.Users(); len(got) != len(Roles) {
		t.Fatalf("users %v, want one per role", got)
	}
	pw := authPasswords()
	for _, tc := range []struct {
		name string
		opts []nats.Option
		ok   bool
	}{
		{"anonymous", nil, false},
		{"wrong password", []nats.Option{nats.UserInfo("gateway", "not-"+string(pw[RoleGateway]))}, false},
		{"another role's password", []nats.Option{nats.UserInfo("gateway", string(pw[RoleRouter]))}, false},
		{"unknown user", []nats.Option{nats.UserInfo("janitor", string(pw[RoleGateway]))}, false},
		{"gateway", []nats.Option{nats.UserInfo("gateway", string(pw[RoleGateway]))}, true},
		{"expertd", []nats.Option{nats.UserInfo("expertd", string(pw[RoleExpertd]))}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := nats.Connect(s.ClientURL(), append(tc.opts, nats.Timeout(2*time.Second), nats.NoReconnect())...)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				nc.Close()
				return
			}
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("err %v, want an authorization violation", err)
			}
		})
	}

	// Connect (what services use) gives up on a refused login at once rather than
	// retrying it until its deadline like an unreachable server.
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := Connect(ctx, s.ClientURL(), "wrong", nats.UserInfo("router", "nope"), InboxOption(RoleRouter))
	if !errors.Is(err, ErrConnect) || !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("Connect with a wrong password: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second || strings.Contains(err.Error(), "within") {
		t.Fatalf("wrong password reported after %v: %v", d, err)
	}
}

func TestServerAuthFileErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, file, want string
	}{
		{"missing", filepath.Join(dir, "none.conf"), "no such file"},
		{"not a config", write("bad.conf", "authorization {\n  users = [\n"), "auth file"},
		{"other settings", write("listen.conf", "listen: 0.0.0.0:4222\nauthorization { user: a, password: b }\n"), `"listen"`},
		{"no user", write("empty.conf", "authorization {}\n"), "no user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := StartServer(ServerConfig{Port: -1, AuthFile: tc.file})
			if !errors.Is(err, ErrServer) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrServer mentioning %q", err, tc.want)
			}
		})
	}
}

func TestServerTLS(t *testing.T) {
	pki := testpki.New(t)
	s := startServer(t, ServerConfig{TLSCert: pki.Cert, TLSKey: pki.Key})
	if !s.TLS() || !strings.HasPrefix(s.ClientURL(), "tls://127.0.0.1:") {
		t.Fatalf("TLS %v, url %s", s.TLS(), s.ClientURL())
	}
	mtls := startServer(t, ServerConfig{TLSCert: pki.Cert, TLSKey: pki.Key, TLSCA: pki.CA})
	for _, tc := range []struct {
		name string
		url  string
		opts []nats.Option
		ok   bool
	}{
		{"server TLS, trusted CA", s.ClientURL(), []nats.Option{nats.RootCAs(pki.CA)}, true},
		{"server TLS, nats:// URL upgrades", strings.Replace(s.ClientURL(), "tls://", "nats://", 1), []nats.Option{nats.RootCAs(pki.CA)}, true},
		{"server TLS, CA unknown", s.ClientURL(), nil, false},
		{"mutual TLS, client cert", mtls.ClientURL(), []nats.Option{nats.RootCAs(pki.CA), nats.ClientCert(pki.ClientCert, pki.ClientKey)}, true},
		{"mutual TLS, no client cert", mtls.ClientURL(), []nats.Option{nats.RootCAs(pki.CA)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := nats.Connect(tc.url, append(tc.opts, nats.Timeout(2*time.Second), nats.NoReconnect())...)
			if err == nil {
				defer nc.Close()
				if !tc.ok {
					t.Fatal("connected")
				}
				if !nc.TLSRequired() {
					t.Fatal("connected without TLS")
				}
				return
			}
			if tc.ok {
				t.Fatal(err)
			}
			t.Logf("refused: %v", err)
		})
	}

	// A plain client speaks the protocol without a handshake: the server answers nothing
	// but its INFO (which demands TLS) and closes the connection.
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port())), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	rd := bufio.NewReader(conn)
	info, err := rd.ReadString('\n')
	if err != nil || !strings.Contains(info, `"tls_required":true`) {
		t.Fatalf("INFO %q, %v", info, err)
	}
	if _, err := conn.Write([]byte("CONNECT {\"verbose\":false}\r\nPING\r\n")); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(rd)
	if strings.Contains(string(rest), "PONG") {
		t.Fatalf("plain client answered: %q", rest)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("plain connection left open: %q", rest)
	}
	t.Logf("plain client got %q, then %v", rest, err)
}

func TestServerTLSErrors(t *testing.T) {
	pki := testpki.New(t)
	for name, cfg := range map[string]ServerConfig{
		"key without cert": {Port: -1, TLSKey: pki.Key},
		"CA alone":         {Port: -1, TLSCA: pki.CA},
		"missing cert":     {Port: -1, TLSCert: pki.Cert + ".none", TLSKey: pki.Key},
		"key of another":   {Port: -1, TLSCert: pki.Cert, TLSKey: pki.ClientKey},
	} {
		if _, err := StartServer(cfg); !errors.Is(err, ErrServer) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}
