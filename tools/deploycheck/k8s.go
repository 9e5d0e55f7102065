package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// kustomization is the subset of kustomize's Kustomization the manifests may use; decoded
// strictly, so a field outside it is an error here rather than a surprise in kustomize.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources,omitempty"`
	Patches    []struct {
		Path string `json:"path"`
	} `json:"patches,omitempty"`
	Labels []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors,omitempty"`
		IncludeTemplates bool              `json:"includeTemplates,omitempty"`
	} `json:"labels,omitempty"`
}

// object is one decoded Kubernetes object and the file it came from.
type object struct {
	file string
	kind string
	name string
	obj  any // *corev1.Service, *appsv1.Deployment, ...
}

// build is what `kubectl apply -k dir` would apply: the resources with the patches on.
type build struct {
	dir     string
	objects []object
}

// newTyped maps apiVersion and kind to the API type; any other kind is refused so that a
// typo in either is caught.
func newTyped(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "v1 Service":
		return &corev1.Service{}, nil
	case "v1 Secret":
		return &corev1.Secret{}, nil
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "apps/v1 StatefulSet":
		return &appsv1.StatefulSet{}, nil
	}
	return nil, fmt.Errorf("apiVersion %q kind %q: not a kind these manifests use (Service, Secret, ConfigMap, apps/v1 Deployment or StatefulSet)", apiVersion, kind)
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeFile decodes every document of a YAML file strictly into its API type.
func decodeFile(file string) ([]object, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var objs []object
	for i, doc := range docSep.Split(string(b), -1) {
		if isBlankYAML(doc) {
			continue
		}
		o, err := decodeDoc([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i+1, err)
		}
		o.file = file
		objs = append(objs, o)
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("%s: no objects", file)
	}
	return objs, nil
}

func decodeDoc(doc []byte) (object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return object{}, err
	}
	typed, err := newTyped(tm.APIVersion, tm.Kind)
	if err != nil {
		return object{}, err
	}
	if err := yaml.UnmarshalStrict(doc, typed); err != nil {
		return object{}, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	name := typed.(metav1.ObjectMetaAccessor).GetObjectMeta().GetName()
	if name == "" {
		return object{}, fmt.Errorf("%s without metadata.name", tm.Kind)
	}
	return object{kind: tm.Kind, name: name, obj: typed}, nil
}

func isBlankYAML(doc string) bool {
	for _, line := range strings.Split(doc, "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
			return false
		}
	}
	return true
}

// buildDir applies dir's kustomization: resources (files, or directories with their own
// kustomization) and then strategic merge patches, as kustomize does. Every YAML file of
// dir must be a resource or a patch: a file nobody applies is a silent mistake.
func buildDir(dir string) (*build, error) {
	kfile := filepath.Join(dir, "kustomization.yaml")
	b, err := os.ReadFile(kfile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		return nil, fmt.Errorf("%s: %w", kfile, err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		return nil, fmt.Errorf("%s: apiVersion %q kind %q, want kustomize.config.k8s.io/v1beta1 Kustomization", kfile, k.APIVersion, k.Kind)
	}
	used := map[string]bool{"kustomization.yaml": true}
	out := &build{dir: dir}
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("%s: resource %s: %w", kfile, r, err)
		}
		used[filepath.Clean(r)] = true
		if st.IsDir() {
			sub, err := buildDir(p)
			if err != nil {
				return nil, err
			}
			out.objects = append(out.objects, sub.objects...)
			continue
		}
		objs, err := decodeFile(p)
		if err != nil {
			return nil, err
		}
		out.objects = append(out.objects, objs...)
	}
	for _, pt := range k.Patches {
		if pt.Path == "" {
			return nil, fmt.Errorf("%s: a patch without a path (inline patches are not checked)", kfile)
		}
		used[filepath.Clean(pt.Path)] = true
		if err := out.patch(filepath.Join(dir, pt.Path)); err != nil {
			return nil, err
		}
	}
	names, err := filepath.Glob(filepath.Join(dir, "*.y*ml"))
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		if !used[filepath.Base(n)] {
			return nil, fmt.Errorf("%s: %s is neither a resource nor a patch of it", kfile, filepath.Base(n))
		}
	}
	return out, nil
}

// patch applies a strategic merge patch file to the object it names (kind and name).
func (b *build) patch(file string) error {
	patches, err := decodeFile(file) // strict: a patch is a partial object of its kind
	if err != nil {
		return err
	}
	for _, p := range patches {
		i := slices.IndexFunc(b.objects, func(o object) bool { return o.kind == p.kind && o.name == p.name })
		if i < 0 {
			return fmt.Errorf("%s: patches %s %s, which no resource defines", file, p.kind, p.name)
		}
		raw, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		// The patch as written (not re-encoded: zero values of the typed decode would
		// become explicit fields and overwrite the original).
		var docs []string
		for _, d := range docSep.Split(string(raw), -1) {
			if !isBlankYAML(d) {
				docs = append(docs, d)
			}
		}
		pj, err := yaml.YAMLToJSON([]byte(docs[slices.IndexFunc(patches, func(o object) bool { return o.name == p.name && o.kind == p.kind })]))
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		orig, err := json.Marshal(b.objects[i].obj)
		if err != nil {
			return err
		}
		var origDoc, patchDoc any
		if err := json.Unmarshal(orig, &origDoc); err != nil {
			return err
		}
		if err := json.Unmarshal(pj, &patchDoc); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		mergedDoc, err := strategicMerge(origDoc, patchDoc, reflect.TypeOf(b.objects[i].obj))
		if err != nil {
			return fmt.Errorf("%s: applying to %s %s: %w", file, p.kind, p.name, err)
		}
		merged, err := json.Marshal(mergedDoc)
		if err != nil {
			return err
		}
		typed, _ := newTyped(apiVersionOf(p.kind), p.kind)
		dec := json.NewDecoder(bytes.NewReader(merged))
		dec.DisallowUnknownFields()
		if err := dec.Decode(typed); err != nil {
			return fmt.Errorf("%s: the patched %s %s: %w", file, p.kind, p.name, err)
		}
		b.objects[i].obj = typed
		b.objects[i].file += " + " + filepath.Base(file)
	}
	return nil
}

func apiVersionOf(kind string) string {
	switch kind {
	case "Deployment", "StatefulSet":
		return "apps/v1"
	}
	return "v1"
}

// workload is a Deployment or StatefulSet seen through what the checks need.
type workload struct {
	o        object
	replicas int32
	selector *metav1.LabelSelector
	pod      corev1.PodTemplateSpec
	claims   []string // volumeClaimTemplates
}

func (b *build) workloads() []workload {
	var ws []workload
	for _, o := range b.objects {
		switch t := o.obj.(type) {
		case *appsv1.Deployment:
			ws = append(ws, workload{o: o, replicas: deref(t.Spec.Replicas, 1), selector: t.Spec.Selector, pod: t.Spec.Template})
		case *appsv1.StatefulSet:
			w := workload{o: o, replicas: deref(t.Spec.Replicas, 1), selector: t.Spec.Selector, pod: t.Spec.Template}
			for _, c := range t.Spec.VolumeClaimTemplates {
				w.claims = append(w.claims, c.Name)
			}
			ws = append(ws, w)
		}
	}
	return ws
}

func (b *build) secret(name string) *corev1.Secret {
	for _, o := range b.objects {
		if s, ok := o.obj.(*corev1.Secret); ok && s.Name == name {
			return s
		}
	}
	return nil
}

func (b *build) services() []*corev1.Service {
	var out []*corev1.Service
	for _, o := range b.objects {
		if s, ok := o.obj.(*corev1.Service); ok {
			out = append(out, s)
		}
	}
	return out
}

func deref(p *int32, def int32) int32 {
	if p == nil {
		return def
	}
	return *p
}

// moemesh containers: the image's entrypoint is the binary, so args are the command line.
func isMoemesh(c corev1.Container) bool {
	return strings.HasPrefix(c.Image, "moemesh:") || strings.Contains(c.Image, "/moemesh:")
}

// k8sInvocations are the moemesh command lines of a build, with $(VAR) references
// resolved from the container's env (as the kubelet does) for the flag check.
func k8sInvocations(b *build) []Invocation {
	var invs []Invocation
	for _, w := range b.workloads() {
		for _, c := range w.pod.Spec.Containers {
			if isMoemesh(c) {
				invs = append(invs, Invocation{Where: fmt.Sprintf("%s %s/%s container %s", w.o.file, w.o.kind, w.o.name, c.Name), Args: c.Args})
			}
		}
	}
	return invs
}

// varRef matches $(NAME), which the kubelet expands in args from the container's env.
var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// checkWorkloads holds for every build: what Kubernetes would accept but not run right.
func checkWorkloads(b *build) []error {
	var errs []error
	for _, w := range b.workloads() {
		where := fmt.Sprintf("%s: %s %s", w.o.file, w.o.kind, w.o.name)
		fail := func(format string, a ...any) { errs = append(errs, fmt.Errorf(where+": "+format, a...)) }
		sel, err := metav1.LabelSelectorAsSelector(w.selector)
		if err != nil || w.selector == nil {
			fail("selector: %v", err)
		} else if !sel.Matches(labelSet(w.pod.Labels)) {
			fail("selector %v does not match the pod labels %v", sel, w.pod.Labels)
		}
		volumes := map[string]corev1.Volume{}
		for _, v := range w.pod.Spec.Volumes {
			volumes[v.Name] = v
		}
		for _, c := range w.pod.Spec.Containers {
			cfail := func(format string, a ...any) { fail("container %s: "+format, append([]any{c.Name}, a...)...) }
			if c.ReadinessProbe == nil {
				cfail("no readinessProbe")
			}
			for name, p := range map[string]*corev1.Probe{"readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe, "startupProbe": c.StartupProbe} {
				if p != nil && p.HTTPGet != nil && !hasPort(c, p.HTTPGet.Port.String()) {
					cfail("%s port %s is not a port of the container", name, p.HTTPGet.Port.String())
				}
			}
			env := map[string]bool{}
			for _, e := range c.Env {
				env[e.Name] = true
			}
			for _, a := range c.Args {
				for _, m := range varRef.FindAllStringSubmatch(a, -1) {
					if !env[m[1]] {
						cfail("arg %q uses $(%s), which is not in its env (the kubelet would leave it as is)", a, m[1])
					}
				}
			}
			mounts := map[string]corev1.VolumeMount{}
			for _, m := range c.VolumeMounts {
				mounts[m.MountPath] = m
				if _, ok := volumes[m.Name]; !ok && !slices.Contains(w.claims, m.Name) {
					cfail("volumeMount %s names no volume", m.Name)
				}
			}
			if !isMoemesh(c) {
				continue
			}
			// Files the flags name must be in a mounted Secret that has the key.
			for _, f := range []string{"nats-password-file", "auth"} {
				p, ok := argValue(c.Args, f)
				if !ok {
					continue
				}
				if err := secretFile(b, volumes, c.VolumeMounts, p); err != nil {
					cfail("--%s %s: %v", f, p, err)
				}
			}
			if store, ok := argValue(c.Args, "store"); ok && !underClaim(c.VolumeMounts, w.claims, store) {
				cfail("--store %s is not on a volumeClaimTemplate (the JetStream store would die with the pod)", store)
			}
		}
	}
	return errs
}

func hasPort(c corev1.Container, port string) bool {
	for _, p := range c.Ports {
		if p.Name == port || fmt.Sprint(p.ContainerPort) == port {
			return true
		}
	}
	return false
}

// secretFile checks that file is an item of a Secret volume mounted in the container and
// that the Secret (in the build) has the item's key.
func secretFile(b *build, volumes map[string]corev1.Volume, mounts []corev1.VolumeMount, file string) error {
	for _, m := range mounts {
		rel, err := filepath.Rel(m.MountPath, file)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		v, ok := volumes[m.Name]
		if !ok || v.Secret == nil {
			return fmt.Errorf("mounted from %s, which is not a Secret volume", m.Name)
		}
		key := rel
		if len(v.Secret.Items) > 0 {
			// With items, only the listed keys are projected into the volume.
			i := slices.IndexFunc(v.Secret.Items, func(it corev1.KeyToPath) bool { return it.Path == rel })
			if i < 0 {
				return fmt.Errorf("volume %s projects no item at %s", m.Name, rel)
			}
			key = v.Secret.Items[i].Key
		}
		s := b.secret(v.Secret.SecretName)
		if s == nil {
			return fmt.Errorf("Secret %s is not in the manifests", v.Secret.SecretName)
		}
		_, inData := s.Data[key]
		_, inString := s.StringData[key]
		if !inData && !inString {
			return fmt.Errorf("Secret %s has no key %s", s.Name, key)
		}
		return nil
	}
	return fmt.Errorf("not under any volumeMount")
}

func underClaim(mounts []corev1.VolumeMount, claims []string, dir string) bool {
	for _, m := range mounts {
		if slices.Contains(claims, m.Name) && (dir == m.MountPath || strings.HasPrefix(dir, strings.TrimSuffix(m.MountPath, "/")+"/")) {
			return true
		}
	}
	return false
}

type labelSet map[string]string

func (l labelSet) Has(k string) bool              { _, ok := l[k]; return ok }
func (l labelSet) Get(k string) string            { return l[k] }
func (l labelSet) Lookup(k string) (string, bool) { v, ok := l[k]; return v, ok }

// checkBase asserts the topology of the base manifests (see doc.go).
func checkBase(b *build) []error {
	var errs []error
	fail := func(format string, a ...any) { errs = append(errs, fmt.Errorf(b.dir+": "+format, a...)) }
	byCmd := map[string][]workload{}
	for _, w := range b.workloads() {
		for _, c := range w.pod.Spec.Containers {
			if isMoemesh(c) && len(c.Args) > 0 {
				byCmd[c.Args[0]] = append(byCmd[c.Args[0]], w)
			}
		}
	}
	container := func(w workload) corev1.Container {
		for _, c := range w.pod.Spec.Containers {
			if isMoemesh(c) {
				return c
			}
		}
		return corev1.Container{}
	}

	// NATS: one StatefulSet of 3 behind a headless Service; routes to every pod.
	var clientHosts []string
	natsReplicas := 0
	if ns := byCmd["nats"]; len(ns) != 1 || ns[0].o.kind != "StatefulSet" {
		fail("want one StatefulSet running moemesh nats, have %d workloads", len(ns))
	} else {
		w := ns[0]
		sts := w.o.obj.(*appsv1.StatefulSet)
		c := container(w)
		natsReplicas = int(w.replicas)
		if w.replicas != 3 {
			fail("StatefulSet %s: %d replicas, want 3", sts.Name, w.replicas)
		}
		svc := findService(b, sts.Spec.ServiceName)
		switch {
		case svc == nil:
			fail("StatefulSet %s: serviceName %q is no Service", sts.Name, sts.Spec.ServiceName)
		case svc.Spec.ClusterIP != corev1.ClusterIPNone:
			fail("Service %s: not headless (clusterIP: None), so the pods get no stable names for routes", svc.Name)
		case !svc.Spec.PublishNotReadyAddresses:
			fail("Service %s: publishNotReadyAddresses is off: a forming cluster could not resolve its peers", svc.Name)
		case !selects(svc, w.pod.Labels):
			fail("Service %s does not select the pods of %s", svc.Name, sts.Name)
		}
		clusterPort := valueOr(c.Args, "cluster-port", "6222")
		clientPort := valueOr(c.Args, "port", "4222")
		routes, _ := argValue(c.Args, "routes")
		have := map[string]bool{}
		for _, r := range splitList(routes) {
			host, port, err := hostPort(r)
			if err != nil {
				fail("nats route %q: %v", r, err)
				continue
			}
			if port != clusterPort {
				fail("nats route %q: the cluster port is %s", r, clusterPort)
			}
			have[host] = true
		}
		for i := 0; i < int(w.replicas); i++ {
			host := fmt.Sprintf("%s-%d.%s", sts.Name, i, sts.Spec.ServiceName)
			if !have[host] {
				fail("nats routes lack %s", host)
			}
			clientHosts = append(clientHosts, host+":"+clientPort)
		}
		if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz?js-enabled-only=true" {
			fail("nats readinessProbe: want httpGet /healthz?js-enabled-only=true on the --monitor port")
		} else if mon, _ := argValue(c.Args, "monitor"); !strings.HasSuffix(mon, ":"+portNumber(c, p.HTTPGet.Port.String())) {
			fail("nats readinessProbe port %s is not --monitor %q", p.HTTPGet.Port.String(), mon)
		}
		if len(w.claims) == 0 {
			fail("StatefulSet %s: no volumeClaimTemplates (a PVC per pod)", sts.Name)
		}
	}

	// Services reach every NATS pod and replicate the registry on each.
	for _, cmd := range []string{"gateway", "router", "expertd"} {
		for _, w := range byCmd[cmd] {
			c := container(w)
			urls, _ := argValue(c.Args, "nats")
			have := map[string]bool{}
			for _, u := range splitList(urls) {
				if h, p, err := hostPort(u); err == nil {
					have[h+":"+p] = true
				}
			}
			for _, h := range clientHosts {
				if !have[h] {
					fail("%s %s: --nats lacks nats://%s", w.o.kind, w.o.name, h)
				}
			}
			if r, _ := argValue(c.Args, "registry-replicas"); r != fmt.Sprint(natsReplicas) {
				fail("%s %s: --registry-replicas %q, want %d", w.o.kind, w.o.name, r, natsReplicas)
			}
			if u, _ := argValue(c.Args, "nats-user"); u != cmd {
				fail("%s %s: --nats-user %q, want %q", w.o.kind, w.o.name, u, cmd)
			}
		}
	}

	if gws := byCmd["gateway"]; len(gws) != 1 {
		fail("%d gateway workloads, want 1", len(gws))
	} else {
		w := gws[0]
		c := container(w)
		probePath(&errs, b.dir, w, c.ReadinessProbe, "readinessProbe", "/readyz")
		probePath(&errs, b.dir, w, c.LivenessProbe, "livenessProbe", "/healthz")
		found := false
		for _, s := range b.services() {
			if selects(s, w.pod.Labels) {
				found = true
			}
		}
		if !found {
			fail("no Service selects the gateway")
		}
	}

	var routers, controllers int32
	for _, w := range byCmd["router"] {
		c := container(w)
		routers += w.replicas
		if _, ok := argValue(c.Args, "controller"); ok {
			controllers += w.replicas
		}
		probePath(&errs, b.dir, w, c.ReadinessProbe, "readinessProbe", "/readyz")
		if _, ok := argValue(c.Args, "metrics"); !ok {
			fail("%s %s: no --metrics, so no /readyz for its probe", w.o.kind, w.o.name)
		}
	}
	if routers != 2 || controllers != 1 {
		fail("%d router replicas of which %d with --controller, want 2 and 1", routers, controllers)
	}

	var daemons int32
	for _, w := range byCmd["expertd"] {
		c := container(w)
		daemons += w.replicas
		if dev := valueOr(c.Args, "device", "cpu"); dev != "cpu" {
			fail("%s %s: --device %s in the base, want cpu", w.o.kind, w.o.name, dev)
		}
		probePath(&errs, b.dir, w, c.ReadinessProbe, "readinessProbe", "/readyz")
	}
	if daemons != 3 {
		fail("%d expertd replicas, want 3", daemons)
	}

	// The Secret is a template: no value may be a usable credential.
	for _, o := range b.objects {
		s, ok := o.obj.(*corev1.Secret)
		if !ok {
			continue
		}
		for k, v := range s.StringData {
			if !strings.Contains(v, "REPLACE") {
				errs = append(errs, fmt.Errorf("%s: Secret %s key %s holds a value, not a REPLACE placeholder: never commit credentials", o.file, s.Name, k))
			}
		}
		if len(s.Data) > 0 {
			errs = append(errs, fmt.Errorf("%s: Secret %s has data: never commit credentials (use REPLACE placeholders in stringData)", o.file, s.Name))
		}
	}
	return errs
}

// checkAscend asserts the ascend overlay: every expertd on cann with an Ascend card from
// the device plugin and the host's driver mounted.
func checkAscend(b *build) []error {
	var errs []error
	n := 0
	for _, w := range b.workloads() {
		vols := map[string]corev1.Volume{}
		for _, v := range w.pod.Spec.Volumes {
			vols[v.Name] = v
		}
		for _, c := range w.pod.Spec.Containers {
			if !isMoemesh(c) || len(c.Args) == 0 || c.Args[0] != "expertd" {
				continue
			}
			n++
			where := fmt.Sprintf("%s: %s %s", w.o.file, w.o.kind, w.o.name)
			if dev, _ := argValue(c.Args, "device"); dev != "cann" {
				errs = append(errs, fmt.Errorf("%s: --device %q, want cann", where, dev))
			}
			lim, ok := c.Resources.Limits["huawei.com/Ascend910"]
			if !ok || lim.Cmp(resource.MustParse("1")) < 0 {
				errs = append(errs, fmt.Errorf("%s: no resources.limits huawei.com/Ascend910 (the device plugin grants the card)", where))
			}
			mounted := map[string]bool{}
			for _, m := range c.VolumeMounts {
				if v, ok := vols[m.Name]; ok && v.HostPath != nil && v.HostPath.Path == m.MountPath {
					mounted[m.MountPath] = true
				}
			}
			for _, want := range ascendMounts {
				if !mounted[want] {
					errs = append(errs, fmt.Errorf("%s: host path %s not mounted at the same path", where, want))
				}
			}
		}
	}
	if n == 0 {
		errs = append(errs, fmt.Errorf("%s: no expertd", b.dir))
	}
	return errs
}

func probePath(errs *[]error, dir string, w workload, p *corev1.Probe, kind, want string) {
	if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want {
		*errs = append(*errs, fmt.Errorf("%s: %s %s: %s wants httpGet %s", dir, w.o.kind, w.o.name, kind, want))
	}
}

func findService(b *build, name string) *corev1.Service {
	for _, s := range b.services() {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func selects(s *corev1.Service, labels map[string]string) bool {
	if len(s.Spec.Selector) == 0 {
		return false
	}
	for k, v := range s.Spec.Selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// portNumber resolves a probe's named port to the container's number.
func portNumber(c corev1.Container, port string) string {
	for _, p := range c.Ports {
		if p.Name == port {
			return fmt.Sprint(p.ContainerPort)
		}
	}
	return port
}
