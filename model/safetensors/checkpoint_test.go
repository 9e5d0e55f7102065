package safetensors

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// modelTensors is a small layer-structured tensor list of mixed sizes and dtypes.
func modelTensors(rng *rand.Rand) []Tensor {
	ts := []Tensor{testTensor(rng, "model.embed_tokens.weight", BF16, 64, 16)}
	for l := 0; l < 4; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		ts = append(ts,
			testTensor(rng, p+"input_layernorm.weight", F32, 16),
			testTensor(rng, p+"mlp.gate.weight", BF16, 8, 16),
			testTensor(rng, p+"mlp.experts.gate_up_proj", BF16, 8, 24, 16),
			testTensor(rng, p+"mlp.experts.down_proj", BF16, 8, 16, 12),
		)
	}
	return append(ts, testTensor(rng, "lm_head.weight", BF16, 64, 16))
}

func TestShardedRoundTrip(t *testing.T) {
	ts := modelTensors(rand.New(rand.NewPCG(3, 4)))
	for _, shards := range []int{1, 2, 3, 5, len(ts)} {
		t.Run(fmt.Sprint(shards), func(t *testing.T) {
			dir := t.TempDir()
			if err := WriteSharded(dir, ts, shards, map[string]string{"format": "pt"}); err != nil {
				t.Fatal(err)
			}
			ck, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			want := make([]string, len(ts))
			for i, tt := range ts {
				want[i] = tt.Name
				raw, err := ck.Raw(tt.Name)
				if err != nil || !bytes.Equal(raw, tt.Data) {
					t.Errorf("%s: Raw %v", tt.Name, err)
				}
			}
			slices.Sort(want)
			if !slices.Equal(ck.Names(), want) {
				t.Errorf("Names = %v, want %v", ck.Names(), want)
			}
			if len(ck.Files()) != shards {
				t.Errorf("%d files, want %d", len(ck.Files()), shards)
			}
			if shards == 1 {
				if _, err := os.Stat(filepath.Join(dir, SingleFile)); err != nil {
					t.Error(err)
				}
				return
			}
			checkIndex(t, dir, ts, shards)
		})
	}
}

// checkIndex reads the index as plain JSON: file names, total size, whole tensors, byte
// balance and layer locality.
func checkIndex(t *testing.T, dir string, ts []Tensor, shards int) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, IndexFile))
	if err != nil {
		t.Fatal(err)
	}
	var ix struct {
		Metadata struct {
			TotalSize int64 `json:"total_size"`
		} `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &ix); err != nil {
		t.Fatal(err)
	}
	var total int64
	perShard := map[string]int64{}
	for i, tt := range ts {
		total += int64(len(tt.Data))
		perShard[ix.WeightMap[tt.Name]] += int64(len(tt.Data))
		// Contiguous split: shard numbers never decrease along the input order.
		if i > 0 && ix.WeightMap[tt.Name] < ix.WeightMap[ts[i-1].Name] {
			t.Errorf("%s in %s after %s in %s", tt.Name, ix.WeightMap[tt.Name], ts[i-1].Name, ix.WeightMap[ts[i-1].Name])
		}
	}
	if ix.Metadata.TotalSize != total || len(ix.WeightMap) != len(ts) {
		t.Errorf("index total %d for %d tensors, want %d for %d", ix.Metadata.TotalSize, len(ix.WeightMap), total, len(ts))
	}
	var biggest int64
	for _, tt := range ts {
		biggest = max(biggest, int64(len(tt.Data)))
	}
	for i := 0; i < shards; i++ {
		name := ShardName(i, shards)
		if _, ok := perShard[name]; !ok {
			t.Errorf("shard %s holds no tensor", name)
		}
		// Midpoint assignment keeps each shard within one tensor of the ideal share.
		if dev := perShard[name] - total/int64(shards); dev > biggest || -dev > biggest {
			t.Errorf("shard %s holds %d bytes, ideal %d (largest tensor %d)", name, perShard[name], total/int64(shards), biggest)
		}
	}
	if !strings.HasSuffix(string(b), "}\n") || !strings.Contains(string(b), "\n  \"metadata\": {") {
		t.Errorf("index is not indented JSON with a final newline:\n%s", b)
	}
}

func TestOpenErrors(t *testing.T) {
	ts := modelTensors(rand.New(rand.NewPCG(5, 6)))
	sharded := func(t *testing.T) string {
		dir := t.TempDir()
		if err := WriteSharded(dir, ts, 3, nil); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	editIndex := func(t *testing.T, dir string, edit func(string) string) {
		p := filepath.Join(dir, IndexFile)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(edit(string(b))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name  string
		setup func(t *testing.T) string
		is    error
		want  string
	}{
		{"missing shard", func(t *testing.T) string {
			dir := sharded(t)
			os.Remove(filepath.Join(dir, ShardName(1, 3)))
			return dir
		}, fs.ErrNotExist, ShardName(1, 3)},
		{"tensor not in shard", func(t *testing.T) string {
			dir := sharded(t)
			editIndex(t, dir, func(s string) string {
				return strings.Replace(s, `"lm_head.weight": "`+ShardName(2, 3), `"lm_head.weight": "`+ShardName(0, 3), 1)
			})
			return dir
		}, ErrFormat, `tensor "lm_head.weight" to ` + ShardName(0, 3) + `, which does not hold it`},
		{"unknown tensor", func(t *testing.T) string {
			dir := sharded(t)
			editIndex(t, dir, func(s string) string {
				return strings.Replace(s, `"weight_map": {`, `"weight_map": {"ghost.weight": "`+ShardName(0, 3)+`",`, 1)
			})
			return dir
		}, ErrFormat, `"ghost.weight"`},
		{"duplicate weight_map key", func(t *testing.T) string {
			dir := sharded(t)
			editIndex(t, dir, func(s string) string {
				return strings.Replace(s, `"weight_map": {`, `"weight_map": {"lm_head.weight": "`+ShardName(0, 3)+`",`, 1)
			})
			return dir
		}, ErrFormat, `"lm_head.weight" twice`},
		{"shard outside dir", func(t *testing.T) string {
			dir := sharded(t)
			editIndex(t, dir, func(s string) string { return strings.ReplaceAll(s, ShardName(2, 3), "../"+ShardName(2, 3)) })
			return dir
		}, ErrFormat, "not a file inside"},
		{"index not json", func(t *testing.T) string {
			dir := sharded(t)
			editIndex(t, dir, func(string) string { return "{" })
			return dir
		}, ErrFormat, IndexFile},
		{"no weight_map", func(t *testing.T) string {
			dir := sharded(t)
			editIndex(t, dir, func(string) string { return `{"metadata": {}}` })
			return dir
		}, ErrFormat, "no weight_map"},
		{"weight_map of numbers", func(t *testing.T) string {
			dir := sharded(t)
			editIndex(t, dir, func(string) string { return `{"weight_map": {"a": 1}}` })
			return dir
		}, ErrFormat, "want a string"},
		{"corrupt shard", func(t *testing.T) string {
			dir := sharded(t)
			p := filepath.Join(dir, ShardName(0, 3))
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-1], 0o644)
			return dir
		}, ErrFormat, ShardName(0, 3)},
		{"empty dir", func(t *testing.T) string { return t.TempDir() }, fs.ErrNotExist, "no model.safetensors.index.json"},
		{"several files, no index", func(t *testing.T) string {
			dir := sharded(t)
			os.Remove(filepath.Join(dir, IndexFile))
			return dir
		}, ErrFormat, "but no " + IndexFile},
		{"missing dir", func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, fs.ErrNotExist, "nope"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := c.setup(t)
			ck, err := Open(dir)
			if err == nil {
				ck.Close()
				t.Fatal("Open succeeded, want an error")
			}
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Open = %v\nwant %v containing %q", err, c.is, c.want)
			}
		})
	}
}

// TestOpenSingle: the only *.safetensors file of a directory, or a file path.
func TestOpenSingle(t *testing.T) {
	dir := t.TempDir()
	ts := []Tensor{{"a", F32, []int64{2}, f32Bytes(1, 2)}}
	p := filepath.Join(dir, "consolidated.safetensors")
	if err := WriteFile(p, ts, nil); err != nil {
		t.Fatal(err)
	}
	for _, arg := range []string{dir, p} {
		ck, err := Open(arg)
		if err != nil {
			t.Fatal(err)
		}
		v, err := ck.F32("a")
		if err != nil || !sameFloats(v, []float32{1, 2}) {
			t.Errorf("Open(%s): F32 = %v, %v", arg, v, err)
		}
		if _, err := ck.Raw("b"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Raw(missing) = %v, want ErrNotFound", err)
		}
		if err := ck.Close(); err != nil {
			t.Error(err)
		}
		if _, err := ck.Raw("a"); !errors.Is(err, ErrClosed) {
			t.Errorf("Raw after Close = %v, want ErrClosed", err)
		}
		if err := ck.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	}
}

func TestWriteShardedRejects(t *testing.T) {
	ts := modelTensors(rand.New(rand.NewPCG(7, 8)))
	for _, n := range []int{0, -1, len(ts) + 1} {
		if err := WriteSharded(t.TempDir(), ts, n, nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("WriteSharded(%d shards) = %v, want ErrInvalid", n, err)
		}
	}
	dir := t.TempDir()
	bad := append(slices.Clone(ts), Tensor{"x", F32, []int64{3}, nil})
	if err := WriteSharded(dir, bad, 2, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("WriteSharded(bad tensor) = %v, want ErrInvalid", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a refused WriteSharded wrote %d files", len(entries))
	}
}

// fused builds a [E, R, C] U16 tensor whose element (e, r, c) is e·10000 + r·100 + c, so
// any byte range identifies the rows it came from.
func fused(e, r, c int) Tensor {
	var data []byte
	for i := 0; i < e; i++ {
		for j := 0; j < r; j++ {
			for k := 0; k < c; k++ {
				v := uint16(i*10000 + j*100 + k)
				data = append(data, byte(v), byte(v>>8))
			}
		}
	}
	return Tensor{"experts.gate_up_proj", U16, []int64{int64(e), int64(r), int64(c)}, data}
}

func TestRows(t *testing.T) {
	const E, I, H = 4, 3, 5
	ts := []Tensor{fused(E, 2*I, H), {"w2d", U16, []int64{4, 2}, fused(1, 4, 2).Data},
		{"s", F32, nil, f32Bytes(1)}, {"f4", F4, []int64{2, 3}, []byte{1, 2, 3}}}
	dir := t.TempDir()
	if err := WriteFile(filepath.Join(dir, SingleFile), ts, nil); err != nil {
		t.Fatal(err)
	}
	ck, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	decode := func(b []byte) []float32 {
		v, err := DecodeF32(U16, b)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	expect := func(e, r0, r1, cols int) []float32 {
		var out []float32
		for r := r0; r < r1; r++ {
			for c := 0; c < cols; c++ {
				out = append(out, float32(e*10000+r*100+c))
			}
		}
		return out
	}
	for _, c := range []struct {
		name          string
		tensor        string
		index, r0, r1 int
		want          []float32
	}{
		{"gate of expert 2", "experts.gate_up_proj", 2, 0, I, expect(2, 0, I, H)},
		{"up of expert 2", "experts.gate_up_proj", 2, I, 2 * I, expect(2, I, 2*I, H)},
		{"all rows of expert 3", "experts.gate_up_proj", 3, 0, 0, expect(3, 0, 2*I, H)},
		{"first expert", "experts.gate_up_proj", 0, 1, 2, expect(0, 1, 2, H)},
		{"2-D rows", "w2d", -1, 1, 3, expect(0, 1, 3, 2)},
		{"2-D all", "w2d", -1, 0, 0, expect(0, 0, 4, 2)},
		{"empty range", "w2d", -1, 2, 2, nil},
		{"3-D as whole slices", "experts.gate_up_proj", -1, 1, 2, expect(1, 0, 2*I, H)},
	} {
		raw, info, err := ck.Rows(c.tensor, c.index, c.r0, c.r1)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if info.Name != c.tensor || cap(raw) != len(raw) {
			t.Errorf("%s: info %+v, cap %d len %d", c.name, info, cap(raw), len(raw))
		}
		if got := decode(raw); !sameFloats(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
		f, err := ck.RowsF32(c.tensor, c.index, c.r0, c.r1)
		if err != nil || !sameFloats(f, c.want) {
			t.Errorf("%s: RowsF32 = %v, %v", c.name, f, err)
		}
	}
	for _, c := range []struct {
		name          string
		tensor        string
		index, r0, r1 int
		want          error
	}{
		{"expert out of range", "experts.gate_up_proj", E, 0, 0, ErrInvalid},
		{"rows past end", "experts.gate_up_proj", 0, I, 2*I + 1, ErrInvalid},
		{"reversed rows", "w2d", -1, 3, 1, ErrInvalid},
		{"negative row", "w2d", -1, -1, 1, ErrInvalid},
		{"bad index", "w2d", -2, 0, 0, ErrInvalid},
		{"slice of a matrix's rows", "s", 0, 0, 0, ErrInvalid},
		{"rows of a scalar", "s", -1, 0, 0, ErrInvalid},
		{"F4 odd row", "f4", -1, 1, 2, ErrUnsupported},
		{"missing", "nope", -1, 0, 0, ErrNotFound},
	} {
		if _, _, err := ck.Rows(c.tensor, c.index, c.r0, c.r1); !errors.Is(err, c.want) {
			t.Errorf("%s: Rows = %v, want %v", c.name, err, c.want)
		}
		if _, err := ck.RowsF32(c.tensor, c.index, c.r0, c.r1); !errors.Is(err, c.want) {
			t.Errorf("%s: RowsF32 = %v, want %v", c.name, err, c.want)
		}
	}
	// The offset in Info locates the bytes in the file, for readers that bypass mmap.
	info, _ := ck.Info("experts.gate_up_proj")
	file, _ := os.ReadFile(info.File)
	raw, _, _ := ck.Rows("experts.gate_up_proj", 1, 0, 0)
	start := info.Offset + 1*2*I*H*2
	if !bytes.Equal(file[start:start+int64(len(raw))], raw) {
		t.Error("Info.Offset does not locate the tensor in the file")
	}
}
