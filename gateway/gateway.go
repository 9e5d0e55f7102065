package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/moemesh/moemesh/gateway/tenant"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/chat"
	"github.com/moemesh/moemesh/model/tokenizer"
)

// Gateway serves the HTTP API. It does not own the NATS connection it is given.
type Gateway struct {
	cfg     Config
	nc      *nats.Conn
	log     *slog.Logger
	tenants *tenant.Store
	models  map[string]*served
	names   []string // model names in Config order, for /v1/models
	limits  *limiter
	metrics *metrics
	created int64 // unix seconds, the "created" of /v1/models
	mux     *http.ServeMux
	handler http.Handler // mux inside the tracing wrapper
	regs    registries   // the models' registries, for /v1/mesh
}

// served is a model with what the gateway needs of it: its tokenizer, chat template and
// context length.
type served struct {
	name    string
	tok     *tokenizer.Tokenizer
	tmpl    *chat.Template // nil: the model has no chat template; chat requests get 400
	stopIDs []int32
	context int // max_position_embeddings; 0 unknown
	tmplErr error
}

// New loads the models' tokenizers and templates. nc must stay open while the gateway runs.
func New(cfg Config, nc *nats.Conn) (*Gateway, error) {
	if nc == nil {
		return nil, errors.New("gateway: nil NATS connection")
	}
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	met, err := newMetrics(cfg.Collectors...)
	if err != nil {
		return nil, fmt.Errorf("gateway: metrics: %w", err)
	}
	g := &Gateway{cfg: cfg, nc: nc, log: cfg.Logger, tenants: cfg.Tenants, models: map[string]*served{},
		limits: newLimiter(), metrics: met, created: time.Now().Unix()}
	if g.tenants == nil {
		g.tenants, _ = tenant.Load("", g.log) // cannot fail without a path
	}
	if g.tenants.Set().IsOpen() {
		g.log.Warn("gateway runs OPEN: no tenants file, every caller is tenant \"default\" without a key or limits")
	}
	byDir := map[string]*served{} // names served from one directory share its tokenizer
	for _, m := range cfg.Models {
		if _, dup := g.models[m.Name]; dup {
			return nil, fmt.Errorf("gateway: model %q configured twice", m.Name)
		}
		s := byDir[m.Dir]
		if s == nil {
			var err error
			if s, err = load(m); err != nil {
				return nil, err
			}
			byDir[m.Dir] = s
		}
		cp := *s
		cp.name = m.Name
		s = &cp
		if s.tmplErr != nil {
			g.log.Warn("model has no usable chat template; /v1/chat/completions will refuse it", "model", m.Name, "err", s.tmplErr)
		}
		g.models[m.Name] = s
		g.names = append(g.names, m.Name)
	}
	g.mux = http.NewServeMux()
	g.mux.HandleFunc("POST /v1/chat/completions", g.handleChat)
	g.mux.HandleFunc("POST /v1/completions", g.handleCompletion)
	g.mux.HandleFunc("GET /v1/models", g.handleModels)
	g.mux.HandleFunc("GET /v1/models/{model...}", g.handleModel)
	g.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	g.mux.HandleFunc("GET /readyz", g.handleReady)
	g.mux.HandleFunc("GET /v1/mesh", g.handleMesh)
	g.mux.Handle("GET /metrics", g.metrics)
	g.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error",
			Message: fmt.Sprintf("no route %s %s", r.Method, r.URL.Path)})
	})
	g.handler = traced(g.mux)
	return g, nil
}

// load is loadModel; tests memoize it per directory, because parsing a real 151k-entry
// tokenizer.json takes seconds under the race detector.
var load = loadModel

func loadModel(m Model) (*served, error) {
	mc, err := model.LoadConfig(m.Dir)
	if err != nil {
		return nil, fmt.Errorf("gateway: model %s: %w", m.Name, err)
	}
	tok, err := tokenizer.Load(m.Dir)
	if err != nil {
		return nil, fmt.Errorf("gateway: model %s: %w", m.Name, err)
	}
	s := &served{name: m.Name, tok: tok, context: mc.MaxPositions}
	// A base model without a chat template still serves /v1/completions.
	if s.tmpl, s.tmplErr = chat.Load(m.Dir); s.tmplErr == nil {
		s.stopIDs = s.tmpl.StopIDs
	}
	return s, nil
}

// Handler returns the HTTP API, for callers that run their own server (moemesh up, tests).
// Tenant hot reload runs only under Run or Serve.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Run listens on Config.Addr and serves until ctx is done, then shuts down gracefully.
func (g *Gateway) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", g.cfg.Addr)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	return g.Serve(ctx, ln)
}

// Serve serves on ln until ctx is done: in-flight requests get ShutdownTimeout to finish
// (streams are cut after it), the tenants file is watched meanwhile. ln is closed on return.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           g.handler,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	var wg sync.WaitGroup
	wctx, stopWatch := context.WithCancel(ctx)
	wg.Go(func() { g.tenants.Watch(wctx, g.cfg.TenantsPoll) })
	defer func() {
		stopWatch()
		wg.Wait()
	}()

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	g.log.Info("gateway listening", "addr", ln.Addr().String(), "models", g.names)
	select {
	case err := <-errc:
		return fmt.Errorf("gateway: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), g.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		// Streams still running after the grace period: cut them. Their handlers see the
		// request context end and cancel their generations at the routers.
		_ = srv.Close()
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("gateway: %w", serr)
	}
	if err != nil {
		return fmt.Errorf("gateway: shutdown: %w", err)
	}
	return nil
}

// handleReady answers 200 when NATS is connected and a router answers a micro PING.
func (g *Gateway) handleReady(w http.ResponseWriter, r *http.Request) {
	if !g.nc.IsConnected() {
		writeError(w, errUnavailable("not connected to NATS (%s)", g.nc.Status()))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	if _, err := g.nc.RequestWithContext(ctx, "$SRV.PING."+g.cfg.RouterService, nil); err != nil {
		writeError(w, errUnavailable("no router (micro service %s) answers: %v", g.cfg.RouterService, err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

// handleModels lists the models the caller may use.
func (g *Gateway) handleModels(w http.ResponseWriter, r *http.Request) {
	t, aerr := g.auth(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	list := []modelObject{}
	for _, n := range g.names {
		if t.Allows(n) {
			list = append(list, modelObject{ID: n, Object: "model", Created: g.created, OwnedBy: "moemesh"})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": list})
}

func (g *Gateway) handleModel(w http.ResponseWriter, r *http.Request) {
	t, aerr := g.auth(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	name := r.PathValue("model")
	if _, ok := g.models[name]; !ok {
		writeError(w, errNotFound(name))
		return
	}
	if !t.Allows(name) {
		writeError(w, errForbidden(name, t.ID))
		return
	}
	writeJSON(w, http.StatusOK, modelObject{ID: name, Object: "model", Created: g.created, OwnedBy: "moemesh"})
}
