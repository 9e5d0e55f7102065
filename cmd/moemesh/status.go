package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/mesh"
)

func newStatus(g *globals) *cobra.Command {
	var (
		natsURL, modelSpec string
		asJSON             bool
		wait               time.Duration
		nf                 natsFlags
	)
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the mesh of a model: cards, experts per card, replica counts, queues and memory",
		Example: `  moemesh status --model Qwen3-30B-A3B
  moemesh status --nats nats://10.0.0.5:4222 --model ./Qwen3-30B-A3B --json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			name := statusModelName(modelSpec)
			if name == "" {
				return fmt.Errorf("--model is required (the model name, or its directory)")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), wait)
			defer cancel()
			nc, ns, err := nf.connect(ctx, natsURL, "moemesh-status", nil)
			if err != nil {
				return err
			}
			defer nc.Close()
			reg, err := mesh.OpenRegistry(ctx, nc, name, 0, append(ns.registryOptions(), mesh.WithLogger(g.logger()))...)
			if err != nil {
				return err
			}
			st, err := mesh.ReadSnapshot(ctx, reg, name)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&natsURL, "nats", envOr("MOEMESH_NATS_URL", defaultNATS), "NATS server URL (env MOEMESH_NATS_URL)")
	f.StringVar(&modelSpec, "model", os.Getenv("MOEMESH_MODEL"), "model name in subjects, or its directory, or builtin:tiny (env MOEMESH_MODEL)")
	f.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	f.DurationVar(&wait, "timeout", 10*time.Second, "give up after this long")
	nf.register(f, mesh.RoleAdmin, true, os.Getenv)
	return c
}

// statusModelName maps --model to the model's name in subjects, as the services derive it.
func statusModelName(spec string) string {
	if b, ok := strings.CutPrefix(spec, "builtin:"); ok {
		return "builtin-" + b
	}
	if _, err := os.Stat(filepath.Join(spec, "config.json")); err == nil {
		return filepath.Base(filepath.Clean(spec))
	}
	return spec
}

// layerRanges formats layer → ranges as "L1:0-3 L2:0-3"; identical ranges on every layer
// collapse to "L1-2:0-3"-style only when the layers are consecutive.
func layerRanges(m map[int32]string) string {
	if len(m) == 0 {
		return "-"
	}
	layers := make([]int32, 0, len(m))
	for l := range m {
		layers = append(layers, l)
	}
	slices.Sort(layers)
	var parts []string
	for i := 0; i < len(layers); {
		j := i
		for j+1 < len(layers) && layers[j+1] == layers[j]+1 && m[layers[j+1]] == m[layers[i]] {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("L%d-%d:%s", layers[i], layers[j], m[layers[i]]))
		} else {
			parts = append(parts, fmt.Sprintf("L%d:%s", layers[i], m[layers[i]]))
		}
		i = j + 1
	}
	return strings.Join(parts, " ")
}

func printStatus(w io.Writer, st *mesh.Snapshot) {
	controller := st.Controller
	if controller == "" {
		controller = "none (static placement)"
	}
	fmt.Fprintf(w, "model %s: %d cards, controller %s\n\n", st.Model, len(st.Cards), controller)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CARD\tDAEMON\tDEVICE\tSTATE\tEXPERTS\tASSIGNED\tQUEUE\tTOK/S\tBUSY\tMEMORY\tREADY\tLOADING\tDRAINING")
	for _, c := range st.Cards {
		state := "serving"
		switch {
		case c.Draining:
			state = "draining"
		case c.Leaving:
			state = "leaving"
		}
		assigned := "static"
		if c.Assigned >= 0 {
			assigned = strconv.Itoa(c.Assigned)
		}
		mem := humanize.IBytes(uint64(max(c.MemUsed, 0)))
		if c.MemTotal > 0 {
			mem += " / " + humanize.IBytes(uint64(c.MemTotal))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%.0f\t%.0f%% (%s)\t%s\t%s\t%s\t%s\n", c.Card, c.Daemon, c.Device, state,
			c.Experts, assigned, c.Queue, c.TokensPerSec, 100*c.Busy, (time.Duration(c.BusySeconds * 1e9)).Round(time.Millisecond), mem, layerRanges(c.Ready), layerRanges(c.Loading), layerRanges(c.DrainingExp))
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LAYER\tREPLICAS (ready replicas: experts)\tMISSING")
	for _, lr := range st.Replicas {
		byCount := map[int][]int{}
		for e, n := range lr.Replicas {
			byCount[n] = append(byCount[n], e)
		}
		counts := make([]int, 0, len(byCount))
		for n := range byCount {
			counts = append(counts, n)
		}
		slices.Sort(counts)
		var parts []string
		for _, n := range counts {
			parts = append(parts, fmt.Sprintf("%d×: %s", n, mesh.CompressRanges(byCount[n])))
		}
		missing := "-"
		if len(lr.Missing) > 0 {
			ms := make([]int, len(lr.Missing))
			for i, m := range lr.Missing {
				ms[i] = int(m)
			}
			missing = mesh.CompressRanges(ms)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\n", lr.Layer, strings.Join(parts, "  "), missing)
	}
	_ = tw.Flush()
}
