// Package gateway serves the OpenAI-compatible HTTP API of a moemesh model
// (DESIGN.md §5) and talks to routers over NATS (§2): it authenticates the tenant,
// checks the request against the tenant's limits, renders the chat template, tokenizes,
// sends a proto.GenerateRequest to the routers' queue group and relays the proto.TokenEvents
// it receives on its own inbox as a JSON body or an SSE stream. A client that goes away
// cancels its generation at the router that took it.
//
// Readiness (GET /readyz): the NATS connection is up and at least one router answers a
// nats micro PING to the service named Config.RouterService ("moemesh-router"), so
// routers must register that micro service. Liveness (GET /healthz) is the process alone.
//
// Import rule: gateway imports proto, mesh, model (config, chat template, tokenizer) and
// its own subpackages; never router or expertd. Subpackage tenant imports no module
// package.
package gateway
