package router

import (
	"math"

	"github.com/moemesh/moemesh/proto"
)

// An express step serves only new interactive requests' prompts, so their first tokens do
// not wait behind a full step of other sequences' decode rows. A request that arrives
// while a step is in flight rides the next step; if that step also carries the heavy
// tenants' decode rows, the light tenant's time to first token is about two full steps
// under load against one short step alone. Its prefill in a step of its own cuts that to
// the rest of the step in flight plus one short step.
//
// Two rules keep the express lane from being a way around the weights:
//   - only a tenant holding no more than its weighted share of a step's slots (MaxBatch ×
//     weight / the active tenants' total weight, rounded up) takes it: the tenant with one
//     request at a time does, a tenant flooding the router with requests does not;
//   - two express steps never follow each other, so the running sequences' decode goes on
//     at least every other step whatever arrives.
//
// Every token of an express step is charged to its tenant's virtual time like any other,
// so the tokens served still split by weight.

// SetExpress turns express steps on or off from the next step on (EngineConfig.NoExpress
// sets the start), so an operator or a benchmark can compare both on a live engine.
func (e *Engine) SetExpress(on bool) {
	e.mu.Lock()
	e.noExpress = !on
	e.mu.Unlock()
}

// expressJob reports whether j may ride an express step with budget tokens left in it:
// an interactive request still waiting for its first token whose prompt is fed in full by
// this step, of a tenant within its share of slots. e.mu is held.
func (e *Engine) expressJob(j *job, budget int, totalWeight float64) bool {
	if j.first || j.req.Priority != proto.PriorityInteractive || len(j.toks)-j.fed > budget {
		return false
	}
	// Rounded up: a tenant with one request is never over its share, however many
	// tenants share the router.
	share := math.Ceil(float64(e.cfg.MaxBatch) * j.tenant.weight / totalWeight)
	return float64(j.tenant.resident) <= share
}

// planExpress picks the jobs of an express step (in order, by the slot order of plan), or
// none when no job qualifies or the previous step was already one. e.mu is held.
func (e *Engine) planExpress(resident []*job) (jobs []*job, tokens [][]int32) {
	if e.lastExpress || e.noExpress {
		return nil, nil
	}
	total := 0.0
	for _, t := range e.fair.tenants {
		if t.active() {
			total += t.weight
		}
	}
	if total <= 0 {
		return nil, nil
	}
	budget := e.cfg.StepTokens
	for _, j := range resident {
		if len(jobs) == e.cfg.MaxBatch {
			break
		}
		if !e.expressJob(j, budget, total) {
			continue
		}
		n := len(j.toks) - j.fed
		jobs = append(jobs, j)
		tokens = append(tokens, j.toks[j.fed:])
		budget -= n
	}
	return jobs, tokens
}
