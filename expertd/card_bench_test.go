package expertd

import (
	"math/rand/v2"
	"testing"

	"github.com/nats-io/nats.go/micro"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
)

// BenchmarkCardHandle is the daemon's side of a dispatch without NATS: handle decodes a
// batch body (64 rows of bf16, two experts each, out of 8 on the card), the worker's
// runGroup computes it and encodes the reply. "compute" runs the same batch through the
// expert set alone: what the card's own code adds is the difference between the two.
func BenchmarkCardHandle(b *testing.B) {
	c := allocCard(b, 256, 128, 8)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, mode := range []proto.Mode{proto.ModeReduce, proto.ModePairs} {
		req, mb, out := cardRequest(b, rng, mode, 64, 256, 8)
		group := make([]*job, 1)
		name := "mode=" + []string{"reduce", "pairs"}[mode]
		b.Run(name+"/handle", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				serve(b, c, req, group)
			}
		})
		b.Run(name+"/compute", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.set.Compute(mb, mode == proto.ModePairs, out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestCardAddsNoAllocations: in steady state, decoding, queueing, merging, encoding and
// answering a batch allocate nothing beyond what the expert computation itself does.
func TestCardAddsNoAllocations(t *testing.T) {
	c := allocCard(t, 32, 16, 4)
	rng := rand.New(rand.NewPCG(5, 6))
	for _, mode := range []proto.Mode{proto.ModeReduce, proto.ModePairs} {
		req, mb, out := cardRequest(t, rng, mode, 8, 32, 4)
		group := make([]*job, 1)
		serve(t, c, req, group) // warm: the job and the card's buffers exist
		all := testing.AllocsPerRun(20, func() { serve(t, c, req, group) })
		compute := testing.AllocsPerRun(20, func() {
			if err := c.set.Compute(mb, mode == proto.ModePairs, out); err != nil {
				t.Fatal(err)
			}
		})
		if all > compute {
			t.Errorf("mode %d: a batch costs %v allocations, its computation %v: the card adds %v", mode, all, compute, all-compute)
		}
	}
}

// allocCard is a card holding experts 0..experts-1 of layer 1 with random f32 weights.
func allocCard(tb testing.TB, hidden, inter, experts int) *card {
	be, err := ascend.Open("cpu")
	if err != nil {
		tb.Fatal(err)
	}
	dev, err := be.OpenCard(0, 0)
	if err != nil {
		tb.Fatal(err)
	}
	mcfg := &model.Config{Hidden: hidden, ExpertIntermediate: inter, Experts: experts}
	c := newCard("c0", "cpu:0", dev, mcfg, Config{QueueDepth: 4, MaxCoalesce: 16, Logger: discard()})
	tb.Cleanup(func() { c.close() })
	rng := rand.New(rand.NewPCG(1, 2))
	for e := range experts {
		w := model.ExpertWeights{DType: ascend.F32, Gate: randBytes(rng, inter*hidden), Up: randBytes(rng, inter*hidden), Down: randBytes(rng, inter*hidden)}
		if err := c.set.Add(model.ExpertKey{Layer: 1, Expert: e}, w); err != nil {
			tb.Fatal(err)
		}
	}
	return c
}

// cardRequest is a bf16 batch of rows rows, two experts each, as a request body, and the
// same work as an expert-set batch with its output buffer.
func cardRequest(tb testing.TB, rng *rand.Rand, mode proto.Mode, rows, hidden, experts int) (*fakeReq, model.Batch, []float32) {
	bt := &proto.ExpertBatch{V: proto.Version, Layer: 1, Mode: mode, OutDType: proto.BF16, RowPtr: proto.I32s{0}}
	x := make([]float32, rows*hidden)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	for r := range rows {
		e := rng.IntN(experts)
		bt.Experts = append(bt.Experts, int32(e), int32((e+1)%experts))
		bt.Weights = append(bt.Weights, 0.6, 0.4)
		bt.RowPtr = append(bt.RowPtr, int32(len(bt.Experts)))
		bt.Tokens = append(bt.Tokens, int32(r))
	}
	if err := bt.X.SetF32(proto.BF16, x, int64(rows), int64(hidden)); err != nil {
		tb.Fatal(err)
	}
	// The card computes on the rows as they arrive: rounded to bf16.
	xw, err := bt.X.F32(nil)
	if err != nil {
		tb.Fatal(err)
	}
	outRows := rows
	if mode == proto.ModePairs {
		outRows = len(bt.Experts)
	}
	req := &fakeReq{data: proto.AppendExpertBatch(nil, bt), headers: micro.Headers{}}
	return req, model.Batch{Layer: 1, X: xw, RowPtr: bt.RowPtr, Experts: bt.Experts, Weights: bt.Weights}, make([]float32, outRows*hidden)
}

// serve runs req through the card as its endpoint and worker would.
func serve(tb testing.TB, c *card, req *fakeReq, group []*job) {
	c.handle(req)
	if len(c.jobs) != 1 {
		tb.Fatalf("error %s: %s", req.code, req.desc)
	}
	group[0] = <-c.jobs
	c.runGroup(group)
	if req.code != "" {
		tb.Fatalf("error %s: %s", req.code, req.desc)
	}
}
