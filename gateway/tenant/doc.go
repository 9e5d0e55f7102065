// Package tenant holds the gateway's tenants: who may call (API keys stored as SHA-256
// hashes), which models they may use, their limits, scheduling weight and priority class.
// A Set is parsed from a YAML file and is immutable; a Store hands out the current Set
// and replaces it when the file changes, keeping the last good Set when a new version
// does not parse (a typo in production must not lock every tenant out).
//
// Import rule: tenant imports the standard library and goccy/go-yaml only; it knows
// nothing of NATS or HTTP.
package tenant
