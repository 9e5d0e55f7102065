package safetensors

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"sync"
)

// TensorInfo describes one tensor of a safetensors file.
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int64 // row-major; empty for a scalar
	// Offset is the absolute byte offset of the tensor's data in File, Size its length in
	// bytes: a daemon can read exactly [Offset, Offset+Size) of the file.
	Offset, Size int64
	File         string // path of the file holding the tensor
}

// Numel is the number of elements (1 for a scalar).
func (t TensorInfo) Numel() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

func (t TensorInfo) clone() TensorInfo {
	t.Shape = slices.Clone(t.Shape)
	return t
}

// region is the readable content of an open file: an mmap on unix, ReadAt elsewhere.
type region interface {
	// view returns bytes [off, off+n) of the file: a view into the mapping (valid until
	// close) or a fresh copy.
	view(off, n int64) ([]byte, error)
	close() error
}

// File is one open, validated safetensors file. Its methods are safe for concurrent use.
type File struct {
	path     string
	size     int64
	tensors  map[string]TensorInfo // absolute offsets
	names    []string              // sorted
	metadata map[string]string

	mu     sync.RWMutex
	region region // nil once closed
}

// OpenFile opens and validates the safetensors file at path (every rule of models.md
// §5.1; errors name the file and wrap ErrFormat) and maps it read-only. Only the header
// is read here; tensor pages are read when a caller touches them.
func OpenFile(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	file, keep, err := openFile(f, path)
	if !keep {
		f.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return file, nil
}

// openFile parses f and maps it; keep reports whether the region took ownership of f.
func openFile(f *os.File, path string) (_ *File, keep bool, _ error) {
	st, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	if !st.Mode().IsRegular() {
		return nil, false, fmt.Errorf("%w: not a regular file", ErrFormat)
	}
	size := st.Size()
	if size < 8 {
		return nil, false, fmt.Errorf("%w: file is %d bytes, too short for the 8-byte header length", ErrFormat, size)
	}
	var lenBuf [8]byte
	if _, err := f.ReadAt(lenBuf[:], 0); err != nil {
		return nil, false, fmt.Errorf("safetensors: read header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > MaxHeaderSize {
		return nil, false, fmt.Errorf("%w: header length %d exceeds the %d-byte limit", ErrFormat, n, MaxHeaderSize)
	}
	if int64(n) > size-8 {
		return nil, false, fmt.Errorf("%w: header length %d exceeds the %d bytes after the length field", ErrFormat, n, size-8)
	}
	hdr := make([]byte, n)
	if _, err := io.ReadFull(io.NewSectionReader(f, 8, int64(n)), hdr); err != nil {
		return nil, false, fmt.Errorf("safetensors: read header: %w", err)
	}
	base := 8 + int64(n)
	h, err := parseHeader(hdr, size-base)
	if err != nil {
		return nil, false, err
	}
	if size > math.MaxInt {
		return nil, false, fmt.Errorf("%w: %d-byte file does not fit this platform's address space", ErrUnsupported, size)
	}
	file := &File{path: path, size: size, tensors: h.tensors, metadata: h.metadata}
	for name, t := range file.tensors {
		t.Offset += base
		t.File = path
		file.tensors[name] = t
		file.names = append(file.names, name)
	}
	sort.Strings(file.names)
	file.region, keep, err = mapFile(f, size)
	if err != nil {
		return nil, keep, fmt.Errorf("safetensors: map: %w", err)
	}
	return file, keep, nil
}

// Path is the path the file was opened with.
func (f *File) Path() string { return f.path }

// Size is the file size in bytes.
func (f *File) Size() int64 { return f.size }

// Names lists the tensors, sorted.
func (f *File) Names() []string { return slices.Clone(f.names) }

// Metadata is a copy of the header's __metadata__ map (nil when absent).
func (f *File) Metadata() map[string]string {
	if f.metadata == nil {
		return nil
	}
	m := make(map[string]string, len(f.metadata))
	for k, v := range f.metadata {
		m[k] = v
	}
	return m
}

// Info describes tensor name, with Offset absolute in the file.
func (f *File) Info(name string) (TensorInfo, bool) {
	t, ok := f.tensors[name]
	if !ok {
		return TensorInfo{}, false
	}
	return t.clone(), true
}

// Raw returns the bytes of tensor name (little-endian, row-major). On unix it is a
// read-only view into the mapping: writing to it crashes the process, and it must not be
// used after Close (reading it then faults). Copy what must outlive the File.
func (f *File) Raw(name string) ([]byte, error) {
	t, ok := f.tensors[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q in %s", ErrNotFound, name, f.path)
	}
	return f.bytes(t.Offset, t.Size)
}

// bytes returns [off, off+n) of the file; the range is inside a validated tensor.
func (f *File) bytes(off, n int64) ([]byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.region == nil {
		return nil, fmt.Errorf("%w: %s", ErrClosed, f.path)
	}
	if off < 0 || n < 0 || off > f.size-n {
		return nil, fmt.Errorf("%w: byte range [%d, %d) outside %s (%d bytes)", ErrInvalid, off, off+n, f.path, f.size)
	}
	b, err := f.region.view(off, n)
	if err != nil {
		return nil, fmt.Errorf("safetensors: read %s: %w", f.path, err)
	}
	return b, nil
}

// Close unmaps the file. Views returned by Raw and Rows become invalid. Closing twice is
// a no-op.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.region == nil {
		return nil
	}
	err := f.region.close()
	f.region = nil
	if err != nil {
		return fmt.Errorf("safetensors: close %s: %w", f.path, err)
	}
	return nil
}
