package model_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/moemesh/moemesh/model"
)

// Expected values below are written out with plain float64 formulas (or copied from
// models.md §3), never by calling the code under test.

func gtSigmoid(z float64) float64      { return 1 / (1 + math.Exp(-z)) }
func gtSqrtSoftplus(z float64) float64 { return math.Sqrt(math.Log(1 + math.Exp(z))) }

// gtSoftmax is softmax over z (plain, for moderate logits).
func gtSoftmax(z []float64) []float64 {
	m := slices.Max(z)
	p := make([]float64, len(z))
	sum := 0.0
	for i, v := range z {
		p[i] = math.Exp(v - m)
		sum += p[i]
	}
	for i := range p {
		p[i] /= sum
	}
	return p
}

func gtF64(z []float32) []float64 {
	out := make([]float64, len(z))
	for i, v := range z {
		out[i] = float64(v)
	}
	return out
}

// The worked example of models.md §3.
var (
	gtZ    = []float32{2.5, -3.0, 0.5, 0.2, 1.0, -2.0, 0.0, 0.3}
	gtBias = []float32{0, 0, 0, 0.2, 0, 0.1, 0.4, 0}
	gtP    = gtSoftmax(gtF64(gtZ))
	// DeepSeek-V2 example: plain top-3 is {3,6,0}, but groups {0,1} and {4,5} lose on max.
	gtZ2 = []float32{1.0, 0.9, 0.8, 3.0, 0.7, 0.6, 2.9, -1.0}
	gtP2 = gtSoftmax(gtF64(gtZ2))
	// Group {0,1} wins on max (3.0), group {2,3} on top-2 sum.
	gtZ3 = []float32{3.0, -5.0, 2.0, 1.9}
)

func dsv3(groups bool, bias bool) model.GateSpec {
	s := model.GateSpec{Experts: 8, TopK: 2, Scoring: model.Sigmoid, Renormalize: true, Scale: 2.5}
	if groups {
		s.Groups, s.TopKGroups, s.GroupScore = 4, 2, model.GroupTop2Sum
	}
	if bias {
		s.Bias = gtBias
	}
	return s
}

type gateCase struct {
	name    string
	spec    model.GateSpec
	z       []float32 // [tokens, Experts]
	ids     []int32
	experts [][]int32   // per token, in output order
	weights [][]float64 // per token
	tol     float64
}

func gateCases() []gateCase {
	s := gtSigmoid
	sp := gtSqrtSoftplus
	softmax := model.GateSpec{Experts: 8, TopK: 2, Scoring: model.Softmax}
	mixtral := softmax
	mixtral.Renormalize = true
	granite := model.GateSpec{Experts: 8, TopK: 2, Scoring: model.TopKSoftmax}
	olmoe := softmax
	olmoe.TopK = 3
	qwen3 := olmoe
	qwen3.Renormalize = true
	dsv2 := model.GateSpec{Experts: 8, TopK: 3, Scoring: model.Softmax, Scale: 16,
		Groups: 4, TopKGroups: 2, GroupScore: model.GroupMax}
	dsv2Greedy := dsv2
	dsv2Greedy.Groups, dsv2Greedy.TopKGroups, dsv2Greedy.GroupScore = 0, 0, model.GroupNone
	top2 := model.GateSpec{Experts: 4, TopK: 2, Scoring: model.Sigmoid, Renormalize: true,
		Groups: 2, TopKGroups: 1, GroupScore: model.GroupTop2Sum}
	groupMax := top2
	groupMax.GroupScore = model.GroupMax
	dsv4 := model.GateSpec{Experts: 8, TopK: 2, Scoring: model.SqrtSoftplus, Renormalize: true, Scale: 1.5, Bias: gtBias}
	dsv4NoBias := dsv4
	dsv4NoBias.Bias = nil
	hash := dsv4
	hash.Hash = []int32{5, 1, 7, 2, 0, 3} // 3 token ids × top-2
	zHash := append(append([]float32{}, gtZ...), gtZ2...)
	norm := func(a, b, scale float64) []float64 { return []float64{a / (a + b) * scale, b / (a + b) * scale} }

	return []gateCase{
		{name: "dsv3/worked-example", spec: dsv3(true, true), z: gtZ,
			experts: [][]int32{{6, 3}}, weights: [][]float64{{1.190664, 1.309336}}},
		{name: "dsv3/no-groups", spec: dsv3(false, true), z: gtZ,
			experts: [][]int32{{0, 6}}, weights: [][]float64{norm(s(2.5), s(0), 2.5)}},
		{name: "dsv3/no-bias-no-groups", spec: dsv3(false, false), z: gtZ,
			experts: [][]int32{{0, 4}}, weights: [][]float64{norm(s(2.5), s(1.0), 2.5)}},
		// Groups by top-2 sum of s: {2,3} 1.172, {6,7} 1.074 beat {0,1} 0.972.
		{name: "dsv3/no-bias-groups", spec: dsv3(true, false), z: gtZ,
			experts: [][]int32{{2, 7}}, weights: [][]float64{norm(s(0.5), s(0.3), 2.5)}},
		{name: "dsv3/two-tokens", spec: dsv3(true, true), z: append(append([]float32{}, gtZ...), gtZ...),
			experts: [][]int32{{6, 3}, {6, 3}}, weights: [][]float64{{1.190664, 1.309336}, {1.190664, 1.309336}}},
		{name: "dsv3/top2-sum-not-max", spec: top2, z: gtZ3,
			experts: [][]int32{{2, 3}}, weights: [][]float64{norm(s(2.0), s(1.9), 1)}},
		{name: "group-max", spec: groupMax, z: gtZ3,
			experts: [][]int32{{0, 1}}, weights: [][]float64{norm(s(3.0), s(-5.0), 1)}},
		{name: "mixtral/doc", spec: mixtral, z: gtZ, tol: 1e-4,
			experts: [][]int32{{0, 4}}, weights: [][]float64{{0.8176, 0.1824}}},
		{name: "mixtral/exact", spec: mixtral, z: gtZ,
			experts: [][]int32{{0, 4}}, weights: [][]float64{norm(math.Exp(2.5), math.Exp(1.0), 1)}},
		{name: "qwen2-moe", spec: softmax, z: gtZ,
			experts: [][]int32{{0, 4}}, weights: [][]float64{{0.599949, 0.133867}}},
		{name: "olmoe", spec: olmoe, z: gtZ,
			experts: [][]int32{{0, 4, 2}}, weights: [][]float64{{gtP[0], gtP[4], gtP[2]}}},
		{name: "qwen3-moe", spec: qwen3, z: gtZ, experts: [][]int32{{0, 4, 2}},
			weights: [][]float64{{gtP[0] / (gtP[0] + gtP[4] + gtP[2]), gtP[4] / (gtP[0] + gtP[4] + gtP[2]), gtP[2] / (gtP[0] + gtP[4] + gtP[2])}}},
		{name: "granite", spec: granite, z: gtZ,
			experts: [][]int32{{0, 4}}, weights: [][]float64{{0.8176, 0.1824}}, tol: 1e-4},
		{name: "granite/exact", spec: granite, z: gtZ,
			experts: [][]int32{{0, 4}}, weights: [][]float64{norm(math.Exp(2.5), math.Exp(1.0), 1)}},
		{name: "dsv2/group-max", spec: dsv2, z: gtZ2,
			experts: [][]int32{{3, 6, 2}}, weights: [][]float64{{16 * gtP2[3], 16 * gtP2[6], 16 * gtP2[2]}}},
		{name: "dsv2/greedy", spec: dsv2Greedy, z: gtZ2,
			experts: [][]int32{{3, 6, 0}}, weights: [][]float64{{16 * gtP2[3], 16 * gtP2[6], 16 * gtP2[0]}}},
		// c = s+bias: s(0)+0.4 = 1.233 beats s(1.0) = 1.146 for second place.
		{name: "dsv4/bias", spec: dsv4, z: gtZ,
			experts: [][]int32{{0, 6}}, weights: [][]float64{norm(sp(2.5), sp(0), 1.5)}},
		{name: "dsv4/no-bias", spec: dsv4NoBias, z: gtZ,
			experts: [][]int32{{0, 4}}, weights: [][]float64{norm(sp(2.5), sp(1.0), 1.5)}},
		// Token ids 2 and 0: rows {0,3} and {5,1} in table order; bias plays no part.
		{name: "dsv4/hash", spec: hash, z: zHash, ids: []int32{2, 0},
			experts: [][]int32{{0, 3}, {5, 1}},
			weights: [][]float64{norm(sp(2.5), sp(0.2), 1.5), norm(sp(0.6), sp(0.9), 1.5)}},
	}
}

func TestRouteFamilies(t *testing.T) {
	for _, c := range gateCases() {
		t.Run(c.name, func(t *testing.T) {
			if err := c.spec.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			tokens := len(c.z) / c.spec.Experts
			var r model.Routing
			if err := c.spec.Route(c.z, tokens, c.ids, &r); err != nil {
				t.Fatalf("Route: %v", err)
			}
			gtCheck(t, r, c.experts, c.weights, c.tol)
			var g model.Gate
			g.Spec = c.spec
			var r2 model.Routing
			if err := g.Route(c.z, tokens, c.ids, &r2); err != nil {
				t.Fatalf("Gate.Route: %v", err)
			}
			if !slices.Equal(r.Experts, r2.Experts) || !slices.Equal(r.Weights, r2.Weights) {
				t.Fatalf("GateSpec.Route %v %v != Gate.Route %v %v", r.Experts, r.Weights, r2.Experts, r2.Weights)
			}
		})
	}
}

func gtCheck(t *testing.T, r model.Routing, experts [][]int32, weights [][]float64, tol float64) {
	t.Helper()
	if tol == 0 {
		tol = 1e-6
	}
	if err := r.Validate(len(experts), 1<<20); err != nil {
		t.Fatal(err)
	}
	for tok := range experts {
		k := r.TopK
		got := r.Experts[tok*k : (tok+1)*k]
		if !slices.Equal(got, experts[tok]) {
			t.Errorf("token %d: experts %v, want %v", tok, got, experts[tok])
		}
		if weights == nil {
			continue
		}
		for j, w := range r.Weights[tok*k : (tok+1)*k] {
			if math.Abs(float64(w)-weights[tok][j]) > tol {
				t.Errorf("token %d: weight[%d] %.7f, want %.7f (±%g)", tok, j, w, weights[tok][j], tol)
			}
		}
	}
}

// TestRouteSoftplusStable needs log1p(e^x) for very negative x and x + log1p(e^−x) for
// very positive x: the naive formula gives 0 and +Inf there.
func TestRouteSoftplusStable(t *testing.T) {
	spec := model.GateSpec{Experts: 1, TopK: 1, Scoring: model.SqrtSoftplus}
	for _, c := range []struct {
		z    float32
		want float64
	}{
		{100, 10},
		{1000, math.Sqrt(1000)},
		{3e38, math.Sqrt(3e38)},
		{-100, math.Exp(-50)},
		{-150, math.Exp(-75)},
		{0, math.Sqrt(math.Ln2)},
		{float32(math.Inf(-1)), 0},
	} {
		var r model.Routing
		if err := spec.Route([]float32{c.z}, 1, nil, &r); err != nil {
			t.Fatal(err)
		}
		if got := float64(r.Weights[0]); math.Abs(got-c.want) > 1e-6*c.want {
			t.Errorf("sqrt(softplus(%g)) = %g, want %g", c.z, got, c.want)
		}
	}
}

func TestRouteTies(t *testing.T) {
	softmax := func(k int) model.GateSpec {
		return model.GateSpec{Experts: 5, TopK: k, Scoring: model.Softmax}
	}
	sigBias := model.GateSpec{Experts: 4, TopK: 1, Scoring: model.Sigmoid, Bias: []float32{0, 0.1, 0, 0.1}}
	groupTie := model.GateSpec{Experts: 4, TopK: 1, Scoring: model.Sigmoid,
		Groups: 2, TopKGroups: 1, GroupScore: model.GroupMax}
	for _, c := range []struct {
		name string
		spec model.GateSpec
		z    []float32
		want []int32
	}{
		{"lower-index-wins", softmax(2), []float32{1, 3, 3, 1, 3}, []int32{1, 2}},
		{"all-equal", softmax(3), []float32{0, 0, 0, 0, 0}, []int32{0, 1, 2}},
		{"descending-order", softmax(4), []float32{0, 5, 1, 4, -1}, []int32{1, 3, 2, 0}},
		{"tie-at-kth", softmax(2), []float32{2, 1, 0, 1, 2}, []int32{0, 4}},
		// p underflows to 0 for both 0 and 1, but z still orders them.
		{"no-underflow-tie", softmax(2), []float32{1000, 0, 1, -1, -2}, []int32{0, 2}},
		{"bias-tie", sigBias, []float32{0, 0, 0, 0}, []int32{1}},
		{"group-tie", groupTie, []float32{1, 0, 0, 1}, []int32{0}},
		{"topk-softmax", model.GateSpec{Experts: 5, TopK: 2, Scoring: model.TopKSoftmax},
			[]float32{1, 3, 3, 1, 3}, []int32{1, 2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var r model.Routing
			if err := c.spec.Route(c.z, 1, nil, &r); err != nil {
				t.Fatal(err)
			}
			gtCheck(t, r, [][]int32{c.want}, nil, 0)
		})
	}
}

func TestRouteNonFinite(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	e := math.E
	for _, c := range []struct {
		name    string
		spec    model.GateSpec
		z       []float32
		experts []int32
		weights []float64
	}{
		{"nan-is-minus-inf", model.GateSpec{Experts: 4, TopK: 2, Scoring: model.Softmax},
			[]float32{nan, 1, nan, 0}, []int32{1, 3}, []float64{e / (e + 1), 1 / (e + 1)}},
		{"nan-selected-last", model.GateSpec{Experts: 4, TopK: 3, Scoring: model.Sigmoid},
			[]float32{nan, 1, nan, 0}, []int32{1, 3, 0}, []float64{gtSigmoid(1), 0.5, 0}},
		{"all-nan-uniform", model.GateSpec{Experts: 4, TopK: 2, Scoring: model.Softmax},
			[]float32{nan, nan, nan, nan}, []int32{0, 1}, []float64{0.25, 0.25}},
		{"all-nan-renorm", model.GateSpec{Experts: 4, TopK: 2, Scoring: model.Softmax, Renormalize: true},
			[]float32{nan, nan, nan, nan}, []int32{0, 1}, []float64{0.5, 0.5}},
		{"plus-inf-shares", model.GateSpec{Experts: 4, TopK: 3, Scoring: model.Softmax},
			[]float32{inf, 0, inf, 1}, []int32{0, 2, 3}, []float64{0.5, 0.5, 0}},
		{"nan-bias", model.GateSpec{Experts: 4, TopK: 1, Scoring: model.Sigmoid, Bias: []float32{nan, 0, 0, 0}},
			[]float32{5, 0, 1, 2}, []int32{3}, []float64{gtSigmoid(2)}},
		{"softplus-inf-renorm", model.GateSpec{Experts: 4, TopK: 2, Scoring: model.SqrtSoftplus, Renormalize: true, Scale: 2},
			[]float32{inf, 0, 1, 2}, []int32{0, 3}, []float64{2, 0}},
		{"topk-softmax-all-minus-inf", model.GateSpec{Experts: 3, TopK: 2, Scoring: model.TopKSoftmax},
			[]float32{-inf, -inf, -inf}, []int32{0, 1}, []float64{0.5, 0.5}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var r model.Routing
			if err := c.spec.Route(c.z, 1, nil, &r); err != nil {
				t.Fatal(err)
			}
			gtCheck(t, r, [][]int32{c.experts}, [][]float64{c.weights}, 0)
		})
	}
}

func TestRouteBadInput(t *testing.T) {
	ok := model.GateSpec{Experts: 4, TopK: 2, Scoring: model.Softmax}
	with := func(f func(*model.GateSpec)) model.GateSpec { s := ok; f(&s); return s }
	hash := with(func(s *model.GateSpec) { s.Scoring, s.Hash = model.SqrtSoftplus, []int32{0, 1, 2, 3} })
	z4 := []float32{1, 2, 3, 4}
	for _, c := range []struct {
		name     string
		spec     model.GateSpec
		z        []float32
		tokens   int
		ids      []int32
		sentinel error
		msg      string // must appear in the error
	}{
		{"no-experts", with(func(s *model.GateSpec) { s.Experts = 0 }), nil, 0, nil, model.ErrConfig, "0 experts"},
		{"topk-over-experts", with(func(s *model.GateSpec) { s.TopK = 5 }), z4, 1, nil, model.ErrConfig, "top-k 5 of 4"},
		{"topk-zero", with(func(s *model.GateSpec) { s.TopK = 0 }), z4, 1, nil, model.ErrConfig, "top-k 0"},
		{"unknown-scoring", with(func(s *model.GateSpec) { s.Scoring = 0 }), z4, 1, nil, model.ErrConfig, "unknown scoring"},
		{"unknown-group-score", with(func(s *model.GateSpec) { s.GroupScore = 9 }), z4, 1, nil, model.ErrConfig, "unknown group score"},
		{"groups-not-dividing", with(func(s *model.GateSpec) { s.Groups, s.TopKGroups, s.GroupScore = 3, 1, model.GroupMax }),
			z4, 1, nil, model.ErrConfig, "do not divide"},
		{"groups-without-score", with(func(s *model.GateSpec) { s.Groups, s.TopKGroups = 2, 1 }),
			z4, 1, nil, model.ErrConfig, "no group score"},
		{"topk-groups-over-groups", with(func(s *model.GateSpec) { s.Groups, s.TopKGroups, s.GroupScore = 2, 3, model.GroupMax }),
			z4, 1, nil, model.ErrConfig, "keeps 3 of 2 groups"},
		{"topk-over-kept-experts", with(func(s *model.GateSpec) { s.TopK, s.Groups, s.TopKGroups, s.GroupScore = 3, 2, 1, model.GroupMax }),
			z4, 1, nil, model.ErrConfig, "exceeds the 2 experts"},
		{"top2-of-one", with(func(s *model.GateSpec) { s.TopK, s.Groups, s.TopKGroups, s.GroupScore = 1, 4, 1, model.GroupTop2Sum }),
			z4, 1, nil, model.ErrConfig, "2 experts per group"},
		{"bias-length", with(func(s *model.GateSpec) { s.Bias = []float32{1} }), z4, 1, nil, model.ErrConfig, "bias has 1 values"},
		{"hash-length", with(func(s *model.GateSpec) { s.Hash = []int32{0, 1, 2} }), z4, 1, []int32{0}, model.ErrConfig, "hash table of 3"},
		{"scale-nan", with(func(s *model.GateSpec) { s.Scale = float32(math.NaN()) }), z4, 1, nil, model.ErrConfig, "scale"},
		{"scale-negative", with(func(s *model.GateSpec) { s.Scale = -1 }), z4, 1, nil, model.ErrConfig, "scale"},
		{"logits-short", ok, z4[:3], 1, nil, model.ErrRouting, "3 logits for 1 tokens"},
		{"logits-long", ok, append(z4, 5), 1, nil, model.ErrRouting, "5 logits"},
		{"tokens-mismatch", ok, z4, 2, nil, model.ErrRouting, "4 logits for 2 tokens"},
		{"tokens-negative", ok, nil, -1, nil, model.ErrRouting, "for -1 tokens"},
		{"hash-no-ids", hash, z4, 1, nil, model.ErrRouting, "0 token ids"},
		{"hash-id-too-big", hash, z4, 1, []int32{2}, model.ErrRouting, "token id 2 outside"},
		{"hash-id-negative", hash, append(z4, z4...), 2, []int32{0, -1}, model.ErrRouting, "token 1: model: bad routing: token id -1"},
		{"hash-entry-range", with(func(s *model.GateSpec) { s.Hash = []int32{0, 1, 4, 0} }), z4, 1, []int32{1}, model.ErrConfig, "row 1 slot 0 is expert 4"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// out starts as a valid routing so that we see it is emptied on error.
			r := model.Routing{TopK: 1, Experts: []int32{0}, Weights: []float32{1}}
			err := c.spec.Route(c.z, c.tokens, c.ids, &r)
			if !errors.Is(err, c.sentinel) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("Route error %v, want %v containing %q", err, c.sentinel, c.msg)
			}
			if r.TopK != 0 || len(r.Experts) != 0 || len(r.Weights) != 0 {
				t.Errorf("routing after error: %+v", r)
			}
			if c.sentinel == model.ErrConfig {
				if err := c.spec.Validate(); !errors.Is(err, model.ErrConfig) || !strings.Contains(err.Error(), c.msg) {
					t.Errorf("Validate error %v, want containing %q", err, c.msg)
				}
			} else if err := c.spec.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestValidateValues(t *testing.T) {
	spec := model.GateSpec{Experts: 4, TopK: 2, Scoring: model.Sigmoid, Bias: []float32{0, float32(math.Inf(1)), 0, 0}}
	if err := spec.Validate(); !errors.Is(err, model.ErrConfig) || !strings.Contains(err.Error(), "bias[1]") {
		t.Errorf("infinite bias: %v", err)
	}
	spec.Bias, spec.Hash = nil, []int32{0, 1, 2, -1}
	if err := spec.Validate(); !errors.Is(err, model.ErrConfig) || !strings.Contains(err.Error(), "row 1 slot 1 is expert -1") {
		t.Errorf("negative hash entry: %v", err)
	}
	// An empty, non-nil bias is no bias: routing must not read leftover scratch.
	g := model.Gate{Spec: dsv3(false, true)}
	var r model.Routing
	if err := g.Route(gtZ, 1, nil, &r); err != nil {
		t.Fatal(err)
	}
	g.Spec.Bias = []float32{}
	if err := g.Route(gtZ, 1, nil, &r); err != nil {
		t.Fatal(err)
	}
	gtCheck(t, r, [][]int32{{0, 4}}, nil, 0)
	// Kimi K2 / Moonlight: one group, which is no grouping at all.
	k2 := model.GateSpec{Experts: 4, TopK: 2, Scoring: model.Sigmoid, Groups: 1, TopKGroups: 1, GroupScore: model.GroupTop2Sum}
	if err := k2.Validate(); err != nil {
		t.Errorf("one group: %v", err)
	}
}

// gtRef is an independent, plainly written reference of models.md §3 for finite logits:
// sort-based selection with −Inf masking of dropped groups.
func gtRef(sp model.GateSpec, z []float64, id int32) ([]int32, []float64) {
	e, k := sp.Experts, sp.TopK
	score := make([]float64, e)
	switch sp.Scoring {
	case model.Softmax:
		score = gtSoftmax(z)
	case model.Sigmoid:
		for i := range z {
			score[i] = gtSigmoid(z[i])
		}
	case model.SqrtSoftplus:
		for i := range z {
			score[i] = gtSqrtSoftplus(z[i])
		}
	case model.TopKSoftmax:
		copy(score, z)
	}
	var chosen []int32
	if sp.Hash != nil {
		chosen = sp.Hash[int(id)*k : int(id)*k+k]
	} else {
		c := slices.Clone(score)
		for i := range sp.Bias {
			c[i] += float64(sp.Bias[i])
		}
		if sp.Groups > 1 {
			per := e / sp.Groups
			gs := make([]float64, sp.Groups)
			for g := range gs {
				grp := slices.Clone(c[g*per : (g+1)*per])
				sort.Sort(sort.Reverse(sort.Float64Slice(grp)))
				if sp.GroupScore == model.GroupMax {
					gs[g] = grp[0]
				} else {
					gs[g] = grp[0] + grp[1]
				}
			}
			order := gtOrder(gs)
			for _, g := range order[sp.TopKGroups:] {
				for i := g * per; i < (g+1)*per; i++ {
					c[i] = math.Inf(-1)
				}
			}
		}
		for _, i := range gtOrder(c)[:k] {
			chosen = append(chosen, int32(i))
		}
	}
	w := make([]float64, k)
	for j, i := range chosen {
		w[j] = score[i]
	}
	switch {
	case sp.Scoring == model.TopKSoftmax:
		w = gtSoftmax(w)
	case sp.Scoring == model.Softmax && sp.Renormalize:
		sum := 0.0
		for _, v := range w {
			sum += v
		}
		for j := range w {
			w[j] /= sum
		}
	case sp.Scoring != model.Softmax && sp.Renormalize:
		sum := 0.0
		for _, v := range w {
			sum += v
		}
		for j := range w {
			w[j] /= sum + 1e-20
		}
	}
	scale := float64(sp.Scale)
	if scale == 0 {
		scale = 1
	}
	for j := range w {
		w[j] *= scale
	}
	return chosen, w
}

// gtOrder is the indices of v by descending value, lower index first on ties.
func gtOrder(v []float64) []int {
	idx := make([]int, len(v))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return v[idx[a]] > v[idx[b]] })
	return idx
}

// TestRouteMatchesReference compares every scoring, with and without groups, bias, hash,
// on random logits against gtRef.
func TestRouteMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var g model.Gate
	var r model.Routing
	for iter := range 2000 {
		groups := []int{0, 1, 2, 4, 8}[rng.IntN(5)]
		per := 1 + rng.IntN(8)
		e := per * max(groups, 1)
		sp := model.GateSpec{Experts: e, Scoring: model.Scoring(1 + rng.IntN(4)), Renormalize: rng.IntN(2) == 0,
			Scale: []float32{0, 1, 2.5, 16}[rng.IntN(4)]}
		if groups > 1 && per >= 2 {
			sp.Groups, sp.TopKGroups = groups, 1+rng.IntN(groups)
			sp.GroupScore = model.GroupScore(1 + rng.IntN(2))
		}
		kmax := e
		if sp.Groups > 1 {
			kmax = sp.TopKGroups * per
		}
		sp.TopK = 1 + rng.IntN(min(kmax, 8))
		if rng.IntN(2) == 0 {
			sp.Bias = make([]float32, e)
			for i := range sp.Bias {
				sp.Bias[i] = float32(rng.NormFloat64() * 0.3)
			}
		}
		tokens := 1 + rng.IntN(4)
		var ids []int32
		if rng.IntN(4) == 0 {
			vocab := 1 + rng.IntN(5)
			sp.Hash = make([]int32, vocab*sp.TopK)
			for i := range sp.Hash {
				sp.Hash[i] = int32(rng.IntN(e))
			}
			for range tokens {
				ids = append(ids, int32(rng.IntN(vocab)))
			}
		}
		z := make([]float32, tokens*e)
		for i := range z {
			z[i] = float32(rng.NormFloat64() * 3)
		}
		if err := sp.Validate(); err != nil {
			t.Fatalf("iter %d: %+v: %v", iter, sp, err)
		}
		g.Spec = sp
		if err := g.Route(z, tokens, ids, &r); err != nil {
			t.Fatalf("iter %d: %v", iter, err)
		}
		for tok := range tokens {
			var id int32
			if ids != nil {
				id = ids[tok]
			}
			wantE, wantW := gtRef(sp, gtF64(z[tok*e:(tok+1)*e]), id)
			k := sp.TopK
			gotE, gotW := r.Experts[tok*k:(tok+1)*k], r.Weights[tok*k:(tok+1)*k]
			if !slices.Equal(gotE, wantE) {
				t.Fatalf("iter %d token %d %+v: experts %v, want %v", iter, tok, sp, gotE, wantE)
			}
			for j := range wantW {
				if d := math.Abs(float64(gotW[j]) - wantW[j]); d > 1e-6*max(1, math.Abs(wantW[j])) {
					t.Fatalf("iter %d token %d %+v: weights %v, want %v", iter, tok, sp, gotW, wantW)
				}
			}
		}
	}
}

// TestRouteSoftmaxProperty: renormalised softmax weights sum to 1 and the chosen experts
// are the K largest logits, in order; Granite's rule gives the same weights.
func TestRouteSoftmaxProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var r, rg model.Routing
	for iter := range 500 {
		e := []int{8, 60, 64, 128, 256}[rng.IntN(5)]
		sp := model.GateSpec{Experts: e, TopK: 1 + rng.IntN(8), Scoring: model.Softmax, Renormalize: true}
		granite := model.GateSpec{Experts: e, TopK: sp.TopK, Scoring: model.TopKSoftmax}
		tokens := 1 + rng.IntN(8)
		z := make([]float32, tokens*e)
		for i := range z {
			z[i] = float32(rng.NormFloat64() * 2)
		}
		if err := sp.Route(z, tokens, nil, &r); err != nil {
			t.Fatal(err)
		}
		if err := granite.Route(z, tokens, nil, &rg); err != nil {
			t.Fatal(err)
		}
		k := sp.TopK
		for tok := range tokens {
			want := gtOrder(gtF64(z[tok*e : (tok+1)*e]))[:k]
			sum := 0.0
			for j := range k {
				if int(r.Experts[tok*k+j]) != want[j] {
					t.Fatalf("iter %d token %d: experts %v, want %v", iter, tok, r.Experts[tok*k:(tok+1)*k], want)
				}
				sum += float64(r.Weights[tok*k+j])
				if d := math.Abs(float64(r.Weights[tok*k+j] - rg.Weights[tok*k+j])); d > 1e-6 {
					t.Fatalf("iter %d: granite weight %v != mixtral %v", iter, rg.Weights[tok*k+j], r.Weights[tok*k+j])
				}
			}
			if math.Abs(sum-1) > 1e-6 {
				t.Fatalf("iter %d token %d: weights sum to %v", iter, tok, sum)
			}
		}
		if !slices.Equal(r.Experts, rg.Experts) {
			t.Fatalf("iter %d: granite experts %v != mixtral %v", iter, rg.Experts, r.Experts)
		}
	}
}

func TestRouteReusesOutput(t *testing.T) {
	spec := gtBenchSpec(true)
	z := gtLogits(128 * spec.Experts)
	g := &model.Gate{Spec: spec}
	var r model.Routing
	if err := g.Route(z, 128, nil, &r); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(20, func() {
		if err := g.Route(z, 128, nil, &r); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Gate.Route allocates %v times per call in steady state", allocs)
	}
	if err := g.Route(z[:spec.Experts], 1, nil, &r); err != nil || cap(r.Experts) < 128*spec.TopK {
		t.Errorf("fewer tokens did not reuse the output: err %v cap %d", err, cap(r.Experts))
	}
}

// FuzzRoute: arbitrary specs and logits (any f32 bit pattern) never panic, and either give
// an error or a well-formed routing with NaN-free, non-negative weights. A spec that passes
// Validate with well-shaped input must route.
func FuzzRoute(f *testing.F) {
	f.Add(uint8(7), uint8(1), uint8(3), uint8(1), uint8(1), uint8(2), true, float32(2.5), true, uint8(0), uint8(2), uint8(1), []byte("\x00\x00\x20\x40\x00\x00\x40\xc0"))
	f.Add(uint8(63), uint8(7), uint8(7), uint8(3), uint8(0), uint8(1), false, float32(0), false, uint8(0), uint8(5), uint8(1), []byte{0xff, 0xff, 0xff, 0x7f, 1, 2, 3})
	f.Add(uint8(15), uint8(5), uint8(0), uint8(0), uint8(2), uint8(0), true, float32(1.5), false, uint8(4), uint8(3), uint8(1), []byte{9, 8, 7, 6, 5, 4})
	f.Add(uint8(3), uint8(9), uint8(1), uint8(9), uint8(4), uint8(3), true, float32(-1), true, uint8(1), uint8(1), uint8(7), []byte{})
	f.Fuzz(func(t *testing.T, ne, nk, ng, nkg, scoring, gscore uint8, renorm bool, scale float32, bias bool, hashRows, nt, shape uint8, data []byte) {
		e := 1 + int(ne)%64
		groups := int(ng) % 9
		sp := model.GateSpec{Experts: e, TopK: int(nk) % 10, Scoring: model.Scoring(scoring % 6),
			Renormalize: renorm, Groups: groups, TopKGroups: int(nkg) % 10, GroupScore: model.GroupScore(gscore % 4), Scale: scale}
		if sp.TopK == 0 {
			sp.TopK = 1 + int(nk)%e
		}
		word := func(i int) uint32 {
			if len(data) == 0 {
				return 0
			}
			var w uint32
			for b := range 4 {
				w = w<<8 | uint32(data[(4*i+b)%len(data)])
			}
			return w
		}
		tokens := int(nt) % 6
		nz := tokens * e
		if shape%7 == 0 {
			nz++ // a logit count that does not fit
		}
		z := make([]float32, nz)
		for i := range z {
			z[i] = math.Float32frombits(word(i))
		}
		if bias {
			sp.Bias = make([]float32, e*int(shape%3)/2) // empty (no bias), half (bad length) or E
			for i := range sp.Bias {
				sp.Bias[i] = math.Float32frombits(word(i + 7))
			}
		}
		var ids []int32
		vocab := int(hashRows) % 5
		if hashRows > 0 && sp.TopK > 0 {
			sp.Hash = make([]int32, vocab*sp.TopK)
			for i := range sp.Hash {
				sp.Hash[i] = int32(word(i+3)%uint32(e+2)) - 1 // sometimes −1 or E
			}
			for i := range tokens {
				ids = append(ids, int32(word(i+5)%uint32(vocab+2))-1)
			}
		}

		var r model.Routing
		err := sp.Route(z, tokens, ids, &r)
		if err != nil {
			if !errors.Is(err, model.ErrConfig) && !errors.Is(err, model.ErrRouting) {
				t.Fatalf("error %v wraps neither ErrConfig nor ErrRouting", err)
			}
			if r.TopK != 0 || len(r.Experts) != 0 || len(r.Weights) != 0 {
				t.Fatalf("routing after error: %+v", r)
			}
		} else {
			if err := r.Validate(tokens, e); err != nil {
				t.Fatalf("%+v: %v", sp, err)
			}
			for tok := range tokens {
				row := r.Experts[tok*sp.TopK : (tok+1)*sp.TopK]
				if sp.Hash == nil {
					s := slices.Clone(row)
					slices.Sort(s)
					if len(slices.Compact(s)) != len(row) {
						t.Fatalf("token %d routed twice to one expert: %v", tok, row)
					}
				}
			}
			for i, w := range r.Weights {
				if w != w || w < 0 {
					t.Fatalf("weight %d is %v", i, w)
				}
			}
		}
		idsOK := true
		for _, id := range ids {
			idsOK = idsOK && id >= 0 && int(id) < vocab
		}
		if sp.Validate() == nil && len(z) == tokens*e && idsOK && err != nil {
			t.Fatalf("valid spec %+v and input failed: %v", sp, err)
		}
		// The pooled and the owned-scratch paths agree bit for bit.
		g := model.Gate{Spec: sp}
		var r2 model.Routing
		err2 := g.Route(z, tokens, ids, &r2)
		if (err == nil) != (err2 == nil) || !slices.Equal(r.Experts, r2.Experts) || !slices.Equal(r.Weights, r2.Weights) {
			t.Fatalf("GateSpec.Route (%v) and Gate.Route (%v) disagree", err, err2)
		}
	})
}

func gtBenchSpec(dsv3 bool) model.GateSpec {
	if !dsv3 {
		return model.GateSpec{Experts: 128, TopK: 8, Scoring: model.Softmax, Renormalize: true}
	}
	bias := make([]float32, 256)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range bias {
		bias[i] = float32(rng.NormFloat64() * 0.1)
	}
	return model.GateSpec{Experts: 256, TopK: 8, Scoring: model.Sigmoid, Renormalize: true, Scale: 2.5,
		Groups: 8, TopKGroups: 4, GroupScore: model.GroupTop2Sum, Bias: bias}
}

func gtLogits(n int) []float32 {
	rng := rand.New(rand.NewPCG(7, 8))
	z := make([]float32, n)
	for i := range z {
		z[i] = float32(rng.NormFloat64() * 2)
	}
	return z
}

func BenchmarkRoute(b *testing.B) {
	const tokens = 128
	for _, c := range []struct {
		name string
		dsv3 bool
	}{{"dsv3-E256-K8-T128", true}, {"softmax-E128-K8-T128", false}} {
		spec := gtBenchSpec(c.dsv3)
		z := gtLogits(tokens * spec.Experts)
		run := func(b *testing.B, route func(*model.Routing) error) {
			var r model.Routing
			b.ReportAllocs()
			for b.Loop() {
				if err := route(&r); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*tokens), "ns/token")
		}
		b.Run(c.name+"/Gate", func(b *testing.B) {
			g := &model.Gate{Spec: spec}
			run(b, func(r *model.Routing) error { return g.Route(z, tokens, nil, r) })
		})
		b.Run(c.name+"/GateSpec", func(b *testing.B) {
			run(b, func(r *model.Routing) error { return spec.Route(z, tokens, nil, r) })
		})
	}
}
