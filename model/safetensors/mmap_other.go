//go:build !unix

package safetensors

import (
	"io"
	"os"
)

// fileRegion reads with ReadAt where mmap is not available: each view is a fresh copy,
// so memory use follows what callers read, as with a mapping, at the price of a copy.
type fileRegion struct{ f *os.File }

func mapFile(f *os.File, size int64) (region, bool, error) { return &fileRegion{f: f}, true, nil }

func (r *fileRegion) view(off, n int64) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(io.NewSectionReader(r.f, off, n), b); err != nil {
		return nil, err
	}
	return b, nil
}

func (r *fileRegion) close() error { return r.f.Close() }

// syncDir is a no-op: not every platform can sync a directory (Windows cannot).
func syncDir(string) error { return nil }
