package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/moemesh/moemesh/gateway/tenant"
	"github.com/moemesh/moemesh/proto"
)

// Model is one model the gateway serves.
type Model struct {
	Name string // the name clients send and routers serve (subject token via proto.Token)
	Dir  string // Hugging Face model directory: config.json, tokenizer files, chat template
}

// Config configures a Gateway. Zero durations take the defaults below.
type Config struct {
	Addr   string  // HTTP listen address for Run, e.g. ":8080"
	Models []Model // at least one
	// Tenants is the tenants file's store; nil runs the gateway open (one "default"
	// tenant, no keys, no limits).
	Tenants *tenant.Store
	// TenantsPoll is how often the tenants file is checked for changes (default 2 s).
	TenantsPoll time.Duration

	// AcceptTimeout bounds the wait for a router to accept a request (default 10 s).
	AcceptTimeout time.Duration
	// RouterWait is how long a request waits for a router when none answers (no responders
	// or the gateway's NATS connection is down), re-sending every 100–400 ms: it covers a
	// router reconnecting to another NATS node (tens of ms) or restarting. Nothing was
	// delivered, so a re-send cannot run a request twice. Default 1 s; negative: fail at once.
	RouterWait time.Duration
	// IdleTimeout bounds the wait between two token events, the first included: a request
	// that sees no event for this long fails with 504 (default 120 s, long enough for a
	// long prompt's prefill on CPU).
	IdleTimeout time.Duration
	// RequestTimeout bounds a whole generation; it is the Deadline routers see (default 10 min).
	RequestTimeout time.Duration
	// ShutdownTimeout bounds the wait for in-flight requests when Run's ctx ends (default 30 s).
	ShutdownTimeout time.Duration

	// DefaultMaxTokens applies when a request names no max_tokens (0: up to the context,
	// like OpenAI). A tenant's max_tokens limit caps it either way.
	DefaultMaxTokens int
	// MaxBodyBytes limits request bodies (default 4 MiB); larger bodies get 413.
	MaxBodyBytes int64
	// RouterService is the nats micro service name /readyz pings (default "moemesh-router").
	RouterService string
	// Collectors are served on /metrics beside the gateway's own series (moemesh up adds
	// its router's and daemons').
	Collectors []prometheus.Collector
	// RegistryReplicas: JetStream replicas of a registry bucket the mesh view creates
	// (see mesh.WithReplicas; 0: the default).
	RegistryReplicas int

	Logger *slog.Logger
}

// Defaults.
const (
	defaultAcceptTimeout   = 10 * time.Second
	defaultRouterWait      = time.Second
	defaultIdleTimeout     = 120 * time.Second
	defaultRequestTimeout  = 10 * time.Minute
	defaultShutdownTimeout = 30 * time.Second
	defaultMaxBody         = 4 << 20
	DefaultRouterService   = proto.ServiceRouter
)

func (c *Config) defaults() error {
	if len(c.Models) == 0 {
		return errors.New("gateway: Config.Models is empty")
	}
	for i, m := range c.Models {
		if m.Name == "" || m.Dir == "" {
			return fmt.Errorf("gateway: Config.Models[%d] needs a Name and a Dir", i)
		}
	}
	if c.AcceptTimeout <= 0 {
		c.AcceptTimeout = defaultAcceptTimeout
	}
	if c.RouterWait == 0 {
		c.RouterWait = defaultRouterWait
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = defaultIdleTimeout
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = defaultRequestTimeout
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = defaultShutdownTimeout
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = defaultMaxBody
	}
	if c.RouterService == "" {
		c.RouterService = DefaultRouterService
	}
	if c.DefaultMaxTokens < 0 {
		return fmt.Errorf("gateway: DefaultMaxTokens %d < 0", c.DefaultMaxTokens)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}
