// Package model describes Hugging Face Mixture-of-Experts checkpoints and computes what
// does not depend on where experts live: config.json for each family, expert tensor
// naming, gating (every family's routing rule), the expert FFN over an ascend.Card, and
// the Experts seam that a forward pass runs routed experts through.
//
// Import rule: model imports ascend, model/safetensors and the standard library; it never
// imports a service (router, expertd, gateway) or an architecture package below it.
package model
