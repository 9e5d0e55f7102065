package mesh

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/moemesh/moemesh/proto"
)

// Role is a kind of mesh participant; each gets its own NATS user and permissions.
type Role string

// Roles.
const (
	RoleGateway Role = "gateway"
	RoleRouter  Role = "router" // includes the placement controller that runs in a router
	RoleExpertd Role = "expertd"
	RoleAdmin   Role = "admin" // operators and tools: every subject
)

// Roles lists every role in the order configs are rendered.
var Roles = []Role{RoleGateway, RoleRouter, RoleExpertd, RoleAdmin}

// ErrAuth: an authorization config could not be built.
var ErrAuth = errors.New("mesh: nats authorization")

// Secret is a password. It never prints itself (fmt, %#v, slog), so a config or a user
// logged by mistake does not leak it; only WriteAuthConfig and ApplyTo read it.
type Secret string

func (Secret) String() string               { return "[redacted]" }
func (Secret) GoString() string             { return `"[redacted]"` }
func (Secret) LogValue() slog.Value         { return slog.StringValue("[redacted]") }
func (Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// InboxPrefix is the role's private inbox prefix. Services of the role must connect with
// InboxOption: the server only lets a role subscribe under its own prefix, so no role can
// read the replies another one is waiting for.
func InboxPrefix(r Role) string { return "_INBOX_" + string(r) }

// InboxOption sets the role's inbox prefix on a connection.
func InboxOption(r Role) nats.Option { return nats.CustomInboxPrefix(InboxPrefix(r)) }

// RolePermissions are the subjects one role may publish and subscribe to. AllowResponses
// lets it answer (once, within the server's default 2 min) requests it received, whatever
// the requester's inbox; roles that serve requests need it because requesters' inboxes are
// private to them.
type RolePermissions struct {
	Role           Role
	Publish        []string
	Subscribe      []string
	AllowResponses bool
}

// AuthUser is one NATS user: a role's name, its password and its permissions.
type AuthUser struct {
	Name     string
	Password Secret
	Perms    RolePermissions
}

// AuthConfig is the users of a mesh. Render it with WriteAuthConfig for a nats-server
// config file, or ApplyTo an embedded server's options.
type AuthConfig struct {
	Users []AuthUser
}

// micro service discovery subjects a service of that name subscribes to (PING, INFO and
// STATS, for all services, by name, and by name and id).
func microSubjects(service string) []string {
	return []string{"$SRV.*", "$SRV.*." + service, "$SRV.*." + service + ".*"}
}

// kvReadSubjects are the JetStream API calls of a registry's reader on bucket (a "*" token
// for any), each found needed by dropping it and running the roles' jobs on a real server
// (auth_test.go): stream info (OpenRegistry binds to the bucket by looking it up), direct
// gets by key (KV buckets allow direct get), the ordered push consumers of watches, created
// per filter and deleted when the watch stops, and $JS.FC, the consumers' flow-control
// replies: without it a watch whose backlog passes the server's window (1 to 2 MiB)
// stalls. Account info is asked before a stream create; a reader without the right to
// create still gets it, so that the create it tries on a missing bucket is refused on
// the create itself, which it recognises (it then waits for an expertd to create the
// bucket). Message get and consumer info are not used. Puts are not here: they publish to
// the key subjects, which differ per role.
func kvReadSubjects(bucket string) []string {
	stream := kvStream(bucket)
	api := "$JS.API."
	return []string{
		api + "INFO",
		api + "STREAM.INFO." + stream,
		api + "DIRECT.GET." + stream + ".>",
		api + "CONSUMER.CREATE." + stream + ".>",
		api + "CONSUMER.DELETE." + stream + ".*",
		"$JS.FC." + stream + ".>",
	}
}

// kvWriteSubjects are what a registry's writer (expertd: OpenRegistry with a lease TTL)
// needs beyond kvReadSubjects: creating the bucket and updating its configuration
// (CreateOrUpdateKeyValue, e.g. to another replica count).
func kvWriteSubjects(bucket string) []string {
	stream := kvStream(bucket)
	return []string{"$JS.API.STREAM.CREATE." + stream, "$JS.API.STREAM.UPDATE." + stream}
}

func kvStream(bucket string) string {
	if bucket == "*" {
		return "*"
	}
	return "KV_" + bucket
}

// PermissionsFor returns the permissions of role for the given models; no model (or "*")
// means every model, with wildcards in place of the model's subject token and bucket. The
// wildcard form is coarser: its KV calls match every stream's, and its key puts every
// bucket's, not only moemesh registries.
func PermissionsFor(role Role, models ...string) (RolePermissions, error) {
	toks, buckets := []string{"*"}, []string{"*"}
	if len(models) > 0 && !slices.Contains(models, "*") {
		toks, buckets = nil, nil
		for _, m := range models {
			if m == "" {
				return RolePermissions{}, fmt.Errorf("%w: empty model name", ErrAuth)
			}
			toks = append(toks, proto.Token(m))
			buckets = append(buckets, proto.Bucket(m))
		}
	}
	p := RolePermissions{Role: role}
	add := func(dst *[]string, subs ...string) { *dst = append(*dst, subs...) }
	for i, tok := range toks {
		base := proto.Prefix + "." + tok + "."
		kv := "$KV." + buckets[i] + "."
		switch role {
		case RoleGateway:
			add(&p.Publish, base+"gen", base+"cancel.*")
			add(&p.Publish, kvReadSubjects(buckets[i])...) // the mesh view reads leases
		case RoleRouter:
			add(&p.Subscribe, base+"gen", base+"cancel.*", base+"load")
			// Token events go to the gateway's inbox named in the request body, not to
			// the reply subject, so allow_responses does not cover them.
			add(&p.Publish, base+"card.*", base+"load", InboxPrefix(RoleGateway)+".>")
			// The controller writes to the bucket an expertd created.
			add(&p.Publish, kv+"assign.>", kv+proto.LeaderKey)
			add(&p.Publish, kvReadSubjects(buckets[i])...)
		case RoleExpertd:
			add(&p.Subscribe, base+"card.*")
			add(&p.Publish, kv+"card.>")
			add(&p.Publish, kvReadSubjects(buckets[i])...)
			add(&p.Publish, kvWriteSubjects(buckets[i])...)
		case RoleAdmin:
		default:
			return RolePermissions{}, fmt.Errorf("%w: unknown role %q", ErrAuth, role)
		}
	}
	switch role {
	case RoleGateway:
		add(&p.Publish, "$SRV.PING."+proto.ServiceRouter)
	case RoleRouter:
		add(&p.Subscribe, microSubjects(proto.ServiceRouter)...)
		p.AllowResponses = true
	case RoleExpertd:
		add(&p.Subscribe, microSubjects(proto.ServiceExpertd)...)
		p.AllowResponses = true
	case RoleAdmin:
		p.Publish, p.Subscribe = []string{">"}, []string{">"}
		return p, nil
	}
	add(&p.Subscribe, InboxPrefix(role)+".>")
	p.Publish = dedup(p.Publish)
	p.Subscribe = dedup(p.Subscribe)
	return p, nil
}

func dedup(s []string) []string {
	out := make([]string, 0, len(s))
	for _, v := range s {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// NewAuthConfig builds one user per role in passwords (user name = role name) with the
// permissions of PermissionsFor(role, models...). Passwords come from the caller (files or
// environment); an empty one is refused rather than leaving a role open.
func NewAuthConfig(passwords map[Role]Secret, models ...string) (*AuthConfig, error) {
	if len(passwords) == 0 {
		return nil, fmt.Errorf("%w: no role has a password", ErrAuth)
	}
	c := &AuthConfig{}
	for _, r := range Roles {
		pw, ok := passwords[r]
		if !ok {
			continue
		}
		if err := CheckPassword(pw); err != nil {
			return nil, fmt.Errorf("%w: role %s: %w", ErrAuth, r, err)
		}
		p, err := PermissionsFor(r, models...)
		if err != nil {
			return nil, err
		}
		c.Users = append(c.Users, AuthUser{Name: string(r), Password: pw, Perms: p})
	}
	for r := range passwords {
		if !slices.Contains(Roles, r) {
			return nil, fmt.Errorf("%w: unknown role %q", ErrAuth, r)
		}
	}
	return c, nil
}

// CheckPassword refuses a password no NATS config or login can carry as given: empty, or
// holding a control character.
func CheckPassword(pw Secret) error {
	if pw == "" {
		return errors.New("empty password")
	}
	for _, c := range string(pw) {
		if c < 0x20 || c == 0x7f {
			// A newline from a password file that was not trimmed is the usual culprit.
			return errors.New("password holds a control character (a trailing newline?)")
		}
	}
	return nil
}

// ApplyTo adds the users to an embedded server's options (before server.NewServer).
func (c *AuthConfig) ApplyTo(opts *server.Options) {
	for _, u := range c.Users {
		perms := &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: slices.Clone(u.Perms.Publish)},
			Subscribe: &server.SubjectPermission{Allow: slices.Clone(u.Perms.Subscribe)},
		}
		if u.Perms.AllowResponses {
			perms.Response = &server.ResponsePermission{
				MaxMsgs: server.DEFAULT_ALLOW_RESPONSE_MAX_MSGS,
				Expires: server.DEFAULT_ALLOW_RESPONSE_EXPIRATION,
			}
		}
		opts.Users = append(opts.Users, &server.User{Username: u.Name, Password: string(u.Password), Permissions: perms})
	}
}

// WriteAuthConfig writes the users as a nats-server config `authorization` block, to be
// included in (or appended to) a server's config file.
func (c *AuthConfig) WriteAuthConfig(w io.Writer) error {
	var b strings.Builder
	b.WriteString("# moemesh NATS authorization: one user per role. Holds passwords: keep it private.\n")
	b.WriteString("authorization {\n  users = [\n")
	for _, u := range c.Users {
		fmt.Fprintf(&b, "    {\n      user: %s\n      password: %s\n      permissions: {\n", quote(u.Name), quote(string(u.Password)))
		fmt.Fprintf(&b, "        publish: { allow: %s }\n", quoteList(u.Perms.Publish))
		fmt.Fprintf(&b, "        subscribe: { allow: %s }\n", quoteList(u.Perms.Subscribe))
		if u.Perms.AllowResponses {
			b.WriteString("        allow_responses: true\n")
		}
		b.WriteString("      }\n    }\n")
	}
	b.WriteString("  ]\n}\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("%w: writing config: %w", ErrAuth, err)
	}
	return nil
}

// quote makes a double-quoted config string; the config lexer knows the escapes Go's
// quoting of printable text produces (\" and \\), and control characters are refused
// before.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = quote(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
