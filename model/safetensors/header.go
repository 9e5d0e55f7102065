package safetensors

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// MaxHeaderSize is the largest header the reference reader accepts (100 MB); a larger
// length field is refused before anything is allocated.
const MaxHeaderSize = 100_000_000

// header is a parsed, validated header. Tensor offsets are relative to the data section.
type header struct {
	tensors  map[string]TensorInfo
	metadata map[string]string
}

// parseHeader parses and validates the JSON header hdr of a file whose data section
// (everything after the header) is dataLen bytes. It checks every rule of models.md §5.1
// that the header alone decides: a UTF-8 JSON object with no duplicate keys, known
// dtypes, non-negative integer shapes and offsets, end−begin = prod(shape)·bits/8 in whole
// bytes, offsets tiling [0, dataLen) without gaps or overlaps, and __metadata__ a map of
// strings. Errors wrap ErrFormat.
func parseHeader(hdr []byte, dataLen int64) (*header, error) {
	if !utf8.Valid(hdr) {
		return nil, fmt.Errorf("%w: header is not valid UTF-8", ErrFormat)
	}
	dec := json.NewDecoder(bytes.NewReader(hdr))
	dec.UseNumber()
	if err := expectDelim(dec, '{', "header"); err != nil {
		return nil, err
	}
	h := &header{tensors: map[string]TensorInfo{}}
	seenMeta := false
	for dec.More() {
		key, err := objectKey(dec, "header")
		if err != nil {
			return nil, err
		}
		if _, dup := h.tensors[key]; dup || (key == "__metadata__" && seenMeta) {
			return nil, fmt.Errorf("%w: header has key %q twice", ErrFormat, key)
		}
		if key == "__metadata__" {
			seenMeta = true
			if h.metadata, err = stringMap(dec, "__metadata__"); err != nil {
				return nil, err
			}
			continue
		}
		info, err := tensorEntry(dec, key)
		if err != nil {
			return nil, err
		}
		h.tensors[key] = info
	}
	if err := expectDelim(dec, '}', "header"); err != nil {
		return nil, err
	}
	// The reference writer pads with spaces; any JSON whitespace is accepted after the
	// object, anything else is a second value or garbage.
	if rest := hdr[dec.InputOffset():]; len(bytes.TrimLeft(rest, " \t\r\n")) != 0 {
		return nil, fmt.Errorf("%w: header has %d bytes of non-whitespace after the JSON object", ErrFormat, len(rest))
	}
	if err := checkLayout(h.tensors, dataLen); err != nil {
		return nil, err
	}
	return h, nil
}

// checkLayout verifies sizes and that the tensors tile the data section exactly.
func checkLayout(tensors map[string]TensorInfo, dataLen int64) error {
	names := make([]string, 0, len(tensors))
	for name, t := range tensors {
		size, err := byteSize(t.DType, t.Shape)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", name, err)
		}
		if t.Size != size {
			return fmt.Errorf("%w: tensor %q: %s %v is %d bytes but data_offsets [%d, %d] span %d",
				ErrFormat, name, t.DType, t.Shape, size, t.Offset, t.Offset+t.Size, t.Size)
		}
		names = append(names, name)
	}
	// Sorted by (begin, end) as the reference reader does; zero-size tensors may share
	// a begin with their successor. The name breaks ties so errors are deterministic.
	slices.SortFunc(names, func(a, b string) int {
		ta, tb := tensors[a], tensors[b]
		if ta.Offset != tb.Offset {
			return cmp.Compare(ta.Offset, tb.Offset)
		}
		if ta.Size != tb.Size {
			return cmp.Compare(ta.Size, tb.Size)
		}
		return cmp.Compare(a, b)
	})
	var cursor int64
	for _, name := range names {
		t := tensors[name]
		switch {
		case t.Offset > cursor:
			return fmt.Errorf("%w: gap in the data: bytes [%d, %d) belong to no tensor (next is %q)",
				ErrFormat, cursor, t.Offset, name)
		case t.Offset < cursor:
			return fmt.Errorf("%w: tensor %q at data_offsets [%d, %d] overlaps the previous tensor ending at %d",
				ErrFormat, name, t.Offset, t.Offset+t.Size, cursor)
		}
		cursor += t.Size
	}
	if cursor != dataLen {
		return fmt.Errorf("%w: tensors cover %d bytes of data but the file has %d after the header",
			ErrFormat, cursor, dataLen)
	}
	return nil
}

// byteSize is prod(shape)·bits/8, refusing overflow and sub-byte remainders.
func byteSize(dt DType, shape []int64) (int64, error) {
	bits := int64(dt.Bits())
	if bits == 0 {
		return 0, fmt.Errorf("%w: unknown dtype %q", ErrFormat, dt)
	}
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("%w: negative dimension in shape %v", ErrFormat, shape)
		}
		if d != 0 && n > math.MaxInt64/d {
			// Keep scanning: a later 0 makes the tensor empty, not overflowing.
			if slices.Contains(shape, 0) {
				return 0, nil
			}
			return 0, fmt.Errorf("%w: shape %v overflows", ErrFormat, shape)
		}
		n *= d
	}
	if n > math.MaxInt64/bits {
		return 0, fmt.Errorf("%w: shape %v of %s overflows", ErrFormat, shape, dt)
	}
	if n*bits%8 != 0 {
		return 0, fmt.Errorf("%w: %d elements of %s (%d bits each) are not a whole number of bytes",
			ErrFormat, n, dt, bits)
	}
	return n * bits / 8, nil
}

// tensorEntry parses {"dtype": s, "shape": [..], "data_offsets": [b, e]}. Unknown keys
// are skipped, as the reference reader does.
func tensorEntry(dec *json.Decoder, name string) (TensorInfo, error) {
	t := TensorInfo{Name: name}
	what := fmt.Sprintf("tensor %q", name)
	if err := expectDelim(dec, '{', what); err != nil {
		return t, err
	}
	seen := map[string]bool{}
	var offsets []int64
	for dec.More() {
		key, err := objectKey(dec, what)
		if err != nil {
			return t, err
		}
		if seen[key] {
			return t, fmt.Errorf("%w: %s has key %q twice", ErrFormat, what, key)
		}
		seen[key] = true
		switch key {
		case "dtype":
			tok, err := token(dec, what+" dtype")
			if err != nil {
				return t, err
			}
			s, ok := tok.(string)
			if !ok {
				return t, fmt.Errorf("%w: %s dtype is %s, want a string", ErrFormat, what, describe(tok))
			}
			if t.DType = DType(s); !t.DType.Valid() {
				return t, fmt.Errorf("%w: %s has unknown dtype %q", ErrFormat, what, s)
			}
		case "shape":
			if t.Shape, err = intArray(dec, what+" shape"); err != nil {
				return t, err
			}
		case "data_offsets":
			if offsets, err = intArray(dec, what+" data_offsets"); err != nil {
				return t, err
			}
			if len(offsets) != 2 {
				return t, fmt.Errorf("%w: %s data_offsets has %d values, want [begin, end]", ErrFormat, what, len(offsets))
			}
		default:
			// Decode (not Token) so that nesting depth is bounded by encoding/json.
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return t, fmt.Errorf("%w: %s key %q: bad JSON: %v", ErrFormat, what, key, err)
			}
		}
	}
	if err := expectDelim(dec, '}', what); err != nil {
		return t, err
	}
	for _, k := range []string{"dtype", "shape", "data_offsets"} {
		if !seen[k] {
			return t, fmt.Errorf("%w: %s has no %q", ErrFormat, what, k)
		}
	}
	if offsets[1] < offsets[0] {
		return t, fmt.Errorf("%w: %s data_offsets [%d, %d] end before they begin", ErrFormat, what, offsets[0], offsets[1])
	}
	if t.Shape == nil {
		t.Shape = []int64{} // rank 0 is legal; keep it distinct from "absent"
	}
	t.Offset, t.Size = offsets[0], offsets[1]-offsets[0]
	return t, nil
}

// intArray parses a JSON array of non-negative integers that fit in int64.
func intArray(dec *json.Decoder, what string) ([]int64, error) {
	if err := expectDelim(dec, '[', what); err != nil {
		return nil, err
	}
	out := []int64{}
	for dec.More() {
		tok, err := token(dec, what)
		if err != nil {
			return nil, err
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, fmt.Errorf("%w: %s[%d] is %s, want a non-negative integer", ErrFormat, what, len(out), describe(tok))
		}
		v, err := strconv.ParseInt(num.String(), 10, 64)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("%w: %s[%d] = %s, want a non-negative integer below 2^63", ErrFormat, what, len(out), num)
		}
		out = append(out, v)
	}
	return out, expectDelim(dec, ']', what)
}

// stringMap parses a JSON object of string values (null: no map), refusing duplicate
// keys.
func stringMap(dec *json.Decoder, what string) (map[string]string, error) {
	tok, err := token(dec, what)
	if err != nil {
		return nil, err
	}
	if tok == nil {
		return nil, nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("%w: %s is %s, want an object of strings", ErrFormat, what, describe(tok))
	}
	m := map[string]string{}
	for dec.More() {
		key, err := objectKey(dec, what)
		if err != nil {
			return nil, err
		}
		if _, dup := m[key]; dup {
			return nil, fmt.Errorf("%w: %s has key %q twice", ErrFormat, what, key)
		}
		tok, err := token(dec, what)
		if err != nil {
			return nil, err
		}
		s, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("%w: %s[%q] is %s, want a string", ErrFormat, what, key, describe(tok))
		}
		m[key] = s
	}
	return m, expectDelim(dec, '}', what)
}

func token(dec *json.Decoder, what string) (json.Token, error) {
	tok, err := dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%w: %s: bad JSON: %v", ErrFormat, what, err)
	}
	return tok, nil
}

func objectKey(dec *json.Decoder, what string) (string, error) {
	tok, err := token(dec, what)
	if err != nil {
		return "", err
	}
	key, ok := tok.(string)
	if !ok { // unreachable with encoding/json (keys are strings), kept for safety
		return "", fmt.Errorf("%w: %s has key %s", ErrFormat, what, describe(tok))
	}
	return key, nil
}

func expectDelim(dec *json.Decoder, want json.Delim, what string) error {
	tok, err := token(dec, what)
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("%w: %s is %s, want %q", ErrFormat, what, describe(tok), string(want))
	}
	return nil
}

// describe names a JSON token for an error message.
func describe(tok json.Token) string {
	switch v := tok.(type) {
	case nil:
		return "null"
	case json.Delim:
		return fmt.Sprintf("%q", string(v))
	case string:
		if r := []rune(v); len(r) > 40 {
			v = string(r[:40]) + "…"
		}
		return fmt.Sprintf("the string %q", v)
	case json.Number:
		return "the number " + v.String()
	case bool:
		return strconv.FormatBool(v)
	}
	return fmt.Sprintf("%v", tok)
}
