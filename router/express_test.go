package router

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/moemesh/moemesh/proto"
)

// planJob is one resident job of a plan case: its tenant, prompt length, how much of it
// was fed, whether it has its first token, and its priority.
type planJob struct {
	tenant       string
	prompt, fed  int
	first, batch bool
}

// The express lane takes only new interactive prompts of tenants within their share of
// slots, never twice in a row and never when it would be the whole step anyway.
func TestPlanExpress(t *testing.T) {
	decoding := func(tenant string, n int) []planJob {
		js := make([]planJob, n)
		for i := range js {
			js[i] = planJob{tenant: tenant, prompt: 4, fed: 5, first: true}
		}
		return js
	}
	weights := map[string]float64{"light": 1, "heavy": 3, "other": 1}
	cases := []struct {
		name        string
		jobs        []planJob
		lastExpress bool
		noExpress   bool
		want        []int // indexes of the planned jobs when express, nil for a weighted step
	}{
		{"new light prompt among heavy decodes", append(decoding("heavy", 6), planJob{tenant: "light", prompt: 10}), false, false, []int{6}},
		{"two new prompts of tenants within share", append(decoding("heavy", 6), planJob{tenant: "light", prompt: 10}, planJob{tenant: "other", prompt: 3}), false, false, []int{6, 7}},
		{"after an express step", append(decoding("heavy", 6), planJob{tenant: "light", prompt: 10}), true, false, nil},
		{"turned off", append(decoding("heavy", 6), planJob{tenant: "light", prompt: 10}), false, true, nil},
		{"batch priority", append(decoding("heavy", 6), planJob{tenant: "light", prompt: 10, batch: true}), false, false, nil},
		{"prompt longer than a step", append(decoding("heavy", 6), planJob{tenant: "light", prompt: 100}), false, false, nil},
		{"last chunk of a long prompt", append(decoding("heavy", 6), planJob{tenant: "light", prompt: 100, fed: 60}), false, false, []int{6}},
		{"already has its first token", append(decoding("heavy", 6), planJob{tenant: "light", prompt: 10, fed: 11, first: true}), false, false, nil},
		// MaxBatch 4 × weight 3 / 4 = 3 slots for heavy, which holds 7.
		{"tenant over its share", append(decoding("heavy", 6), planJob{tenant: "heavy", prompt: 10}, planJob{tenant: "light", prompt: 10}), false, false, []int{7}},
		{"only new prompts: a plain step", []planJob{{tenant: "light", prompt: 10}, {tenant: "other", prompt: 3}}, false, false, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := &Engine{cfg: EngineConfig{MaxBatch: 4, StepTokens: 64}, fair: fair{tenants: map[string]*tenant{}},
				lastExpress: c.lastExpress, noExpress: c.noExpress}
			var resident []*job
			for i, pj := range c.jobs {
				tn := e.fair.get(pj.tenant, weights[pj.tenant])
				tn.resident++
				req := &proto.GenerateRequest{ID: fmt.Sprint(i), Tenant: pj.tenant}
				if pj.batch {
					req.Priority = proto.PriorityBatch
				}
				toks := make([]int32, pj.prompt, pj.prompt+1)
				if pj.first {
					toks = append(toks, 1)
				}
				resident = append(resident, &job{req: req, tenant: tn, toks: toks, fed: pj.fed, first: pj.first, admitted: int64(i)})
			}
			byJob := map[*job]int{}
			for i, j := range resident {
				byJob[j] = i
			}
			jobs, tokens := e.plan(resident)
			var got []int
			for i, j := range jobs {
				got = append(got, byJob[j])
				if want := j.toks[j.fed:]; len(tokens[i]) > len(want) || !slices.Equal(tokens[i], want[:len(tokens[i])]) {
					t.Fatalf("job %d planned %v of %v", byJob[j], tokens[i], want)
				}
			}
			if c.want == nil {
				if e.lastExpress {
					t.Fatalf("express step %v, want a weighted step", got)
				}
				if len(jobs) != min(len(resident), e.cfg.MaxBatch) {
					t.Fatalf("weighted step took %v", got)
				}
				return
			}
			slices.Sort(got)
			if !e.lastExpress || !slices.Equal(got, c.want) || e.stats.ExpressSteps != 1 {
				t.Fatalf("planned %v (express %v, %d express steps), want express %v", got, e.lastExpress, e.stats.ExpressSteps, c.want)
			}
			for i, j := range jobs {
				if j.fed+len(tokens[i]) != len(j.toks) {
					t.Fatalf("express job %d fed %d of %d", byJob[j], j.fed+len(tokens[i]), len(j.toks))
				}
			}
		})
	}
}

// A light tenant's request that arrives while a heavy tenant's requests decode gets its
// first token from an express step holding only it, with the tokens it would get alone;
// with express steps off, it rides a step of the heavy decodes.
func TestEngineExpressStep(t *testing.T) {
	l := tinyLM(t)
	for _, noExpress := range []bool{false, true} {
		t.Run(fmt.Sprint("noExpress=", noExpress), func(t *testing.T) {
			e := startEngine(t, EngineConfig{MaxBatch: 8, NoExpress: noExpress, Context: 100000})
			c := newCollector()
			// decoding closes once every heavy request has a few tokens: none is new.
			var mu sync.Mutex
			heavyTokens := make([]int, 6)
			decoding := make(chan struct{})
			var once sync.Once
			for k := range 6 {
				id := fmt.Sprint("heavy", k)
				r := request(id, "heavy", prompt(5, int32(k)), 100000)
				r.Weight = 3
				emit := c.emit(id)
				if _, err := e.Submit(r, func(ev *proto.TokenEvent) {
					mu.Lock()
					heavyTokens[k] += len(ev.Tokens)
					if slices.Min(heavyTokens) >= 3 {
						once.Do(func() { close(decoding) })
					}
					mu.Unlock()
					emit(ev)
				}); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case <-decoding:
			case <-time.After(time.Minute):
				t.Fatal("heavy requests did not decode")
			}
			var firstStep Stats
			var first sync.Once
			emit := c.emit("light")
			if _, err := e.Submit(request("light", "light", prompt(9, 7), 6), func(ev *proto.TokenEvent) {
				if len(ev.Tokens) > 0 {
					// Emit runs on the engine's goroutine right after the step.
					first.Do(func() { firstStep = e.Stats() })
				}
				emit(ev)
			}); err != nil {
				t.Fatal(err)
			}
			got, _ := c.wait(t, "light")
			if want := l.solo(t, prompt(9, 7), 6); !slices.Equal(got, want) {
				t.Fatalf("light: %v, solo %v", got, want)
			}
			alone := firstStep.LastStepSequences == 1 && firstStep.LastStepRows == 9
			if alone == noExpress || (firstStep.ExpressSteps > 0) == noExpress {
				t.Fatalf("first token from a step of %d sequences, %d rows (%d express steps)",
					firstStep.LastStepSequences, firstStep.LastStepRows, firstStep.ExpressSteps)
			}
			for k := range 6 {
				e.Cancel(fmt.Sprint("heavy", k))
			}
			for k := range 6 {
				if toks, last := c.wait(t, fmt.Sprint("heavy", k)); last.Finish != proto.FinishCancel || len(toks) == 0 {
					t.Fatalf("heavy %d: %s after %d tokens", k, last.Finish, len(toks))
				}
			}
		})
	}
}

// BenchmarkExpressTTFT: the engine alone (in-process experts, no gateway or NATS): a
// light tenant's time to first token while a heavy tenant's 20 requests decode, samples
// alternating between express steps on and off. Metrics: the medians and their ratio.
func BenchmarkExpressTTFT(b *testing.B) {
	const heavyN, samples = 20, 40
	l := tinyLM(b)
	e, err := NewEngine(EngineConfig{Decoder: l.dec, Experts: l.experts, MaxBatch: 16, MaxSeqs: 64, Context: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() { cancel(); <-done }()
	var mu sync.Mutex
	started := map[int]bool{}
	decoding := make(chan struct{})
	for k := range heavyN {
		r := request(fmt.Sprint("heavy", k), "heavy", prompt(20, int32(k)), 1<<19)
		r.Weight = 3
		if _, err := e.Submit(r, func(ev *proto.TokenEvent) {
			mu.Lock()
			defer mu.Unlock()
			if len(ev.Tokens) > 0 && !started[k] {
				if started[k] = true; len(started) == heavyN {
					close(decoding)
				}
			}
		}); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-decoding:
	case <-time.After(time.Minute):
		b.Fatal("heavy requests did not start")
	}
	for b.Loop() {
		var on, off []time.Duration
		for i := range 2 * samples {
			express := i%2 == 0
			e.SetExpress(express)
			first, finished := make(chan time.Duration, 1), make(chan struct{})
			start := time.Now()
			sent := false
			if _, err := e.Submit(request(fmt.Sprint("light", i), "light", prompt(30, int32(i)), 4), func(ev *proto.TokenEvent) {
				if !sent && len(ev.Tokens) > 0 {
					sent = true
					first <- time.Since(start)
				}
				if ev.Finish != "" {
					close(finished)
				}
			}); err != nil {
				b.Fatal(err)
			}
			select {
			case d := <-first:
				if express {
					on = append(on, d)
				} else {
					off = append(off, d)
				}
			case <-time.After(time.Minute):
				b.Fatal("no first token")
			}
			<-finished
		}
		slices.Sort(on)
		slices.Sort(off)
		x, m := on[len(on)/2], off[len(off)/2]
		b.ReportMetric(float64(x.Microseconds())/1000, "ttft_express_ms")
		b.ReportMetric(float64(m.Microseconds())/1000, "ttft_noexpress_ms")
		b.ReportMetric(m.Seconds()/x.Seconds(), "noexpress/express")
	}
	b.StopTimer()
	for k := range heavyN {
		e.Cancel(fmt.Sprint("heavy", k))
	}
}
