// Package mesh is the NATS plumbing shared by the services: connect options, embedded
// server, registry KV (card leases, the controller's assignments and its leader lease),
// request-with-retry, micro helpers. Imports proto,
// nats.go, nats-server, backoff; never a service.
//
// Rules the package enforces so that services need not remember them:
//
//   - Every network wait has a deadline. Request refuses a context without one
//     (ErrNoDeadline); registry calls without a deadline get a default one.
//   - Errors say whether another attempt may help: Retryable classifies what Request returns
//     (no responders and timeouts are retryable, a closed connection is not, service error
//     codes follow proto.Code.Retryable), and proto.CodeOf gives a wire code for every
//     failure, so a gateway can map it to an HTTP status.
//   - Tensor traffic is never replayed after a reconnect: Connect disables the reconnect
//     buffer, so requests fail fast while NATS is away and are retried by the caller.
//   - Every goroutine started here is owned by a context or a Shutdown and stops with it.
//   - Authorization (auth.go): per-role NATS permissions (gateway, router, expertd, admin)
//     that allow exactly each role's subjects, registry calls and private inbox prefix,
//     rendered as a nats-server config or applied to an embedded server.
package mesh
