package expertd

import (
	"math/rand/v2"

	"testing"

	"github.com/moemesh/moemesh/ascend"
	_ "github.com/moemesh/moemesh/ascend/cpu"
	"github.com/moemesh/moemesh/model"
)

// The op-span wrapper must not hide what the card holds: loaders keep MXFP4 experts packed
// only where ascend.Supports says the card has MXFP4.
func TestOpCardForwardsSupports(t *testing.T) {
	be, err := ascend.Open("cpu")
	if err != nil {
		t.Fatal(err)
	}
	dev, err := be.OpenCard(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dev.Close() })
	oc := &opCard{Card: dev, card: "c0"}
	for _, dt := range []ascend.DType{ascend.F32, ascend.BF16, ascend.I8, ascend.MXFP4} {
		if got, want := ascend.Supports(oc, dt), ascend.Supports(dev, dt); got != want || !want {
			t.Errorf("%v: wrapper says %v, card says %v (the cpu card has every dtype)", dt, got, want)
		}
	}
}

// Config.WeightDType reaches the card's expert set: with I8 (expertd --weights i8) an
// expert given in f32 is held as int8 rows with their scales, and the card's memory is
// exactly that.
func TestCardWeightDType(t *testing.T) {
	be, err := ascend.Open("cpu")
	if err != nil {
		t.Fatal(err)
	}
	dev, err := be.OpenCard(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	mcfg := &model.Config{Hidden: tHidden, ExpertIntermediate: tInter, Experts: tExperts}
	c := newCard("c0", "cpu:0", dev, mcfg, Config{QueueDepth: 4, MaxCoalesce: 16, WeightDType: ascend.I8, Logger: discard()})
	t.Cleanup(func() { c.close() })
	rng := rand.New(rand.NewPCG(5, 6))
	k := model.ExpertKey{Layer: 1, Expert: 0}
	w := model.ExpertWeights{DType: ascend.F32, Gate: randBytes(rng, tInter*tHidden), Up: randBytes(rng, tInter*tHidden), Down: randBytes(rng, tInter*tHidden)}
	if err := c.set.Add(k, w); err != nil {
		t.Fatal(err)
	}
	if got, ok := c.set.HeldDType(k); !ok || got != ascend.I8 {
		t.Fatalf("expert held as %v, want i8", got)
	}
	want, err := model.ExpertStorageBytes(ascend.I8, tHidden, tInter)
	if err != nil {
		t.Fatal(err)
	}
	if used := dev.MemInfo().Used; used != want {
		t.Errorf("card holds %d bytes, want %d (one i8 expert)", used, want)
	}
}
