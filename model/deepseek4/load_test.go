package deepseek4_test

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/moemesh/moemesh/ascend"
	"github.com/moemesh/moemesh/model"
	"github.com/moemesh/moemesh/model/deepseek4"
	"github.com/moemesh/moemesh/model/safetensors"
	"github.com/moemesh/moemesh/model/synth"
)

// The tiny V4 checkpoint's MXFP4 routed experts are read as stored and held packed: a card
// holding every routed expert uses exactly 4.25 bits a weight (values and E8M0 scales,
// nothing else), against 16 for the old bf16 dequantisation, and the model's logits are the
// same bits either way. I8 (W8A16) quantisation at load holds 8 bits + a f32 scale a row.
func TestExpertsKeptPacked(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "v4")
	if _, err := synth.Write(dir, synth.Options{Arch: synth.ArchDeepseekV4, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	cfg, err := deepseek4.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := safetensors.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	H, I := cfg.Hidden, cfg.ExpertIntermediate
	layers := cfg.MoELayers()
	n := int64(len(layers) * cfg.Experts)
	weights := n * int64(3*I*H)

	w, err := model.ReadExpert(ck, cfg.Config, model.ExpertKey{Layer: layers[len(layers)-1], Expert: cfg.Experts - 1})
	if err != nil {
		t.Fatal(err)
	}
	per, err := model.ExpertStorageBytes(ascend.MXFP4, H, I)
	if err != nil {
		t.Fatal(err)
	}
	if w.DType != ascend.MXFP4 || w.Bytes() != per || len(w.GateScale) != I*H/32 || len(w.DownScale) != H*I/32 {
		t.Fatalf("ReadExpert gives %v, %d bytes (scales %d/%d); want packed mxfp4 of %d bytes", w.DType, w.Bytes(),
			len(w.GateScale), len(w.DownScale), per)
	}
	// The bytes are the checkpoint's own, untouched: values and scales of w1, w3, w2.
	p := fmt.Sprintf("layers.%d.ffn.experts.%d.", layers[len(layers)-1], cfg.Experts-1)
	for _, c := range []struct {
		name string
		got  []byte
	}{{"w1.weight", w.Gate}, {"w1.scale", w.GateScale}, {"w3.weight", w.Up}, {"w3.scale", w.UpScale},
		{"w2.weight", w.Down}, {"w2.scale", w.DownScale}} {
		raw, err := ck.Raw(p + c.name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(raw, c.got) {
			t.Fatalf("ReadExpert's %s differs from the checkpoint's %d bytes", c.name, len(raw))
		}
	}

	m, err := deepseek4.LoadModel(ck, cfg.Config, cpuCard(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	toks := prompt(20, cfg.Vocab, 3)
	logits := func(ex model.Experts) []float32 {
		s, err := m.NewSequence(len(toks))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		lg := make([]float32, cfg.Vocab)
		if err := m.Forward(context.Background(), []*deepseek4.Sequence{s}, [][]int32{toks}, ex, [][]float32{lg}); err != nil {
			t.Fatal(err)
		}
		return lg
	}
	var packed []float32
	for i, tc := range []struct {
		name string
		opts []model.LoadOption
		dt   ascend.DType
		bits float64 // per weight
	}{
		{"packed mxfp4", nil, ascend.MXFP4, 4.25},
		{"dequantised bf16", []model.LoadOption{model.WithExpertDType(ascend.BF16)}, ascend.BF16, 16},
		{"i8 (w8a16)", []model.LoadOption{model.WithExpertDType(ascend.I8)}, ascend.I8, 8 + 32*float64(2*I+H)/float64(3*I*H)},
	} {
		card := cpuCard(t, 10+i)
		base := card.MemInfo().Used
		ex, err := model.LoadLocal(ck, cfg.Config, card, layers, tc.opts...)
		if err != nil {
			t.Fatal(err)
		}
		used := card.MemInfo().Used - base
		want, err := model.ExpertStorageBytes(tc.dt, H, I)
		if err != nil {
			t.Fatal(err)
		}
		bits := 8 * float64(used) / float64(weights)
		t.Logf("%s: %d experts hold %d bytes on the card, %.4g bits a weight", tc.name, n, used, bits)
		if used != n*want || math.Abs(bits-tc.bits) > 1e-9 {
			t.Errorf("%s: %d bytes in use (%.4g bits a weight), want %d × %d (%.4g bits)", tc.name, used, bits, n, want, tc.bits)
		}
		lg := logits(ex)
		if i == 0 {
			packed = lg
			continue
		}
		maxd := 0.0
		for j := range lg {
			maxd = max(maxd, math.Abs(float64(lg[j]-packed[j])))
		}
		t.Logf("%s vs packed: logits max |diff| %g", tc.name, maxd)
		if tc.dt == ascend.BF16 && maxd != 0 {
			t.Errorf("bf16-dequantised experts change the logits by %g; E2M1·2^k is exact in bf16, want 0", maxd)
		}
		if tc.dt == ascend.I8 && maxd == 0 {
			t.Errorf("i8 experts give the packed logits bit for bit: was it quantised at all?")
		}
	}
}
