// Command deploycheck validates moemesh's deployment files offline, in `make lint`:
// compose.yaml, deploy/k8s and deploy/prometheus/prometheus.yml. Nothing here runs a
// Docker engine or a cluster; what it catches is what would otherwise be found only on one:
//
//   - compose.yaml loads with compose-go (the library of `docker compose`) with its JSON
//     schema, every profile on, and has the topology the docs promise: three NATS nodes
//     routed to one another, each storing on a named volume and taking the authorization
//     as a secret; a gateway, two routers of which one runs the placement controller,
//     three CPU daemons, every service connected to all NATS nodes with its role's
//     credentials and --registry-replicas equal to the number of nodes; the jaeger,
//     prometheus and ascend profiles, the last with --device cann and the Ascend device
//     files and driver mounts.
//   - every file under deploy/k8s decodes strictly (unknown fields are errors) into the
//     Kubernetes API types (k8s.io/api), every file is used by its kustomization, and the
//     ascend overlay, applied as a strategic merge patch (merge keys from the API types'
//     struct tags, as kubectl merges), gives expertd --device cann and a
//     huawei.com/Ascend910 limit; every Deployment and StatefulSet has a readiness probe on
//     a port it declares, and the Secret is only a template.
//   - every flag written in those files exists for its subcommand in `moemesh <cmd>
//     --help` of a binary built from the checkout (-bin to use another), and takes a
//     value exactly when the file gives it one, so the files cannot drift from the CLI.
//
// A module of its own (tools/deploycheck/go.mod): compose-go and the Kubernetes types
// never become dependencies of moemesh.
package main
