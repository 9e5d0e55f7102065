package proto

import (
	"fmt"
	"strings"
)

// Prefix is the root of every moemesh subject; v1 is the protocol's major version.
const Prefix = "moe.v1"

// Queue groups.
const (
	QueueRouters = "routers"
)

// Token makes s usable as one subject token or KV key token: characters outside
// [A-Za-z0-9_-] become '_'. Model names such as "Qwen3-30B-A3B" or "org/model.v2" stay
// readable. An empty name becomes "_".
func Token(s string) string {
	if s == "" {
		return "_"
	}
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			b[i] = '_'
		}
	}
	return string(b)
}

// ValidToken reports whether s can be used as-is as a subject token (card and daemon ids).
func ValidToken(s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty id", ErrBadID)
	}
	if Token(s) != s {
		return fmt.Errorf("%w: %q may only hold letters, digits, '_' and '-'", ErrBadID, s)
	}
	return nil
}

// GenSubject is where routers (queue group QueueRouters) take generation requests.
func GenSubject(model string) string { return Prefix + "." + Token(model) + ".gen" }

// CancelSubject reaches the router that owns a generation.
func CancelSubject(model, routerID string) string {
	return Prefix + "." + Token(model) + ".cancel." + Token(routerID)
}

// CardSubject is where a card's daemon takes ExpertBatch requests.
func CardSubject(model, cardID string) string {
	return Prefix + "." + Token(model) + ".card." + Token(cardID)
}

// CardWildcard matches every card subject of a model.
func CardWildcard(model string) string { return Prefix + "." + Token(model) + ".card.*" }

// LoadSubject carries routers' per-(layer, expert) dispatch counts to the controller.
func LoadSubject(model string) string { return Prefix + "." + Token(model) + ".load" }

// Bucket is the JetStream KV bucket holding a model's registry.
func Bucket(model string) string { return "moemesh_" + Token(model) }

// Registry keys inside Bucket.
const (
	cardKeyPrefix   = "card."
	assignKeyPrefix = "assign."
	LeaderKey       = "leader"
)

// CardKey holds a card's CardStatus (its lease).
func CardKey(cardID string) string { return cardKeyPrefix + Token(cardID) }

// CardKeys matches every CardKey (for watches).
func CardKeys() string { return cardKeyPrefix + "*" }

// AssignKey holds the desired expert set of a card, written by the controller.
func AssignKey(cardID string) string { return assignKeyPrefix + Token(cardID) }

// CardIDFromKey returns the card id of a CardKey, or false for other keys.
func CardIDFromKey(key string) (string, bool) {
	id, ok := strings.CutPrefix(key, cardKeyPrefix)
	return id, ok && id != ""
}

// Nats micro service names.
const (
	ServiceExpertd = "moemesh-expertd"
	ServiceRouter  = "moemesh-router"
)

// Header names. Trace context uses the lowercase W3C names (traceparent, tracestate).
const (
	HeaderTenant   = "Moe-Tenant"
	HeaderRequest  = "Moe-Request"
	HeaderDeadline = "Moe-Deadline" // unix nanoseconds
	// HeaderError and HeaderErrorCode are the nats micro names, so `nats micro` tools and
	// our callers read the same thing.
	HeaderError     = "Nats-Service-Error"
	HeaderErrorCode = "Nats-Service-Error-Code"
)
