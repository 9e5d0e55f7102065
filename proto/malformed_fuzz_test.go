package proto

import (
	"errors"
	"math"
	"strings"
	"testing"
)

// TestMalformedCodes pins the wire code each NATS-facing decoder gives a malformed or
// oversize body: what a responder sends back (mesh.RespondError uses CodeOf) and what a
// gateway maps to HTTP. 400s must also say what is wrong, so they wrap ErrDecode or are a
// *Error with a message. (A body above the server's max payload never reaches a decoder:
// the publisher's mesh.Request fails with 413, see mesh's TestRequestErrors.)
func TestMalformedCodes(t *testing.T) {
	enc := func(v any) []byte {
		b, err := Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	batch := func(mod func(*ExpertBatch)) []byte {
		b := sampleBatch(t)
		mod(b)
		return enc(b)
	}
	result := func(mod func(*ExpertResult)) []byte {
		r := &ExpertResult{V: Version, Layer: 3}
		if err := r.Y.SetF32(BF16, make([]float32, 9), 3, 3); err != nil {
			t.Fatal(err)
		}
		mod(r)
		return enc(r)
	}
	gen := func(mod func(*GenerateRequest)) []byte {
		r := &GenerateRequest{V: Version, ID: "r1", Tenant: "t", Prompt: I32s{1, 2}, MaxTokens: 4, Inbox: "_INBOX.x"}
		mod(r)
		return enc(r)
	}
	decBatch := func(d []byte) error { var b ExpertBatch; return DecodeExpertBatch(d, &b, 16) }
	decResult := func(d []byte) error { var r ExpertResult; return DecodeExpertResult(d, &r, sampleBatch(t)) }
	decGen := func(d []byte) error { var r GenerateRequest; return DecodeGenerateRequest(d, &r) }
	decEvent := func(d []byte) error { var e TokenEvent; return DecodeTokenEvent(d, &e) }
	decAcc := func(d []byte) error { var a GenerateAccepted; return DecodeGenerateAccepted(d, &a) }
	decAssign := func(d []byte) error { var a Assignment; return DecodeAssignment(d, &a) }
	decLoad := func(d []byte) error { var r LoadReport; return DecodeLoadReport(d, &r) }
	decStatus := func(d []byte) error { var s CardStatus; return DecodeCardStatus(d, &s) }

	good := batch(func(*ExpertBatch) {})
	nine := make([]int64, 9)
	for i := range nine {
		nine[i] = 1
	}
	for _, tc := range []struct {
		name   string
		decode func([]byte) error
		data   []byte
		want   Code
	}{
		{"batch: empty body", decBatch, nil, CodeBadRequest},
		{"batch: not msgpack", decBatch, []byte("{\"json\":1}"), CodeBadRequest},
		{"batch: truncated", decBatch, good[:len(good)-3], CodeBadRequest},
		{"batch: trailing byte", decBatch, append(good[:len(good):len(good)], 0), CodeBadRequest},
		{"batch: other version", decBatch, batch(func(b *ExpertBatch) { b.V = Version + 1 }), CodeVersion},
		{"batch: expert above the layer's count", decBatch, batch(func(b *ExpertBatch) { b.Experts[1] = 16 }), CodeBadRequest},
		{"batch: negative expert", decBatch, batch(func(b *ExpertBatch) { b.Experts[0] = -1 }), CodeBadRequest},
		{"batch: tensor shorter than its shape", decBatch, batch(func(b *ExpertBatch) { b.X.Data = b.X.Data[:len(b.X.Data)-1] }), CodeBadRequest},
		{"batch: tensor rank 9", decBatch, batch(func(b *ExpertBatch) { b.X.Shape = nine }), CodeBadRequest},
		{"batch: rows without row pointers", decBatch, batch(func(b *ExpertBatch) { b.RowPtr = I32s{0, 3} }), CodeBadRequest},
		{"batch: row pointers decrease", decBatch, batch(func(b *ExpertBatch) { b.RowPtr = I32s{0, 3, 2} }), CodeBadRequest},
		{"batch: fewer weights than pairs", decBatch, batch(func(b *ExpertBatch) { b.Weights = b.Weights[:2] }), CodeBadRequest},
		{"batch: unknown mode", decBatch, batch(func(b *ExpertBatch) { b.Mode = 7 }), CodeBadRequest},
		{"batch: unknown output dtype", decBatch, batch(func(b *ExpertBatch) { b.OutDType = 9 }), CodeBadRequest},
		{"batch: negative layer", decBatch, batch(func(b *ExpertBatch) { b.Layer = -1 }), CodeBadRequest},
		{"batch: token indices for other rows", decBatch, batch(func(b *ExpertBatch) { b.Tokens = I32s{1} }), CodeBadRequest},
		// A bin header claiming 2 GiB in a 17-byte body: refused before allocating.
		{"batch: bin claims 2 GiB", decBatch, []byte("\x99\x01\x00\x00\x01\x93\x01\x92\x00\x00\xc4\x00\xc6\x7f\xff\xff\xff"), CodeBadRequest},

		{"result: wrong tensor length", decResult, result(func(r *ExpertResult) { r.Y.Data = r.Y.Data[:17] }), CodeBadRequest},
		{"result: rows instead of pairs", decResult, result(func(r *ExpertResult) { _ = r.Y.SetF32(BF16, make([]float32, 6), 2, 3) }), CodeBadRequest},
		{"result: other width", decResult, result(func(r *ExpertResult) { _ = r.Y.SetF32(BF16, make([]float32, 12), 3, 4) }), CodeBadRequest},
		{"result: other layer", decResult, result(func(r *ExpertResult) { r.Layer = 4 }), CodeBadRequest},
		{"result: other version", decResult, result(func(r *ExpertResult) { r.V = 0 }), CodeVersion},
		{"result: unknown dtype", decResult, result(func(r *ExpertResult) { r.Y.DType = 0 }), CodeBadRequest},

		{"generate: garbage", decGen, []byte{0x93, 1, 2}, CodeBadRequest},
		{"generate: other version", decGen, gen(func(r *GenerateRequest) { r.V = 0 }), CodeVersion},
		{"generate: invalid UTF-8 stop string", decGen, gen(func(r *GenerateRequest) { r.Stop = []string{"a\xffb"} }), CodeBadRequest},
		{"generate: 17 stop strings", decGen, gen(func(r *GenerateRequest) { r.Stop = strings.Fields(strings.Repeat("s ", MaxStopStrings+1)) }), CodeBadRequest},
		{"generate: stop string of 257 bytes", decGen, gen(func(r *GenerateRequest) { r.Stop = []string{strings.Repeat("s", MaxStopLen+1)} }), CodeBadRequest},
		{"generate: empty stop string", decGen, gen(func(r *GenerateRequest) { r.Stop = []string{""} }), CodeBadRequest},
		{"generate: 65 stop ids", decGen, gen(func(r *GenerateRequest) { r.StopIDs = make(I32s, MaxStopIDs+1) }), CodeBadRequest},
		{"generate: id of 129 bytes", decGen, gen(func(r *GenerateRequest) { r.ID = strings.Repeat("i", MaxIDLen+1) }), CodeBadRequest},
		{"generate: no inbox", decGen, gen(func(r *GenerateRequest) { r.Inbox = "" }), CodeBadRequest},
		{"generate: empty prompt", decGen, gen(func(r *GenerateRequest) { r.Prompt = nil }), CodeBadRequest},
		{"generate: negative token", decGen, gen(func(r *GenerateRequest) { r.Prompt[1] = -5 }), CodeBadRequest},
		{"generate: max tokens 0", decGen, gen(func(r *GenerateRequest) { r.MaxTokens = 0 }), CodeBadRequest},
		{"generate: temperature NaN", decGen, gen(func(r *GenerateRequest) { r.Sampling.Temperature = float32(math.NaN()) }), CodeBadRequest},
		{"generate: temperature 101", decGen, gen(func(r *GenerateRequest) { r.Sampling.Temperature = 101 }), CodeBadRequest},
		{"generate: top_p 2", decGen, gen(func(r *GenerateRequest) { r.Sampling.TopP = 2 }), CodeBadRequest},
		{"generate: top_k -1", decGen, gen(func(r *GenerateRequest) { r.Sampling.TopK = -1 }), CodeBadRequest},
		{"generate: priority 2", decGen, gen(func(r *GenerateRequest) { r.Priority = 2 }), CodeBadRequest},
		{"generate: weight +Inf", decGen, gen(func(r *GenerateRequest) { r.Weight = float32(math.Inf(1)) }), CodeBadRequest},

		{"event: unknown finish", decEvent, enc(&TokenEvent{V: Version, ID: "r", Finish: "done"}), CodeBadRequest},
		{"event: other version", decEvent, enc(&TokenEvent{V: 2, ID: "r"}), CodeVersion},
		{"event: truncated", decEvent, enc(&TokenEvent{V: Version, ID: "r", Text: "hello"})[:6], CodeBadRequest},
		{"accepted: router not a subject token", decAcc, enc(&GenerateAccepted{V: Version, ID: "r", Router: "a.>"}), CodeBadRequest},
		{"accepted: other version", decAcc, enc(&GenerateAccepted{V: 9, ID: "r", Router: "a"}), CodeVersion},
		{"assignment: card not a token", decAssign, enc(&Assignment{V: Version, Card: "a b"}), CodeBadRequest},
		{"assignment: negative expert", decAssign, enc(&Assignment{V: Version, Card: "c", Experts: ExpertRefs{{Layer: 0, Expert: -2}}}), CodeBadRequest},
		{"assignment: 2^31 experts claimed", decAssign, []byte{0x95, byte(Version), 0xa1, 'c', 0xdd, 0x7f, 0xff, 0xff, 0xff}, CodeBadRequest},
		{"load: arrays of different lengths", decLoad, enc(&LoadReport{V: Version, Layers: I32s{1}, Experts: I32s{1, 2}, Tokens: I32s{1}}), CodeBadRequest},
		{"load: negative count", decLoad, enc(&LoadReport{V: Version, Layers: I32s{1}, Experts: I32s{1}, Tokens: I32s{-1}}), CodeBadRequest},
		{"load: other version", decLoad, enc(&LoadReport{V: 3}), CodeVersion},
		{"lease: busy 1.5", decStatus, enc(&CardStatus{V: Version, Card: "c", Busy: 1.5}), CodeBadRequest},
		{"lease: unknown expert state", decStatus, enc(&CardStatus{V: Version, Card: "c", Experts: ExpertStates{{State: 9}}}), CodeBadRequest},
		{"lease: no card id", decStatus, enc(&CardStatus{V: Version}), CodeBadRequest},
		{"lease: 2^31 experts claimed", decStatus, []byte{0x9e, byte(Version), 0xa1, 'c', 0xa0, 0xa0, 0, 0, 0xdd, 0x7f, 0xff, 0xff, 0xff}, CodeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.decode(tc.data)
			if err == nil {
				t.Fatal("decoded")
			}
			if got := CodeOf(err); got != tc.want {
				t.Fatalf("code %d (%v), want %d", got, err, tc.want)
			}
			var pe *Error
			if tc.want == CodeBadRequest && !errors.Is(err, ErrDecode) && !(errors.As(err, &pe) && pe.Msg != "") {
				t.Fatalf("%v: a 400 that wraps neither ErrDecode nor a described *proto.Error", err)
			}
		})
	}
}

// TestMalformedHeaders: the header values a card and a requester parse.
func TestMalformedHeaders(t *testing.T) {
	for _, s := range []string{"a=-1", "a=x", "a=99999999999999999999", "%zz=1", "a=1;b=2"} {
		if _, err := ParseTenantPairs(s); !errors.Is(err, ErrDecode) || CodeOf(err) != CodeBadRequest {
			t.Errorf("ParseTenantPairs(%q): %v, want a 400 wrapping ErrDecode", s, err)
		}
	}
	for code, want := range map[string]Code{"x": CodeInternal, "4OO": CodeInternal, "413": CodeTooLarge, "599": 599} {
		if e, ok := ParseError(code, "d"); !ok || e.Code != want {
			t.Errorf("ParseError(%q) = %v %v, want code %d", code, e, ok, want)
		}
	}
}
