package proto

import (
	"errors"
	"math"
	"reflect"
	"testing"
)

// The busy time and the leaving flag travel in the lease and are checked on decode.
func TestCardStatusBusyAndLeaving(t *testing.T) {
	for _, tc := range []struct {
		name      string
		busy      float32
		busyNanos int64
		ok        bool
	}{
		{"idle", 0, 0, true},
		{"half", 0.5, 1e9, true},
		{"saturated", 1, 5e9, true},
		{"over one", 1.01, 1e9, false},
		{"negative fraction", -0.1, 0, false},
		{"negative time", 0.2, -1, false},
		{"NaN", float32(math.NaN()), 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &CardStatus{V: Version, Card: "d1-c0", Busy: tc.busy, BusyNanos: tc.busyNanos, Leaving: true}
			data, err := Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			var got CardStatus
			err = DecodeCardStatus(data, &got)
			if !tc.ok {
				if !errors.Is(err, ErrDecode) {
					t.Fatalf("err = %v, want ErrDecode", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(&got, s) {
				t.Fatalf("got %+v want %+v", got, *s)
			}
		})
	}
}
