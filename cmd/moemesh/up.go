package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/router"
)

func newUp(g *globals) *cobra.Command {
	var (
		modelSpec string
		daemons   int
		replicas  int
		ef        engineFlags
	)
	c := &cobra.Command{
		Use:   "up",
		Short: "Run a whole mesh in one process: embedded NATS and expert daemons (with a built-in model by default)",
		RunE: func(cmd *cobra.Command, args []string) error {
			log := g.logger()
			dir, name, err := resolveModel(modelSpec, log)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
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
			fmt.Printf("moemesh is up: NATS %s, model %s (%s, %d experts × %d MoE layers), %d expert daemons, router %s\n",
				st.URL, name, st.Model.Arch, st.Model.Experts, len(st.Model.MoELayers()), daemons, proto.GenSubject(name))
			fmt.Printf("self-check: one MoE layer of 16 tokens through the mesh vs in process: maxdiff=%.3g mesh=%v local=%v\n",
				res.MaxDiff, res.Mesh.Round(time.Microsecond), res.Local.Round(time.Microsecond))
			fmt.Printf("try:  MOEMESH_NATS_URL=%s moemesh expertd --model %s --experts all   # add a daemon\n", st.URL, dir)
			fmt.Printf("      nats --server %s micro ls                                      # see the cards\n", st.URL)
			fmt.Println("Ctrl-C stops the mesh.")
			<-ctx.Done()
			log.Info("stopping")
			if err := stopRt(); err != nil { // drain generations before the daemons go
				log.Warn("router", "err", err)
			}
			chk.Close() // stop following the registry before the connections go
			return st.Close()
		},
	}
	f := c.Flags()
	f.StringVar(&modelSpec, "model", envOr("MOEMESH_MODEL", "builtin:tiny"), "Hugging Face model directory or builtin:tiny")
	f.IntVar(&daemons, "daemons", 2, "expert daemons (one cpu card each)")
	f.IntVar(&replicas, "replicas", 0, "experts (the first N) replicated on every daemon")
	ef.register(f)
	return c
}
