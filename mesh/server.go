package mesh

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/conf"
	"github.com/nats-io/nats-server/v2/logger"
	"github.com/nats-io/nats-server/v2/server"
)

// Embedded server defaults.
const (
	DefaultMaxPayload         = 8 << 20 // DESIGN §2: batches are split to stay under it
	DefaultJetStreamMaxMemory = 256 << 20
	DefaultJetStreamMaxStore  = 1 << 30

	// serverReadyTimeout bounds how long StartServer waits for the listeners.
	serverReadyTimeout = 10 * time.Second

	// defaultRoutePort is the conventional NATS cluster port (the server has no constant).
	defaultRoutePort = 6222
)

// ErrServer: the embedded NATS server could not be configured or started.
var ErrServer = errors.New("mesh: nats server")

// ServerConfig configures an embedded NATS server with JetStream.
type ServerConfig struct {
	Host string // listen address; "" = 127.0.0.1 (use 0.0.0.0 to serve other machines)
	Port int    // client port; -1 = a random free port, 0 = 4222 (the NATS default)
	// StoreDir holds JetStream data. "" = a fresh temporary directory removed on Shutdown
	// (never the shared $TMPDIR/nats default, which leaks state between servers).
	StoreDir   string
	MaxPayload int32 // bytes; 0 = DefaultMaxPayload (8 MiB)
	// JetStream limits; 0 = the defaults above, not the server's 75 % of RAM and disk.
	JetStreamMaxMemory, JetStreamMaxStore int64
	Name                                  string // server name; required in a cluster
	Debug                                 bool   // log the server's own messages (debug level) to stderr
	ClusterName                           string // "" = standalone
	ClusterHost                           string // "" = Host
	ClusterPort                           int    // 0 = 6222 when ClusterName is set; -1 = random
	Routes                                []string
	// Monitor is the HOST:PORT of the server's HTTP monitoring endpoints (/healthz, /varz,
	// /routez, /jsz); "" = off. Port -1 picks a free port (see MonitorURL). Readiness
	// probes use /healthz?js-enabled-only=true.
	Monitor string

	// AuthFile is a nats-server config file holding only an `authorization` block (what
	// `moemesh nats-config` writes, see AuthConfig.WriteAuthConfig); its users become the
	// only ones the server accepts. "" = no authorization (any client connects).
	AuthFile string
	// TLSCert and TLSKey (PEM files) make clients connect with TLS; plain connections are
	// refused. With TLSCA the server also requires client certificates signed by it, and
	// a cluster's routes use the same certificate and CA both ways (without TLSCA, routes
	// stay plain: a route verifies its peer, which needs the CA).
	TLSCert, TLSKey, TLSCA string
}

// Server is a running embedded NATS server.
type Server struct {
	ns      *server.Server
	users   []string // user names of the authorization, for logs
	tls     bool
	tempDir string // removed on Shutdown; "" when the caller chose StoreDir
	once    sync.Once
}

// StartServer starts an embedded NATS server with JetStream on and returns once it accepts
// connections, or an error (a listen failure is reported at once, not after the timeout).
func StartServer(cfg ServerConfig) (*Server, error) {
	opts, err := cfg.options()
	if err != nil {
		return nil, err
	}
	s := &Server{tls: opts.TLSConfig != nil}
	for _, u := range opts.Users {
		s.users = append(s.users, u.Username)
	}
	if opts.Username != "" {
		s.users = append(s.users, opts.Username)
	}
	for _, u := range opts.Nkeys {
		s.users = append(s.users, u.Nkey)
	}
	if opts.StoreDir == "" {
		if s.tempDir, err = os.MkdirTemp("", "moemesh-nats-*"); err != nil {
			return nil, fmt.Errorf("%w: store dir: %w", ErrServer, err)
		}
		opts.StoreDir = s.tempDir
	}
	if s.ns, err = server.NewServer(opts); err != nil {
		s.removeTemp()
		return nil, fmt.Errorf("%w: %w", ErrServer, err)
	}
	// Our own logger instead of ConfigureLogger: the server reports listen and JetStream
	// failures through Fatalf, which the standard logger turns into os.Exit. We record them
	// and fail StartServer instead.
	log := &serverLog{fatal: make(chan string, 1)}
	if cfg.Debug {
		log.std = logger.NewStdLogger(true, true, false, false, false)
	}
	s.ns.SetLoggerV2(log, cfg.Debug, false, false)
	// Start only launches the accept loops in goroutines that Shutdown stops.
	go s.ns.Start()

	deadline := time.Now().Add(serverReadyTimeout)
	for !s.ns.ReadyForConnections(50 * time.Millisecond) {
		select {
		case msg := <-log.fatal:
			s.Shutdown()
			return nil, fmt.Errorf("%w: %s", ErrServer, msg)
		default:
		}
		if time.Now().After(deadline) {
			s.Shutdown()
			return nil, fmt.Errorf("%w: not ready for connections on %s:%d within %v", ErrServer, opts.Host, opts.Port, serverReadyTimeout)
		}
	}
	if !s.ns.JetStreamEnabled() {
		s.Shutdown()
		return nil, fmt.Errorf("%w: JetStream did not start", ErrServer)
	}
	return s, nil
}

func (cfg ServerConfig) options() (*server.Options, error) {
	opts := &server.Options{
		ServerName:         cfg.Name,
		Host:               cfg.Host,
		Port:               cfg.Port,
		NoLog:              true, // the logger is set explicitly in StartServer
		NoSigs:             true, // signals belong to the process, not a library
		Debug:              cfg.Debug,
		MaxPayload:         cfg.MaxPayload,
		JetStream:          true,
		JetStreamMaxMemory: cfg.JetStreamMaxMemory,
		JetStreamMaxStore:  cfg.JetStreamMaxStore,
		StoreDir:           cfg.StoreDir,
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.MaxPayload <= 0 {
		opts.MaxPayload = DefaultMaxPayload
	}
	if opts.JetStreamMaxMemory <= 0 {
		opts.JetStreamMaxMemory = DefaultJetStreamMaxMemory
	}
	if opts.JetStreamMaxStore <= 0 {
		opts.JetStreamMaxStore = DefaultJetStreamMaxStore
	}
	if cfg.Monitor != "" {
		host, port, err := splitHostPort(cfg.Monitor)
		if err != nil {
			return nil, fmt.Errorf("%w: monitor address: %w", ErrServer, err)
		}
		opts.HTTPHost, opts.HTTPPort = host, port
	}
	if cfg.AuthFile != "" {
		if err := loadAuthFile(cfg.AuthFile, opts); err != nil {
			return nil, err
		}
	}
	if cfg.TLSCert != "" || cfg.TLSKey != "" || cfg.TLSCA != "" {
		if cfg.TLSCert == "" || cfg.TLSKey == "" {
			return nil, fmt.Errorf("%w: TLS needs a certificate and its key (a CA alone is not enough)", ErrServer)
		}
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey, CaFile: cfg.TLSCA, Verify: cfg.TLSCA != ""})
		if err != nil {
			return nil, fmt.Errorf("%w: TLS: %w", ErrServer, err)
		}
		opts.TLS, opts.TLSConfig, opts.TLSVerify = true, tc, cfg.TLSCA != ""
	}
	if cfg.ClusterName == "" {
		if len(cfg.Routes) > 0 || cfg.ClusterPort != 0 {
			return nil, fmt.Errorf("%w: routes and a cluster port need a cluster name", ErrServer)
		}
		return opts, nil
	}
	// JetStream clustering identifies peers by server name; a generated one would change on
	// every restart and orphan the node's raft state.
	if cfg.Name == "" {
		return nil, fmt.Errorf("%w: cluster %q needs a server name", ErrServer, cfg.ClusterName)
	}
	opts.Cluster = server.ClusterOpts{Name: cfg.ClusterName, Host: cfg.ClusterHost, Port: cfg.ClusterPort}
	if opts.Cluster.Host == "" {
		opts.Cluster.Host = opts.Host
	}
	if opts.Cluster.Port == 0 {
		opts.Cluster.Port = defaultRoutePort
	}
	if cfg.TLSCA != "" {
		// Mutual: a route is a client of its peer's route port and a server for the peer.
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey, CaFile: cfg.TLSCA, Verify: true})
		if err != nil {
			return nil, fmt.Errorf("%w: cluster TLS: %w", ErrServer, err)
		}
		opts.Cluster.TLSConfig = tc
	}
	for _, r := range cfg.Routes {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		u, err := url.Parse(r)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("%w: route %q is not a URL like nats://host:6222", ErrServer, r)
		}
		opts.Routes = append(opts.Routes, u)
	}
	return opts, nil
}

// ClientURL is the URL clients connect to. An unspecified listen address (0.0.0.0, ::) is
// given as loopback, which is what a process next to the server can dial.
func (s *Server) ClientURL() string {
	u, err := url.Parse(s.ns.ClientURL())
	if err != nil {
		return s.ns.ClientURL()
	}
	if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsUnspecified() {
		u.Host = net.JoinHostPort("127.0.0.1", u.Port())
	}
	return u.String()
}

// Port is the client port the server listens on (useful with Port -1).
func (s *Server) Port() int {
	u, err := url.Parse(s.ns.ClientURL())
	if err != nil {
		return 0
	}
	p, _ := strconv.Atoi(u.Port())
	return p
}

// Users are the user names the server accepts ("" or empty: no authorization). Never the
// passwords.
func (s *Server) Users() []string { return slices.Clone(s.users) }

// TLS reports whether clients must connect with TLS.
func (s *Server) TLS() bool { return s.tls }

// MonitorURL is the base URL of the HTTP monitoring endpoints (e.g. http://127.0.0.1:8222),
// or "" when ServerConfig.Monitor was empty. An unspecified host is given as loopback.
func (s *Server) MonitorURL() string {
	addr := s.ns.MonitorAddr()
	if addr == nil {
		return ""
	}
	host := addr.IP.String()
	if addr.IP == nil || addr.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(addr.Port))
}

// loadAuthFile applies the users of a file holding only an `authorization` block. Other
// settings are refused rather than ignored: listen addresses, JetStream and TLS are this
// package's flags, and a setting that silently did nothing would mislead.
func loadAuthFile(path string, opts *server.Options) error {
	top, err := conf.ParseFile(path)
	if err != nil {
		return fmt.Errorf("%w: auth file: %w", ErrServer, err)
	}
	for k := range top {
		if k != "authorization" {
			return fmt.Errorf("%w: auth file %s: only an authorization block is read, not %q", ErrServer, path, k)
		}
	}
	fo, err := server.ProcessConfigFile(path)
	if err != nil {
		return fmt.Errorf("%w: auth file: %w", ErrServer, err)
	}
	if len(fo.Users) == 0 && len(fo.Nkeys) == 0 && fo.Username == "" && fo.Authorization == "" {
		return fmt.Errorf("%w: auth file %s defines no user: the server would stay open", ErrServer, path)
	}
	opts.Users, opts.Nkeys = fo.Users, fo.Nkeys
	opts.Username, opts.Password, opts.Authorization = fo.Username, fo.Password, fo.Authorization
	opts.NoAuthUser, opts.AuthTimeout = fo.NoAuthUser, fo.AuthTimeout
	return nil
}

// splitHostPort parses HOST:PORT (HOST may be empty: all interfaces; PORT -1: a free port).
func splitHostPort(hp string) (string, int, error) {
	host, ps, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not HOST:PORT: %w", hp, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < -1 || port > 65535 || port == 0 {
		return "", 0, fmt.Errorf("%q: port must be 1-65535 or -1 (a free port)", hp)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// NATS is the underlying server, for what this package does not wrap.
func (s *Server) NATS() *server.Server { return s.ns }

// Shutdown stops the server, waits until it has stopped and removes a temporary store.
// It may be called more than once.
func (s *Server) Shutdown() {
	s.once.Do(func() {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
		s.removeTemp()
	})
}

func (s *Server) removeTemp() {
	if s.tempDir != "" {
		_ = os.RemoveAll(s.tempDir)
	}
}

// serverLog implements server.Logger: it keeps the first fatal message for StartServer and
// passes everything to std when debugging.
type serverLog struct {
	std   *logger.Logger // nil: silent
	fatal chan string    // capacity 1: the first fatal message
}

func (l *serverLog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	select {
	case l.fatal <- msg:
	default:
	}
	if l.std != nil {
		l.std.Errorf("%s", msg) // never std.Fatalf: it exits the process
	}
}

func (l *serverLog) Noticef(format string, v ...any) {
	if l.std != nil {
		l.std.Noticef(format, v...)
	}
}

func (l *serverLog) Warnf(format string, v ...any) {
	if l.std != nil {
		l.std.Warnf(format, v...)
	}
}

func (l *serverLog) Errorf(format string, v ...any) {
	if l.std != nil {
		l.std.Errorf(format, v...)
	}
}

func (l *serverLog) Debugf(format string, v ...any) {
	if l.std != nil {
		l.std.Debugf(format, v...)
	}
}

func (l *serverLog) Tracef(format string, v ...any) {
	if l.std != nil {
		l.std.Tracef(format, v...)
	}
}
