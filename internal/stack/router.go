package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/chat"
	"github.com/moemesh/moemesh/model/decoder"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/model/tokenizer"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/router"
)

// RouterConfig assembles a router: the dense model on a card, the experts in process or
// on the mesh, the tokenizer, and a generation engine.
type RouterConfig struct {
	ModelDir string
	Model    string     // name in subjects
	Conn     *nats.Conn // the mesh; nil with Local
	Local    bool       // routed experts in process instead of on the mesh
	Exact    bool       // mesh in pairs mode over an f32 wire: logits equal Local's bit for bit
	Backend  string     // default "cpu"
	Engine   router.EngineConfig
	// IgnoreEOS generates exactly max tokens (benchmarks): the model's eos ids do not stop.
	IgnoreEOS bool
	// WaitExperts bounds the wait for the mesh to hold every expert (default 30 s).
	WaitExperts time.Duration
	Logger      *slog.Logger
}

// Router is a loaded router; Engine runs generation, Serve puts it on NATS.
type Router struct {
	Engine    *router.Engine
	Model     *model.Config
	Tokenizer *tokenizer.Tokenizer
	Template  *chat.Template // nil when the model has no chat template
	closers   []func()
}

// Experts gives the routed experts of cfg: in process on a card of be, or the mesh's
// over nc. The returned function releases them.
func Experts(ctx context.Context, ck *safetensors.Checkpoint, cfg *model.Config, be ascend.Backend, nc *nats.Conn, name string, local, exact bool, wait time.Duration) (model.Experts, func(), error) {
	if local {
		card, err := be.OpenCard(1, 0)
		if err != nil {
			return nil, nil, err
		}
		l, err := model.LoadLocal(ck, cfg, card, cfg.MoELayers())
		if err != nil {
			card.Close()
			return nil, nil, err
		}
		return l, func() { card.Close() }, nil
	}
	if nc == nil {
		return nil, nil, errors.New("stack: experts on the mesh need a NATS connection")
	}
	mc := router.MeshConfig{Model: name, Experts: cfg.Experts}
	if exact {
		mc.Mode, mc.Wire = proto.ModePairs, proto.F32
	}
	m, err := router.NewMesh(ctx, nc, mc)
	if err != nil {
		return nil, nil, err
	}
	var keys []model.ExpertKey
	for _, l := range cfg.MoELayers() {
		for e := 0; e < cfg.Experts; e++ {
			keys = append(keys, model.ExpertKey{Layer: l, Expert: e})
		}
	}
	if wait <= 0 {
		wait = 30 * time.Second
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := m.WaitFor(wctx, keys); err != nil {
		m.Close()
		return nil, nil, fmt.Errorf("waiting for the mesh to hold every expert of %s: %w", name, err)
	}
	return m, m.Close, nil
}

// NewRouter loads what a router needs from cfg.ModelDir.
func NewRouter(ctx context.Context, cfg RouterConfig) (_ *Router, err error) {
	r := &Router{}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	if r.Model, err = model.LoadConfig(cfg.ModelDir); err != nil {
		return nil, err
	}
	if r.Tokenizer, err = tokenizer.Load(cfg.ModelDir); err != nil {
		return nil, err
	}
	if r.Template, err = chat.Load(cfg.ModelDir); err != nil {
		if cfg.Logger != nil {
			cfg.Logger.Warn("no chat template: chat requests will fail", "err", err)
		}
		r.Template = nil
	}
	ck, err := safetensors.Open(cfg.ModelDir)
	if err != nil {
		return nil, err
	}
	r.closers = append(r.closers, func() { ck.Close() })
	if cfg.Backend == "" {
		cfg.Backend = "cpu"
	}
	be, err := ascend.Open(cfg.Backend)
	if err != nil {
		return nil, err
	}
	card, err := be.OpenCard(0, 0)
	if err != nil {
		return nil, err
	}
	r.closers = append(r.closers, func() { card.Close() })
	dec, err := decoder.Load(ck, r.Model, card)
	if err != nil {
		return nil, err
	}
	r.closers = append(r.closers, func() { dec.Close() })
	experts, release, err := Experts(ctx, ck, r.Model, be, cfg.Conn, cfg.Model, cfg.Local, cfg.Exact, cfg.WaitExperts)
	if err != nil {
		return nil, err
	}
	r.closers = append(r.closers, release)

	ec := cfg.Engine
	ec.Decoder, ec.Experts, ec.Tokenizer, ec.Logger = dec, experts, r.Tokenizer, cfg.Logger
	if cfg.Local {
		// In-process experts have no round trip to hide: two micro-batches would only
		// compete for the same cores.
		ec.MicroBatchRows = 0
	}
	for _, id := range r.Model.EOS {
		ec.EOS = append(ec.EOS, int32(id))
	}
	if r.Template != nil {
		ec.EOS = append(ec.EOS, r.Template.StopIDs...)
	}
	if cfg.IgnoreEOS {
		ec.EOS = nil
	}
	if ec.Context == 0 {
		if _, err := r.Model.Lookup("max_position_embeddings", &ec.Context); err != nil {
			return nil, err
		}
	}
	if r.Engine, err = router.NewEngine(ec); err != nil {
		return nil, err
	}
	return r, nil
}

// Close releases the router's model, cards and experts (stop Serve or Engine.Run first).
func (r *Router) Close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
	r.closers = nil
}
