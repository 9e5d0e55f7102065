package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/mesh"
)

// passwordEnvPrefix + the upper-case role name holds a role's password, e.g.
// MOEMESH_NATS_PASSWORD_GATEWAY.
const passwordEnvPrefix = "MOEMESH_NATS_PASSWORD_"

func newNATSConfig(g *globals) *cobra.Command {
	var (
		models        []string
		out           string
		passwordFiles []string
	)
	c := &cobra.Command{
		Use:   "nats-config",
		Short: "Write the nats-server authorization (a user per role) for an existing NATS cluster",
		Long: `Writes a nats-server config "authorization" block with one user per role (gateway,
router, expertd, admin) allowed exactly its mesh traffic, to include in each server's config.
A role is written when it has a password, from --password-file ROLE=PATH or the environment
variable ` + passwordEnvPrefix + `<ROLE> (e.g. ` + passwordEnvPrefix + `GATEWAY); passwords
never come from the command line. Services of a role must use the inbox prefix _INBOX_<role>
(they do when --nats-user names the role). moemesh's own server loads the file with
moemesh nats --auth FILE; see docs/security.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := rolePasswords(passwordFiles, os.Getenv)
			if err != nil {
				return err
			}
			cfg, err := mesh.NewAuthConfig(pw, models...)
			if err != nil {
				return err
			}
			if err := writeNATSConfig(out, cfg); err != nil {
				return err
			}
			roles := make([]string, len(cfg.Users))
			for i, u := range cfg.Users {
				roles[i] = u.Name
			}
			g.logger().Info("nats authorization written", "file", out, "roles", roles, "models", models)
			return nil
		},
	}
	f := c.Flags()
	f.StringSliceVar(&models, "model", nil, "model names the roles may serve (repeatable or comma-separated; none: every model, with wildcards)")
	f.StringVar(&out, "out", "", "file to write (mode 0600; it holds passwords)")
	f.StringArrayVar(&passwordFiles, "password-file", nil, "ROLE=PATH: read ROLE's password from PATH (repeatable)")
	_ = c.MarkFlagRequired("out")
	return c
}

// rolePasswords reads each role's password from its file (one trailing newline dropped)
// or, for roles without one, from the environment. A role given both ways is an error
// rather than a silent choice.
func rolePasswords(files []string, getenv func(string) string) (map[mesh.Role]mesh.Secret, error) {
	pw := map[mesh.Role]mesh.Secret{}
	for _, spec := range files {
		name, path, ok := strings.Cut(spec, "=")
		role := mesh.Role(strings.ToLower(strings.TrimSpace(name)))
		if !ok || path == "" || !knownRole(role) {
			return nil, fmt.Errorf("--password-file %q: want ROLE=PATH with ROLE one of %v", spec, mesh.Roles)
		}
		if _, dup := pw[role]; dup {
			return nil, fmt.Errorf("--password-file: role %s given twice", role)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--password-file %s: %w", role, err)
		}
		s := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
		if s == "" {
			return nil, fmt.Errorf("--password-file %s: %s is empty", role, path)
		}
		pw[role] = mesh.Secret(s)
	}
	for _, role := range mesh.Roles {
		env := passwordEnvPrefix + strings.ToUpper(string(role))
		v := getenv(env)
		if v == "" {
			continue
		}
		if _, dup := pw[role]; dup {
			return nil, fmt.Errorf("role %s has both --password-file and %s", role, env)
		}
		pw[role] = mesh.Secret(v)
	}
	if len(pw) == 0 {
		return nil, fmt.Errorf("no passwords: give --password-file ROLE=PATH or %s<ROLE> for at least one role", passwordEnvPrefix)
	}
	return pw, nil
}

func knownRole(r mesh.Role) bool {
	for _, k := range mesh.Roles {
		if r == k {
			return true
		}
	}
	return false
}

// writeNATSConfig writes cfg to path with mode 0600, through a temporary file renamed into
// place so that a server reloading it never reads half a file.
func writeNATSConfig(path string, cfg *mesh.AuthConfig) error {
	if path == "" {
		return errors.New("--out is required")
	}
	var buf bytes.Buffer
	if err := cfg.WriteAuthConfig(&buf); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".nats-config-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
