// Package nn holds the numeric building blocks of the dense path shared by every
// architecture: RMS norms, rotary embeddings (rotate_half and DeepSeek's interleaved
// pairs, linear and YaRN scaling), causal attention over a per-sequence KV cache (GQA,
// sliding window, MLA head shapes, attention sinks), linear layers on an ascend.Card,
// embedding lookup and sampling.
//
// Activations are f32 throughout and every function is deterministic: a result depends
// only on its inputs, never on GOMAXPROCS or how work is split between goroutines, because
// each output element is summed in one fixed order by whichever goroutine computes it.
//
// Import rule: nn imports ascend and the standard library only. It does not import model,
// so that the per-architecture packages (model/<arch>) can import both model and nn
// without a cycle.
package nn

import "errors"

// Errors returned by this package, wrapped with detail.
var (
	// ErrShape reports slices or dimensions that do not fit together.
	ErrShape = errors.New("nn: shape mismatch")
	// ErrInvalid reports an invalid argument or configuration value.
	ErrInvalid = errors.New("nn: invalid argument")
	// ErrCacheFull reports an append past a KV cache's capacity.
	ErrCacheFull = errors.New("nn: kv cache full")
)
