package proto

import (
	"fmt"
	"strings"

	"github.com/vmihailenco/msgpack/v5"
)

// MaxAssignExperts bounds the experts one assignment may list (as MaxExpertStates bounds a
// lease).
const MaxAssignExperts = MaxExpertStates

// ExpertRef names one routed expert of one layer, independently of any card.
type ExpertRef struct {
	_msgpack struct{} `msgpack:",as_array"`
	Layer    int32
	Expert   int32
}

// ExpertRefs is an assignment's expert list, decoded with a bound on its length.
type ExpertRefs []ExpertRef

// DecodeMsgpack implements msgpack.CustomDecoder.
func (s *ExpertRefs) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return err
	}
	if n > MaxAssignExperts {
		return fmt.Errorf("%w: assignment lists %d experts (at most %d)", ErrDecode, n, MaxAssignExperts)
	}
	if n < 0 {
		*s = nil
		return nil
	}
	out := make(ExpertRefs, 0, n)
	for i := 0; i < n; i++ {
		var e ExpertRef
		if err := dec.Decode(&e); err != nil {
			return err
		}
		out = append(out, e)
	}
	*s = out
	return nil
}

// Assignment is the desired expert set of one card (registry key AssignKey), written by the
// placement controller and reconciled by the card's daemon.
type Assignment struct {
	_msgpack struct{} `msgpack:",as_array"`
	V        uint16
	Card     string // card id, a subject token
	Experts  ExpertRefs
	Epoch    int64  // the controller's round that wrote it (monotonic per leader)
	Leader   string // the controller that wrote it
}

// Validate checks a decoded assignment.
func (a *Assignment) Validate() error {
	if a.V != Version {
		return Errorf(CodeVersion, "assignment version %d, this build speaks %d", a.V, Version)
	}
	if err := ValidToken(a.Card); err != nil {
		return fmt.Errorf("%w: assignment: %w", ErrDecode, err)
	}
	for _, e := range a.Experts {
		if e.Layer < 0 || e.Expert < 0 {
			return fmt.Errorf("%w: assignment of card %s: bad expert %d/%d", ErrDecode, a.Card, e.Layer, e.Expert)
		}
	}
	return nil
}

// DecodeAssignment decodes and validates an assignment.
func DecodeAssignment(data []byte, a *Assignment) error {
	if err := unmarshal(data, a); err != nil {
		return err
	}
	return a.Validate()
}

// AssignKeys matches every AssignKey (for watches).
func AssignKeys() string { return assignKeyPrefix + "*" }

// CardIDFromAssignKey returns the card id of an AssignKey, or false for other keys.
func CardIDFromAssignKey(key string) (string, bool) {
	id, ok := strings.CutPrefix(key, assignKeyPrefix)
	return id, ok && id != ""
}

// LoadReport is one router's per-(layer, expert) dispatch counts over one interval,
// published on LoadSubject about every second.
type LoadReport struct {
	_msgpack struct{} `msgpack:",as_array"`
	V        uint16
	Router   string
	Nanos    int64 // the interval's length
	Layers   I32s  // entry i counts Tokens[i] pairs of expert Experts[i] of layer Layers[i]
	Experts  I32s
	Tokens   I32s
}

// Validate checks a decoded report.
func (r *LoadReport) Validate() error {
	if r.V != Version {
		return Errorf(CodeVersion, "load report version %d, this build speaks %d", r.V, Version)
	}
	if len(r.Layers) != len(r.Experts) || len(r.Layers) != len(r.Tokens) {
		return fmt.Errorf("%w: load report has %d layers, %d experts, %d counts", ErrDecode, len(r.Layers), len(r.Experts), len(r.Tokens))
	}
	for i := range r.Layers {
		if r.Layers[i] < 0 || r.Experts[i] < 0 || r.Tokens[i] < 0 {
			return fmt.Errorf("%w: load report entry %d: %d/%d count %d", ErrDecode, i, r.Layers[i], r.Experts[i], r.Tokens[i])
		}
	}
	return nil
}

// DecodeLoadReport decodes and validates a load report.
func DecodeLoadReport(data []byte, r *LoadReport) error {
	if err := unmarshal(data, r); err != nil {
		return err
	}
	return r.Validate()
}
