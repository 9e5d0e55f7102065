// Package placement decides which cards hold which experts. Plan is a pure function from
// the cards (memory, current experts), the model's experts and their measured load to a
// desired assignment: every expert on at least MinReplicas cards, hot experts on more
// cards in proportion to their load, card memory respected, load balanced across cards,
// and existing placements kept unless moving gains enough (hysteresis).
//
// Controller runs Plan inside a router process (moemesh router --controller): it is
// elected through the registry's leader lease, follows card leases and the routers' load
// reports (proto.LoadSubject), recomputes every few seconds and writes the cards'
// assignments (proto.AssignKey), which the daemons reconcile.
//
// Import rule: placement imports proto, mesh and model; never expertd or gateway.
package placement
