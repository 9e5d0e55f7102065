package proto

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

func sampleBatch(t testing.TB) *ExpertBatch {
	b := &ExpertBatch{V: Version, Layer: 3, Mode: ModePairs, OutDType: BF16,
		RowPtr: I32s{0, 2, 3}, Experts: I32s{1, 5, 2}, Weights: F32s{0.25, 0.75, 1}, Tokens: I32s{7, 9}}
	if err := b.X.SetF32(F32, []float32{1, 2, 3, 4, 5, 6}, 2, 3); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExpertBatchRoundTrip(t *testing.T) {
	b := sampleBatch(t)
	data, err := Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var got ExpertBatch
	if err := DecodeExpertBatch(data, &got, 8); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, b) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, *b)
	}
	// The tensor travels as a bin: its raw little-endian bytes stand verbatim in the body.
	if !bytes.Contains(data, b.X.Data) {
		t.Fatal("tensor data is not carried as a raw bin")
	}
}

func TestExpertResultRoundTrip(t *testing.T) {
	b := sampleBatch(t)
	r := &ExpertResult{V: Version, Layer: 3, QueueNanos: 5, ComputeNanos: 9}
	y := make([]float32, 9)
	for i := range y {
		y[i] = float32(i) / 3
	}
	if err := r.Y.SetF32(F32, y, 3, 3); err != nil {
		t.Fatal(err)
	}
	data, err := Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var got ExpertResult
	if err := DecodeExpertResult(data, &got, b); err != nil {
		t.Fatal(err)
	}
	vals, err := got.Y.F32(nil)
	if err != nil || !reflect.DeepEqual(vals, y) {
		t.Fatalf("values %v (%v), want %v", vals, err, y)
	}
	// The same result is wrong for a reduce-mode batch (3 rows where 2 are expected).
	b.Mode = ModeReduce
	if err := DecodeExpertResult(data, &got, b); !errors.Is(err, ErrDecode) {
		t.Fatalf("shape mismatch not caught: %v", err)
	}
}

func TestBatchValidate(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(b *ExpertBatch)
		want   string
	}{
		{"version", func(b *ExpertBatch) { b.V = 99 }, "version"},
		{"mode", func(b *ExpertBatch) { b.Mode = 7 }, "mode"},
		{"dtype", func(b *ExpertBatch) { b.OutDType = 0 }, "dtype"},
		{"short data", func(b *ExpertBatch) { b.X.Data = b.X.Data[:5] }, "holds 5 bytes"},
		{"rank", func(b *ExpertBatch) { b.X.Shape = []int64{6} }, "want [rows, hidden]"},
		{"rowptr count", func(b *ExpertBatch) { b.RowPtr = I32s{0, 3} }, "row pointers"},
		{"rowptr start", func(b *ExpertBatch) { b.RowPtr = I32s{1, 2, 3} }, "first row pointer"},
		{"rowptr order", func(b *ExpertBatch) { b.RowPtr = I32s{0, 3, 2} }, "decrease"},
		{"pairs", func(b *ExpertBatch) { b.Weights = b.Weights[:2] }, "pairs"},
		{"tokens", func(b *ExpertBatch) { b.Tokens = I32s{1} }, "token indices"},
		{"expert range", func(b *ExpertBatch) { b.Experts[0] = 8 }, "expert 8"},
		{"negative expert", func(b *ExpertBatch) { b.Experts[0] = -1 }, "expert -1"},
		{"negative shape", func(b *ExpertBatch) { b.X.Shape = []int64{-2, -3} }, "invalid"},
		{"huge shape", func(b *ExpertBatch) { b.X.Shape = []int64{math.MaxInt64, 2} }, "invalid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := sampleBatch(t)
			c.mutate(b)
			err := b.Validate(8)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to mention %q", err, c.want)
			}
		})
	}
	if err := sampleBatch(t).Validate(8); err != nil {
		t.Fatalf("valid batch rejected: %v", err)
	}
}

func TestDecodeRejectsGarbage(t *testing.T) {
	good, err := Marshal(sampleBatch(t))
	if err != nil {
		t.Fatal(err)
	}
	inputs := map[string][]byte{
		"empty":    nil,
		"nil":      {0xc0},
		"map":      {0x80},
		"trailing": append(append([]byte{}, good...), 0x01),
	}
	for i := 1; i < len(good); i += 7 {
		inputs["truncated"+string(rune('a'+i%26))] = good[:i]
	}
	for name, in := range inputs {
		var b ExpertBatch
		err := DecodeExpertBatch(in, &b, 0)
		// A nil or empty map decodes to a zero batch, which fails on its version.
		if !errors.Is(err, ErrDecode) && CodeOf(err) != CodeVersion {
			t.Errorf("%s: err = %v, want ErrDecode or a version error", name, err)
		}
	}
}

func TestCardStatusRoundTrip(t *testing.T) {
	s := &CardStatus{V: Version, Card: "d1-c0", Daemon: "d1", Device: "cpu:0", MemTotal: 1 << 30, MemUsed: 123,
		Experts: []ExpertState{{Layer: 1, Expert: 4, State: StateReady}, {Layer: 2, Expert: 0, State: StateLoading}},
		Queue:   2, TokensPerSec: 1500, Beat: 42}
	data, err := Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var got CardStatus
	if err := DecodeCardStatus(data, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, s) {
		t.Fatalf("got %+v want %+v", got, *s)
	}
	s.Card = "d1.c0"
	data, _ = Marshal(s)
	if err := DecodeCardStatus(data, &got); !errors.Is(err, ErrDecode) {
		t.Fatalf("dotted card id accepted: %v", err)
	}
}

func TestConversions(t *testing.T) {
	cases := []struct {
		in         float32
		bf16, f16  uint16
		backBF, bF float32
	}{
		{1, 0x3f80, 0x3c00, 1, 1},
		{-2, 0xc000, 0xc000, -2, -2},
		{0, 0, 0, 0, 0},
		{65504, 0x4780, 0x7bff, 65536, 65504},
		{1e-7, 0x33d7, 0x0002, math.Float32frombits(0x33d70000), 1.1920929e-07},
		{float32(math.Inf(1)), 0x7f80, 0x7c00, float32(math.Inf(1)), float32(math.Inf(1))},
		{1 + 1.0/256, 0x3f80, 0x3c04, 1, 1.00390625}, // bf16 tie rounds to even
	}
	for _, c := range cases {
		if got := f32ToBF16(c.in); got != c.bf16 {
			t.Errorf("bf16(%g) = %#x want %#x", c.in, got, c.bf16)
		}
		if got := f32ToF16(c.in); got != c.f16 {
			t.Errorf("f16(%g) = %#x want %#x", c.in, got, c.f16)
		}
		if got := math.Float32frombits(uint32(c.bf16) << 16); got != c.backBF {
			t.Errorf("bf16 back %g want %g", got, c.backBF)
		}
		if got := f16ToF32(c.f16); got != c.bF {
			t.Errorf("f16 back %g want %g", got, c.bF)
		}
	}
	if !math.IsNaN(float64(f16ToF32(f32ToF16(float32(math.NaN()))))) {
		t.Error("f16 NaN lost")
	}
	if v := math.Float32frombits(uint32(f32ToBF16(float32(math.NaN()))) << 16); !math.IsNaN(float64(v)) {
		t.Error("bf16 NaN lost")
	}
}

func TestSubjects(t *testing.T) {
	cases := map[string]string{
		GenSubject("Qwen3-30B-A3B"):      "moe.v1.Qwen3-30B-A3B.gen",
		CardSubject("org/model.v2", "c"): "moe.v1.org_model_v2.card.c",
		CancelSubject("m", "r1"):         "moe.v1.m.cancel.r1",
		LoadSubject("m"):                 "moe.v1.m.load",
		CardWildcard("m"):                "moe.v1.m.card.*",
		Bucket("a b"):                    "moemesh_a_b",
		CardKey("d1-c0"):                 "card.d1-c0",
		AssignKey("d1-c0"):               "assign.d1-c0",
	}
	for got, want := range cases {
		if got != want {
			t.Errorf("got %q want %q", got, want)
		}
	}
	if id, ok := CardIDFromKey("card.x1"); !ok || id != "x1" {
		t.Errorf("CardIDFromKey = %q %v", id, ok)
	}
	if _, ok := CardIDFromKey("assign.x1"); ok {
		t.Error("assign key taken for a card key")
	}
	for _, bad := range []string{"", "a.b", "a*", "a>", "a b"} {
		if ValidToken(bad) == nil {
			t.Errorf("ValidToken(%q) accepted", bad)
		}
	}
}

func TestErrorCodes(t *testing.T) {
	e, ok := ParseError("404", "expert 3/7 not on card")
	if !ok || !errors.Is(e, ErrNotFound) || !e.Code.Retryable() {
		t.Fatalf("404 parsed as %v", e)
	}
	if _, ok := ParseError("", ""); ok {
		t.Fatal("empty code parsed")
	}
	e, _ = ParseError("x", "boom")
	if e.Code != CodeInternal {
		t.Fatalf("garbage code → %v", e.Code)
	}
	if CodeBadRequest.Retryable() || CodeVersion.Retryable() {
		t.Fatal("permanent codes marked retryable")
	}
	if CodeOf(errors.Join(errors.New("x"), ErrDecode)) != CodeBadRequest {
		t.Fatal("decode errors must map to 400")
	}
}

// TestDecodeBoundsAllocation: a header that claims more than the message holds is an error,
// decided before anything of that size is allocated.
func TestDecodeBoundsAllocation(t *testing.T) {
	cases := map[string][]byte{
		"bin32 length":  []byte("\x95\x010\x930\x9200\xc6\xc6\x00\xc6\xc60o00"),
		"array32 shape": []byte("\x95\x01\x03\x93\x01\xdd\xdd\xdd\xdd\xdd\x92\xff\xff\xc4\x93\x01\x92"),
		"rowptr bin":    []byte("\x99\x01\x00\x00\x01\x93\x01\x92\x00\x00\xc4\x00\xc6\x7f\xff\xff\xff"),
	}
	for name, data := range cases {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		var r ExpertResult
		errR := DecodeExpertResult(data, &r, sampleBatch(t))
		var b ExpertBatch
		errB := DecodeExpertBatch(data, &b, 0)
		runtime.ReadMemStats(&after)
		if errR == nil || errB == nil {
			t.Errorf("%s: decoded (%v, %v)", name, errR, errB)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
			t.Errorf("%s: decoding allocated %d bytes", name, grew)
		}
	}
}

func TestTenantPairs(t *testing.T) {
	in := map[string]int{"acme": 12, "b=c&d": 3, "": 1, "中文": 0}
	got, err := ParseTenantPairs(FormatTenantPairs(in))
	if err != nil || len(got) != len(in) {
		t.Fatalf("%v %v", got, err)
	}
	for k, v := range in {
		if got[k] != v {
			t.Fatalf("%q: %d, want %d", k, got[k], v)
		}
	}
	for _, bad := range []string{"a=x", "a=-1", "%zz=1"} {
		if _, err := ParseTenantPairs(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
