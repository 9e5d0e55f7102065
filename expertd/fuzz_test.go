package expertd

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
)

// fuzzCard is testCard for a fuzz target (testing.TB): experts 0-2 of layers 1 and 2 on
// a CPU card, expert 3 elsewhere, and no worker goroutine: the target runs the worker's
// step itself so every exec ends with the batch answered.
func fuzzCard(tb testing.TB) *card {
	tb.Helper()
	be, err := ascend.Open("cpu")
	if err != nil {
		tb.Fatal(err)
	}
	dev, err := be.OpenCard(0, 0)
	if err != nil {
		tb.Fatal(err)
	}
	c := newCard("c0", "cpu:0", dev, &model.Config{Hidden: tHidden, ExpertIntermediate: tInter, Experts: tExperts},
		Config{QueueDepth: 1, MaxCoalesce: 1, Logger: discard()})
	tb.Cleanup(func() { _ = c.close() })
	rng := rand.New(rand.NewPCG(1, 2))
	for _, l := range []int{1, 2} {
		for e := range 3 {
			w := model.ExpertWeights{DType: ascend.F32, Gate: randBytes(rng, tInter*tHidden), Up: randBytes(rng, tInter*tHidden), Down: randBytes(rng, tInter*tHidden)}
			if err := c.set.Add(model.ExpertKey{Layer: l, Expert: e}, w); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return c
}

// fuzzBatch encodes a batch of rows rows of width hidden using experts 0 and last.
func fuzzBatch(tb testing.TB, mode proto.Mode, dt proto.DType, rows, hidden int, last int32) []byte {
	tb.Helper()
	b := &proto.ExpertBatch{V: proto.Version, Layer: 1, Mode: mode, OutDType: proto.BF16, RowPtr: proto.I32s{0}}
	for r := range rows {
		b.RowPtr = append(b.RowPtr, int32(2*r+2))
		b.Experts = append(b.Experts, 0, last)
		b.Weights = append(b.Weights, 0.5, 0.25)
	}
	x := make([]float32, rows*hidden)
	for i := range x {
		x[i] = float32(i%7) - 3
	}
	if err := b.X.SetF32(dt, x, int64(rows), int64(hidden)); err != nil {
		tb.Fatal(err)
	}
	data, err := proto.Marshal(b)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// FuzzCardHandle drives a card's batch handling from the bytes and headers a router sends:
// card.handle (the card subject's handler: decode, Moe-Deadline, Moe-Tenant, width check,
// queue) and then the worker's step for whatever was queued. Every batch is answered
// exactly once: with a result that validates against the batch (proto.DecodeExpertResult),
// or with a documented code: 400 malformed, 409 version, 404 an expert not on the card,
// 504 a deadline already past. Never a panic, never a 500.
func FuzzCardHandle(f *testing.F) {
	for _, s := range []struct {
		data                     []byte
		dl, tenants, traceparent string
	}{
		{fuzzBatch(f, proto.ModeReduce, proto.BF16, 2, tHidden, 2), "", "acme=4", ""},
		{fuzzBatch(f, proto.ModePairs, proto.F32, 1, tHidden, 1), "4102444800000000000", "a=1&b%3Dc=1", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{fuzzBatch(f, proto.ModeReduce, proto.F16, 3, tHidden, 3), "", "", ""},
		{fuzzBatch(f, proto.ModeReduce, proto.F16, 1, tHidden, 1), "1", "", ""},
		{fuzzBatch(f, proto.ModeReduce, proto.BF16, 3, tHidden+1, 1), "soon", "a=-1", "garbage"},
		{fuzzBatch(f, proto.ModePairs, proto.BF16, 0, tHidden, 1), "-1", "%zz", ""},
		{[]byte{0x99}, "", "", ""},
	} {
		f.Add(s.data, s.dl, s.tenants, s.traceparent)
	}
	c := fuzzCard(f)
	f.Fuzz(func(t *testing.T, data []byte, dl, tenants, traceparent string) {
		h := nats.Header{}
		for k, v := range map[string]string{proto.HeaderDeadline: dl, proto.HeaderTenant: tenants, "traceparent": traceparent} {
			if v != "" {
				h.Set(k, v)
			}
		}
		req := &fakeReq{data: data, headers: micro.Headers(h)}
		c.handle(req)
		var b proto.ExpertBatch
		decodeErr := proto.DecodeExpertBatch(data, &b, tExperts)
		select {
		case j := <-c.jobs:
			if req.replied != 0 {
				t.Fatalf("a queued batch was already answered %q: %s", req.code, req.desc)
			}
			if decodeErr != nil || j.b.X.Shape[1] != tHidden || len(j.x) != j.b.Rows()*tHidden {
				t.Fatalf("queued %d values for %d rows (decode: %v)", len(j.x), j.b.Rows(), decodeErr)
			}
			if _, err := strconv.ParseInt(dl, 10, 64); dl != "" && err != nil {
				t.Fatalf("queued with deadline header %q", dl)
			}
			c.runGroup([]*job{j})
		default:
			if decodeErr != nil && req.code != strconv.Itoa(int(proto.CodeOf(decodeErr))) {
				t.Fatalf("code %q for a body the decoder refuses with %v", req.code, decodeErr)
			}
		}
		if req.replied != 1 || c.inflight.Load() != 0 {
			t.Fatalf("answered %d times, %d in flight", req.replied, c.inflight.Load())
		}
		if req.code == "" {
			var res proto.ExpertResult
			if err := proto.DecodeExpertResult(req.resp, &res, &b); err != nil {
				t.Fatalf("the card's answer does not validate against the batch: %v", err)
			}
			return
		}
		switch code, _ := strconv.Atoi(req.code); proto.Code(code) {
		case proto.CodeBadRequest, proto.CodeVersion, proto.CodeNotFound, proto.CodeDeadline:
		default:
			t.Fatalf("code %q: %s", req.code, req.desc)
		}
		if req.desc == "" || strings.ContainsAny(req.desc, "\r\n") {
			t.Fatalf("error description %q", req.desc)
		}
	})
}
