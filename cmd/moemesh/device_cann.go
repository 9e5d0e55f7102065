//go:build cann

package main

// With -tags cann the binary carries the CANN backend, so `--device cann` works for
// expertd and router: over the ACL emulator (ascend/cann/emu, found through the rpath the
// build bakes in), or over the real toolkit with -tags cann,cann_real. See docs/cann.md.
import _ "github.com/moemesh/moemesh/ascend/cann"
