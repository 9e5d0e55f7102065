package proto

import (
	"fmt"
	"unicode/utf8"
)

// Priority classes of generation requests. Interactive requests are admitted before batch
// requests; within a class, tenants share by weight.
const (
	PriorityInteractive uint8 = 0
	PriorityBatch       uint8 = 1
)

// Bounds a router enforces on every GenerateRequest, whatever the model allows.
const (
	MaxStopStrings = 16
	MaxStopLen     = 256 // bytes per stop string
	MaxStopIDs     = 64
	MaxIDLen       = 128 // request id, tenant and inbox lengths
)

// Sampling is a request's decoding rule (nn.SamplerConfig on the wire).
type Sampling struct {
	_msgpack    struct{} `msgpack:",as_array"`
	Temperature float32  // <= 0: greedy
	TopK        int32    // 0: off
	TopP        float32  // 0 or >= 1: off
	Seed        uint64
	HasSeed     bool // false: the router picks a seed
}

// GenerateRequest asks a router (subject GenSubject, queue group QueueRouters) to generate.
// The router answers GenerateAccepted (or an error) at once, then publishes TokenEvents to
// Inbox until one carries a Finish reason.
type GenerateRequest struct {
	_msgpack  struct{} `msgpack:",as_array"`
	V         uint16
	ID        string // unique per request; names it in events, cancels and logs
	Tenant    string
	Priority  uint8
	Weight    float32 // the tenant's scheduling weight (> 0; 0 means 1)
	Prompt    I32s    // token ids
	MaxTokens int32   // completion tokens at most (> 0)
	Sampling  Sampling
	StopIDs   I32s     // token ids that end the generation, besides the model's eos
	Stop      []string // strings that end the generation; the text stops before them
	Inbox     string   // subject the TokenEvents go to
	// Deadline is unix nanoseconds after which the router gives up (finish "error", code 504);
	// 0: the router's default.
	Deadline int64
	// IgnoreEOS keeps generating past the model's eos tokens (StopIDs still stop): for
	// benchmarks and tests that need exactly MaxTokens tokens, as vLLM's ignore_eos.
	IgnoreEOS bool
}

// Validate checks what a router can check without the model (vocab and context bounds are
// the router's).
func (r *GenerateRequest) Validate() error {
	if r.V != Version {
		return Errorf(CodeVersion, "generate request version %d, this build speaks %d", r.V, Version)
	}
	switch {
	case r.ID == "" || len(r.ID) > MaxIDLen:
		return Errorf(CodeBadRequest, "request id must have 1 to %d bytes", MaxIDLen)
	case len(r.Tenant) > MaxIDLen:
		return Errorf(CodeBadRequest, "tenant id longer than %d bytes", MaxIDLen)
	case r.Inbox == "" || len(r.Inbox) > 4*MaxIDLen:
		return Errorf(CodeBadRequest, "request %s has no inbox", r.ID)
	case len(r.Prompt) == 0:
		return Errorf(CodeBadRequest, "request %s has an empty prompt", r.ID)
	case r.MaxTokens <= 0:
		return Errorf(CodeBadRequest, "request %s: max tokens %d, want > 0", r.ID, r.MaxTokens)
	case r.Priority > PriorityBatch:
		return Errorf(CodeBadRequest, "request %s: priority %d unknown", r.ID, r.Priority)
	case !(r.Weight >= 0) || r.Weight > 1e6:
		return Errorf(CodeBadRequest, "request %s: weight %g", r.ID, r.Weight)
	case !(r.Sampling.Temperature >= 0) || r.Sampling.Temperature > 100:
		return Errorf(CodeBadRequest, "request %s: temperature %g, want 0 to 100", r.ID, r.Sampling.Temperature)
	case r.Sampling.TopK < 0:
		return Errorf(CodeBadRequest, "request %s: top_k %d, want >= 0", r.ID, r.Sampling.TopK)
	case !(r.Sampling.TopP >= 0) || r.Sampling.TopP > 1:
		return Errorf(CodeBadRequest, "request %s: top_p %g, want 0 to 1", r.ID, r.Sampling.TopP)
	case len(r.Stop) > MaxStopStrings:
		return Errorf(CodeBadRequest, "request %s: %d stop strings, at most %d", r.ID, len(r.Stop), MaxStopStrings)
	case len(r.StopIDs) > MaxStopIDs:
		return Errorf(CodeBadRequest, "request %s: %d stop token ids, at most %d", r.ID, len(r.StopIDs), MaxStopIDs)
	}
	for i, s := range r.Stop {
		if s == "" || len(s) > MaxStopLen || !utf8.ValidString(s) {
			return Errorf(CodeBadRequest, "request %s: stop string %d must be valid UTF-8 of 1 to %d bytes", r.ID, i, MaxStopLen)
		}
	}
	for _, id := range r.Prompt {
		if id < 0 {
			return Errorf(CodeBadRequest, "request %s: negative token id %d in prompt", r.ID, id)
		}
	}
	return nil
}

// GenerateAccepted is a router's answer to a GenerateRequest it took.
type GenerateAccepted struct {
	_msgpack struct{} `msgpack:",as_array"`
	V        uint16
	ID       string
	Router   string // the router's id: cancels go to CancelSubject(model, Router)
	Queued   int32  // requests ahead of this one in its tenant's queue
}

// Finish reasons, as OpenAI names them where it has a name.
const (
	FinishStop   = "stop"   // a stop token id or stop string
	FinishLength = "length" // max tokens or the model's context
	FinishCancel = "cancelled"
	FinishError  = "error" // ErrCode and ErrMsg say why
)

// Usage counts a request's tokens.
type Usage struct {
	_msgpack   struct{} `msgpack:",as_array"`
	Prompt     int32
	Completion int32 // sampled tokens, including a final stop token
}

// TokenEvent carries newly generated tokens of one request. Events of a request are
// numbered from 0 so a receiver can tell a lost one; the last has a Finish reason and Usage.
type TokenEvent struct {
	_msgpack struct{} `msgpack:",as_array"`
	V        uint16
	ID       string
	Seq      uint32
	Tokens   I32s   // sampled ids since the previous event (a stop token included)
	Text     string // text since the previous event: whole UTF-8 characters, stop strings cut
	Finish   string // "" until the last event
	Usage    Usage
	ErrCode  Code // with Finish == FinishError
	ErrMsg   string
	// TTFTNanos is the time from the router's receipt to the first token (first event only).
	TTFTNanos int64
}

// Err returns the event's error, or nil.
func (e *TokenEvent) Err() error {
	if e.Finish != FinishError {
		return nil
	}
	return &Error{Code: e.ErrCode, Msg: e.ErrMsg}
}

// DecodeGenerateRequest decodes and validates a request.
func DecodeGenerateRequest(data []byte, r *GenerateRequest) error {
	if err := unmarshal(data, r); err != nil {
		return Errorf(CodeBadRequest, "%v", err)
	}
	return r.Validate()
}

// DecodeGenerateAccepted decodes an acceptance.
func DecodeGenerateAccepted(data []byte, a *GenerateAccepted) error {
	if err := unmarshal(data, a); err != nil {
		return err
	}
	if a.V != Version {
		return Errorf(CodeVersion, "accepted version %d, this build speaks %d", a.V, Version)
	}
	if ValidToken(a.Router) != nil {
		return fmt.Errorf("%w: accepted names router %q", ErrDecode, a.Router)
	}
	return nil
}

// DecodeTokenEvent decodes a token event.
func DecodeTokenEvent(data []byte, e *TokenEvent) error {
	if err := unmarshal(data, e); err != nil {
		return err
	}
	if e.V != Version {
		return Errorf(CodeVersion, "token event version %d, this build speaks %d", e.V, Version)
	}
	switch e.Finish {
	case "", FinishStop, FinishLength, FinishCancel, FinishError:
	default:
		return fmt.Errorf("%w: token event finish %q", ErrDecode, e.Finish)
	}
	return nil
}
