package tenant

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/goccy/go-yaml"
)

// ErrConfig is wrapped by every error about a tenants file's content.
var ErrConfig = errors.New("tenant: bad config")

// Priority classes. Interactive requests are admitted before batch ones at a router.
const (
	Interactive = "interactive"
	Batch       = "batch"
)

// DefaultID names the one tenant of an open gateway (no tenants file).
const DefaultID = "default"

// Limits bound one tenant. Zero means unlimited.
type Limits struct {
	RequestsPerMinute int `yaml:"requests_per_minute"`
	TokensPerMinute   int `yaml:"tokens_per_minute"` // prompt plus completion tokens
	MaxConcurrent     int `yaml:"max_concurrent"`
	MaxTokens         int `yaml:"max_tokens"`        // completion tokens of one request
	MaxPromptTokens   int `yaml:"max_prompt_tokens"` // prompt tokens of one request
}

// Tenant is one tenant as configured.
type Tenant struct {
	ID       string   `yaml:"id"`
	APIKeys  []string `yaml:"api_keys"` // "sha256:<64 hex digits>" of the bearer token
	Models   []string `yaml:"models"`   // allowed model names; empty or "*": every model
	Weight   float64  `yaml:"weight"`   // scheduling share; 0 means 1
	Priority string   `yaml:"priority"` // interactive (default) or batch
	Limits   Limits   `yaml:"limits"`
}

// Allows reports whether the tenant may use model.
func (t *Tenant) Allows(model string) bool {
	return len(t.Models) == 0 || slices.Contains(t.Models, "*") || slices.Contains(t.Models, model)
}

// file is the YAML document.
type file struct {
	Tenants []Tenant `yaml:"tenants"`
	// AdminKeys ("sha256:<hex>" like api_keys) open the operator endpoints (/v1/mesh).
	// A key may be an admin key and a tenant's key at once.
	AdminKeys []string `yaml:"admin_keys"`
}

// Set is an immutable collection of tenants with a key index.
type Set struct {
	open    bool
	tenants map[string]*Tenant
	byKey   map[[sha256.Size]byte]*Tenant
	admins  map[[sha256.Size]byte]bool
	ids     []string
}

// Open returns the Set of a gateway without a tenants file: one tenant, DefaultID,
// allowed every model, no limits, and Lookup accepts any key or none.
func Open() *Set {
	t := &Tenant{ID: DefaultID, Weight: 1, Priority: Interactive}
	return &Set{open: true, tenants: map[string]*Tenant{DefaultID: t}, ids: []string{DefaultID}}
}

// IsOpen reports whether the Set authenticates nobody (see Open).
func (s *Set) IsOpen() bool { return s.open }

// Lookup returns the tenant owning the bearer token key, or false.
func (s *Set) Lookup(key string) (*Tenant, bool) {
	if s.open {
		return s.tenants[DefaultID], true
	}
	if key == "" {
		return nil, false
	}
	// Keys are compared by their hash, so a map lookup reveals nothing about a stored key.
	t, ok := s.byKey[sha256.Sum256([]byte(key))]
	return t, ok
}

// IsAdmin reports whether the bearer token key is one of the file's admin_keys. An open
// Set (no tenants file) admits everyone, as it does for tenants.
func (s *Set) IsAdmin(key string) bool {
	if s.open {
		return true
	}
	return key != "" && s.admins[sha256.Sum256([]byte(key))]
}

// Get returns the tenant with id.
func (s *Set) Get(id string) (*Tenant, bool) {
	t, ok := s.tenants[id]
	return t, ok
}

// IDs returns the tenant ids, sorted.
func (s *Set) IDs() []string { return slices.Clone(s.ids) }

// HashKey returns the form api_keys stores for key: "sha256:<hex>".
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Parse reads a tenants YAML document. Errors name the file (origin), the tenant and the
// field that is wrong.
func Parse(origin string, data []byte) (*Set, error) {
	var f file
	if err := decodeYAML(data, &f); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrConfig, origin, err)
	}
	if len(f.Tenants) == 0 {
		return nil, fmt.Errorf("%w: %s: no tenants (without tenants, run the gateway without a tenants file)", ErrConfig, origin)
	}
	s := &Set{tenants: map[string]*Tenant{}, byKey: map[[sha256.Size]byte]*Tenant{}, admins: map[[sha256.Size]byte]bool{}}
	for i, k := range f.AdminKeys {
		sum, err := parseHash(k)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: admin_keys[%d]: %w", ErrConfig, origin, i, err)
		}
		s.admins[sum] = true
	}
	for i := range f.Tenants {
		t := &f.Tenants[i]
		where := fmt.Sprintf("%s: tenant %d (%q)", origin, i, t.ID)
		if err := t.check(); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrConfig, where, err)
		}
		if _, dup := s.tenants[t.ID]; dup {
			return nil, fmt.Errorf("%w: %s: duplicate id", ErrConfig, where)
		}
		s.tenants[t.ID] = t
		s.ids = append(s.ids, t.ID)
		for j, k := range t.APIKeys {
			sum, err := parseHash(k)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: api_keys[%d]: %w", ErrConfig, where, j, err)
			}
			if other, dup := s.byKey[sum]; dup {
				return nil, fmt.Errorf("%w: %s: api_keys[%d] is also a key of tenant %q", ErrConfig, where, j, other.ID)
			}
			s.byKey[sum] = t
		}
	}
	slices.Sort(s.ids)
	return s, nil
}

// decodeYAML decodes the document into f. goccy/go-yaml (v1.19.2) panics on some
// documents, e.g. a tag on a list's empty value ("admin_keys: !x", found by FuzzParse):
// the panic is the operator's typo, so it becomes an error like any other, and a hot
// reload keeps the previous tenants instead of taking the gateway down.
func decodeYAML(data []byte, f *file) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the YAML parser failed on this document (%v); check tags (!...) and indentation", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data), yaml.DisallowUnknownField())
	if err := dec.Decode(f); err != nil {
		return errors.New(yaml.FormatError(err, false, true))
	}
	return nil
}

// maxID matches proto.MaxIDLen: the tenant id travels in every GenerateRequest.
const maxID = 128

func (t *Tenant) check() error {
	switch {
	case t.ID == "" || len(t.ID) > maxID:
		return fmt.Errorf("id must have 1 to %d bytes", maxID)
	case strings.ContainsAny(t.ID, " \t\r\n"):
		return errors.New("id must not contain white space")
	case len(t.APIKeys) == 0:
		return errors.New("api_keys is empty: the tenant could never authenticate")
	case math.IsNaN(t.Weight) || t.Weight < 0 || t.Weight > 1e6:
		return fmt.Errorf("weight %g, want 0 to 1e6 (0 means 1)", t.Weight)
	}
	if t.Weight == 0 {
		t.Weight = 1
	}
	switch t.Priority {
	case "":
		t.Priority = Interactive
	case Interactive, Batch:
	default:
		return fmt.Errorf("priority %q, want %s or %s", t.Priority, Interactive, Batch)
	}
	l := t.Limits
	for _, f := range []struct {
		name string
		v    int
	}{
		{"requests_per_minute", l.RequestsPerMinute}, {"tokens_per_minute", l.TokensPerMinute},
		{"max_concurrent", l.MaxConcurrent}, {"max_tokens", l.MaxTokens}, {"max_prompt_tokens", l.MaxPromptTokens},
	} {
		if f.v < 0 {
			return fmt.Errorf("limits.%s is %d, want >= 0 (0: unlimited)", f.name, f.v)
		}
	}
	return nil
}

func parseHash(s string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok {
		return sum, errors.New(`want "sha256:<hex>" (store the hash of a key, never the key)`)
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != sha256.Size {
		return sum, fmt.Errorf("want %d hex digits after sha256:", 2*sha256.Size)
	}
	copy(sum[:], b)
	return sum, nil
}
