//go:build cann && cann_real

package acl

// Emulated reports whether the package is linked against the CPU emulator.
const Emulated = false

// EmuStats are the emulator's live-object counters; always zero on real hardware.
type EmuStats struct {
	DevAllocs, HostAllocs, Executors, MetaObjects uint64
}

// Stats returns zero counters: the toolkit has no such introspection.
func Stats() EmuStats { return EmuStats{} }
