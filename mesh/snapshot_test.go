package mesh

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/moemesh/moemesh/proto"
)

func TestCompressRanges(t *testing.T) {
	for _, c := range []struct {
		in   []int
		want string
	}{
		{nil, ""}, {[]int{3}, "3"}, {[]int{3, 1, 2, 0}, "0-3"}, {[]int{0, 1, 2, 3, 8, 10, 11, 11}, "0-3,8,10-11"},
	} {
		if got := CompressRanges(c.in); got != c.want {
			t.Errorf("%v: %q, want %q", c.in, got, c.want)
		}
	}
}

func lease(id string, beat time.Time, draining bool, experts map[uint8][]int32) proto.CardStatus {
	st := proto.CardStatus{V: proto.Version, Card: id, Daemon: "d-" + id, Device: "cpu:0", Beat: beat.UnixNano(),
		Draining: draining, Queue: 2, Busy: .5, MemUsed: 100, MemTotal: 1000}
	for state, es := range experts {
		for _, e := range es {
			st.Experts = append(st.Experts, proto.ExpertState{Layer: 1, Expert: e, State: state})
		}
	}
	return st
}

func TestBuildSnapshot(t *testing.T) {
	now := time.Unix(1000, 0)
	cards := []proto.CardStatus{
		lease("b", now.Add(-time.Second), false, map[uint8][]int32{proto.StateReady: {2, 3}, proto.StateLoading: {0}}),
		lease("a", now, false, map[uint8][]int32{proto.StateReady: {0, 1, 2}}),
		lease("c", now, true, map[uint8][]int32{proto.StateReady: {4}}), // draining: its replica does not count
	}
	assigns := map[string]*proto.Assignment{"a": {V: proto.Version, Card: "a", Experts: proto.ExpertRefs{{Layer: 1, Expert: 0}, {Layer: 1, Expert: 1}}}}
	s := BuildSnapshot("m", cards, assigns, now)
	var got []string
	for _, c := range s.Cards {
		got = append(got, fmt.Sprintf("%s ready=%v loading=%v experts=%d assigned=%d age=%d", c.Card, c.Ready, c.Loading, c.Experts, c.Assigned, c.BeatAgeMs))
	}
	want := []string{
		"a ready=map[1:0-2] loading=map[] experts=3 assigned=2 age=0",
		"b ready=map[1:2-3] loading=map[1:0] experts=2 assigned=-1 age=1000",
		"c ready=map[1:4] loading=map[] experts=0 assigned=-1 age=0",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("cards:\n got %v\nwant %v", got, want)
	}
	if len(s.Replicas) != 1 || fmt.Sprint(s.Replicas[0].Replicas) != "[1 1 2 1 0]" || fmt.Sprint(s.Replicas[0].Missing) != "[4]" {
		t.Errorf("replicas %+v", s.Replicas)
	}
	// The JSON names are an interface (status --json, /v1/mesh).
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"model":"m"`, `"cards":[`, `"replicas":[`, `"ready":{"1":"0-2"}`, `"mem_total":1000`, `"busy":0.5`, `"missing":[4]`} {
		if !json.Valid(b) || !strings.Contains(string(b), k) {
			t.Errorf("JSON lacks %s: %s", k, b)
		}
	}
	// Empty registry: empty lists, not null.
	if b, _ := json.Marshal(BuildSnapshot("m", nil, nil, now)); !strings.Contains(string(b), `"cards":[],"replicas":[]`) {
		t.Errorf("empty snapshot %s", b)
	}
}

// TestReadSnapshot reads leases, assignments and the leader from a real registry.
func TestReadSnapshot(t *testing.T) {
	s := startServer(t, ServerConfig{})
	nc := connect(t, s.ClientURL())
	ctx := timeout(t, 10*time.Second)
	reg, err := OpenRegistry(ctx, nc, "snap", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []proto.CardStatus{
		lease("x", time.Now(), false, map[uint8][]int32{proto.StateReady: {0, 1}}),
		lease("y", time.Now(), false, map[uint8][]int32{proto.StateReady: {1}}),
	} {
		if err := reg.PutCard(ctx, &c); err != nil {
			t.Fatal(err)
		}
	}
	if err := reg.PutAssign(ctx, &proto.Assignment{V: proto.Version, Card: "y", Experts: proto.ExpertRefs{{Layer: 1, Expert: 1}}}); err != nil {
		t.Fatal(err)
	}
	snap, err := ReadSnapshot(ctx, reg, "snap")
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Cards) != 2 || snap.Cards[0].Card != "x" || snap.Cards[0].Assigned != -1 || snap.Cards[1].Assigned != 1 {
		t.Errorf("cards %+v", snap.Cards)
	}
	if fmt.Sprint(snap.Replicas) != "[{1 [1 2] []}]" || snap.Controller != "" {
		t.Errorf("replicas %v, controller %q", snap.Replicas, snap.Controller)
	}
}
