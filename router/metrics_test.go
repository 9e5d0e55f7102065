package router

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/moemesh/moemesh/model"
)

// scrape gathers c through a pedantic registry (which checks the descriptions against
// what is collected) and returns each series as "name{l=v,...}" → value (histograms: the
// sample count).
func scrape(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				if l.GetName() == "router" {
					continue
				}
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			key := f.GetName() + "{" + strings.Join(ls, ",") + "}"
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

func count(series map[string]float64, prefix string) int {
	n := 0
	for k := range series {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}

// TestMeshMetrics: after steps over a fast card, a straggler (hedged) and a gone card
// (retried), the router's collector exports per-card latency and bytes, retries by reason,
// hedges by result, replica counts and per-expert tokens under each cap.
func TestMeshMetrics(t *testing.T) {
	all := []int{0, 1, 2, 3, 4, 5, 6, 7}
	fm := startFakeMesh(t, fakeCard{id: "fast", experts: all}, fakeCard{id: "slow", experts: []int{0, 1, 2, 3}, delay: 200 * time.Millisecond},
		fakeCard{id: "gone", experts: []int{4, 5, 6, 7}, silent: true})
	m := fm.newMesh(t, MeshConfig{HedgeAfter: 50 * time.Millisecond, ExpertMetrics: 2})
	e := newTestEngine(t, EngineConfig{})
	e.cfg.Experts = m // the engine never runs here: it only carries the mesh to the collector
	c := NewCollector(e, prometheus.Labels{"router": "r1"})

	const hidden, steps = 8, 6
	x, r := testRouting(6, 5, hidden)
	r.Experts[0], r.Experts[2], r.Experts[4] = 3, 3, 3 // expert 3 is the most routed
	want := wantOutput(t, x, r, hidden)
	for i := range steps {
		if i == 0 {
			// Steer the first step to slow and gone: fast looks loaded.
			m.tab.mu.RLock()
			m.tab.cards["fast"].inflight.Add(1 << 20)
			m.tab.mu.RUnlock()
		}
		out := make([]float32, len(x))
		if err := m.Forward(context.Background(), 1, x, hidden, r, out); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			m.tab.mu.RLock()
			m.tab.cards["fast"].inflight.Add(-1 << 20)
			m.tab.mu.RUnlock()
		}
		if !slices.Equal(out, want) {
			t.Fatalf("step %d: wrong output", i)
		}
	}
	s := scrape(t, c)
	if s["moemesh_router_dispatch_seconds{card=fast}"] == 0 {
		t.Errorf("no latency samples for fast: %v", s)
	}
	for _, dir := range []string{"sent", "received"} {
		if s["moemesh_router_dispatch_bytes_total{card=fast,direction="+dir+"}"] <= 0 {
			t.Errorf("no %s bytes for fast", dir)
		}
	}
	if s["moemesh_router_dispatch_bytes_total{card=gone,direction=sent}"] <= 0 || s["moemesh_router_dispatch_bytes_total{card=gone,direction=received}"] != 0 {
		t.Errorf("gone: bytes %v / %v, want some sent, none received",
			s["moemesh_router_dispatch_bytes_total{card=gone,direction=sent}"], s["moemesh_router_dispatch_bytes_total{card=gone,direction=received}"])
	}
	if s["moemesh_router_dispatch_retries_total{reason=no_responders}"] < 1 {
		t.Errorf("retries: %v", pick(s, "moemesh_router_dispatch_retries"))
	}
	if s["moemesh_router_dispatch_hedges_total{result=won}"] < 1 {
		t.Errorf("hedges: %v", pick(s, "moemesh_router_dispatch_hedges"))
	}
	if got := s["moemesh_router_routed_pairs_total{}"]; got != float64(steps*len(r.Experts)) {
		t.Errorf("routed pairs %v, want %d", got, steps*len(r.Experts))
	}
	// gone is suspect after its no-responders: experts 4-7 have one usable replica, 0-3 two.
	if s["moemesh_router_experts_by_replicas{replicas=1}"] != 4 || s["moemesh_router_experts_by_replicas{replicas=2}"] != 4 {
		t.Errorf("experts by replicas: %v", pick(s, "moemesh_router_experts_by_replicas"))
	}
	if s["moemesh_router_cards{state=usable}"] != 2 || s["moemesh_router_cards{state=suspect}"] != 1 {
		t.Errorf("cards: %v", pick(s, "moemesh_router_cards"))
	}
	// top-2: expert 3 first, then one other; each with its replica count.
	if n := count(s, "moemesh_router_expert_tokens_total"); n != 2 {
		t.Errorf("top-2 exports %d expert series: %v", n, pick(s, "moemesh_router_expert_tokens_total"))
	}
	if got, want := s["moemesh_router_expert_tokens_total{expert=3,layer=1}"], steps*countOf(r.Experts, 3); got != float64(want) {
		t.Errorf("expert 3 tokens %v, want %d", got, want)
	}
	if s["moemesh_router_expert_replicas{expert=3,layer=1}"] != 2 {
		t.Errorf("expert replicas: %v", pick(s, "moemesh_router_expert_replicas"))
	}
	m.SetExpertMetrics(-1)
	if n := count(scrape(t, c), "moemesh_router_expert_replicas"); n != 8 {
		t.Errorf("all: %d replica series, want 8", n)
	}
	m.SetExpertMetrics(0)
	if n := count(scrape(t, c), "moemesh_router_expert_"); n != 0 {
		t.Errorf("off: %d expert series", n)
	}
}

func countOf(xs []int32, v int32) int {
	n := 0
	for _, x := range xs {
		if x == v {
			n++
		}
	}
	return n
}

func pick(s map[string]float64, prefix string) string {
	var out []string
	for k, v := range s {
		if strings.HasPrefix(k, prefix) {
			out = append(out, fmt.Sprintf("%s=%g", k, v))
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func TestParseExpertMetrics(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"off", 0, true}, {"all", -1, true}, {"top-5", 5, true}, {"top-0", 0, false}, {"top-x", 0, false}, {"5", 0, false}, {"", 0, false},
	} {
		got, err := ParseExpertMetrics(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("%q: %d, %v; want %d, ok %v", c.in, got, err, c.want, c.ok)
		}
	}
}

func TestCapKeys(t *testing.T) {
	routed := map[model.ExpertKey]int64{{Layer: 1, Expert: 2}: 5, {Layer: 1, Expert: 0}: 5, {Layer: 2, Expert: 1}: 9}
	layers := map[int]bool{1: true, 2: true}
	for _, c := range []struct {
		limit int
		want  string
	}{
		{0, "[]"},
		{2, "[2/1 1/0]"},
		{10, "[2/1 1/0 1/2]"},
		{-1, "[1/0 1/1 1/2 2/0 2/1 2/2]"},
	} {
		if got := fmt.Sprint(capKeys(routed, 3, layers, c.limit)); got != c.want {
			t.Errorf("limit %d: %s, want %s", c.limit, got, c.want)
		}
	}
}
