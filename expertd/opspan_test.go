package expertd

import (
	"testing"

	"github.com/moemesh/moemesh/ascend"
	_ "github.com/moemesh/moemesh/ascend/cpu"
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
