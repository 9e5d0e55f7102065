package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/model/synth"
	"github.com/moemesh/moemesh/tracing"
)

// version is set with -ldflags "-X main.version=...".
var version = "dev"

type globals struct {
	logLevel  string
	logFormat string
	logJSON   bool // deprecated spelling of --log-format json
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "moemesh",
		Short:         "An event-driven expert-serving mesh for Mixture-of-Experts models",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: false,
	}
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", envOr("MOEMESH_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env MOEMESH_LOG_LEVEL)")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", envOr("MOEMESH_LOG_FORMAT", "text"), "log format: text or json (JSON lines); lines of a traced request carry trace_id and span_id (env MOEMESH_LOG_FORMAT)")
	root.PersistentFlags().BoolVar(&g.logJSON, "log-json", os.Getenv("MOEMESH_LOG_JSON") != "", "same as --log-format json (env MOEMESH_LOG_JSON)")
	_ = root.PersistentFlags().MarkDeprecated("log-json", "use --log-format json")
	// A bad --log-format fails the command before it starts anything, not at its first line.
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		_, err := g.handler(io.Discard)
		return err
	}
	root.AddCommand(newNATS(g), newExpertd(g), newMkmodel(g), newBench(g), newUp(g), newTokenize(g), newGenerate(g), newRouter(g), newGateway(g), newStatus(g))
	root.AddCommand(newPlan(g), newNATSConfig(g))
	return root
}

// logger is the services' logger: text or JSON on stderr, every line logged with a
// request's context (InfoContext, ...) tagged with its trace and span ids.
func (g *globals) logger() *slog.Logger {
	h, err := g.handler(os.Stderr)
	if err != nil { // PersistentPreRunE has reported it already
		h = slog.NewTextHandler(os.Stderr, nil)
	}
	return slog.New(tracing.NewLogHandler(h))
}

// handler is the format and level handler writing to w.
func (g *globals) handler(w io.Writer) (slog.Handler, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	format := strings.ToLower(strings.TrimSpace(g.logFormat))
	if g.logJSON {
		format = "json"
	}
	switch format {
	case "json":
		return slog.NewJSONHandler(w, opts), nil
	case "text", "":
		return slog.NewTextHandler(w, opts), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", g.logFormat)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

const defaultNATS = "nats://127.0.0.1:4222"

// resolveModel turns --model into a checkpoint directory. "builtin:<name>" is generated
// once into the user cache directory; anything else is a Hugging Face model directory.
func resolveModel(spec string, log *slog.Logger) (dir, name string, err error) {
	if builtin, ok := strings.CutPrefix(spec, "builtin:"); ok {
		presets := map[string]synth.Options{
			"tiny":  {Arch: "qwen3_moe", Preset: "tiny", Seed: 1, DType: "bf16"},
			"small": {Arch: "qwen3_moe", Preset: "small", Seed: 1, DType: "bf16"},
		}
		o, ok := presets[builtin]
		if !ok {
			return "", "", fmt.Errorf("unknown built-in model %q (built in: tiny, small)", builtin)
		}
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		dir = filepath.Join(cache, "moemesh", "builtin-"+builtin)
		// tokenizer.json is the newest file synth writes: a cache made by an older binary
		// without it is regenerated (Write replaces a synth checkpoint as a whole).
		if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err != nil {
			log.Info("generating the built-in model", "name", builtin, "dir", dir)
			if _, err := synth.Write(dir, o); err != nil {
				return "", "", fmt.Errorf("generating built-in model %q: %w", builtin, err)
			}
		}
		return dir, "builtin-" + builtin, nil
	}
	if spec == "" {
		return "", "", fmt.Errorf("--model is required (a Hugging Face model directory or builtin:tiny)")
	}
	if _, err := os.Stat(filepath.Join(spec, "config.json")); err != nil {
		return "", "", fmt.Errorf("--model %s: not a model directory: %w", spec, err)
	}
	return spec, filepath.Base(filepath.Clean(spec)), nil
}

func runtimeCPUs() int { return runtime.GOMAXPROCS(0) }
