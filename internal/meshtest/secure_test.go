package meshtest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/moemesh/moemesh/internal/testpki"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/proto"
)

// TestSecureMesh runs the locked-down deployment of docs/security.md as processes:
// `moemesh nats-config` writes a user per role, `moemesh nats --auth` serves them over
// mutual TLS, expertd, router (with the placement controller) and gateway each log in as
// their own role with a client certificate, the gateway serves HTTPS, and the OpenAI SDK
// gets an answer through it without a permission violation anywhere. A
// service with a wrong password stops with a clear error, and no process prints a
// password.
func TestSecureMesh(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs the binary")
	}
	Binary(t)
	t0 := time.Now()
	dir := Checkpoint(t, "qwen3_moe", "bf16")
	const name = "secure"
	work := t.TempDir()
	pki := testpki.New(t)

	passwords := map[mesh.Role]string{}
	var pwArgs []string
	pwFile := func(role mesh.Role) string { return filepath.Join(work, string(role)+".pw") }
	for _, r := range mesh.Roles {
		b := make([]byte, 12)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		passwords[r] = "pw-" + hex.EncodeToString(b)
		// The newline an editor or `echo` leaves: the services trim it.
		if err := os.WriteFile(pwFile(r), []byte(passwords[r]+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		pwArgs = append(pwArgs, "--password-file", string(r)+"="+pwFile(r))
	}
	authFile := filepath.Join(work, "auth.conf")
	if out, err := run(t, append([]string{"nats-config", "--model", name, "--out", authFile}, pwArgs...)...); err != nil {
		t.Fatalf("nats-config: %v\n%s", err, out)
	}

	natsAddr := freeAddr(t)
	url := "tls://" + natsAddr
	_, port, _ := splitHostPort(natsAddr)
	procs := []*chaosProc{startChaosProc(t, "nats", "nats", "--port", fmt.Sprint(port), "--auth", authFile,
		"--tls-cert", pki.Cert, "--tls-key", pki.Key, "--tls-ca", pki.CA, "--log-level", "info")}
	tlsOpts := []nats.Option{nats.RootCAs(pki.CA), nats.ClientCert(pki.Cert, pki.Key)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	admin, err := mesh.Connect(ctx, url, "secure-admin", append(tlsOpts,
		nats.UserInfo("admin", passwords[mesh.RoleAdmin]), mesh.InboxOption(mesh.RoleAdmin))...)
	if err != nil {
		t.Fatalf("admin on the secured server: %v\n%s", err, procs[0].out.String())
	}
	defer admin.Close()
	// The server refuses what it should: anonymous, and a plain connection.
	if nc, err := nats.Connect(url, append(tlsOpts, nats.Timeout(2*time.Second), nats.NoReconnect())...); err == nil {
		nc.Close()
		t.Fatal("anonymous client accepted")
	}
	if nc, err := nats.Connect(url, nats.UserInfo("admin", passwords[mesh.RoleAdmin]), nats.Timeout(2*time.Second), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("client without the CA and a certificate accepted")
	}

	service := func(role mesh.Role) []string {
		return []string{"--nats", url, "--nats-user", string(role), "--nats-password-file", pwFile(role),
			"--nats-ca", pki.CA, "--nats-cert", pki.Cert, "--nats-key", pki.Key, "--log-level", "info"}
	}
	procs = append(procs, startChaosProc(t, "expertd", append([]string{"expertd", "--model", dir, "--name", name, "--id", "d1",
		"--experts", "none", "--heartbeat", "200ms"}, service(mesh.RoleExpertd)...)...))
	// The daemon starts empty: the router's placement controller assigns its experts, so
	// the controller's writes (assignments, leader lease) pass the router's permissions.
	procs = append(procs, startChaosProc(t, "router", append([]string{"router", "--model", dir, "--name", name, "--id", "r1", "--controller"},
		service(mesh.RoleRouter)...)...))
	gwAddr := freeAddr(t)
	procs = append(procs, startChaosProc(t, "gateway", append([]string{"gateway", "--model", dir, "--name", name, "--addr", gwAddr,
		"--tls-cert", pki.Cert, "--tls-key", pki.Key}, service(mesh.RoleGateway)...)...))

	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(pki.CA)
	if err != nil || !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("CA: %v", err)
	}
	httpc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer httpc.CloseIdleConnections()
	base := "https://" + gwAddr
	WaitFor(t, 40*time.Second, func() error {
		for _, p := range procs {
			select {
			case <-p.done:
				return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.out.String())
			default:
			}
		}
		resp, err := httpc.Get(base + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	})
	t.Logf("secured mesh ready after %v", time.Since(t0).Round(time.Millisecond))

	// Plain HTTP gets no answer from the HTTPS port.
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + gwAddr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("gateway answered plain HTTP")
		}
	}

	client := openai.NewClient(option.WithBaseURL(base+"/v1/"), option.WithHTTPClient(httpc), option.WithMaxRetries(0),
		option.WithRequestTimeout(30*time.Second))
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	resp, err := client.Chat.Completions.New(rctx, openai.ChatCompletionNewParams{Model: name, MaxTokens: openai.Int(8), Seed: openai.Int(3),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Is the mesh locked down?")}})
	if err != nil {
		t.Fatalf("chat over HTTPS: %v", err)
	}
	if len(resp.Choices) != 1 || resp.Usage.CompletionTokens == 0 || resp.Usage.CompletionTokens > 8 {
		t.Fatalf("answer %+v", resp)
	}
	t.Logf("answer %q (%d tokens) after %v", resp.Choices[0].Message.Content, resp.Usage.CompletionTokens, time.Since(t0).Round(time.Millisecond))

	// A daemon with another role's password stops at once, saying whom NATS refused.
	start := time.Now()
	out, err := run(t, "expertd", "--model", dir, "--name", name, "--id", "d2", "--experts", "all",
		"--nats", url, "--nats-user", "expertd", "--nats-password-file", pwFile(mesh.RoleGateway),
		"--nats-ca", pki.CA, "--nats-cert", pki.Cert, "--nats-key", pki.Key)
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || !strings.Contains(out, `NATS refused user "expertd"`) || !strings.Contains(out, "--nats-password-file") {
		t.Fatalf("expertd with a wrong password: %v\n%s", err, out)
	}
	// Refused at once, not retried until mesh.Connect's 10 s wait like an unreachable
	// server ("... within 10s: ...").
	if d := time.Since(start); d > 15*time.Second || strings.Contains(out, "within") {
		t.Fatalf("wrong password reported after %v:\n%s", d, out)
	}
	t.Logf("wrong password reported after %v", time.Since(start).Round(time.Millisecond))
	outputs := map[string]string{"expertd with a wrong password": out}
	for _, p := range procs {
		outputs[p.name] = p.out.String()
	}
	for who, text := range outputs {
		// Every role's permissions cover its whole job: the server refused nothing but the
		// registry create a reader tries when it comes before the daemon that creates the
		// bucket (mesh.OpenRegistry then waits for it).
		for _, line := range strings.Split(text, "\n") {
			if strings.Contains(strings.ToLower(line), "violation") && !strings.Contains(line, `"$JS.API.STREAM.CREATE.KV_`+proto.Bucket(name)+`"`) &&
				who != "expertd with a wrong password" {
				t.Errorf("%s hit a permission violation: %s", who, line)
			}
		}
		for r, pw := range passwords {
			if strings.Contains(text, pw) {
				t.Errorf("%s printed the %s password", who, r)
			}
		}
	}
	if !strings.Contains(outputs["nats"], "nats authorization on") || !strings.Contains(outputs["gateway"], "gateway serves HTTPS") {
		t.Errorf("security not logged:\nnats: %s\ngateway: %s", outputs["nats"], outputs["gateway"])
	}
}
