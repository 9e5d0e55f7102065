package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/synth"
	"github.com/moemesh/moemesh/router/placement"
)

const tinyV4 = "../../model/deepseek4/testdata/tiny"

func runPlan(t *testing.T, args ...string) (*modelPlan, string) {
	t.Helper()
	cmd := newPlan(&globals{})
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs(append(args, "--json"))
	if err := cmd.Execute(); err != nil {
		t.Fatalf("plan %v: %v", args, err)
	}
	var p modelPlan
	if err := json.Unmarshal(out.Bytes(), &p); err != nil {
		t.Fatalf("plan output: %v\n%s", err, out.String())
	}
	cmd = newPlan(&globals{})
	out.Reset()
	cmd.SetOut(&out)
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	return &p, out.String()
}

// The tiny V4 fixture (config + index, no shards): experts are MXFP4, so one expert is
// w1, w3 [64, 64] and w2 [64, 64] each as 64·32 packed bytes + 64·2 E8M0 scales:
// 3 · (2048 + 128) = 6528 bytes; 4 layers × 8 experts.
func TestPlanTinyV4FromIndex(t *testing.T) {
	for _, c := range []struct {
		name                        string
		args                        []string
		perCard, single, replicated int
		fits                        bool
	}{
		{"20000-byte cards", []string{"--card-memory", "20000", "--cards", "22"}, 3, 11, 22, true},
		{"too few cards", []string{"--card-memory", "20000", "--cards", "12"}, 3, 11, 22, false},
		{"reserve", []string{"--card-memory", "20000", "--reserve", "7000", "--replicas", "3"}, 1, 32, 96, false},
		{"one card holds all", []string{"--card-memory", "1MiB", "--cards", "2"}, 160, 1, 2, true},
	} {
		p, text := runPlan(t, append([]string{"--model", tinyV4}, c.args...)...)
		if p.ExpertBytes != 6528 || p.Experts != 32 || p.ExpertsTotal != 32*6528 || len(p.Layers) != 4 || p.Layers[2].ExpertBytes != 8*6528 {
			t.Errorf("%s: expert %d bytes, %d experts, %d total, %d layers", c.name, p.ExpertBytes, p.Experts, p.ExpertsTotal, len(p.Layers))
		}
		if p.TotalBytes != p.IndexTotal || p.TotalBytes != p.ExpertsTotal+p.RouterBytes+p.MTPBytes {
			t.Errorf("%s: total %d, index %d, experts+router+mtp %d", c.name, p.TotalBytes, p.IndexTotal, p.ExpertsTotal+p.RouterBytes+p.MTPBytes)
		}
		if p.PerCard != c.perCard || p.CardsSingle != c.single || p.CardsReplica != c.replicated {
			t.Errorf("%s: %d per card, %d cards, %d replicated; want %d, %d, %d", c.name, p.PerCard, p.CardsSingle, p.CardsReplica, c.perCard, c.single, c.replicated)
		}
		if p.Fits != nil && *p.Fits != c.fits {
			t.Errorf("%s: fits %v", c.name, *p.Fits)
		}
		if !strings.Contains(text, "6528 bytes") || !strings.Contains(text, "deepseek_v4 shape table") {
			t.Errorf("%s: text output:\n%s", c.name, text)
		}
		checkAssignment(t, c.name, p)
	}
}

// checkAssignment: every expert placed, replicas on distinct cards, no card over its
// capacity.
func checkAssignment(t *testing.T, name string, p *modelPlan) {
	t.Helper()
	if p.Assignment == nil {
		return
	}
	copies := map[[2]int]int{}
	for _, c := range p.Assignment {
		if c.Experts > p.PerCard || c.Bytes > int64(p.CardMemory-p.Reserve) {
			t.Errorf("%s: card %d holds %d experts, %d bytes (capacity %d)", name, c.Card, c.Experts, c.Bytes, p.PerCard)
		}
		seen := map[[2]int]bool{}
		for l, rs := range c.Ranges {
			for _, r := range rs {
				a, b := expertRange(t, r)
				for e := a; e <= b; e++ {
					k := [2]int{l, e}
					if seen[k] {
						t.Errorf("%s: card %d holds layer %d expert %d twice", name, c.Card, l, e)
					}
					seen[k] = true
					copies[k]++
				}
			}
		}
	}
	want := p.Replicas
	if p.Fits != nil && !*p.Fits {
		want = 1
	}
	if len(copies) != p.Experts {
		t.Errorf("%s: %d experts placed of %d", name, len(copies), p.Experts)
	}
	for k, n := range copies {
		if n != want {
			t.Errorf("%s: layer %d expert %d has %d copies, want %d", name, k[0], k[1], n, want)
		}
	}
}

// expertRange parses "a-b" or "a".
func expertRange(t *testing.T, r string) (int, int) {
	t.Helper()
	lo, hi, isRange := strings.Cut(r, "-")
	a, err := strconv.Atoi(lo)
	b := a
	if isRange && err == nil {
		b, err = strconv.Atoi(hi)
	}
	if err != nil {
		t.Fatalf("range %q: %v", r, err)
	}
	return a, b
}

// mkmodel checkpoints are sized from their shard headers: a bf16 expert is 3·I·H·2 bytes,
// and the header sizes add up to the index's total_size.
func TestPlanMkmodelCheckpoints(t *testing.T) {
	for _, arch := range []string{"qwen3_moe", "deepseek_v3", "mixtral"} {
		dir := filepath.Join(t.TempDir(), arch)
		cfg, err := synth.Write(dir, synth.Options{Arch: arch, Preset: "tiny", Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		p, text := runPlan(t, "--model", dir, "--card-memory", "64GiB", "--cards", "2")
		want := int64(3 * cfg.ExpertIntermediate * cfg.Hidden * 2)
		moe := len(cfg.MoELayers())
		if p.ExpertBytes != want || p.Experts != moe*cfg.Experts || p.ExpertsTotal != want*int64(p.Experts) {
			t.Errorf("%s: expert %d bytes (want %d), %d experts (want %d)", arch, p.ExpertBytes, want, p.Experts, moe*cfg.Experts)
		}
		if p.SizesFrom != "shard headers" || p.IndexTotal == 0 || p.TotalBytes != p.IndexTotal {
			t.Errorf("%s: sizes from %q, total %d, index total_size %d", arch, p.SizesFrom, p.TotalBytes, p.IndexTotal)
		}
		if p.CardsSingle != 1 || p.CardsReplica != 2 || p.Fits == nil || !*p.Fits {
			t.Errorf("%s: cards %d / %d", arch, p.CardsSingle, p.CardsReplica)
		}
		checkAssignment(t, arch, p)
		if !strings.Contains(text, "proposed assignment") {
			t.Errorf("%s: no assignment in\n%s", arch, text)
		}
		// Held dequantised to f32 an expert doubles.
		p32, _ := runPlan(t, "--model", dir, "--dtype", "f32")
		if p32.ExpertBytes != 2*want {
			t.Errorf("%s: f32 expert %d bytes, want %d", arch, p32.ExpertBytes, 2*want)
		}
	}
}

func TestPlanErrors(t *testing.T) {
	qwen := filepath.Join(t.TempDir(), "q")
	if _, err := synth.Write(qwen, synth.Options{Arch: "qwen3_moe", Preset: "tiny", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	shardless := t.TempDir()
	for _, f := range []string{"config.json", "model.safetensors.index.json"} {
		b, err := os.ReadFile(filepath.Join(qwen, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(shardless, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{}, "--model is required"},
		{[]string{"--model", qwen, "--card-memory", "lots"}, "--card-memory"},
		{[]string{"--model", qwen, "--card-memory", "1KiB"}, "does not fit a card"},
		{[]string{"--model", qwen, "--reserve", "64GiB"}, "leaves nothing"},
		{[]string{"--model", qwen, "--dtype", "int4"}, "--dtype"},
		{[]string{"--model", qwen, "--replicas", "0"}, "--replicas"},
		{[]string{"--model", shardless}, "no built-in shape table"},
		{[]string{"--model", t.TempDir()}, "config.json"},
	} {
		cmd := newPlan(&globals{})
		cmd.SetOut(new(bytes.Buffer))
		cmd.SetErr(new(bytes.Buffer))
		cmd.SetArgs(c.args)
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("plan %v: err = %v, want one naming %q", c.args, err, c.want)
		}
	}
}

// A tiny V4 checkpoint written by mkmodel, sized from its shard headers: plan, the
// controller's placement.ExpertBytes and a daemon's ExpertSet agree on one expert's bytes
// in every dtype a daemon can hold it in (shipped = MXFP4 packed, 4.25 bits a weight).
func TestPlanV4AgreesWithDaemon(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "v4")
	cfg, err := synth.Write(dir, synth.Options{Arch: synth.ArchDeepseekV4, Preset: synth.Tiny, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	sized, err := placement.ExpertBytes(dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	H, I := cfg.Hidden, cfg.ExpertIntermediate
	for _, c := range []struct {
		dtype string
		dt    ascend.DType
	}{{"shipped", ascend.MXFP4}, {"bf16", ascend.BF16}, {"f32", ascend.F32}, {"i8", ascend.I8}} {
		p, _ := runPlan(t, "--model", dir, "--dtype", c.dtype)
		want, err := model.ExpertStorageBytes(c.dt, H, I)
		if err != nil {
			t.Fatal(err)
		}
		if p.SizesFrom != "shard headers" || p.ExpertBytes != want {
			t.Errorf("--dtype %s: plan says %d bytes an expert (sizes from %s), a daemon holds %d", c.dtype, p.ExpertBytes, p.SizesFrom, want)
		}
		if c.dtype == "shipped" && sized != want {
			t.Errorf("placement.ExpertBytes %d, plan and daemon %d", sized, want)
		}
	}
	if bits := 8 * float64(sized) / float64(3*H*I); bits != 4.25 {
		t.Errorf("shipped experts: %g bits a weight, want 4.25", bits)
	}
}
