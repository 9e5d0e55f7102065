package mesh

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

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
}

// Server is a running embedded NATS server.
type Server struct {
	ns      *server.Server
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
	s := &Server{}
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
