package expertd

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/moemesh/moemesh/ascend"
	_ "github.com/moemesh/moemesh/ascend/cpu"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
)

// fakeReq records what a handler answers.
type fakeReq struct {
	data    []byte
	headers micro.Headers
	mu      sync.Mutex
	resp    []byte
	code    string
	desc    string
	replied int
}

func (r *fakeReq) Respond(b []byte, opts ...micro.RespondOpt) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(opts) > 0 { // mesh.RespondError's headers (a reply has none: no allocation here)
		m := &nats.Msg{}
		for _, o := range opts {
			o(m)
		}
		if code := m.Header.Get(proto.HeaderErrorCode); code != "" {
			r.code, r.desc, r.replied = code, m.Header.Get(proto.HeaderError), r.replied+1
			return nil
		}
	}
	r.resp, r.replied = b, r.replied+1
	return nil
}
func (r *fakeReq) RespondJSON(any, ...micro.RespondOpt) error { panic("not used") }
func (r *fakeReq) Error(code, desc string, _ []byte, _ ...micro.RespondOpt) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.code, r.desc, r.replied = code, desc, r.replied+1
	return nil
}
func (r *fakeReq) Data() []byte           { return r.data }
func (r *fakeReq) Headers() micro.Headers { return r.headers }
func (r *fakeReq) Subject() string        { return "test" }
func (r *fakeReq) Reply() string          { return "inbox" }

const (
	tHidden  = 16
	tInter   = 8
	tExperts = 4
)

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, 4*n)
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(rng.NormFloat64()/4)))
	}
	return b
}

// testCard is a card holding experts 0-2 of layers 1 and 2 (expert 3 is elsewhere), and a
// reference set holding the same weights on another device.
func testCard(t *testing.T) (*card, *model.ExpertSet) {
	t.Helper()
	be, err := ascend.Open("cpu")
	if err != nil {
		t.Fatal(err)
	}
	dev, _ := be.OpenCard(0, 0)
	refDev, _ := be.OpenCard(1, 0)
	mcfg := &model.Config{Hidden: tHidden, ExpertIntermediate: tInter, Experts: tExperts}
	c := newCard("c0", "cpu:0", dev, mcfg, Config{QueueDepth: 4, MaxCoalesce: 16, Logger: discard()})
	ref := model.NewExpertSet(refDev, tHidden, tInter, 0)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, l := range []int{1, 2} {
		for e := 0; e < tExperts; e++ {
			w := model.ExpertWeights{DType: ascend.F32, Gate: randBytes(rng, tInter*tHidden), Up: randBytes(rng, tInter*tHidden), Down: randBytes(rng, tInter*tHidden)}
			k := model.ExpertKey{Layer: l, Expert: e}
			if e < 3 {
				if err := c.set.Add(k, w); err != nil {
					t.Fatal(err)
				}
			}
			if err := ref.Add(k, w); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(func() { c.close(); ref.Close(); refDev.Close() })
	return c, ref
}

// batch makes a batch of rows rows, each using a random 1–2 of experts 0-2.
func batch(t *testing.T, rng *rand.Rand, layer int, mode proto.Mode, rows int) *proto.ExpertBatch {
	t.Helper()
	b := &proto.ExpertBatch{V: proto.Version, Layer: int32(layer), Mode: mode, OutDType: proto.F32, RowPtr: proto.I32s{0}}
	x := make([]float32, rows*tHidden)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	for r := 0; r < rows; r++ {
		first := rng.IntN(3)
		b.Experts = append(b.Experts, int32(first))
		b.Weights = append(b.Weights, rng.Float32())
		if rng.IntN(2) == 0 {
			b.Experts = append(b.Experts, int32((first+1)%3))
			b.Weights = append(b.Weights, rng.Float32())
		}
		b.RowPtr = append(b.RowPtr, int32(len(b.Experts)))
	}
	if err := b.X.SetF32(proto.F32, x, int64(rows), tHidden); err != nil {
		t.Fatal(err)
	}
	return b
}

func request(t *testing.T, b *proto.ExpertBatch) *fakeReq {
	t.Helper()
	data, err := proto.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeReq{data: data, headers: micro.Headers{}}
}

// TestCoalescing: batches queued together run as one computation per (layer, mode), and
// each answer is bit-identical to computing that batch alone.
func TestCoalescing(t *testing.T) {
	c, ref := testCard(t)
	rng := rand.New(rand.NewPCG(3, 4))
	type sent struct {
		b   *proto.ExpertBatch
		req *fakeReq
	}
	var all []sent
	for _, spec := range []struct {
		layer int
		mode  proto.Mode
		rows  int
	}{{1, proto.ModeReduce, 3}, {1, proto.ModeReduce, 1}, {1, proto.ModePairs, 2}, {2, proto.ModeReduce, 5}, {1, proto.ModeReduce, 4}, {1, proto.ModePairs, 3}} {
		b := batch(t, rng, spec.layer, spec.mode, spec.rows)
		r := request(t, b)
		c.handle(r)
		all = append(all, sent{b, r})
	}
	// Only 4 fit in the queue (QueueDepth 4): the rest were refused with 503 at once.
	if got := len(c.jobs); got != 4 {
		t.Fatalf("queue holds %d, want 4", got)
	}
	var group []*job
	for len(c.jobs) > 0 {
		group = append(group, <-c.jobs)
	}
	c.runGroup(group)
	if got := c.runs.Load(); got != 3 {
		t.Fatalf("%d batches ran as %d computations, want 3 (layer 1 reduce ×2, layer 1 pairs, layer 2 reduce)", len(group), got)
	}
	refused := 0
	for i, s := range all {
		if s.req.replied != 1 {
			t.Fatalf("batch %d answered %d times", i, s.req.replied)
		}
		if s.req.code != "" {
			if s.req.code != strconv.Itoa(int(proto.CodeUnavailable)) {
				t.Fatalf("batch %d: error %s %s", i, s.req.code, s.req.desc)
			}
			refused++
			continue
		}
		var res proto.ExpertResult
		if err := proto.DecodeExpertResult(s.req.resp, &res, s.b); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		got, _ := res.Y.F32(nil)
		x, _ := s.b.X.F32(nil)
		want := make([]float32, len(got))
		if err := ref.Compute(model.Batch{Layer: int(s.b.Layer), X: x, RowPtr: s.b.RowPtr, Experts: s.b.Experts, Weights: s.b.Weights}, s.b.Mode == proto.ModePairs, want); err != nil {
			t.Fatal(err)
		}
		for j := range want {
			if got[j] != want[j] {
				t.Fatalf("batch %d value %d: coalesced %v, alone %v", i, j, got[j], want[j])
			}
		}
	}
	if refused != 2 || c.inflight.Load() != 0 {
		t.Fatalf("refused %d (want 2), in flight %d (want 0)", refused, c.inflight.Load())
	}
}

func TestCardErrors(t *testing.T) {
	c, _ := testCard(t)
	rng := rand.New(rand.NewPCG(5, 6))
	code := func(r *fakeReq) string { return r.code }

	garbage := &fakeReq{data: []byte{0x93, 0x01}, headers: micro.Headers{}}
	c.handle(garbage)
	if code(garbage) != "400" {
		t.Fatalf("garbage: code %q %s", garbage.code, garbage.desc)
	}

	wide := batch(t, rng, 1, proto.ModeReduce, 2)
	wide.X.Shape = []int64{1, 2 * tHidden}
	r := request(t, wide)
	c.handle(r)
	if code(r) != "400" {
		t.Fatalf("wrong hidden size: code %q %s", r.code, r.desc)
	}

	bad := &fakeReq{headers: micro.Headers{proto.HeaderDeadline: {"soon"}}}
	bad.data = request(t, batch(t, rng, 1, proto.ModeReduce, 1)).data
	c.handle(bad)
	if code(bad) != "400" {
		t.Fatalf("bad deadline header: code %q", bad.code)
	}

	// Expert 3 is not on this card: 404 (retryable elsewhere); the batch beside it still runs.
	elsewhere := batch(t, rng, 1, proto.ModeReduce, 1)
	elsewhere.Experts[0] = 3
	r1, r2 := request(t, elsewhere), request(t, batch(t, rng, 1, proto.ModeReduce, 2))
	late := request(t, batch(t, rng, 1, proto.ModeReduce, 1))
	late.headers[proto.HeaderDeadline] = []string{strconv.FormatInt(time.Now().Add(-time.Second).UnixNano(), 10)}
	for _, r := range []*fakeReq{r1, r2, late} {
		c.handle(r)
	}
	var group []*job
	for len(c.jobs) > 0 {
		group = append(group, <-c.jobs)
	}
	c.runGroup(group)
	if r1.code != "404" || r2.code != "" || r2.resp == nil || late.code != "504" {
		t.Fatalf("codes: elsewhere %q, good %q (reply %d bytes), late %q", r1.code, r2.code, len(r2.resp), late.code)
	}
	if c.inflight.Load() != 0 {
		t.Fatalf("%d still in flight", c.inflight.Load())
	}
}
