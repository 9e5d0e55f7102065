//go:build unix

package safetensors

import (
	"os"

	"golang.org/x/sys/unix"
)

// mmapRegion is a read-only shared mapping of a whole file. The descriptor is closed
// right after mapping (the mapping stays valid), so a checkpoint of hundreds of shards
// does not hold hundreds of descriptors.
type mmapRegion struct{ data []byte }

func mapFile(f *os.File, size int64) (region, bool, error) {
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, false, err
	}
	return &mmapRegion{data: data}, false, nil
}

// view limits the capacity too, so an append by the caller reallocates instead of
// writing past the tensor into read-only memory.
func (r *mmapRegion) view(off, n int64) ([]byte, error) {
	return r.data[off : off+n : off+n], nil
}

func (r *mmapRegion) close() error { return unix.Munmap(r.data) }

// syncDir flushes a directory entry (a rename) to disk.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
