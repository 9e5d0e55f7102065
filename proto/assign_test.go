package proto

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestAssignmentRoundTripAndBounds(t *testing.T) {
	a := &Assignment{V: Version, Card: "d1-c0", Experts: ExpertRefs{{Layer: 1, Expert: 3}, {Layer: 2, Expert: 0}}, Epoch: 7, Leader: "r1"}
	good, err := Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var got Assignment
	if err := DecodeAssignment(good, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, a) {
		t.Fatalf("round trip: got %+v, want %+v", got, *a)
	}
	// An array header claiming more experts than allowed is refused before allocating.
	// [V, "c", array32 of 2^31-1 ...]
	huge := []byte{0x95, byte(Version), 0xa1, 'c', 0xdd, 0x7f, 0xff, 0xff, 0xff}
	bad := map[string][]byte{
		"empty":     {},
		"truncated": good[:len(good)/2],
		"huge":      huge,
	}
	for _, c := range []struct {
		name string
		a    Assignment
	}{
		{"version", Assignment{V: Version + 1, Card: "c"}},
		{"card", Assignment{V: Version, Card: "a.b"}},
		{"negative", Assignment{V: Version, Card: "c", Experts: ExpertRefs{{Layer: -1}}}},
	} {
		data, err := Marshal(&c.a)
		if err != nil {
			t.Fatal(err)
		}
		bad[c.name] = data
	}
	for name, data := range bad {
		var a Assignment
		if err := DecodeAssignment(data, &a); err == nil {
			t.Errorf("%s: decoded %+v", name, a)
		} else if name != "version" && !errors.Is(err, ErrDecode) {
			t.Errorf("%s: %v does not wrap ErrDecode", name, err)
		} else if name == "huge" && !strings.Contains(err.Error(), "at most") {
			t.Errorf("%s: %v is not the length bound", name, err)
		}
	}
}

func TestAssignKeys(t *testing.T) {
	if id, ok := CardIDFromAssignKey(AssignKey("d1-c0")); !ok || id != "d1-c0" {
		t.Fatalf("got %q %v", id, ok)
	}
	for _, k := range []string{CardKey("x"), LeaderKey, "assign."} {
		if _, ok := CardIDFromAssignKey(k); ok {
			t.Errorf("%q taken for an assign key", k)
		}
	}
}

func TestLoadReportValidate(t *testing.T) {
	r := &LoadReport{V: Version, Router: "r", Nanos: 1e9, Layers: I32s{1, 1}, Experts: I32s{0, 3}, Tokens: I32s{5, 9}}
	data, _ := Marshal(r)
	var got LoadReport
	if err := DecodeLoadReport(data, &got); err != nil || !reflect.DeepEqual(&got, r) {
		t.Fatalf("got %+v, %v", got, err)
	}
	r.Tokens = I32s{5}
	data, _ = Marshal(r)
	if err := DecodeLoadReport(data, &got); !errors.Is(err, ErrDecode) {
		t.Fatalf("mismatched lengths: %v", err)
	}
}
