package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	"github.com/moemesh/moemesh/mesh"
)

// Environment variables of the NATS connection flags. The password has an environment
// variable of its own and no flag: a flag's value shows in `ps` and shell history.
const (
	envNATSUser         = "MOEMESH_NATS_USER"
	envNATSPasswordFile = "MOEMESH_NATS_PASSWORD_FILE"
	envNATSPassword     = "MOEMESH_NATS_PASSWORD"
	envNATSCA           = "MOEMESH_NATS_CA"
	envNATSCert         = "MOEMESH_NATS_CERT"
	envNATSKey          = "MOEMESH_NATS_KEY"
	envRegistryReplicas = "MOEMESH_REGISTRY_REPLICAS"

	// maxRegistryReplicas is JetStream's own limit on stream replicas.
	maxRegistryReplicas = 5
)

// natsFlags are the connection settings shared by every command that dials NATS:
// credentials, TLS and, for the commands that open the registry, its replica count.
// Flags default to their environment variables, so compose and Kubernetes files can use
// either.
type natsFlags struct {
	role          mesh.Role // the command's own role, for the inbox prefix
	user          string
	passwordFile  string
	ca, cert, key string
	replicas      int
	replicasEnv   bool  // MOEMESH_REGISTRY_REPLICAS was set
	replicasErr   error // a malformed MOEMESH_REGISTRY_REPLICAS, reported by resolve
	fs            *pflag.FlagSet
	getenv        func(string) string
}

// register adds the flags to fs. role is the command's role (its inbox prefix unless the
// user names another role); registry adds --registry-replicas. getenv is os.Getenv
// except in tests.
func (f *natsFlags) register(fs *pflag.FlagSet, role mesh.Role, registry bool, getenv func(string) string) {
	f.role, f.getenv, f.fs = role, getenv, fs
	fs.StringVar(&f.user, "nats-user", getenv(envNATSUser), "NATS user, normally the role's name (env "+envNATSUser+")")
	fs.StringVar(&f.passwordFile, "nats-password-file", getenv(envNATSPasswordFile),
		"file holding the NATS user's password (env "+envNATSPasswordFile+"; or the password itself in "+envNATSPassword+")")
	fs.StringVar(&f.ca, "nats-ca", getenv(envNATSCA), "CA certificate (PEM) to verify the NATS server with; turns TLS on (env "+envNATSCA+")")
	fs.StringVar(&f.cert, "nats-cert", getenv(envNATSCert), "client certificate (PEM) for NATS TLS, with --nats-key (env "+envNATSCert+")")
	fs.StringVar(&f.key, "nats-key", getenv(envNATSKey), "client key (PEM) for NATS TLS, with --nats-cert (env "+envNATSKey+")")
	if registry {
		f.replicas = 1
		if v := getenv(envRegistryReplicas); v != "" {
			f.replicasEnv = true
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				f.replicasErr = fmt.Errorf("%s=%q: not a number", envRegistryReplicas, v)
			}
			f.replicas = n
		}
		fs.IntVar(&f.replicas, "registry-replicas", f.replicas,
			"NATS servers holding the registry bucket: 1, or 3 in a cluster to survive losing a node; unset, an existing bucket keeps its count (env "+envRegistryReplicas+")")
	}
}

// natsSettings are the resolved flags.
type natsSettings struct {
	user     string
	password mesh.Secret
	role     mesh.Role // inbox prefix role; "" without a user (an open server)
	ca       string
	cert     string
	key      string
	replicas int
	// replicasSet: --registry-replicas or its variable was given. Unset, an expertd must
	// not rescale an existing R3 bucket to the default of 1.
	replicasSet bool
}

// String, GoString and LogValue keep the password out of any print: fmt cannot call the
// Secret's own String on an unexported field and would print it raw.
func (s natsSettings) String() string {
	return fmt.Sprintf("nats{user:%q role:%q password:%v ca:%q cert:%q key:%q replicas:%d}",
		s.user, s.role, s.password, s.ca, s.cert, s.key, s.replicas)
}

func (s natsSettings) GoString() string { return s.String() }

func (s natsSettings) LogValue() slog.Value { return slog.StringValue(s.String()) }

// resolve reads the password and checks the TLS files, so that a bad setting fails before
// the first dial with an error naming its flag. Errors never hold the password.
func (f *natsFlags) resolve() (*natsSettings, error) {
	s := &natsSettings{user: strings.TrimSpace(f.user), ca: f.ca, cert: f.cert, key: f.key, replicas: f.replicas,
		replicasSet: f.replicasEnv || (f.fs != nil && f.fs.Changed("registry-replicas"))}
	getenv := f.getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	envPW := getenv(envNATSPassword)
	switch {
	case f.passwordFile != "" && envPW != "":
		return nil, fmt.Errorf("--nats-password-file and %s are both set: keep one", envNATSPassword)
	case f.passwordFile != "":
		data, err := os.ReadFile(f.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("--nats-password-file: %w", err)
		}
		pw := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
		if pw == "" {
			return nil, fmt.Errorf("--nats-password-file: %s is empty", f.passwordFile)
		}
		s.password = mesh.Secret(pw)
	case envPW != "":
		s.password = mesh.Secret(envPW)
	}
	if s.password != "" {
		if err := mesh.CheckPassword(s.password); err != nil {
			return nil, fmt.Errorf("NATS password: %w (one trailing newline of --nats-password-file is trimmed)", err)
		}
		if s.user == "" {
			return nil, errors.New("a NATS password needs --nats-user (env " + envNATSUser + ")")
		}
	} else if s.user != "" {
		return nil, fmt.Errorf("--nats-user %s needs a password: --nats-password-file or %s", s.user, envNATSPassword)
	}
	if s.user != "" {
		// The server lets a role subscribe only under its own inbox prefix; users made by
		// `moemesh nats-config` are named after their roles, so a role's name wins over
		// the command's own (an admin running a gateway keeps admin's prefix).
		s.role = f.role
		if r := mesh.Role(s.user); slices.Contains(mesh.Roles, r) {
			s.role = r
		}
	}
	if err := checkClientTLS(s.ca, s.cert, s.key); err != nil {
		return nil, err
	}
	if f.replicasErr != nil {
		return nil, fmt.Errorf("--registry-replicas: %w", f.replicasErr)
	}
	if s.replicas < 1 || s.replicas > maxRegistryReplicas {
		return nil, fmt.Errorf("--registry-replicas %d: want 1 to %d", s.replicas, maxRegistryReplicas)
	}
	return s, nil
}

// checkClientTLS loads the files once for a clear error; nats.go rereads them on every
// (re)connect, so a rotated certificate is picked up without a restart.
func checkClientTLS(ca, cert, key string) error {
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return fmt.Errorf("--nats-ca: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return fmt.Errorf("--nats-ca: %s holds no PEM certificate", ca)
		}
	}
	if (cert == "") != (key == "") {
		return errors.New("--nats-cert and --nats-key go together")
	}
	if cert != "" {
		if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
			return fmt.Errorf("--nats-cert/--nats-key: %w", err)
		}
	}
	return nil
}

// tls reports whether the settings turn TLS on (a tls:// URL does too, in nats.go).
func (s *natsSettings) tls() bool { return s.ca != "" || s.cert != "" }

// options are the nats.go options of the settings.
func (s *natsSettings) options() []nats.Option {
	var opts []nats.Option
	if s.user != "" {
		opts = append(opts, nats.UserInfo(s.user, string(s.password)), mesh.InboxOption(s.role))
	}
	if s.ca != "" {
		opts = append(opts, nats.RootCAs(s.ca))
	}
	if s.cert != "" {
		opts = append(opts, nats.ClientCert(s.cert, s.key))
	}
	return opts
}

// registryReplicas is the replica count to open the registry with: 0 (keep the bucket's,
// 1 for a new one) unless one was given.
func (s *natsSettings) registryReplicas() int {
	if !s.replicasSet {
		return 0
	}
	return s.replicas
}

// registryOptions are the options every OpenRegistry of the command passes.
func (s *natsSettings) registryOptions() []mesh.RegistryOption {
	return []mesh.RegistryOption{mesh.WithReplicas(s.registryReplicas())}
}

// connect resolves the flags and dials url. A refused login is reported with the user
// and the flags to check, never the password.
func (f *natsFlags) connect(ctx context.Context, url, name string, log *slog.Logger) (*nats.Conn, *natsSettings, error) {
	s, err := f.resolve()
	if err != nil {
		return nil, nil, err
	}
	if log != nil && (s.user != "" || s.tls()) {
		log.Info("nats security", "user", s.user, "inbox", inboxOf(s.role), "tls", s.tls() || strings.HasPrefix(url, "tls://"),
			"client_cert", s.cert != "")
	}
	nc, err := mesh.Connect(ctx, url, name, s.options()...)
	if err != nil {
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) {
			who := "anonymous (the server wants --nats-user and a password)"
			if s.user != "" {
				who = fmt.Sprintf("user %q: wrong password or unknown user (--nats-user, --nats-password-file / %s)", s.user, envNATSPassword)
			}
			return nil, nil, fmt.Errorf("NATS refused %s: %w", who, err)
		}
		return nil, nil, err
	}
	return nc, s, nil
}

func inboxOf(r mesh.Role) string {
	if r == "" {
		return nats.InboxPrefix
	}
	return mesh.InboxPrefix(r)
}

// certReloader serves a certificate pair from files, reloading it when either file
// changes (checked at most every reloadCheck), so a renewed certificate needs no restart.
// A pair that fails to load keeps the last good one.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	modTime time.Time // the newer of the two files' at the last load
	checked time.Time
}

const reloadCheck = 5 * time.Second

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	mt, err := r.modified()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	r.cert, r.modTime, r.checked = &cert, mt, time.Now()
	return r, nil
}

func (r *certReloader) modified() (time.Time, error) {
	var newest time.Time
	for _, f := range []string{r.certFile, r.keyFile} {
		st, err := os.Stat(f)
		if err != nil {
			return time.Time{}, err
		}
		if st.ModTime().After(newest) {
			newest = st.ModTime()
		}
	}
	return newest, nil
}

// get returns the current certificate, reloading it when the files changed.
func (r *certReloader) get() *tls.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) < reloadCheck {
		return r.cert
	}
	r.checked = time.Now()
	mt, err := r.modified()
	if err != nil || !mt.After(r.modTime) {
		return r.cert
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		// Often a renewal caught between writing the certificate and the key: the next
		// check retries.
		if r.log != nil {
			r.log.Warn("certificate reload failed, keeping the previous one", "cert", r.certFile, "err", err)
		}
		return r.cert
	}
	r.cert, r.modTime = &cert, mt
	if r.log != nil {
		r.log.Info("certificate reloaded", "cert", r.certFile)
	}
	return r.cert
}

// serverTLS is a server config over the reloader (HTTP/2 and HTTP/1.1).
func (r *certReloader) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return r.get(), nil },
	}
}
