package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/mesh"
)

func newNATS(g *globals) *cobra.Command {
	var cfg mesh.ServerConfig
	var routes string
	c := &cobra.Command{
		Use:   "nats",
		Short: "Run a NATS server (JetStream on) for a mesh, for users without one",
		RunE: func(cmd *cobra.Command, args []string) error {
			if routes != "" {
				cfg.Routes = strings.Split(routes, ",")
			}
			srv, err := mesh.StartServer(cfg)
			if err != nil {
				return err
			}
			defer srv.Shutdown()
			log := g.logger()
			log.Info("nats server ready", "url", srv.ClientURL(), "store", cfg.StoreDir)
			fmt.Println(srv.ClientURL())
			<-cmd.Context().Done()
			log.Info("nats server stopping")
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&cfg.Host, "host", "127.0.0.1", "address to listen on")
	f.IntVar(&cfg.Port, "port", 4222, "client port (-1: a random free port)")
	f.StringVar(&cfg.StoreDir, "store", "", "JetStream store directory (default: a temporary one, removed on exit)")
	f.StringVar(&cfg.Name, "name", "", "server name (required in a cluster)")
	f.StringVar(&cfg.ClusterName, "cluster", "", "cluster name, to join a NATS cluster")
	f.StringVar(&cfg.ClusterHost, "cluster-host", "127.0.0.1", "cluster listen address")
	f.IntVar(&cfg.ClusterPort, "cluster-port", 0, "cluster port")
	f.StringVar(&routes, "routes", "", "comma-separated cluster routes, e.g. nats://h1:6222,nats://h2:6222")
	f.BoolVar(&cfg.Debug, "debug", false, "log the server's own messages")
	return c
}
