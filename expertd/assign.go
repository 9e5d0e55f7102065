package expertd

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/moemesh/moemesh/model"
)

// ParseRanges parses "0-3,8,10-11" into ascending unique integers in [0, limit). "all" or
// "*" means every value below limit.
func ParseRanges(s string, limit int) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "all" || s == "*" {
		out := make([]int, limit)
		for i := range out {
			out[i] = i
		}
		return out, nil
	}
	seen := make([]bool, limit)
	var out []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("range %q: %q is not a number", s, lo)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return nil, fmt.Errorf("range %q: %q is not a number", s, hi)
			}
		}
		if a < 0 || b < a || b >= limit {
			return nil, fmt.Errorf("range %q: %q is outside 0-%d", s, part, limit-1)
		}
		for v := a; v <= b; v++ {
			if !seen[v] {
				seen[v] = true
			}
		}
	}
	for v, ok := range seen {
		if ok {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("range %q selects nothing", s)
	}
	return out, nil
}

// Assignment builds the static expert set of a card: every expert in experts of every MoE
// layer in layers (a layer that is not MoE is an error, so a typo doesn't load nothing).
// experts "none" starts the card empty, for a placement controller to fill.
func Assignment(cfg *model.Config, layers, experts string) ([]model.ExpertKey, error) {
	if strings.TrimSpace(experts) == "none" {
		return []model.ExpertKey{}, nil
	}
	var ls []int
	if strings.TrimSpace(layers) == "all" || strings.TrimSpace(layers) == "*" || layers == "" {
		ls = cfg.MoELayers()
	} else {
		var err error
		if ls, err = ParseRanges(layers, cfg.Layers); err != nil {
			return nil, fmt.Errorf("layers: %w", err)
		}
		for _, l := range ls {
			if !cfg.IsMoELayer(l) {
				return nil, fmt.Errorf("layers: layer %d of %s is not a MoE layer (MoE layers: %v)", l, cfg.Arch, cfg.MoELayers())
			}
		}
	}
	es, err := ParseRanges(experts, cfg.Experts)
	if err != nil {
		return nil, fmt.Errorf("experts: %w", err)
	}
	keys := make([]model.ExpertKey, 0, len(ls)*len(es))
	for _, l := range ls {
		for _, e := range es {
			keys = append(keys, model.ExpertKey{Layer: l, Expert: e})
		}
	}
	return keys, nil
}
