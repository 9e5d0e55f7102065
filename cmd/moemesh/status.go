package main

import (
	"cmp"
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
	"github.com/moemesh/moemesh/proto"
)

// meshStatus is what `moemesh status` shows (and prints with --json).
type meshStatus struct {
	Model    string         `json:"model"`
	Cards    []cardStatus   `json:"cards"`
	Replicas []layerReplica `json:"replicas"` // ready replicas per expert, by layer
}

type cardStatus struct {
	Card         string           `json:"card"`
	Daemon       string           `json:"daemon"`
	Device       string           `json:"device"`
	Draining     bool             `json:"draining"`
	Leaving      bool             `json:"leaving"`
	Ready        map[int32]string `json:"ready"`             // layer → expert ranges
	Loading      map[int32]string `json:"loading,omitempty"` // layer → expert ranges
	DrainingExp  map[int32]string `json:"draining_experts,omitempty"`
	Experts      int              `json:"experts"`  // ready experts
	Assigned     int              `json:"assigned"` // experts in its assignment; -1: none (static)
	Queue        int32            `json:"queue"`
	TokensPerSec float32          `json:"tokens_per_sec"`
	Busy         float32          `json:"busy"`         // fraction of the last heartbeat spent computing
	BusySeconds  float64          `json:"busy_seconds"` // compute time since the daemon started
	MemUsed      int64            `json:"mem_used"`
	MemTotal     int64            `json:"mem_total"` // 0: unlimited
	BeatAgeMs    int64            `json:"beat_age_ms"`
}

type layerReplica struct {
	Layer    int32   `json:"layer"`
	Replicas []int   `json:"replicas"` // index: expert; value: ready replicas
	Missing  []int32 `json:"missing,omitempty"`
}

func newStatus(g *globals) *cobra.Command {
	var (
		natsURL, modelSpec string
		asJSON             bool
		wait               time.Duration
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
			nc, err := mesh.Connect(ctx, natsURL, "moemesh-status")
			if err != nil {
				return err
			}
			defer nc.Close()
			reg, err := mesh.OpenRegistry(ctx, nc, name, 0, mesh.WithLogger(g.logger()))
			if err != nil {
				return err
			}
			cards, err := reg.Cards(ctx)
			if err != nil && len(cards) == 0 {
				return err
			}
			assigns := map[string]*proto.Assignment{}
			for _, c := range cards {
				a, err := reg.GetAssign(ctx, c.Card)
				if err != nil {
					return err
				}
				if a != nil {
					assigns[c.Card] = a
				}
			}
			st := buildStatus(name, cards, assigns, time.Now())
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

// buildStatus condenses leases and assignments into what status shows.
func buildStatus(model string, cards []proto.CardStatus, assigns map[string]*proto.Assignment, now time.Time) meshStatus {
	st := meshStatus{Model: model, Cards: []cardStatus{}, Replicas: []layerReplica{}}
	replicas := map[int32]map[int32]int{}
	maxExpert := map[int32]int32{}
	for _, c := range cards {
		cs := cardStatus{Card: c.Card, Daemon: c.Daemon, Device: c.Device, Draining: c.Draining, Leaving: c.Leaving, Assigned: -1,
			Queue: c.Queue, TokensPerSec: c.TokensPerSec, Busy: c.Busy, BusySeconds: float64(c.BusyNanos) / 1e9, MemUsed: c.MemUsed, MemTotal: c.MemTotal,
			BeatAgeMs: now.Sub(time.Unix(0, c.Beat)).Milliseconds()}
		if a := assigns[c.Card]; a != nil {
			cs.Assigned = len(a.Experts)
		}
		by := map[uint8]map[int32][]int{}
		for _, e := range c.Experts {
			if by[e.State] == nil {
				by[e.State] = map[int32][]int{}
			}
			by[e.State][e.Layer] = append(by[e.State][e.Layer], int(e.Expert))
			if replicas[e.Layer] == nil {
				replicas[e.Layer] = map[int32]int{}
			}
			if _, ok := replicas[e.Layer][e.Expert]; !ok {
				replicas[e.Layer][e.Expert] = 0
			}
			maxExpert[e.Layer] = max(maxExpert[e.Layer], e.Expert)
			if e.State == proto.StateReady && !c.Draining {
				replicas[e.Layer][e.Expert]++
				cs.Experts++
			}
		}
		ranges := func(m map[int32][]int) map[int32]string {
			if len(m) == 0 {
				return nil
			}
			out := map[int32]string{}
			for l, es := range m {
				out[l] = compressRanges(es)
			}
			return out
		}
		cs.Ready = ranges(by[proto.StateReady])
		if cs.Ready == nil {
			cs.Ready = map[int32]string{}
		}
		cs.Loading = ranges(by[proto.StateLoading])
		cs.DrainingExp = ranges(by[proto.StateDraining])
		st.Cards = append(st.Cards, cs)
	}
	slices.SortFunc(st.Cards, func(a, b cardStatus) int { return cmp.Compare(a.Card, b.Card) })
	for l, m := range replicas {
		lr := layerReplica{Layer: l, Replicas: make([]int, maxExpert[l]+1)}
		for e := int32(0); e <= maxExpert[l]; e++ {
			lr.Replicas[e] = m[e]
			if m[e] == 0 {
				lr.Missing = append(lr.Missing, e)
			}
		}
		st.Replicas = append(st.Replicas, lr)
	}
	slices.SortFunc(st.Replicas, func(a, b layerReplica) int { return cmp.Compare(a.Layer, b.Layer) })
	return st
}

// compressRanges writes ascending unique ints as "0-3,8,10-11" (the --experts syntax).
func compressRanges(xs []int) string {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	xs = slices.Compact(xs)
	var b strings.Builder
	for i := 0; i < len(xs); {
		j := i
		for j+1 < len(xs) && xs[j+1] == xs[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(xs[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(xs[j]))
		}
		i = j + 1
	}
	return b.String()
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

func printStatus(w io.Writer, st meshStatus) {
	fmt.Fprintf(w, "model %s: %d cards\n\n", st.Model, len(st.Cards))
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
			parts = append(parts, fmt.Sprintf("%d×: %s", n, compressRanges(byCount[n])))
		}
		missing := "-"
		if len(lr.Missing) > 0 {
			ms := make([]int, len(lr.Missing))
			for i, m := range lr.Missing {
				ms[i] = int(m)
			}
			missing = compressRanges(ms)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\n", lr.Layer, strings.Join(parts, "  "), missing)
	}
	_ = tw.Flush()
}
