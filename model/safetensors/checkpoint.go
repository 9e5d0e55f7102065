package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// IndexFile is the name of a sharded checkpoint's index.
const IndexFile = "model.safetensors.index.json"

// SingleFile is the name of an unsharded checkpoint.
const SingleFile = "model.safetensors"

// Checkpoint is a model's tensors across one or more safetensors files. All files are
// opened (validated and mapped) by Open, so a broken shard fails at startup rather than
// mid-serving, and reads need no locking. Methods are safe for concurrent use; Close must
// not race with reads, and views returned earlier are invalid after it.
type Checkpoint struct {
	dir   string
	files []*File          // in name order
	where map[string]*File // tensor name → its file
	names []string         // sorted
}

// Open opens the checkpoint in dir:
//   - with model.safetensors.index.json: every shard its weight_map names is opened, and
//     each tensor it lists must exist in that shard (tensors a shard holds beyond the
//     index are ignored, as transformers does);
//   - else model.safetensors, or else the only *.safetensors file in dir.
//
// dir may also be the path of a single .safetensors file. Errors name the file and the
// problem; a malformed file or index wraps ErrFormat, a missing one fs.ErrNotExist.
func Open(dir string) (*Checkpoint, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if !st.IsDir() {
		return openSingle(filepath.Dir(dir), dir)
	}
	index := filepath.Join(dir, IndexFile)
	if _, err := os.Stat(index); err == nil {
		return openIndexed(dir, index)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	single := filepath.Join(dir, SingleFile)
	if _, err := os.Stat(single); err == nil {
		return openSingle(dir, single)
	}
	found, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("safetensors: %s holds no %s, %s or other *.safetensors file: %w",
			dir, IndexFile, SingleFile, fs.ErrNotExist)
	case 1:
		return openSingle(dir, found[0])
	}
	// Several files and no index: which tensors belong where is unknowable, and merging
	// could mix two checkpoints saved into one directory.
	return nil, fmt.Errorf("%w: %s holds %d *.safetensors files (%s, ...) but no %s",
		ErrFormat, dir, len(found), filepath.Base(found[0]), IndexFile)
}

func openSingle(dir, path string) (*Checkpoint, error) {
	f, err := OpenFile(path)
	if err != nil {
		return nil, err
	}
	c := &Checkpoint{dir: dir, files: []*File{f}, where: map[string]*File{}, names: f.Names()}
	for _, n := range c.names {
		c.where[n] = f
	}
	return c, nil
}

// index is model.safetensors.index.json; metadata (total_size, ...) is informational.
type index struct {
	WeightMap json.RawMessage `json:"weight_map"`
}

func openIndexed(dir, path string) (_ *Checkpoint, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	var ix index
	if err := json.Unmarshal(b, &ix); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrFormat, path, err)
	}
	if len(ix.WeightMap) == 0 {
		return nil, fmt.Errorf("%w: %s has no weight_map", ErrFormat, path)
	}
	// Token walk, not Unmarshal into a map: a duplicated tensor name must be refused, not
	// silently resolved to whichever shard came last.
	dec := json.NewDecoder(strings.NewReader(string(ix.WeightMap)))
	wm, err := stringMap(dec, "weight_map")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(wm) == 0 {
		return nil, fmt.Errorf("%w: %s: weight_map is empty", ErrFormat, path)
	}
	c := &Checkpoint{dir: dir, where: make(map[string]*File, len(wm))}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	byShard := map[string]*File{}
	shards := make([]string, 0)
	for _, s := range wm {
		if _, ok := byShard[s]; !ok {
			byShard[s] = nil
			shards = append(shards, s)
		}
	}
	sort.Strings(shards)
	for _, s := range shards {
		// Shard names come from a file a user downloaded: keep them inside dir.
		if !filepath.IsLocal(s) {
			return nil, fmt.Errorf("%w: %s: shard %q is not a file inside %s", ErrFormat, path, s, dir)
		}
		f, err := OpenFile(filepath.Join(dir, s))
		if err != nil {
			return nil, fmt.Errorf("shard %s of %s: %w", s, path, err)
		}
		byShard[s] = f
		c.files = append(c.files, f)
	}
	for name, s := range wm {
		f := byShard[s]
		if _, ok := f.tensors[name]; !ok {
			return nil, fmt.Errorf("%w: %s maps tensor %q to %s, which does not hold it", ErrFormat, path, name, s)
		}
		c.where[name] = f
		c.names = append(c.names, name)
	}
	sort.Strings(c.names)
	return c, nil
}

// Close unmaps every file. Views returned by Raw and Rows become invalid.
func (c *Checkpoint) Close() error {
	var errs []error
	for _, f := range c.files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}

// Dir is the checkpoint directory.
func (c *Checkpoint) Dir() string { return c.dir }

// Files lists the paths of the checkpoint's files, sorted.
func (c *Checkpoint) Files() []string {
	out := make([]string, len(c.files))
	for i, f := range c.files {
		out[i] = f.path
	}
	return out
}

// Names lists every tensor, sorted.
func (c *Checkpoint) Names() []string { return slices.Clone(c.names) }

// Info describes tensor name (File and Offset locate its bytes on disk).
func (c *Checkpoint) Info(name string) (TensorInfo, bool) {
	f, ok := c.where[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.Info(name)
}

func (c *Checkpoint) lookup(name string) (*File, TensorInfo, error) {
	f, ok := c.where[name]
	if !ok {
		return nil, TensorInfo{}, fmt.Errorf("%w: %q in %s", ErrNotFound, name, c.dir)
	}
	return f, f.tensors[name], nil
}

// Raw returns tensor name's bytes (little-endian, row-major): on unix a read-only view
// into the mapping, valid until Close; writing to it crashes the process. Copy what must
// outlive the checkpoint.
func (c *Checkpoint) Raw(name string) ([]byte, error) {
	f, t, err := c.lookup(name)
	if err != nil {
		return nil, err
	}
	return f.bytes(t.Offset, t.Size)
}

// Rows returns the contiguous bytes of rows [rowStart, rowEnd) of slice index of tensor
// name, and the whole tensor's TensorInfo. With index −1 the rows are the tensor's first
// dimension (a 2-D [R, C] weight); with index ≥ 0 the tensor is a stack and the rows are
// its second dimension within slice index (a fused [E, 2I, H] expert tensor: index = the
// expert). rowStart = rowEnd = 0 means all rows. The bytes are a view as for Raw: only the
// pages of these rows are read from disk.
func (c *Checkpoint) Rows(name string, index, rowStart, rowEnd int) ([]byte, TensorInfo, error) {
	f, t, err := c.lookup(name)
	if err != nil {
		return nil, TensorInfo{}, err
	}
	start, count, err := rowSpan(t, index, rowStart, rowEnd)
	if err != nil {
		return nil, t.clone(), err
	}
	bits := int64(t.DType.Bits())
	b, err := f.bytes(t.Offset+start*bits/8, count*bits/8)
	return b, t.clone(), err
}

// rowSpan converts a Rows request to a span [start, start+count) of elements of t,
// checking that it is in range and starts and ends on byte boundaries.
func rowSpan(t TensorInfo, index, rowStart, rowEnd int) (start, count int64, err error) {
	rank := len(t.Shape)
	var rows, rowElems, base int64
	switch {
	case index == -1:
		if rank < 1 {
			return 0, 0, fmt.Errorf("%w: tensor %q is a scalar, it has no rows", ErrInvalid, t.Name)
		}
		rows, rowElems = t.Shape[0], prod(t.Shape[1:])
	case index >= 0:
		if rank < 2 {
			return 0, 0, fmt.Errorf("%w: tensor %q has shape %v, not a stack of matrices to take slice %d of",
				ErrInvalid, t.Name, t.Shape, index)
		}
		if int64(index) >= t.Shape[0] {
			return 0, 0, fmt.Errorf("%w: slice %d of tensor %q with %d slices", ErrInvalid, index, t.Name, t.Shape[0])
		}
		rows, rowElems = t.Shape[1], prod(t.Shape[2:])
		base = int64(index) * rows * rowElems
	default:
		return 0, 0, fmt.Errorf("%w: slice index %d of tensor %q", ErrInvalid, index, t.Name)
	}
	lo, hi := int64(rowStart), int64(rowEnd)
	if rowStart == 0 && rowEnd == 0 {
		hi = rows
	}
	if lo < 0 || lo > hi || hi > rows {
		return 0, 0, fmt.Errorf("%w: rows [%d, %d) of tensor %q with %d rows", ErrInvalid, rowStart, rowEnd, t.Name, rows)
	}
	start, count = base+lo*rowElems, (hi-lo)*rowElems
	bits := int64(t.DType.Bits())
	if start*bits%8 != 0 || count*bits%8 != 0 {
		return 0, 0, fmt.Errorf("%w: rows [%d, %d) of %s tensor %q do not start and end on byte boundaries",
			ErrUnsupported, lo, hi, t.DType, t.Name)
	}
	return start, count, nil
}

func prod(dims []int64) int64 {
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	return n
}
