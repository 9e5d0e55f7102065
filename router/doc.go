// Package router is the generation service. This part holds the mesh side of the Experts
// seam (Mesh): for one MoE layer step it maps every (token, expert) pair to a card holding
// a ready replica (least outstanding work, power of two choices), sends one ExpertBatch per
// card with rows deduplicated, gathers the replies under a per-layer deadline, re-sends
// what a lost card held to another replica, and combines the results. It counts the pairs
// it dispatches per (layer, expert) and publishes them every second on proto.LoadSubject
// for the placement controller (package placement).
//
// Import rule: router imports proto, mesh, model, ascend and tracing; never expertd or
// gateway.
package router
