package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/ascend"
	_ "github.com/moemesh/moemesh/ascend/cpu" // the default backend
	"github.com/moemesh/moemesh/expertd"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
)

func newExpertd(g *globals) *cobra.Command {
	var (
		natsURL, modelSpec, name, id, device, cards, cardMem, layers, experts, weights string
		metricsAddr                                                                    string
		heartbeat, leaveWait                                                           time.Duration
		nf                                                                             natsFlags
	)
	c := &cobra.Command{
		Use:   "expertd",
		Short: "Run an expert daemon: serve experts of a model on one or more cards",
		Example: `  moemesh expertd --model ./Qwen3-30B-A3B --cards 0-1 --experts "0-63;64-127"
  moemesh expertd --model builtin:tiny --experts all`,
		RunE: func(cmd *cobra.Command, args []string) error {
			log := g.logger()
			dir, defName, err := resolveModel(modelSpec, log)
			if err != nil {
				return err
			}
			if name == "" {
				name = defName
			}
			mcfg, err := model.LoadConfig(dir)
			if err != nil {
				return err
			}
			be, err := ascend.Open(device)
			if err != nil {
				return err
			}
			var wdt ascend.DType // "": as read
			if weights != "" && weights != "as-read" {
				if wdt, err = ascend.ParseDType(weights); err != nil {
					return fmt.Errorf("--weights: %w", err)
				}
			}
			if id == "" {
				host, _ := os.Hostname()
				id = proto.Token(fmt.Sprintf("%s-%d", host, os.Getpid()))
			}
			if v := os.Getenv("ASCEND_VISIBLE_DEVICES"); v != "" && !cmd.Flags().Changed("cards") {
				cards = v
			}
			devs, err := expertd.ParseRanges(cards, 1<<16)
			if err != nil {
				return fmt.Errorf("--cards: %w", err)
			}
			var budget uint64
			if cardMem != "" && cardMem != "0" {
				if budget, err = humanize.ParseBytes(cardMem); err != nil {
					return fmt.Errorf("--card-memory: %w", err)
				}
			}
			perCard := strings.Split(experts, ";")
			if len(perCard) != 1 && len(perCard) != len(devs) {
				return fmt.Errorf("--experts has %d ';'-separated sets for %d cards", len(perCard), len(devs))
			}
			var ccs []expertd.CardConfig
			for i, dev := range devs {
				set := perCard[0]
				if len(perCard) > 1 {
					set = perCard[i]
				}
				keys, err := expertd.Assignment(mcfg, layers, set)
				if err != nil {
					return fmt.Errorf("card %d: %w", dev, err)
				}
				ccs = append(ccs, expertd.CardConfig{ID: fmt.Sprintf("%s-c%d", id, dev), Device: dev, Budget: int64(budget), Experts: keys})
			}
			stopTracing, err := setupTracing(cmd.Context(), "moemesh-expertd", log)
			if err != nil {
				return err
			}
			defer stopTracing()
			nc, ns, err := nf.connect(cmd.Context(), natsURL, "moemesh-expertd-"+id, log)
			if err != nil {
				return err
			}
			defer nc.Close()
			d, err := expertd.New(expertd.Config{Model: name, ModelDir: dir, Daemon: id, Backend: be, Cards: ccs,
				Heartbeat: heartbeat, LeaveWait: leaveWait, RegistryReplicas: ns.registryReplicas(), WeightDType: wdt, Logger: log}, nc)
			if err != nil {
				return err
			}
			if err := serveMetricsProbes(cmd.Context(), metricsAddr, log, d.CheckReady, expertd.NewCollector(d, prometheus.Labels{"daemon": id}),
				natsCollector(nc, prometheus.Labels{"service": "expertd", "daemon": id})); err != nil {
				return fmt.Errorf("--metrics: %w", err)
			}
			if err := d.Run(cmd.Context()); err != nil {
				return err
			}
			return nc.Drain()
		},
	}
	f := c.Flags()
	f.StringVar(&natsURL, "nats", envOr("MOEMESH_NATS_URL", defaultNATS), "NATS server URL (env MOEMESH_NATS_URL)")
	f.StringVar(&modelSpec, "model", os.Getenv("MOEMESH_MODEL"), "Hugging Face model directory or builtin:tiny (env MOEMESH_MODEL)")
	f.StringVar(&name, "name", "", "model name in subjects (default: the directory's name)")
	f.StringVar(&id, "id", "", "daemon id, letters, digits, '-' and '_' (default: host-pid)")
	f.StringVar(&device, "device", "cpu", "backend: cpu or cann")
	f.StringVar(&weights, "weights", "as-read", "dtype experts are held in: as-read (MXFP4 stays packed where the card has it), bf16, f32, or i8 (W8A16: int8 with a scale per row, quantised at load)")
	f.StringVar(&cards, "cards", "0", "device indices to drive, e.g. 0-7 (ASCEND_VISIBLE_DEVICES is honoured)")
	f.StringVar(&cardMem, "card-memory", "0", "memory budget per card, e.g. 64GiB (0: the device's own)")
	f.StringVar(&layers, "layers", "all", "MoE layers to serve, e.g. 1-3,5")
	f.StringVar(&experts, "experts", "all", "experts to serve: one set for every card or ';'-separated sets per card, e.g. \"0-7;8-15\"; none: start empty, for the placement controller (moemesh router --controller)")
	f.StringVar(&metricsAddr, "metrics", "", "serve Prometheus /metrics on this address, e.g. :9102")
	f.DurationVar(&heartbeat, "heartbeat", time.Second, "lease heartbeat; a card is gone after 3 missed beats")
	nf.register(f, mesh.RoleExpertd, true, os.Getenv)
	f.DurationVar(&leaveWait, "leave-wait", 20*time.Second, "on SIGTERM with a placement controller, how long to keep serving until the experts are ready on other cards (< 0: drain at once)")
	return c
}
