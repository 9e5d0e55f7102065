package deepseek4

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"github.com/moemesh/moemesh/model"
)

func tinyRouted(t *testing.T) *Config {
	t.Helper()
	m := readFixture(t, "testdata/flash")
	m["vocab_size"], m["n_routed_experts"], m["num_experts_per_tok"], m["num_hash_layers"] = 16, 8, 2, 1
	c, err := parseMap(t, m)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// refGate is model.py Gate.forward for one token, in float32 like torch.
func refGate(z, bias []float32, hash []int32, k int, scale float32) ([]int32, []float32) {
	s := make([]float32, len(z))
	sel := make([]float32, len(z))
	for i, v := range z {
		s[i] = float32(math.Sqrt(math.Log1p(math.Exp(float64(v)))))
		sel[i] = s[i]
		if bias != nil {
			sel[i] += bias[i]
		}
	}
	ids := hash
	if ids == nil {
		order := make([]int32, len(z))
		for i := range order {
			order[i] = int32(i)
		}
		sort.SliceStable(order, func(a, b int) bool { return sel[order[a]] > sel[order[b]] })
		ids = order[:k]
	}
	w := make([]float32, k)
	var sum float32
	for j, e := range ids {
		w[j] = s[e]
		sum += w[j]
	}
	for j := range w {
		w[j] = w[j] / sum * scale
	}
	return ids, w
}

func TestRoutingHandValues(t *testing.T) {
	c := tinyRouted(t)
	z := []float32{2.5, -3.0, 0.5, 0.2, 1.0, -2.0, 0.0, 0.3}
	// s = sqrt(softplus(z)) = [1.605892 0.220425 0.986953 0.893386 1.145976 0.356270 0.832555 0.924313];
	// with the bias, expert 6 (0.832555+0.4) beats expert 4 (1.145976), but its weight
	// comes from s alone: 1.5·s0/(s0+s6), 1.5·s6/(s0+s6).
	bias := []float32{0, 0, 0, 0.2, 0, 0, 0.4, 0}
	tid2eid := make([]int32, 16*2)
	tid2eid[5*2], tid2eid[5*2+1] = 3, 1
	for _, tc := range []struct {
		name  string
		layer int
		bias  []float32
		hash  []int32
		tok   int32
		ids   []int32
		w     []float32
	}{
		{"score routed", 1, bias, nil, 5, []int32{0, 6}, []float32{0.9878576, 0.5121424}},
		{"no bias effect", 1, make([]float32, 8), nil, 5, []int32{0, 4}, []float32{1.5 * 1.605892 / (1.605892 + 1.145976), 1.5 * 1.145976 / (1.605892 + 1.145976)}},
		{"hash routed", 0, nil, tid2eid, 5, []int32{3, 1}, []float32{1.2031472, 0.2968528}},
	} {
		g, err := c.LayerGate(tc.layer, tc.bias, tc.hash)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var r model.Routing
		if err := g.Route(z, 1, []int32{tc.tok}, &r); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !slices.Equal(r.Experts, tc.ids) {
			t.Errorf("%s: experts %v, want %v", tc.name, r.Experts, tc.ids)
		}
		for j := range tc.w {
			if math.Abs(float64(r.Weights[j]-tc.w[j])) > 2e-6 {
				t.Errorf("%s: weight %d = %v, want %v", tc.name, j, r.Weights[j], tc.w[j])
			}
		}
	}
}

// The shared gate equals the reference Gate.forward on random logits, both routings.
func TestRoutingMatchesReference(t *testing.T) {
	c := tinyRouted(t)
	rng := rand.New(rand.NewPCG(1, 2))
	bias := make([]float32, 8)
	for i := range bias {
		bias[i] = float32(rng.NormFloat64() * 0.3)
	}
	tid2eid := make([]int32, 16*2)
	for i := 0; i < 16; i++ {
		p := rng.Perm(8)
		tid2eid[2*i], tid2eid[2*i+1] = int32(p[0]), int32(p[1])
	}
	const T = 200
	z := make([]float32, T*8)
	ids := make([]int32, T)
	for i := range z {
		z[i] = float32(rng.NormFloat64() * 3)
	}
	for i := range ids {
		ids[i] = int32(rng.IntN(16))
	}
	for layer, args := range map[int][2]any{0: {[]float32(nil), tid2eid}, 2: {bias, []int32(nil)}} {
		b, h := args[0].([]float32), args[1].([]int32)
		g, err := c.LayerGate(layer, b, h)
		if err != nil {
			t.Fatal(err)
		}
		var r model.Routing
		if err := g.Route(z, T, ids, &r); err != nil {
			t.Fatal(err)
		}
		for tok := range T {
			var row []int32
			if h != nil {
				row = h[ids[tok]*2 : ids[tok]*2+2]
			}
			wantIDs, wantW := refGate(z[tok*8:(tok+1)*8], b, row, 2, 1.5)
			if !slices.Equal(r.Experts[tok*2:tok*2+2], wantIDs) {
				t.Fatalf("layer %d token %d: experts %v, reference %v", layer, tok, r.Experts[tok*2:tok*2+2], wantIDs)
			}
			for j := range 2 {
				if d := math.Abs(float64(r.Weights[tok*2+j] - wantW[j])); d > 1e-6 {
					t.Fatalf("layer %d token %d: weight %v, reference %v", layer, tok, r.Weights[tok*2+j], wantW[j])
				}
			}
		}
	}
}

func TestLayerGateErrors(t *testing.T) {
	c := tinyRouted(t)
	tid := make([]int32, 32)
	bad := slices.Clone(tid)
	bad[7] = 8
	for _, tc := range []struct {
		name  string
		layer int
		bias  []float32
		hash  []int32
	}{
		{"hash layer with bias", 0, make([]float32, 8), tid},
		{"hash layer short table", 0, nil, tid[:30]},
		{"routed layer without bias", 1, nil, nil},
		{"routed layer with table", 1, make([]float32, 8), tid},
		{"expert id out of range", 0, nil, bad},
		{"MTP layer", 43, make([]float32, 8), nil},
		{"negative layer", -1, nil, nil},
	} {
		if _, err := c.LayerGate(tc.layer, tc.bias, tc.hash); !errors.Is(err, model.ErrConfig) {
			t.Errorf("%s: err = %v, want ErrConfig", tc.name, err)
		}
	}
}

func TestSwiGLUClamp(t *testing.T) {
	for _, c := range []struct {
		g, u, limit float32
		want        float64
	}{
		{1, 2, 10, 1.4621171572600098},               // silu(1)·2, no clamp reached
		{12, -15, 10, -99.99546021312977},            // gate → 10, up → −10
		{-20, 20, 10, -20 / (1 + math.Exp(20)) * 10}, // gate below the limit is not clamped
		{12, -15, 0, 12 / (1 + math.Exp(-12)) * -15}, // limit 0: plain SwiGLU
		{0, 5, 10, 0},
	} {
		out := make([]float32, 1)
		SwiGLU([]float32{c.g}, []float32{c.u}, out, c.limit)
		if math.Abs(float64(out[0])-c.want) > 1e-5*math.Max(1, math.Abs(c.want)) {
			t.Errorf("SwiGLU(%v, %v, limit %v) = %v, want %v", c.g, c.u, c.limit, out[0], c.want)
		}
	}
}
