package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/router/placement"
)

// startController runs the placement controller of model name beside a router until ctx
// is done or the returned stop is called (which waits for it; calling it again is a no-op).
func startController(ctx context.Context, nc *nats.Conn, dir, name, id string, minReplicas int, log *slog.Logger) (stop func(), err error) {
	if minReplicas < 1 {
		return nil, fmt.Errorf("--min-replicas %d: want at least 1", minReplicas)
	}
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	size, err := placement.ExpertBytes(dir, cfg)
	if err != nil {
		return nil, err
	}
	ctl, err := placement.NewController(placement.ControllerConfig{Model: name, ID: id, Layers: cfg.MoELayers(),
		Experts: cfg.Experts, ExpertBytes: size, MinReplicas: minReplicas, Logger: log}, nc)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := ctl.Run(cctx); err != nil {
			log.Error("placement controller stopped", "err", err)
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { cancel(); <-done }) }, nil
}
