package model

import (
	"fmt"
	"math"
	"sync"
)

// Gating: the routing rules of models.md §3, turning router logits z = W_r·x into a Routing.
//
// Conventions shared by every Scoring, chosen so that routing is a pure function of its
// inputs (the mesh and the in-process reference must agree on every token):
//   - Inputs are f32; all arithmetic is float64, summed in expert order, then rounded once
//     to f32. The result is bit-reproducible for a given binary and GOARCH (math.Exp may
//     differ by an ulp between architectures).
//   - Ties are broken by the lower index: between experts with equal selection scores, and
//     between groups with equal group scores. Output order is selection order: descending
//     selection score, ties lower index first (hash-routed layers: table order).
//   - A NaN logit is treated as −Inf everywhere (softmax p = 0, sigmoid s = 0, sqrt-softplus
//     s = 0), so it is selected only when fewer than K experts score better. Any NaN
//     selection score (e.g. from a NaN bias) likewise counts as −Inf.
//   - Softmax over values whose maximum is ±Inf is taken as its limit: the entries equal to
//     the maximum share the mass equally (all −Inf/NaN: uniform). Likewise a normalisation
//     whose sum is +Inf (sqrt-softplus of +Inf) splits the weight among the +Inf scores.
//     Weights are therefore never NaN.
//
// Errors: a malformed GateSpec wraps ErrConfig (it comes from config.json and the
// checkpoint); malformed per-call input (logit count, token ids) wraps ErrRouting.

// sigmoidEps is added to the sum of selected sigmoid-like scores before normalising,
// as HF DeepSeek-V3/V4 do, so that all-zero scores give zero weights instead of NaN.
const sigmoidEps = 1e-20

// Validate checks g completely: shape (as Route does on every call) plus the values of
// Bias (finite) and Hash (expert ids in range), which are too large to scan per call.
func (g GateSpec) Validate() error {
	if err := g.checkShape(); err != nil {
		return err
	}
	for i, b := range g.Bias {
		if math.IsNaN(float64(b)) || math.IsInf(float64(b), 0) {
			return fmt.Errorf("%w: gate bias[%d] is %v", ErrConfig, i, b)
		}
	}
	for i, e := range g.Hash {
		if e < 0 || int(e) >= g.Experts {
			return fmt.Errorf("%w: gate hash table row %d slot %d is expert %d of %d",
				ErrConfig, i/g.TopK, i%g.TopK, e, g.Experts)
		}
	}
	return nil
}

// groupsOn reports whether group-limited routing applies (models.md: 0 or 1 group is off).
func (g *GateSpec) groupsOn() bool { return g.Groups > 1 }

// checkShape is the O(1) part of Validate, cheap enough to run on every Route call so that
// a spec that never went through Validate still cannot make Route index out of range.
func (g *GateSpec) checkShape() error {
	switch {
	case g.Experts <= 0:
		return fmt.Errorf("%w: gate has %d experts", ErrConfig, g.Experts)
	case g.TopK <= 0 || g.TopK > g.Experts:
		return fmt.Errorf("%w: gate top-k %d of %d experts", ErrConfig, g.TopK, g.Experts)
	case g.Scoring < Softmax || g.Scoring > TopKSoftmax:
		return fmt.Errorf("%w: gate has unknown scoring %d", ErrConfig, g.Scoring)
	case g.GroupScore > GroupTop2Sum:
		return fmt.Errorf("%w: gate has unknown group score %d", ErrConfig, g.GroupScore)
	case g.Groups < 0 || g.TopKGroups < 0:
		return fmt.Errorf("%w: gate keeps %d of %d groups", ErrConfig, g.TopKGroups, g.Groups)
	case len(g.Bias) != 0 && len(g.Bias) != g.Experts:
		return fmt.Errorf("%w: gate bias has %d values for %d experts", ErrConfig, len(g.Bias), g.Experts)
	case g.Hash != nil && (len(g.Hash) == 0 || len(g.Hash)%g.TopK != 0):
		return fmt.Errorf("%w: gate hash table of %d expert ids is not whole rows of top-k %d",
			ErrConfig, len(g.Hash), g.TopK)
	case math.IsNaN(float64(g.Scale)) || math.IsInf(float64(g.Scale), 0) || g.Scale < 0:
		return fmt.Errorf("%w: gate scale %v", ErrConfig, g.Scale)
	}
	if !g.groupsOn() {
		return nil
	}
	per := g.Experts / g.Groups
	switch {
	case g.Experts%g.Groups != 0:
		return fmt.Errorf("%w: gate %d groups do not divide %d experts", ErrConfig, g.Groups, g.Experts)
	case g.GroupScore == GroupNone:
		// Refused rather than read as "groups off": a spec that names groups but no way to
		// score them is a config-mapping bug, and routing ungrouped would hide it.
		return fmt.Errorf("%w: gate has %d groups but no group score", ErrConfig, g.Groups)
	case g.TopKGroups < 1 || g.TopKGroups > g.Groups:
		return fmt.Errorf("%w: gate keeps %d of %d groups", ErrConfig, g.TopKGroups, g.Groups)
	case g.TopK > g.TopKGroups*per:
		return fmt.Errorf("%w: gate top-k %d exceeds the %d experts of %d kept groups",
			ErrConfig, g.TopK, g.TopKGroups*per, g.TopKGroups)
	case g.GroupScore == GroupTop2Sum && per < 2:
		return fmt.Errorf("%w: gate top-2 group score needs 2 experts per group, has %d", ErrConfig, per)
	}
	return nil
}

// Gate routes with Spec, keeping its scratch between calls so that steady-state routing
// allocates nothing beyond growing the output Routing. The zero value plus a Spec is
// ready to use. A Gate is not safe for concurrent use; Spec may be changed between calls.
type Gate struct {
	Spec GateSpec

	score []float64 // [Experts] scores (p, s, or cleaned z for TopKSoftmax)
	sel   []float64 // [Experts] selection scores when Bias is set (score + bias)
	group []float64 // [Groups] group scores
	keep  []bool    // [Groups] kept groups
	gidx  []int32   // [TopKGroups] kept group ids
	gval  []float64 // [TopKGroups]
	top   []float64 // [TopK] selection scores of the chosen experts
	w     []float64 // [TopK] weights before rounding to f32

	// byZ: select on the logits themselves (score holds cleaned z). True for TopKSoftmax,
	// and for Softmax whenever p's order is all selection needs (no bias, no top-2 sums):
	// exp is increasing, so top-K of z is top-K of p, minus the spurious ties that rounding
	// and underflow put into p, and renormalised weights then need no full softmax at all.
	byZ bool
}

// gatePool lends Gates to GateSpec.Route so the value-typed convenience path does not
// allocate either. The pooled Gate's Spec is cleared on return so the pool never pins a
// layer's Bias or Hash.
var gatePool = sync.Pool{New: func() any { return new(Gate) }}

// Route is Gate.Route with scratch borrowed from a pool; see Gate.Route.
func (g GateSpec) Route(logits []float32, tokens int, tokenIDs []int32, out *Routing) error {
	gt := gatePool.Get().(*Gate)
	gt.Spec = g
	err := gt.Route(logits, tokens, tokenIDs, out)
	gt.Spec = GateSpec{}
	gatePool.Put(gt)
	return err
}

// Route computes the routing of tokens tokens from their router logits (row-major
// [tokens, Spec.Experts] f32) by Spec's rule (models.md §3), writing out.TopK, out.Experts
// and out.Weights and reusing the capacity of out's slices. tokenIDs ([tokens]) are read
// only by hash-routed specs (Spec.Hash != nil) and may be nil otherwise.
//
// Per token, with z its logits and b = Spec.Bias (0 when nil):
//   - Softmax: p = softmax(z) over all experts; select the top K of p+b (group-limited when
//     Groups > 1, group score over p+b); weights p_k, or softmax over the selected z_k when
//     Renormalize (= p_k/Σp_k, without underflow). Without bias, selection and GroupMax
//     compare z instead of p: the same order, minus ties that rounding or underflow put
//     into p (z = [1000, 0, 1] picks 0 then 2, not 0 then 1).
//   - Sigmoid: s = sigmoid(z); SqrtSoftplus: s = sqrt(softplus(z)). Select the top K of
//     c = s+b (group-limited when Groups > 1: keep the TopKGroups best groups by GroupScore
//     over c, choose only among their experts); weights s_k, divided by Σs_k + 1e-20 when
//     Renormalize.
//   - TopKSoftmax: select the top K of z+b; weights softmax over the selected z_k (always
//     normalised, as Granite's topk-then-softmax).
//   - Hash: experts are Spec.Hash[id·K : id·K+K] for id = tokenIDs[t], in table order; the
//     scores above supply the weights at those experts (Bias and groups are not used).
//
// Weights are then multiplied by Spec.Scale (0 means 1). See the top of this file for
// tie-breaking and NaN/Inf handling. On error out holds no tokens (TopK 0, empty slices).
func (g *Gate) Route(logits []float32, tokens int, tokenIDs []int32, out *Routing) error {
	out.TopK, out.Experts, out.Weights = 0, out.Experts[:0], out.Weights[:0]
	sp := &g.Spec
	if err := sp.checkShape(); err != nil {
		return err
	}
	e, k := sp.Experts, sp.TopK
	if tokens < 0 || len(logits)%e != 0 || len(logits)/e != tokens {
		return fmt.Errorf("%w: gate got %d logits for %d tokens × %d experts", ErrRouting, len(logits), tokens, e)
	}
	if sp.Hash != nil && len(tokenIDs) != tokens {
		return fmt.Errorf("%w: hash-routed gate got %d token ids for %d tokens", ErrRouting, len(tokenIDs), tokens)
	}
	g.grow()
	g.byZ = sp.Scoring == TopKSoftmax ||
		(sp.Scoring == Softmax && len(sp.Bias) == 0 && (!sp.groupsOn() || sp.GroupScore == GroupMax))
	experts := gateGrow(out.Experts, tokens*k)
	weights := gateGrow(out.Weights, tokens*k)
	for t := range tokens {
		ex, w := experts[t*k:(t+1)*k], weights[t*k:(t+1)*k]
		var err error
		if sp.Hash != nil {
			err = g.hashToken(logits[t*e:(t+1)*e], tokenIDs[t], ex, w)
		} else {
			g.routeToken(logits[t*e:(t+1)*e], ex, w)
		}
		if err != nil {
			out.Experts, out.Weights = experts[:0], weights[:0]
			return fmt.Errorf("token %d: %w", t, err)
		}
	}
	out.TopK, out.Experts, out.Weights = k, experts, weights
	return nil
}

// grow sizes the scratch for Spec (checked by checkShape).
func (g *Gate) grow() {
	sp := &g.Spec
	g.score = gateGrow(g.score, sp.Experts)
	if len(sp.Bias) != 0 {
		g.sel = gateGrow(g.sel, sp.Experts)
	}
	if sp.groupsOn() {
		g.group = gateGrow(g.group, sp.Groups)
		g.keep = gateGrow(g.keep, sp.Groups)
		g.gidx = gateGrow(g.gidx, sp.TopKGroups)
		g.gval = gateGrow(g.gval, sp.TopKGroups)
	}
	g.top = gateGrow(g.top, sp.TopK)
	g.w = gateGrow(g.w, sp.TopK)
}

// scores fills g.score from one token's logits.
func (g *Gate) scores(z []float32) {
	score := g.score[:len(z)]
	for i, v := range z {
		score[i] = gateClean(float64(v))
	}
	if g.byZ {
		return
	}
	switch g.Spec.Scoring {
	case Softmax:
		gateSoftmax(score)
	case Sigmoid:
		for i, v := range score {
			score[i] = gateSigmoid(v)
		}
	case SqrtSoftplus:
		for i, v := range score {
			score[i] = math.Sqrt(gateSoftplus(v))
		}
	}
}

// routeToken selects and weights the experts of one token.
func (g *Gate) routeToken(z []float32, ex []int32, w []float32) {
	sp := &g.Spec
	g.scores(z)
	sel := g.score
	if len(sp.Bias) != 0 {
		sel = g.sel
		for i, b := range sp.Bias {
			sel[i] = gateClean(g.score[i] + float64(b))
		}
	}
	top := g.top[:len(ex)]
	if !sp.groupsOn() {
		gateTopK(sel, 0, ex, top, 0)
	} else {
		per := sp.Experts / sp.Groups
		group := g.group[:sp.Groups]
		for gi := range group {
			group[gi] = gateGroupScore(sel[gi*per:(gi+1)*per], sp.GroupScore)
		}
		gateTopK(group, 0, g.gidx, g.gval, 0)
		keep := g.keep[:sp.Groups]
		clear(keep)
		for _, gi := range g.gidx {
			keep[gi] = true
		}
		// Scanning kept groups in expert order (rather than masking the others with −Inf and
		// scanning everything) keeps the lower-index tie rule and never lets a masked expert
		// tie its way in against a kept expert whose score is itself −Inf.
		n := 0
		for gi, kept := range keep {
			if kept {
				n = gateTopK(sel[gi*per:(gi+1)*per], gi*per, ex, top, n)
			}
		}
	}
	g.weigh(z, ex, w)
}

// hashToken routes one token of a hash-routed layer: fixed experts, weights from the scores.
func (g *Gate) hashToken(z []float32, id int32, ex []int32, w []float32) error {
	sp := &g.Spec
	k := sp.TopK
	if id < 0 || int(id) >= len(sp.Hash)/k {
		return fmt.Errorf("%w: token id %d outside the gate hash table of %d ids", ErrRouting, id, len(sp.Hash)/k)
	}
	row := sp.Hash[int(id)*k : int(id)*k+k]
	for j, e := range row {
		if e < 0 || int(e) >= sp.Experts {
			return fmt.Errorf("%w: gate hash table row %d slot %d is expert %d of %d", ErrConfig, id, j, e, sp.Experts)
		}
	}
	copy(ex, row)
	g.scores(z)
	g.weigh(z, ex, w)
	return nil
}

// weigh writes the weights of the chosen experts ex of one token (g.score already filled
// by scores; routeToken may have overwritten g.sel, never g.score).
func (g *Gate) weigh(z []float32, ex []int32, w []float32) {
	sp := &g.Spec
	wt := g.w[:len(ex)]
	switch {
	case sp.Scoring == TopKSoftmax || (sp.Scoring == Softmax && sp.Renormalize):
		// p_k/Σp_k equals the softmax of the chosen logits; computing it that way cannot
		// underflow to 0/0 when every chosen p is tiny.
		for j, e := range ex {
			wt[j] = gateClean(float64(z[e]))
		}
		gateSoftmax(wt)
	case sp.Scoring == Softmax:
		if g.byZ {
			gateSoftmax(g.score)
		}
		for j, e := range ex {
			wt[j] = g.score[e]
		}
	default:
		for j, e := range ex {
			wt[j] = g.score[e]
		}
		if sp.Renormalize {
			gateNormalize(wt)
		}
	}
	scale := 1.0
	if sp.Scale != 0 {
		scale = float64(sp.Scale)
	}
	for j, v := range wt {
		w[j] = float32(v * scale)
	}
}

// gateTopK merges the candidates sel (expert ids base+i) into the best-first list
// idx/val, of which the first n are filled, and returns the new fill. Candidates must be
// offered in increasing id order and be NaN-free: the strict comparison then keeps the
// lower id ahead on ties. Insertion into a K-long list costs O(E) per token in practice,
// since most candidates fail the single comparison with the current K-th.
func gateTopK(sel []float64, base int, idx []int32, val []float64, n int) int {
	k := len(idx)
	for i, v := range sel {
		if n == k {
			if !(v > val[k-1]) {
				continue
			}
			n--
		}
		j := n
		for ; j > 0 && v > val[j-1]; j-- {
			val[j], idx[j] = val[j-1], idx[j-1]
		}
		val[j], idx[j] = v, int32(base+i)
		n++
	}
	return n
}

// gateGroupScore scores one group of NaN-free selection scores.
func gateGroupScore(sel []float64, how GroupScore) float64 {
	a, b := math.Inf(-1), math.Inf(-1) // best and second best
	for _, v := range sel {
		if v > a {
			a, b = v, a
		} else if v > b {
			b = v
		}
	}
	if how == GroupMax {
		return a
	}
	return gateClean(a + b) // +Inf + −Inf is NaN
}

// gateSoftmax replaces v (NaN-free) by softmax(v), in place; see the file comment for
// the ±Inf limit.
func gateSoftmax(v []float64) {
	m := math.Inf(-1)
	for _, x := range v {
		if x > m {
			m = x
		}
	}
	if math.IsInf(m, 0) {
		n := 0
		for _, x := range v {
			if x == m {
				n++
			}
		}
		for i, x := range v {
			if x == m {
				v[i] = 1 / float64(n)
			} else {
				v[i] = 0
			}
		}
		return
	}
	sum := 0.0
	for i, x := range v {
		v[i] = math.Exp(x - m)
		sum += v[i]
	}
	for i := range v {
		v[i] /= sum // sum >= 1: the maximum contributes exp(0)
	}
}

// gateNormalize divides non-negative scores by their sum + 1e-20 (HF DeepSeek-V3/V4). A
// +Inf sum, only reachable through sqrt-softplus of a +Inf logit, is resolved by its limit.
func gateNormalize(v []float64) {
	sum := 0.0
	for _, x := range v {
		sum += x
	}
	if !math.IsInf(sum, 1) {
		for i := range v {
			v[i] /= sum + sigmoidEps
		}
		return
	}
	n := 0
	for _, x := range v {
		if math.IsInf(x, 1) {
			n++
		}
	}
	for i, x := range v {
		if math.IsInf(x, 1) {
			v[i] = 1 / float64(n)
		} else {
			v[i] = 0
		}
	}
}

// gateSigmoid is 1/(1+e^−x); exp overflow for x ≪ 0 correctly gives 0.
func gateSigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

// gateSoftplus is log(1+e^x) without overflow for large x (x + log1p(e^−x)) and without
// losing e^x to rounding for very negative x (log1p keeps it).
func gateSoftplus(x float64) float64 {
	if x > 0 {
		return x + math.Log1p(math.Exp(-x))
	}
	return math.Log1p(math.Exp(x))
}

// gateClean maps NaN to −Inf so that comparisons order every score.
func gateClean(x float64) float64 {
	if x != x {
		return math.Inf(-1)
	}
	return x
}

// gateGrow returns s resized to n, reusing its capacity.
func gateGrow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
