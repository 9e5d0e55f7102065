// Command moemesh is the one binary of the mesh. Each subcommand reads flags and the
// environment (the only place in the module that does) into a Config, builds the service
// with New and runs it until the context ends: up, nats, expertd, mkmodel, bench.
//
// Import rule: cmd may import every package of the module; it holds no logic of its own
// beyond turning flags into configs.
package main
