package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/internal/stack"
	"github.com/moemesh/moemesh/mesh"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/chat"
	"github.com/moemesh/moemesh/model/nn"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/model/tokenizer"
)

type genFlags struct {
	model, name, prompt, ids, natsURL, logitsOut string
	chat, local, greedy, exact                   bool
	maxTokens                                    int
	seed                                         uint64
	temperature, topP                            float32
	topK                                         int
	nats                                         natsFlags
}

func newGenerate(g *globals) *cobra.Command {
	var f genFlags
	c := &cobra.Command{
		Use:   "generate",
		Short: "Generate text offline: the dense path here, routed experts in process (--local) or on a mesh (--nats)",
		Example: `  moemesh generate --model ./Qwen3-30B-A3B --chat --prompt "Why is the sky blue?" --local
  moemesh generate --model ./tiny --ids 1,2,3 --greedy --max-tokens 16 --nats nats://127.0.0.1:4222 --exact`,
		RunE: func(cmd *cobra.Command, args []string) error { return runGenerate(cmd, g, f) },
	}
	fl := c.Flags()
	fl.StringVar(&f.model, "model", os.Getenv("MOEMESH_MODEL"), "Hugging Face model directory or builtin:tiny")
	fl.StringVar(&f.name, "name", "", "model name in subjects (default: the directory's name)")
	fl.StringVar(&f.prompt, "prompt", "", "prompt text (needs tokenizer.json in the model directory)")
	fl.StringVar(&f.ids, "ids", "", "prompt as comma-separated token ids instead of text")
	fl.BoolVar(&f.chat, "chat", false, "render the prompt as a user message with the model's chat template")
	fl.BoolVar(&f.local, "local", false, "run the routed experts in this process")
	fl.StringVar(&f.natsURL, "nats", envOr("MOEMESH_NATS_URL", ""), "run the routed experts on the mesh at this NATS URL (env MOEMESH_NATS_URL)")
	fl.BoolVar(&f.exact, "exact", false, "mesh: f32 on the wire and per-pair combine, bit-identical to --local")
	fl.BoolVar(&f.greedy, "greedy", false, "always take the most likely token")
	fl.IntVar(&f.maxTokens, "max-tokens", 64, "tokens to generate at most")
	fl.Uint64Var(&f.seed, "seed", 0, "sampling seed (same seed, same text)")
	fl.Float32Var(&f.temperature, "temperature", 0.7, "sampling temperature")
	fl.IntVar(&f.topK, "top-k", 0, "sample from the k most likely tokens (0: all)")
	fl.Float32Var(&f.topP, "top-p", 1, "sample from the smallest set holding this probability")
	// The admin's inbox unless the user names a role: generate does a router's job (it
	// sends to cards), so `--nats-user router` is the least privilege.
	f.nats.register(fl, mesh.RoleAdmin, true, os.Getenv)
	fl.StringVar(&f.logitsOut, "logits-out", "", "write every step's logits: a JSON header line, then raw little-endian f32 [steps, vocab]")
	return c
}

func runGenerate(cmd *cobra.Command, g *globals, f genFlags) error {
	log := g.logger()
	ctx := cmd.Context()
	if f.local == (f.natsURL != "") {
		return errors.New("choose one of --local and --nats URL")
	}
	if (f.prompt == "") == (f.ids == "") {
		return errors.New("give one of --prompt and --ids")
	}
	dir, name, err := resolveModel(f.model, log)
	if err != nil {
		return err
	}
	if f.name != "" {
		name = f.name
	}
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return err
	}
	var tok *tokenizer.Tokenizer
	stops := map[int32]bool{}
	for _, id := range cfg.EOS {
		stops[int32(id)] = true
	}
	// generation_config.json's eos ids stop generation too, as they do on the router.
	tmpl, tmplErr := chat.Load(dir)
	if tmplErr == nil {
		for _, id := range tmpl.StopIDs {
			stops[id] = true
		}
	}
	var prompt []int32
	if f.ids != "" {
		for _, s := range strings.Split(f.ids, ",") {
			id, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
			if err != nil || id < 0 || int(id) >= cfg.Vocab {
				return fmt.Errorf("--ids: %q is not a token id below %d", s, cfg.Vocab)
			}
			prompt = append(prompt, int32(id))
		}
	} else {
		if tok, err = tokenizer.Load(dir); err != nil {
			return err
		}
		text, special := f.prompt, true
		if f.chat {
			if tmplErr != nil {
				return tmplErr
			}
			if text, err = tmpl.Render([]chat.Message{{Role: "user", Content: f.prompt}}, true, nil); err != nil {
				return err
			}
			special = false // the template already holds BOS
		}
		if prompt, err = tok.Encode(text, special); err != nil {
			return err
		}
	}

	ck, err := safetensors.Open(dir)
	if err != nil {
		return err
	}
	defer ck.Close()
	be, err := ascend.Open("cpu")
	if err != nil {
		return err
	}
	card, err := be.OpenCard(0, 0)
	if err != nil {
		return err
	}
	defer card.Close()
	lm, err := stack.LoadLM(ck, cfg, card)
	if err != nil {
		return err
	}
	defer lm.Close()
	var nc *nats.Conn
	if !f.local {
		var ns *natsSettings
		if nc, ns, err = f.nats.connect(ctx, f.natsURL, "moemesh-generate", log); err != nil {
			return err
		}
		defer nc.Close()
		if err := ensureRegistry(ctx, nc, name, ns); err != nil {
			return err
		}
	}
	experts, closeExperts, err := stack.Experts(ctx, ck, cfg, be, nc, name, f.local, f.exact, 0)
	if err != nil {
		return err
	}
	defer closeExperts()

	sampler, err := nn.NewSampler(nn.SamplerConfig{Temperature: f.temperature, TopK: f.topK, TopP: f.topP, Seed: f.seed})
	if err != nil {
		return err
	}
	next := sampler.Sample
	if f.greedy {
		next = nn.Argmax
	}
	out := bufio.NewWriter(cmd.OutOrStdout())
	defer out.Flush()
	var dec *tokenizer.Decoder
	if tok != nil {
		dec = tokenizer.NewDecoderSkipSpecial(tok)
	}
	var logits []float32
	var generated []int32
	start := time.Now()
	err = lm.Generate(ctx, experts, prompt, f.maxTokens, next, func(t int32, l []float32) bool {
		generated = append(generated, t)
		if f.logitsOut != "" {
			logits = append(logits, l...)
		}
		if stops[t] {
			return false
		}
		if dec != nil {
			s, err := dec.Add(t)
			if err == nil {
				out.WriteString(s)
				out.Flush()
			}
		}
		return true
	})
	if dec != nil {
		out.WriteString(dec.Flush())
		out.WriteString("\n")
	} else {
		ids, _ := json.Marshal(generated)
		fmt.Fprintln(out, string(ids))
	}
	log.Info("generated", "tokens", len(generated), "prompt_tokens", len(prompt), "elapsed", time.Since(start).Round(time.Millisecond))
	if err != nil {
		return err
	}
	if f.logitsOut != "" {
		return writeLogits(f.logitsOut, logits, len(generated), cfg.Vocab)
	}
	return nil
}

// writeLogits writes a JSON header line and the raw f32 logits, atomically.
func writeLogits(path string, logits []float32, steps, vocab int) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".logits-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriter(tmp)
	hdr, _ := json.Marshal(map[string]any{"dtype": "f32", "steps": steps, "vocab": vocab, "order": "little-endian, row-major [steps, vocab]"})
	w.Write(append(hdr, '\n'))
	var b [4]byte
	for _, v := range logits {
		binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
		w.Write(b[:])
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
