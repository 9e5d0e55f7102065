package proto

import (
	"bytes"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Every NATS-facing decoder has a target here. Each checks the same three things:
//   - decoding never panics (unmarshal recovers a panic into ErrDecode, so a recovered
//     runtime error counts as a failure too: the decoder read what it should not);
//   - a rejected body fails with one of the decoder's documented codes, never the
//     CodeInternal that CodeOf gives an unclassified error;
//   - an accepted body re-encodes canonically: encode(decode(x)) decodes again and
//     re-encodes to the same bytes (bytes, not values, so NaN weights compare equal).
// Seeds are real encoded messages (round trips of valid values) plus their truncations.

// checkRejected fails t unless err carries one of the codes the decoder documents.
func checkRejected(t *testing.T, err error, codes ...Code) {
	t.Helper()
	if strings.Contains(err.Error(), "runtime error") {
		t.Fatalf("the decoder panicked (recovered): %v", err)
	}
	if c := CodeOf(err); !slices.Contains(codes, c) {
		t.Fatalf("error code %d (%v), want one of %v", c, err, codes)
	}
	if CodeOf(err) == CodeBadRequest {
		var pe *Error
		if !errors.Is(err, ErrDecode) && !errors.As(err, &pe) {
			t.Fatalf("400 without ErrDecode or a *proto.Error: %v", err)
		}
	}
}

// roundTrip re-encodes v (decoded from the fuzz input), decodes that into fresh and
// checks that re-encoding fresh gives the same bytes.
func roundTrip[T any](t *testing.T, v *T, decode func([]byte, *T) error) {
	t.Helper()
	b1, err := Marshal(v)
	if err != nil {
		t.Fatalf("a decoded value does not encode: %v", err)
	}
	var fresh T
	if err := decode(b1, &fresh); err != nil {
		t.Fatalf("a decoded value re-encodes to a body that fails: %v", err)
	}
	b2, err := Marshal(&fresh)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1, b2) {
		t.Fatalf("round trip changed the message:\n%x\n%x", b1, b2)
	}
}

// sameDecoding fails t unless two decodings of data agree: both refuse it, or both
// accept it as values that encode to the same bytes.
func sameDecoding[T any](t *testing.T, data []byte, err1 error, v1 *T, err2 error, v2 *T) {
	t.Helper()
	if (err1 == nil) != (err2 == nil) {
		t.Fatalf("%x: the decoders disagree: %v / %v", data, err1, err2)
	}
	if err1 != nil {
		return
	}
	b1, e1 := Marshal(v1)
	b2, e2 := Marshal(v2)
	if e1 != nil || e2 != nil || !bytes.Equal(b1, b2) {
		t.Fatalf("%x: the decoders disagree:\n%+v\n%+v", data, *v1, *v2)
	}
}

// addSeeds adds each value's encoding and a few of its truncations.
func addSeeds(f *testing.F, vals ...any) {
	f.Helper()
	for _, v := range vals {
		b, err := Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		for _, n := range []int{1, len(b) / 2, len(b) - 1} {
			if n > 0 && n < len(b) {
				f.Add(b[:n])
			}
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0xc0})
}

func FuzzDecodeExpertBatch(f *testing.F) {
	reduce := sampleBatch(f)
	reduce.Mode, reduce.Tokens = ModeReduce, nil
	empty := &ExpertBatch{V: Version, Layer: 0, OutDType: F32, RowPtr: I32s{0}}
	_ = empty.X.SetF32(F16, nil, 0, 4)
	addSeeds(f, sampleBatch(f), reduce, empty)
	f.Add([]byte{0x99})
	decode := func(data []byte, b *ExpertBatch) error { return DecodeExpertBatch(data, b, 16) }
	generic := func(data []byte, b *ExpertBatch) error {
		if err := unmarshal(data, b); err != nil {
			return err
		}
		return b.Validate(16)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var b ExpertBatch
		err := decode(data, &b)
		// The hand-written fast path (tensor_wire.go) must mean what msgpack means, and
		// decoding into a used batch must give what decoding into a fresh one gives.
		var viaMsgpack ExpertBatch
		sameDecoding(t, data, err, &b, generic(data, &viaMsgpack), &viaMsgpack)
		reused := sampleBatch(t)
		sameDecoding(t, data, err, &b, decode(data, reused), reused)
		if err != nil {
			checkRejected(t, err, CodeBadRequest, CodeVersion)
			return
		}
		// A batch that decodes must be usable without further checks.
		for r := 0; r < b.Rows(); r++ {
			for _, e := range b.Experts[b.RowPtr[r]:b.RowPtr[r+1]] {
				if e < 0 || e >= 16 {
					t.Fatalf("expert %d passed validation", e)
				}
			}
		}
		if _, err := b.X.F32(nil); err != nil {
			t.Fatalf("validated tensor does not convert: %v", err)
		}
		roundTrip(t, &b, decode)
	})
}

func FuzzDecodeExpertResult(f *testing.F) {
	b := sampleBatch(f)
	r := &ExpertResult{V: Version, Layer: 3, QueueNanos: 5, ComputeNanos: 7}
	_ = r.Y.SetF32(BF16, make([]float32, 9), 3, 3)
	addSeeds(f, r)
	decode := func(data []byte, got *ExpertResult) error { return DecodeExpertResult(data, got, b) }
	generic := func(data []byte, got *ExpertResult) error {
		if err := unmarshal(data, got); err != nil {
			return err
		}
		return got.Validate(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var got ExpertResult
		err := decode(data, &got)
		var viaMsgpack ExpertResult
		sameDecoding(t, data, err, &got, generic(data, &viaMsgpack), &viaMsgpack)
		reused := &ExpertResult{V: 7, Layer: 9, QueueNanos: 1}
		_ = reused.Y.SetF32(F32, make([]float32, 12), 4, 3)
		sameDecoding(t, data, err, &got, decode(data, reused), reused)
		if err != nil {
			checkRejected(t, err, CodeBadRequest, CodeVersion)
			return
		}
		y, err := got.Y.F32(nil)
		if err != nil {
			t.Fatalf("validated result does not convert: %v", err)
		}
		if len(y) != len(b.Experts)*int(b.X.Shape[1]) {
			t.Fatalf("result of %d values answers %d pairs of width %d", len(y), len(b.Experts), b.X.Shape[1])
		}
		roundTrip(t, &got, decode)
	})
}

func FuzzDecodeCardStatus(f *testing.F) {
	addSeeds(f,
		&CardStatus{V: Version, Card: "c0", Experts: []ExpertState{{Layer: 1, Expert: 2, State: StateReady}}},
		&CardStatus{V: Version, Card: "d1-c0", Daemon: "d1", Device: "cpu:0", MemTotal: 1 << 30, MemUsed: 1 << 20, Queue: 2,
			TokensPerSec: 123.5, Beat: 1e18, Draining: true, BusyNanos: 5e9, Busy: 0.5, Leaving: true,
			Experts: []ExpertState{{Layer: 0, Expert: 0, State: StateLoading}, {Layer: 3, Expert: 7, State: StateDraining}}})
	f.Fuzz(func(t *testing.T, data []byte) {
		var s CardStatus
		if err := DecodeCardStatus(data, &s); err != nil {
			checkRejected(t, err, CodeBadRequest, CodeVersion)
			return
		}
		if ValidToken(s.Card) != nil || !(s.Busy >= 0 && s.Busy <= 1) {
			t.Fatalf("invalid status passed validation: %+v", s)
		}
		roundTrip(t, &s, DecodeCardStatus)
	})
}

func FuzzDecodeGenerateRequest(f *testing.F) {
	addSeeds(f,
		&GenerateRequest{V: Version, ID: "r1", Tenant: "t", Prompt: I32s{1, 2, 3}, MaxTokens: 4,
			Stop: []string{"\n\n"}, StopIDs: I32s{7}, Inbox: "_INBOX.x", Sampling: Sampling{Temperature: 0.7, TopP: 0.9, Seed: 3, HasSeed: true}},
		&GenerateRequest{V: Version, ID: "chatcmpl-1", Tenant: "acme", Priority: PriorityBatch, Weight: 2, Prompt: I32s{0}, MaxTokens: 1,
			Inbox: "_INBOX.y", Deadline: 1e18, IgnoreEOS: true, Sampling: Sampling{TopK: 40}})
	f.Add([]byte{0x9c})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r GenerateRequest
		if err := DecodeGenerateRequest(data, &r); err != nil {
			// A router answers these codes as they are (router/service.go).
			checkRejected(t, err, CodeBadRequest, CodeVersion)
			return
		}
		if r.ID == "" || r.Inbox == "" || len(r.Prompt) == 0 || r.MaxTokens <= 0 || len(r.Stop) > MaxStopStrings {
			t.Fatalf("invalid request passed validation: %+v", r)
		}
		roundTrip(t, &r, DecodeGenerateRequest)
	})
}

func FuzzDecodeTokenEvent(f *testing.F) {
	addSeeds(f,
		&TokenEvent{V: Version, ID: "r1", Seq: 2, Tokens: I32s{5}, Text: "hi", Finish: FinishStop, Usage: Usage{Prompt: 3, Completion: 1}},
		&TokenEvent{V: Version, ID: "r1", Seq: 0, Tokens: I32s{5, 6}, Text: "héllo", TTFTNanos: 1e6},
		&TokenEvent{V: Version, ID: "r1", Seq: 9, Finish: FinishError, ErrCode: CodeDeadline, ErrMsg: "late"})
	f.Fuzz(func(t *testing.T, data []byte) {
		var e TokenEvent
		if err := DecodeTokenEvent(data, &e); err != nil {
			checkRejected(t, err, CodeBadRequest, CodeVersion)
			return
		}
		if (e.Err() != nil) != (e.Finish == FinishError) {
			t.Fatalf("event %+v: Err() %v", e, e.Err())
		}
		roundTrip(t, &e, DecodeTokenEvent)
	})
}

func FuzzDecodeGenerateAccepted(f *testing.F) {
	addSeeds(f, &GenerateAccepted{V: Version, ID: "r1", Router: "router-1", Queued: 3},
		&GenerateAccepted{V: Version, ID: "", Router: "r_2"})
	f.Fuzz(func(t *testing.T, data []byte) {
		var a GenerateAccepted
		if err := DecodeGenerateAccepted(data, &a); err != nil {
			checkRejected(t, err, CodeBadRequest, CodeVersion)
			return
		}
		// The gateway builds the cancel subject from Router: it must be one token.
		if ValidToken(a.Router) != nil {
			t.Fatalf("router %q passed validation", a.Router)
		}
		roundTrip(t, &a, DecodeGenerateAccepted)
	})
}

func FuzzDecodeAssignment(f *testing.F) {
	addSeeds(f, &Assignment{V: Version, Card: "d1-c0", Experts: ExpertRefs{{Layer: 1, Expert: 3}, {Layer: 2, Expert: 0}}, Epoch: 7, Leader: "r1"},
		&Assignment{V: Version, Card: "c", Experts: ExpertRefs{}})
	f.Fuzz(func(t *testing.T, data []byte) {
		var a Assignment
		if err := DecodeAssignment(data, &a); err != nil {
			checkRejected(t, err, CodeBadRequest, CodeVersion)
			return
		}
		for _, e := range a.Experts {
			if e.Layer < 0 || e.Expert < 0 {
				t.Fatalf("expert %d/%d passed validation", e.Layer, e.Expert)
			}
		}
		roundTrip(t, &a, DecodeAssignment)
	})
}

func FuzzDecodeLoadReport(f *testing.F) {
	addSeeds(f, &LoadReport{V: Version, Router: "r", Nanos: 1e9, Layers: I32s{1, 1}, Experts: I32s{0, 3}, Tokens: I32s{5, 9}},
		&LoadReport{V: Version, Router: "r2"})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r LoadReport
		if err := DecodeLoadReport(data, &r); err != nil {
			checkRejected(t, err, CodeBadRequest, CodeVersion)
			return
		}
		// The controller indexes the three arrays together (router/placement).
		if len(r.Layers) != len(r.Experts) || len(r.Layers) != len(r.Tokens) {
			t.Fatalf("report of %d/%d/%d entries passed validation", len(r.Layers), len(r.Experts), len(r.Tokens))
		}
		roundTrip(t, &r, DecodeLoadReport)
	})
}

// FuzzParseTenantPairs: the Moe-Tenant header of an expert batch (expertd/card.go).
func FuzzParseTenantPairs(f *testing.F) {
	for _, s := range []string{FormatTenantPairs(map[string]int{"acme": 12, "b=c&d": 3, "中文": 0}), "a=1", "a=1&a=2", "=5", "a=x", "%zz=1", "a=-1", ";"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseTenantPairs(s)
		if err != nil {
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("%q: %v does not wrap ErrDecode", s, err)
			}
			return
		}
		for k, n := range m {
			if n < 0 {
				t.Fatalf("%q: tenant %q has %d pairs", s, k, n)
			}
		}
		m2, err := ParseTenantPairs(FormatTenantPairs(m))
		if err != nil || len(m2) != len(m) {
			t.Fatalf("%q: re-parse: %v, %v", s, m2, err)
		}
		for k, n := range m {
			if m2[k] != n {
				t.Fatalf("%q: tenant %q: %d after a round trip, was %d", s, k, m2[k], n)
			}
		}
	})
}

// FuzzParseError: the error headers of a reply (mesh.Request).
func FuzzParseError(f *testing.F) {
	f.Add("", "")
	f.Add("503", "card gone")
	f.Add("x", "y")
	f.Add("99999999999999999999", "")
	f.Add("-1", "neg")
	f.Fuzz(func(t *testing.T, code, desc string) {
		e, ok := ParseError(code, desc)
		if ok != (code != "") || (ok && e == nil) {
			t.Fatalf("ParseError(%q) = %v, %v", code, e, ok)
		}
		if !ok {
			return
		}
		if n, err := strconv.Atoi(code); err == nil {
			if int(e.Code) != n || e.Msg != desc {
				t.Fatalf("ParseError(%q, %q) = %+v", code, desc, e)
			}
		} else if e.Code != CodeInternal {
			t.Fatalf("unparseable code %q gave %d", code, e.Code)
		}
		_ = e.Error() // String of any code, known or not
		_ = e.Code.Retryable()
		if CodeOf(e) != e.Code {
			t.Fatalf("CodeOf(%v) = %d", e, CodeOf(e))
		}
	})
}
