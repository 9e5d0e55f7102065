package router

import (
	"cmp"
	"slices"
)

// tenant is one tenant's share of a router: its queue of requests not yet admitted and
// its virtual time, the tokens it has been served divided by its weight. The scheduler
// always serves the waiting tenant with the smallest virtual time first (within a
// priority class), so under contention tenants are served tokens in proportion to their
// weights, and a light tenant's request goes ahead of a heavy tenant's backlog.
type tenant struct {
	id       string
	weight   float64
	vtime    float64
	queue    []*job // FIFO, bounded by EngineConfig.TenantQueue
	resident int    // admitted jobs holding KV memory
	served   int64  // tokens processed (prompt and generated)
}

// active reports whether the tenant has work.
func (t *tenant) active() bool { return len(t.queue) > 0 || t.resident > 0 }

// fair holds the tenants of one engine.
type fair struct {
	tenants map[string]*tenant
}

// get returns the tenant, made on first use. A tenant that becomes active after idling
// starts at the smallest virtual time of the active tenants, so it cannot bank credit
// while idle and then starve the others.
func (f *fair) get(id string, weight float64) *tenant {
	if weight <= 0 {
		weight = 1
	}
	t, ok := f.tenants[id]
	if !ok {
		t = &tenant{id: id}
		f.tenants[id] = t
	}
	t.weight = weight // the newest request's weight: the gateway's config may have changed
	if !t.active() {
		t.vtime = max(t.vtime, f.minVtime(t))
	}
	return t
}

// minVtime is the smallest virtual time among active tenants other than skip (0 if none).
func (f *fair) minVtime(skip *tenant) float64 {
	m, any := 0.0, false
	for _, t := range f.tenants {
		if t != skip && t.active() && (!any || t.vtime < m) {
			m, any = t.vtime, true
		}
	}
	return m
}

// charge accounts n tokens served to t.
func (f *fair) charge(t *tenant, n int) {
	t.served += int64(n)
	t.vtime += float64(n) / t.weight
}

// next returns the tenant whose queue head should be admitted next: interactive before
// batch, then the smallest virtual time, then the tenant id (a stable order for ties).
func (f *fair) next() *tenant {
	var best *tenant
	for _, t := range f.tenants {
		if len(t.queue) == 0 {
			continue
		}
		if best == nil || before(t, best) {
			best = t
		}
	}
	return best
}

func before(a, b *tenant) bool {
	pa, pb := a.queue[0].req.Priority, b.queue[0].req.Priority
	if pa != pb {
		return pa < pb
	}
	if a.vtime != b.vtime {
		return a.vtime < b.vtime
	}
	return a.id < b.id
}

// order sorts resident jobs for a step: interactive first, then by their tenant's
// virtual time, then the job's own served tokens (round robin inside a tenant), then
// admission order.
func order(jobs []*job) {
	slices.SortStableFunc(jobs, func(a, b *job) int {
		if c := cmp.Compare(a.req.Priority, b.req.Priority); c != 0 {
			return c
		}
		if c := cmp.Compare(a.tenant.vtime, b.tenant.vtime); c != 0 {
			return c
		}
		if c := cmp.Compare(a.served, b.served); c != 0 {
			return c
		}
		return cmp.Compare(a.admitted, b.admitted)
	})
}

// drop forgets idle tenants beyond limit, so a stream of one-off tenant ids does not grow
// the map without bound.
func (f *fair) drop(limit int) {
	if len(f.tenants) <= limit {
		return
	}
	for id, t := range f.tenants {
		if !t.active() {
			delete(f.tenants, id)
		}
	}
}
