package decoder_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moemesh/moemesh/ascend"
	_ "github.com/moemesh/moemesh/ascend/cpu"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/decoder"
	"github.com/moemesh/moemesh/model/nn"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/model/synth"
)

// tiny is one tiny checkpoint of an architecture, loaded with in-process experts.
type tiny struct {
	dec     decoder.Decoder
	experts model.Experts
	cfg     *model.Config
}

func load(t *testing.T, arch string) *tiny {
	t.Helper()
	dir := filepath.Join(t.TempDir(), arch)
	cfg, err := synth.Write(dir, synth.Options{Arch: arch, Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	ck, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	be, err := ascend.Open("cpu")
	if err != nil {
		t.Fatal(err)
	}
	var cards [2]ascend.Card
	for i := range cards {
		if cards[i], err = be.OpenCard(i, 0); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cards[i].Close() })
	}
	dec, err := decoder.Load(ck, cfg, cards[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dec.Close() })
	local, err := model.LoadLocal(ck, cfg, cards[1], cfg.MoELayers())
	if err != nil {
		t.Fatal(err)
	}
	return &tiny{dec: dec, experts: local, cfg: cfg}
}

func arches() []string {
	return append(synth.Arches(), synth.ArchDeepseekV4)
}

// run steps fresh sequences through the given steps (steps[k][i] is what sequence i feeds
// in step k), each step cut after sequence split, and returns every step's logits.
func (m *tiny) run(t *testing.T, experts model.Experts, steps [][][]int32, split int) [][][]float32 {
	t.Helper()
	n := len(steps[0])
	seqs := make([]decoder.Sequence, n)
	for i := range seqs {
		total := 0
		for _, st := range steps {
			total += len(st[i])
		}
		s, err := m.dec.NewSequence(nil, total)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		seqs[i] = s
	}
	var out [][][]float32
	for k, st := range steps {
		logits := make([][]float32, n)
		for i := range logits {
			logits[i] = make([]float32, m.cfg.Vocab)
		}
		if err := m.dec.ForwardSplit(context.Background(), seqs, st, experts, logits, split); err != nil {
			t.Fatalf("step %d split %d: %v", k, split, err)
		}
		out = append(out, logits)
	}
	return out
}

// steps is a prefill of uneven prompts and then three decode tokens per sequence.
func steps(vocab int) [][][]int32 {
	lens := []int{3, 6, 1, 5}
	var st [][][]int32
	pre := make([][]int32, len(lens))
	for i, n := range lens {
		for j := range n {
			pre[i] = append(pre[i], int32((i*131+j*17+5)%vocab))
		}
	}
	st = append(st, pre)
	for k := range 3 {
		dec := make([][]int32, len(lens))
		for i := range dec {
			dec[i] = []int32{int32((k*29 + i*7 + 1) % vocab)}
		}
		st = append(st, dec)
	}
	return st
}

// TestForwardSplitSameBits: a step cut into two micro-batches at any sequence gives the
// same logits, bit for bit, as the whole step, in every architecture.
func TestForwardSplitSameBits(t *testing.T) {
	for _, arch := range arches() {
		t.Run(arch, func(t *testing.T) {
			m := load(t, arch)
			st := steps(m.cfg.Vocab)
			whole := m.run(t, m.experts, st, 0)
			for split := 1; split < len(st[0]); split++ {
				got := m.run(t, m.experts, st, split)
				for k := range whole {
					for i := range whole[k] {
						if !slices.EqualFunc(got[k][i], whole[k][i], func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) }) {
							t.Fatalf("split %d step %d sequence %d: logits differ from the whole step", split, k, i)
						}
					}
				}
			}
		})
	}
}

// probe wraps experts: it records the rows and model.FirstRow of every call, counts calls
// in flight, and can hold the first part's call of a layer until the second part's call
// of the same layer arrives. That happens only if the second part's attention ran while
// the first part's experts were out; run one after the other, the held call times out.
type probe struct {
	model.Experts
	hold time.Duration // how long a first-part call waits for its second part (0: not at all)
	fail int           // fail the second part's call of this layer (-1: never)

	mu       sync.Mutex
	seen     map[int]chan struct{} // layer → closed when the second part's call arrives
	calls    []string
	inflight atomic.Int32
	timeouts atomic.Int32
}

func (p *probe) arrived(layer int) chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.seen[layer] == nil {
		p.seen[layer] = make(chan struct{})
	}
	return p.seen[layer]
}

func (p *probe) Forward(ctx context.Context, layer int, x []float32, hidden int, r model.Routing, out []float32) error {
	p.inflight.Add(1)
	defer p.inflight.Add(-1)
	first := model.FirstRow(ctx)
	p.mu.Lock()
	p.calls = append(p.calls, fmt.Sprintf("L%d first=%d rows=%d", layer, first, len(x)/hidden))
	p.mu.Unlock()
	if first > 0 {
		close(p.arrived(layer))
		if layer == p.fail {
			return errInjected
		}
	} else if p.hold > 0 {
		select {
		case <-p.arrived(layer):
		case <-time.After(p.hold):
			p.timeouts.Add(1)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return p.Experts.Forward(ctx, layer, x, hidden, r, out)
}

// TestForwardSplitOverlaps: with a step cut in two, the second part's experts call of a
// layer is sent before the first part's returns, the calls carry the part's rows and
// first row, and the logits still equal the whole step's.
func TestForwardSplitOverlaps(t *testing.T) {
	for _, arch := range arches() {
		t.Run(arch, func(t *testing.T) {
			m := load(t, arch)
			st := steps(m.cfg.Vocab)
			whole := m.run(t, m.experts, st, 0)
			p := &probe{Experts: m.experts, hold: 10 * time.Second, fail: -1, seen: map[int]chan struct{}{}}
			got := m.run(t, p, st[:1], 2)
			if p.timeouts.Load() > 0 {
				t.Fatalf("%d first-part calls waited 10 s for the second part: the parts ran one after the other (%v)", p.timeouts.Load(), p.calls)
			}
			for i := range got[0] {
				if !slices.Equal(got[0][i], whole[0][i]) {
					t.Fatalf("sequence %d: held split logits differ from the whole step", i)
				}
			}
			// Part one holds prompts of 3 and 6 rows, part two 1 and 5.
			for _, c := range p.calls {
				var layer, first, rows int
				if _, err := fmt.Sscanf(c, "L%d first=%d rows=%d", &layer, &first, &rows); err != nil {
					t.Fatal(err)
				}
				if (first == 0 && rows != 9) || (first != 0 && (first != 9 || rows != 6)) {
					t.Fatalf("call %q: want first=0 rows=9 or first=9 rows=6", c)
				}
			}
			if want := 2 * len(m.cfg.MoELayers()); len(p.calls) != want {
				t.Fatalf("%d experts calls, want %d (two per MoE layer): %v", len(p.calls), want, p.calls)
			}
		})
	}
}

// TestForwardSplitFailure: when one part's experts fail, ForwardSplit returns the error
// only after the other part's call is back (no goroutine writes into the step's buffers
// afterwards), and the sequences are broken until Reset.
func TestForwardSplitFailure(t *testing.T) {
	for _, arch := range arches() {
		t.Run(arch, func(t *testing.T) {
			m := load(t, arch)
			st := steps(m.cfg.Vocab)
			layer := m.cfg.MoELayers()[0]
			// The first part's next call is held 300 ms for a second part that failed: it
			// is still out when the failure comes back, and must be waited for.
			p := &probe{Experts: m.experts, hold: 300 * time.Millisecond, fail: layer, seen: map[int]chan struct{}{}}
			seqs := make([]decoder.Sequence, len(st[0]))
			logits := make([][]float32, len(seqs))
			for i := range seqs {
				s, err := m.dec.NewSequence(nil, 16)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				seqs[i], logits[i] = s, make([]float32, m.cfg.Vocab)
			}
			err := m.dec.ForwardSplit(context.Background(), seqs, st[0], p, logits, 2)
			if !errors.Is(err, errInjected) {
				t.Fatalf("err = %v, want the injected failure", err)
			}
			if n := p.inflight.Load(); n != 0 {
				t.Fatalf("%d experts calls still in flight after ForwardSplit returned", n)
			}
			if err := m.dec.ForwardSplit(context.Background(), seqs, st[1], m.experts, logits, 0); err == nil {
				t.Fatal("a sequence of the failed step stepped again without Reset")
			}
			for _, s := range seqs {
				s.Reset()
			}
			if err := m.dec.ForwardSplit(context.Background(), seqs, st[0], m.experts, logits, 2); err != nil {
				t.Fatalf("after Reset: %v", err)
			}
		})
	}
}

var errInjected = errors.New("probe: injected failure")

func TestForwardSplitBadSplit(t *testing.T) {
	m := load(t, "qwen3_moe")
	s, err := m.dec.NewSequence(nil, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	logits := [][]float32{make([]float32, m.cfg.Vocab)}
	for _, split := range []int{-1, 2} {
		err := m.dec.ForwardSplit(context.Background(), []decoder.Sequence{s}, [][]int32{{1, 2}}, m.experts, logits, split)
		if !errors.Is(err, nn.ErrInvalid) {
			t.Fatalf("split %d: err = %v, want nn.ErrInvalid", split, err)
		}
	}
	if s.Len() != 0 {
		t.Fatalf("a refused step changed the sequence: len %d", s.Len())
	}
	if err := m.dec.ForwardSplit(context.Background(), []decoder.Sequence{s}, [][]int32{{1, 2}}, m.experts, logits, 1); err != nil {
		t.Fatalf("split at len(seqs) is one part: %v", err)
	}
}
