package main

import (
	"fmt"
	"log/slog"
	"net"
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
			if users := srv.Users(); len(users) > 0 {
				log.Info("nats authorization on", "file", cfg.AuthFile, "users", len(users), "names", users)
			} else {
				// Loud only where it matters: an open server on loopback is the local default.
				lvl := slog.LevelInfo
				if ip := net.ParseIP(cfg.Host); ip == nil || !ip.IsLoopback() {
					lvl = slog.LevelWarn
				}
				log.Log(cmd.Context(), lvl, "nats authorization off: any client may connect (see moemesh nats-config and --auth)", "host", cfg.Host)
			}
			if srv.TLS() {
				log.Info("nats TLS on", "cert", cfg.TLSCert, "verify_clients", cfg.TLSCA != "", "cluster_tls", cfg.ClusterName != "" && cfg.TLSCA != "")
			}
			log.Info("nats server ready", "url", srv.ClientURL(), "store", cfg.StoreDir, "monitor", srv.MonitorURL())
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
	f.StringVar(&cfg.Monitor, "monitor", "", "HOST:PORT for HTTP monitoring (/healthz, /varz, /routez, /jsz), e.g. 0.0.0.0:8222; off by default")
	f.StringVar(&cfg.AuthFile, "auth", "", "authorization file written by moemesh nats-config (a user per role); without it any client connects")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "server certificate (PEM): clients must use TLS")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "key of --tls-cert (PEM)")
	f.StringVar(&cfg.TLSCA, "tls-ca", "", "CA (PEM) that signs client certificates: clients must present one; cluster routes then use TLS with the same certificate")
	f.BoolVar(&cfg.Debug, "debug", false, "log the server's own messages")
	return c
}
