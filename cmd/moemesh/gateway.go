package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/gateway"
	"github.com/moemesh/moemesh/gateway/tenant"
	"github.com/moemesh/moemesh/mesh"
)

func newGateway(g *globals) *cobra.Command {
	var (
		natsURL, modelSpec, name, addr, tenantsPath string
		tlsCert, tlsKey                             string
		maxTokens                                   int
		idle, reqTimeout                            time.Duration
		nf                                          natsFlags
	)
	c := &cobra.Command{
		Use:   "gateway",
		Short: "Serve the OpenAI-compatible HTTP API in front of the routers",
		Example: `  moemesh gateway --model ./Qwen3-30B-A3B --tenants tenants.yaml
  moemesh gateway --model builtin:tiny --addr :8080   # open: no tenants file, no keys
  moemesh gateway --model ./m --tls-cert gw.pem --tls-key gw-key.pem \
    --nats tls://nats:4222 --nats-ca ca.pem --nats-user gateway --nats-password-file /run/secrets/gateway`,
		RunE: func(cmd *cobra.Command, args []string) error {
			log := g.logger()
			dir, defName, err := resolveModel(modelSpec, log)
			if err != nil {
				return err
			}
			stopTracing, err := setupTracing(cmd.Context(), "moemesh-gateway", log)
			if err != nil {
				return err
			}
			defer stopTracing()
			if name == "" {
				name = defName
			}
			store, err := tenant.Load(tenantsPath, log)
			if err != nil {
				return err
			}
			// Before NATS: a bad certificate is a configuration error to report at once.
			var certs *certReloader
			if tlsCert != "" || tlsKey != "" {
				if tlsCert == "" || tlsKey == "" {
					return errors.New("--tls-cert and --tls-key go together")
				}
				if certs, err = newCertReloader(tlsCert, tlsKey, log); err != nil {
					return fmt.Errorf("--tls-cert/--tls-key: %w", err)
				}
			}
			nc, ns, err := nf.connect(cmd.Context(), natsURL, "moemesh-gateway", log)
			if err != nil {
				return err
			}
			defer nc.Close()
			gw, err := gateway.New(gateway.Config{
				Addr: addr, Models: []gateway.Model{{Name: name, Dir: dir}}, Tenants: store,
				DefaultMaxTokens: maxTokens, IdleTimeout: idle, RequestTimeout: reqTimeout, Logger: log,
				Collectors:       []prometheus.Collector{natsCollector(nc, prometheus.Labels{"service": "gateway"})},
				RegistryReplicas: ns.registryReplicas(),
			}, nc)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("gateway: %w", err)
			}
			if certs != nil {
				ln = tls.NewListener(ln, certs.serverTLS())
				log.Info("gateway serves HTTPS", "cert", tlsCert)
			}
			if err := gw.Serve(cmd.Context(), ln); err != nil {
				return err
			}
			return nc.Drain()
		},
	}
	f := c.Flags()
	f.StringVar(&natsURL, "nats", envOr("MOEMESH_NATS_URL", defaultNATS), "NATS server URL (env MOEMESH_NATS_URL)")
	f.StringVar(&modelSpec, "model", os.Getenv("MOEMESH_MODEL"), "Hugging Face model directory or builtin:tiny (env MOEMESH_MODEL)")
	f.StringVar(&name, "name", "", "model name clients send and subjects use (default: the directory's name)")
	f.StringVar(&addr, "addr", envOr("MOEMESH_GATEWAY_ADDR", ":8080"), "HTTP listen address (env MOEMESH_GATEWAY_ADDR)")
	f.StringVar(&tenantsPath, "tenants", os.Getenv("MOEMESH_TENANTS"), "tenants YAML file, reloaded on change; empty: open gateway, one \"default\" tenant (env MOEMESH_TENANTS)")
	f.IntVar(&maxTokens, "default-max-tokens", 1024, "max_tokens of chat requests that name none (0: up to the context)")
	f.DurationVar(&idle, "idle-timeout", 120*time.Second, "fail a request with 504 when no token arrives for this long")
	f.DurationVar(&reqTimeout, "request-timeout", 10*time.Minute, "deadline of a whole generation")
	f.StringVar(&tlsCert, "tls-cert", os.Getenv("MOEMESH_GATEWAY_TLS_CERT"), "serve HTTPS with this certificate (PEM, chain first), reloaded when it changes (env MOEMESH_GATEWAY_TLS_CERT)")
	f.StringVar(&tlsKey, "tls-key", os.Getenv("MOEMESH_GATEWAY_TLS_KEY"), "the key of --tls-cert (PEM) (env MOEMESH_GATEWAY_TLS_KEY)")
	nf.register(f, mesh.RoleGateway, true, os.Getenv)
	return c
}
