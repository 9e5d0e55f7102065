package router

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/proto"
)

// loadCounter counts the (token, expert) pairs a router dispatched per (layer, expert)
// since the last report.
type loadCounter struct {
	mu sync.Mutex
	n  map[model.ExpertKey]int64
}

func newLoadCounter() *loadCounter { return &loadCounter{n: map[model.ExpertKey]int64{}} }

// add counts a step's routed experts of one layer.
func (c *loadCounter) add(layer int, experts []int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range experts {
		c.n[model.ExpertKey{Layer: layer, Expert: int(e)}]++
	}
}

// take returns the counts since the last take and starts over.
func (c *loadCounter) take() map[model.ExpertKey]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.n
	c.n = make(map[model.ExpertKey]int64, len(n))
	return n
}

// publishLoad sends the counts to proto.LoadSubject every interval until ctx is done.
// Intervals without traffic send nothing.
func publishLoad(ctx context.Context, nc *nats.Conn, subject, router string, every time.Duration, c *loadCounter) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			n := c.take()
			span := now.Sub(last)
			last = now
			if len(n) == 0 {
				continue
			}
			r := proto.LoadReport{V: proto.Version, Router: router, Nanos: int64(span)}
			for k, v := range n {
				r.Layers = append(r.Layers, int32(k.Layer))
				r.Experts = append(r.Experts, int32(k.Expert))
				r.Tokens = append(r.Tokens, int32(min(v, 1<<31-1)))
			}
			data, err := proto.Marshal(&r)
			if err != nil {
				continue
			}
			// Fire and forget: a report lost while NATS is away is replaced by the next.
			_ = nc.Publish(subject, data)
		}
	}
}
