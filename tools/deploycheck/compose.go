package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// loadCompose loads a compose file as `docker compose config` does: schema validation,
// interpolation (from an empty environment, so that the check does not depend on the
// shell it runs in: every variable must have a default), every profile enabled.
func loadCompose(ctx context.Context, file string, content []byte) (*types.Project, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, err
	}
	details := types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs, Content: content}},
		Environment: types.Mapping{},
	}
	p, err := loader.LoadWithContext(ctx, details, func(o *loader.Options) {
		o.Profiles = []string{"*"}
		o.SetProjectName("moemesh", false)
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return p, nil
}

// moemeshService is a compose service running the moemesh binary.
type moemeshService struct {
	name string
	svc  types.ServiceConfig
	cmd  string   // subcommand
	args []string // the whole command, subcommand first
}

func moemeshServices(p *types.Project) []moemeshService {
	var out []moemeshService
	for _, name := range mapsKeys(p.Services) {
		s := p.Services[name]
		if !strings.HasPrefix(s.Image, "moemesh:") && !strings.Contains(s.Image, "/moemesh:") {
			continue
		}
		if len(s.Command) == 0 {
			out = append(out, moemeshService{name: name, svc: s})
			continue
		}
		out = append(out, moemeshService{name: name, svc: s, cmd: s.Command[0], args: []string(s.Command)})
	}
	return out
}

// composeInvocations are the moemesh command lines of the compose file.
func composeInvocations(p *types.Project) []Invocation {
	var invs []Invocation
	for _, m := range moemeshServices(p) {
		invs = append(invs, Invocation{Where: "compose.yaml service " + m.name, Args: m.args})
	}
	return invs
}

// checkCompose asserts the topology of compose.yaml (see doc.go). Each problem is one error.
func checkCompose(p *types.Project, root string) []error {
	var errs []error
	fail := func(format string, a ...any) { errs = append(errs, fmt.Errorf("compose.yaml: "+format, a...)) }
	if len(p.DisabledServices) > 0 {
		fail("services disabled with every profile on: %v", mapsKeys(p.DisabledServices))
	}
	byCmd := map[string][]moemeshService{}
	for _, m := range moemeshServices(p) {
		if m.cmd == "" {
			fail("service %s runs the moemesh image without a command", m.name)
			continue
		}
		byCmd[m.cmd] = append(byCmd[m.cmd], m)
		// The image must come from the scratch Dockerfile (or the ascend one) and never
		// be pulled: "moemesh:local" on a public registry is somebody else's.
		if s := m.svc; s.Build == nil || !strings.HasPrefix(path.Base(filepath.ToSlash(s.Build.Dockerfile)), "Dockerfile") {
			fail("service %s: no build from deploy/docker", m.name)
		} else if s.PullPolicy != types.PullPolicyBuild && s.PullPolicy != types.PullPolicyNever {
			fail("service %s: pull_policy %q would look the moemesh image up on a registry; want build", m.name, s.PullPolicy)
		}
	}
	core := func(ms []moemeshService) (base, profiled []moemeshService) {
		for _, m := range ms {
			if len(m.svc.Profiles) == 0 {
				base = append(base, m)
			} else {
				profiled = append(profiled, m)
			}
		}
		return base, profiled
	}

	// NATS: three nodes, one cluster, each routed to the others on their cluster ports.
	nats, _ := core(byCmd["nats"])
	if len(nats) != 3 {
		fail("%d NATS nodes (moemesh nats) outside profiles, want 3", len(nats))
	}
	clientPort := map[string]string{}  // node -> client port
	clusterPort := map[string]string{} // node -> cluster port
	clusterNames := map[string]bool{}
	for _, n := range nats {
		cluster, _ := argValue(n.args, "cluster")
		if cluster == "" {
			fail("nats %s: no --cluster", n.name)
		}
		clusterNames[cluster] = true
		if v, _ := argValue(n.args, "name"); v == "" {
			fail("nats %s: no --name (JetStream in a cluster needs server names)", n.name)
		}
		for _, f := range []string{"host", "cluster-host"} {
			if v, _ := argValue(n.args, f); v != "0.0.0.0" {
				fail("nats %s: --%s %q, want 0.0.0.0 (the default 127.0.0.1 is unreachable from other containers)", n.name, f, v)
			}
		}
		clientPort[n.name] = valueOr(n.args, "port", "4222")
		clusterPort[n.name] = valueOr(n.args, "cluster-port", "6222")
		store, _ := argValue(n.args, "store")
		if !onNamedVolume(n.svc, store) {
			fail("nats %s: --store %q is not on a named volume (JetStream state would die with the container)", n.name, store)
		}
		auth, _ := argValue(n.args, "auth")
		if !isSecretPath(n.svc, auth) {
			fail("nats %s: --auth %q is not a compose secret of the service", n.name, auth)
		}
	}
	if len(clusterNames) > 1 {
		fail("NATS nodes name different clusters %v", mapsKeys(clusterNames))
	}
	for _, n := range nats {
		routes, _ := argValue(n.args, "routes")
		reached := map[string]bool{}
		for _, r := range splitList(routes) {
			host, port, err := hostPort(r)
			if err != nil {
				fail("nats %s: route %q: %v", n.name, r, err)
				continue
			}
			if want, ok := clusterPort[host]; !ok {
				fail("nats %s: route %q names no NATS node", n.name, r)
			} else if port != want {
				fail("nats %s: route %q: %s listens for routes on %s", n.name, r, host, want)
			}
			reached[host] = true
		}
		for _, other := range nats {
			if other.name != n.name && !reached[other.name] {
				fail("nats %s: no route to %s", n.name, other.name)
			}
		}
	}

	// Services: each connects to every node with its role's credentials and asks for a
	// registry replicated on every node.
	roles := map[string]string{"gateway": "gateway", "router": "router", "expertd": "expertd"}
	for _, cmd := range mapsKeys(roles) {
		for _, m := range byCmd[cmd] {
			urls, _ := argValue(m.args, "nats")
			reached := map[string]bool{}
			for _, u := range splitList(urls) {
				host, port, err := hostPort(u)
				if err != nil {
					fail("%s: --nats %q: %v", m.name, u, err)
					continue
				}
				if want, ok := clientPort[host]; !ok {
					fail("%s: --nats %q names no NATS node", m.name, u)
				} else if port != want {
					fail("%s: --nats %q: %s listens for clients on %s", m.name, u, host, want)
				}
				reached[host] = true
			}
			if len(reached) != len(nats) {
				fail("%s: --nats lists %d of the %d NATS nodes (a client should survive any node's loss)", m.name, len(reached), len(nats))
			}
			if u, _ := argValue(m.args, "nats-user"); u != roles[cmd] {
				fail("%s: --nats-user %q, want %q (its role in moemesh nats-config)", m.name, u, roles[cmd])
			}
			if pw, _ := argValue(m.args, "nats-password-file"); !isSecretPath(m.svc, pw) {
				fail("%s: --nats-password-file %q is not a compose secret of the service", m.name, pw)
			}
			if r, _ := argValue(m.args, "registry-replicas"); r != fmt.Sprint(len(nats)) {
				fail("%s: --registry-replicas %q, want %d (one per NATS node)", m.name, r, len(nats))
			}
		}
	}

	gateways, _ := core(byCmd["gateway"])
	if len(gateways) != 1 {
		fail("%d gateways, want 1", len(gateways))
	}
	for _, g := range gateways {
		addr := valueOr(g.args, "addr", ":8080")
		if !publishes(g.svc, strings.TrimPrefix(addr[strings.LastIndex(addr, ":"):], ":")) {
			fail("gateway %s: --addr %s is not published", g.name, addr)
		}
	}
	routers, _ := core(byCmd["router"])
	controllers := 0
	for _, r := range routers {
		if _, ok := argValue(r.args, "controller"); ok {
			controllers++
		}
	}
	if len(routers) != 2 || controllers != 1 {
		fail("%d routers of which %d with --controller, want 2 and 1", len(routers), controllers)
	}
	cpu, ascend := core(byCmd["expertd"])
	for _, d := range cpu {
		if dev := valueOr(d.args, "device", "cpu"); dev != "cpu" {
			fail("expertd %s outside profiles: --device %s, want cpu", d.name, dev)
		}
	}
	if len(cpu) != 3 {
		fail("%d expertd on CPU, want 3", len(cpu))
	}

	profiles := map[string]bool{}
	for _, s := range p.Services {
		for _, pr := range s.Profiles {
			profiles[pr] = true
		}
	}
	for _, want := range []string{"jaeger", "prometheus", "ascend"} {
		if !profiles[want] {
			fail("no service in profile %q", want)
		}
	}
	ascendDaemons := 0
	for _, d := range ascend {
		if !slices.Contains(d.svc.Profiles, "ascend") {
			continue
		}
		ascendDaemons++
		if dev, _ := argValue(d.args, "device"); dev != "cann" {
			fail("expertd %s in profile ascend: --device %q, want cann", d.name, dev)
		}
		errs = append(errs, checkAscendDevices(d)...)
	}
	if ascendDaemons == 0 {
		fail("no expertd in profile ascend")
	}
	errs = append(errs, checkPrometheus(p, root)...)
	return errs
}

// ascendDevices are the device files a container on an Ascend card needs besides the
// card's own /dev/davinciN, and ascendMounts the host's driver paths (compose.yaml cites
// Huawei's list).
var (
	ascendDevices = []string{"/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc"}
	ascendMounts  = []string{"/usr/local/Ascend/driver", "/usr/local/dcmi", "/usr/local/bin/npu-smi"}
)

func checkAscendDevices(d moemeshService) []error {
	var errs []error
	have := map[string]bool{}
	card := false
	for _, dev := range d.svc.Devices {
		have[dev.Source] = true
		if strings.HasPrefix(dev.Source, "/dev/davinci") && strings.Trim(strings.TrimPrefix(dev.Source, "/dev/davinci"), "0123456789") == "" && dev.Source != "/dev/davinci" {
			card = true
		}
	}
	if !card {
		errs = append(errs, fmt.Errorf("compose.yaml: expertd %s: no card device /dev/davinciN", d.name))
	}
	for _, want := range ascendDevices {
		if !have[want] {
			errs = append(errs, fmt.Errorf("compose.yaml: expertd %s: device %s not mapped", d.name, want))
		}
	}
	mounted := map[string]bool{}
	for _, v := range d.svc.Volumes {
		if v.Type == types.VolumeTypeBind && v.Source == v.Target {
			mounted[v.Target] = true
		}
	}
	for _, want := range ascendMounts {
		if !mounted[want] {
			errs = append(errs, fmt.Errorf("compose.yaml: expertd %s: host path %s not mounted at the same path", d.name, want))
		}
	}
	return errs
}

// checkPrometheus asserts that the prometheus profile's config scrapes the /metrics of
// every moemesh service outside profiles, at the port it serves on, and nothing else.
func checkPrometheus(p *types.Project, root string) []error {
	var errs []error
	var promFile string
	for _, s := range p.Services {
		if !slices.Contains(s.Profiles, "prometheus") {
			continue
		}
		for _, v := range s.Volumes {
			if v.Type == types.VolumeTypeBind && strings.HasSuffix(v.Target, "prometheus.yml") {
				promFile = v.Source
			}
		}
	}
	if promFile == "" {
		return []error{fmt.Errorf("compose.yaml: the prometheus profile mounts no prometheus.yml")}
	}
	if !filepath.IsAbs(promFile) {
		promFile = filepath.Join(root, promFile)
	}
	targets, err := promTargets(promFile)
	if err != nil {
		return []error{err}
	}
	want := map[string]string{} // host:port -> service
	for _, m := range moemeshServices(p) {
		if len(m.svc.Profiles) > 0 {
			continue
		}
		var addr string
		switch m.cmd {
		case "gateway":
			addr = valueOr(m.args, "addr", ":8080")
		case "router", "expertd":
			addr, _ = argValue(m.args, "metrics")
		}
		if addr == "" {
			if m.cmd == "router" || m.cmd == "expertd" {
				errs = append(errs, fmt.Errorf("compose.yaml: %s serves no --metrics", m.name))
			}
			continue
		}
		want[m.name+":"+addr[strings.LastIndex(addr, ":")+1:]] = m.name
	}
	for t := range targets {
		if _, ok := want[t]; !ok {
			errs = append(errs, fmt.Errorf("%s: target %s is no moemesh service's metrics address", promFile, t))
		}
	}
	for t := range want {
		if !targets[t] {
			errs = append(errs, fmt.Errorf("%s: %s is not scraped", promFile, t))
		}
	}
	return errs
}

func valueOr(args []string, name, def string) string {
	if v, ok := argValue(args, name); ok {
		return v
	}
	return def
}

// onNamedVolume: dir is at or under the target of one of the service's named volumes.
func onNamedVolume(s types.ServiceConfig, dir string) bool {
	if dir == "" {
		return false
	}
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeVolume && v.Source != "" && (dir == v.Target || strings.HasPrefix(dir, strings.TrimSuffix(v.Target, "/")+"/")) {
			return true
		}
	}
	return false
}

// isSecretPath: file is where compose mounts one of the service's secrets.
func isSecretPath(s types.ServiceConfig, file string) bool {
	for _, sec := range s.Secrets {
		target := sec.Target
		if target == "" {
			target = sec.Source
		}
		if !strings.HasPrefix(target, "/") {
			target = "/run/secrets/" + target
		}
		if file != "" && file == target {
			return true
		}
	}
	return false
}

func publishes(s types.ServiceConfig, port string) bool {
	for _, p := range s.Ports {
		if p.Target != 0 && fmt.Sprint(p.Target) == port && p.Published != "" {
			return true
		}
	}
	return false
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// hostPort splits nats://host:port.
func hostPort(raw string) (string, string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", err
	}
	if u.Scheme != "nats" && u.Scheme != "tls" {
		return "", "", fmt.Errorf("scheme %q, want nats:// or tls://", u.Scheme)
	}
	if u.Hostname() == "" || u.Port() == "" {
		return "", "", fmt.Errorf("want nats://HOST:PORT")
	}
	return u.Hostname(), u.Port(), nil
}

func readFile(p string) ([]byte, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("reading: %w", err)
	}
	return b, nil
}

func mapsKeys[M ~map[string]V, V any](m M) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
