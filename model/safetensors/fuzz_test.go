package safetensors

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

// fuzzSeeds are valid and nearly valid files for the fuzzers to mutate.
func fuzzSeeds() [][]byte {
	var buf bytes.Buffer
	_ = Encode(&buf, []Tensor{
		{"w.weight", F8E4M3, []int64{2, 4}, []byte{0x38, 0x7e, 1, 2, 3, 4, 5, 6}},
		{"w.weight_scale_inv", F32, []int64{1, 1}, f32Bytes(2)},
		{"e.gate_up_proj", BF16, []int64{2, 2, 2}, make([]byte, 16)},
		{"p.weight", I8, []int64{1, 16}, make([]byte, 16)},
		{"p.scale", F8E8M0, []int64{1, 1}, []byte{127}},
		{"f4", F4, []int64{4}, []byte{0x12, 0x34}},
		{"s", I64, nil, make([]byte, 8)},
	}, map[string]string{"format": "pt"})
	return [][]byte{
		buf.Bytes(),
		rawFile("{}      ", nil, -1),
		rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8), -1),
		rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{}}`, make([]byte, 8), -1),
		rawFile(`{"__metadata__":{"k":"v"},"z":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}`, nil, -1),
		rawFile(`{"a":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[0,3]}}`, make([]byte, 3), -1),
		{8, 0, 0, 0, 0, 0, 0, 0},
	}
}

// FuzzOpenFile: arbitrary bytes as a file must open or fail with an error, never panic;
// an opened file must serve every tensor, and re-encoding it must give an equal file.
func FuzzOpenFile(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	// One directory per worker process, files overwritten per input: a fresh TempDir
	// (and WriteFile's fsyncs) per input would make the fuzzer disk-bound.
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := writeTemp(t, dir, "f.safetensors", data)
		ck, err := Open(p)
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error %v wraps neither ErrFormat nor ErrUnsupported", err)
			}
			return
		}
		defer ck.Close()
		var again []Tensor
		for _, name := range ck.Names() {
			info, _ := ck.Info(name)
			raw, err := ck.Raw(name)
			if err != nil || int64(len(raw)) != info.Size || info.Offset+info.Size > int64(len(data)) {
				t.Fatalf("%s: Raw %d bytes, %v; info %+v", name, len(raw), err, info)
			}
			if _, err := ck.F32(name); err != nil && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("%s: F32: %v", name, err)
			}
			if len(info.Shape) > 0 {
				if _, _, err := ck.Rows(name, -1, 0, 0); err != nil && !errors.Is(err, ErrUnsupported) {
					t.Fatalf("%s: Rows: %v", name, err)
				}
				if _, err := ck.RowsF32(name, -1, 0, 0); err != nil && !errors.Is(err, ErrUnsupported) {
					t.Fatalf("%s: RowsF32: %v", name, err)
				}
			}
			again = append(again, Tensor{name, info.DType, info.Shape, bytes.Clone(raw)})
		}
		var buf bytes.Buffer
		if err := Encode(&buf, again, nil); err != nil {
			t.Fatalf("re-encoding a valid file: %v", err)
		}
		p2 := writeTemp(t, dir, "again.safetensors", buf.Bytes())
		ck2, err := Open(p2)
		if err != nil {
			t.Fatalf("re-encoded file does not open: %v", err)
		}
		defer ck2.Close()
		for _, tt := range again {
			raw, err := ck2.Raw(tt.Name)
			info, _ := ck2.Info(tt.Name)
			if err != nil || !bytes.Equal(raw, tt.Data) || info.DType != tt.DType || !slices.Equal(info.Shape, tt.Shape) {
				t.Fatalf("%s changed in the round trip", tt.Name)
			}
		}
	})
}

// FuzzParseHeader: arbitrary header bytes and data lengths must parse or fail with
// ErrFormat; a parsed header must describe tensors tiling [0, dataLen) exactly.
func FuzzParseHeader(f *testing.F) {
	for _, s := range fuzzSeeds() {
		if len(s) >= 8 {
			n := int(min(uint64(len(s)-8), uint64(s[0])|uint64(s[1])<<8))
			f.Add(s[8:8+n], int64(len(s)-8-n))
		}
	}
	f.Add([]byte(`{"a":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8],"x":[[[]]]}}`), int64(8))
	f.Fuzz(func(t *testing.T, hdr []byte, dataLen int64) {
		h, err := parseHeader(hdr, dataLen)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
			return
		}
		var total int64
		for name, info := range h.tensors {
			size, err := byteSize(info.DType, info.Shape)
			if err != nil || size != info.Size || info.Offset < 0 || info.Offset+info.Size > dataLen {
				t.Fatalf("%s: accepted %+v (size %d, %v) for %d data bytes", name, info, size, err, dataLen)
			}
			total += info.Size
		}
		if total != dataLen {
			t.Fatalf("accepted tensors of %d bytes for %d data bytes", total, dataLen)
		}
	})
}
