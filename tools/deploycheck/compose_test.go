package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// repoRoot is the checkout this module lives in: the tests check the real files, and
// break copies of them.
var repoRoot = filepath.Join("..", "..")

func composeProblems(t *testing.T, content string) ([]error, error) {
	t.Helper()
	p, err := loadCompose(context.Background(), filepath.Join(repoRoot, "compose.yaml"), []byte(content))
	if err != nil {
		return nil, err
	}
	return checkCompose(p, repoRoot), nil
}

// Each assertion about compose.yaml can fail: a copy broken in one way gives the problem
// that names it, while the file as committed gives none.
func TestComposeChecks(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	good := string(b)
	if errs, err := composeProblems(t, good); err != nil || len(errs) != 0 {
		t.Fatalf("compose.yaml as committed: load error %v, problems %v", err, errs)
	}
	const allRoutes = `"nats://nats-1:6222,nats://nats-2:6222,nats://nats-3:6222"`
	for _, tc := range []struct {
		name     string
		old, new string
		count    int    // replacements (0: all)
		want     string // the problem (or load error) expected
	}{
		{"schema: unknown key", "  gateway:\n    <<: *moemesh\n", "  gateway:\n    <<: *moemesh\n    bogus: 1\n", 1, "bogus"},
		{"a node not routed to another", allRoutes, `"nats://nats-1:6222,nats://nats-2:6222"`, 1, "nats nats-1: no route to nats-3"},
		{"a route to a wrong port", allRoutes, `"nats://nats-1:6222,nats://nats-2:6222,nats://nats-3:4222"`, 1, "nats-3 listens for routes on 6222"},
		{"a route to a stranger", allRoutes, `"nats://nats-1:6222,nats://nats-2:6222,nats://nats-3:6222,nats://nats-9:6222"`, 1, `names no NATS node`},
		{"two nodes", "  nats-3:\n    <<: *nats\n    command: [nats,", "  nats-3:\n    <<: *nats\n    command: [status,", 1, "2 NATS nodes"},
		{"node on loopback", "command: [nats, --name, nats-2, --host, 0.0.0.0,", "command: [nats, --name, nats-2, --host, 127.0.0.1,", 1, "nats nats-2: --host \"127.0.0.1\""},
		{"store not on a volume", "volumes: [nats-2:/data]", "volumes: []", 1, `nats nats-2: --store "/data/nats" is not on a named volume`},
		{"auth not a secret", "  secrets:\n    - nats_auth\n", "  secrets: []\n", 1, "--auth \"/run/secrets/nats_auth\" is not a compose secret"},
		{"router without the controller", "--controller, ", "", 1, "2 routers of which 0 with --controller"},
		{"two controllers", "--id, router-2,", "--id, router-2, --controller,", 1, "2 routers of which 2 with --controller"},
		{"a daemon off CPU", "--id, expertd-3, --device, cpu", "--id, expertd-3, --device, cann", 1, "expertd expertd-3 outside profiles: --device cann, want cpu"},
		{"a client missing a node", `--nats, "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222",
      --nats-user, gateway`, `--nats, "nats://nats-1:4222,nats://nats-2:4222",
      --nats-user, gateway`, 1, "gateway: --nats lists 2 of the 3 NATS nodes"},
		{"a client on the route port", `--nats, "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222",
      --nats-user, gateway`, `--nats, "nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:6222",
      --nats-user, gateway`, 1, "nats-3 listens for clients on 4222"},
		{"wrong role", "--nats-user, expertd, --nats-password-file, /run/secrets/nats_expertd_password,\n      --registry-replicas, \"3\"]\n    secrets: [nats_expertd_password]\n    depends_on: [nats-1, nats-2, nats-3]\n  expertd-2:",
			"--nats-user, router, --nats-password-file, /run/secrets/nats_expertd_password,\n      --registry-replicas, \"3\"]\n    secrets: [nats_expertd_password]\n    depends_on: [nats-1, nats-2, nats-3]\n  expertd-2:", 1, `expertd-1: --nats-user "router", want "expertd"`},
		{"password not mounted", "    secrets: [nats_gateway_password]\n", "", 1, "gateway: --nats-password-file \"/run/secrets/nats_gateway_password\" is not a compose secret"},
		{"registry not replicated", "--nats-user, gateway, --nats-password-file, /run/secrets/nats_gateway_password,\n      --registry-replicas, \"3\"]",
			"--nats-user, gateway, --nats-password-file, /run/secrets/nats_gateway_password,\n      --registry-replicas, \"1\"]", 1, `gateway: --registry-replicas "1", want 3`},
		{"gateway not published", `ports: ["8080:8080"]`, "ports: []", 1, "gateway gateway: --addr :8080 is not published"},
		{"no jaeger profile", "profiles: [jaeger]", "", 1, `no service in profile "jaeger"`},
		{"no prometheus profile", "profiles: [prometheus]", "profiles: [metrics]", 1, `no service in profile "prometheus"`},
		{"ascend daemon on cpu", "--id, expertd-ascend, --device, cann", "--id, expertd-ascend, --device, cpu", 1, `expertd expertd-ascend in profile ascend: --device "cpu", want cann`},
		{"ascend without devmm_svm", "      - /dev/devmm_svm\n", "", 1, "device /dev/devmm_svm not mapped"},
		{"ascend without a card", "      - /dev/davinci0\n", "", 1, "no card device /dev/davinciN"},
		{"ascend without the driver", "      - /usr/local/Ascend/driver:/usr/local/Ascend/driver:ro\n", "", 1, "host path /usr/local/Ascend/driver not mounted"},
		{"image pulled", "  pull_policy: build\n", "", 1, "would look the moemesh image up on a registry"},
		{"metrics not scraped", "--id, router-2,\n      --metrics, \":9101\"", "--id, router-2,\n      --metrics, \":9111\"", 1, "router-2:9111 is not scraped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(good, tc.old) {
				t.Fatalf("compose.yaml no longer contains %q: update the test", tc.old)
			}
			broken := strings.Replace(good, tc.old, tc.new, tc.count)
			errs, err := composeProblems(t, broken)
			if err != nil {
				if strings.Contains(err.Error(), tc.want) {
					return
				}
				t.Fatalf("load error %v, want a problem containing %q", err, tc.want)
			}
			for _, e := range errs {
				if strings.Contains(e.Error(), tc.want) {
					return
				}
			}
			t.Fatalf("problems %v, want one containing %q", errs, tc.want)
		})
	}
}
