// Package emu holds the CPU emulator of the CANN C API subset that ascend/cann uses: a C
// shared library (csrc/emu.c with the csrc/*.inc.c it includes, built by build.sh into
// lib/libmoemesh_aclemu.so, which ascend/cann/acl links against with the cann build tag).
// It exports exactly the symbols declared in ../acl/include/acl_subset.h, plus
// moemeshEmuStats (live-object counters for leak tests), and implements them with the
// semantics of the real runtime listed in ../../../../shared/reference/cann.md §7:
// deferred per-stream execution (work runs at aclrtSynchronizeStream/Event, so a missing
// sync reads the 0xFF poison of fresh allocations), event ordering, memcpy
// kind/pinning/alignment checks, a configurable HBM size (MOEMESH_EMU_HBM, e.g. "64M";
// MOEMESH_EMU_DEVICES) with 207001 when exhausted, single-shot aclnn executors, groupList
// semantics with uncovered rows left unwritten, and aclGetRecentErrMsg per thread. See the
// comment at the top of csrc/emu.c.
//
// The Go package itself only tests the library's build and exports (no cgo here).
//
// Import rule: emu imports only the standard library.
package emu
