package mesh

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moemesh/moemesh/proto"
)

// Snapshot is a model's mesh as its registry shows it: cards, experts per card, ready
// replicas per expert, load and memory. `moemesh status --json` and the gateway's
// /v1/mesh print it; the JSON names are part of both interfaces.
type Snapshot struct {
	Model string `json:"model"`
	// Controller is the placement controller holding the leader lease ("" none: static
	// placement, or no leader at the moment).
	Controller string          `json:"controller,omitempty"`
	Cards      []CardSnapshot  `json:"cards"`
	Replicas   []LayerReplicas `json:"replicas"` // ready replicas per expert, by layer
	Time       time.Time       `json:"time"`     // when the registry was read
}

// CardSnapshot is one card's lease, condensed.
type CardSnapshot struct {
	Card         string           `json:"card"`
	Daemon       string           `json:"daemon"`
	Device       string           `json:"device"`
	Draining     bool             `json:"draining"`
	Leaving      bool             `json:"leaving"`           // shutting down: still serves, its experts move first
	Ready        map[int32]string `json:"ready"`             // layer → expert ranges ("0-3,8")
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

// LayerReplicas counts the ready replicas of each expert of a layer (cards draining as a
// whole do not count).
type LayerReplicas struct {
	Layer    int32   `json:"layer"`
	Replicas []int   `json:"replicas"` // index: expert; value: ready replicas
	Missing  []int32 `json:"missing,omitempty"`
}

// ReadSnapshot reads model's registry: every lease, each card's assignment and the
// controller lease. Undecodable leases are skipped (as Registry.Cards does) unless no card
// is left; the returned error then says why.
func ReadSnapshot(ctx context.Context, reg *Registry, model string) (*Snapshot, error) {
	cards, err := reg.Cards(ctx)
	if err != nil && (len(cards) == 0 || !errors.Is(err, ErrBadLease)) {
		return nil, fmt.Errorf("mesh: snapshot of %s: %w", model, err)
	}
	assigns := map[string]*proto.Assignment{}
	for _, c := range cards {
		a, err := reg.GetAssign(ctx, c.Card)
		if err != nil {
			return nil, fmt.Errorf("mesh: snapshot of %s: %w", model, err)
		}
		if a != nil {
			assigns[c.Card] = a
		}
	}
	leader, err := reg.Leader(ctx)
	if err != nil {
		return nil, fmt.Errorf("mesh: snapshot of %s: %w", model, err)
	}
	s := BuildSnapshot(model, cards, assigns, time.Now())
	s.Controller = leader
	return s, nil
}

// BuildSnapshot condenses leases and assignments (by card id) into a Snapshot as of now.
func BuildSnapshot(model string, cards []proto.CardStatus, assigns map[string]*proto.Assignment, now time.Time) *Snapshot {
	st := &Snapshot{Model: model, Cards: []CardSnapshot{}, Replicas: []LayerReplicas{}, Time: now.UTC()}
	replicas := map[int32]map[int32]int{}
	maxExpert := map[int32]int32{}
	for _, c := range cards {
		cs := CardSnapshot{Card: c.Card, Daemon: c.Daemon, Device: c.Device, Draining: c.Draining, Leaving: c.Leaving,
			Assigned: -1, Queue: c.Queue, TokensPerSec: c.TokensPerSec, Busy: c.Busy, BusySeconds: float64(c.BusyNanos) / 1e9, MemUsed: c.MemUsed, MemTotal: c.MemTotal,
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
		cs.Ready = layerRanges(by[proto.StateReady])
		if cs.Ready == nil {
			cs.Ready = map[int32]string{}
		}
		cs.Loading = layerRanges(by[proto.StateLoading])
		cs.DrainingExp = layerRanges(by[proto.StateDraining])
		st.Cards = append(st.Cards, cs)
	}
	slices.SortFunc(st.Cards, func(a, b CardSnapshot) int { return cmp.Compare(a.Card, b.Card) })
	for l, m := range replicas {
		lr := LayerReplicas{Layer: l, Replicas: make([]int, maxExpert[l]+1)}
		for e := int32(0); e <= maxExpert[l]; e++ {
			lr.Replicas[e] = m[e]
			if m[e] == 0 {
				lr.Missing = append(lr.Missing, e)
			}
		}
		st.Replicas = append(st.Replicas, lr)
	}
	slices.SortFunc(st.Replicas, func(a, b LayerReplicas) int { return cmp.Compare(a.Layer, b.Layer) })
	return st
}

func layerRanges(m map[int32][]int) map[int32]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[int32]string, len(m))
	for l, es := range m {
		out[l] = CompressRanges(es)
	}
	return out
}

// CompressRanges writes ints as ascending unique ranges, "0-3,8,10-11" (the --experts
// syntax).
func CompressRanges(xs []int) string {
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
