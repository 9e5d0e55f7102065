// Package decoder gives every supported architecture one face: Load picks the forward
// pass by config.json's model_type (model/gqa, model/deepseek or model/deepseek4) and returns a Decoder
// that steps many sequences at once over the Experts seam. The router's scheduler and the
// offline generate command drive models only through it.
//
// Import rule: decoder imports model, its architecture packages, model/nn,
// model/safetensors and ascend; never a service, mesh or internal package.
package decoder
