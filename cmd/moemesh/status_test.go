package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/proto"
)

// The table shows what the snapshot holds (mesh.TestBuildSnapshot checks the snapshot).
func TestPrintStatus(t *testing.T) {
	now := time.Unix(100, 0)
	es := func(state uint8, layer int32, experts ...int32) []proto.ExpertState {
		var out []proto.ExpertState
		for _, e := range experts {
			out = append(out, proto.ExpertState{Layer: layer, Expert: e, State: state})
		}
		return out
	}
	cards := []proto.CardStatus{
		{Card: "b", Daemon: "d2", Experts: append(es(proto.StateReady, 1, 2, 3), es(proto.StateLoading, 1, 0)...), MemUsed: 10, MemTotal: 100, Beat: now.Add(-time.Second).UnixNano()},
		{Card: "a", Daemon: "d1", Experts: append(es(proto.StateReady, 1, 0, 1, 2), es(proto.StateDraining, 1, 4)...), Queue: 3, Beat: now.UnixNano(),
			Busy: 0.25, BusyNanos: 1500e6, Leaving: true},
	}
	st := mesh.BuildSnapshot("m", cards, map[string]*proto.Assignment{"a": {Card: "a", Experts: make(proto.ExpertRefs, 3)}}, now)
	if len(st.Cards) != 2 || st.Cards[0].Card != "a" || st.Cards[1].Card != "b" {
		t.Fatalf("cards %+v", st.Cards)
	}
	a, b := st.Cards[0], st.Cards[1]
	if a.Ready[1] != "0-2" || a.DrainingExp[1] != "4" || a.Experts != 3 || a.Assigned != 3 || a.Queue != 3 ||
		a.Busy != 0.25 || a.BusySeconds != 1.5 || !a.Leaving {
		t.Errorf("card a: %+v", a)
	}
	if b.Ready[1] != "2-3" || b.Loading[1] != "0" || b.Assigned != -1 || b.BeatAgeMs != 1000 {
		t.Errorf("card b: %+v", b)
	}
	if len(st.Replicas) != 1 {
		t.Fatalf("replicas %+v", st.Replicas)
	}
	want := []int{1, 1, 2, 1, 0}
	if got := st.Replicas[0].Replicas; len(got) != len(want) || got[2] != 2 || got[4] != 0 || got[0] != 1 {
		t.Errorf("replicas %v, want %v", got, want)
	}
	if m := st.Replicas[0].Missing; len(m) != 1 || m[0] != 4 {
		t.Errorf("missing %v, want [4]", m)
	}
	var buf bytes.Buffer
	printStatus(&buf, st)
	for _, s := range []string{"L1:0-2", "static", "1×: 0-1,3", "2×: 2", "L1:4", "leaving", "25% (1.5s)", "controller none"} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, buf.String())
		}
	}
}
