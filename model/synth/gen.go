package synth

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/moemesh/moemesh/model/safetensors"
)

// tspec describes one tensor to generate: element i is mean + std·N(0,1).
type tspec struct {
	name      string
	shape     []int64
	mean, std float32
	alwaysF32 bool // stored as F32 whatever the checkpoint dtype (e_score_correction_bias)
	// values, when set, are the tensor's elements instead of random draws (a fitted
	// bias, see skew.go); len(values) == numel.
	values []float32
}

func (s tspec) numel() int64 {
	n := int64(1)
	for _, d := range s.shape {
		n *= d
	}
	return n
}

func (s tspec) f32(checkpointF32 bool) bool { return checkpointF32 || s.alwaysF32 }

func (s tspec) bytes(checkpointF32 bool) int64 {
	if s.f32(checkpointF32) {
		return 4 * s.numel()
	}
	return 2 * s.numel()
}

// plan is the ordered tensor list of a model.
type plan struct{ specs []tspec }

func (p *plan) add(s tspec) { p.specs = append(p.specs, s) }

// linear is a [out, in] weight with variance 1/in.
func (p *plan) linear(name string, out, in int) {
	p.add(tspec{name: name, shape: []int64{int64(out), int64(in)}, std: linearStd(in)})
}

// linear3 is a stack of n [out, in] weights (Granite's fused experts).
func (p *plan) linear3(name string, n, out, in int) {
	p.add(tspec{name: name, shape: []int64{int64(n), int64(out), int64(in)}, std: linearStd(in)})
}

// norm is an RMSNorm weight near 1; the small spread makes a loader that ignores or
// misplaces norm weights show up in golden comparisons.
func (p *plan) norm(name string, n int) {
	p.add(tspec{name: name, shape: []int64{int64(n)}, mean: 1, std: 0.05})
}

// bias is a projection bias, small against the O(1) projection outputs.
func (p *plan) bias(name string, n int) {
	p.add(tspec{name: name, shape: []int64{int64(n)}, std: 0.1})
}

func (p *plan) bytes(f32 bool) int64 {
	var n int64
	for _, s := range p.specs {
		n += s.bytes(f32)
	}
	return n
}

// split cuts the plan into n contiguous shards of about equal bytes, each non-empty. A
// tensor goes to the shard its byte midpoint falls in (the same cut as
// safetensors.WriteSharded), so shards are balanced without reordering tensors.
func (p *plan) split(n int, f32 bool) ([][]tspec, error) {
	if n > len(p.specs) {
		return nil, fmt.Errorf("%w: %d shards for %d tensors", ErrOptions, n, len(p.specs))
	}
	total := p.bytes(f32)
	out := make([][]tspec, 0, n)
	var cur []tspec
	var done int64
	for i, s := range p.specs {
		b := s.bytes(f32)
		left := len(p.specs) - i // tensors still to place, this one included
		need := n - len(out) - 1 // shards still to open after the current one
		if len(cur) > 0 && need > 0 &&
			(left <= need || float64(done)+float64(b)/2 > float64(total)*float64(len(out)+1)/float64(n)) {
			out, cur = append(out, cur), nil
		}
		cur = append(cur, s)
		done += b
	}
	return append(out, cur), nil
}

// tensor generates s's data. Each tensor has its own stream seeded by (seed, name), so its
// bytes do not depend on the other tensors, the sharding or the generation order.
func (s tspec) tensor(seed int64, checkpointF32 bool) safetensors.Tensor {
	rng := rand.NewPCG(uint64(seed), fnv64(s.name))
	n := s.numel()
	t := safetensors.Tensor{Name: s.name, Shape: s.shape}
	next := func() float32 { return s.mean + s.std*normal(rng) }
	if s.values != nil {
		i := 0
		next = func() float32 { i++; return s.values[i-1] }
	}
	if s.f32(checkpointF32) {
		t.DType = safetensors.F32
		t.Data = make([]byte, 4*n)
		for b := t.Data; len(b) >= 4; b = b[4:] {
			binary.LittleEndian.PutUint32(b, math.Float32bits(next()))
		}
		return t
	}
	t.DType = safetensors.BF16
	t.Data = make([]byte, 2*n)
	for b := t.Data; len(b) >= 2; b = b[2:] {
		binary.LittleEndian.PutUint16(b, bf16(next()))
	}
	return t
}

// normal is a standard-normal-like draw: the sum of four 16-bit uniforms from one PCG
// output (Irwin–Hall), centred and scaled to variance 1. It is about four times faster
// than rand.NormFloat64, which matters for the ~300M weights of the small preset, and its
// tails stop at ±3.46σ, which only helps keep random activations tame.
func normal(r *rand.PCG) float32 {
	const (
		mean = 2 * 65535             // 4 · 65535/2
		inv  = 1 / 37837.22723720648 // 1/sqrt(4 · (65536² − 1)/12)
	)
	u := r.Uint64()
	s := int32(u&0xffff + u>>16&0xffff + u>>32&0xffff + u>>48)
	return float32(s-mean) * inv
}

// bf16 rounds f to bfloat16, to nearest even (as torch's .to(bfloat16)); inputs are finite.
func bf16(f float32) uint16 {
	b := math.Float32bits(f)
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// generate fills the tensors of one shard on all cores. Output order is specs order, and
// every tensor's bytes are fixed by its own seed, so parallelism cannot change the files.
func generate(specs []tspec, seed int64, f32 bool) []safetensors.Tensor {
	out := make([]safetensors.Tensor, len(specs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(specs)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(specs) {
					return
				}
				out[i] = specs[i].tensor(seed, f32)
			}
		})
	}
	wg.Wait()
	return out
}

// shardMetadata is the __metadata__ of every shard; transformers writes {"format": "pt"}.
var shardMetadata = map[string]string{"format": "pt"}

// writeShards writes the shards one at a time and then the index, in the layout of
// safetensors.WriteSharded. It does not call WriteSharded because that takes every
// tensor at once: the small preset in f32 would hold 1.2 GB instead of one shard. A single shard is written as model.safetensors without an index, as
// transformers does.
func writeShards(dir string, shards [][]tspec, seed int64, f32 bool) error {
	if len(shards) == 1 {
		return writeShard(filepath.Join(dir, safetensors.SingleFile), shards[0], seed, f32)
	}
	weightMap := map[string]string{}
	var total int64
	for i, specs := range shards {
		name := safetensors.ShardName(i, len(shards))
		if err := writeShard(filepath.Join(dir, name), specs, seed, f32); err != nil {
			return err
		}
		for _, s := range specs {
			weightMap[s.name] = name
			total += s.bytes(f32)
		}
	}
	// total_size is the sum of tensor bytes (not file sizes), as transformers computes it.
	index, err := marshal(map[string]any{
		"metadata":   map[string]any{"total_size": total},
		"weight_map": weightMap,
	})
	if err != nil {
		return err
	}
	return writeFileSync(dir, safetensors.IndexFile, index)
}

func writeShard(path string, specs []tspec, seed int64, f32 bool) error {
	// WriteFile syncs the file itself.
	if err := safetensors.WriteFile(path, generate(specs, seed, f32), shardMetadata); err != nil {
		return fmt.Errorf("synth: write %s: %w", filepath.Base(path), err)
	}
	return nil
}

func writeFileSync(dir, name string, b []byte) error {
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	return syncPath(path)
}

// syncPath flushes a file or directory, so the rename that publishes the checkpoint
// cannot land before its contents after a crash.
func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("synth: sync %s: %w", path, err)
	}
	return nil
}

// checkTarget reports whether dir exists as a previous synth checkpoint that may be
// replaced, and fails if it holds anything else.
func checkTarget(dir string) (exists, replace bool, err error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("synth: %w", err)
	}
	if !fi.IsDir() {
		return false, false, fmt.Errorf("%w: %s is a file", ErrExists, dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, false, fmt.Errorf("synth: %w", err)
	}
	if len(entries) == 0 {
		return true, false, nil
	}
	if fi, err := os.Stat(filepath.Join(dir, MarkerFile)); err == nil && fi.Mode().IsRegular() {
		return true, true, nil
	}
	return false, false, fmt.Errorf("%w: %s holds %q and no %s, refusing to overwrite", ErrExists, dir, entries[0].Name(), MarkerFile)
}

// atomicDir runs build on a fresh temporary directory beside dir and then puts it in
// dir's place. On any failure the temporary directory is removed and dir is untouched.
func atomicDir(dir string, build func(tmp string) error) (err error) {
	if dir == "" {
		return fmt.Errorf("%w: empty output directory", ErrOptions)
	}
	// Absolute, so that "." or "out/" still have a parent to build beside.
	if dir, err = filepath.Abs(dir); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	// Replace the directory a symlink points to, not the link itself.
	if target, err := filepath.EvalSymlinks(dir); err == nil {
		dir = target
	}
	exists, replace, err := checkTarget(dir)
	if err != nil {
		return err
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".synth-*")
	if err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	// MkdirTemp makes 0700; a checkpoint is shared read-only data like a download.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	if err := build(tmp); err != nil {
		return err
	}
	if err := syncPath(tmp); err != nil {
		return err
	}
	switch {
	case replace:
		// Two renames: a crash between them leaves the old checkpoint beside dir under a
		// dot name, never a mix of old and new files in dir.
		old := tmp + ".old"
		if err := os.Rename(dir, old); err != nil {
			return fmt.Errorf("synth: move old checkpoint aside: %w", err)
		}
		if err := os.Rename(tmp, dir); err != nil {
			if rerr := os.Rename(old, dir); rerr != nil {
				return fmt.Errorf("synth: install checkpoint: %w (old checkpoint left at %s: %w)", err, old, rerr)
			}
			return fmt.Errorf("synth: install checkpoint: %w", err)
		}
		// The new checkpoint is in place; a leftover dot directory is only litter.
		_ = os.RemoveAll(old)
	case exists:
		// Empty directory: POSIX rename replaces it; the Remove keeps this portable and
		// fails (leaving dir alone) if something appeared in it meanwhile.
		if err := os.Remove(dir); err != nil {
			return fmt.Errorf("synth: %w", err)
		}
		fallthrough
	default:
		if err := os.Rename(tmp, dir); err != nil {
			return fmt.Errorf("synth: install checkpoint: %w", err)
		}
	}
	return syncPath(parent)
}
