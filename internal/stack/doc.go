// Package stack starts a whole mesh in one process: an embedded NATS server (or a given
// URL), expert daemons on cpu cards with a chosen expert placement, and a router-side Mesh.
// `moemesh up`, `moemesh bench` and the tests build on it.
//
// Import rule: stack composes services, so it may import every package of the module; only
// cmd/ and tests import it.
package stack
