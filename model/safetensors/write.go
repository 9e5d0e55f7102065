package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"unicode/utf8"
)

// Tensor is a tensor to write: raw little-endian row-major Data of DType and Shape.
type Tensor struct {
	Name  string
	DType DType
	Shape []int64
	Data  []byte
}

// Encode writes tensors and metadata (nil: no __metadata__) to w in safetensors format,
// exactly as the reference writer does: tensors sorted by descending dtype alignment
// (the reference enum order), then by name; the compact JSON header padded with spaces
// to a multiple of 8 bytes, so every tensor's data is naturally aligned. Invalid input
// (duplicate or empty names, unknown dtypes, data not matching shape) wraps ErrInvalid
// and nothing is written.
func Encode(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	order, hdr, err := prepare(tensors, metadata)
	if err != nil {
		return err
	}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(hdr)))
	if _, err := w.Write(n[:]); err != nil {
		return err
	}
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	for _, i := range order {
		if _, err := w.Write(tensors[i].Data); err != nil {
			return err
		}
	}
	return nil
}

// prepare validates tensors and returns their write order and the padded header.
func prepare(tensors []Tensor, metadata map[string]string) ([]int, []byte, error) {
	seen := make(map[string]bool, len(tensors))
	for _, t := range tensors {
		switch {
		case t.Name == "" || t.Name == "__metadata__" || !utf8.ValidString(t.Name):
			return nil, nil, fmt.Errorf("%w: tensor name %q", ErrInvalid, t.Name)
		case seen[t.Name]:
			return nil, nil, fmt.Errorf("%w: tensor %q given twice", ErrInvalid, t.Name)
		}
		seen[t.Name] = true
		size, err := byteSize(t.DType, t.Shape)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: tensor %q: %v", ErrInvalid, t.Name, err)
		}
		if int64(len(t.Data)) != size {
			return nil, nil, fmt.Errorf("%w: tensor %q: %s %v needs %d bytes, data has %d",
				ErrInvalid, t.Name, t.DType, t.Shape, size, len(t.Data))
		}
	}
	for k, v := range metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil, nil, fmt.Errorf("%w: metadata %q: %q is not UTF-8", ErrInvalid, k, v)
		}
	}
	order := make([]int, len(tensors))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool {
		ta, tb := tensors[order[a]], tensors[order[b]]
		if ra, rb := dtypeRank[ta.DType], dtypeRank[tb.DType]; ra != rb {
			return ra > rb
		}
		return ta.Name < tb.Name
	})
	var buf bytes.Buffer
	buf.WriteByte('{')
	if metadata != nil {
		buf.WriteString(`"__metadata__":{`)
		keys := make([]string, 0, len(metadata))
		for k := range metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys) // the reference's HashMap order is arbitrary; sorted is stable
		for i, k := range keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			writeJSONString(&buf, k)
			buf.WriteByte(':')
			writeJSONString(&buf, metadata[k])
		}
		buf.WriteByte('}')
	}
	var offset int64
	for i, idx := range order {
		t := tensors[idx]
		if i > 0 || metadata != nil {
			buf.WriteByte(',')
		}
		writeJSONString(&buf, t.Name)
		fmt.Fprintf(&buf, `:{"dtype":"%s","shape":[`, t.DType)
		for j, d := range t.Shape {
			if j > 0 {
				buf.WriteByte(',')
			}
			fmt.Fprint(&buf, d)
		}
		end := offset + int64(len(t.Data))
		fmt.Fprintf(&buf, `],"data_offsets":[%d,%d]}`, offset, end)
		offset = end
	}
	buf.WriteByte('}')
	for buf.Len()%8 != 0 {
		buf.WriteByte(' ')
	}
	if buf.Len() > MaxHeaderSize {
		return nil, nil, fmt.Errorf("%w: header of %d bytes exceeds the %d-byte limit", ErrInvalid, buf.Len(), MaxHeaderSize)
	}
	return order, buf.Bytes(), nil
}

// writeJSONString writes s as a JSON string without HTML escaping, as serde_json does.
func writeJSONString(buf *bytes.Buffer, s string) {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // cannot fail for a string
	buf.Truncate(buf.Len() - 1)
}

// WriteFile writes tensors to path (see Encode). The file is written to a temporary file
// in the same directory, synced and renamed into place, so path is either untouched or
// complete, never half-written.
func WriteFile(path string, tensors []Tensor, metadata map[string]string) error {
	if _, _, err := prepare(tensors, metadata); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return atomicWrite(path, func(w io.Writer) error { return Encode(w, tensors, metadata) })
}

// atomicWrite writes path through a temporary sibling and a rename.
func atomicWrite(path string, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err := write(bw); err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	// CreateTemp makes the file 0600; a checkpoint is shared read-only data.
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("safetensors: sync %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("safetensors: sync %s: %w", dir, err)
	}
	return nil
}

// ShardName is the file name of shard i (0-based) of n, as transformers names them.
func ShardName(i, n int) string { return fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, n) }

// WriteSharded writes tensors to dir as a sharded checkpoint: shards files
// model-0000i-of-0000N.safetensors, each a standalone safetensors file with metadata, and
// then model.safetensors.index.json ({"metadata": {"total_size": data bytes},
// "weight_map": {tensor: file}}, indented and key-sorted as transformers writes it). The
// tensors are cut, in the given order and each whole, into shards of about equal bytes,
// so neighbouring tensors (one layer) share a file. shards = 1 writes model.safetensors
// and no index, as transformers does for a model that fits one file.
//
// Every file is written atomically and the index last, so a crash never leaves an index
// naming a missing or partial shard. Files of an older checkpoint in dir are not removed.
func WriteSharded(dir string, tensors []Tensor, shards int, metadata map[string]string) error {
	if shards < 1 || shards > 99999 || shards > len(tensors) {
		return fmt.Errorf("%w: %d shards for %d tensors (want 1..min(tensors, 99999))", ErrInvalid, shards, len(tensors))
	}
	if _, _, err := prepare(tensors, metadata); err != nil {
		return err
	}
	if shards == 1 {
		return WriteFile(filepath.Join(dir, SingleFile), tensors, metadata)
	}
	parts := splitBalanced(tensors, shards)
	weightMap := make(map[string]string, len(tensors))
	var total int64
	for i, part := range parts {
		name := ShardName(i, shards)
		if err := WriteFile(filepath.Join(dir, name), part, metadata); err != nil {
			return err
		}
		for _, t := range part {
			weightMap[t.Name] = name
			total += int64(len(t.Data))
		}
	}
	index, err := json.MarshalIndent(map[string]any{
		"metadata":   map[string]any{"total_size": total},
		"weight_map": weightMap,
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	return atomicWrite(filepath.Join(dir, IndexFile), func(w io.Writer) error {
		_, err := w.Write(append(index, '\n'))
		return err
	})
}

// splitBalanced cuts tensors into n non-empty contiguous parts of about equal bytes: a
// tensor goes to the part its byte midpoint falls in, unless later parts would be left
// without a tensor.
func splitBalanced(tensors []Tensor, n int) [][]Tensor {
	var total int64
	for _, t := range tensors {
		total += int64(len(t.Data))
	}
	parts := make([][]Tensor, 0, n)
	var cur []Tensor
	var done int64
	for i, t := range tensors {
		left := len(tensors) - i   // tensors still to place, this one included
		need := n - len(parts) - 1 // parts still to open after the current one
		mid := float64(done) + float64(len(t.Data))/2
		if len(cur) > 0 && need > 0 && (left <= need || mid > float64(total)*float64(len(parts)+1)/float64(n)) {
			parts, cur = append(parts, cur), nil
		}
		cur = append(cur, t)
		done += int64(len(t.Data))
	}
	return append(parts, slices.Clip(cur))
}
