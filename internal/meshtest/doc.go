// Package meshtest is the test harness of the whole mesh: tiny checkpoints of each family
// written once per test binary, in-process meshes (internal/stack) and meshes of real
// `moemesh` processes, and polling helpers with deadlines. The end-to-end tests of the
// mesh live here too.
//
// Import rule: tests only; may import every package of the module.
package meshtest
