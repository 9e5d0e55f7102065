// Package acl is the one cgo package of moemesh: thin Go wrappers over the subset of the
// CANN C API (ACL runtime, aclnn meta objects, aclnn ops) that ascend/cann uses. Every
// failing call returns an *Error carrying the ACL/aclnn status code and the text of
// aclGetRecentErrMsg, read on the same OS thread as the call.
//
// Build tags (the package is empty without cann):
//
//	-tags cann            declarations from include/acl_subset.h (our own, pinned to CANN
//	                      8.0.0), linked against the CPU emulator
//	                      ../emu/lib/libmoemesh_aclemu.so (build it with ../emu/build.sh or
//	                      `make test-cann`); its directory is baked into the binary's run
//	                      path (-rpath, absolute), then $ORIGIN: a binary finds the library
//	                      in the checkout it was built from, or next to itself if copied,
//	                      without LD_LIBRARY_PATH.
//	-tags cann,cann_real  the toolkit's own headers and libraries (libascendcl, libnnopbase,
//	                      libopapi). cgo directives cannot read ASCEND_HOME_PATH, so pass it:
//	                      source $ASCEND_HOME_PATH/../set_env.sh, then
//	                      CGO_CFLAGS="-I$ASCEND_HOME_PATH/include -I$ASCEND_HOME_PATH/include/aclnnop"
//	                      CGO_LDFLAGS="-L$ASCEND_HOME_PATH/lib64"
//
// ACL contexts are per OS thread: callers lock their goroutine to a thread
// (runtime.LockOSThread) and set the context on it before any other call. The wrappers
// themselves also lock for the duration of a call, so an error message is never read on
// another thread than the call that set it.
//
// Import rule: acl imports only the standard library (and C). It is the only package with
// `import "C"` (internal/archtest enforces it).
package acl
