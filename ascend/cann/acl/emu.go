//go:build cann && !cann_real

package acl

/*
#include <stdint.h>
void moemeshEmuStats(uint64_t *devAllocs, uint64_t *hostAllocs, uint64_t *executors, uint64_t *metaObjects);
*/
import "C"

// Emulated reports whether the package is linked against the CPU emulator.
const Emulated = true

// EmuStats are the emulator's live-object counters (leak checks in tests).
type EmuStats struct {
	DevAllocs, HostAllocs, Executors, MetaObjects uint64
}

// Stats reads the emulator's counters.
func Stats() EmuStats {
	var d, h, e, m C.uint64_t
	C.moemeshEmuStats(&d, &h, &e, &m)
	return EmuStats{uint64(d), uint64(h), uint64(e), uint64(m)}
}
