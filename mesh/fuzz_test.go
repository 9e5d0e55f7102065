package mesh

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/moemesh/moemesh/proto"
)

// kvEntry is a registry entry as a watch delivers it; the decoders read only Key, Value
// and Revision, so the lease and assignment handling is fuzzed without a server.
type kvEntry struct {
	key   string
	value []byte
}

func (e kvEntry) Bucket() string                  { return "moemesh_m" }
func (e kvEntry) Key() string                     { return e.key }
func (e kvEntry) Value() []byte                   { return e.value }
func (e kvEntry) Revision() uint64                { return 1 }
func (e kvEntry) Created() time.Time              { return time.Time{} }
func (e kvEntry) Delta() uint64                   { return 0 }
func (e kvEntry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }

// fuzzRegistrySeeds adds valid values of both kinds under both kinds of key: a lease is
// also tried as an assignment and the other way round.
func fuzzRegistrySeeds(f *testing.F) {
	lease, _ := proto.Marshal(&proto.CardStatus{V: proto.Version, Card: "d1-c0", Device: "cpu:0",
		Experts: proto.ExpertStates{{Layer: 1, Expert: 2, State: proto.StateReady}}, Busy: 0.25})
	assign, _ := proto.Marshal(&proto.Assignment{V: proto.Version, Card: "d1-c0", Experts: proto.ExpertRefs{{Layer: 1, Expert: 2}}, Epoch: 3, Leader: "r1"})
	for _, key := range []string{proto.CardKey("d1-c0"), proto.AssignKey("d1-c0"), proto.CardKey("other"), "card.", proto.LeaderKey} {
		f.Add(key, lease)
		f.Add(key, assign)
		f.Add(key, lease[:len(lease)/2])
	}
}

// FuzzDecodeLease: any registry entry gives a lease of the card its key names, or an
// error wrapping ErrBadLease and the decoder's code; never a panic.
func FuzzDecodeLease(f *testing.F) {
	fuzzRegistrySeeds(f)
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		st, err := decodeLease(kvEntry{key, value})
		if err != nil {
			if !errors.Is(err, ErrBadLease) {
				t.Fatalf("%v does not wrap ErrBadLease", err)
			}
			// A body the proto decoder refuses keeps its code (400 or 409) through the wrap.
			var raw proto.CardStatus
			if perr := proto.DecodeCardStatus(value, &raw); perr != nil && proto.CodeOf(err) != proto.CodeOf(perr) {
				t.Fatalf("code %d for %v, the decoder said %d", proto.CodeOf(err), err, proto.CodeOf(perr))
			}
			return
		}
		id, ok := proto.CardIDFromKey(key)
		if !ok || st.Card != id || proto.ValidToken(st.Card) != nil {
			t.Fatalf("key %q gave the lease of card %q", key, st.Card)
		}
	})
}

// FuzzDecodeAssign: as FuzzDecodeLease for the controller's assignments.
func FuzzDecodeAssign(f *testing.F) {
	fuzzRegistrySeeds(f)
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		a, err := decodeAssign(kvEntry{key, value})
		if err != nil {
			if !errors.Is(err, ErrBadAssign) {
				t.Fatalf("%v does not wrap ErrBadAssign", err)
			}
			return
		}
		id, ok := proto.CardIDFromAssignKey(key)
		if !ok || a.Card != id || proto.ValidToken(a.Card) != nil {
			t.Fatalf("key %q gave the assignment of card %q", key, a.Card)
		}
		for _, e := range a.Experts {
			if e.Layer < 0 || e.Expert < 0 {
				t.Fatalf("expert %d/%d passed validation", e.Layer, e.Expert)
			}
		}
	})
}
