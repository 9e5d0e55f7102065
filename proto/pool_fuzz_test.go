package proto

import (
	"errors"
	"runtime"
	"testing"
)

// A pooled msgpack decoder that failed on a string or bin longer than the body keeps the
// buffer msgpack grew for it, a quarter larger each time: a few dozen 9-byte messages grew
// it past a gigabyte (found by FuzzDecodeGenerateAccepted and others).
func TestDecodeFailuresDoNotGrowMemory(t *testing.T) {
	bad := []byte{0x94, 0x01, 0xdb, 0x7f, 0xff, 0xff, 0xff, 'x', 'y'} // an accepted whose id claims 2 GiB
	var ms runtime.MemStats
	for i := range 200 {
		var a GenerateAccepted
		if err := DecodeGenerateAccepted(bad, &a); !errors.Is(err, ErrDecode) {
			t.Fatalf("decoded: %v", err)
		}
		runtime.ReadMemStats(&ms)
		if ms.HeapAlloc > 256<<20 {
			t.Fatalf("after %d bad messages of %d bytes the heap holds %d MiB", i+1, len(bad), ms.HeapAlloc>>20)
		}
	}
}
