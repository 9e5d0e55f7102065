package tenant

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"
)

// Store holds the current Set of a tenants file and reloads it when the file changes.
type Store struct {
	path string
	log  *slog.Logger
	cur  atomic.Pointer[Set]
	// last is the content of the last load attempt and lastErr the last read error, so a
	// broken file is logged once, not every poll. Only Watch's goroutine touches them.
	last    []byte
	lastErr string
	failed  atomic.Pointer[error] // the last reload's error; nil after a good reload
	// onReload, if set, is called after each reload attempt (tests wait on it).
	onReload func(err error)
}

// Load reads path once. With path "" it returns a Store holding Open().
func Load(path string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Store{path: path, log: log}
	if path == "" {
		s.cur.Store(Open())
		return s, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tenant: %w", err)
	}
	set, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	s.cur.Store(set)
	s.last = data
	return s, nil
}

// Set returns the current tenants.
func (s *Store) Set() *Set { return s.cur.Load() }

// Watch polls the file every interval until ctx is done and swaps in a new Set when its
// content changes and parses. It polls rather than using inotify because it then follows
// the symlink swaps of Kubernetes config maps and works on any filesystem; a tenants file
// is small, so reading it every couple of seconds costs nothing. A file that disappears or
// does not parse is logged and the previous Set stays.
func (s *Store) Watch(ctx context.Context, interval time.Duration) {
	if s.path == "" {
		return
	}
	if interval <= 0 {
		interval = 2 * time.Second
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.reload()
		}
	}
}

// reload reads the file and swaps the Set if the content changed and parses.
func (s *Store) reload() {
	data, err := os.ReadFile(s.path)
	if err != nil {
		if err.Error() != s.lastErr {
			s.lastErr = err.Error()
			s.log.Error("tenants file unreadable; keeping the previous tenants", "path", s.path, "err", err)
			s.done(err)
		}
		s.last = nil // parse the file again when it is back, even unchanged
		return
	}
	s.lastErr = ""
	if bytes.Equal(data, s.last) {
		return
	}
	s.last = data
	set, err := Parse(s.path, data)
	if err != nil {
		s.log.Error("tenants file does not parse; keeping the previous tenants", "path", s.path, "err", err)
		s.done(err)
		return
	}
	s.cur.Store(set)
	s.log.Info("tenants reloaded", "path", s.path, "tenants", len(set.ids))
	s.done(nil)
}

// LastError returns why the last reload failed, or nil if it succeeded (or none ran):
// the tenants in use are then the file's current content.
func (s *Store) LastError() error {
	if p := s.failed.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *Store) done(err error) {
	if err != nil {
		s.failed.Store(&err)
	} else {
		s.failed.Store(nil)
	}
	if s.onReload != nil {
		s.onReload(err)
	}
}
