package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/gateway"
	"github.com/moemesh/moemesh/gateway/tenant"
	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/router"
)

func newUp(g *globals) *cobra.Command {
	var (
		modelSpec, addr, tenantsPath string
		daemons, replicas            int
		ef                           engineFlags
	)
	c := &cobra.Command{
		Use:   "up",
		Short: "Run a whole mesh in one process: embedded NATS, expert daemons, a router and the gateway (built-in model by default)",
		RunE: func(cmd *cobra.Command, args []string) error {
			log := g.logger()
			dir, name, err := resolveModel(modelSpec, log)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			stopTracing, err := setupTracing(cmd.Context(), "moemesh", log)
			if err != nil {
				return err
			}
			defer stopTracing()
			st, err := stack.Start(ctx, stack.Config{ModelDir: dir, Model: name, Daemons: daemons, Replicated: replicas, Logger: log})
			if err != nil {
				return err
			}
			defer st.Close()
			// A first MoE layer through the mesh against the same layer in process shows the
			// mesh works before anyone sends it traffic.
			chk, err := st.NewLayer(ctx, -1, proto.ModeReduce, proto.BF16)
			if err != nil {
				return err
			}
			defer chk.Close()
			x := stack.RandomInput(rand.New(rand.NewPCG(1, 2)), 16, st.Model.Hidden)
			res, err := chk.Run(ctx, x, 1)
			if err != nil {
				return fmt.Errorf("mesh self-check: %w", err)
			}
			chk.Close() // stop following the registry: the router has its own view

			ec, err := ef.config()
			if err != nil {
				return err
			}
			rnc, err := st.Connect(ctx, "moemesh-router")
			if err != nil {
				return err
			}
			rt, err := stack.NewRouter(ctx, stack.RouterConfig{ModelDir: dir, Model: name, Conn: rnc, Engine: ec, Logger: log})
			if err != nil {
				return err
			}
			defer rt.Close()
			// The router outlives ctx by its drain: generations finish before daemons go.
			routerCtx, stopRouter := context.WithCancel(context.WithoutCancel(ctx))
			routerDone := make(chan error, 1)
			routerReady := make(chan struct{})
			go func() {
				routerDone <- router.Serve(routerCtx, router.ServiceConfig{ID: "up-router", Model: name, Conn: rnc, Engine: rt.Engine, Logger: log, Ready: routerReady})
			}()
			stopRt := sync.OnceValue(func() error { stopRouter(); return <-routerDone })
			defer stopRt()
			select {
			case <-routerReady:
			case err := <-routerDone:
				return fmt.Errorf("router: %w", err)
			}

			store, err := tenant.Load(tenantsPath, log)
			if err != nil {
				return err
			}
			gnc, err := st.Connect(ctx, "moemesh-gateway")
			if err != nil {
				return err
			}
			collectors := append(st.Collectors(), router.NewCollector(rt.Engine, prometheus.Labels{"router": "up-router", "model": name}))
			gw, err := gateway.New(gateway.Config{Models: []gateway.Model{{Name: name, Dir: dir}}, Tenants: store,
				DefaultMaxTokens: 256, Collectors: collectors, Logger: log}, gnc)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("--addr: %w", err)
			}
			gwDone := make(chan error, 1)
			go func() { gwDone <- gw.Serve(ctx, ln) }()

			url := "http://" + ln.Addr().String()
			fmt.Printf("moemesh is up: %s/v1 (OpenAI API), NATS %s, model %s (%s, %d experts × %d MoE layers), %d expert daemons, router on %s\n",
				url, st.URL, name, st.Model.Arch, st.Model.Experts, len(st.Model.MoELayers()), daemons, proto.GenSubject(name))
			fmt.Printf("self-check: one MoE layer of 16 tokens through the mesh vs in process: maxdiff=%.3g mesh=%v local=%v\n",
				res.MaxDiff, res.Mesh.Round(time.Microsecond), res.Local.Round(time.Microsecond))
			fmt.Printf("try:  curl -s %s/v1/chat/completions -H 'Content-Type: application/json' -d '{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello!\"}],\"max_tokens\":32}'\n", url, name)
			fmt.Printf("      curl -s %s/metrics | grep moemesh_                   # what operators watch\n", url)
			fmt.Printf("      MOEMESH_NATS_URL=%s moemesh expertd --model %s --experts all   # add a daemon\n", st.URL, dir)
			fmt.Printf("      moemesh status --nats %s --model %s   # cards, experts, replicas (JSON: %s/v1/mesh)\n", st.URL, name, url)
			fmt.Println("Ctrl-C stops the mesh.")
			select {
			case <-ctx.Done():
			case err := <-gwDone:
				return fmt.Errorf("gateway: %w", err)
			}
			log.Info("stopping")
			if err := <-gwDone; err != nil {
				log.Warn("gateway", "err", err)
			}
			if err := stopRt(); err != nil { // drain generations before the daemons go
				log.Warn("router", "err", err)
			}
			return st.Close()
		},
	}
	f := c.Flags()
	f.StringVar(&modelSpec, "model", envOr("MOEMESH_MODEL", "builtin:tiny"), "Hugging Face model directory or builtin:tiny")
	f.StringVar(&addr, "addr", envOr("MOEMESH_GATEWAY_ADDR", "127.0.0.1:8080"), "gateway HTTP address (env MOEMESH_GATEWAY_ADDR)")
	f.StringVar(&tenantsPath, "tenants", os.Getenv("MOEMESH_TENANTS"), "tenants YAML file; empty: open gateway (env MOEMESH_TENANTS)")
	f.IntVar(&daemons, "daemons", 2, "expert daemons (one cpu card each)")
	f.IntVar(&replicas, "replicas", 0, "experts (the first N) replicated on every daemon")
	ef.register(f, 0) // daemons share this process's cores: a split only competes for them
	return c
}
