// Command ociimage writes the moemesh container image as a tarball that `docker load -i`
// (and podman, and crane) accept, for machines where `make images` finds no Docker daemon.
//
// The image is what deploy/docker/Dockerfile builds: FROM scratch, one layer holding the
// static binary at /moemesh and an empty /data owned by the non-root user 65532 (the
// HOME and cache directory a volume mounts over), ENTRYPOINT ["/moemesh"]. No base image is
// pulled: the binary is the whole image. It refuses a dynamically linked binary, which a
// scratch image cannot run (there is no loader and no libc in it), so a `CGO_ENABLED=1`
// build is caught here and not at `docker run`.
//
// A module of its own (tools/ociimage/go.mod) so that go-containerregistry never becomes
// a dependency of moemesh. Usage, from the Makefile:
//
//	cd tools/ociimage && go run . -bin ../../bin/moemesh -out ../../bin/moemesh-image.tar -tag moemesh:local
package main
