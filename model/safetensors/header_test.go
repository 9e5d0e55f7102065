package safetensors

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rawFile assembles a safetensors file from a header string and data bytes, with the
// length field set to len(header) (lenField −1), or to lenField as a u64 bit pattern.
func rawFile(header string, data []byte, lenField int64) []byte {
	if lenField == -1 {
		lenField = int64(len(header))
	}
	b := binary.LittleEndian.AppendUint64(nil, uint64(lenField))
	return append(append(b, header...), data...)
}

func writeTemp(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const f32x2 = `"dtype":"F32","shape":[2]`

// TestOpenFileRejects triggers each validation rule of models.md §5.1 with a crafted file:
// each must fail with ErrFormat, naming the file and the problem, and never panic.
func TestOpenFileRejects(t *testing.T) {
	eight := make([]byte, 8)
	for _, c := range []struct {
		name string
		file []byte
		want string // substring of the error
	}{
		{"too short", []byte{1, 2, 3}, "too short"},
		{"header too large", rawFile("{}", nil, MaxHeaderSize+1), "exceeds the 100000000-byte limit"},
		{"header past end", rawFile("{}", nil, 50), "exceeds the 2 bytes"},
		{"length overflows int64", rawFile("{}", nil, -1<<63+1), "limit"},
		{"not utf-8", rawFile("{\"\xff\":1}", nil, -1), "UTF-8"},
		{"not json", rawFile("{", nil, -1), "bad JSON"},
		{"not an object", rawFile("[]", nil, -1), "want \"{\""},
		{"empty header", rawFile("", nil, -1), "bad JSON"},
		{"garbage after object", rawFile("{}x", nil, -1), "after the JSON object"},
		{"second object", rawFile("{} {}", nil, -1), "after the JSON object"},
		{"nul padding", rawFile("{}\x00\x00", nil, -1), "after the JSON object"},
		{"duplicate tensor", rawFile(`{"a":{`+f32x2+`,"data_offsets":[0,8]},"a":{`+f32x2+`,"data_offsets":[0,8]}}`, eight, -1), `key "a" twice`},
		{"duplicate metadata", rawFile(`{"__metadata__":{},"__metadata__":{}}`, nil, -1), `"__metadata__" twice`},
		{"duplicate field", rawFile(`{"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, eight, -1), `"dtype" twice`},
		{"duplicate metadata key", rawFile(`{"__metadata__":{"k":"1","k":"2"}}`, nil, -1), `"k" twice`},
		{"metadata value not string", rawFile(`{"__metadata__":{"k":1}}`, nil, -1), "want a string"},
		{"metadata not object", rawFile(`{"__metadata__":["k"]}`, nil, -1), "want an object of strings"},
		{"unknown dtype", rawFile(`{"a":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}}`, eight, -1), `unknown dtype "F12"`},
		{"dtype not string", rawFile(`{"a":{"dtype":32,"shape":[2],"data_offsets":[0,8]}}`, eight, -1), "want a string"},
		{"negative dim", rawFile(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, eight, -1), "non-negative integer"},
		{"fractional dim", rawFile(`{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}`, eight, -1), "non-negative integer"},
		{"exponent dim", rawFile(`{"a":{"dtype":"F32","shape":[2e0],"data_offsets":[0,8]}}`, eight, -1), "non-negative integer"},
		{"string dim", rawFile(`{"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}}`, eight, -1), "non-negative integer"},
		{"huge dim", rawFile(`{"a":{"dtype":"F32","shape":[18446744073709551614],"data_offsets":[0,8]}}`, eight, -1), "below 2^63"},
		{"shape overflow", rawFile(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, eight, -1), "overflows"},
		{"bytes overflow", rawFile(`{"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}}`, eight, -1), "overflows"},
		{"shape not array", rawFile(`{"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}}`, eight, -1), `want "["`},
		{"no data_offsets", rawFile(`{"a":{`+f32x2+`}}`, eight, -1), `no "data_offsets"`},
		{"no shape", rawFile(`{"a":{"dtype":"F32","data_offsets":[0,8]}}`, eight, -1), `no "shape"`},
		{"three offsets", rawFile(`{"a":{`+f32x2+`,"data_offsets":[0,4,8]}}`, eight, -1), "want [begin, end]"},
		{"end before begin", rawFile(`{"a":{`+f32x2+`,"data_offsets":[8,0]}}`, eight, -1), "end before they begin"},
		{"entry not object", rawFile(`{"a":[1]}`, nil, -1), `want "{"`},
		{"size mismatch", rawFile(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, eight, -1), "is 12 bytes but data_offsets [0, 8] span 8"},
		{"sub-byte", rawFile(`{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}`, []byte{0, 0}, -1), "not a whole number of bytes"},
		{"f6 sub-byte", rawFile(`{"a":{"dtype":"F6_E2M3","shape":[2],"data_offsets":[0,2]}}`, []byte{0, 0}, -1), "not a whole number of bytes"},
		{"gap at start", rawFile(`{"a":{`+f32x2+`,"data_offsets":[4,12]}}`, make([]byte, 12), -1), "gap in the data: bytes [0, 4)"},
		{"gap between", rawFile(`{"a":{`+f32x2+`,"data_offsets":[0,8]},"b":{`+f32x2+`,"data_offsets":[12,20]}}`, make([]byte, 20), -1), `bytes [8, 12) belong to no tensor (next is "b")`},
		{"overlap", rawFile(`{"a":{`+f32x2+`,"data_offsets":[0,8]},"b":{`+f32x2+`,"data_offsets":[4,12]}}`, make([]byte, 12), -1), `tensor "b" at data_offsets [4, 12] overlaps`},
		{"same range twice", rawFile(`{"a":{`+f32x2+`,"data_offsets":[0,8]},"b":{`+f32x2+`,"data_offsets":[0,8]}}`, eight, -1), "overlaps"},
		{"trailing data", rawFile(`{"a":{`+f32x2+`,"data_offsets":[0,8]}}`, make([]byte, 9), -1), "cover 8 bytes of data but the file has 9"},
		{"truncated data", rawFile(`{"a":{`+f32x2+`,"data_offsets":[0,8]}}`, make([]byte, 7), -1), "cover 8 bytes of data but the file has 7"},
		{"empty header with data", rawFile(`{}`, []byte{1}, -1), "cover 0 bytes"},
		{"unknown field bad json", rawFile(`{"a":{`+f32x2+`,"x":[}`, nil, -1), "bad JSON"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := writeTemp(t, t.TempDir(), "m.safetensors", c.file)
			f, err := OpenFile(p)
			if err == nil {
				f.Close()
				t.Fatal("OpenFile succeeded, want an error")
			}
			if !errors.Is(err, ErrFormat) {
				t.Errorf("error %v does not wrap ErrFormat", err)
			}
			if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q should name %s and contain %q", err, p, c.want)
			}
		})
	}
}

// TestOpenFileAccepts covers the legal corners: rank 0, zero-size tensors sharing an
// offset, whitespace around the object, unsorted offsets, unknown entry fields, null
// metadata.
func TestOpenFileAccepts(t *testing.T) {
	for _, c := range []struct {
		name   string
		file   []byte
		tensor string
		shape  []int64
		off    int64 // relative to the data section
		meta   map[string]string
	}{
		{"empty", rawFile("{}", nil, -1), "", nil, 0, nil},
		{"whitespace", rawFile(" \n{} \t\r\n", nil, -1), "", nil, 0, nil},
		{"scalar", rawFile(`{"s":{"dtype":"I32","shape":[],"data_offsets":[0,4]}}`, make([]byte, 4), -1), "s", []int64{}, 0, nil},
		{"zero-size", rawFile(`{"z":{"dtype":"F32","shape":[2,0],"data_offsets":[0,0]},"y":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"a":{`+f32x2+`,"data_offsets":[0,8]}}`, make([]byte, 8), -1), "z", []int64{2, 0}, 0, nil},
		{"zero-size last", rawFile(`{"a":{`+f32x2+`,"data_offsets":[0,8]},"z":{"dtype":"BF16","shape":[0],"data_offsets":[8,8]}}`, make([]byte, 8), -1), "z", []int64{0}, 8, nil},
		{"unsorted", rawFile(`{"b":{`+f32x2+`,"data_offsets":[8,16]},"a":{`+f32x2+`,"data_offsets":[0,8]}}`, make([]byte, 16), -1), "b", []int64{2}, 8, nil},
		{"unknown field", rawFile(`{"a":{"extra":{"deep":[1,{"x":null}]},`+f32x2+`,"data_offsets":[0,8]}}`, make([]byte, 8), -1), "a", []int64{2}, 0, nil},
		{"null metadata", rawFile(`{"__metadata__":null}`, nil, -1), "", nil, 0, nil},
		{"metadata", rawFile(`{"__metadata__":{"format":"pt","b":""}}`, nil, -1), "", nil, 0, map[string]string{"format": "pt", "b": ""}},
		{"zero dim beats overflow", rawFile(`{"a":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}}`, nil, -1), "a", []int64{4294967296, 4294967296, 0}, 0, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := writeTemp(t, t.TempDir(), "m.safetensors", c.file)
			f, err := OpenFile(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if got := f.Metadata(); len(got) != len(c.meta) || (c.meta != nil && got["format"] != c.meta["format"]) {
				t.Errorf("metadata %v, want %v", got, c.meta)
			}
			if c.tensor == "" {
				return
			}
			info, ok := f.Info(c.tensor)
			if !ok {
				t.Fatalf("no tensor %q in %v", c.tensor, f.Names())
			}
			hdrEnd := int64(len(c.file)) - dataLen(t, c.file)
			if info.Offset != hdrEnd+c.off || len(info.Shape) != len(c.shape) || info.File != p {
				t.Errorf("info %+v, want offset %d shape %v", info, hdrEnd+c.off, c.shape)
			}
			raw, err := f.Raw(c.tensor)
			if err != nil || int64(len(raw)) != info.Size {
				t.Errorf("Raw: %d bytes, %v; want %d", len(raw), err, info.Size)
			}
		})
	}
}

func dataLen(t *testing.T, file []byte) int64 {
	n := int64(binary.LittleEndian.Uint64(file))
	return int64(len(file)) - 8 - n
}

func TestOpenFileNotRegular(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenFile(dir); !errors.Is(err, ErrFormat) {
		t.Errorf("OpenFile(dir) = %v, want ErrFormat", err)
	}
	if _, err := OpenFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenFile(missing) = %v, want ErrNotExist", err)
	}
}
