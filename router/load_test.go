package router

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
)

func TestLoadReports(t *testing.T) {
	url := natsURL(t)
	nc := dial(t, url, "router")
	sub := dial(t, url, "controller")
	reports := make(chan *proto.LoadReport, 16)
	s, err := sub.Subscribe(proto.LoadSubject("m"), func(m *nats.Msg) {
		var r proto.LoadReport
		if err := proto.DecodeLoadReport(m.Data, &r); err != nil {
			t.Error(err)
			return
		}
		reports <- &r
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Unsubscribe()
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}

	c := newLoadCounter()
	c.add(1, []int32{0, 3, 3, 3})
	c.add(2, []int32{3})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); publishLoad(ctx, nc, proto.LoadSubject("m"), "r1", 20*time.Millisecond, c) }()
	defer func() { cancel(); <-done }()

	got := map[model.ExpertKey]int32{}
	select {
	case r := <-reports:
		if r.Router != "r1" || r.Nanos <= 0 {
			t.Fatalf("report %+v", r)
		}
		for i := range r.Layers {
			got[model.ExpertKey{Layer: int(r.Layers[i]), Expert: int(r.Experts[i])}] += r.Tokens[i]
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no load report")
	}
	want := map[model.ExpertKey]int32{{Layer: 1, Expert: 0}: 1, {Layer: 1, Expert: 3}: 3, {Layer: 2, Expert: 3}: 1}
	if len(got) != len(want) {
		t.Fatalf("report counts %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("report counts %v, want %v", got, want)
		}
	}
	// Counts are reported once: the counter starts over, and idle intervals send nothing.
	if n := len(c.take()); n != 0 {
		t.Fatalf("counter holds %d entries after the report", n)
	}
	select {
	case r := <-reports:
		t.Fatalf("idle interval sent %+v", r)
	case <-time.After(100 * time.Millisecond):
	}
}
