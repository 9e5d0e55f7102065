// Package expertd is the expert daemon: it opens one or more cards on an ascend backend,
// loads the experts assigned to each card straight from the model's safetensors (byte
// ranges only), serves each card on its own subject (proto.CardSubject) as a nats micro
// endpoint, coalesces concurrent batches for a card into one grouped matmul, and keeps a
// lease per card in the registry. A card's experts come from the configuration (static
// mode) until the placement controller writes an assignment for it (proto.AssignKey); from
// then on the daemon reconciles live (reconcile.go): it loads new experts (listed loading,
// then ready) and drains removed ones (listed draining for a heartbeat, freed after the
// batches queued before the removal), within the card's memory budget. On shutdown it drains: marks its leases draining, stops
// taking work, finishes what it holds, then removes its leases.
//
// Import rule: expertd imports proto, mesh, model, ascend and tracing; never router or
// gateway.
package expertd
