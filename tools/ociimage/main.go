package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The layout of the image, shared with deploy/docker/Dockerfile (keep them in step).
const (
	entrypoint = "/moemesh"
	dataDir    = "/data" // HOME and XDG_CACHE_HOME live here; volumes mount over it
	uid        = 65532   // the conventional "nonroot" id of distroless images
)

// Options of one image.
type Options struct {
	Binary  string    // path of the static moemesh binary
	Tags    []string  // e.g. moemesh:local; the first is required
	Version string    // org.opencontainers.image.version label; "" = none
	Created time.Time // image and file times; zero = the Unix epoch, for reproducible digests
}

func main() {
	var (
		o    Options
		out  string
		tags stringList
	)
	flag.StringVar(&o.Binary, "bin", "", "static moemesh binary (required)")
	flag.StringVar(&out, "out", "", "tarball to write (required)")
	flag.Var(&tags, "tag", "image tag, repeatable (default moemesh:local)")
	flag.StringVar(&o.Version, "version", "", "version label")
	flag.Parse()
	if epoch := os.Getenv("SOURCE_DATE_EPOCH"); epoch != "" {
		sec, err := strconv.ParseInt(epoch, 10, 64)
		if err != nil {
			fatal(fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", epoch, err))
		}
		o.Created = time.Unix(sec, 0).UTC()
	}
	o.Tags = tags
	if len(o.Tags) == 0 {
		o.Tags = []string{"moemesh:local"}
	}
	if o.Binary == "" || out == "" {
		fatal(errors.New("-bin and -out are required"))
	}
	if err := Write(out, o); err != nil {
		fatal(err)
	}
	fmt.Printf("wrote %s (%s); load it with: docker load -i %s\n", out, strings.Join(o.Tags, ", "), out)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "ociimage:", err)
	os.Exit(1)
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// Write builds the image and writes it to path as a docker-loadable tarball with every tag.
func Write(path string, o Options) error {
	img, err := Build(o)
	if err != nil {
		return err
	}
	refs := map[name.Reference]v1.Image{}
	for _, t := range o.Tags {
		tag, err := name.NewTag(t)
		if err != nil {
			return fmt.Errorf("tag %q: %w", t, err)
		}
		refs[tag] = img
	}
	// Through a temporary file, so that an interrupted run leaves no half tarball that
	// `docker load` would reject with a less clear message.
	tmp := path + ".tmp"
	if err := tarball.MultiRefWriteToFile(tmp, refs); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// Build makes the image in memory.
func Build(o Options) (v1.Image, error) {
	if len(o.Tags) == 0 {
		return nil, errors.New("no tag")
	}
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("binary: %w", err)
	}
	arch, err := staticArch(bin)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Binary, err)
	}
	created := o.Created
	if created.IsZero() {
		created = time.Unix(0, 0).UTC()
	}
	layerTar, err := rootfs(bin, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Created = v1.Time{Time: created}
	for i := range cf.History {
		cf.History[i].Created = v1.Time{Time: created}
		cf.History[i].CreatedBy = "tools/ociimage: COPY moemesh /moemesh"
	}
	cf.Config = v1.Config{
		Entrypoint: []string{entrypoint},
		User:       fmt.Sprintf("%d:%d", uid, uid),
		WorkingDir: dataDir,
		Env:        []string{"HOME=" + dataDir, "XDG_CACHE_HOME=" + dataDir + "/cache"},
		Labels: map[string]string{
			"org.opencontainers.image.title":  "moemesh",
			"org.opencontainers.image.source": "https://github.com/moemesh/moemesh",
		},
	}
	if o.Version != "" {
		cf.Config.Labels["org.opencontainers.image.version"] = o.Version
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return img, nil
}

// rootfs is the layer: /moemesh and an empty /data the user owns (a named volume mounted
// there copies that ownership, so the non-root process can write its cache and store).
func rootfs(bin []byte, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdrs := []struct {
		h    tar.Header
		body []byte
	}{
		{tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(dataDir, "/") + "/", Mode: 0o755, Uid: uid, Gid: uid, ModTime: mtime}, nil},
		{tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(entrypoint, "/"), Mode: 0o755, Size: int64(len(bin)), ModTime: mtime}, bin},
	}
	for _, e := range hdrs {
		h := e.h
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return buf.Bytes(), nil
}

// staticArch returns the image architecture of a statically linked Linux ELF binary and
// refuses anything else: a scratch image has no dynamic loader.
func staticArch(bin []byte) (string, error) {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return "", fmt.Errorf("not an ELF binary (build it for linux): %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", errors.New("dynamically linked: a FROM scratch image needs a static binary (build with CGO_ENABLED=0)")
		}
	}
	switch f.Machine {
	case elf.EM_X86_64:
		return "amd64", nil
	case elf.EM_AARCH64:
		return "arm64", nil
	}
	return "", fmt.Errorf("unsupported machine %v", f.Machine)
}
