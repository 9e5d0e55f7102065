package proto

import "testing"

func FuzzDecodeExpertBatch(f *testing.F) {
	good, _ := Marshal(sampleBatch(f))
	f.Add(good)
	f.Add([]byte{0x99})
	f.Add(good[:len(good)/2])
	f.Fuzz(func(t *testing.T, data []byte) {
		var b ExpertBatch
		if err := DecodeExpertBatch(data, &b, 16); err != nil {
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
	})
}

func FuzzDecodeExpertResult(f *testing.F) {
	b := sampleBatch(f)
	r := &ExpertResult{V: Version, Layer: 3}
	_ = r.Y.SetF32(BF16, make([]float32, 9), 3, 3)
	good, _ := Marshal(r)
	f.Add(good)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var got ExpertResult
		if err := DecodeExpertResult(data, &got, b); err != nil {
			return
		}
		if _, err := got.Y.F32(nil); err != nil {
			t.Fatalf("validated result does not convert: %v", err)
		}
	})
}

func FuzzDecodeCardStatus(f *testing.F) {
	good, _ := Marshal(&CardStatus{V: Version, Card: "c0", Experts: []ExpertState{{Layer: 1, Expert: 2, State: StateReady}}})
	f.Add(good)
	f.Fuzz(func(t *testing.T, data []byte) {
		var s CardStatus
		_ = DecodeCardStatus(data, &s)
	})
}

func FuzzDecodeGenerateRequest(f *testing.F) {
	ok, _ := Marshal(&GenerateRequest{V: Version, ID: "r1", Tenant: "t", Prompt: I32s{1, 2, 3}, MaxTokens: 4,
		Stop: []string{"\n\n"}, StopIDs: I32s{7}, Inbox: "_INBOX.x", Sampling: Sampling{Temperature: 0.7, TopP: 0.9, Seed: 3, HasSeed: true}})
	f.Add(ok)
	f.Add([]byte{0x9c})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r GenerateRequest
		if err := DecodeGenerateRequest(data, &r); err != nil {
			return
		}
		// A valid request re-encodes to a request that decodes equal in length terms.
		b, err := Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		var r2 GenerateRequest
		if err := DecodeGenerateRequest(b, &r2); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if len(r2.Prompt) != len(r.Prompt) || len(r2.Stop) != len(r.Stop) || r2.ID != r.ID {
			t.Fatal("round trip changed the request")
		}
	})
}

func FuzzDecodeTokenEvent(f *testing.F) {
	ok, _ := Marshal(&TokenEvent{V: Version, ID: "r1", Seq: 2, Tokens: I32s{5}, Text: "hi", Finish: FinishStop, Usage: Usage{Prompt: 3, Completion: 1}})
	f.Add(ok)
	f.Fuzz(func(t *testing.T, data []byte) {
		var e TokenEvent
		_ = DecodeTokenEvent(data, &e)
	})
}
