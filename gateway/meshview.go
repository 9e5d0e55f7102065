package gateway

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/moemesh/moemesh/mesh"
)

// meshTimeout bounds one /v1/mesh request's registry reads.
const meshTimeout = 5 * time.Second

// registries opens each served model's registry once, on first use: the gateway needs
// them only for the operator endpoints.
type registries struct {
	mu   sync.Mutex
	regs map[string]*mesh.Registry
}

func (rs *registries) get(ctx context.Context, g *Gateway, model string) (*mesh.Registry, error) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if r := rs.regs[model]; r != nil {
		return r, nil
	}
	r, err := mesh.OpenRegistry(ctx, g.nc, model, 0, mesh.WithLogger(g.log), mesh.WithReplicas(g.cfg.RegistryReplicas)) // reads only
	if err != nil {
		return nil, err
	}
	if rs.regs == nil {
		rs.regs = map[string]*mesh.Registry{}
	}
	rs.regs[model] = r
	return r, nil
}

// errAdmin is the 403 of a valid tenant key that is not an admin key.
func errAdmin(tenantID string) *apiError {
	return &apiError{Status: http.StatusForbidden, Type: "permission_error", Code: "admin_required",
		Message: fmt.Sprintf("tenant %s's key is not an admin key (tenants file: admin_keys)", tenantID)}
}

// authAdmin admits the holders of an admin key: 401 without a key or with an unknown one,
// 403 for a tenant's key that is not also an admin key.
func (g *Gateway) authAdmin(r *http.Request) *apiError {
	set := g.tenants.Set()
	if set.IsOpen() {
		return nil
	}
	scheme, key, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	key = strings.TrimSpace(key)
	if !strings.EqualFold(scheme, "Bearer") || key == "" {
		return errUnauthorized("no admin key: send the header Authorization: Bearer <admin key>")
	}
	if set.IsAdmin(key) {
		return nil
	}
	if t, ok := set.Lookup(key); ok {
		return errAdmin(t.ID)
	}
	return errUnauthorized("invalid API key")
}

// handleMesh serves GET /v1/mesh[?model=NAME]: what `moemesh status --json` shows, for
// each served model (or the one named), read from the registry: cards, experts per card,
// replica counts, load and memory. Admin keys only.
func (g *Gateway) handleMesh(w http.ResponseWriter, r *http.Request) {
	if aerr := g.authAdmin(r); aerr != nil {
		writeError(w, aerr)
		return
	}
	names := g.names
	if m := r.URL.Query().Get("model"); m != "" {
		if _, ok := g.models[m]; !ok {
			writeError(w, errNotFound(m))
			return
		}
		names = []string{m}
	}
	if !g.nc.IsConnected() {
		writeError(w, errUnavailable("not connected to NATS (%s)", g.nc.Status()))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), meshTimeout)
	defer cancel()
	snaps := make([]*mesh.Snapshot, 0, len(names))
	for _, n := range names {
		reg, err := g.regs.get(ctx, g, n)
		if err == nil {
			var s *mesh.Snapshot
			if s, err = mesh.ReadSnapshot(ctx, reg, n); err == nil {
				snaps = append(snaps, s)
				continue
			}
		}
		g.log.Warn("reading the mesh registry", "model", n, "err", err)
		writeError(w, errUnavailable("registry of model %s: %v", n, err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": snaps})
}
