package model

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/moemesh/moemesh/model/nn"
)

var scalingNames = map[nn.ScalingKind]string{nn.ScalingNone: "none", nn.ScalingLinear: "linear", nn.ScalingYaRN: "yarn"}

// RopeScaling reads rope_scaling (or v5 rope_parameters): none/default always, and those
// of linear and yarn (with DeepSeek's mscale keys) that supported lists; any other type is
// ErrUnsupported, a malformed value ErrConfig.
func (c *Config) RopeScaling(supported ...nn.ScalingKind) (nn.RopeScaling, error) {
	var rs map[string]any
	key := "rope_scaling"
	ok, err := c.Lookup(key, &rs)
	if err != nil {
		return nn.RopeScaling{}, err
	}
	if !ok {
		key = "rope_parameters"
		if ok, err = c.Lookup(key, &rs); err != nil {
			return nn.RopeScaling{}, err
		}
	}
	if !ok {
		return nn.RopeScaling{}, nil
	}
	typ, _ := rs["rope_type"].(string)
	if typ == "" {
		typ, _ = rs["type"].(string)
	}
	num := func(name string, def float64) (float64, error) {
		v, present := rs[name]
		if !present || v == nil {
			return def, nil
		}
		f, isNum := v.(float64)
		if !isNum || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			return 0, fmt.Errorf("%w: %s.%s = %v", ErrConfig, key, name, v)
		}
		return f, nil
	}
	var sc nn.RopeScaling
	switch typ {
	case "", "default":
		return nn.RopeScaling{}, nil
	case "linear":
		sc.Kind = nn.ScalingLinear
	case "yarn":
		sc.Kind = nn.ScalingYaRN
	}
	if sc.Kind == nn.ScalingNone || !slices.Contains(supported, sc.Kind) {
		names := []string{"none"}
		for _, k := range supported {
			names = append(names, scalingNames[k])
		}
		return nn.RopeScaling{}, fmt.Errorf("%w: %s type %q (%s supports %s)", ErrUnsupported, key, typ, c.Arch, strings.Join(names, ", "))
	}
	if sc.Factor, err = num("factor", 0); err != nil {
		return sc, err
	}
	if !(sc.Factor > 0) {
		return sc, fmt.Errorf("%w: %s.factor %v", ErrConfig, key, rs["factor"])
	}
	if sc.Kind == nn.ScalingLinear {
		return sc, nil
	}
	orig, err := num("original_max_position_embeddings", 0)
	if err != nil {
		return sc, err
	}
	if orig < 1 || orig > math.MaxInt32 || orig != math.Trunc(orig) {
		return sc, fmt.Errorf("%w: %s.original_max_position_embeddings %v", ErrConfig, key, rs["original_max_position_embeddings"])
	}
	sc.OriginalMaxPosition = int(orig)
	for _, f := range []struct {
		name string
		dst  *float64
	}{{"beta_fast", &sc.BetaFast}, {"beta_slow", &sc.BetaSlow}, {"mscale", &sc.Mscale},
		{"mscale_all_dim", &sc.MscaleAllDim}, {"attention_factor", &sc.AttentionFactor}} {
		if *f.dst, err = num(f.name, 0); err != nil {
			return sc, err
		}
	}
	return sc, nil
}
