// Package deploy holds what operators install next to moemesh rather than build from it:
// grafana/moemesh.json, the Grafana dashboard over the services' Prometheus metrics;
// docker/ (the FROM scratch image `make images` builds), k8s/ (manifests and the ascend
// overlay), compose/ (the credentials script for compose.yaml) and prometheus/ (scrape
// config). tools/deploycheck validates compose.yaml and k8s/ in `make lint`. It has no
// code; its test keeps the dashboard honest: the JSON parses, and every PromQL
// expression names only metrics the services export, so renaming a metric in code without
// the dashboard fails the build.
package deploy
