package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// copyK8s copies deploy/k8s to a temporary directory, with one file's text replaced.
func copyK8s(t *testing.T, file, old, new string) string {
	t.Helper()
	src := filepath.Join(repoRoot, "deploy", "k8s")
	dst := t.TempDir()
	found := file == ""
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if filepath.ToSlash(rel) == file {
			if !strings.Contains(string(b), old) {
				t.Fatalf("%s no longer contains %q: update the test", rel, old)
			}
			b = []byte(strings.Replace(string(b), old, new, 1))
			found = true
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Fatalf("no file %s", file)
	}
	return dst
}

// k8sProblems builds and checks the base and the ascend overlay of dir.
func k8sProblems(dir string) ([]error, error) {
	base, err := buildDir(dir)
	if err != nil {
		return nil, err
	}
	ascend, err := buildDir(filepath.Join(dir, "ascend"))
	if err != nil {
		return nil, err
	}
	if err := allFilesBuilt(dir); err != nil {
		return nil, err
	}
	var errs []error
	errs = append(errs, checkWorkloads(base)...)
	errs = append(errs, checkWorkloads(ascend)...)
	errs = append(errs, checkBase(base)...)
	errs = append(errs, checkAscend(ascend)...)
	return errs, nil
}

// Each assertion about the manifests can fail: a copy broken in one way gives the problem
// (or decoding error) naming it, while the manifests as committed give none.
func TestK8sChecks(t *testing.T) {
	if errs, err := k8sProblems(copyK8s(t, "", "", "")); err != nil || len(errs) != 0 {
		t.Fatalf("deploy/k8s as committed: error %v, problems %v", err, errs)
	}
	for _, tc := range []struct {
		name, file, old, new, want string
	}{
		{"unknown field", "gateway.yaml", "readinessProbe:", "readinesProbe:", `unknown field "readinesProbe"`},
		{"wrong kind", "gateway.yaml", "kind: Deployment", "kind: Deploymnet", `kind "Deploymnet"`},
		{"wrong type", "expertd.yaml", "replicas: 3", "replicas: three", "replicas"},
		{"no readiness probe", "expertd.yaml", "readinessProbe:", "startupProbe:", "container expertd: no readinessProbe"},
		{"probe on an undeclared port", "gateway.yaml", "              path: /readyz\n              port: http", "              path: /readyz\n              port: web", "readinessProbe port web is not a port"},
		{"gateway readiness on healthz", "gateway.yaml", "path: /readyz", "path: /healthz", "readinessProbe wants httpGet /readyz"},
		{"selector off the pods", "expertd.yaml", "    matchLabels:\n      app.kubernetes.io/name: expertd", "    matchLabels:\n      app.kubernetes.io/name: expert", "does not match the pod labels"},
		{"unset env in args", "expertd.yaml", "--id=$(POD_NAME)", "--id=$(POD)", "uses $(POD)"},
		{"orphan file", "kustomization.yaml", "  - expertd.yaml\n", "", "expertd.yaml is neither a resource nor a patch"},
		{"secret with a value", "secret.yaml", "router.password: REPLACE-ME", "router.password: hunter2", "never commit credentials"},
		{"password from an unprojected key", "expertd.yaml", "--nats-password-file=/etc/moemesh-nats/expertd.password", "--nats-password-file=/etc/moemesh-nats/gateway.password", "projects no item at gateway.password"},
		{"nats of two", "nats.yaml", "replicas: 3", "replicas: 2", "StatefulSet nats: 2 replicas, want 3"},
		{"routes missing a pod", "nats.yaml", ",nats://nats-2.nats:6222", "", "nats routes lack nats-2.nats"},
		{"service not headless", "nats.yaml", "  clusterIP: None\n", "", "not headless"},
		{"nats readiness without js", "nats.yaml", "path: /healthz?js-enabled-only=true\n              port: monitor\n            periodSeconds: 5", "path: /healthz\n              port: monitor\n            periodSeconds: 5", "nats readinessProbe: want httpGet /healthz?js-enabled-only=true"},
		{"store off the claim", "nats.yaml", "--store=/data/nats", "--store=/tmp/nats", "--store /tmp/nats is not on a volumeClaimTemplate"},
		{"client missing a pod", "gateway.yaml", ",nats://nats-2.nats:4222", "", "Deployment gateway: --nats lacks nats://nats-2.nats:4222"},
		{"registry not replicated", "router.yaml", "--registry-replicas=3", "--registry-replicas=1", `--registry-replicas "1", want 3`},
		{"no controller", "router.yaml", "            - --controller\n", "", "2 router replicas of which 0 with --controller"},
		{"three daemons no more", "expertd.yaml", "replicas: 3", "replicas: 4", "4 expertd replicas, want 3"},
		{"overlay without the card", "ascend/expertd-ascend.yaml", "            limits:\n              huawei.com/Ascend910: 1\n", "", "no resources.limits huawei.com/Ascend910"},
		{"overlay on cpu", "ascend/expertd-ascend.yaml", "--device=cann", "--device=cpu", `--device "cpu", want cann`},
		{"overlay without the driver", "ascend/expertd-ascend.yaml", "              mountPath: /usr/local/Ascend/driver\n", "              mountPath: /opt/driver\n", "host path /usr/local/Ascend/driver not mounted"},
		{"patch of nothing", "ascend/expertd-ascend.yaml", "  name: expertd\n", "  name: expert\n", "patches Deployment expert, which no resource defines"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs, err := k8sProblems(copyK8s(t, tc.file, tc.old, tc.new))
			if err != nil {
				if strings.Contains(err.Error(), tc.want) {
					return
				}
				t.Fatalf("error %v, want a problem containing %q", err, tc.want)
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

// A directory of YAML that no known kustomization builds is refused, so a new overlay
// cannot go unchecked.
func TestUnknownOverlay(t *testing.T) {
	dir := copyK8s(t, "", "", "")
	if err := os.MkdirAll(filepath.Join(dir, "gpu"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "gpu", "kustomization.yaml"), []byte("resources: [../]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := allFilesBuilt(dir); err == nil || !strings.Contains(err.Error(), "does not know") {
		t.Fatalf("allFilesBuilt = %v, want an unknown kustomization", err)
	}
}
