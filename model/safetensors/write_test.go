package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func f32Bytes(vals ...float32) []byte {
	var b []byte
	for _, v := range vals {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// TestEncodeGolden compares with the byte vectors of the reference implementation's own
// tests (huggingface/safetensors tensor.rs: test_serialization, test_empty,
// test_serialization_forced_alignement).
func TestEncodeGolden(t *testing.T) {
	data := f32Bytes(0, 1, 2, 3, 4, 5)
	for _, c := range []struct {
		name    string
		tensors []Tensor
		meta    map[string]string
		header  string
	}{
		{"serialization", []Tensor{{"attn.0", F32, []int64{1, 2, 3}, data}}, nil,
			`{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}`},
		{"empty", nil, nil, "{}      "},
		{"empty with metadata", nil, map[string]string{"framework": "pt"}, `{"__metadata__":{"framework":"pt"}}     `},
		{"forced alignment", []Tensor{{"attn0", F32, []int64{1, 1, 2, 3}, data}}, nil,
			`{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       `},
	} {
		var buf bytes.Buffer
		if err := Encode(&buf, c.tensors, c.meta); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		want := rawFile(c.header, nil, -1)
		for _, tt := range c.tensors {
			want = append(want, tt.Data...)
		}
		if !bytes.Equal(buf.Bytes(), want) {
			t.Errorf("%s:\n got %q\nwant %q", c.name, buf.Bytes(), want)
		}
	}
}

// TestEncodeOrder: descending alignment (enum order), then name, as the reference.
func TestEncodeOrder(t *testing.T) {
	ts := []Tensor{
		{"b8", U8, []int64{1}, []byte{1}},
		{"a16", BF16, []int64{1}, []byte{1, 2}},
		{"z64", I64, []int64{1}, make([]byte, 8)},
		{"a8", I8, []int64{1}, []byte{3}},
		{"c32", F32, []int64{1}, make([]byte, 4)},
		{"a64", F64, []int64{1}, make([]byte, 8)},
		{"f4", F4, []int64{2}, []byte{0x21}},
	}
	var buf bytes.Buffer
	if err := Encode(&buf, ts, nil); err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(buf.Bytes())
	h, err := parseHeader(buf.Bytes()[8:8+n], int64(buf.Len())-8-int64(n))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for name := range h.tensors {
		got = append(got, name)
	}
	slices.SortFunc(got, func(a, b string) int { return int(h.tensors[a].Offset - h.tensors[b].Offset) })
	want := []string{"z64", "a64", "c32", "a16", "a8", "b8", "f4"}
	if !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
}

// testTensor makes a tensor of dt with random bytes (a valid encoding for every dtype).
func testTensor(rng *rand.Rand, name string, dt DType, shape ...int64) Tensor {
	size, err := byteSize(dt, shape)
	if err != nil {
		panic(err)
	}
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rng.IntN(256))
	}
	return Tensor{name, dt, shape, data}
}

// TestRoundTripEveryDType writes one tensor of every dtype (plus rank-0 and empty ones),
// reopens the file and checks bytes, infos, alignment and decoded values.
func TestRoundTripEveryDType(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var ts []Tensor
	for _, dt := range DTypes() {
		shape := []int64{3, 5}
		switch dt {
		case F4:
			shape = []int64{3, 4}
		case F6E2M3, F6E3M2:
			shape = []int64{2, 4} // 8 × 6 bits = 6 bytes
		}
		ts = append(ts, testTensor(rng, "t."+string(dt), dt, shape...))
	}
	ts = append(ts, testTensor(rng, "scalar", F32), testTensor(rng, "empty", BF16, 0, 7))
	dir := t.TempDir()
	path := filepath.Join(dir, "m.safetensors")
	meta := map[string]string{"format": "pt", "note": `quotes " and <html> & é`}
	if err := WriteFile(path, ts, meta); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the file (no temporary left)", len(entries))
	}
	ck, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := f.Metadata(); got["note"] != meta["note"] || got["format"] != "pt" {
		t.Errorf("metadata %v, want %v", got, meta)
	}
	if len(ck.Names()) != len(ts) {
		t.Errorf("%d names, want %d", len(ck.Names()), len(ts))
	}
	for _, want := range ts {
		info, ok := ck.Info(want.Name)
		if !ok {
			t.Errorf("%s missing", want.Name)
			continue
		}
		if info.DType != want.DType || !slices.Equal(info.Shape, want.Shape) || info.File != path ||
			info.Size != int64(len(want.Data)) {
			t.Errorf("%s: info %+v", want.Name, info)
		}
		if info.Offset%int64(want.DType.alignment()) != 0 {
			t.Errorf("%s: offset %d not aligned to %d", want.Name, info.Offset, want.DType.alignment())
		}
		raw, err := ck.Raw(want.Name)
		if err != nil || !bytes.Equal(raw, want.Data) {
			t.Errorf("%s: Raw = %v, %v; want the written bytes", want.Name, raw, err)
		}
		if cap(raw) != len(raw) {
			t.Errorf("%s: Raw capacity %d beyond its length %d", want.Name, cap(raw), len(raw))
		}
		got, err := ck.F32(want.Name)
		exp, eerr := DecodeF32(want.DType, want.Data)
		if (err == nil) != (eerr == nil) {
			t.Errorf("%s: F32 error %v, DecodeF32 error %v", want.Name, err, eerr)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrUnsupported) {
				t.Errorf("%s: F32 error %v, want ErrUnsupported", want.Name, err)
			}
			continue
		}
		if int64(len(got)) != info.Numel() || !sameFloats(got, exp) {
			t.Errorf("%s: F32 = %v, want %v", want.Name, got, exp)
		}
	}
}

func sameFloats(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func TestWriteFileRejects(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.safetensors")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	ok := Tensor{"a", F32, []int64{2}, make([]byte, 8)}
	for _, c := range []struct {
		name string
		ts   []Tensor
		meta map[string]string
	}{
		{"short data", []Tensor{{"a", F32, []int64{3}, make([]byte, 8)}}, nil},
		{"unknown dtype", []Tensor{{"a", "F12", []int64{2}, make([]byte, 8)}}, nil},
		{"negative dim", []Tensor{{"a", F32, []int64{-2}, nil}}, nil},
		{"sub-byte", []Tensor{{"a", F4, []int64{3}, make([]byte, 2)}}, nil},
		{"duplicate", []Tensor{ok, ok}, nil},
		{"empty name", []Tensor{{"", F32, []int64{2}, make([]byte, 8)}}, nil},
		{"metadata name", []Tensor{{"__metadata__", F32, []int64{2}, make([]byte, 8)}}, nil},
		{"bad utf-8 name", []Tensor{{"\xff", F32, []int64{2}, make([]byte, 8)}}, nil},
		{"bad utf-8 metadata", []Tensor{ok}, map[string]string{"k": "\xff"}},
	} {
		err := WriteFile(path, c.ts, c.meta)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: WriteFile = %v, want ErrInvalid", c.name, err)
		}
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("a refused write changed the file to %q", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("refused writes left %d entries", len(entries))
	}
	// A write that fails midway (directory gone) leaves no file behind.
	gone := filepath.Join(dir, "gone", "m.safetensors")
	if err := WriteFile(gone, []Tensor{ok}, nil); err == nil {
		t.Error("WriteFile into a missing directory succeeded")
	}
	// The successful write replaces the old file whole.
	if err := WriteFile(path, []Tensor{ok}, nil); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("written file: %v, mode %v; want 0644", err, fi.Mode())
	}
	if !strings.HasPrefix(ShardName(0, 12), "model-00001-of-00012") {
		t.Errorf("ShardName(0, 12) = %s", ShardName(0, 12))
	}
}
