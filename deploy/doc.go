// Package deploy holds what operators install next to moemesh rather than build from it:
// grafana/moemesh.json, the Grafana dashboard over the services' Prometheus metrics. It has
// no code; its test keeps the dashboard honest: the JSON parses, and every PromQL
// expression names only metrics the services export, so renaming a metric in code without
// the dashboard fails the build.
package deploy
