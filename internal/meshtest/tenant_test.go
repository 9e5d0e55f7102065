package meshtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/model/decoder"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/proto"
	"github.com/moemesh/moemesh/router"
)

// TestTenantReachesDaemons: the tenant of every token travels with the expert batches, and
// the daemons' per-tenant pair counts equal what the requests routed: every token fed
// through the model (prompt, and every generated token but the last) makes top-k pairs in
// every MoE layer.
func TestTenantReachesDaemons(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := Checkpoint(t, "qwen3_moe", "bf16")
	st, err := stack.Start(ctx, stack.Config{ModelDir: dir, Model: "tenants", Daemons: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	nc, err := st.Connect(ctx, "router")
	if err != nil {
		t.Fatal(err)
	}
	ck, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	be, _ := ascend.Open("cpu")
	card, err := be.OpenCard(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer card.Close()
	dec, err := decoder.Load(ck, st.Model, card)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	experts, release, err := stack.Experts(ctx, ck, st.Model, be, nc, "tenants", false, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	// Steps of 2+ rows run as two micro-batches: the second part's rows must still be
	// charged to their own tenants.
	e, err := router.NewEngine(router.EngineConfig{Decoder: dec, Experts: experts, StepTokens: 16, MicroBatchRows: 2})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- e.Run(runCtx) }()
	defer func() { stop(); <-runDone }()

	type spec struct {
		tenant        string
		prompt, limit int
	}
	specs := []spec{{"acme", 9, 7}, {"acme", 30, 3}, {"beta", 4, 12}, {"b=c&d", 17, 5}}
	fed := map[string]int64{}
	dones := make([]chan proto.TokenEvent, len(specs))
	for i, s := range specs { // all at once, so that steps batch several tenants
		p := make([]int32, s.prompt)
		for k := range p {
			p[k] = int32(k*13+i) % int32(st.Model.Vocab)
		}
		done := make(chan proto.TokenEvent, 1)
		dones[i] = done
		req := &proto.GenerateRequest{V: proto.Version, ID: fmt.Sprint("r", i), Tenant: s.tenant, Prompt: p, MaxTokens: int32(s.limit), Inbox: "x"}
		if _, err := e.Submit(req, func(ev *proto.TokenEvent) {
			if ev.Finish != "" {
				done <- *ev
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range specs {
		var ev proto.TokenEvent
		select {
		case ev = <-dones[i]:
		case <-ctx.Done():
			t.Fatalf("request %d: %v", i, ctx.Err())
		}
		if ev.Finish == proto.FinishError {
			t.Fatalf("request %d: %s", i, ev.ErrMsg)
		}
		fed[s.tenant] += int64(ev.Usage.Prompt + ev.Usage.Completion - 1)
	}
	if st := e.Stats(); st.SplitSteps == 0 {
		t.Fatalf("no step of %d ran as two micro-batches", st.Steps)
	}
	per := int64(st.Model.TopK * len(st.Model.MoELayers()))
	got := st.TenantPairs()
	for tenant, n := range fed {
		if got[tenant] != n*per {
			t.Errorf("tenant %q: daemons counted %d pairs, requests routed %d tokens × %d", tenant, got[tenant], n, per)
		}
	}
	if len(got) != len(fed) {
		t.Errorf("daemons counted tenants %v, requests had %v", got, fed)
	}
}
