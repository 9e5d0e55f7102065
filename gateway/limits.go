package gateway

import (
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/moemesh/moemesh/gateway/tenant"
)

// limiter enforces tenants' requests/min, tokens/min and concurrency. Its state outlives
// tenant reloads: a reload that changes a limit adjusts the tenant's buckets in place, so
// editing the file does not hand everyone a fresh burst.
type limiter struct {
	mu     sync.Mutex
	states map[string]*tenantState
}

type tenantState struct {
	limits   tenant.Limits
	rpm, tpm *rate.Limiter // nil: unlimited
	inflight int
}

func newLimiter() *limiter { return &limiter{states: map[string]*tenantState{}} }

// state returns t's state with its limits brought up to date. Callers hold l.mu.
func (l *limiter) state(t *tenant.Tenant) *tenantState {
	s := l.states[t.ID]
	if s == nil {
		s = &tenantState{}
		l.states[t.ID] = s
	}
	if s.limits == t.Limits { // zero limits and nil buckets agree from the start
		return s
	}
	s.limits = t.Limits
	// A bucket holds a minute's worth: a tenant may spend its minute at once, then refills
	// steadily.
	s.rpm = perMinute(s.rpm, t.Limits.RequestsPerMinute)
	s.tpm = perMinute(s.tpm, t.Limits.TokensPerMinute)
	return s
}

func perMinute(l *rate.Limiter, n int) *rate.Limiter {
	switch {
	case n <= 0:
		return nil
	case l == nil:
		return rate.NewLimiter(rate.Limit(float64(n)/60), n)
	}
	l.SetLimit(rate.Limit(float64(n) / 60))
	l.SetBurst(n)
	return l
}

// admit takes a slot for a request of t with prompt tokens, or says why not. The returned
// release must be called once with the completion tokens the request produced; they are
// charged to the tokens/min bucket afterwards (they are not known in advance), which may
// leave the bucket in debt and delay the tenant's next request.
func (l *limiter) admit(t *tenant.Tenant, prompt int, now time.Time) (release func(completion int), err *apiError) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.state(t)
	if max := s.limits.MaxConcurrent; max > 0 && s.inflight >= max {
		return nil, errRate(time.Second, "tenant %s has %d requests in flight, its limit", t.ID, max)
	}
	var reqRes *rate.Reservation
	if s.rpm != nil {
		reqRes = s.rpm.ReserveN(now, 1)
		if d := reqRes.DelayFrom(now); d > 0 {
			reqRes.CancelAt(now)
			return nil, errRate(d, "tenant %s is over its %d requests per minute", t.ID, s.limits.RequestsPerMinute)
		}
	}
	if s.tpm != nil {
		if prompt > s.tpm.Burst() {
			if reqRes != nil {
				reqRes.CancelAt(now)
			}
			return nil, errTooLong("prompt of %d tokens exceeds tenant %s's %d tokens per minute", prompt, t.ID, s.tpm.Burst())
		}
		r := s.tpm.ReserveN(now, prompt)
		if d := r.DelayFrom(now); d > 0 {
			r.CancelAt(now)
			if reqRes != nil {
				reqRes.CancelAt(now)
			}
			return nil, errRate(d, "tenant %s is over its %d tokens per minute", t.ID, s.limits.TokensPerMinute)
		}
	}
	s.inflight++
	var once sync.Once
	return func(completion int) {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			s.inflight--
			if s.tpm != nil && completion > 0 {
				s.tpm.ReserveN(time.Now(), min(completion, s.tpm.Burst())) // debt, not a wait
			}
		})
	}, nil
}
